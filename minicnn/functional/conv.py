"""2-D convolution (cross-correlation, as in every DL library) via im2col + one batched GEMM.

Notation: x (N, C, H, W), w (F, C, KH, KW), b (F,), stride (SH, SW), padding (PH, PW),
OH = (H + 2PH - KH) // SH + 1, OW likewise, K = C*KH*KW, L = OH*OW.

    out[n, f, oh, ow] = b[f] + sum_{c,i,j} w[f, c, i, j] * x_pad[n, c, oh*SH + i, ow*SW + j]

With the column matrix X_n = im2col(x)[n] of shape (K, L) and W = w.reshape(F, K) this is one
matrix product per image: out_n = W @ X_n + b, batched as (F, K) @ (N, K, L) -> (N, F, L),
which is already NCHW order (no transpose copy).

For NumPy arrays the same products are computed by faster routes with the same results (see
"performance plumbing" below, and benchmarks/NOTES.md for the measurements): the C extension's
fused kernel, image by image in cache, or a chunk of images at a time as one large GEMM.  3x3
convolutions at stride 1 with at least 16 input and output channels go by Winograd's F(2x2, 3x3)
instead (minicnn/functional/winograd.py), which needs 2.25x fewer multiplies.
"""
from typing import NamedTuple, Tuple

import numpy as np

from minicnn import kernels
from minicnn.backend import get_array_module
from minicnn.functional._checks import (as_float_array, output_size, pair, same_dtype,
                                        shape_is, window_fits)
from minicnn.functional._workspace import clear_workspace  # noqa: F401  (public here)
from minicnn.functional._workspace import workspace as _workspace
from minicnn.functional import winograd


class Conv2dCache(NamedTuple):
    x: object               # (N, C, H, W) the input
    x_cols: object          # (N, K, L) im2col(x); None where the backward recomputes it
    w: object               # (F, C, KH, KW)
    stride: Tuple[int, int]
    padding: Tuple[int, int]


def _check_conv_args(x, w, b, stride, padding):
    op = "conv2d"
    x = as_float_array(x, "x", op, ndim=4)
    w = as_float_array(w, "w", op, ndim=4)
    stride = pair(stride, "stride", op, minimum=1)
    padding = pair(padding, "padding", op, minimum=0)
    if min(w.shape[0], w.shape[2], w.shape[3]) < 1:
        raise ValueError(f"{op}: w must hold at least one filter of at least 1x1, got "
                         f"w.shape={tuple(w.shape)}")
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
    xp = get_array_module(x)
    w_mat = w.reshape(f, -1)                                     # W: (F, K)

    if xp is not np:                                             # CuPy: the formula as written
        x_cols = kernels.im2col(x, (kh, kw), stride, padding)   # (N, K, L)
        out = w_mat @ x_cols                                     # (N, F, L)
        if b is not None:
            out += b[:, None]
    elif _fused(x, w):
        out, x_cols = _forward_fused(x, w, b, stride, padding, (n, f, out_h, out_w)), None
    else:
        out, x_cols = _forward_k_major(x, w_mat, b, (kh, kw), stride, padding, out_h * out_w)
    return out.reshape(n, f, out_h, out_w), Conv2dCache(x, x_cols, w, stride, padding)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of the convolution, with D_n = dout[n] reshaped to (F, L):

        dL/db = sum_{n,l} D_n[:, l]
        dL/dW = sum_n D_n @ X_n^T                 (reshaped to (F, C, KH, KW))
        dL/dX_n = W^T @ D_n,  dL/dx = col2im(dL/dX)  (col2im sums overlapping windows)

    Returns (dx, dw, db); dx is None when ``need_dx`` is False (a first layer needs no dx).
    """
    x, x_cols, w, stride, padding = cache
    x_shape = x.shape
    xp = get_array_module(dout)
    dout = as_float_array(dout, "dout", "conv2d_backward", ndim=4)
    n, f = x_shape[0], w.shape[0]
    out_h = output_size(x_shape[2], w.shape[2], stride[0], padding[0])
    out_w = output_size(x_shape[3], w.shape[3], stride[1], padding[1])
    shape_is(dout, (n, f, out_h, out_w), "dout", "conv2d_backward")
    same_dtype("conv2d_backward", dout=dout, w=w)

    if xp is np and x_cols is None:
        return _backward_fused(dout, x, w, stride, padding, need_dx)
    d_out = dout.reshape(n, f, out_h * out_w)                    # D_n: (N, F, L)
    w_mat = w.reshape(f, -1)                                     # W: (F, K)
    if xp is np:
        return _backward_k_major(d_out, x_shape, x_cols, w, stride, padding, need_dx)
    db = d_out.sum(axis=(0, 2))
    # sum_n D_n @ X_n^T: one GEMM per image, then a small (N, F, K) sum.
    dw = xp.matmul(d_out, x_cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    dx = None
    if need_dx:
        dx_cols = w_mat.T @ d_out                                 # (N, K, L)
        dx = kernels.col2im(dx_cols, x_shape, w.shape[2:], stride, padding)
    return dx, dw, db


# ---------------------------------------------------------------- performance plumbing
#
# With the C extension and NumPy's OpenBLAS, the whole layer is one C call (csrc/conv_tmpl.h):
# each OpenMP thread takes whole images, builds X_n in a buffer that stays in its core's cache
# and multiplies it at once with a single-threaded GEMM; the backward rebuilds X_n from x (so
# the cache holds x, not the columns) and sums dW over fixed blocks of images.  Measured on
# 2 cores this beat the batched route below by 1.6-2.2x (benchmarks/NOTES.md): no hand-offs of
# the cores between the OpenMP and BLAS threads, and no column matrix streaming through memory.


def _fused(x, w):
    """True if the C extension's fused kernel takes this convolution."""
    return kernels.fused_conv_available() and min(x.shape[0], x.shape[1], w.shape[0]) > 0


