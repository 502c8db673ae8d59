"""Fully connected layer and flatten."""
import math
from typing import NamedTuple, Tuple

from minicnn import kernels
from minicnn.functional._checks import as_float_array, check_dout, same_dtype, shape_is


class LinearCache(NamedTuple):
    x: object               # (N, D) input
    w: object               # (M, D)


class FlattenCache(NamedTuple):
    x_shape: Tuple[int, ...]
    dtype: object


def linear_forward(x, w, b):
    """out = x @ w.T + b.   x (N, D), w (M, D), b (M,) or None -> out (N, M)."""
    op = "linear"
    x = as_float_array(x, "x", op, ndim=2)
    w = as_float_array(w, "w", op, ndim=2)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{op}: x has {x.shape[1]} features but w expects {w.shape[1]} "
                         f"(x.shape={tuple(x.shape)}, w.shape={tuple(w.shape)})")
    if b is not None:
        b = as_float_array(b, "b", op)
        shape_is(b, (w.shape[0],), "b", op, f" (one bias per output; w.shape={tuple(w.shape)})")
    same_dtype(op, x=x, w=w, b=b)
    out = kernels.matmul(x, w.T)            # x @ w.T, on the kernels' threads when it can
    if b is not None:
        out += b
    return out, LinearCache(x, w)


def linear_backward(dout, cache):
    """dL/dx = dout @ w,   dL/dw = dout.T @ x,   dL/db = sum_n dout[n]."""
    x, w = cache
    dout = check_dout(dout, (x.shape[0], w.shape[0]), x.dtype, "linear_backward")
    dx = kernels.matmul(dout, w)            # dout @ w
    dw = kernels.matmul(dout.T, x)          # dout.T @ x
    db = dout.sum(axis=0)
    return dx, dw, db


def flatten_forward(x):
    """(N, d1, d2, ...) -> (N, d1*d2*...), a view when x is contiguous."""
    if not hasattr(x, "ndim") or x.ndim < 1:
        raise ValueError(f"flatten: x must have a batch axis, got {getattr(x, 'shape', type(x))}")
    features = math.prod(x.shape[1:])                 # explicit, so an empty batch works too
    return x.reshape(x.shape[0], features), FlattenCache(tuple(x.shape), x.dtype)


def flatten_backward(dout, cache):
    """dL/dx is dout reshaped back to the input shape."""
    out_shape = (cache.x_shape[0], math.prod(cache.x_shape[1:]))
    return check_dout(dout, out_shape, cache.dtype, "flatten_backward").reshape(cache.x_shape)
