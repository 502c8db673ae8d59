"""Inverted dropout: p is the probability to DROP; survivors are scaled by 1/(1-p) at training
time, so evaluation is the identity."""
from typing import NamedTuple

from minicnn.backend import get_array_module
from minicnn.functional._checks import as_float_array, check_dout, real_number


class DropoutCache(NamedTuple):
    mask: object            # 0 for dropped units, 1/(1-p) for kept ones; None in eval / p == 0
    x_shape: tuple
    dtype: object


def dropout_forward(x, p, training=True, rng=None):
    """out = x * mask,  mask = [u >= p] / (1 - p),  u ~ U[0, 1) from ``rng`` (a numpy Generator).

    In eval mode (or with p == 0) out = x. p == 1 drops everything.
    """
    x = as_float_array(x, "x", "dropout")
    p = real_number(p, "p", "dropout", 0.0, 1.0)
    if not training or p == 0:
        return x, DropoutCache(None, tuple(x.shape), x.dtype)
    if rng is None or not hasattr(rng, "random"):
        raise ValueError("dropout: training with p > 0 needs rng, a seeded numpy.random.Generator "
                         "(e.g. rng=np.random.default_rng(0))")
    xp = get_array_module(x)
    keep = rng.random(x.shape) >= p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    mask = xp.asarray(keep * x.dtype.type(scale), dtype=x.dtype)
    return x * mask, DropoutCache(mask, tuple(x.shape), x.dtype)


def dropout_backward(dout, cache):
    """dL/dx = dout * mask  (dL/dx = dout in eval mode or with p == 0)."""
    dout = check_dout(dout, cache.x_shape, cache.dtype, "dropout_backward")
    return dout if cache.mask is None else dout * cache.mask
