"""Softmax and the losses, under their historical name; the code is minicnn/functional/losses.py
(``minicnn.functional`` exports the same functions)."""
from minicnn.functional.losses import log_softmax, mse_loss, softmax, softmax_cross_entropy  # noqa: F401
