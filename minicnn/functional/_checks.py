"""Input validation at the functional boundary: one place, clear messages.

Every check raises ValueError (TypeError for a non-array) naming the op, the argument and the
shapes, e.g. ``conv2d: x has 3 channels but w expects 4 (x.shape=(2, 3, 8, 8), w.shape=(5, 4, 3, 3))``.
"""
import math
import numbers

import numpy as np

from minicnn.backend import get_array_module


def real_number(value, name, op, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """value as a float: a real number (not a bool) between low and high, each bound included
    unless ``low_open`` / ``high_open``; NaN is never in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:                                 # an int beyond float's range
        value = math.copysign(math.inf, value)
    above_low = value > low if low_open else value >= low
    below_high = value < high if high_open else value <= high
    if not (above_low and below_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{op}: {name} must be in {interval}, got {value}")
    return value


def positive_int(value, name, op):
    """value as an int >= 1 (a bool is refused)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


def pair(value, name, op, minimum):
    """An int or an (h, w) pair of ints -> (h, w), each >= minimum."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        value = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{op}: {name} must be an int or an (h, w) pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    return value


def as_float_array(x, name, op, ndim=None):
    """Check that x is a floating array (NumPy or CuPy) of the given ndim; make it C-contiguous."""
    xp = get_array_module(x)
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
    if x.dtype.kind == "f" and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))      # the same values in this machine's byte order
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{op}: {name} must be a floating array (float32 or float64), "
                         f"got dtype {x.dtype} ({name}.shape={tuple(x.shape)})")
    if ndim is not None and x.ndim not in np.atleast_1d(ndim):
        want = " or ".join(str(n) for n in np.atleast_1d(ndim))
        raise ValueError(f"{op}: {name} must be {want}-D, got {name}.shape={tuple(x.shape)}")
    # (ascontiguousarray would also turn a 0-d array into shape (1,))
    return x if x.flags.c_contiguous else xp.ascontiguousarray(x)


def check_dout(dout, shape, dtype, op):
    """dout is a float array with the forward output's shape and dtype (no silent upcast)."""
    dout = as_float_array(dout, "dout", op)
    shape_is(dout, shape, "dout", op)
    if dout.dtype != dtype:
        raise ValueError(f"{op}: dout has dtype {dout.dtype} but the forward ran in {dtype}; "
                         f"cast dout explicitly (dout.shape={tuple(dout.shape)})")
    return dout


def same_dtype(op, **arrays):
    """All named arrays share one dtype (no silent up- or down-cast)."""
    named = [(k, a) for k, a in arrays.items() if a is not None]
    first_name, first = named[0]
    for name, a in named[1:]:
        if a.dtype != first.dtype:
            raise ValueError(f"{op}: {name} has dtype {a.dtype} but {first_name} has dtype "
                             f"{first.dtype}; cast one explicitly ({name}.shape={tuple(a.shape)}, "
                             f"{first_name}.shape={tuple(first.shape)})")


def shape_is(a, shape, name, op, context=""):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(a.shape)}{context}")


def output_size(size, kernel, stride, pad):
    """Floor output size of a sliding window: (size + 2*pad - kernel) // stride + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def window_fits(x_shape, kernel_size, padding, op, arg="kernel_size"):
    h, w = x_shape[2:]
    (kh, kw), (ph, pw) = kernel_size, padding
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(f"{op}: {arg} {kernel_size} is larger than the padded input "
                         f"{(h + 2 * ph, w + 2 * pw)} (x.shape={tuple(x_shape)}, padding={padding})")
