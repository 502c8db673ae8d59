"""Max-, average- and global-average pooling over (N, C, H, W).

Windows: kernel (KH, KW), stride (SH, SW) (defaults to the kernel), zero padding (PH, PW) with
PH <= KH // 2 and PW <= KW // 2 (as in PyTorch), so every window holds at least one real cell.
OH = (H + 2PH - KH) // SH + 1, OW likewise.
"""
from typing import NamedTuple, Tuple

from minicnn import kernels
from minicnn.backend import get_array_module
from minicnn.functional._checks import as_float_array, check_dout, output_size, pair, window_fits


class MaxPool2dCache(NamedTuple):
    x_shape: Tuple[int, int, int, int]
    argmax: object          # (N, C, OH, OW) int32: h*W + w of each window's winner in its plane
    dtype: object           # x.dtype


class AvgPool2dCache(NamedTuple):
    x_shape: Tuple[int, int, int, int]
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dtype: object


class GlobalAvgPool2dCache(NamedTuple):
    x_shape: Tuple[int, int, int, int]
    dtype: object


def _check_pool_args(op, x, kernel_size, stride, padding):
    x = as_float_array(x, "x", op, ndim=4)
    kernel_size = pair(kernel_size, "kernel_size", op, minimum=1)
    stride = kernel_size if stride is None else pair(stride, "stride", op, minimum=1)
    padding = pair(padding, "padding", op, minimum=0)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size "
                         f"{kernel_size} (x.shape={tuple(x.shape)})")
    window_fits(x.shape, kernel_size, padding, op)
    return x, kernel_size, stride, padding


def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """out[n, c, oh, ow] = max_{i,j} x_pad[n, c, oh*SH + i, ow*SW + j]   (padding = -inf).

    Ties go to the first maximum in window (row-major) order. x (N, C, H, W) -> (N, C, OH, OW).
    """
    x, kernel_size, stride, padding = _check_pool_args("maxpool2d", x, kernel_size, stride, padding)
    out, argmax = kernels.maxpool_forward(x, kernel_size, stride, padding)
    return out, MaxPool2dCache(tuple(x.shape), argmax, x.dtype)


def maxpool2d_backward(dout, cache):
    """dL/dx[n, c, h, w] = sum over windows whose winner is (h, w) of dout[n, c, oh, ow].

    The gradient is routed to the recorded argmax; overlapping windows that share a winner add.
    """
    x_shape, argmax, dtype = cache
    dout = check_dout(dout, argmax.shape, dtype, "maxpool2d_backward")
    return kernels.maxpool_backward(dout, argmax, x_shape)


def avgpool2d_forward(x, kernel_size, stride=None, padding=0):
    """out[n, c, oh, ow] = (1 / (KH*KW)) * sum_{i,j} x_pad[n, c, oh*SH + i, ow*SW + j].

    Zero padding counts in the divisor (PyTorch's count_include_pad=True).
    """
    x, kernel_size, stride, padding = _check_pool_args("avgpool2d", x, kernel_size, stride, padding)
    out = kernels.avgpool_forward(x, kernel_size, stride, padding)
    return out, AvgPool2dCache(tuple(x.shape), kernel_size, stride, padding, x.dtype)


def avgpool2d_backward(dout, cache):
    """dL/dx[n, c, h, w] = (1 / (KH*KW)) * sum over windows covering (h, w) of dout[n, c, oh, ow]."""
    x_shape, kernel_size, stride, padding, dtype = cache
    out_hw = [output_size(x_shape[2 + d], kernel_size[d], stride[d], padding[d]) for d in (0, 1)]
    dout = check_dout(dout, (*x_shape[:2], *out_hw), dtype, "avgpool2d_backward")
    return kernels.avgpool_backward(dout, x_shape, kernel_size, stride, padding)


def global_avgpool2d_forward(x):
    """out[n, c] = (1 / (H*W)) * sum_{h,w} x[n, c, h, w].   x (N, C, H, W) -> (N, C)."""
    x = as_float_array(x, "x", "global_avgpool2d", ndim=4)
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"global_avgpool2d: x has no pixels to average (x.shape={tuple(x.shape)})")
    return x.mean(axis=(2, 3)), GlobalAvgPool2dCache(tuple(x.shape), x.dtype)


def global_avgpool2d_backward(dout, cache):
    """dL/dx[n, c, h, w] = dout[n, c] / (H*W)."""
    x_shape, dtype = cache
    dout = check_dout(dout, x_shape[:2], dtype, "global_avgpool2d_backward")
    xp = get_array_module(dout)
    share = dout / (x_shape[2] * x_shape[3])
    return xp.broadcast_to(share[:, :, None, None], x_shape).copy()
