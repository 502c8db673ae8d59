"""2-D convolution (cross-correlation, as in every DL library) via im2col + one batched GEMM.

Notation: x (N, C, H, W), w (F, C, KH, KW), b (F,), stride (SH, SW), padding (PH, PW),
OH = (H + 2PH - KH) // SH + 1, OW likewise, K = C*KH*KW, L = OH*OW.

    out[n, f, oh, ow] = b[f] + sum_{c,i,j} w[f, c, i, j] * x_pad[n, c, oh*SH + i, ow*SW + j]

With the column matrix X_n = im2col(x)[n] of shape (K, L) and W = w.reshape(F, K) this is one
matrix product per image: out_n = W @ X_n + b, batched as (F, K) @ (N, K, L) -> (N, F, L),
which is already NCHW order (no transpose copy).
"""
from typing import NamedTuple, Tuple

from minicnn import kernels
from minicnn.backend import get_array_module
from minicnn.functional._checks import (as_float_array, output_size, pair, same_dtype,
                                        shape_is, window_fits)


class Conv2dCache(NamedTuple):
    x_shape: Tuple[int, int, int, int]
    x_cols: object          # (N, K, L) im2col(x)
    w: object               # (F, C, KH, KW)
    stride: Tuple[int, int]
    padding: Tuple[int, int]


def _check_conv_args(x, w, b, stride, padding):
    op = "conv2d"
    x = as_float_array(x, "x", op, ndim=4)
    w = as_float_array(w, "w", op, ndim=4)
    stride = pair(stride, "stride", op, minimum=1)
    padding = pair(padding, "padding", op, minimum=0)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{op}: x has {x.shape[1]} channels but w expects {w.shape[1]} "
                         f"(x.shape={tuple(x.shape)}, w.shape={tuple(w.shape)})")
    if b is not None:
        b = as_float_array(b, "b", op)
        shape_is(b, (w.shape[0],), "b", op, f" (one bias per filter; w.shape={tuple(w.shape)})")
    same_dtype(op, x=x, w=w, b=b)
    window_fits(x.shape, w.shape[2:], padding, op, arg=f"kernel {tuple(w.shape[2:])} of w")
    return x, w, b, stride, padding


def conv2d_forward(x, w, b, stride=1, padding=0):
    """out = W @ im2col(x) + b, per image.

    x (N, C, H, W), w (F, C, KH, KW), b (F,) or None -> out (N, F, OH, OW),
    OH = (H + 2*PH - KH) // SH + 1, OW = (W + 2*PW - KW) // SW + 1.
    """
    x, w, b, stride, padding = _check_conv_args(x, w, b, stride, padding)
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    out_h = output_size(h, kh, stride[0], padding[0])
    out_w = output_size(wd, kw, stride[1], padding[1])

    x_cols = kernels.im2col(x, (kh, kw), stride, padding)       # (N, K, L)
    out = w.reshape(f, -1) @ x_cols                              # (N, F, L)
    if b is not None:
        out += b[:, None]
    return out.reshape(n, f, out_h, out_w), Conv2dCache(tuple(x.shape), x_cols, w, stride, padding)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of the convolution, with D_n = dout[n] reshaped to (F, L):

        dL/db = sum_{n,l} D_n[:, l]
        dL/dW = sum_n D_n @ X_n^T                 (reshaped to (F, C, KH, KW))
        dL/dX_n = W^T @ D_n,  dL/dx = col2im(dL/dX)  (col2im sums overlapping windows)

    Returns (dx, dw, db); dx is None when ``need_dx`` is False (a first layer needs no dx).
    """
    x_shape, x_cols, w, stride, padding = cache
    xp = get_array_module(dout)
    dout = as_float_array(dout, "dout", "conv2d_backward", ndim=4)
    n, f = x_shape[0], w.shape[0]
    out_h = output_size(x_shape[2], w.shape[2], stride[0], padding[0])
    out_w = output_size(x_shape[3], w.shape[3], stride[1], padding[1])
    shape_is(dout, (n, f, out_h, out_w), "dout", "conv2d_backward")
    same_dtype("conv2d_backward", dout=dout, w=w)

    d_out = dout.reshape(n, f, -1)                               # D_n: (N, F, L)
    db = d_out.sum(axis=(0, 2))
    dw = xp.einsum("nfl,nkl->fk", d_out, x_cols, optimize=True).reshape(w.shape)
    dx = None
    if need_dx:
        dx_cols = w.reshape(f, -1).T @ d_out                      # (N, K, L)
        dx = kernels.col2im(dx_cols, x_shape, w.shape[2:], stride, padding)
    return dx, dw, db
