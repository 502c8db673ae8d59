"""minicnn.nn and minicnn.init: gradients, bookkeeping, modes, description, devices, configs, parity."""
import copy
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import init, nn
from minicnn.gradcheck import check_module, kink_free_input

F64 = np.float64
TOL = 1e-7


def _x(shape, seed=0):
    return kink_free_input(shape, seed=seed, scale=2.0)


class BasicBlock(nn.Module):
    """A user-defined module with named children (nested parameter names '3.conv1.weight')."""

    def __init__(self, channels, rng):
        super().__init__()
        # No bias before a batchnorm: the norm cancels it, so its gradient is exactly zero.
        self.conv1 = nn.Conv2D(channels, channels, 3, padding=1, bias=False, rng=rng, dtype=F64)
        self.bn1 = nn.BatchNorm2D(channels, dtype=F64)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn1(self.conv1(x)))

    def backward(self, dout):
        return self.conv1.backward(self.bn1.backward(self.relu.backward(dout)))


# ---------------------------------------------------------------- init

def test_fans_follow_pytorch_convention_for_conv_and_linear():
    assert init.compute_fans((8, 3, 5, 5)) == (75, 200)
    assert init.compute_fans((10, 784)) == (784, 10)
    with pytest.raises(ValueError, match="at least 2"):
        init.compute_fans((7,))


@pytest.mark.parametrize("name,std", [
    ("he_normal", math.sqrt(2 / 144)), ("he_uniform", math.sqrt(2 / 144)),
    ("xavier_normal", math.sqrt(2 / (144 + 288))), ("xavier_uniform", math.sqrt(2 / (144 + 288)))])
def test_initializers_have_the_variance_of_their_formula(name, std):
    w = getattr(init, name)((32, 16, 3, 3), np.random.default_rng(0), np.float64)
    assert w.dtype == np.float64 and w.shape == (32, 16, 3, 3)
    assert abs(w.std() / std - 1) < 0.05 and abs(w.mean()) < 0.05 * std
    if "uniform" in name:
        assert np.abs(w).max() <= math.sqrt(3) * std


def test_initializers_are_repeatable_from_a_seed_and_keep_dtype_across_precisions():
    a = init.he_normal((4, 3), np.random.default_rng(5), np.float32)
    b = init.he_normal((4, 3), 5, np.float64)                       # an int seed works too
    assert a.dtype == np.float32 and b.dtype == np.float64
    np.testing.assert_array_equal(a, b.astype(np.float32))
    assert init.zeros((2, 3), np.float64).sum() == 0
    with pytest.raises(ValueError, match="floating"):
        init.he_normal((4, 3), 0, np.int32)
    with pytest.raises(ValueError, match="unknown init"):
        init.get_initializer("bogus")


# ---------------------------------------------------------------- gradients (float64, numerical)

def _leaf_cases():
    r = np.random.default_rng
    return [
        ("conv_stride2_pad1_nonsquare",
         lambda: nn.Conv2D(3, 4, (3, 2), stride=2, padding=1, rng=r(0), dtype=F64), (2, 3, 7, 6)),
        ("conv_no_bias_stride_pair",
         lambda: nn.Conv2D(2, 3, 3, stride=(1, 2), bias=False, rng=r(1), dtype=F64), (2, 2, 5, 6)),
        ("linear", lambda: nn.Linear(6, 4, rng=r(2), dtype=F64), (3, 6)),
        ("linear_torch_init", lambda: nn.Linear(5, 3, init="torch", rng=r(3), dtype=F64), (4, 5)),
        ("maxpool_3_s2_p1", lambda: nn.MaxPool2D(3, stride=2, padding=1), (2, 2, 6, 5)),
        ("avgpool_2", lambda: nn.AvgPool2D(2), (2, 3, 4, 6)),
        ("avgpool_3_s2_p1", lambda: nn.AvgPool2D(3, 2, 1), (1, 2, 5, 5)),
        ("global_avgpool", lambda: nn.GlobalAvgPool2D(), (2, 3, 3, 4)),
        ("relu", lambda: nn.ReLU(), (2, 3, 4)),
        ("leaky_relu", lambda: nn.LeakyReLU(0.2), (2, 3, 4)),
        ("sigmoid", lambda: nn.Sigmoid(), (3, 5)),
        ("tanh", lambda: nn.Tanh(), (3, 5)),
        ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
        ("dropout_train", lambda: nn.Dropout(0.4, rng=7), (4, 6)),
        ("batchnorm2d", lambda: nn.BatchNorm2D(3, dtype=F64), (4, 3, 3, 2)),
        ("batchnorm1d", lambda: nn.BatchNorm1D(5, dtype=F64), (6, 5)),
    ]


