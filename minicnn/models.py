"""The model zoo: small, classic CNNs built from ``minicnn.nn`` layers, and a registry.

Every builder takes ``num_classes``, ``in_channels``, ``input_size`` (the square input side it
is laid out for), a keyword-only ``seed`` (all initial weights come from one
``numpy.random.default_rng(seed)``, so the same seed gives the same model) and ``dtype``.

| name            | input    | layers                                                            | params  |
|-----------------|----------|-------------------------------------------------------------------|---------|
| ``lenet5``      | 1x28x28  | conv5x5 6 (pad 2), pool, conv5x5 16, pool, fc 120, fc 84, fc 10   | 61,706  |
| ``cifar_convnet`` | 3x32x32 | [conv3x3 32]x2, pool, [conv3x3 64]x2, pool, fc 512, fc 10        | 2,168,362 |
| ``fashion_net`` | 1x28x28  | 3 x [conv3x3, BN, ReLU, pool] (32, 64, 128), fc 128 + BN, fc 10  | 356,586 |
| ``resnet20``    | 3x32x32  | CIFAR ResNet-20: conv 16, 3 stages x 3 BasicBlocks (16/32/64), GAP | 272,474 |
| ``digits_net``  | 1x8x8    | conv3x3 16, conv3x3 32, pool, fc 64, fc 10                        | 38,282  |

LeNet-5 and the benchmark shapes: the classic LeNet-5 reads 32x32 images with unpadded 5x5
convolutions (32 -> 28 -> pool 14 -> 10 -> pool 5, so 16*5*5 = 400 features).  On 28x28
MNIST-style input the same network is obtained by padding conv1 by 2.  That is the choice
here: conv1 (benchmark case C1, 1 -> 6 on 28x28 input, here with padding 2) keeps 28x28, pooling
gives 14x14, and conv2 is exactly case C2 (6 -> 16, 5x5 pad 0 on 14x14).  With conv1 unpadded
instead, conv2 would see 12x12 input and match neither C2 nor the classic 400-wide fc1.
"""
import numpy as np

from minicnn import nn

__all__ = ["lenet5", "cifar_convnet", "fashion_net", "resnet20", "digits_net",
           "MODELS", "DEFAULT_INPUT", "get_model", "count_parameters", "to_torch"]


def _pool_out(size, kernel=2, stride=2, padding=0):
    return (size + 2 * padding - kernel) // stride + 1


def _check_side(model, input_size, side):
    """The feature map before the classifier must keep at least one pixel."""
    if not isinstance(input_size, (int, np.integer)) or side < 1:
        raise ValueError(f"{model}: input_size={input_size!r} is too small for this network "
                         "(its feature maps would vanish before the classifier)")
    return side


