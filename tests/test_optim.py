"""minicnn.optim: update rules and schedules equal torch.optim's; freezing, clipping, state round trips."""
import copy
import json
import math
import warnings

import numpy as np
import pytest

from minicnn import nn, optim

STEPS = 6


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(4, 3, rng=rng, dtype=np.float64), nn.Tanh(),
                         nn.Linear(3, 2, rng=rng, dtype=np.float64))


def _grad_sequence(model, steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(p.shape) for k, p in model.parameters().items()} for _ in range(steps)]


def _set_grads(model, grads):
    for k, g in model.grads().items():
        g[...] = grads[k]


OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=2e-2, betas=(0.85, 0.95), weight_decay=0.3, amsgrad=True)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, alpha=0.9, momentum=0.7, weight_decay=1e-2)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True, eps=1e-6)),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
def test_optimizer_steps_equal_torch_optim(name, kwargs):
    torch = pytest.importorskip("torch")
    model = _model()
    params_t = {k: torch.tensor(p.copy(), requires_grad=True) for k, p in model.parameters().items()}
    opt = getattr(optim, name)(model, **kwargs)
    opt_t = getattr(torch.optim, name)(list(params_t.values()), **kwargs)
    for grads in _grad_sequence(model):
        _set_grads(model, grads)
        for k, p in params_t.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
        opt_t.step()
        for k, p in model.parameters().items():
            np.testing.assert_allclose(p, params_t[k].detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=k)


def test_sgd_formula_by_hand():
    model = _model()
    w0 = model[0].weight.copy()
    opt = optim.SGD(model, lr=0.5, momentum=0.9)
    g = np.full_like(w0, 2.0)
    _set_grads(model, {k: np.full(p.shape, 2.0) for k, p in model.parameters().items()})
    opt.step()                              # b = g
    opt.step()                              # b = 0.9 g + g
    np.testing.assert_allclose(model[0].weight, w0 - 0.5 * g - 0.5 * 1.9 * g)


@pytest.mark.parametrize("make, error, words", [
    (lambda m: optim.SGD(m, lr=-1), ValueError, "lr"),
    (lambda m: optim.SGD(m, lr=float("inf")), ValueError, "lr must be in"),
    (lambda m: optim.SGD(m, lr=True), TypeError, "lr must be a real number"),
    (lambda m: optim.SGD(m, lr=0.1, nesterov=True), ValueError, "nesterov"),
    (lambda m: optim.SGD(m, lr=0.1, momentum=0.9, dampening=2), ValueError, "dampening"),
    (lambda m: optim.SGD(m, lr=0.1, weight_decay=float("nan")), ValueError, "weight_decay"),
    (lambda m: optim.Adam(m, betas=(1.0, 0.9)), ValueError, "betas"),
    (lambda m: optim.Adam(m, betas=0.9), ValueError, "betas must be a pair"),
    (lambda m: optim.Adam(m, betas=(0.9,)), ValueError, "betas must be a pair"),
    (lambda m: optim.Adam(m, eps=0), ValueError, "eps"),
    (lambda m: optim.RMSprop(m, alpha=1.5), ValueError, "alpha"),
    (lambda m: optim.Adam(object()), TypeError, "parameters"),
])
def test_optimizer_validates_hyperparameters(make, error, words):
    with pytest.raises(error, match=words):
        make(_model())


def test_load_state_dict_checks_the_hyperparameters_as_the_constructor_does():
    sd = optim.SGD(_model(), lr=0.1, momentum=0.9).state_dict()
    sd["hyperparams"]["momentum"] = -5
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(_model(), lr=0.1).load_state_dict(sd)


class _OneArray:
    """A model of one parameter whose gradient the test chooses."""
    def __init__(self, grad):
        self.weight, self.grad = np.zeros((4, 3)), grad

    def parameters(self):
        return {"weight": self.weight}

    def grads(self):
        return {"weight": self.grad}


@pytest.mark.parametrize("grad", [np.ones((4, 1)), np.ones((4, 3), np.float32)],
                         ids=["broadcasts", "float32"])
def test_step_refuses_a_gradient_of_another_shape_or_dtype(grad):
    model = _OneArray(grad)
    with pytest.raises(ValueError, match="the gradient of weight has shape"):
        optim.SGD(model, lr=0.1).step()
    np.testing.assert_array_equal(model.weight, 0)


@pytest.mark.parametrize("max_norm, norm_type, words", [
    (-1.0, 2.0, "max_norm"), (float("nan"), 2.0, "max_norm"), (1.0, 0.0, "norm_type")])