def _conv_work(x, w, stride, padding):
    """The fused kernel's scratch: one (K, L) buffer per thread, reused across calls."""
    elems = kernels.conv_work_elems(x.shape, w.shape, stride, padding)
    return _workspace.scratch("conv_work", (elems,), x.dtype)


def _forward_fused(x, w, b, stride, padding, out_shape):
    out = _workspace.recycled(out_shape, x.dtype)
    if kernels.winograd_wanted(x.shape, w.shape, stride):
        work = _workspace.scratch("conv_work", (kernels.winograd_work_elems(
            x.shape, w.shape[0], padding),), x.dtype)
        return kernels.winograd_forward(x, winograd.filter_transform(w), b, padding, out=out,
                                        work=work)
    work = _conv_work(x, w, stride, padding)
    return kernels.conv_forward(x, w, b, stride, padding, out=out, work=work)


def _backward_fused(dout, x, w, stride, padding, need_dx):
    dx = _workspace.recycled(tuple(x.shape), x.dtype) if need_dx else None
    if kernels.winograd_wanted(x.shape, w.shape, stride):
        work = _workspace.scratch("conv_work", (kernels.winograd_work_elems(
            x.shape, w.shape[0], padding),), x.dtype)
        dx, du, db = kernels.winograd_backward(dout, x, winograd.filter_transform(w), padding,
                                               need_dx=need_dx, dx_out=dx, work=work)
        return dx, winograd.filter_transform_adjoint(du), db
    work = _conv_work(x, w, stride, padding)
    return kernels.conv_backward(dout, x, w, stride, padding, need_dx=need_dx, dx_out=dx,
                                 work=work)


# Without them (other BLAS, NumPy kernels) the formulas are computed with the images side by
# side: the column matrices
# X_n are stored "K-major", as one (K, N*L) matrix [X_1 X_2 ... X_N], so that
#
#     [out_1 ... out_N]   = W @ [X_1 ... X_N]            one GEMM for the whole batch (chunk)
#     dL/dW               = [D_1 ... D_N] @ [X_1 ... X_N]^T   one GEMM, no (N, F, K) partial sums
#     [dX_1 ... dX_N]     = W^T @ [D_1 ... D_N]           one GEMM per chunk
#
# Large GEMMs keep the BLAS threads busy where N small per-image products (K = 27 for a first
# layer) mostly pay call and thread start-up costs.  The cache still holds x_cols as an (N, K, L)
# array (a transposed view of the K-major buffer) so its meaning is unchanged.


