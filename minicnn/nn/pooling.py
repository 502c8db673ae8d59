"""Pooling layers; the formulas are in ``minicnn.functional.pooling``."""
from minicnn import functional as F
from minicnn.nn._args import pair
from minicnn.nn.module import Module


class _Pool2D(Module):
    _forward = _backward = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", name, minimum=1)
        self.padding = pair(padding, "padding", name, minimum=0)

    def forward(self, x):
        out, self._cache = type(self)._forward(x, self.kernel_size, self.stride, self.padding)
        return out

    def backward(self, dout):
        return type(self)._backward(dout, self._take_cache())

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}, stride={self.stride}"
        return s + (f", padding={self.padding}" if self.padding != (0, 0) else "")

    def config_args(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


class MaxPool2D(_Pool2D):
    """Max over each KHxKW window (stride defaults to the kernel). (N, C, H, W) -> (N, C, OH, OW)."""
    _forward = staticmethod(F.maxpool2d_forward)
    _backward = staticmethod(F.maxpool2d_backward)


class AvgPool2D(_Pool2D):
    """Mean over each window; zero padding counts in the divisor. (N, C, H, W) -> (N, C, OH, OW)."""
    _forward = staticmethod(F.avgpool2d_forward)
    _backward = staticmethod(F.avgpool2d_backward)


class GlobalAvgPool2D(Module):
    """Mean over all of H and W. (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        out, self._cache = F.global_avgpool2d_forward(x)
        return out

    def backward(self, dout):
        return F.global_avgpool2d_backward(dout, self._take_cache())

    def config_args(self):
        return {}