def test_clip_grad_norm_validates_its_arguments(max_norm, norm_type, words):
    with pytest.raises(ValueError, match=words):
        optim.clip_grad_norm([np.ones(3)], max_norm, norm_type)


def test_lr_is_settable_between_steps():
    model = _model()
    opt = optim.SGD(model, lr=0.1)
    opt.lr = 0.25
    w0 = model[2].bias.copy()
    _set_grads(model, {k: np.ones(p.shape) for k, p in model.parameters().items()})
    opt.step()
    np.testing.assert_allclose(model[2].bias, w0 - 0.25)
    with pytest.raises(ValueError):
        opt.lr = -0.1


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_frozen_parameters_are_skipped(name):
    model = _model()
    model.freeze("0")
    opt = getattr(optim, name)(model, lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    before = {k: p.copy() for k, p in model.parameters().items()}
    _set_grads(model, _grad_sequence(model, 1)[0])
    opt.step()
    after = model.parameters()
    for k in before:
        changed = not np.array_equal(before[k], after[k])
        assert changed == (not k.startswith("0.")), k
    assert set(opt.state) == {"2.weight", "2.bias"}
    model.unfreeze()                        # unfreezing later: the head keeps its own step count
    opt.step()
    assert opt.state["0.weight"]["step"] == 1 and opt.state["2.weight"]["step"] == 2


def test_zero_grad_clears_the_model_gradients():
    model = _model()
    _set_grads(model, _grad_sequence(model, 1)[0])
    optim.Adam(model).zero_grad()
    assert not any(g.any() for g in model.grads().values())


# ---------------------------------------------------------------- state_dict

@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                         ("Adam", dict(lr=1e-2, amsgrad=True)),
                                         ("AdamW", dict(lr=1e-2)),
                                         ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True))])
def test_state_dict_round_trip_continues_bit_for_bit(name, kwargs):
    grads = _grad_sequence(_model(), steps=6)
    model = _model()
    opt = getattr(optim, name)(model, **kwargs)
    sched = optim.CosineAnnealingLR(opt, T_max=5)
    for g in grads[:3]:
        _set_grads(model, g)
        opt.step()
        sched.step()
    saved_model, saved_opt, saved_sched = model.state_dict(), opt.state_dict(), sched.state_dict()
    json.dumps(saved_opt["hyperparams"])
    json.dumps(saved_sched)
    for s in saved_opt["state"].values():
        json.dumps({k: v for k, v in s.items() if not hasattr(v, "shape")})

    resumed = _model(seed=99)
    resumed.load_state_dict(saved_model)
    opt2 = getattr(optim, name)(resumed, lr=123.0)
    sched2 = optim.CosineAnnealingLR(opt2, T_max=5)
    opt2.load_state_dict(copy.deepcopy(saved_opt))
    sched2.load_state_dict(saved_sched)
    assert opt2.lr == opt.lr
    for g in grads[3:]:
        for m, o, s in ((model, opt, sched), (resumed, opt2, sched2)):
            _set_grads(m, g)
            o.step()
            s.step()
    for k, p in model.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], p, err_msg=k)


def test_state_dict_is_a_copy_and_load_checks_type_and_shapes():
    model = _model()
    opt = optim.Adam(model)
    _set_grads(model, _grad_sequence(model, 1)[0])
    opt.step()
    sd = opt.state_dict()
    sd["state"]["0.weight"]["exp_avg"][...] = 7
    assert not (opt.state["0.weight"]["exp_avg"] == 7).any()
    with pytest.raises(ValueError, match="for 'Adam'"):
        optim.SGD(model, lr=0.1).load_state_dict(sd)
    sd["state"]["0.weight"]["exp_avg"] = np.zeros((9, 9))
    with pytest.raises(ValueError, match=r"0.weight.exp_avg has shape \(9, 9\)"):
        optim.Adam(model).load_state_dict(sd)


# ---------------------------------------------------------------- schedules

def _torch_lrs(torch, make_sched, steps, lr=0.5):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_sched(torch, opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _our_lrs(make_sched, steps, lr=0.5):
    opt = optim.SGD(_model(), lr=lr)
    sched = make_sched(opt)
    lrs = [opt.lr]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.lr)
    assert sched.get_last_lr() == lrs[-1]
    return lrs


SCHEDULES = [
    ("step", lambda o: optim.StepLR(o, step_size=3, gamma=0.5),
     lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    ("cosine", lambda o: optim.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
     lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.01)),
    ("warmup", lambda o: optim.LinearWarmup(o, 4),
     lambda t, o: t.optim.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=4)),
    ("warmup_start", lambda o: optim.LinearWarmup(o, 5, start_factor=0.1),
     lambda t, o: t.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5)),
]