def _forward_k_major(x, w_mat, b, kernel_size, stride, padding, hw):
    """out (N, F, L) and x_cols (N, K, L) of conv2d_forward, one GEMM per chunk of images."""
    n, f, k = x.shape[0], w_mat.shape[0], w_mat.shape[1]
    cols_k_major = _workspace.recycled((k, n, hw), x.dtype)          # [X_1 ... X_N]: (K, N, L)
    x_cols = cols_k_major.transpose(1, 0, 2)                         # (N, K, L) view, for the cache
    out = _workspace.recycled((n, f, hw), x.dtype)
    bias = None if b is None else b[:, None]
    for lo, hi in _chunks(n, k * hw * x.itemsize):
        m = hi - lo
        # im2col of a chunk is still in cache when the GEMM reads it
        kernels.im2col(x[lo:hi], kernel_size, stride, padding, out=x_cols[lo:hi])
        out_k_major = _workspace.scratch("out", (f, m * hw), x.dtype)
        np.matmul(w_mat, cols_k_major[:, lo:hi].reshape(k, m * hw), out=out_k_major)
        # (F, m, L) -> (m, F, L), fused with the bias add: one pass over the chunk of out
        out_chunk = out_k_major.reshape(f, m, hw).transpose(1, 0, 2)
        if bias is None:
            np.copyto(out[lo:hi], out_chunk)
        else:
            np.add(out_chunk, bias, out=out[lo:hi])
    return out, x_cols


def _backward_k_major(d_out, x_shape, x_cols, w, stride, padding, need_dx):
    """(dx, dw, db) of conv2d_backward with the K-major GEMMs; dx chunk by chunk."""
    n, f, hw = d_out.shape
    w_mat = w.reshape(f, -1)
    k = w_mat.shape[1]
    d_k_major = _workspace.scratch("dout", (f, n * hw), d_out.dtype)   # [D_1 ... D_N]: (F, N*L)
    np.copyto(d_k_major.reshape(f, n, hw), d_out.transpose(1, 0, 2))
    db = d_k_major.sum(axis=1)
    cols_k_major = x_cols.transpose(1, 0, 2)
    if cols_k_major.flags.c_contiguous:                              # from _forward_k_major
        dw = d_k_major @ cols_k_major.reshape(k, n * hw).T
    else:                                                            # a cache built elsewhere
        dw = np.matmul(d_out, x_cols.transpose(0, 2, 1)).sum(axis=0)
    dw = dw.reshape(w.shape)
    if not need_dx:
        return None, dw, db
    # dL/dX for a chunk of images lands in a reused scratch buffer and col2im turns it into that
    # chunk of dx at once: the full (N, K, L) dL/dX never exists.
    dx = _workspace.recycled(tuple(x_shape), d_out.dtype)
    w_t = w_mat.T
    for lo, hi in _chunks(n, k * hw * d_out.itemsize):
        m = hi - lo
        dx_cols = _workspace.scratch("dx_cols", (k, m * hw), d_out.dtype)
        np.matmul(w_t, d_k_major[:, lo * hw:hi * hw], out=dx_cols)
        kernels.col2im(dx_cols.reshape(k, m, hw).transpose(1, 0, 2), (m, *x_shape[1:]),
                       w.shape[2:], stride, padding, out=dx[lo:hi])
    return dx, dw, db


# Chunks of the batch hold about this many bytes of columns: small enough to stay in the L2 /
# L3 cache between im2col and the GEMM, large enough that per-chunk Python costs stay small.
CHUNK_BYTES = 4 << 20


def _chunks(n, bytes_per_image):
    """[lo, hi) ranges covering range(n), each about CHUNK_BYTES of columns."""
    step = max(1, min(n, CHUNK_BYTES // max(1, bytes_per_image)))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]
