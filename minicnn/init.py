"""Weight initialisers: He (Kaiming) and Xavier (Glorot), normal and uniform, and zeros.

Every initialiser takes the array ``shape``, an explicit ``numpy.random.Generator`` (or an int
seed) and a ``dtype``, and returns a new NumPy array (move it with ``Module.to``). Values are
drawn in float64 and then cast, so a float32 and a float64 model built from the same seed hold
the same weights up to rounding.

Fans follow PyTorch's convention, with ``receptive = KH * KW`` (1 for a linear layer):

    conv   weight (F, C, KH, KW):  fan_in = C * KH * KW,  fan_out = F * KH * KW
    linear weight (out, in):       fan_in = in,           fan_out = out

    he_normal:      N(0, std^2),   std   = gain / sqrt(fan),                gain = sqrt(2 / (1 + a^2))
    he_uniform:     U(-b, b),      b     = gain * sqrt(3 / fan)             (same variance)
    xavier_normal:  N(0, std^2),   std   = gain * sqrt(2 / (fan_in + fan_out))
    xavier_uniform: U(-b, b),      b     = gain * sqrt(6 / (fan_in + fan_out))
    torch_uniform:  U(-b, b),      b     = 1 / sqrt(fan_in)                 (PyTorch's default for
                                                                             Conv2d/Linear weights and biases)

``fan`` is fan_in (default; keeps the forward variance) or fan_out (keeps the backward variance);
``a`` is the negative slope of the rectifier that follows (0 for ReLU).
"""
import math

import numpy as np

__all__ = ["as_generator", "compute_fans", "he_normal", "he_uniform", "xavier_normal",
           "xavier_uniform", "torch_uniform", "zeros", "ones", "get_initializer", "INITIALIZERS"]


def as_generator(rng):
    """A ``numpy.random.Generator`` from a Generator (returned as is), an int seed, or None.

    None gives a fresh, unseeded ``np.random.default_rng()``: fine for playing around, but
    models that must be repeatable pass a seeded Generator (or an int seed).
    """
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype (float32 or float64), got {dtype}")
    return dtype


def _shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must hold non-negative sizes, got {shape}")
    return shape


def compute_fans(shape):
    """(fan_in, fan_out) of a weight: linear (out, in) or conv (F, C, KH, KW)."""
    shape = _shape(shape)
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of at least 2 dimensions (out, in, ...), got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape, mode):
    fan_in, fan_out = compute_fans(shape)
    if mode == "fan_in":
        fan = fan_in
    elif mode == "fan_out":
        fan = fan_out
    else:
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    if fan == 0:
        raise ValueError(f"cannot initialise a weight with {mode} = 0 (shape {tuple(shape)})")
    return fan


def he_normal(shape, rng, dtype=np.float32, *, mode="fan_in", negative_slope=0.0):
    """He/Kaiming normal: N(0, std^2), std = sqrt(2 / (1 + a^2)) / sqrt(fan)."""
    gain = math.sqrt(2.0 / (1.0 + negative_slope ** 2))
    std = gain / math.sqrt(_fan(shape, mode))
    return (as_generator(rng).standard_normal(_shape(shape)) * std).astype(_float_dtype(dtype))


def he_uniform(shape, rng, dtype=np.float32, *, mode="fan_in", negative_slope=0.0):
    """He/Kaiming uniform: U(-b, b), b = sqrt(2 / (1 + a^2)) * sqrt(3 / fan)."""
    gain = math.sqrt(2.0 / (1.0 + negative_slope ** 2))
    bound = gain * math.sqrt(3.0 / _fan(shape, mode))
    return as_generator(rng).uniform(-bound, bound, _shape(shape)).astype(_float_dtype(dtype))


def xavier_normal(shape, rng, dtype=np.float32, *, gain=1.0):
    """Xavier/Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = compute_fans(shape)
    std = gain * math.sqrt(2.0 / max(fan_in + fan_out, 1))
    return (as_generator(rng).standard_normal(_shape(shape)) * std).astype(_float_dtype(dtype))


def xavier_uniform(shape, rng, dtype=np.float32, *, gain=1.0):
    """Xavier/Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = compute_fans(shape)
    bound = gain * math.sqrt(6.0 / max(fan_in + fan_out, 1))
    return as_generator(rng).uniform(-bound, bound, _shape(shape)).astype(_float_dtype(dtype))


def torch_uniform(shape, rng, dtype=np.float32, *, fan_in=None):
    """PyTorch's default for Conv2d/Linear: U(-b, b), b = 1 / sqrt(fan_in).

    For a bias (1-D shape) pass the layer's ``fan_in`` explicitly.
    """
    if fan_in is None:
        fan_in, _ = compute_fans(shape)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return as_generator(rng).uniform(-bound, bound, _shape(shape)).astype(_float_dtype(dtype))


def zeros(shape, dtype=np.float32):
    return np.zeros(_shape(shape), dtype=_float_dtype(dtype))


def ones(shape, dtype=np.float32):
    return np.ones(_shape(shape), dtype=_float_dtype(dtype))


# Names accepted by the layers' ``init=`` argument.
INITIALIZERS = {
    "he": he_normal, "he_normal": he_normal, "kaiming": he_normal, "kaiming_normal": he_normal,
    "he_uniform": he_uniform, "kaiming_uniform": he_uniform,
    "xavier": xavier_uniform, "xavier_uniform": xavier_uniform,
    "glorot": xavier_uniform, "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal, "glorot_normal": xavier_normal,
    "torch": torch_uniform,
}


def get_initializer(name):
    """The weight initialiser called ``name`` (see ``INITIALIZERS``)."""
    try:
        return INITIALIZERS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown init {name!r}; choose one of {sorted(INITIALIZERS)}") from None
