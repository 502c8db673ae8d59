"""minicnn: a convolutional-network engine written by hand in NumPy.

Conventions (held everywhere in the package):

- Layout is NCHW. Conv weights are (F, C, KH, KW); linear weights are (out, in), out = x @ w.T + b.
- ``kernel_size``, ``stride`` and ``padding`` take an int or an (h, w) pair.
- Output sizes are floored: ``out = (H + 2*ph - KH) // sh + 1``.
- Max-pool ties go to the first maximum in window (row-major) order; padded cells never win.
- Average pooling counts zero padding in the divisor (KH*KW), like PyTorch's default.
- Dropout ``p`` is the probability to drop; survivors are scaled by 1/(1-p) at training time,
  so evaluation is the identity.
- Batchnorm momentum as in PyTorch: ``running = (1 - m) * running + m * batch``; the running
  variance uses the unbiased batch variance, the normalisation the biased one.
- ``Module.parameters()`` returns the live arrays: writing into them changes the model.
- dtype is preserved end to end (float32 default, float64 for gradient checks); mixing dtypes
  is an error, never a silent cast.
- Randomness comes from explicit, seeded ``numpy.random.Generator`` objects.
"""
__version__ = "0.1.0"

from minicnn.backend import get_array_module, get_num_threads, set_num_threads, info  # noqa: E402,F401
