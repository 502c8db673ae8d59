"""2-D convolution layer; the formula is ``minicnn.functional.conv2d_forward``."""
import numpy as np

from minicnn import functional as F
from minicnn import init as initializers
from minicnn.nn._args import float_dtype, pair, positive_int
from minicnn.nn.module import Module


class Conv2D(Module):
    """out = conv2d(x, weight, bias).  x (N, C, H, W) -> (N, F, OH, OW), OH = (H + 2*PH - KH) // SH + 1.

    weight (out_channels, in_channels, KH, KW) drawn by ``init`` (see ``minicnn.init.INITIALIZERS``;
    biases start at zero, except ``init="torch"`` which draws them like PyTorch); bias
    (out_channels,). ``rng``: a numpy Generator or int seed (None draws an unseeded one; models
    pass seeded generators). ``needs_input_grad = False`` skips dL/dx (backward returns None).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
                 init="he", rng=None, dtype=np.float32):
        super().__init__()
        name = "Conv2D"
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = pair(stride, "stride", name, minimum=1)
        self.padding = pair(padding, "padding", name, minimum=0)
        self.init = str(init)
        dtype = float_dtype(dtype, name)
        make_weight = initializers.get_initializer(init)
        rng = initializers.as_generator(rng)
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        self.register_parameter("weight", make_weight(shape, rng, dtype))
        if bias:
            if make_weight is initializers.torch_uniform:
                fan_in, _ = initializers.compute_fans(shape)
                b = initializers.torch_uniform((self.out_channels,), rng, dtype, fan_in=fan_in)
            else:
                b = initializers.zeros((self.out_channels,), dtype)
            self.register_parameter("bias", b)
        else:
            self.bias = None

    def forward(self, x):
        out, self._cache = F.conv2d_forward(x, self.weight, self.bias, self.stride, self.padding)
        return out

    def backward(self, dout):
        dx, grad_weight, grad_bias = F.conv2d_backward(dout, self._take_cache(),
                                                       need_dx=self.needs_input_grad)
        self._store_grad("weight", grad_weight)
        if self.bias is not None:
            self._store_grad("bias", grad_bias)
        return dx

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        if self.weight.dtype != np.float32:
            s += f", dtype={self.weight.dtype}"
        return s

    def config_args(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "bias": self.bias is not None,
                "init": self.init, "dtype": str(self.weight.dtype)}
