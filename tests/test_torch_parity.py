"""minicnn.functional against torch.nn.functional (forward and, through autograd, backward).

Tolerances: float64 1e-10 relative to the output's scale (both sides are exact formulas; only
summation order differs), float32 1e-4 (single-precision rounding of sums of up to a few
hundred terms).  Conv and pooling run on every CPU kernel implementation.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import minicnn.functional as F  # noqa: E402
from minicnn import kernels  # noqa: E402

REQUIRE_C = os.environ.get("MINICNN_REQUIRE_C") == "1"
C_MARKS = [] if REQUIRE_C else [pytest.mark.skipif(not kernels.c_extension_available(),
                                                    reason="C extension not built")]
KERNELS = ["numpy", pytest.param("c", marks=C_MARKS)]
TOL = {np.float64: 1e-10, np.float32: 1e-4}
DTYPES = [np.float64, np.float32]


def t(a, grad=False):
    """A torch tensor with a's values and dtype (a copy: torch never sees our buffers)."""
    tensor = torch.from_numpy(np.array(a))
    return tensor.requires_grad_(grad)


def assert_close(got, want, dtype, what):
    """|got - want| <= tol * (1 + max|want|), elementwise, with tol per dtype."""
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch gives {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch gives {want.dtype}"
    scale = 1.0 + (np.max(np.abs(want)) if want.size else 0.0)
    err = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))) if want.size else 0.0
    tol = TOL[np.dtype(dtype).type]
    assert err <= tol * scale, f"{what}: max |minicnn - torch| = {err:.3e} > {tol:.0e} * {scale:.3g}"


def rng_for(seed):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- convolution

def check_conv(x, w, b, stride, padding, kernel_impl, dtype, what="", seed=0):
    with kernels.use_kernels(kernel_impl):
        out, cache = F.conv2d_forward(x, w, b, stride, padding)
        dout = rng_for(seed).standard_normal(out.shape).astype(dtype)
        dx, dw, db = F.conv2d_backward(dout, cache)
    xt, wt = t(x, True), t(w, True)
    bt = None if b is None else t(b, True)
    out_t = TF.conv2d(xt, wt, bt, stride=stride, padding=padding)
    out_t.backward(t(dout))
    label = f"conv2d {what} stride={stride} padding={padding} x{tuple(x.shape)} w{tuple(w.shape)} [{kernel_impl}]"
    assert_close(out, out_t, dtype, f"{label} forward")
    assert_close(dx, xt.grad, dtype, f"{label} dx")
    assert_close(dw, wt.grad, dtype, f"{label} dw")
    if b is not None:
        assert_close(db, bt.grad, dtype, f"{label} db")


CONV_CASES = {
    # name: (x shape, w shape, stride, padding)
    "3x3 pad 1": ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1),
    "non-square kernel, stride (2,3), padding (0,2)": ((2, 3, 9, 10), (5, 3, 2, 4), (2, 3), (0, 2)),
    "1x1 kernel": ((2, 6, 5, 7), (3, 6, 1, 1), 1, 0),
    "1x1 kernel stride 2": ((2, 6, 5, 7), (3, 6, 1, 1), 2, 0),
    "kernel equal to the input": ((3, 2, 5, 4), (4, 2, 5, 4), 1, 0),
    "5x5 LeNet-like": ((4, 1, 12, 12), (6, 1, 5, 5), 1, 0),
    "stride larger than kernel": ((2, 2, 9, 9), (3, 2, 2, 2), 3, 1),
}


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_torch(case, dtype, kernel_impl):
    x_shape, w_shape, stride, padding = CONV_CASES[case]
    rng = rng_for(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    check_conv(x, w, b, stride, padding, kernel_impl, dtype, case)


@pytest.mark.parametrize("kernel_impl", KERNELS)
def test_conv_with_non_contiguous_inputs_matches_torch(kernel_impl):
    rng = rng_for(2)
    x = rng.standard_normal((2, 3, 7, 16))[..., ::2]                  # strided view
    w = np.asfortranarray(rng.standard_normal((4, 3, 3, 2)))          # column-major
    b = rng.standard_normal(8)[::2]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or b.flags.c_contiguous)
    check_conv(x, w, b, (1, 2), (1, 0), kernel_impl, np.float64, "non-contiguous")