def _composite_cases():
    r = np.random.default_rng
    return [
        ("sequential", lambda: nn.Sequential(
            nn.Conv2D(2, 3, 3, padding=1, bias=False, rng=r(0), dtype=F64), nn.BatchNorm2D(3, dtype=F64),
            nn.ReLU(),
            nn.MaxPool2D(2), nn.Flatten(), nn.Dropout(0.3, rng=1), nn.Linear(12, 4, rng=r(2), dtype=F64),
            nn.Tanh()), (3, 2, 4, 4)),
        ("residual_identity", lambda: nn.Residual(nn.Sequential(
            nn.Conv2D(2, 2, 3, padding=1, rng=r(3), dtype=F64), nn.Sigmoid())), (2, 2, 4, 3)),
        ("residual_projection", lambda: nn.Residual(
            nn.Sequential(nn.Conv2D(2, 3, 3, stride=2, padding=1, bias=False, rng=r(4), dtype=F64),
                          nn.BatchNorm2D(3, dtype=F64)),
            shortcut=nn.Sequential(nn.Conv2D(2, 3, 1, stride=2, bias=False, rng=r(5), dtype=F64),
                                   nn.BatchNorm2D(3, dtype=F64))),
         (3, 2, 4, 4)),
        ("custom_module_with_children", lambda: BasicBlock(2, r(6)), (2, 2, 3, 3)),
    ]


@pytest.mark.parametrize("name,make,shape", _leaf_cases() + _composite_cases(),
                         ids=[c[0] for c in _leaf_cases() + _composite_cases()])
def test_module_backward_matches_numerical_gradient(name, make, shape):
    module = make().train()
    errors = check_module(module, _x(shape), verbose=False)
    assert set(errors) == {"x"} | set(module.parameters())
    assert max(errors.values()) < TOL, errors


def test_batchnorm_eval_backward_matches_numerical_gradient():
    bn = nn.BatchNorm2D(3, dtype=F64)
    bn.running_mean[...] = [0.1, -0.2, 0.3]
    bn.running_var[...] = [0.5, 1.5, 2.0]
    bn.weight[...] = [1.0, 2.0, -0.5]
    errors = check_module(bn.eval(), _x((2, 3, 2, 2)), verbose=False)
    assert max(errors.values()) < TOL, errors


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), f=st.integers(1, 3), h=st.integers(3, 6),
       w=st.integers(3, 6), k=st.integers(1, 3), s=st.integers(1, 2), p=st.integers(0, 1))
def test_conv2d_module_gradients_over_shapes(n, c, f, h, w, k, s, p):
    conv = nn.Conv2D(c, f, k, stride=s, padding=p, rng=np.random.default_rng(0), dtype=F64)
    errors = check_module(conv, _x((n, c, h, w)), verbose=False)
    assert max(errors.values()) < TOL, errors


def test_residual_adds_gradients_from_body_and_identity_paths():
    lin = nn.Linear(3, 3, rng=0, dtype=F64)
    block = nn.Residual(lin)
    x = np.random.default_rng(1).standard_normal((2, 3))
    np.testing.assert_allclose(block(x), x @ lin.weight.T + lin.bias + x)
    dout = np.random.default_rng(2).standard_normal((2, 3))
    np.testing.assert_allclose(block.backward(dout), dout @ lin.weight + dout)


def test_residual_rejects_mismatched_branch_shapes():
    block = nn.Residual(nn.Conv2D(2, 3, 1, dtype=F64))
    with pytest.raises(ValueError, match="projection shortcut"):
        block(np.zeros((1, 2, 3, 3)))


# ---------------------------------------------------------------- parameters, grads, names

