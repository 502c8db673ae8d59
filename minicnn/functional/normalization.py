"""Batch normalization over the batch (1d: x (N, D)) or over batch and space (2d: x (N, C, H, W)).

Per feature/channel, over the M = N (1d) or N*H*W (2d) values it sees:

    mu = (1/M) sum x,   var = (1/M) sum (x - mu)^2,   xhat = (x - mu) / sqrt(var + eps)
    out = gamma * xhat + beta

Training uses the batch statistics and updates the running ones in place, as PyTorch does:
    running_mean = (1 - m) * running_mean + m * mu
    running_var  = (1 - m) * running_var  + m * var * M / (M - 1)      (unbiased)
Evaluation normalises with the running statistics instead.

With the C extension, CPU arrays take the same formulas in csrc/batchnorm_tmpl.h: one thread per
channel, that channel's values visited while they are in cache (NumPy makes a pass over all of x
per operation), sums in double.
"""
import math
from typing import NamedTuple, Tuple

from minicnn import kernels
from minicnn.backend import get_array_module
from minicnn.functional._checks import as_float_array, check_dout, real_number, same_dtype, shape_is
from minicnn.functional._workspace import workspace


class BatchNormCache(NamedTuple):
    xhat: object            # normalised input, x's shape
    inv_std: object         # 1 / sqrt(var + eps), broadcastable to x
    gamma: object           # broadcastable to x
    axes: Tuple[int, ...]   # the axes reduced over
    training: bool          # batch statistics (True) or running statistics (False)


def _batchnorm_forward(op, x, gamma, beta, running_mean, running_var, training, momentum, eps, ndim):
    xp = get_array_module(x)
    x = as_float_array(x, "x", op, ndim=ndim)
    momentum = real_number(momentum, "momentum", op, 0.0, 1.0)
    eps = real_number(eps, "eps", op, 0.0, math.inf, low_open=True, high_open=True)
    num_features = x.shape[1]
    if num_features == 0:
        raise ValueError(f"{op}: x has no channels (x.shape={tuple(x.shape)})")
    for name, a in (("gamma", gamma), ("beta", beta),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if a is None or not hasattr(a, "shape"):
            raise TypeError(f"{op}: {name} must be an array of shape ({num_features},)")
        shape_is(a, (num_features,), name, op, f" (one per channel; x.shape={tuple(x.shape)})")
    same_dtype(op, x=x, gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
    axes = (0,) if ndim == 2 else (0, 2, 3)
    bshape = (1, num_features) + (1,) * (ndim - 2)       # broadcast per-channel vectors over x
    count = x.size // num_features                        # M

    in_c = kernels.elementwise_in_c(x)
    if training:
        if count < 2:
            raise ValueError(f"{op}: training needs more than one value per channel "
                             f"(x.shape={tuple(x.shape)})")
        if in_c:
            mean, var = kernels.channel_stats(x)
        else:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)                        # biased: used to normalise
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (count / (count - 1))
    else:
        mean, var = running_mean, running_var

    inv_std = (1 / xp.sqrt(var + eps)).astype(x.dtype, copy=False).reshape(bshape)
    if in_c:
        xhat = workspace.recycled(x.shape, x.dtype)
        out = workspace.recycled(x.shape, x.dtype)
        kernels.batchnorm_apply(x, mean, inv_std, gamma, beta, xhat=xhat, out=out)
    else:
        xhat = (x - mean.reshape(bshape)) * inv_std
        out = gamma.reshape(bshape) * xhat + beta.reshape(bshape)
    return out, BatchNormCache(xhat, inv_std, gamma.reshape(bshape), axes, training)


def _batchnorm_backward(op, dout, cache):
    """With dxhat = dout * gamma:

        dL/dbeta  = sum dout,     dL/dgamma = sum dout * xhat
        training: dL/dx = (inv_std / M) * (M * dxhat - sum dxhat - xhat * sum(dxhat * xhat))
        eval:     dL/dx = dxhat * inv_std        (mu and var are constants)
    """
    xhat, inv_std, gamma, axes, training = cache
    dout = check_dout(dout, xhat.shape, xhat.dtype, op)
    if kernels.elementwise_in_c(dout):
        dx = workspace.recycled(dout.shape, dout.dtype)
        return kernels.batchnorm_backward(dout, xhat, gamma, inv_std, training, dx=dx)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * gamma
    if not training:
        return dxhat * inv_std, dgamma, dbeta
    count = xhat.size // xhat.shape[1]
    sum_dxhat = dxhat.sum(axis=axes, keepdims=True)
    sum_dxhat_xhat = (dxhat * xhat).sum(axis=axes, keepdims=True)
    dx = (inv_std / count) * (count * dxhat - sum_dxhat - xhat * sum_dxhat_xhat)
    return dx, dgamma, dbeta


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    """Batch norm per channel over (N, H, W). x (N, C, H, W); gamma, beta, running_* (C,)."""
    return _batchnorm_forward("batchnorm2d", x, gamma, beta, running_mean, running_var,
                              training, momentum, eps, ndim=4)


def batchnorm2d_backward(dout, cache):
    """(dx, dgamma, dbeta); see ``_batchnorm_backward`` for the formulas."""
    return _batchnorm_backward("batchnorm2d_backward", dout, cache)


def batchnorm1d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    """Batch norm per feature over N. x (N, D); gamma, beta, running_* (D,)."""
    return _batchnorm_forward("batchnorm1d", x, gamma, beta, running_mean, running_var,
                              training, momentum, eps, ndim=2)


def batchnorm1d_backward(dout, cache):
    """(dx, dgamma, dbeta); see ``_batchnorm_backward`` for the formulas."""
    return _batchnorm_backward("batchnorm1d_backward", dout, cache)