@st.composite
def conv_configs(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    return dict(x_shape=(draw(st.integers(1, 3)), draw(st.integers(1, 4)),
                         draw(st.integers(max(1, kh - 2 * ph), 9)), draw(st.integers(max(1, kw - 2 * pw), 9))),
                f=draw(st.integers(1, 4)), kernel=(kh, kw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(cfg=conv_configs())
def test_conv_matches_torch_on_random_shapes(kernel_impl, dtype, cfg):
    rng = rng_for(cfg["seed"])
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    w = rng.standard_normal((cfg["f"], cfg["x_shape"][1]) + cfg["kernel"]).astype(dtype)
    b = rng.standard_normal(cfg["f"]).astype(dtype) if cfg["bias"] else None
    check_conv(x, w, b, cfg["stride"], cfg["padding"], kernel_impl, dtype, "random", cfg["seed"])


# ----------------------------------------------------------------------------- pooling

def check_pool(pool, x, kernel_size, stride, padding, kernel_impl, dtype, seed=0):
    forward, backward = getattr(F, f"{pool}2d_forward"), getattr(F, f"{pool}2d_backward")
    with kernels.use_kernels(kernel_impl):
        out, cache = forward(x, kernel_size, stride, padding)
        dout = rng_for(seed).standard_normal(out.shape).astype(dtype)
        dx = backward(dout, cache)
    xt = t(x, True)
    torch_pool = TF.max_pool2d if pool == "maxpool" else TF.avg_pool2d
    out_t = torch_pool(xt, kernel_size, stride, padding)       # avg_pool2d: count_include_pad=True
    out_t.backward(t(dout))
    label = f"{pool} kernel={kernel_size} stride={stride} padding={padding} x{tuple(x.shape)} [{kernel_impl}]"
    assert_close(out, out_t, dtype, f"{label} forward")
    assert_close(dx, xt.grad, dtype, f"{label} dx")


POOL_CASES = {
    # name: (x shape, kernel_size, stride, padding)
    "2x2": ((2, 3, 8, 8), 2, None, 0),
    "3x3 stride 2 pad 1 (overlapping, padded)": ((2, 3, 9, 8), 3, 2, 1),
    "3x3 stride 1 pad 1 (heavily overlapping)": ((1, 2, 5, 6), 3, 1, 1),
    "non-square 2x3 stride (2,3) pad (1,1)": ((2, 2, 7, 11), (2, 3), (2, 3), (1, 1)),
    "kernel equal to the input": ((2, 3, 4, 5), (4, 5), 1, 0),
    "odd size, floor drops the last row": ((1, 2, 7, 7), 2, 2, 0),
    "1x1": ((2, 2, 3, 3), 1, 1, 0),
    "4x4 stride (1,3) pad (2,0)": ((1, 3, 6, 9), 4, (1, 3), (2, 0)),
}


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", ["maxpool", "avgpool"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_matches_torch(case, pool, dtype, kernel_impl):
    x_shape, kernel_size, stride, padding = POOL_CASES[case]
    x = rng_for(3).permutation(np.arange(np.prod(x_shape))).reshape(x_shape).astype(dtype)   # no ties
    check_pool(pool, x, kernel_size, stride, padding, kernel_impl, dtype)


@pytest.mark.parametrize("kernel_impl", KERNELS)
def test_maxpool_ties_go_where_torch_sends_them(kernel_impl):
    x = rng_for(4).integers(0, 2, (2, 3, 7, 7)).astype(np.float64)        # mostly ties
    check_pool("maxpool", x, 3, 2, 1, kernel_impl, np.float64)
    check_pool("maxpool", x, (2, 3), 1, (1, 0), kernel_impl, np.float64)


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("pool", ["maxpool", "avgpool"])
def test_pool_with_non_contiguous_input_matches_torch(pool, kernel_impl):
    x = rng_for(5).standard_normal((3, 2, 8, 8)).transpose(1, 0, 3, 2)      # (2, 3, 8, 8) view
    assert not x.flags.c_contiguous
    check_pool(pool, x, 3, 2, 1, kernel_impl, np.float64)


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    return dict(x_shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)),
                         draw(st.integers(max(1, kh - 2 * ph), 9)), draw(st.integers(max(1, kw - 2 * pw), 9))),
                kernel=(kh, kw), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                padding=(ph, pw), seed=draw(st.integers(0, 2 ** 16)))


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(cfg=pool_configs())
def test_pool_matches_torch_on_random_shapes(kernel_impl, dtype, cfg):
    rng = rng_for(cfg["seed"])
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    for pool in ("maxpool", "avgpool"):
        check_pool(pool, x, cfg["kernel"], cfg["stride"], cfg["padding"], kernel_impl, dtype, cfg["seed"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avgpool_matches_torch(dtype):
    x = rng_for(6).standard_normal((2, 3, 4, 5)).astype(dtype)
    out, cache = F.global_avgpool2d_forward(x)
    dout = rng_for(7).standard_normal(out.shape).astype(dtype)
    dx = F.global_avgpool2d_backward(dout, cache)
    xt = t(x, True)
    out_t = TF.adaptive_avg_pool2d(xt, 1).flatten(1)
    out_t.backward(t(dout))
    assert_close(out, out_t, dtype, "global_avgpool2d forward")
    assert_close(dx, xt.grad, dtype, "global_avgpool2d dx")


# ----------------------------------------------------------------------------- linear, activations

@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_torch(dtype):
    rng = rng_for(8)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(5, 7), (3, 7), (3,)])
    out, cache = F.linear_forward(x, w, b)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = F.linear_backward(dout, cache)
    xt, wt, bt = t(x, True), t(w, True), t(b, True)
    out_t = TF.linear(xt, wt, bt)
    out_t.backward(t(dout))
    for name, got, want in [("out", out, out_t), ("dx", dx, xt.grad), ("dw", dw, wt.grad), ("db", db, bt.grad)]:
        assert_close(got, want, dtype, f"linear {name}")