def test_parameters_are_live_arrays_and_grads_share_their_keys():
    model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1))
    params, grads = model.parameters(), model.grads()
    assert list(params) == ["0.weight", "0.bias", "2.weight", "2.bias"] == list(grads)
    assert all(grads[k].shape == params[k].shape and not grads[k].any() for k in params)
    params["2.weight"][...] = 0
    params["2.bias"][...] = [1.5, -2.0]
    out = model(np.ones((5, 4), np.float32))
    np.testing.assert_array_equal(out, np.tile(np.float32([1.5, -2.0]), (5, 1)))
    assert model[2].weight is params["2.weight"]                   # the same object, not a copy
    model.backward(np.ones_like(out))
    assert model.grads()["0.weight"] is grads["0.weight"]         # backward writes in place
    assert grads["2.bias"].tolist() == [5.0, 5.0]
    model.zero_grad()
    assert not any(g.any() for g in grads.values())


def test_backward_without_a_fresh_forward_raises():
    relu = nn.ReLU()
    with pytest.raises(RuntimeError, match="without a forward"):
        relu.backward(np.ones(3))
    relu(np.ones(3))
    relu.backward(np.ones(3))
    with pytest.raises(RuntimeError, match="without a forward"):
        relu.backward(np.ones(3))


def test_sequential_names_indexing_and_nested_prefixes():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2D(2, 2, 3, padding=1, rng=rng, dtype=F64), nn.ReLU(),
                          nn.Residual(nn.Sequential(nn.Linear(2, 2, rng=rng, dtype=F64))),
                          BasicBlock(2, rng))
    names = list(model.parameters())
    assert names == ["0.weight", "0.bias", "2.body.0.weight", "2.body.0.bias",
                     "3.conv1.weight", "3.bn1.weight", "3.bn1.bias"]
    assert list(model.buffers()) == ["3.bn1.running_mean", "3.bn1.running_var"]
    assert len(model) == 4 and isinstance(model[-1], BasicBlock) and isinstance(model[1], nn.ReLU)
    assert [type(m).__name__ for m in model] == ["Conv2D", "ReLU", "Residual", "BasicBlock"]
    head = model[2:]
    assert isinstance(head, nn.Sequential) and head[0] is model[2]
    assert model.num_parameters() == 2 * 2 * 9 + 2 + 4 + 2 + 2 * 2 * 9 + 2 + 2
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "relu")


def test_freeze_names_and_prefixes_and_unfreeze():
    model = nn.Sequential(nn.Linear(3, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1))
    model.freeze("0")
    assert model.frozen == {"0.weight", "0.bias"}
    assert model.num_parameters(trainable_only=True) == 8
    model.unfreeze("0.bias")
    assert model.frozen == {"0.weight"}
    model.freeze()
    assert model.frozen == set(model.parameters())
    model.unfreeze()
    assert model.frozen == set()
    with pytest.raises(ValueError, match="names no parameter"):
        model.freeze("5")


# ---------------------------------------------------------------- needs_input_grad

def test_conv_needs_input_grad_false_skips_dx_with_the_same_weight_gradient():
    x = _x((2, 2, 5, 5))
    dout = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    full = nn.Conv2D(2, 3, 3, padding=1, rng=0, dtype=F64)
    first = nn.Conv2D(2, 3, 3, padding=1, rng=0, dtype=F64)
    first.needs_input_grad = False
    full(x), first(x)
    assert full.backward(dout) is not None and first.backward(dout) is None
    for k in ("weight", "bias"):
        np.testing.assert_array_equal(full.grads()[k], first.grads()[k])


def test_sequential_passes_needs_input_grad_to_its_first_layer_and_copes_with_none():
    model = nn.Sequential(nn.Conv2D(1, 2, 3, rng=0, dtype=F64), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8, 2, rng=1, dtype=F64))
    x = _x((2, 1, 4, 4))
    out = model(x)
    model.backward(np.ones_like(out))
    with_dx = {k: g.copy() for k, g in model.grads().items()}
    model.needs_input_grad = False
    assert model[0].needs_input_grad is False and model[3].needs_input_grad is True
    out = model(x)
    assert model.backward(np.ones_like(out)) is None
    for name, g in model.grads().items():        # the same parameter gradients either way
        np.testing.assert_allclose(g, with_dx[name], rtol=1e-12, err_msg=name)

    bad = nn.Sequential(nn.Linear(4, 4, rng=0, dtype=F64), nn.Linear(4, 2, rng=1, dtype=F64))
    bad[1].needs_input_grad = False
    out = bad(_x((2, 4)))
    with pytest.raises(RuntimeError, match="hold parameters"):
        bad.backward(np.ones_like(out))


