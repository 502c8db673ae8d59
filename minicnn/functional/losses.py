"""Softmax and the losses: each loss returns (loss, dL/dinput); softmax_cross_entropy averages
over the batch, mse_loss over all elements."""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.functional._checks import as_float_array, real_number, shape_is
def log_softmax(logits):
    """log p = z - max z - log sum exp(z - max z)   (row-wise; stable for any magnitude)."""
    xp = get_array_module(logits)
    logits = as_float_array(logits, "logits", "log_softmax", ndim=2)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    xp = get_array_module(logits)
    return xp.exp(log_softmax(logits))


def _check_labels(y, logits, op):
    xp = get_array_module(logits)
    n, num_classes = logits.shape
    if not hasattr(y, "dtype"):
        y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{op}: y must hold integer class labels, got dtype {y.dtype} "
                         f"(y.shape={tuple(y.shape)}, logits.shape={tuple(logits.shape)})")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{op}: y must have shape ({n},) to match logits.shape="
                         f"{tuple(logits.shape)}, got y.shape={tuple(y.shape)}")
    y = xp.asarray(y)
    if n and bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"{op}: labels must be in [0, {num_classes}), got values in "
                         f"[{int(y.min())}, {int(y.max())}] (logits.shape={tuple(logits.shape)})")
    return y


def softmax_cross_entropy(logits, y, label_smoothing=0.0):
    """Mean softmax cross-entropy and its gradient.

    With p = softmax(z) and the target distribution q = (1 - e) * onehot(y) + e / K:
        L = -(1/N) sum_n sum_k q[n, k] * log p[n, k]
        dL/dz = (p - q) / N
    logits (N, K) float, y (N,) integer labels in [0, K). label_smoothing e in [0, 1].
    """
    op = "softmax_cross_entropy"
    xp = get_array_module(logits)
    logits = as_float_array(logits, "logits", op, ndim=2)
    y = _check_labels(y, logits, op)
    label_smoothing = real_number(label_smoothing, "label_smoothing", op, 0.0, 1.0)
    n, num_classes = logits.shape
    log_probs = log_softmax(logits)
    target = xp.full(logits.shape, label_smoothing / num_classes, dtype=logits.dtype)
    target[xp.arange(n), y] += 1 - label_smoothing
    loss = -(target * log_probs).sum() / n
    dlogits = (xp.exp(log_probs) - target) / n
    return loss, dlogits


def mse_loss(pred, target):
    """L = (1/S) sum (pred - target)^2 over all S elements;  dL/dpred = 2 (pred - target) / S."""
    op = "mse_loss"
    pred = as_float_array(pred, "pred", op)
    target = as_float_array(target, "target", op)
    shape_is(target, pred.shape, "target", op, f" (pred.shape={tuple(pred.shape)})")
    if target.dtype != pred.dtype:
        raise ValueError(f"{op}: target has dtype {target.dtype} but pred has {pred.dtype}")
    diff = pred - target
    return (diff * diff).sum() / diff.size, (2 / diff.size) * diff
