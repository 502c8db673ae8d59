"""Layers with state: parameters, gradients, buffers and caches. The math is in ``minicnn.functional``.

Every module: ``forward(x)`` / ``module(x)``, ``backward(dout) -> dx``, ``parameters()`` /
``grads()`` / ``buffers()`` (live arrays by dotted name), ``train()`` / ``eval()``,
``zero_grad()``, ``freeze()`` / ``unfreeze()``, ``to("cpu" | "gpu")``, ``summary(input_shape)``,
``config()`` (JSON-able; ``module_from_config`` rebuilds it). See ``minicnn.nn.module``.
"""
from minicnn.nn.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from minicnn.nn.containers import Residual, Sequential
from minicnn.nn.conv import Conv2D
from minicnn.nn.dropout import Dropout
from minicnn.nn.linear import Flatten, Linear
from minicnn.nn.module import Module, module_from_config
from minicnn.nn.normalization import BatchNorm1D, BatchNorm2D
from minicnn.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

__all__ = ["Module", "module_from_config", "Sequential", "Residual", "Conv2D", "Linear", "Flatten",
           "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
           "Dropout", "BatchNorm2D", "BatchNorm1D"]
