"""The gradient checker itself: exact on known derivatives, and it catches wrong backwards.

The modules here are toys written for the test (the minicnn.nn API: forward, backward,
parameters, grads), so a failure points at gradcheck and nothing else.
"""
import numpy as np
import pytest

from minicnn.gradcheck import check_module, kink_free_input, numerical_gradient, rel_error


# ----------------------------------------------------------------------------- numerical_gradient

def test_numerical_gradient_of_elementwise_square_is_two_x():
    x = np.random.default_rng(0).standard_normal((3, 4))
    grad = numerical_gradient(lambda x: x ** 2, x)
    assert rel_error(grad, 2 * x) < 1e-9, f"d/dx sum(x^2) should be 2x; rel error {rel_error(grad, 2 * x):.2e}"


def test_numerical_gradient_of_a_scalar_function():
    x = np.random.default_rng(1).standard_normal(5)
    grad = numerical_gradient(lambda x: np.sum(x ** 3), x)
    assert rel_error(grad, 3 * x ** 2) < 1e-8, "d/dx sum(x^3) should be 3x^2"


def test_numerical_gradient_of_matmul_with_upstream_gradient():
    rng = np.random.default_rng(2)
    w, a, upstream = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    # L = sum((W @ A) * G):  dL/dW = G @ A.T,  dL/dA = W.T @ G
    grad_w = numerical_gradient(lambda w_: w_ @ a, w, upstream)
    grad_a = numerical_gradient(lambda a_: w @ a_, a, upstream)
    assert rel_error(grad_w, upstream @ a.T) < 1e-9, "matmul: dL/dW should be G @ A.T"
    assert rel_error(grad_a, w.T @ upstream) < 1e-9, "matmul: dL/dA should be W.T @ G"


def test_numerical_gradient_perturbs_in_place_so_closures_see_it():
    w = np.array([1.0, 2.0, 3.0])
    inp = np.array([4.0, 5.0, 6.0])
    # f ignores its argument and reads w through the closure, as a module reads its parameters.
    grad = numerical_gradient(lambda _: np.dot(w, inp), w)
    assert rel_error(grad, inp) < 1e-9, f"closure over the perturbed array should give {inp}, got {grad}"


def test_numerical_gradient_restores_x_exactly_even_when_f_raises():
    x = np.random.default_rng(3).standard_normal((2, 3))
    before = x.copy()
    numerical_gradient(lambda x: np.sin(x), x)
    assert np.array_equal(x, before), "x must be bitwise unchanged after numerical_gradient"

    calls = []

    def failing(x):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return x

    with pytest.raises(RuntimeError):
        numerical_gradient(failing, x)
    assert np.array_equal(x, before), "x must be restored when f raises mid-check"


def test_numerical_gradient_rejects_non_arrays():
    with pytest.raises(TypeError, match="numpy array"):
        numerical_gradient(lambda x: x, [1.0, 2.0])


# ----------------------------------------------------------------------------- rel_error

def test_rel_error_is_max_difference_over_max_magnitude():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0, "identical arrays: error 0"
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0, "two zero arrays: error 0, not nan"
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 4.2), "max|a-b| / max(|a|+|b|)"
    assert rel_error([1.0, -1.0], [-1.0, 1.0]) == pytest.approx(1.0), "opposite signs: error 1"


def test_rel_error_is_symmetric_and_scale_free():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(10), rng.standard_normal(10)
    assert rel_error(a, b) == pytest.approx(rel_error(b, a)), "rel_error must be symmetric"
    assert rel_error(1e6 * a, 1e6 * b) == pytest.approx(rel_error(a, b)), "rel_error must not depend on scale"


def test_rel_error_ignores_noise_on_entries_near_zero():
    # an elementwise ratio would give 1 here; against the array's scale the noise is tiny
    assert rel_error([1.0, 1e-14], [1.0, -1e-14]) < 1e-13


def test_rel_error_rejects_different_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(3), np.zeros(4))


def test_kink_free_input_is_distinct_nonzero_and_seeded():
    for shape in [(7,), (2, 3, 4), (1, 1, 5, 5)]:
        x = kink_free_input(shape, seed=5, scale=2.0)
        size = x.size
        gap = 2 * 2.0 / (size + size % 2)
        assert x.shape == shape and x.dtype == np.float64, f"wrong shape/dtype for {shape}"
        assert np.min(np.abs(x)) >= gap / 2 - 1e-15, f"{shape}: a value is within gap/2 of 0"
        assert np.min(np.diff(np.sort(x.ravel()))) >= gap - 1e-12, f"{shape}: two values closer than gap"
        assert np.max(np.abs(x)) < 2.0, f"{shape}: values must lie in (-scale, scale)"
        assert np.array_equal(x, kink_free_input(shape, seed=5, scale=2.0)), "same seed, same input"


