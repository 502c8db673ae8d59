"""Constructor-argument checks shared by the layers (errors name the layer and the argument)."""
import numpy as np

from minicnn.functional._checks import pair, real_number  # noqa: F401  (pair: re-exported for the layers)


def positive_int(value, name, layer):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def float_dtype(dtype, layer):
    if dtype is None:                  # np.dtype(None) would quietly mean float64
        raise ValueError(f"{layer}: dtype must be float32 or float64, got None")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{layer}: dtype must be a floating dtype (float32 or float64), got {dtype}")
    return dtype


def probability(value, name, layer):
    return real_number(value, name, layer, 0.0, 1.0)
