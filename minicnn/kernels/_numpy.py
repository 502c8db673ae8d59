"""Vectorized NumPy kernels: the fallback when the C extension is not built.

Each function loops only over the KH*KW kernel offsets (a handful) and lets NumPy do the rest,
so it is correct for any stride/padding and reasonably fast.  See ``minicnn.kernels`` for the
signatures and index conventions.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided


def output_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _pad(x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant", constant_values=value)


def _windows(x_pad, kernel_size, stride, out_hw):
    """Read-only view (N, C, KH, KW, OH, OW) with view[n,c,i,j,oh,ow] = x_pad[n,c,oh*SH+i,ow*SW+j]."""
    n, c = x_pad.shape[:2]
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, stride, out_hw
    s_n, s_c, s_h, s_w = x_pad.strides
    return as_strided(x_pad, shape=(n, c, kh, kw, oh, ow),
                      strides=(s_n, s_c, s_h, s_w, s_h * sh, s_w * sw), writeable=False)


def _out_hw(x_shape, kernel_size, stride, padding):
    h, w = x_shape[2:]
    return (output_size(h, kernel_size[0], stride[0], padding[0]),
            output_size(w, kernel_size[1], stride[1], padding[1]))


def _check_out(out, shape, dtype, contiguous=True):
    """A caller-provided result buffer must match exactly (the C kernels require the same)."""
    if (out.shape != tuple(shape) or out.dtype != dtype
            or (contiguous and not out.flags.c_contiguous)):
        raise ValueError(f"out must be a{' C-contiguous' if contiguous else 'n'} array of shape "
                         f"{tuple(shape)} and dtype {dtype}, got shape {out.shape} dtype {out.dtype}")


def im2col(x, kernel_size, stride, padding, out=None):
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding)
    windows = _windows(_pad(x, padding), kernel_size, stride, (oh, ow))
    shape = (n, c * kernel_size[0] * kernel_size[1], oh * ow)
    if out is None:
        return windows.reshape(shape)  # copies
    _check_out(out, shape, x.dtype, contiguous=False)
    split = out.view()
    split.shape = windows.shape    # a view of out (raises rather than copy); rows may be strided
    split[...] = windows
    return out


def _scatter_windows(x_shape, kernel_size, stride, padding, values_at, dtype):
    """dx_pad[n, c, oh*SH+i, ow*SW+j] += values_at(i, j)[n, c, oh, ow] for every offset (i, j)."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = _out_hw(x_shape, kernel_size, stride, padding)
    dx_pad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            dx_pad[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += values_at(i, j)
    return dx_pad[:, :, ph:ph + h, pw:pw + w].copy()


def col2im(cols, x_shape, kernel_size, stride, padding, out=None):
    n, c = x_shape[:2]
    (kh, kw) = kernel_size
    oh, ow = _out_hw(x_shape, kernel_size, stride, padding)
    cols6 = cols.reshape(n, c, kh, kw, oh, ow)
    dx = _scatter_windows(x_shape, kernel_size, stride, padding,
                          lambda i, j: cols6[:, :, i, j], cols.dtype)
    if out is None:
        return dx
    _check_out(out, x_shape, cols.dtype)
    out[...] = dx
    return out


def maxpool_forward(x, kernel_size, stride, padding):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding)
    windows = _windows(_pad(x, padding, -np.inf), kernel_size, stride, (oh, ow))
    flat = windows.reshape(n, c, kh * kw, oh, ow)
    k = flat.argmax(axis=2)  # first maximum in window order
    out = np.take_along_axis(flat, k[:, :, None], axis=2)[:, :, 0]
    if ph or pw:
        # A window whose real cells are all -inf ties with its -inf padding: the first real
        # cell must win, never the padding.
        real = _windows(_pad(np.ones((1, 1, h, w), bool), padding, False), kernel_size, stride,
                        (oh, ow)).reshape(1, 1, kh * kw, oh, ow)
        k = np.where(out == -np.inf, real.argmax(axis=2), k)
    rows = np.arange(oh)[:, None] * sh + k // kw - ph
    cols = np.arange(ow)[None, :] * sw + k % kw - pw
    return out, (rows * w + cols).astype(np.int32)


def maxpool_backward(dout, argmax, x_shape):
    n, c, h, w = x_shape
    plane_start = (np.arange(n * c, dtype=np.int64) * (h * w)).reshape(n, c, 1, 1)
    index = (plane_start + argmax).ravel()
    dx = np.bincount(index, weights=dout.ravel(), minlength=n * c * h * w)
    return dx.astype(dout.dtype, copy=False).reshape(x_shape)


def avgpool_forward(x, kernel_size, stride, padding):
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding)
    windows = _windows(_pad(x, padding), kernel_size, stride, (oh, ow))
    area = kernel_size[0] * kernel_size[1]
    return (windows.sum(axis=(2, 3)) / area).astype(x.dtype, copy=False)


def avgpool_backward(dout, x_shape, kernel_size, stride, padding):
    share = dout / (kernel_size[0] * kernel_size[1])
    return _scatter_windows(x_shape, kernel_size, stride, padding, lambda i, j: share, dout.dtype)
