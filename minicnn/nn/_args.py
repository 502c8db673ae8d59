"""Constructor-argument checks shared by the layers (errors name the layer and the argument)."""
import numpy as np

# pair and positive_int: re-exported for the layers
from minicnn.functional._checks import pair, positive_int, real_number  # noqa: F401


def float_dtype(dtype, layer):
    if dtype is None:                  # np.dtype(None) would quietly mean float64
        raise ValueError(f"{layer}: dtype must be float32 or float64, got None")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{layer}: dtype must be a floating dtype (float32 or float64), got {dtype}")
    return dtype


def probability(value, name, layer):
    return real_number(value, name, layer, 0.0, 1.0)
