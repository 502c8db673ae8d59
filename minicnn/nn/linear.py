"""Fully connected layer and flatten; the formulas are in ``minicnn.functional.linear``."""
import numpy as np

from minicnn import functional as F
from minicnn import init as initializers
from minicnn.nn._args import float_dtype, positive_int
from minicnn.nn.module import Module


class Linear(Module):
    """out = x @ weight.T + bias.   x (N, in_features) -> (N, out_features).

    weight (out_features, in_features) drawn by ``init`` (biases start at zero, except
    ``init="torch"``); ``rng``: a numpy Generator or int seed (None: unseeded).
    ``needs_input_grad = False`` makes backward return None.
    """

    def __init__(self, in_features, out_features, bias=True, *, init="he", rng=None, dtype=np.float32):
        super().__init__()
        name = "Linear"
        self.in_features = positive_int(in_features, "in_features", name)
        self.out_features = positive_int(out_features, "out_features", name)
        self.init = str(init)
        dtype = float_dtype(dtype, name)
        make_weight = initializers.get_initializer(init)
        rng = initializers.as_generator(rng)
        shape = (self.out_features, self.in_features)
        self.register_parameter("weight", make_weight(shape, rng, dtype))
        if bias:
            if make_weight is initializers.torch_uniform:
                b = initializers.torch_uniform((self.out_features,), rng, dtype, fan_in=self.in_features)
            else:
                b = initializers.zeros((self.out_features,), dtype)
            self.register_parameter("bias", b)
        else:
            self.bias = None

    def forward(self, x):
        out, self._cache = F.linear_forward(x, self.weight, self.bias)
        return out

    def backward(self, dout):
        dx, grad_weight, grad_bias = F.linear_backward(dout, self._take_cache())
        self._store_grad("weight", grad_weight)
        if self.bias is not None:
            self._store_grad("bias", grad_bias)
        return dx if self.needs_input_grad else None

    def extra_repr(self):
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        if self.weight.dtype != np.float32:
            s += f", dtype={self.weight.dtype}"
        return s

    def config_args(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "init": self.init, "dtype": str(self.weight.dtype)}


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def forward(self, x):
        out, self._cache = F.flatten_forward(x)
        return out

    def backward(self, dout):
        return F.flatten_backward(dout, self._take_cache())

    def config_args(self):
        return {}