# ----------------------------------------------------------------------------- check_module

class ToyLinear:
    """out = x @ W.T + b, with an optional deliberate error in its backward."""

    def __init__(self, n_in, n_out, seed=0, dtype=np.float64, wrong_dw=1.0, wrong_dx=1.0,
                 accumulate=False):
        rng = np.random.default_rng(seed)
        self.weight = rng.standard_normal((n_out, n_in)).astype(dtype)
        self.bias = rng.standard_normal(n_out).astype(dtype)
        self.grad = {"weight": np.zeros_like(self.weight), "bias": np.zeros_like(self.bias)}
        self.wrong_dw, self.wrong_dx, self.accumulate = wrong_dw, wrong_dx, accumulate

    def parameters(self):
        return {"weight": self.weight, "bias": self.bias}

    def grads(self):
        return self.grad

    def train(self):
        return self

    def eval(self):
        return self

    def forward(self, x):
        self.x = x
        return x @ self.weight.T + self.bias

    def backward(self, dout):
        dw = self.wrong_dw * dout.T @ self.x
        if self.accumulate:
            self.grad["weight"] += dw
            self.grad["bias"] += dout.sum(axis=0)
        else:
            self.grad["weight"][...] = dw
            self.grad["bias"][...] = dout.sum(axis=0)
        return self.wrong_dx * dout @ self.weight


class ToyDropoutScale:
    """out = (x * mask) * scale with a fresh mask from its own Generator at every forward, and
    a running mean of the input updated in train mode (a buffer, like batchnorm's)."""

    def __init__(self, n, p=0.5, seed=0):
        self.rng = np.random.default_rng(seed)
        self.scale = np.linspace(0.5, 1.5, n)
        self.grad = {"scale": np.zeros(n)}
        self.running_mean = np.zeros(n)
        self.p = p

    def parameters(self):
        return {"scale": self.scale}

    def grads(self):
        return self.grad

    def forward(self, x):
        self.mask = (self.rng.random(x.shape) >= self.p) / (1 - self.p)
        self.x = x
        self.running_mean[...] = 0.9 * self.running_mean + 0.1 * x.mean(axis=0)
        return x * self.mask * self.scale

    def backward(self, dout):
        self.grad["scale"][...] = (dout * self.x * self.mask).sum(axis=0)
        return dout * self.mask * self.scale


def test_check_module_passes_a_correct_module():
    errors = check_module(ToyLinear(4, 3), np.random.default_rng(0).standard_normal((5, 4)), verbose=False)
    assert set(errors) == {"x", "weight", "bias"}, f"expected errors for x, weight, bias; got {set(errors)}"
    assert max(errors.values()) < 1e-8, f"a correct backward must pass: {errors}"


@pytest.mark.parametrize("factor", [1.01, 2.0, 0.0, -1.0])
def test_check_module_flags_a_weight_gradient_off_by_a_factor(factor):
    module = ToyLinear(4, 3, wrong_dw=factor)
    errors = check_module(module, np.random.default_rng(0).standard_normal((5, 4)), verbose=False)
    assert errors["weight"] > 1e-3, f"dW scaled by {factor} must be flagged, got {errors}"
    assert errors["x"] < 1e-8 and errors["bias"] < 1e-8, f"only weight is wrong, yet {errors}"


def test_check_module_flags_a_wrong_input_gradient():
    errors = check_module(ToyLinear(4, 3, wrong_dx=1.5), np.ones((2, 4)), verbose=False)
    assert errors["x"] > 1e-2, f"dx scaled by 1.5 must be flagged, got {errors}"


def test_check_module_uses_directional_derivatives_for_large_tensors(capsys):
    x = np.random.default_rng(1).standard_normal((3, 40))
    good = check_module(ToyLinear(40, 30), x, max_elements=100)
    printed = capsys.readouterr().out
    assert "directions" in printed, f"weight (1200 elements) should use the directional check:\n{printed}"
    assert max(good.values()) < 1e-8, f"a correct module must pass the directional check: {good}"
    bad = check_module(ToyLinear(40, 30, wrong_dw=1.01), x, max_elements=100, verbose=False)
    assert bad["weight"] > 1e-3, f"a 1% error must be flagged by the directional check: {bad}"


def test_check_module_zeroes_accumulated_gradients_first():
    module = ToyLinear(4, 3, accumulate=True)
    module.grad["weight"] += 100.0          # stale gradients from an earlier step
    errors = check_module(module, np.ones((2, 4)), verbose=False)
    assert max(errors.values()) < 1e-8, f"stale accumulated grads must not leak into the check: {errors}"