def test_residual_with_needs_input_grad_false_returns_none():
    block = nn.Residual(nn.Conv2D(2, 2, 3, padding=1, rng=0, dtype=F64),
                        nn.Conv2D(2, 2, 1, rng=1, dtype=F64))
    x = _x((1, 2, 3, 3))
    dout = np.random.default_rng(5).standard_normal(block(x).shape)
    block.backward(dout)
    with_dx = {k: g.copy() for k, g in block.grads().items()}
    block.needs_input_grad = False
    block(x)
    assert block.backward(dout) is None
    for name, g in block.grads().items():        # the same parameter gradients either way
        np.testing.assert_allclose(g, with_dx[name], rtol=1e-12, err_msg=name)


# ---------------------------------------------------------------- train / eval

def test_dropout_is_identity_in_eval_and_inverted_scaled_in_train():
    drop = nn.Dropout(0.25, rng=0)
    x = np.ones((200, 50), np.float32)
    out = drop(x)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(drop.backward(x), out)
    drop.eval()
    assert drop.training is False
    np.testing.assert_array_equal(drop(x), x)


def test_dropout_with_the_same_seed_draws_the_same_masks():
    x = np.ones((4, 10))
    a, b = nn.Dropout(0.5, rng=3), nn.Dropout(0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a(x), b(x))
    np.testing.assert_array_equal(a(x), b(x))


def test_batchnorm_train_updates_running_stats_and_eval_uses_them():
    bn = nn.BatchNorm2D(2, momentum=0.5, dtype=F64)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)) * 3 + 1
    bn(x)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, 0.5 * mean)
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * var)
    model = nn.Sequential(bn).eval()
    assert bn.training is False
    before = bn.running_mean.copy()
    out = model(x)
    np.testing.assert_array_equal(bn.running_mean, before)
    mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    expected = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(out, expected)
    model.train()
    assert bn.training is True


# ---------------------------------------------------------------- description

def test_repr_reads_like_pytorch():
    model = nn.Sequential(nn.Conv2D(1, 6, 5, padding=2, rng=0), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Residual(nn.BatchNorm2D(6)), nn.Flatten(), nn.Dropout(0.5, rng=0),
                          nn.Linear(1176, 10, bias=False, rng=0))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2D(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))\n"
        "  (1): ReLU()\n"
        "  (2): MaxPool2D(kernel_size=(2, 2), stride=(2, 2))\n"
        "  (3): Residual(\n"
        "    (body): BatchNorm2D(6, eps=1e-05, momentum=0.1)\n"
        "  )\n"
        "  (4): Flatten()\n"
        "  (5): Dropout(p=0.5)\n"
        "  (6): Linear(in_features=1176, out_features=10, bias=False)\n"
        ")")
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"


def test_summary_lists_output_shapes_and_parameter_counts_without_changing_state():
    model = nn.Sequential(nn.Conv2D(1, 4, 3, rng=0), nn.BatchNorm2D(4), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Residual(nn.Sequential(nn.Conv2D(4, 4, 3, padding=1, rng=1))),
                          nn.Flatten(), nn.Dropout(0.5, rng=0), nn.Linear(36, 10, rng=2))
    model.freeze("7")
    printed = []
    text = model.summary((1, 8, 8), print_fn=printed.append)
    assert printed == [text]
    lines = text.splitlines()
    row = {line.split()[0]: line for line in lines if line and line[0].isdigit() or line.startswith("  ")}
    assert "(1, 4, 6, 6)" in row["0"] and row["0"].rstrip().endswith("40")
    assert "(1, 4, 3, 3)" in row["3"]
    assert "(1, 36)" in row["5"] and row["7"].rstrip().endswith("370")
    assert any("4.body.0 (Conv2D)" in line for line in lines)
    assert "Total params: 566" in text and "Trainable params: 196" in text
    assert "Non-trainable params: 370" in text and "running statistics, not trained): 8" in text
    assert model.training and model[1].training
    assert not model[1].running_mean.any() and (model[1].running_var == 1).all()
    top = model.summary((1, 8, 8), print_fn=None, max_depth=1)
    assert "4 (Residual)" in top and "4.body" not in top