@pytest.mark.parametrize("name,ours,theirs", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedule_equals_torch(name, ours, theirs):
    torch = pytest.importorskip("torch")
    expected = _torch_lrs(torch, theirs, 13)
    np.testing.assert_allclose(_our_lrs(ours, 13), expected, rtol=1e-12, atol=1e-15)


def test_warmup_then_cosine_equals_torch_sequential_lr():
    torch = pytest.importorskip("torch")

    def theirs(t, o):
        warm = t.optim.lr_scheduler.LinearLR(o, start_factor=1 / 3, end_factor=1.0, total_iters=3)
        cos = t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6, eta_min=0.001)
        return t.optim.lr_scheduler.SequentialLR(o, [warm, cos], milestones=[3])

    def ours(o):
        return optim.LinearWarmup(o, 3, after=optim.CosineAnnealingLR(o, T_max=6, eta_min=0.001))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # torch may warn about SequentialLR internals
        expected = _torch_lrs(torch, theirs, 12)
    got = _our_lrs(ours, 12)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    base = 0.5
    assert got[0] == pytest.approx(base / 3) and got[3] == pytest.approx(base)
    assert got[9] == pytest.approx(0.001)


def test_step_lr_closed_form_and_schedule_state_round_trip():
    opt = optim.SGD(_model(), lr=1.0)
    sched = optim.LinearWarmup(opt, 2, after=optim.StepLR(opt, step_size=2, gamma=0.1))
    for _ in range(5):
        sched.step()
    assert opt.lr == pytest.approx(0.1 ** ((5 - 2) // 2))
    state = json.loads(json.dumps(sched.state_dict()))
    opt2 = optim.SGD(_model(), lr=1.0)
    sched2 = optim.LinearWarmup(opt2, 2, after=optim.StepLR(opt2, step_size=2, gamma=0.1))
    sched2.load_state_dict(state)
    assert opt2.lr == opt.lr
    for _ in range(4):
        sched.step()
        sched2.step()
        assert opt2.lr == opt.lr
    with pytest.raises(ValueError, match="'after'"):
        optim.LinearWarmup(optim.SGD(_model(), lr=1.0), 2).load_state_dict(state)


# ---------------------------------------------------------------- clipping

@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_equals_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    model = _model()
    grads = _grad_sequence(model, 1)[0]
    _set_grads(model, grads)
    params_t = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for p, g in zip(params_t, grads.values()):
        p.grad = torch.tensor(g)
    total = optim.clip_grad_norm(model, max_norm, norm_type=norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(params_t, max_norm, norm_type=norm_type)
    assert total == pytest.approx(float(total_t), rel=1e-12)
    for g, p in zip(model.grads().values(), params_t):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_returns_pre_clip_norm_and_accepts_dicts_and_lists():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert optim.clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(np.concatenate([g["a"], g["b"].ravel()])) == pytest.approx(1.0, rel=1e-5)
    arrays = [np.array([0.3, 0.4])]
    assert optim.clip_grad_norm(arrays, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(arrays[0], [0.3, 0.4])        # under the limit: untouched
    assert optim.clip_grad_norm([], 1.0) == 0.0


def test_clip_grad_norm_of_a_model_leaves_frozen_gradients_alone():
    model = _model()
    _set_grads(model, {k: np.full(p.shape, 10.0) for k, p in model.parameters().items()})
    model.freeze("2")
    total = optim.clip_grad_norm(model, 1.0)
    assert total == pytest.approx(10.0 * math.sqrt(12 + 3))
    assert (model.grads()["2.weight"] == 10.0).all()
    trainable = [model.grads()[k] for k in ("0.weight", "0.bias")]
    assert math.sqrt(sum((g ** 2).sum() for g in trainable)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("make, error, words", [
    (lambda opt: optim.StepLR(None, 1), TypeError, "optimizer must be"),
    (lambda opt: optim.LinearWarmup(opt, 2, after=5), TypeError, "after must be a schedule"),
    (lambda opt: optim.StepLR(opt, 0), ValueError, "step_size"),
    (lambda opt: optim.CosineAnnealingLR(opt, 5, eta_min=-1), ValueError, "eta_min"),
    (lambda opt: optim.LinearWarmup(opt, 2, start_factor=2), ValueError, "start_factor"),
])
def test_schedules_validate_their_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make(optim.SGD(_model(), lr=0.1))


def test_schedule_load_state_dict_checks_what_the_constructor_checks():
    state = optim.StepLR(optim.SGD(_model(), lr=0.1), 3).state_dict()
    state["step_size"] = 0                     # would divide by zero at the next step
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(optim.SGD(_model(), lr=0.1), 3).load_state_dict(state)
