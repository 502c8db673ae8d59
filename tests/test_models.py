"""The model zoo: shapes, parameter counts, seeding, PyTorch parity (forward and backward) and
numerical gradient checks of whole models in float64."""
import numpy as np
import pytest

from minicnn import models
from minicnn.gradcheck import check_module, kink_free_input


def _input(name, batch=2, dtype=np.float32, seed=0):
    channels, size = models.DEFAULT_INPUT[name]
    return np.random.default_rng(seed).random((batch, channels, size, size)).astype(dtype)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_zoo_model_maps_its_input_to_one_logit_per_class(name):
    model = models.get_model(name, num_classes=7)
    out = model(_input(name))
    assert out.shape == (2, 7)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name, count", [("lenet5", 61_706), ("cifar_convnet", 2_168_362),
                                         ("resnet20", 272_474)])
def test_parameter_counts_match_the_published_architectures(name, count):
    assert models.count_parameters(models.get_model(name)) == count


def test_resnet20_has_about_0_27_million_parameters_and_20_weight_layers():
    model = models.resnet20()
    assert abs(models.count_parameters(model) - 0.27e6) < 0.01e6
    weights = [k for k, v in model.parameters().items() if k.endswith("weight") and v.ndim in (2, 4)
               and "shortcut" not in k]
    assert len(weights) == 20                    # 19 convolutions + the classifier


def test_lenet5_matches_benchmark_case_c2_shapes():
    # conv1 keeps 28x28 (padding 2), so conv2 sees case C2's 6 x 14 x 14 and fc1 reads 16*5*5.
    model = models.lenet5()
    assert model[0].padding == (2, 2)
    assert model[3].in_channels == 6 and model[3].out_channels == 16 and model[3].padding == (0, 0)
    assert model[7].in_features == 400
    x = _input("lenet5")
    h = model[:3](x)
    assert h.shape == (2, 6, 14, 14)


def test_the_same_seed_builds_the_same_model_and_another_seed_another():
    a, b, c = models.lenet5(seed=3), models.lenet5(seed=3), models.lenet5(seed=4)
    for k, v in a.parameters().items():
        assert np.array_equal(v, b.parameters()[k])
    assert not np.array_equal(a.parameters()["0.weight"], c.parameters()["0.weight"])


def test_models_honour_float64_and_other_input_shapes():
    model = models.lenet5(num_classes=3, in_channels=3, input_size=32, dtype=np.float64)
    out = model(np.zeros((1, 3, 32, 32)))
    assert out.shape == (1, 3) and out.dtype == np.float64
    assert models.fashion_net(input_size=32)(np.ones((2, 1, 32, 32), np.float32)).shape == (2, 10)
    assert models.digits_net(input_size=16)(np.zeros((1, 1, 16, 16), np.float32)).shape == (1, 10)


def test_get_model_rejects_unknown_names_and_too_small_inputs():
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        models.get_model("vgg16")
    with pytest.raises(ValueError, match="too small"):
        models.get_model("lenet5", input_size=8)
    assert models.get_model("digits-net").config() == models.digits_net().config()


def test_model_configs_round_trip_through_module_from_config():
    from minicnn.nn import module_from_config
    for name in models.MODELS:
        model = models.get_model(name)
        assert module_from_config(model.config()).config() == model.config()


# ---------------------------------------------------------------- PyTorch parity

def _torch_parity(model, x, rtol=1e-9, atol=1e-10):
    torch = pytest.importorskip("torch")
    torch_model = models.to_torch(model)
    out = model(x)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx = model.backward(dout)

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = torch_model(xt)
    out_t.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol, atol=atol)
    torch_grads = {k: p.grad.numpy() for k, p in torch_model.named_parameters()}
    assert set(torch_grads) == set(model.grads())
    for k, g in model.grads().items():
        np.testing.assert_allclose(g, torch_grads[k], rtol=rtol, atol=atol, err_msg=k)
    torch_buffers = dict(torch_model.named_buffers())
    for k, b in model.buffers().items():            # batchnorm running statistics
        np.testing.assert_allclose(b, torch_buffers[k].numpy(), rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("name", ["lenet5", "cifar_convnet", "digits_net"])
def test_forward_and_backward_equal_pytorch_with_copied_weights(name):
    model = models.get_model(name, seed=5, dtype=np.float64)
    _torch_parity(model, _input(name, batch=3, dtype=np.float64))


def test_fashion_net_with_batchnorm_equals_pytorch_in_training_mode():
    model = models.fashion_net(dropout=0.0, seed=2, dtype=np.float64)
    _torch_parity(model, _input("fashion_net", batch=4, dtype=np.float64))


def test_resnet_blocks_with_projection_shortcuts_equal_pytorch():
    model = models.resnet20(blocks_per_stage=1, seed=2, dtype=np.float64)
    _torch_parity(model, _input("resnet20", batch=2, dtype=np.float64, seed=3)[:, :, :16, :16])


# ---------------------------------------------------------------- numerical gradient checks

def test_digits_net_gradients_match_finite_differences():
    model = models.digits_net(dtype=np.float64, seed=1)
    errors = check_module(model, kink_free_input((2, 1, 8, 8), seed=1), max_elements=300,
                          directions=2, verbose=False)
    assert set(errors) == {"x", *model.parameters()}
    assert max(errors.values()) < 1e-6, errors


def test_tiny_resnet_gradients_match_finite_differences_in_train_mode():
    model = models.resnet20(num_classes=3, blocks_per_stage=1, dtype=np.float64, seed=1).train()
    errors = check_module(model, kink_free_input((2, 3, 8, 8), seed=2), max_elements=200,
                          directions=2, verbose=False)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("call, words", [
    (lambda: models.resnet20(input_size=-3), "input_size"),      # was accepted and ignored
    (lambda: models.resnet20(blocks_per_stage=0), "blocks_per_stage"),
    (lambda: models.lenet5(dtype=None), "float32 or float64"),   # was float64, silently
])
def test_model_arguments_that_were_ignored_are_checked(call, words):
    with pytest.raises(ValueError, match=words):
        call()
