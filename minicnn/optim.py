"""Optimizers (SGD, Adam, AdamW, RMSprop), learning-rate schedules and gradient clipping.

The update rules are those of ``torch.optim`` (single parameter group, ``maximize=False``), term
for term, so a run can be checked against PyTorch to rounding. With g the gradient, p the
parameter, t the step count of that parameter and wd the weight decay:

    SGD      g <- g + wd*p;  b <- g (first step) or mu*b + (1 - dampening)*g;
             d = g + mu*b (nesterov) or b (mu > 0) or g;                      p <- p - lr*d
    Adam     g <- g + wd*p;  m <- m + (1 - b1)(g - m);  v <- b2*v + (1 - b2)*g^2
             p <- p - lr/(1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    AdamW    p <- p*(1 - lr*wd), then Adam with wd = 0                       (decoupled decay)
    RMSprop  g <- g + wd*p;  v <- alpha*v + (1 - alpha)*g^2;  s = sqrt(v) + eps
             (centered: a <- a + (1 - alpha)(g - a);  s = sqrt(v - a^2) + eps)
             b <- mu*b + g/s; p <- p - lr*b  (mu > 0)   or   p <- p - lr*g/s

An optimizer reads ``model.parameters()`` / ``model.grads()`` at every ``step()`` and updates the
arrays in place; parameters named in ``model.frozen`` are skipped (their state is untouched).
State arrays are made with ``xp.zeros_like`` on the parameter's device. ``state_dict()`` holds
arrays and JSON-able scalars (save it with ``minicnn.io.save_checkpoint``); loading it resumes
bit for bit.
"""
import math

import numpy as np

from minicnn import kernels
from minicnn.backend import get_array_module, normalize_device, to_device
from minicnn.functional._checks import positive_int, real_number

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "LRScheduler", "StepLR",
           "CosineAnnealingLR", "LinearWarmup", "clip_grad_norm"]


def _non_negative(value, name, owner):
    return real_number(value, name, owner, 0.0, math.inf, high_open=True)


def _positive(value, name, owner):
    return real_number(value, name, owner, 0.0, math.inf, low_open=True, high_open=True)


def _in_unit_interval(value, name, owner, closed=False):
    return real_number(value, name, owner, 0.0, 1.0, high_open=not closed)


