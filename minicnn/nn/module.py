"""The ``Module`` base class: parameters, gradients, buffers, children and their bookkeeping.

A module holds state only; its ``forward`` and ``backward`` call the formulas in
``minicnn.functional``. The rules every module keeps:

- ``forward(x)`` stores what ``backward`` needs (the functional cache) and returns the output;
  ``module(x)`` is ``module.forward(x)``.
- ``backward(dout)`` returns dL/dx and WRITES (does not accumulate) dL/dparam into the module's
  gradient arrays, in place, so the arrays returned by ``grads()`` stay valid. The cache is freed
  afterwards: each backward needs a fresh forward. A module used twice in one forward (weight
  sharing) is not supported.
- ``parameters()``, ``grads()`` and ``buffers()`` return dicts of the LIVE arrays, named with
  dotted prefixes ('0.weight', '3.conv1.bias'); ``parameters()`` and ``grads()`` share their keys.
- ``needs_input_grad = False`` tells a module that nobody needs dL/dx (the first layer of a
  network); its backward may then skip that work and return None.
- ``config()`` describes the architecture as JSON-able data; ``module_from_config`` rebuilds it.
"""
import numpy as np

from minicnn.backend import get_array_module, normalize_device, to_device

_REGISTRY = {}


def module_from_config(config):
    """Build a module from ``Module.config()`` output: ``{"type": name, "args": {...}}``."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"module config must be a dict with a 'type' key, got {config!r}")
    name = config["type"]
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown module type {name!r} in config; known types: {sorted(_REGISTRY)}")
    args = config.get("args", {})
    if not isinstance(args, dict):
        raise ValueError(f"module config of {name}: 'args' must be a dict, got {args!r}")
    try:
        return cls.from_config(dict(args))
    except KeyError as exc:
        raise ValueError(f"module config of {name}: 'args' lacks {exc}") from None


def _dtype_of(value):
    """The dtype of an array (NumPy or CuPy) or of what np.asarray makes of a list or scalar."""
    dtype = getattr(value, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(value).dtype


class Module:
    """Base class of every layer and container (see the module docstring for the contract)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # module_from_config finds every public subclass by its name; a user's class never
        # shadows one of minicnn's own layers of the same name.
        known = _REGISTRY.get(cls.__name__)
        if cls.__name__.startswith("_") or (known is not None and known.__module__.startswith("minicnn.nn")):
            return
        _REGISTRY[cls.__name__] = cls

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_grads", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_frozen", set())     # local names of frozen parameters
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_needs_input_grad", True)
        object.__setattr__(self, "_cache", None)

    # ------------------------------------------------------------ registration

    def register_parameter(self, name, array):
        """Add a trainable array under ``name``, with a zero gradient of the same shape."""
        xp = get_array_module(array)
        self.__dict__.pop(name, None)          # e.g. a 'bias = None' placeholder
        self._parameters[name] = array
        self._grads[name] = xp.zeros_like(array)

    def register_buffer(self, name, array):
        """Add a non-trainable state array (e.g. batchnorm running statistics)."""
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        if isinstance(value, Module):
            self.__dict__.pop(name, None)
            self._modules[name] = value
        elif name in self._modules and value is None:       # removing a child
            del self._modules[name]
            object.__setattr__(self, name, None)
        elif name in self._parameters:
            # Replacing a parameter array: keep the gradient's shape in step with it.
            self._parameters[name] = value
            if self._grads[name].shape != value.shape:
                self._grads[name] = get_array_module(value).zeros_like(value)
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only reached when normal lookup fails: parameters, buffers and children live in dicts.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------ forward / backward

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward is not defined")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward is not defined")

    def __call__(self, x):
        return self.forward(x)

    def _take_cache(self):
        """The cache of the last forward, freed so the next backward needs a new forward."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward before it "
                               "(each backward consumes the cache of one forward)")
        self._cache = None
        return cache

    def _store_grad(self, name, value):
        """Write a fresh gradient into the live gradient array."""
        self._grads[name][...] = value

    @property
    def needs_input_grad(self):
        return self._needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value):
        self._needs_input_grad = bool(value)

    # ------------------------------------------------------------ traversal

    def children(self):
        """(name, module) pairs of the direct children, in registration order."""
        return list(self._modules.items())

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ('' for itself) and all its descendants."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def _collect(self, store, prefix=""):
        out = {}
        for name, module in self.named_modules(prefix):
            for key, value in getattr(module, store).items():
                out[f"{name}.{key}" if name else key] = value
        return out

    def parameters(self):
        """{dotted name: live parameter array}."""
        return self._collect("_parameters")

    def grads(self):
        """{dotted name: live gradient array}, the same keys as ``parameters()``."""
        return self._collect("_grads")

    def buffers(self):
        """{dotted name: live buffer array} (batchnorm 'running_mean', 'running_var')."""
        return self._collect("_buffers")

    def state_dict(self):
        """Copies of all parameters and buffers by name (what a weights file holds)."""
        return {name: a.copy() for name, a in {**self.parameters(), **self.buffers()}.items()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays by name into the live parameters and buffers (cast to their dtype).

        Raises ValueError naming the missing and unexpected names (when ``strict``), every shape
        that differs, arrays that are not real numbers (complex, bool, strings, objects) and
        values too large for the parameter's dtype; nothing is written unless every check passes.
        """
        targets = {**self.parameters(), **self.buffers()}
        given = [k for k in targets if k in state]
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        mismatched = [f"{k}: model {tuple(targets[k].shape)} vs given {tuple(np.shape(state[k]))}"
                      for k in given if tuple(targets[k].shape) != tuple(np.shape(state[k]))]
        not_real = [f"{k}: {_dtype_of(state[k])}" for k in given
                    if _dtype_of(state[k]).kind not in "fiu"]
        problems = []
        if strict and missing:
            problems.append(f"missing names: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected names: {unexpected}")
        if mismatched:
            problems.append(f"shape mismatch: {mismatched}")
        if not_real:
            problems.append(f"not real numbers: {not_real}")
        if not problems:
            cast, too_large = self._cast_state(targets, state, given)
            if too_large:
                problems.append(f"values too large for the parameter's dtype: {too_large}")
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        for name in given:
            targets[name][...] = cast[name]

    @staticmethod
    def _cast_state(targets, state, names):
        """({name: state[name] on the target's device, in its dtype}, [names whose values
        overflowed that dtype]); nothing is written yet."""
        cast, too_large = {}, []
        for name in names:
            target = targets[name]
            xp = get_array_module(target)
            value = to_device(state[name], "gpu" if xp is not np else "cpu")
            try:
                with np.errstate(over="raise"):
                    cast[name] = xp.asarray(value, dtype=target.dtype)
            except FloatingPointError:
                too_large.append(f"{name} ({target.dtype})")
        return cast, too_large

    def num_parameters(self, trainable_only=False):
        """Number of scalar parameters (``trainable_only`` leaves frozen ones out)."""
        frozen = self.frozen if trainable_only else ()
        return sum(int(a.size) for name, a in self.parameters().items() if name not in frozen)

    @property
    def dtype(self):
        """dtype of the first parameter or buffer (float32 for a module holding none)."""
        for a in list(self.parameters().values()) + list(self.buffers().values()):
            return a.dtype
        return np.dtype(np.float32)

    # ------------------------------------------------------------ modes, gradients, devices

    def train(self, mode=True):
        """Training mode (dropout drops, batchnorm uses batch statistics), recursively."""
        for _, module in self.named_modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (dropout is the identity, batchnorm uses running statistics)."""
        return self.train(False)

    def zero_grad(self):
        """Set every gradient to zero, in place."""
        for g in self.grads().values():
            g[...] = 0

    def to(self, device):
        """Move parameters, gradients and buffers to ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy).

        Returns self. Arrays are replaced (a model on one device holds no copy on the other), so
        call ``parameters()`` again afterwards; optimizer state moves with ``optimizer.to``.
        """
        device = normalize_device(device)
        for _, module in self.named_modules():
            for store in (module._parameters, module._grads, module._buffers):
                for key in store:
                    store[key] = to_device(store[key], device)
            module._cache = None
        return self

    @property
    def device(self):
        for a in self.parameters().values():
            return "cpu" if get_array_module(a) is np else "gpu"
        return "cpu"

    # ------------------------------------------------------------ freezing

    def _resolve(self, dotted):
        """(owning module, local name) of a dotted parameter name."""
        *path, local = dotted.split(".")
        module = self
        for part in path:
            module = module._modules[part]
        return module, local

    def _matching(self, names):
        params = self.parameters()
        if not names:
            return list(params)
        chosen = []
        for pattern in names:
            if not isinstance(pattern, str):
                raise TypeError(f"freeze/unfreeze: names are strings such as '0.weight' or '0', "
                                f"got {pattern!r}")
            hits = [k for k in params if k == pattern or k.startswith(pattern + ".")]
            if not hits:
                raise ValueError(f"freeze/unfreeze: {pattern!r} names no parameter or module; "
                                 f"parameters: {list(params)}")
            chosen += hits
        return chosen

    def freeze(self, *names):
        """Exclude parameters from optimisation: the optimizers skip them.

        ``names`` are parameter names ('0.weight') or module prefixes ('0', '3.conv1');
        no names freezes everything. Gradients are still computed. Returns self.
        """
        for dotted in self._matching(names):
            module, local = self._resolve(dotted)
            module._frozen.add(local)
        return self

    def unfreeze(self, *names):
        """Undo ``freeze`` for the given names/prefixes (all parameters when none given)."""
        for dotted in self._matching(names):
            module, local = self._resolve(dotted)
            module._frozen.discard(local)
        return self

    @property
    def frozen(self):
        """Dotted names of the frozen parameters."""
        out = set()
        for name, module in self.named_modules():
            out.update(f"{name}.{k}" if name else k for k in module._frozen)
        return out

    def generators(self):
        """{dotted name: numpy Generator} of modules that draw random numbers (Dropout).

        Save ``g.bit_generator.state`` (a JSON-able dict) in a checkpoint to resume exactly.
        """
        return {(f"{name}.rng" if name else "rng"): m.rng for name, m in self.named_modules()
                if isinstance(getattr(m, "rng", None), np.random.Generator)}

    # ------------------------------------------------------------ description

    def extra_repr(self):
        """The constructor arguments shown inside ``Name(...)``; layers override it."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines += extra.split("\n")
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

    def config_args(self):
        """The constructor arguments as JSON-able values; layers override it."""
        if type(self).__init__ is Module.__init__:
            return {}
        raise NotImplementedError(f"{type(self).__name__} does not define config_args(), so it "
                                  "cannot be described as a config")

    def config(self):
        """A JSON-able description of the architecture: ``{"type": ..., "args": {...}}``."""
        return {"type": type(self).__name__, "args": self.config_args()}

    @classmethod
    def from_config(cls, args):
        return cls(**args)

    def _trace(self, x, name, rows, depth):
        """Forward ``x`` recording (name, type, output shape, parameter count, depth) rows.

        A leaf adds one row; containers override this to list their children (a top-level
        container, ``name == ""``, adds no row of its own)."""
        out = self.forward(x)
        rows.append((name, type(self).__name__, tuple(out.shape), self.num_parameters(), depth))
        return out

    def summary(self, input_shape, print_fn=print, max_depth=None):
        """Print and return a Keras-style table of each layer's output shape and parameter count.

        ``input_shape`` excludes the batch axis (e.g. ``(1, 28, 28)``); the model runs one forward
        pass on zeros of batch 1, in eval mode (no running statistic changes), then returns to
        its previous mode. Nested containers are listed indented; ``max_depth=1`` shows only the
        top-level layers. Frozen parameters count as non-trainable; buffers (batchnorm running
        statistics) are not parameters and are counted on a line of their own.
        """
        shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else input_shape
        if not (isinstance(shape, (tuple, list)) and shape and all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise ValueError(f"summary: input_shape must be positive ints without the batch axis, "
                             f"e.g. (1, 28, 28); got {input_shape!r}")
        input_shape = tuple(int(s) for s in shape)
        params = list(self.parameters().values())
        xp = get_array_module(*params) if params else np
        x = xp.zeros((1,) + input_shape, dtype=self.dtype)
        was_training = {m: m.training for _, m in self.named_modules()}
        rows = []
        self.eval()
        try:
            self._trace(x, "", rows, 0)
        finally:
            for m, mode in was_training.items():
                object.__setattr__(m, "training", mode)
                m._cache = None
        if max_depth is not None:
            rows = [r for r in rows if r[4] <= max_depth]
        shown = [("  " * max(depth - 1, 0) + (f"{name} ({kind})" if name else kind), str(shape), f"{count:,}")
                 for name, kind, shape, count, depth in rows]
        w0 = max([len("Layer (type)")] + [len(s[0]) for s in shown]) + 2
        w1 = max([len("Output shape")] + [len(s[1]) for s in shown]) + 2
        w2 = max([len("Param #")] + [len(s[2]) for s in shown])
        width = w0 + w1 + w2
        total = self.num_parameters()
        trainable = self.num_parameters(trainable_only=True)
        lines = [f"{type(self).__name__} summary (input shape {(1,) + input_shape}, dtype {self.dtype})",
                 "=" * width,
                 f"{'Layer (type)':<{w0}}{'Output shape':<{w1}}{'Param #':>{w2}}",
                 "=" * width]
        lines += [f"{a:<{w0}}{b:<{w1}}{c:>{w2}}" for a, b, c in shown]
        lines += ["=" * width,
                  f"Total params: {total:,}",
                  f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}"]
        num_buffers = sum(int(b.size) for b in self.buffers().values())
        if num_buffers:
            lines.append(f"Buffer values (running statistics, not trained): {num_buffers:,}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text
