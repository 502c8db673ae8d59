"""Batch normalization layers; the formulas are in ``minicnn.functional.normalization``.

Parameters 'weight' (gamma, ones) and 'bias' (beta, zeros); buffers 'running_mean' (zeros) and
'running_var' (ones), updated in training mode as in PyTorch (``momentum`` weights the new batch).
"""
import numpy as np

from minicnn import functional as F
from minicnn import init as initializers
from minicnn.nn._args import float_dtype, positive_int, probability
from minicnn.nn.module import Module


class _BatchNorm(Module):
    _forward = _backward = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", name)
        self.eps = float(eps)
        if not self.eps > 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps!r}")
        self.momentum = probability(momentum, "momentum", name)
        dtype = float_dtype(dtype, name)
        self.register_parameter("weight", initializers.ones((self.num_features,), dtype))
        self.register_parameter("bias", initializers.zeros((self.num_features,), dtype))
        self.register_buffer("running_mean", initializers.zeros((self.num_features,), dtype))
        self.register_buffer("running_var", initializers.ones((self.num_features,), dtype))

    def forward(self, x):
        out, self._cache = type(self)._forward(x, self.weight, self.bias, self.running_mean,
                                               self.running_var, training=self.training,
                                               momentum=self.momentum, eps=self.eps)
        return out

    def backward(self, dout):
        dx, grad_gamma, grad_beta = type(self)._backward(dout, self._take_cache())
        self._store_grad("weight", grad_gamma)
        self._store_grad("bias", grad_beta)
        return dx if self.needs_input_grad else None

    def extra_repr(self):
        s = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        if self.weight.dtype != np.float32:
            s += f", dtype={self.weight.dtype}"
        return s

    def config_args(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "dtype": str(self.weight.dtype)}


class BatchNorm2D(_BatchNorm):
    """Per-channel batch norm over (N, H, W). x (N, C, H, W), C = num_features."""
    _forward = staticmethod(F.batchnorm2d_forward)
    _backward = staticmethod(F.batchnorm2d_backward)


class BatchNorm1D(_BatchNorm):
    """Per-feature batch norm over N. x (N, D), D = num_features."""
    _forward = staticmethod(F.batchnorm1d_forward)
    _backward = staticmethod(F.batchnorm1d_backward)
