"""Naive loop implementations: the oracle the fast code is tested against.

This is the code a student writes first: loops straight from the definitions, one output (or one
window) at a time, with the formula in each docstring.  It is slow on purpose and shares nothing
with ``minicnn.functional`` or ``minicnn.kernels``, so an agreement between the two is evidence
that both are right.  Names and signatures match ``minicnn.functional``:

    conv2d_forward(x, w, b, stride=1, padding=0) -> (out, cache);  conv2d_backward(dout, cache) -> (dx, dw, db)
    maxpool2d_forward(x, kernel_size, stride=None, padding=0) -> (out, cache);  maxpool2d_backward(dout, cache) -> dx
    avgpool2d_forward(x, kernel_size, stride=None, padding=0) -> (out, cache);  avgpool2d_backward(dout, cache) -> dx
    linear_forward(x, w, b) -> (out, cache);  linear_backward(dout, cache) -> (dx, dw, db)
    relu_forward(x) -> (out, cache);  relu_backward(dout, cache) -> dx

Notation: x (N, C, H, W); kernel (KH, KW); stride (SH, SW); zero padding (PH, PW);
x_pad is x with PH rows of zeros above and below and PW columns left and right;
OH = (H + 2*PH - KH) // SH + 1 and OW = (W + 2*PW - KW) // SW + 1.

Inputs are assumed valid (``minicnn.functional`` validates); outputs keep the input's dtype.
"""
from typing import NamedTuple, Tuple

import numpy as np


def _pair(value):
    """An int or an (h, w) pair -> (h, w)."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _output_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _zero_pad(x, padding):
    """x_pad: x (N, C, H, W) with PH zero rows above and below and PW zero columns each side."""
    n, c, h, w = x.shape
    ph, pw = padding
    x_pad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    x_pad[:, :, ph:ph + h, pw:pw + w] = x
    return x_pad


# ----------------------------------------------------------------------------- convolution

class Conv2dCache(NamedTuple):
    x: np.ndarray                 # (N, C, H, W)
    w: np.ndarray                 # (F, C, KH, KW)
    b: object                     # (F,) or None
    stride: Tuple[int, int]
    padding: Tuple[int, int]


def conv2d_forward(x, w, b, stride=1, padding=0):
    """Cross-correlation, one output element at a time:

        out[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j] * x_pad[n, c, oh*SH + i, ow*SW + j]

    x (N, C, H, W), w (F, C, KH, KW), b (F,) or None -> out (N, F, OH, OW).
    """
    stride, padding = _pair(stride), _pair(padding)
    n_images, channels, height, width = x.shape
    n_filters, _, kh, kw = w.shape
    sh, sw = stride
    out_h = _output_size(height, kh, sh, padding[0])
    out_w = _output_size(width, kw, sw, padding[1])
    x_pad = _zero_pad(x, padding)

    out = np.zeros((n_images, n_filters, out_h, out_w), dtype=x.dtype)
    for n in range(n_images):
        for f in range(n_filters):
            for oh in range(out_h):
                for ow in range(out_w):
                    total = 0.0 if b is None else b[f]
                    for c in range(channels):
                        for i in range(kh):
                            for j in range(kw):
                                total += w[f, c, i, j] * x_pad[n, c, oh * sh + i, ow * sw + j]
                    out[n, f, oh, ow] = total
    return out, Conv2dCache(x, w, b, stride, padding)


def conv2d_backward(dout, cache):
    """Each output element out[n, f, oh, ow] touched b[f], w[f, c, i, j] and
    x_pad[n, c, oh*SH + i, ow*SW + j]; hand each its share of dout[n, f, oh, ow]:

        db[f]          = sum_{n, oh, ow} dout[n, f, oh, ow]
        dw[f, c, i, j] = sum_{n, oh, ow} dout[n, f, oh, ow] * x_pad[n, c, oh*SH + i, ow*SW + j]
        dx_pad[n, c, oh*SH + i, ow*SW + j] += dout[n, f, oh, ow] * w[f, c, i, j]

    and dx is dx_pad without its border (the padding is a constant: its gradient is dropped).
    Returns (dx, dw, db); db is None when the forward had no bias.
    """
    x, w, b, (sh, sw), padding = cache
    n_images, channels, height, width = x.shape
    n_filters, _, kh, kw = w.shape
    _, _, out_h, out_w = dout.shape
    x_pad = _zero_pad(x, padding)

    dx_pad = np.zeros_like(x_pad, dtype=dout.dtype)
    dw = np.zeros(w.shape, dtype=dout.dtype)
    db = None if b is None else np.zeros(b.shape, dtype=dout.dtype)
    for n in range(n_images):
        for f in range(n_filters):
            for oh in range(out_h):
                for ow in range(out_w):
                    g = dout[n, f, oh, ow]
                    if db is not None:
                        db[f] += g
                    for c in range(channels):
                        for i in range(kh):
                            for j in range(kw):
                                dw[f, c, i, j] += g * x_pad[n, c, oh * sh + i, ow * sw + j]
                                dx_pad[n, c, oh * sh + i, ow * sw + j] += g * w[f, c, i, j]
    ph, pw = padding
    dx = dx_pad[:, :, ph:ph + height, pw:pw + width].copy()
    return dx, dw, db


# ----------------------------------------------------------------------------- pooling

class Pool2dCache(NamedTuple):
    x: np.ndarray                 # (N, C, H, W)
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]


def _pool_geometry(x, kernel_size, stride, padding):
    kernel_size = _pair(kernel_size)
    stride = kernel_size if stride is None else _pair(stride)
    padding = _pair(padding)
    out_h = _output_size(x.shape[2], kernel_size[0], stride[0], padding[0])
    out_w = _output_size(x.shape[3], kernel_size[1], stride[1], padding[1])
    return kernel_size, stride, padding, out_h, out_w


def _window_argmax(x, n, c, oh, ow, kernel_size, stride, padding):
    """(h, w) in x of the largest value in window (oh, ow); padded cells are skipped, and a
    later cell must be strictly larger to win, so ties go to the first in row-major order."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    height, width = x.shape[2:]
    best = None
    for i in range(kh):
        for j in range(kw):
            h, w = oh * sh + i - ph, ow * sw + j - pw
            if not (0 <= h < height and 0 <= w < width):
                continue                                   # a padded cell never wins
            if best is None or x[n, c, h, w] > x[n, c, best[0], best[1]]:
                best = (h, w)
    return best


