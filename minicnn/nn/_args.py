"""Constructor-argument checks shared by the layers (errors name the layer and the argument)."""
import numpy as np

from minicnn.functional._checks import pair  # noqa: F401  (re-exported for the layers)


def positive_int(value, name, layer):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def float_dtype(dtype, layer):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"{layer}: dtype must be a floating dtype (float32 or float64), got {dtype}")
    return dtype


def probability(value, name, layer):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{layer}: {name} must be in [0, 1], got {value}")
    return value