def test_deepcopy_gives_an_independent_model():
    model = nn.Sequential(nn.Linear(3, 2, rng=0), nn.BatchNorm1D(2))
    clone = copy.deepcopy(model)
    assert list(clone.parameters()) == list(model.parameters())
    clone[0].weight[...] = 0
    assert model[0].weight.any()


# ---------------------------------------------------------------- devices, configs

def test_to_cpu_round_trip_keeps_values_and_rejects_unknown_devices():
    model = nn.Sequential(nn.Conv2D(1, 2, 3, rng=0), nn.BatchNorm2D(2))
    before = {k: v.copy() for k, v in {**model.parameters(), **model.buffers()}.items()}
    assert model.to("cpu") is model and model.device == "cpu"
    for k, v in {**model.parameters(), **model.buffers()}.items():
        assert isinstance(v, np.ndarray)
        np.testing.assert_array_equal(v, before[k])
    assert all(isinstance(g, np.ndarray) for g in model.grads().values())
    with pytest.raises(ValueError, match="device"):
        model.to("tpu")


def test_config_round_trips_through_json_for_every_layer_type():
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2D(3, 4, (3, 2), stride=(2, 1), padding=1, bias=False, init="xavier", rng=rng, dtype=F64),
        nn.BatchNorm2D(4, eps=1e-3, momentum=0.2, dtype=F64), nn.LeakyReLU(0.1),
        nn.MaxPool2D(2), nn.AvgPool2D(3, 1, 1),
        nn.Residual(nn.Sequential(nn.Conv2D(4, 4, 1, rng=rng, dtype=F64), nn.Tanh()),
                    shortcut=nn.Conv2D(4, 4, 1, rng=rng, dtype=F64)),
        nn.Residual(nn.Sigmoid()), nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dropout(0.1, rng=rng),
        nn.Linear(4, 6, rng=rng, dtype=F64), nn.BatchNorm1D(6, dtype=F64), nn.ReLU(),
        nn.Linear(6, 2, init="torch", rng=rng, dtype=F64))
    config = json.loads(json.dumps(model.config()))
    clone = nn.module_from_config(config)
    assert clone.config() == model.config()
    assert repr(clone) == repr(model)
    clone.load_state_dict(model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 6))
    model.eval(), clone.eval()
    np.testing.assert_array_equal(clone(x), model(x))
    assert clone[0].weight.dtype == np.float64


def test_module_from_config_names_unknown_types_and_custom_modules_without_config():
    with pytest.raises(ValueError, match="unknown module type 'Bogus'"):
        nn.module_from_config({"type": "Bogus", "args": {}})
    with pytest.raises(NotImplementedError, match="config_args"):
        BasicBlock(2, np.random.default_rng(0)).config()


def test_load_state_dict_names_missing_unexpected_and_mismatched_shapes():
    model = nn.Sequential(nn.Linear(3, 2, rng=0), nn.BatchNorm1D(2))
    state = model.state_dict()
    state.pop("1.running_var")
    state["9.weight"] = np.zeros(2)
    state["0.weight"] = np.zeros((2, 4))
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    msg = str(err.value)
    assert "missing names: ['1.running_var']" in msg and "unexpected names: ['9.weight']" in msg
    assert "0.weight: model (2, 3) vs given (2, 4)" in msg


@pytest.mark.parametrize("name, bad, words", [
    ("1.bias", np.array(["a", "b"]), "not real numbers: ['1.bias: <U1']"),
    ("1.bias", np.array([1 + 2j, 0j]), "not real numbers"),
    ("1.weight", np.array([1e300, 1.0]), "too large for the parameter's dtype: ['1.weight (float32)']"),
])
def test_load_state_dict_writes_nothing_when_a_late_array_is_bad(name, bad, words):
    """The checks run over every array before the first is written: a bad array that comes last
    leaves the earlier layers as they were."""
    model = nn.Sequential(nn.Linear(3, 2, rng=0), nn.BatchNorm1D(2))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: v + 1 for k, v in model.state_dict().items()}
    state[name] = bad
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    assert words in str(err.value)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} was written")