def lenet5(num_classes=10, in_channels=1, *, input_size=28, seed=0, dtype=np.float32):
    """LeNet-5 with ReLU and max-pooling for 28x28 input (conv1 padded by 2; see the module doc)."""
    rng = np.random.default_rng(seed)
    side = _check_side("lenet5", input_size, _pool_out(_pool_out(input_size) - 4))  # conv2 takes 4
    return nn.Sequential(
        nn.Conv2D(in_channels, 6, 5, padding=2, rng=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(6, 16, 5, rng=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120, rng=rng, dtype=dtype), nn.ReLU(),
        nn.Linear(120, 84, rng=rng, dtype=dtype), nn.ReLU(),
        nn.Linear(84, num_classes, rng=rng, dtype=dtype),
    )


def cifar_convnet(num_classes=10, in_channels=3, *, input_size=32, seed=0, dtype=np.float32):
    """Benchmark case G: [conv3x3 32, relu]x2, pool, [conv3x3 64, relu]x2, pool, fc 512, relu, fc."""
    rng = np.random.default_rng(seed)
    side = _check_side("cifar_convnet", input_size, _pool_out(_pool_out(input_size)))

    def conv(cin, cout):
        return [nn.Conv2D(cin, cout, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU()]

    return nn.Sequential(
        *conv(in_channels, 32), *conv(32, 32), nn.MaxPool2D(2),
        *conv(32, 64), *conv(64, 64), nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 512, rng=rng, dtype=dtype), nn.ReLU(),
        nn.Linear(512, num_classes, rng=rng, dtype=dtype),
    )


def fashion_net(num_classes=10, in_channels=1, *, input_size=28, dropout=0.3, seed=0,
                dtype=np.float32):
    """A compact Fashion-MNIST net: three [conv3x3, BatchNorm, ReLU, max-pool] blocks, then fc.

    28x28 -> 14x14 (32 ch) -> 7x7 (64 ch) -> 4x4 (128 ch; the last pool pads by 1 so the odd
    7x7 map loses no row) -> fc 128 (BatchNorm1D, ReLU, dropout) -> fc num_classes.
    Convolutions feeding a BatchNorm carry no bias (the BN shift makes it redundant).
    """
    rng = np.random.default_rng(seed)

    def block(cin, cout, pool_padding=0):
        return [nn.Conv2D(cin, cout, 3, padding=1, bias=False, rng=rng, dtype=dtype),
                nn.BatchNorm2D(cout, dtype=dtype), nn.ReLU(),
                nn.MaxPool2D(2, padding=pool_padding)]

    side = _pool_out(_pool_out(input_size))
    last_padding = side % 2                                  # pad odd maps so no row is dropped
    side = _check_side("fashion_net", input_size, _pool_out(side, padding=last_padding))
    return nn.Sequential(
        *block(in_channels, 32), *block(32, 64), *block(64, 128, last_padding),
        nn.Flatten(),
        nn.Linear(128 * side * side, 128, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm1D(128, dtype=dtype), nn.ReLU(),
        nn.Dropout(dropout, rng=rng),
        nn.Linear(128, num_classes, rng=rng, dtype=dtype),
    )


def _basic_block(cin, cout, stride, rng, dtype):
    """ReLU(body(x) + shortcut(x)), body = conv3x3-BN-ReLU-conv3x3-BN.

    The shortcut is the identity when the shape is kept, else a strided 1x1 conv + BN
    projection (ResNet's option B).
    """
    body = nn.Sequential(
        nn.Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm2D(cout, dtype=dtype), nn.ReLU(),
        nn.Conv2D(cout, cout, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm2D(cout, dtype=dtype),
    )
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(
            nn.Conv2D(cin, cout, 1, stride=stride, bias=False, rng=rng, dtype=dtype),
            nn.BatchNorm2D(cout, dtype=dtype),
        )
    return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU())


def resnet20(num_classes=10, in_channels=3, *, input_size=32, blocks_per_stage=3, seed=0,
             dtype=np.float32):
    """CIFAR ResNet-20 (He et al. 2016, section 4.2): 6n+2 layers with n = ``blocks_per_stage``.

    conv3x3 16 -> 3 stages of n BasicBlocks with 16, 32, 64 channels (the first block of stages
    2 and 3 has stride 2 and a 1x1-conv projection shortcut) -> global average pool -> fc.
    ``input_size`` is checked for a uniform signature; global pooling makes any size work.
    """
    _check_side("resnet20", input_size, input_size)
    if not isinstance(blocks_per_stage, (int, np.integer)) or blocks_per_stage < 1:
        raise ValueError(f"resnet20: blocks_per_stage must be a positive int, got {blocks_per_stage!r}")
    rng = np.random.default_rng(seed)
    layers = [nn.Conv2D(in_channels, 16, 3, padding=1, bias=False, rng=rng, dtype=dtype),
              nn.BatchNorm2D(16, dtype=dtype), nn.ReLU()]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        for index in range(blocks_per_stage):
            stride = 2 if (stage > 0 and index == 0) else 1
            layers.append(_basic_block(cin, cout, stride, rng, dtype))
            cin = cout
    layers += [nn.GlobalAvgPool2D(), nn.Linear(64, num_classes, rng=rng, dtype=dtype)]
    return nn.Sequential(*layers)


def digits_net(num_classes=10, in_channels=1, *, input_size=8, seed=0, dtype=np.float32):
    """A small CNN for scikit-learn's 8x8 digits: two conv3x3 (16, 32), pool, fc 64, fc 10."""
    rng = np.random.default_rng(seed)
    side = _check_side("digits_net", input_size, _pool_out(input_size))
    return nn.Sequential(
        nn.Conv2D(in_channels, 16, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU(),
        nn.Conv2D(16, 32, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Linear(32 * side * side, 64, rng=rng, dtype=dtype), nn.ReLU(),
        nn.Linear(64, num_classes, rng=rng, dtype=dtype),
    )


MODELS = {
    "lenet5": lenet5,
    "cifar_convnet": cifar_convnet,
    "fashion_net": fashion_net,
    "resnet20": resnet20,
    "digits_net": digits_net,
}

# The input each model is laid out for: (channels, side).
DEFAULT_INPUT = {
    "lenet5": (1, 28),
    "cifar_convnet": (3, 32),
    "fashion_net": (1, 28),
    "resnet20": (3, 32),
    "digits_net": (1, 8),
}


def get_model(name, **kwargs):
    """Build a zoo model by name: ``get_model("lenet5", num_classes=10, seed=0)``."""
    key = str(name).lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"get_model: unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[key](**kwargs)


def count_parameters(model):
    """Total number of trainable scalars."""
    return int(sum(p.size for p in model.parameters().values()))


def to_torch(model):
    """The same network as a ``torch.nn.Module`` holding copies of ``model``'s weights and buffers.

    Parameter names match (``'0.weight'``, ``'3.body.1.running_mean'``), so results and gradients
    can be compared tensor by tensor; the dtype follows the model's. Needs PyTorch; used by the
    parity tests and the training benchmark. Layers without a PyTorch counterpart -> TypeError.
    """
    import torch
    from torch import nn as tnn

    class _Residual(tnn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body = body
            self.shortcut = shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    def convert(m):
        kind = type(m).__name__
        if kind == "Sequential":
            return tnn.Sequential(*[convert(layer) for layer in m])
        if kind == "Residual":
            return _Residual(convert(m.body), None if m.shortcut is None else convert(m.shortcut))
        if kind == "Conv2D":
            return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                              bias=m.bias is not None)
        if kind == "Linear":
            return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        if kind == "MaxPool2D":
            return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
        if kind == "AvgPool2D":
            return tnn.AvgPool2d(m.kernel_size, m.stride, m.padding, count_include_pad=True)
        if kind == "GlobalAvgPool2D":
            return tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())
        if kind == "BatchNorm2D":
            return tnn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum)
        if kind == "BatchNorm1D":
            return tnn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum)
        if kind == "Dropout":
            return tnn.Dropout(m.p)
        if kind == "LeakyReLU":
            return tnn.LeakyReLU(m.negative_slope)
        simple = {"ReLU": tnn.ReLU, "Sigmoid": tnn.Sigmoid, "Tanh": tnn.Tanh, "Flatten": tnn.Flatten}
        if kind in simple:
            return simple[kind]()
        raise TypeError(f"to_torch: no PyTorch counterpart for {kind}")

    torch_model = convert(model)
    dtype = torch.float64 if np.dtype(model.dtype) == np.float64 else torch.float32
    torch_model = torch_model.to(dtype)
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    missing, unexpected = torch_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"to_torch: names differ (missing {missing}, unexpected {unexpected})")
    torch_model.train(getattr(model, "training", True))
    return torch_model