def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """out[n, c, oh, ow] = max_{i, j} x[n, c, oh*SH + i - PH, ow*SW + j - PW] over the real
    (unpadded) cells of the window.  Stride defaults to the kernel size.
    x (N, C, H, W) -> out (N, C, OH, OW).
    """
    kernel_size, stride, padding, out_h, out_w = _pool_geometry(x, kernel_size, stride, padding)
    n_images, channels = x.shape[:2]
    out = np.zeros((n_images, channels, out_h, out_w), dtype=x.dtype)
    for n in range(n_images):
        for c in range(channels):
            for oh in range(out_h):
                for ow in range(out_w):
                    h, w = _window_argmax(x, n, c, oh, ow, kernel_size, stride, padding)
                    out[n, c, oh, ow] = x[n, c, h, w]
    return out, Pool2dCache(x, kernel_size, stride, padding)


def maxpool2d_backward(dout, cache):
    """The max is a selection: its gradient goes to the winner and nowhere else,

        dx[n, c, h*, w*] += dout[n, c, oh, ow],   (h*, w*) = argmax of window (oh, ow)

    (overlapping windows with the same winner add).
    """
    x, kernel_size, stride, padding = cache
    n_images, channels, out_h, out_w = dout.shape
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for n in range(n_images):
        for c in range(channels):
            for oh in range(out_h):
                for ow in range(out_w):
                    h, w = _window_argmax(x, n, c, oh, ow, kernel_size, stride, padding)
                    dx[n, c, h, w] += dout[n, c, oh, ow]
    return dx