@pytest.mark.parametrize("call, error, words", [
    (lambda m: m.summary((-1,)), ValueError, "input_shape must be positive ints"),
    (lambda m: m.summary(None), ValueError, "input_shape"),
    (lambda m: m.freeze(0), TypeError, "names are strings"),
    (lambda m: nn.module_from_config({"type": "Sequential", "args": {}}), ValueError,
     "'args' lacks 'layers'"),
    (lambda m: nn.module_from_config({"type": "Sequential", "args": None}), ValueError,
     "'args' must be a dict"),
    (lambda m: nn.Residual(None), TypeError, "body must be a Module"),
])
def test_module_helpers_name_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call(nn.Sequential(nn.Linear(3, 2, rng=0)))


def test_layers_validate_constructor_arguments():
    with pytest.raises(ValueError, match="in_channels"):
        nn.Conv2D(0, 3, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2D(1, 3, (3, 3, 3))
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="floating"):
        nn.Linear(2, 2, dtype=np.int64)
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(2, 2, rng="seed")


def test_float32_is_the_default_and_float64_is_kept_end_to_end():
    model32 = nn.Sequential(nn.Conv2D(1, 2, 3, rng=0), nn.Flatten(), nn.Linear(2, 2, rng=0))
    assert model32.dtype == np.float32
    model64 = nn.Sequential(nn.Conv2D(1, 2, 3, rng=0, dtype=F64), nn.Flatten(),
                            nn.Linear(2, 2, rng=0, dtype=F64))
    out = model64(np.ones((1, 1, 3, 3)))
    assert out.dtype == np.float64 and model64.backward(np.ones_like(out)).dtype == np.float64
    with pytest.raises(ValueError, match="dtype"):
        model32(np.ones((1, 1, 3, 3)))                              # float64 input, float32 weights


# ---------------------------------------------------------------- parity with PyTorch

def test_sequential_forward_and_backward_equal_pytorch_with_copied_weights():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = nn.Sequential(
        nn.Conv2D(3, 4, 3, padding=1, rng=rng, dtype=F64), nn.BatchNorm2D(4, dtype=F64), nn.ReLU(),
        nn.MaxPool2D(2), nn.Conv2D(4, 5, 3, stride=2, padding=1, rng=rng, dtype=F64), nn.Tanh(),
        nn.AvgPool2D(2), nn.Flatten(), nn.Linear(5, 6, rng=rng, dtype=F64), nn.LeakyReLU(0.1),
        nn.Linear(6, 3, rng=rng, dtype=F64))
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 5, 3, stride=2, padding=1), torch.nn.Tanh(),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(5, 6), torch.nn.LeakyReLU(0.1),
        torch.nn.Linear(6, 3)).double()
    ours[1].weight[...] = rng.uniform(0.5, 1.5, 4)
    ours[1].bias[...] = rng.standard_normal(4)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()},
                           strict=False)
    x = rng.standard_normal((4, 3, 8, 8))
    dout = rng.standard_normal((4, 3))

    out = ours(x)
    dx = ours.backward(dout)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = theirs(xt)
    out_t.backward(torch.from_numpy(dout))

    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    torch_params = dict(theirs.named_parameters())
    for name, grad in ours.grads().items():
        np.testing.assert_allclose(grad, torch_params[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    torch_buffers = dict(theirs.named_buffers())
    for name, buf in ours.buffers().items():
        np.testing.assert_allclose(buf, torch_buffers[name].numpy(), rtol=1e-12, err_msg=name)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_torch_init_matches_pytorch_default_bounds():
    lin = nn.Linear(400, 300, init="torch", rng=0, dtype=F64)
    bound = 1 / np.sqrt(400)                     # torch: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(lin.weight).max() <= bound and np.abs(lin.bias).max() <= bound
    assert np.abs(lin.weight).max() > 0.99 * bound          # fills the interval...
    assert lin.weight.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)   # ...uniformly
    assert lin.bias.std() == pytest.approx(bound / np.sqrt(3), rel=0.2)