def test_check_module_restores_parameters_and_leaves_the_analytic_gradient():
    module = ToyLinear(4, 3)
    weight_before = module.weight.copy()
    weight_object = module.weight
    check_module(module, np.ones((2, 4)), verbose=False, max_elements=5)
    assert module.weight is weight_object, "the live parameter array must stay the same object"
    assert np.array_equal(module.weight, weight_before), "parameters must be bitwise restored"
    assert np.any(module.grad["weight"] != 0), "grads() should hold the check's analytic gradient"


def test_check_module_fixes_the_dropout_mask_and_restores_generators_and_buffers():
    module = ToyDropoutScale(6, seed=3)
    state_before = module.rng.bit_generator.state
    running_before = module.running_mean.copy()
    errors = check_module(module, np.random.default_rng(0).standard_normal((4, 6)), verbose=False)
    assert max(errors.values()) < 1e-8, (
        f"with the Generator rewound before each forward, the mask is fixed and the check passes: {errors}")
    assert module.rng.bit_generator.state == state_before, "the module's Generator must be rewound"
    assert np.array_equal(module.running_mean, running_before), "buffers must be restored"


def test_check_module_needs_float64_parameters():
    with pytest.raises(ValueError, match="float64"):
        check_module(ToyLinear(4, 3, dtype=np.float32), np.ones((2, 4)), verbose=False)


def test_check_module_prints_a_table_naming_every_tensor(capsys):
    check_module(ToyLinear(4, 3), np.ones((2, 4)))
    printed = capsys.readouterr().out
    for name in ("x", "weight", "bias", "rel error"):
        assert name in printed, f"the table should mention {name!r}:\n{printed}"


def test_check_module_on_a_small_minicnn_nn_network_in_train_mode():
    """A real network through check_module: conv, batchnorm, relu, max-pool, dropout, linear.

    In train mode dropout draws a mask from its Generator; check_module rewinds it before every
    forward (a fixed mask) and restores batchnorm's running statistics afterwards.  The conv has
    no bias: before a training-mode batchnorm a bias has exactly zero gradient, and a relative
    error between two roundoff-sized numbers means nothing.
    """
    try:
        import minicnn.nn as nn
        f64 = np.float64
        model = nn.Sequential(
            nn.Conv2D(2, 3, (3, 2), stride=(1, 2), padding=1, bias=False,
                      rng=np.random.default_rng(0), dtype=f64),
            nn.BatchNorm2D(3, dtype=f64), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
            nn.Dropout(0.3, rng=np.random.default_rng(1)),
            nn.Linear(12, 4, rng=np.random.default_rng(2), dtype=f64))
    except (ImportError, AttributeError, TypeError) as exc:   # minicnn.nn not there yet
        pytest.skip(f"minicnn.nn not usable yet: {exc}")
    model.train()
    buffers_before = {k: v.copy() for k, v in model.buffers().items()}
    x = kink_free_input((2, 2, 5, 6), seed=7)
    errors = check_module(model, x, verbose=False)
    assert set(errors) == {"x"} | set(model.parameters()), f"one error per tensor expected, got {set(errors)}"
    assert max(errors.values()) < 1e-6, f"minicnn.nn gradients disagree with finite differences: {errors}"
    for name, before in buffers_before.items():
        assert np.array_equal(model.buffers()[name], before), f"buffer {name} not restored by check_module"


@pytest.mark.parametrize("x", [np.ones(3, np.int64), np.full(3, 1000.0, np.float32)],
                         ids=["int64", "float32"])
def test_numerical_gradient_refuses_an_x_that_would_lose_the_step(x):
    """x + h is rounded back to x (1000 + 1e-5 in float32 is 1000): the 'gradient' would be
    zeros, not an error."""
    with pytest.raises(TypeError, match="x must be float64"):
        numerical_gradient(lambda z: z * z, x)


@pytest.mark.parametrize("call, words", [
    (lambda: numerical_gradient(lambda z: z * z, np.ones(3), df=np.ones((3, 1))),
     r"df has shape \(3, 1\) but f\(x\) has shape \(3,\)"),
    (lambda: numerical_gradient(lambda z: z[z > 1.0], np.array([1.0, 2.0, 0.5])), "changed shape"),
    (lambda: numerical_gradient(lambda z: z, np.ones(3), h=0.0), "h must be"),
    (lambda: check_module(_Square(), np.ones(3), max_elements=0, directions=0), "max_elements"),
])
def test_gradient_checks_refuse_arguments_that_would_check_nothing_or_the_wrong_thing(call, words):
    with pytest.raises(ValueError, match=words):
        call()


class _Square:
    """A parameter-free module: out = x * x."""
    def parameters(self):
        return {}

    def grads(self):
        return {}

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dout):
        return 2 * self.x * dout


def test_kink_free_input_refuses_an_empty_shape_or_a_zero_scale():
    with pytest.raises(ValueError, match="non-empty shape"):
        kink_free_input((0,))
    with pytest.raises(ValueError, match="scale > 0"):
        kink_free_input((3,), scale=0.0)
