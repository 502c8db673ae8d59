"""Element-wise activations; the formulas are in ``minicnn.functional.activation``."""
from minicnn import functional as F
from minicnn.nn.module import Module


class _Activation(Module):
    _forward = _backward = None

    def forward(self, x):
        out, self._cache = type(self)._forward(x)
        return out

    def backward(self, dout):
        return type(self)._backward(dout, self._take_cache())

    def config_args(self):
        return {}


class ReLU(_Activation):
    """max(x, 0)."""
    _forward = staticmethod(F.relu_forward)
    _backward = staticmethod(F.relu_backward)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x))."""
    _forward = staticmethod(F.sigmoid_forward)
    _backward = staticmethod(F.sigmoid_backward)


class Tanh(_Activation):
    """tanh(x)."""
    _forward = staticmethod(F.tanh_forward)
    _backward = staticmethod(F.tanh_backward)


class LeakyReLU(_Activation):
    """x if x > 0 else negative_slope * x."""
    _backward = staticmethod(F.leaky_relu_backward)

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        out, self._cache = F.leaky_relu_forward(x, self.negative_slope)
        return out

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"

    def config_args(self):
        return {"negative_slope": self.negative_slope}