ACTIVATIONS = {
    "relu": (F.relu_forward, F.relu_backward, TF.relu),
    "leaky_relu 0.01": (F.leaky_relu_forward, F.leaky_relu_backward, TF.leaky_relu),
    "leaky_relu 0.2": (lambda x: F.leaky_relu_forward(x, 0.2), F.leaky_relu_backward,
                       lambda x: TF.leaky_relu(x, 0.2)),
    "sigmoid": (F.sigmoid_forward, F.sigmoid_backward, torch.sigmoid),
    "tanh": (F.tanh_forward, F.tanh_backward, torch.tanh),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch_including_large_inputs_and_zero(name, dtype):
    forward, backward, torch_op = ACTIVATIONS[name]
    x = np.concatenate([8 * rng_for(9).standard_normal(40), [0.0, -0.0, 50.0, -50.0, 800.0, -800.0]])
    x = x.reshape(2, 23).astype(dtype)
    out, cache = forward(x)
    dout = rng_for(10).standard_normal(x.shape).astype(dtype)
    dx = backward(dout, cache)
    xt = t(x, True)
    out_t = torch_op(xt)
    out_t.backward(t(dout))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx)), f"{name}: overflow for |x| = 800"
    assert_close(out, out_t, dtype, f"{name} forward")
    assert_close(dx, xt.grad, dtype, f"{name} dx")


