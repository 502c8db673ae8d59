"""Bad input is refused at the functional boundary with a ValueError that names the op, the
argument and the shapes (or values) involved, so the user can fix the call without a debugger.
"""
import re

import numpy as np
import pytest

import minicnn.functional as F


def arr(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


def shapes(*arrays):
    """Regex fragments matching each array's shape as Python prints it, e.g. '\\(2, 3, 8, 8\\)'."""
    return [re.escape(str(tuple(a.shape))) for a in arrays]


def raises_naming(call, *fragments):
    """call() raises ValueError whose message contains every regex fragment."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    missing = [f for f in fragments if not re.search(f, message)]
    assert not missing, f"error message {message!r} should mention {missing}"
    return message


# ----------------------------------------------------------------------------- conv2d

def test_conv_wrong_ndim_names_x_and_its_shape():
    x, w = arr(3, 8, 8), arr(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"conv2d: x must be 4-D.*\(3, 8, 8\)"):
        F.conv2d_forward(x, w, arr(4))


def test_conv_wrong_weight_ndim_names_w():
    with pytest.raises(ValueError, match=r"conv2d: w must be 4-D.*\(4, 3, 3\)"):
        F.conv2d_forward(arr(2, 3, 8, 8), arr(4, 3, 3), arr(4))


def test_conv_channel_mismatch_names_both_shapes():
    x, w = arr(2, 3, 8, 8), arr(5, 4, 3, 3)
    with pytest.raises(ValueError, match=r"x has 3 channels but w expects 4"):
        F.conv2d_forward(x, w, arr(5))
    raises_naming(lambda: F.conv2d_forward(x, w, arr(5)), *shapes(x, w))


def test_conv_kernel_larger_than_padded_input():
    x, w = arr(1, 1, 4, 4), arr(1, 1, 7, 3)
    raises_naming(lambda: F.conv2d_forward(x, w, arr(1), padding=1), "conv2d", "kernel",
                  "larger than the padded input", re.escape("(6, 6)"), *shapes(x))


def test_conv_kernel_fits_once_padding_makes_room():
    out, _ = F.conv2d_forward(arr(1, 1, 4, 4), arr(1, 1, 6, 6), arr(1), padding=1)
    assert out.shape == (1, 1, 1, 1), f"a 6x6 kernel on a 4x4 input padded by 1 gives one output, got {out.shape}"


@pytest.mark.parametrize("stride", [0, -1, (1, 0), (0, 2)])
def test_conv_non_positive_stride_is_refused(stride):
    raises_naming(lambda: F.conv2d_forward(arr(1, 1, 4, 4), arr(1, 1, 3, 3), arr(1), stride=stride),
                  "conv2d", "stride", ">= 1")


@pytest.mark.parametrize("padding", [-1, (0, -2)])
def test_conv_negative_padding_is_refused(padding):
    raises_naming(lambda: F.conv2d_forward(arr(1, 1, 4, 4), arr(1, 1, 3, 3), arr(1), padding=padding),
                  "conv2d", "padding", ">= 0")


@pytest.mark.parametrize("stride", [1.5, (1, 2, 3), "2", True])
def test_conv_stride_must_be_an_int_or_a_pair_of_ints(stride):
    raises_naming(lambda: F.conv2d_forward(arr(1, 1, 4, 4), arr(1, 1, 3, 3), arr(1), stride=stride),
                  "conv2d", "stride", "int")


def test_conv_float64_weight_with_float32_input_is_refused_not_cast():
    x, w = arr(2, 3, 8, 8, dtype=np.float32), arr(4, 3, 3, 3)
    raises_naming(lambda: F.conv2d_forward(x, w, arr(4, dtype=np.float32)),
                  "conv2d", "w", "float64", "float32", *shapes(w, x))


def test_conv_bias_of_the_wrong_dtype_is_refused():
    raises_naming(lambda: F.conv2d_forward(arr(1, 1, 4, 4), arr(2, 1, 3, 3), arr(2, dtype=np.float32)),
                  "conv2d", "b", "float32", "float64")


@pytest.mark.parametrize("bias_shape", [(3,), (4, 1), ()])
def test_conv_bias_of_the_wrong_shape_names_b_and_w(bias_shape):
    w = arr(4, 3, 3, 3)
    raises_naming(lambda: F.conv2d_forward(arr(2, 3, 8, 8), w, np.zeros(bias_shape)),
                  "conv2d", r"\bb\b", re.escape("(4,)"), re.escape(str(bias_shape)), *shapes(w))


def test_conv_integer_input_is_refused():
    raises_naming(lambda: F.conv2d_forward(np.zeros((1, 1, 4, 4), dtype=np.int64), arr(1, 1, 3, 3), arr(1)),
                  "conv2d", "x", "floating", "int64")


def test_conv_backward_with_a_dout_of_the_wrong_shape():
    out, cache = F.conv2d_forward(arr(2, 3, 8, 8), arr(4, 3, 3, 3), arr(4), padding=1)
    dout = arr(2, 4, 7, 8)
    raises_naming(lambda: F.conv2d_backward(dout, cache), "conv2d_backward", "dout",
                  re.escape("(2, 4, 8, 8)"), *shapes(dout))


# ----------------------------------------------------------------------------- backward dtypes

def _forward_float32(op):
    x32 = arr(2, 3, 4, 4, dtype=np.float32)
    if op == "conv2d":
        return F.conv2d_forward(x32, arr(2, 3, 3, 3, dtype=np.float32), arr(2, dtype=np.float32))
    if op == "linear":
        return F.linear_forward(arr(2, 3, dtype=np.float32), arr(4, 3, dtype=np.float32), arr(4, dtype=np.float32))
    if op == "batchnorm2d":
        stats = [arr(3, dtype=np.float32) for _ in range(4)]
        return F.batchnorm2d_forward(x32 + np.arange(32, dtype=np.float32).reshape(2, 1, 4, 4), *stats)
    if op == "batchnorm1d":
        stats = [arr(3, dtype=np.float32) for _ in range(4)]
        return F.batchnorm1d_forward(np.arange(6, dtype=np.float32).reshape(2, 3), *stats)
    raise AssertionError(op)


@pytest.mark.parametrize("op", ["conv2d", "linear", "batchnorm2d", "batchnorm1d"])
def test_backward_refuses_a_float64_dout_for_a_float32_forward(op):
    """A float64 dout into a float32 layer would silently turn its parameter gradients float64
    (no silent upcast); layers with parameters must refuse it, as conv2d_backward does."""
    out, cache = _forward_float32(op)
    backward = getattr(F, f"{op}_backward")
    dout = np.zeros(out.shape, dtype=np.float64)
    try:
        grads = backward(dout, cache)
    except ValueError as exc:
        assert "float64" in str(exc) and "float32" in str(exc), f"message should name both dtypes: {exc}"
        return
    got = [str(g.dtype) for g in grads if g is not None]
    pytest.fail(f"{op}_backward accepted a float64 dout for a float32 forward and returned {got} "
                f"instead of raising ValueError")


# ----------------------------------------------------------------------------- pooling

@pytest.mark.parametrize("pool", ["maxpool2d", "avgpool2d"])
def test_pool_wrong_ndim_names_x_and_its_shape(pool):
    forward = getattr(F, f"{pool}_forward")
    raises_naming(lambda: forward(arr(3, 8, 8), 2), pool, "x", "4-D", re.escape("(3, 8, 8)"))


@pytest.mark.parametrize("pool", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("kernel_size, padding", [(3, 2), ((2, 4), (1, 3)), (1, 1), (2, (0, 2))])
def test_pool_padding_larger_than_half_the_kernel_is_refused(pool, kernel_size, padding):
    forward = getattr(F, f"{pool}_forward")
    raises_naming(lambda: forward(arr(1, 1, 8, 8), kernel_size, padding=padding), pool, "padding",
                  "half", "kernel_size")


@pytest.mark.parametrize("pool", ["maxpool2d", "avgpool2d"])
def test_pool_kernel_larger_than_padded_input(pool):
    forward = getattr(F, f"{pool}_forward")
    x = arr(1, 2, 3, 5)
    raises_naming(lambda: forward(x, (4, 2)), pool, "kernel_size", "larger than the padded input",
                  *shapes(x))


@pytest.mark.parametrize("pool", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("name, kwargs", [("stride", dict(kernel_size=2, stride=0)),
                                          ("kernel_size", dict(kernel_size=0)),
                                          ("kernel_size", dict(kernel_size=(2, -1))),
                                          ("padding", dict(kernel_size=2, padding=-1))])
def test_pool_non_positive_sizes_are_refused(pool, name, kwargs):
    forward = getattr(F, f"{pool}_forward")
    raises_naming(lambda: forward(arr(1, 1, 4, 4), **kwargs), pool, name)


@pytest.mark.parametrize("pool", ["maxpool2d", "avgpool2d"])
def test_pool_backward_with_a_dout_of_the_wrong_shape(pool):
    out, cache = getattr(F, f"{pool}_forward")(arr(2, 3, 8, 8), 2)
    dout = arr(2, 3, 4, 5)
    raises_naming(lambda: getattr(F, f"{pool}_backward")(dout, cache), "dout",
                  re.escape("(2, 3, 4, 4)"), *shapes(dout))


def test_global_avgpool_wrong_ndim():
    raises_naming(lambda: F.global_avgpool2d_forward(arr(2, 3, 4)), "global_avgpool2d", "x", "4-D")


# ----------------------------------------------------------------------------- linear

def test_linear_feature_mismatch_names_both_shapes():
    x, w = arr(2, 5), arr(3, 4)
    raises_naming(lambda: F.linear_forward(x, w, arr(3)), "linear", "x has 5 features but w expects 4",
                  *shapes(x, w))


def test_linear_wrong_ndim():
    raises_naming(lambda: F.linear_forward(arr(2, 3, 4), arr(3, 12), arr(3)), "linear", "x", "2-D",
                  re.escape("(2, 3, 4)"))


def test_linear_bias_shape_and_dtype():
    w = arr(3, 4)
    raises_naming(lambda: F.linear_forward(arr(2, 4), w, arr(4)), "linear", r"\bb\b", re.escape("(3,)"),
                  re.escape("(4,)"))
    raises_naming(lambda: F.linear_forward(arr(2, 4, dtype=np.float32), w, arr(3, dtype=np.float32)),
                  "linear", "float64", "float32")


# ----------------------------------------------------------------------------- batchnorm, dropout

@pytest.mark.parametrize("name", ["gamma", "beta", "running_mean", "running_var"])
def test_batchnorm_per_channel_arrays_must_match_the_channels(name):
    x = arr(2, 3, 4, 4)
    args = {k: arr(3) for k in ("gamma", "beta", "running_mean", "running_var")}
    args[name] = arr(4)
    raises_naming(lambda: F.batchnorm2d_forward(x, **args), "batchnorm2d", name, re.escape("(3,)"),
                  re.escape("(4,)"), *shapes(x))


def test_batchnorm_wrong_ndim_and_dtype():
    stats = [arr(3) for _ in range(4)]
    raises_naming(lambda: F.batchnorm2d_forward(arr(2, 3), *stats), "batchnorm2d", "x", "4-D")
    raises_naming(lambda: F.batchnorm1d_forward(arr(2, 3, 4, 4), *stats), "batchnorm1d", "x", "2-D")
    raises_naming(lambda: F.batchnorm1d_forward(arr(2, 3, dtype=np.float32), *stats),
                  "batchnorm1d", "float64", "float32")


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    raises_naming(lambda: F.batchnorm1d_forward(arr(1, 3), *[arr(3) for _ in range(4)], training=True),
                  "batchnorm1d", re.escape("(1, 3)"))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_probability_out_of_range(p):
    raises_naming(lambda: F.dropout_forward(arr(2, 3), p, rng=np.random.default_rng(0)), "dropout", r"\bp\b")


def test_dropout_training_without_a_generator_is_refused():
    raises_naming(lambda: F.dropout_forward(arr(2, 3), 0.5, training=True, rng=None), "dropout", "rng",
                  "Generator")


# ----------------------------------------------------------------------------- losses

def test_cross_entropy_labels_out_of_range_name_the_range_and_shapes():
    logits = arr(3, 4)
    raises_naming(lambda: F.softmax_cross_entropy(logits, np.array([0, 4, 1])), "softmax_cross_entropy",
                  "labels", re.escape("[0, 4)"), *shapes(logits))
    raises_naming(lambda: F.softmax_cross_entropy(logits, np.array([0, -1, 1])), "labels", re.escape("[0, 4)"))


@pytest.mark.parametrize("y", [np.array([0.0, 1.0, 2.0]), np.array([True, False, True])])
def test_cross_entropy_non_integer_labels_are_refused(y):
    logits = arr(3, 4)
    raises_naming(lambda: F.softmax_cross_entropy(logits, y), "softmax_cross_entropy", r"\by\b", "integer",
                  str(y.dtype), *shapes(logits))


def test_cross_entropy_label_count_must_match_the_batch():
    logits = arr(3, 4)
    raises_naming(lambda: F.softmax_cross_entropy(logits, np.array([0, 1])), r"\by\b",
                  re.escape("(3,)"), re.escape("(2,)"))


def test_cross_entropy_logits_must_be_2d_and_label_smoothing_in_range():
    raises_naming(lambda: F.softmax_cross_entropy(arr(3, 4, 1), np.array([0, 1, 2])), "logits", "2-D")
    raises_naming(lambda: F.softmax_cross_entropy(arr(3, 4), np.array([0, 1, 2]), label_smoothing=1.5),
                  "label_smoothing")


def test_mse_shape_and_dtype_mismatch():
    pred, target = arr(3, 4), arr(4, 3)
    raises_naming(lambda: F.mse_loss(pred, target), "mse_loss", "target", *shapes(pred, target))
    raises_naming(lambda: F.mse_loss(pred, arr(3, 4, dtype=np.float32)), "mse_loss", "float32", "float64")


# ----------------------------------------------------------------------------- activations

@pytest.mark.parametrize("op", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_backward_with_a_dout_of_the_wrong_shape(op):
    _, cache = getattr(F, f"{op}_forward")(arr(2, 3))
    dout = arr(3, 2)
    raises_naming(lambda: getattr(F, f"{op}_backward")(dout, cache), "dout", re.escape("(2, 3)"),
                  re.escape("(3, 2)"))


@pytest.mark.parametrize("op", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_integer_input_is_refused(op):
    raises_naming(lambda: getattr(F, f"{op}_forward")(np.arange(6).reshape(2, 3)), op, "x", "floating")


# ----------------------------------------------------------------------------- numbers and caches

@pytest.mark.parametrize("call, error, words", [
    (lambda: F.dropout_forward(arr(2, 3), True, rng=np.random.default_rng(0)), TypeError,
     "dropout: p must be a real number"),
    (lambda: F.dropout_forward(arr(2, 3), "0.5", rng=np.random.default_rng(0)), TypeError,
     "dropout: p must be a real number"),
    (lambda: F.leaky_relu_forward(arr(2, 3), None), TypeError, "negative_slope"),
    (lambda: F.leaky_relu_forward(arr(2, 3), float("nan")), ValueError, "negative_slope"),
    (lambda: F.batchnorm2d_forward(arr(2, 3, 4, 4), *[arr(3) for _ in range(4)], eps=0.0),
     ValueError, r"eps must be in \(0.0, inf\)"),
    (lambda: F.batchnorm2d_forward(arr(2, 3, 4, 4), *[arr(3) for _ in range(4)], momentum=1.5),
     ValueError, r"momentum must be in \[0.0, 1.0\]"),
    (lambda: F.softmax_cross_entropy(arr(2, 3), np.zeros(2, int), label_smoothing=None), TypeError,
     "label_smoothing"),
    (lambda: F.softmax(np.arange(6).reshape(2, 3)), ValueError, "float32 or float64"),
    (lambda: F.conv2d_forward(arr(1, 1, 4, 4, dtype=np.float16), arr(1, 1, 3, 3, dtype=np.float16),
                              None), ValueError, "float32 or float64"),
])
def test_hyperparameters_and_dtypes_are_checked_by_the_ops(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_byte_swapped_input_gives_the_values_of_native_input():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    swapped = x.astype(x.dtype.newbyteorder())
    np.testing.assert_array_equal(F.maxpool2d_forward(swapped, 2, 2)[0], F.maxpool2d_forward(x, 2, 2)[0])


@pytest.mark.parametrize("training", [True, False])
def test_dropout_and_flatten_backward_check_dout_in_every_mode(training):
    _, cache = F.dropout_forward(arr(2, 3), 0.5, training=training, rng=np.random.default_rng(0))
    raises_naming(lambda: F.dropout_backward(arr(3, 2), cache), "dropout_backward", *shapes(arr(2, 3)))
    raises_naming(lambda: F.dropout_backward(arr(2, 3, dtype=np.float32), cache), "float32",
                  "float64")
    _, cache = F.flatten_forward(arr(2, 3, 4))
    raises_naming(lambda: F.flatten_backward(arr(12, 2), cache), "flatten_backward",
                  re.escape("(2, 12)"))
    raises_naming(lambda: F.flatten_backward(arr(2, 12, dtype=np.float32), cache), "float32")


@pytest.mark.parametrize("call, words", [
    (lambda: F.conv2d_forward(arr(1, 1, 4, 4), arr(0, 1, 3, 3), None), "at least one filter"),
    (lambda: F.conv2d_forward(arr(1, 1, 4, 4), arr(1, 1, 0, 3), None), "at least one filter"),
    (lambda: F.batchnorm2d_forward(arr(2, 0, 4, 4), *[arr(0) for _ in range(4)]), "no channels"),
    (lambda: F.global_avgpool2d_forward(arr(1, 1, 0, 4)), "no pixels"),
])
def test_empty_filters_channels_and_planes_are_named(call, words):
    raises_naming(call, words)
