"""Constructor-argument checks shared by the layers (errors name the layer and the argument)."""
import numpy as np


def positive_int(value, name, layer):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def pair(value, name, layer, minimum):
    """An int or an (h, w) pair of ints -> (h, w), each >= minimum."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        value = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{layer}: {name} must be an int or an (h, w) pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value}")
    return value


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