class Optimizer:
    """Base class: the step loop, frozen-parameter skipping, lr, zero_grad and state_dict.

    Subclasses list their hyperparameters in ``_hyper`` and define ``_update(p, g, state)``.
    """
    _hyper = ()

    def __init__(self, model, lr):
        if not (hasattr(model, "parameters") and hasattr(model, "grads")):
            raise TypeError(f"{type(self).__name__}: model must provide parameters() and grads(), "
                            f"got {type(model).__name__}")
        self.model = model
        self.lr = lr
        self.initial_lr = None      # set by the first LR schedule attached (as torch's 'initial_lr')
        self.state = {}             # parameter name -> {"step": int, state arrays...}

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _non_negative(value, "lr", type(self).__name__)

    def _trainable(self):
        params, grads = self.model.parameters(), self.model.grads()
        frozen = getattr(self.model, "frozen", ())
        for name, p in params.items():
            if name not in frozen:
                yield name, p, grads[name]

    def step(self):
        """One update of every trainable parameter, in place."""
        for name, p, g in self._trainable():
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"{type(self).__name__}.step: the gradient of {name} has shape "
                                 f"{tuple(g.shape)} and dtype {g.dtype}, the parameter "
                                 f"{tuple(p.shape)} and {p.dtype}")
            state = self.state.setdefault(name, {"step": 0})
            state["step"] += 1
            self._update(p, g, state)

    def _update(self, p, g, state):
        raise NotImplementedError

    def _set_hyper(self, **hyper):
        """Check and set the hyperparameters named in ``_hyper`` (constructor, load_state_dict)."""

    def zero_grad(self):
        """Set the model's gradients to zero (in place)."""
        if hasattr(self.model, "zero_grad"):
            self.model.zero_grad()
        else:
            for g in self.model.grads().values():
                g[...] = 0

    def hyperparams(self):
        return {"lr": self.lr, "initial_lr": self.initial_lr,
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in
                   ((k, getattr(self, k)) for k in self._hyper)}}

    def state_dict(self):
        """{"type", "hyperparams" (JSON-able), "state": {param name: {"step": int, name: array copy}}}."""
        state = {name: {k: (v.copy() if hasattr(v, "shape") else v) for k, v in s.items()}
                 for name, s in self.state.items()}
        return {"type": type(self).__name__, "hyperparams": self.hyperparams(), "state": state}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state; arrays go to each parameter's device and dtype."""
        kind = state_dict.get("type")
        if kind != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state is for {kind!r}")
        params = self.model.parameters()
        unknown = [name for name in state_dict["state"] if name not in params]
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state for parameters the model "
                             f"does not have: {unknown}")
        for name, s in state_dict["state"].items():
            for k, v in s.items():
                if hasattr(v, "shape") and tuple(v.shape) != tuple(params[name].shape):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: {name}.{k} has shape "
                                     f"{tuple(v.shape)} but the parameter has {tuple(params[name].shape)}")
        hyper = dict(state_dict["hyperparams"])
        self.lr = hyper.pop("lr")
        self.initial_lr = hyper.pop("initial_lr", None)
        self._set_hyper(**{k: hyper.get(k, getattr(self, k)) for k in self._hyper})
        self.state = {}
        for name, s in state_dict["state"].items():
            p = params[name]
            xp = get_array_module(p)
            self.state[name] = {k: (xp.array(to_device(v, "cpu" if xp is np else "gpu"), dtype=p.dtype)
                                    if hasattr(v, "shape") else int(v) if k == "step" else v)
                                for k, v in s.items()}

    def to(self, device):
        """Move the state arrays to ``"cpu"`` or ``"gpu"`` (after moving the model)."""
        device = normalize_device(device)
        for s in self.state.values():
            for k, v in s.items():
                if hasattr(v, "shape"):
                    s[k] = to_device(v, device)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.hyperparams().items() if k != "initial_lr")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, dampening and L2 decay."""
    _hyper = ("momentum", "weight_decay", "nesterov", "dampening")

    def __init__(self, model, lr, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
        super().__init__(model, lr)
        self._set_hyper(momentum, weight_decay, nesterov, dampening)

    def _set_hyper(self, momentum, weight_decay, nesterov, dampening):
        self.momentum = _non_negative(momentum, "momentum", "SGD")
        self.weight_decay = _non_negative(weight_decay, "weight_decay", "SGD")
        self.dampening = _in_unit_interval(dampening, "dampening", "SGD", closed=True)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")

    def _update(self, p, g, state):
        if _in_c(p, g):
            return self._update_in_c(p, g, state)
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g

    def _update_in_c(self, p, g, state):
        """The update above in one threaded pass over p, g and the buffer: the same float
        operations in the same order, so the same bits (csrc/elementwise_tmpl.h)."""
        buf, first = None, False
        if self.momentum != 0:
            first = "momentum_buffer" not in state
            if first:
                state["momentum_buffer"] = np.empty_like(p)
            buf = state["momentum_buffer"]
        kernels.sgd_step(p, g, buf, self.lr, self.momentum, self.dampening, self.weight_decay,
                         self.nesterov, first)


def _in_c(p, g):
    """True if the C extension can update p in place from g (CPU float arrays, one dtype)."""
    return (kernels.elementwise_in_c(p) and isinstance(g, np.ndarray) and p.dtype == g.dtype
            and p.shape == g.shape and p.dtype in (np.float32, np.float64)
            and p.flags.c_contiguous and p.flags.writeable and p.flags.aligned)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, optionally AMSGrad."""
    _hyper = ("betas", "eps", "weight_decay", "amsgrad")
    _decoupled = False

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(model, lr)
        self._set_hyper(betas, eps, weight_decay, amsgrad)

    def _set_hyper(self, betas, eps, weight_decay, amsgrad):
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_in_unit_interval(betas[0], "betas[0]", name),
                      _in_unit_interval(betas[1], "betas[1]", name))
        self.eps = _positive(eps, "eps", name)
        self.weight_decay = _non_negative(weight_decay, "weight_decay", name)
        self.amsgrad = bool(amsgrad)

    def _update(self, p, g, state):
        xp = get_array_module(p)
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self._decoupled:
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        if "exp_avg" not in state:
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
            if self.amsgrad:
                state["max_exp_avg_sq"] = xp.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * (g * g)
        if self.amsgrad:
            xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        t = state["step"]
        step_size = self.lr / (1 - beta1 ** t)
        denom = xp.sqrt(v) / math.sqrt(1 - beta2 ** t) + self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p <- p*(1 - lr*wd) before the step."""
    _decoupled = True

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(model, lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Hinton), optionally centered and with momentum, as in torch.optim.RMSprop."""
    _hyper = ("alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, model, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(model, lr)
        self._set_hyper(alpha, eps, weight_decay, momentum, centered)

    def _set_hyper(self, alpha, eps, weight_decay, momentum, centered):
        self.alpha = _in_unit_interval(alpha, "alpha", "RMSprop", closed=True)
        self.eps = _positive(eps, "eps", "RMSprop")
        self.weight_decay = _non_negative(weight_decay, "weight_decay", "RMSprop")
        self.momentum = _non_negative(momentum, "momentum", "RMSprop")
        self.centered = bool(centered)

    def _update(self, p, g, state):
        xp = get_array_module(p)
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        if "square_avg" not in state:
            state["square_avg"] = xp.zeros_like(p)
            if self.momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(p)
            if self.centered:
                state["grad_avg"] = xp.zeros_like(p)
        v = state["square_avg"]
        v *= self.alpha
        v += (1 - self.alpha) * (g * g)
        if self.centered:
            a = state["grad_avg"]
            a += (1 - self.alpha) * (g - a)
            avg = xp.sqrt(v - a * a) + self.eps
        else:
            avg = xp.sqrt(v) + self.eps
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += g / avg
            p -= self.lr * buf
        else:
            p -= self.lr * (g / avg)


# ---------------------------------------------------------------- learning-rate schedules

class LRScheduler:
    """Base class: sets ``optimizer.lr = lr_at(t)`` where t counts ``step()`` calls (0 at start).

    The base lr is the optimizer's lr when the first schedule is attached (kept as
    ``optimizer.initial_lr``, like torch's 'initial_lr'), so several schedules agree on it.
    Call ``step()`` once per epoch (or per iteration, as you define t), after ``optimizer.step()``.
    """
    _hyper = ()

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a minicnn.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if getattr(optimizer, "initial_lr", None) is None:
            optimizer.initial_lr = optimizer.lr
        self.base_lr = optimizer.initial_lr
        self.last_epoch = 0
        self._apply()

    def lr_at(self, t):
        raise NotImplementedError

    def _set_hyper(self, **hyper):
        """Check and set the hyperparameters named in ``_hyper`` (constructor, load_state_dict)."""

    def _apply(self):
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def step(self):
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return self.optimizer.lr

    def state_dict(self):
        return {"type": type(self).__name__, "last_epoch": self.last_epoch, "base_lr": self.base_lr,
                **{k: getattr(self, k) for k in self._hyper}}

    def load_state_dict(self, state_dict):
        if state_dict.get("type") != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state is for "
                             f"{state_dict.get('type')!r}")
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lr = float(state_dict["base_lr"])
        self._set_hyper(**{k: state_dict.get(k, getattr(self, k)) for k in self._hyper})
        self._apply()

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)}" for k in self._hyper)
        return f"{type(self).__name__}({args}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """lr_t = base_lr * gamma ** (t // step_size)."""
    _hyper = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        self._set_hyper(step_size, gamma)
        super().__init__(optimizer)

    def _set_hyper(self, step_size, gamma):
        self.step_size = positive_int(step_size, "step_size", "StepLR")
        self.gamma = _non_negative(gamma, "gamma", "StepLR")

    def lr_at(self, t):
        return self.base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2   (torch's closed form)."""
    _hyper = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self._set_hyper(T_max, eta_min)
        super().__init__(optimizer)

    def _set_hyper(self, T_max, eta_min):
        self.T_max = positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = _non_negative(eta_min, "eta_min", "CosineAnnealingLR")

    def lr_at(self, t):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearWarmup(LRScheduler):
    """Linear warm-up over ``warmup_steps`` steps, then the ``after`` schedule (or a constant base_lr).

        t <  W:  lr_t = base_lr * (s + (1 - s) * t / W),   s = start_factor (default 1/W)
        t >= W:  lr_t = after.lr_at(t - W)   (base_lr when ``after`` is None)

    The warm-up is torch's ``LinearLR(start_factor=s, end_factor=1, total_iters=W)``; with ``after``
    it is ``SequentialLR([LinearLR(...), after], milestones=[W])``. Build ``after`` on the same
    optimizer first, then this wrapper; step only the wrapper.
    """
    _hyper = ("warmup_steps", "start_factor")

    def __init__(self, optimizer, warmup_steps, after=None, start_factor=None):
        self._set_hyper(warmup_steps, start_factor)
        if after is not None and not isinstance(after, LRScheduler):
            raise TypeError(f"LinearWarmup: after must be a schedule, got {type(after).__name__}")
        if after is not None and after.optimizer is not optimizer:
            raise ValueError("LinearWarmup: the 'after' schedule must drive the same optimizer")
        self.after = after
        super().__init__(optimizer)

    def _set_hyper(self, warmup_steps, start_factor):
        self.warmup_steps = positive_int(warmup_steps, "warmup_steps", "LinearWarmup")
        self.start_factor = (1.0 / self.warmup_steps if start_factor is None else
                             _in_unit_interval(start_factor, "start_factor", "LinearWarmup",
                                               closed=True))

    def lr_at(self, t):
        w, s = self.warmup_steps, self.start_factor
        if t < w:
            return self.base_lr * (s + (1 - s) * t / w)
        return self.base_lr if self.after is None else self.after.lr_at(t - w)

    def step(self):
        self.last_epoch += 1
        if self.after is not None:
            self.after.last_epoch = max(self.last_epoch - self.warmup_steps, 0)
        self._apply()

    def state_dict(self):
        sd = super().state_dict()
        sd["after"] = None if self.after is None else self.after.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        if (state_dict.get("after") is None) != (self.after is None):
            raise ValueError("LinearWarmup.load_state_dict: the saved schedule and this one differ in "
                             "whether an 'after' schedule follows the warm-up")
        if self.after is not None:
            self.after.load_state_dict(state_dict["after"])
        super().load_state_dict(state_dict)


# ---------------------------------------------------------------- gradient clipping

def clip_grad_norm(model_or_grads, max_norm, norm_type=2.0):
    """Scale gradients in place so their global norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: total = ||(||g_1||, ||g_2||, ...)||, and every gradient
    is multiplied by min(1, max_norm / (total + 1e-6)). ``model_or_grads`` is a module (its
    trainable gradients: frozen ones are left alone), a dict of arrays, or a list of arrays.
    ``norm_type`` is 2.0 (any p > 0 works) or ``float('inf')``.
    """
    if hasattr(model_or_grads, "grads"):
        frozen = getattr(model_or_grads, "frozen", ())
        grads = [g for name, g in model_or_grads.grads().items() if name not in frozen]
    elif isinstance(model_or_grads, dict):
        grads = list(model_or_grads.values())
    else:
        grads = list(model_or_grads)
    max_norm = real_number(max_norm, "max_norm", "clip_grad_norm", 0.0, math.inf)
    norm_type = real_number(norm_type, "norm_type", "clip_grad_norm", 0.0, math.inf, low_open=True)
    if not grads:
        return 0.0
    xp = get_array_module(*grads)
    if norm_type == math.inf:
        total = max(float(xp.abs(g).max()) if g.size else 0.0 for g in grads)
    else:
        norms = [float(xp.linalg.norm(g.ravel(), ord=norm_type)) if g.size else 0.0 for g in grads]
        total = float(np.linalg.norm(np.asarray(norms), ord=norm_type))
    clip_coef = max_norm / (total + 1e-6)
    if clip_coef < 1.0:
        for g in grads:
            g *= clip_coef
    return total
