"""Stateless forward/backward pairs: the formulas live here.

Every layer op is a pair ``<op>_forward(x, ...) -> (out, cache)`` and
``<op>_backward(dout, cache)`` returning the gradients; each backward's docstring states its
formula and the code follows its terms.  The losses (losses.py) return ``(loss, dloss/dinput)``
in one call; ``softmax`` and ``log_softmax`` are plain functions.  Inputs are validated here,
once; the kernels below assume valid, contiguous input.
Ops find their array library with ``get_array_module``, so NumPy and CuPy arrays both work.
"""
from minicnn.functional.activation import (leaky_relu_backward, leaky_relu_forward, relu_backward,
                                           relu_forward, sigmoid_backward, sigmoid_forward,
                                           tanh_backward, tanh_forward)
from minicnn.functional.conv import conv2d_backward, conv2d_forward
from minicnn.functional.dropout import dropout_backward, dropout_forward
from minicnn.functional.linear import flatten_backward, flatten_forward, linear_backward, linear_forward
from minicnn.functional.normalization import (batchnorm1d_backward, batchnorm1d_forward,
                                              batchnorm2d_backward, batchnorm2d_forward)
from minicnn.functional.pooling import (avgpool2d_backward, avgpool2d_forward,
                                        global_avgpool2d_backward, global_avgpool2d_forward,
                                        maxpool2d_backward, maxpool2d_forward)
from minicnn.functional.losses import log_softmax, mse_loss, softmax, softmax_cross_entropy

__all__ = [name for name in dir() if not name.startswith("_")]
