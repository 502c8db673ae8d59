"""Containers: ``Sequential`` (a chain) and ``Residual`` (y = body(x) + shortcut(x))."""
from minicnn.nn.module import Module, module_from_config


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else str(name)


class Sequential(Module):
    """Layers applied in order; backward walks them in reverse.

    Children are named by index, so parameter names read '0.weight', '3.conv1.bias'. Indexing
    gives a layer (a slice gives a new Sequential sharing the layers); ``len`` and iteration work.
    Setting ``needs_input_grad = False`` passes it to the first layer; when a layer's backward
    returns None (it was told nobody needs dx), the layers before it must hold no parameters.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for layer in layers:
            self.append(layer)

    def append(self, layer):
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: every layer must be a Module, got {type(layer).__name__}")
        self._modules[str(len(self._modules))] = layer
        return self

    @property
    def layers(self):
        return list(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    @Module.needs_input_grad.setter
    def needs_input_grad(self, value):
        self._needs_input_grad = bool(value)
        if len(self):
            self.layers[0].needs_input_grad = value

    def forward(self, x):
        for layer in self._modules.values():
            x = layer.forward(x)
        return x

    def backward(self, dout):
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            dout = layers[i].backward(dout)
            if dout is None:
                needing = [str(j) for j in range(i) if layers[j].parameters()]
                if needing:
                    raise RuntimeError(f"Sequential.backward: layer {i} ({type(layers[i]).__name__}) "
                                       f"returned no input gradient (needs_input_grad=False) but layers "
                                       f"{needing} before it hold parameters that need one")
                return None
        return dout

    def _trace(self, x, name, rows, depth):
        at = len(rows)
        for i, layer in self._modules.items():
            x = layer._trace(x, _join(name, i), rows, depth + 1)
        if name:
            rows.insert(at, (name, type(self).__name__, tuple(x.shape), self.num_parameters(), depth))
        return x

    def config_args(self):
        return {"layers": [layer.config() for layer in self]}

    @classmethod
    def from_config(cls, args):
        return cls(*[module_from_config(c) for c in args["layers"]])


class Residual(Module):
    """y = body(x) + shortcut(x); shortcut None is the identity.

    A ResNet BasicBlock is ``Sequential(Residual(Sequential(conv, bn, relu, conv, bn),
    shortcut=Sequential(Conv2D(c_in, c_out, 1, stride=2), BatchNorm2D(c_out))), ReLU())``.
    Backward: dL/dx = body.backward(dout) + shortcut.backward(dout) (dout itself for the
    identity): the gradients from the two paths add.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        if not isinstance(body, Module):
            raise TypeError(f"Residual: body must be a Module, got {type(body).__name__}")
        if shortcut is not None and not isinstance(shortcut, Module):
            raise TypeError(f"Residual: shortcut must be a Module or None, got "
                            f"{type(shortcut).__name__}")
        self.body = body
        if shortcut is None:
            object.__setattr__(self, "shortcut", None)
        else:
            self.shortcut = shortcut

    @Module.needs_input_grad.setter
    def needs_input_grad(self, value):
        self._needs_input_grad = bool(value)
        self.body.needs_input_grad = value
        if self.shortcut is not None:
            self.shortcut.needs_input_grad = value

    def _add(self, main, skip):
        if tuple(main.shape) != tuple(skip.shape):
            raise ValueError(f"Residual: body output {tuple(main.shape)} and shortcut output "
                             f"{tuple(skip.shape)} differ; give a projection shortcut "
                             "(e.g. a 1x1 Conv2D with the body's stride)")
        return main + skip

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        return self._add(self.body.forward(x), skip)

    def backward(self, dout):
        d_body = self.body.backward(dout)
        d_skip = dout if self.shortcut is None else self.shortcut.backward(dout)
        if not self.needs_input_grad:
            return None
        if d_body is None or d_skip is None:
            raise RuntimeError("Residual.backward: a branch returned no input gradient although "
                               "this block's needs_input_grad is True")
        return d_body + d_skip

    def _trace(self, x, name, rows, depth):
        at = len(rows)
        main = self.body._trace(x, _join(name, "body"), rows, depth + 1)
        skip = x
        if self.shortcut is not None:
            skip = self.shortcut._trace(x, _join(name, "shortcut"), rows, depth + 1)
        out = self._add(main, skip)
        if name:
            rows.insert(at, (name, type(self).__name__, tuple(out.shape), self.num_parameters(), depth))
        return out

    def config_args(self):
        return {"body": self.body.config(),
                "shortcut": None if self.shortcut is None else self.shortcut.config()}

    @classmethod
    def from_config(cls, args):
        shortcut = args.get("shortcut")
        return cls(module_from_config(args["body"]),
                   None if shortcut is None else module_from_config(shortcut))