# ----------------------------------------------------------------------------- batchnorm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [1, 2])
def test_batchnorm_matches_torch_over_several_steps_then_eval(dims, dtype):
    forward = F.batchnorm2d_forward if dims == 2 else F.batchnorm1d_forward
    backward = F.batchnorm2d_backward if dims == 2 else F.batchnorm1d_backward
    rng = rng_for(11)
    channels = 3
    gamma, beta = rng.standard_normal(channels).astype(dtype), rng.standard_normal(channels).astype(dtype)
    running_mean, running_var = np.zeros(channels, dtype), np.ones(channels, dtype)
    torch_mean, torch_var = t(running_mean), t(running_var)
    shape = (4, channels, 3, 5) if dims == 2 else (6, channels)
    for step, (training, momentum) in enumerate([(True, 0.1), (True, 0.1), (True, 0.3), (False, 0.1)]):
        x = (rng.standard_normal(shape) * (step + 1) + 2 * step).astype(dtype)
        out, cache = forward(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx, dgamma, dbeta = backward(dout, cache)
        xt, gt, bt = t(x, True), t(gamma, True), t(beta, True)
        out_t = TF.batch_norm(xt, torch_mean, torch_var, gt, bt, training=training, momentum=momentum, eps=1e-5)
        out_t.backward(t(dout))
        label = f"batchnorm{dims}d step {step} ({'train' if training else 'eval'})"
        assert_close(out, out_t, dtype, f"{label} forward")
        assert_close(dx, xt.grad, dtype, f"{label} dx")
        assert_close(dgamma, gt.grad, dtype, f"{label} dgamma")
        assert_close(dbeta, bt.grad, dtype, f"{label} dbeta")
        assert_close(running_mean, torch_mean, dtype, f"{label} running_mean")
        assert_close(running_var, torch_var, dtype, f"{label} running_var")


# ----------------------------------------------------------------------------- dropout, losses

def test_dropout_eval_is_the_identity_like_torch():
    x = rng_for(12).standard_normal((3, 4))
    out, _ = F.dropout_forward(x, 0.5, training=False)
    assert_close(out, TF.dropout(t(x), 0.5, training=False), np.float64, "dropout eval")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_torch(label_smoothing, dtype):
    rng = rng_for(13)
    logits = (5 * rng.standard_normal((6, 4))).astype(dtype)
    y = np.array([0, 3, 1, 1, 2, 0])
    loss, dlogits = F.softmax_cross_entropy(logits, y, label_smoothing=label_smoothing)
    lt = t(logits, True)
    loss_t = TF.cross_entropy(lt, torch.from_numpy(y), label_smoothing=label_smoothing)
    loss_t.backward()
    assert_close(np.asarray(loss), loss_t, dtype, f"cross-entropy loss, label_smoothing={label_smoothing}")
    assert_close(dlogits, lt.grad, dtype, f"cross-entropy dlogits, label_smoothing={label_smoothing}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_huge_logits_matches_torch(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4], [3e3, -2e3, 1e4]], dtype=dtype)
    y = np.array([0, 0, 1])
    loss, dlogits = F.softmax_cross_entropy(logits, y, label_smoothing=0.1)
    lt = t(logits, True)
    loss_t = TF.cross_entropy(lt, torch.from_numpy(y), label_smoothing=0.1)
    loss_t.backward()
    assert_close(np.asarray(loss), loss_t, dtype, "cross-entropy loss, |logits| = 1e4")
    assert_close(dlogits, lt.grad, dtype, "cross-entropy dlogits, |logits| = 1e4")


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_matches_torch(dtype):
    rng = rng_for(14)
    pred, target = rng.standard_normal((4, 5)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
    loss, dpred = F.mse_loss(pred, target)
    pt = t(pred, True)
    loss_t = TF.mse_loss(pt, t(target))
    loss_t.backward()
    assert_close(np.asarray(loss), loss_t, dtype, "mse loss")
    assert_close(dpred, pt.grad, dtype, "mse dpred")
