"""Element-wise activations. Each backward multiplies dout by the local derivative."""
import math
from typing import NamedTuple

import numpy as np

from minicnn import kernels
from minicnn.backend import get_array_module
from minicnn.functional._checks import as_float_array, check_dout, real_number
from minicnn.functional._workspace import workspace


class ReluCache(NamedTuple):
    out: object             # max(x, 0): out > 0 exactly where x > 0


class LeakyReluCache(NamedTuple):
    slope: object           # 1 where x > 0, negative_slope elsewhere (x's dtype)


class SigmoidCache(NamedTuple):
    out: object             # sigma(x)


class TanhCache(NamedTuple):
    out: object             # tanh(x)


def _output_like(x):
    """A new array for a result shaped like x; on the CPU a recycled one (see _workspace)."""
    if get_array_module(x) is np:
        return workspace.recycled(x.shape, x.dtype)
    return get_array_module(x).empty_like(x)


def relu_forward(x):
    """out = max(x, 0)."""
    xp = get_array_module(x)
    x = as_float_array(x, "x", "relu")
    out = _output_like(x)
    if kernels.elementwise_in_c(x):
        kernels.relu_forward(x, out=out)             # the same values in one threaded pass
    else:
        xp.maximum(x, 0, out=out)
    return out, ReluCache(out)


def relu_backward(dout, cache):
    """dL/dx = dout * [x > 0] = dout * [out > 0]   (the subgradient at 0 is 0, like PyTorch)."""
    out = cache.out
    dout = check_dout(dout, out.shape, out.dtype, "relu_backward")
    dx = _output_like(dout)
    if kernels.elementwise_in_c(dout):
        kernels.relu_backward(dout, out, dx=dx)      # dout where out > 0, else 0
    else:
        get_array_module(dout).multiply(dout, out > 0, out=dx)
    return dx


def leaky_relu_forward(x, negative_slope=0.01):
    """out = x if x > 0 else negative_slope * x."""
    xp = get_array_module(x)
    x = as_float_array(x, "x", "leaky_relu")
    negative_slope = real_number(negative_slope, "negative_slope", "leaky_relu", -math.inf,
                                 math.inf, low_open=True, high_open=True)
    slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(negative_slope))
    return x * slope, LeakyReluCache(slope)


def leaky_relu_backward(dout, cache):
    """dL/dx = dout * (1 if x > 0 else negative_slope)."""
    dout = check_dout(dout, cache.slope.shape, cache.slope.dtype, "leaky_relu_backward")
    return dout * cache.slope


def sigmoid_forward(x):
    """out = 1 / (1 + exp(-x)), computed from exp(-|x|) so no exp overflows."""
    xp = get_array_module(x)
    x = as_float_array(x, "x", "sigmoid")
    e = xp.exp(-xp.abs(x))
    out = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    return out, SigmoidCache(out)


def sigmoid_backward(dout, cache):
    """dL/dx = dout * s * (1 - s),  s = sigma(x)."""
    dout = check_dout(dout, cache.out.shape, cache.out.dtype, "sigmoid_backward")
    s = cache.out
    return dout * s * (1 - s)


def tanh_forward(x):
    """out = tanh(x)."""
    xp = get_array_module(x)
    x = as_float_array(x, "x", "tanh")
    out = xp.tanh(x)
    return out, TanhCache(out)


def tanh_backward(dout, cache):
    """dL/dx = dout * (1 - tanh(x)^2)."""
    dout = check_dout(dout, cache.out.shape, cache.out.dtype, "tanh_backward")
    return dout * (1 - cache.out * cache.out)