def avgpool2d_forward(x, kernel_size, stride=None, padding=0):
    """out[n, c, oh, ow] = (1 / (KH*KW)) * sum_{i, j} x_pad[n, c, oh*SH + i, ow*SW + j]

    (zero padding counts in the divisor, PyTorch's count_include_pad=True).
    Stride defaults to the kernel size.  x (N, C, H, W) -> out (N, C, OH, OW).
    """
    kernel_size, stride, padding, out_h, out_w = _pool_geometry(x, kernel_size, stride, padding)
    (kh, kw), (sh, sw) = kernel_size, stride
    n_images, channels = x.shape[:2]
    x_pad = _zero_pad(x, padding)
    out = np.zeros((n_images, channels, out_h, out_w), dtype=x.dtype)
    for n in range(n_images):
        for c in range(channels):
            for oh in range(out_h):
                for ow in range(out_w):
                    total = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            total += x_pad[n, c, oh * sh + i, ow * sw + j]
                    out[n, c, oh, ow] = total / (kh * kw)
    return out, Pool2dCache(x, kernel_size, stride, padding)


def avgpool2d_backward(dout, cache):
    """Every cell of window (oh, ow) gets an equal share of its gradient:

        dx_pad[n, c, oh*SH + i, ow*SW + j] += dout[n, c, oh, ow] / (KH*KW)

    and dx is dx_pad without its border.
    """
    x, (kh, kw), (sh, sw), (ph, pw) = cache
    n_images, channels, out_h, out_w = dout.shape
    height, width = x.shape[2:]
    dx_pad = np.zeros((n_images, channels, height + 2 * ph, width + 2 * pw), dtype=dout.dtype)
    for n in range(n_images):
        for c in range(channels):
            for oh in range(out_h):
                for ow in range(out_w):
                    share = dout[n, c, oh, ow] / (kh * kw)
                    for i in range(kh):
                        for j in range(kw):
                            dx_pad[n, c, oh * sh + i, ow * sw + j] += share
    return dx_pad[:, :, ph:ph + height, pw:pw + width].copy()


# ----------------------------------------------------------------------------- linear, relu

class LinearCache(NamedTuple):
    x: np.ndarray                 # (N, D)
    w: np.ndarray                 # (M, D)
    b: object                     # (M,) or None


def linear_forward(x, w, b):
    """out[n, m] = b[m] + sum_d x[n, d] * w[m, d].   x (N, D), w (M, D), b (M,) -> out (N, M)."""
    n_rows, n_in = x.shape
    n_out = w.shape[0]
    out = np.zeros((n_rows, n_out), dtype=x.dtype)
    for n in range(n_rows):
        for m in range(n_out):
            total = 0.0 if b is None else b[m]
            for d in range(n_in):
                total += x[n, d] * w[m, d]
            out[n, m] = total
    return out, LinearCache(x, w, b)


def linear_backward(dout, cache):
    """dx[n, d] = sum_m dout[n, m] * w[m, d],  dw[m, d] = sum_n dout[n, m] * x[n, d],
    db[m] = sum_n dout[n, m].   Returns (dx, dw, db)."""
    x, w, b = cache
    n_rows, n_in = x.shape
    n_out = w.shape[0]
    dx = np.zeros(x.shape, dtype=dout.dtype)
    dw = np.zeros(w.shape, dtype=dout.dtype)
    db = None if b is None else np.zeros(b.shape, dtype=dout.dtype)
    for n in range(n_rows):
        for m in range(n_out):
            g = dout[n, m]
            if db is not None:
                db[m] += g
            for d in range(n_in):
                dx[n, d] += g * w[m, d]
                dw[m, d] += g * x[n, d]
    return dx, dw, db


class ReluCache(NamedTuple):
    x: np.ndarray


def relu_forward(x):
    """out = x where x > 0, else 0 (element by element)."""
    out = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        out[index] = x[index] if x[index] > 0 else 0
    return out, ReluCache(x)


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the subgradient at 0 is taken as 0, like PyTorch)."""
    (x,) = cache
    dx = np.zeros_like(dout)
    for index in np.ndindex(*x.shape):
        dx[index] = dout[index] if x[index] > 0 else 0
    return dx
