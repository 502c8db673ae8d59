"""The GPU backend: every op on CuPy arrays against the same op on NumPy arrays.

- the six kernels of ``minicnn.kernels._cupy`` against ``_numpy`` on random shapes, strides and
  paddings (exact where both add in the same order, else tight tolerances), both maxpool
  backward paths, bitwise determinism (two runs give the same bits);
- every functional op's forward and backward: float64 to ~1e-12, float32 to ~1e-5 (relative),
  results are CuPy arrays of the input dtype;
- modules, ``Module.to`` round trips, and short training runs whose loss curves match the CPU's.

The whole module skips, with the reason, where CuPy or a GPU is missing. ``MINICNN_REQUIRE_GPU=1``
turns that skip into a failure (for the GPU machine, so the tests cannot silently not run).
``CUPY_TF32=1`` (TF32 GEMMs) loosens the float32 tolerances of ops that multiply matrices.
"""
import os

import numpy as np
import pytest

from minicnn import backend, kernels
from minicnn import functional as F
from minicnn.kernels import _numpy

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # hypothesis is optional here: the seeded cases below still run
    given = None


def _gpu_skip_reason():
    try:
        import cupy
    except Exception as exc:
        return f"CuPy is not installed ({type(exc).__name__}: {exc}); pip install 'minicnn[gpu]'"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy {cupy.__version__} sees no usable GPU ({type(exc).__name__}: {exc})"
    return None if count > 0 else "CuPy sees 0 GPUs"


REQUIRE_GPU = os.environ.get("MINICNN_REQUIRE_GPU") == "1"
pytestmark = pytest.mark.skipif(not backend.gpu_available() and not REQUIRE_GPU,
                                reason=f"no GPU: {_gpu_skip_reason()}")

cp = backend.cupy_or_none()
DTYPES = [np.float32, np.float64]
TF32 = os.environ.get("CUPY_TF32") == "1"


@pytest.fixture(autouse=True)
def _gpu_present():
    if cp is None:
        pytest.fail(f"MINICNN_REQUIRE_GPU=1 but {_gpu_skip_reason()}")


def _cupy_kernels():
    from minicnn.kernels import _cupy
    return _cupy


# ---------------------------------------------------------------- helpers

def rtol_for(dtype, matmul=False):
    if np.dtype(dtype) == np.float64:
        return 1e-12
    return 5e-3 if (matmul and TF32) else 1e-5


def host(a):
    return cp.asnumpy(a) if isinstance(a, cp.ndarray) else np.asarray(a)


def assert_gpu_matches(gpu, cpu, dtype, what, matmul=False, exact=False):
    """``gpu`` is a CuPy array of ``cpu``'s dtype and shape whose values match ``cpu``.

    Tolerance: |gpu - cpu| <= rtol * (|cpu| + max(1, max|cpu|)), so entries that cancel to
    near zero are judged against the scale of the whole array.
    """
    assert isinstance(gpu, cp.ndarray), f"{what}: expected a CuPy array, got {type(gpu).__name__}"
    cpu = np.asarray(cpu)
    assert gpu.dtype == cpu.dtype, f"{what}: dtype {gpu.dtype} on the GPU, {cpu.dtype} on the CPU"
    assert gpu.shape == cpu.shape, f"{what}: shape {gpu.shape} on the GPU, {cpu.shape} on the CPU"
    got = host(gpu)
    if exact or cpu.dtype.kind != "f":
        np.testing.assert_array_equal(got, cpu, err_msg=what)
        return
    rtol = rtol_for(dtype, matmul)
    scale = max(1.0, float(np.abs(cpu).max())) if cpu.size else 1.0
    np.testing.assert_allclose(got, cpu, rtol=rtol, atol=rtol * scale, err_msg=what)


def randn(xp, shape, dtype, seed, ties=False):
    """The same random array on either device (drawn on the host, then moved)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, size=shape) if ties else rng.standard_normal(shape)
    return xp.asarray(a.astype(dtype))


def same_bits(a, b):
    a, b = host(a), host(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------- kernels against _numpy

def _random_geometries(count, seed):
    """(x_shape, kernel, stride, padding) with padding <= kernel // 2 and the window fitting."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
        sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        h = int(rng.integers(max(1, kh - 2 * ph), 14))
        w = int(rng.integers(max(1, kw - 2 * pw), 14))
        n, c = (int(v) for v in rng.integers(1, 4, size=2))
        cases.append(((n, c, h, w), (kh, kw), (sh, sw), (ph, pw)))
    return cases


GEOMETRIES = _random_geometries(25, seed=2024) + [
    ((2, 3, 8, 8), (3, 3), (1, 1), (1, 1)),       # overlapping windows, padded
    ((1, 2, 7, 9), (3, 2), (2, 1), (1, 1)),       # non-square kernel and stride
    ((2, 1, 5, 5), (5, 5), (1, 1), (0, 0)),       # kernel == input
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
]


def check_kernels(x_shape, k, s, p, dtype, seed, ties=False):
    """All six GPU kernels against _numpy for one geometry."""
    g = _cupy_kernels()
    x_host = randn(np, x_shape, dtype, seed, ties)
    x = cp.asarray(x_host)

    cols = g.im2col(x, k, s, p)
    ref_cols = _numpy.im2col(x_host, k, s, p)
    assert_gpu_matches(cols, ref_cols, dtype, "im2col", exact=True)
    dcols = randn(np, ref_cols.shape, dtype, seed + 1)
    # same order of additions as _numpy: bitwise equal
    assert_gpu_matches(g.col2im(cp.asarray(dcols), x_shape, k, s, p),
                       _numpy.col2im(dcols, x_shape, k, s, p), dtype, "col2im", exact=True)

    out, argmax = g.maxpool_forward(x, k, s, p)
    ref_out, ref_argmax = _numpy.maxpool_forward(x_host, k, s, p)
    assert_gpu_matches(out, ref_out, dtype, "maxpool_forward out", exact=True)
    assert_gpu_matches(argmax, ref_argmax, dtype, "maxpool_forward argmax", exact=True)
    dout_host = randn(np, ref_out.shape, dtype, seed + 2)
    dout = cp.asarray(dout_host)
    ref_dx = _numpy.maxpool_backward(dout_host, ref_argmax, x_shape)
    by_output = g.maxpool_backward(dout, argmax, x_shape)
    by_pixel = g.maxpool_backward(dout, argmax, x_shape, kernel_size=k, stride=s, padding=p)
    assert_gpu_matches(by_output, ref_dx, dtype, "maxpool_backward (no geometry)")
    assert_gpu_matches(by_pixel, ref_dx, dtype, "maxpool_backward (gather)")
    assert same_bits(by_output, by_pixel), "the two maxpool_backward paths differ"

    assert_gpu_matches(g.avgpool_forward(x, k, s, p), _numpy.avgpool_forward(x_host, k, s, p),
                       dtype, "avgpool_forward")
    assert_gpu_matches(g.avgpool_backward(dout, x_shape, k, s, p),
                       _numpy.avgpool_backward(dout_host, x_shape, k, s, p), dtype,
                       "avgpool_backward", exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GEOMETRIES, ids=lambda c: "x{}k{}s{}p{}".format(*c).replace(" ", ""))
def test_kernels_match_numpy(case, dtype):
    check_kernels(*case, dtype, seed=hash(case) % 1000)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_kernels_ties_and_nan_follow_the_conventions(dtype):
    for case in GEOMETRIES[:10]:
        check_kernels(*case, dtype, seed=7, ties=True)           # many equal values: first wins
    g = _cupy_kernels()
    x_host = np.array([[[[1, np.nan, 3, np.nan], [-np.inf, -np.inf, 2, 5],
                         [0, 0, 0, 0], [np.inf, 1, 1, np.inf]]]], dtype=dtype)
    for k, s, p in (((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((2, 3), (1, 2), (1, 1))):
        out, argmax = g.maxpool_forward(cp.asarray(x_host), k, s, p)
        ref_out, ref_argmax = _numpy.maxpool_forward(x_host, k, s, p)
        np.testing.assert_array_equal(host(argmax), ref_argmax)
        np.testing.assert_array_equal(host(out), ref_out)


def test_kernels_with_64bit_indices(monkeypatch):
    """The ``long long`` instantiations (used for arrays past 2**31 elements) on small arrays."""
    g = _cupy_kernels()
    monkeypatch.setattr(g, "_INT32_LIMIT", -1)
    for case in GEOMETRIES[-4:]:
        check_kernels(*case, np.float32, seed=3)


def test_kernels_grid_stride_loop_covers_everything(monkeypatch):
    g = _cupy_kernels()
    monkeypatch.setattr(g, "_MAX_BLOCKS", 2)                    # far fewer threads than outputs
    check_kernels((3, 4, 17, 15), (3, 3), (2, 1), (1, 1), np.float64, seed=5)


if given is not None:
    @st.composite
    def geometries(draw):
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
        return ((draw(st.integers(1, 3)), draw(st.integers(1, 3)),
                 draw(st.integers(max(1, kh - 2 * ph), 12)), draw(st.integers(max(1, kw - 2 * pw), 12))),
                (kh, kw), (draw(st.integers(1, 4)), draw(st.integers(1, 4))), (ph, pw))

    @settings(max_examples=100, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(geometries(), st.sampled_from(DTYPES), st.integers(0, 10_000), st.booleans())
    def test_kernels_match_numpy_hypothesis(case, dtype, seed, ties):
        check_kernels(*case, dtype, seed, ties)


def test_kernels_accept_non_contiguous_input_and_out_buffers():
    g = _cupy_kernels()
    x_host = randn(np, (2, 3, 10, 10), np.float32, 0)[:, :, ::2, 1::2]
    cols = g.im2col(cp.asarray(x_host), (3, 3), (1, 1), (1, 1))    # a strided CuPy view
    np.testing.assert_array_equal(host(cols), _numpy.im2col(np.ascontiguousarray(x_host),
                                                           (3, 3), (1, 1), (1, 1)))
    buf = cp.empty_like(cols)
    assert g.im2col(cp.asarray(x_host), (3, 3), (1, 1), (1, 1), out=buf) is buf
    dx = cp.empty(x_host.shape, dtype=np.float32)
    assert g.col2im(buf, x_host.shape, (3, 3), (1, 1), (1, 1), out=dx) is dx
    with pytest.raises(ValueError, match="out must be"):
        g.im2col(cp.asarray(x_host), (3, 3), (1, 1), (1, 1), out=cp.empty((1, 2, 3), np.float32))


def test_kernels_handle_empty_batches():
    g = _cupy_kernels()
    x = cp.zeros((0, 3, 8, 8), dtype=np.float32)
    assert g.im2col(x, (3, 3), (1, 1), (1, 1)).shape == (0, 27, 64)
    out, argmax = g.maxpool_forward(x, (2, 2), (2, 2), (0, 0))
    assert out.shape == argmax.shape == (0, 3, 4, 4)
    assert g.maxpool_backward(out, argmax, x.shape).shape == x.shape


def test_kernels_reject_other_dtypes():
    g = _cupy_kernels()
    with pytest.raises(TypeError, match="float32 and float64"):
        g.im2col(cp.zeros((1, 1, 4, 4), dtype=np.float16), (2, 2), (1, 1), (0, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_are_deterministic(dtype):
    """Two runs give the same bits, with overlapping windows so every gather sums many terms."""
    g = _cupy_kernels()
    k, s, p = (3, 3), (1, 1), (1, 1)
    x = randn(cp, (8, 16, 33, 31), dtype, 1, ties=True)          # ties: pixels win many windows
    cols = g.im2col(x, k, s, p)
    dcols = randn(cp, cols.shape, dtype, 2)
    out, argmax = g.maxpool_forward(x, k, s, p)
    dout = randn(cp, out.shape, dtype, 3)
    runs = [lambda: g.im2col(x, k, s, p),
            lambda: g.col2im(dcols, x.shape, k, s, p),
            lambda: g.maxpool_forward(x, k, s, p)[0],
            lambda: g.maxpool_forward(x, k, s, p)[1],
            lambda: g.maxpool_backward(dout, argmax, x.shape),
            lambda: g.maxpool_backward(dout, argmax, x.shape, kernel_size=k, stride=s, padding=p),
            lambda: g.avgpool_forward(x, k, s, p),
            lambda: g.avgpool_backward(dout, x.shape, k, s, p)]
    for i, run in enumerate(runs):
        assert same_bits(run(), run()), f"kernel run {i} is not deterministic"


def test_conv_backward_on_gpu_is_deterministic():
    """col2im is a gather and cuBLAS GEMMs are deterministic on one GPU: same bits twice."""
    x = randn(cp, (16, 8, 20, 20), np.float32, 4)
    w = randn(cp, (12, 8, 3, 3), np.float32, 5)
    b = randn(cp, (12,), np.float32, 6)
    out, cache = F.conv2d_forward(x, w, b, 1, 1)
    dout = randn(cp, out.shape, np.float32, 7)
    first = F.conv2d_backward(dout, cache)
    second = F.conv2d_backward(dout, F.conv2d_forward(x, w, b, 1, 1)[1])
    for a, b_ in zip(first, second):
        assert same_bits(a, b_)


def test_cupy_arrays_are_dispatched_to_the_gpu_kernels():
    g = _cupy_kernels()
    x = cp.zeros((1, 1, 4, 4), dtype=np.float32)
    assert kernels._module_for(x) is g
    g.reset_launch_counts()
    kernels.im2col(x, (2, 2), (1, 1), (0, 0))
    F.maxpool2d_forward(x, 2)
    assert g.launch_counts() == {"im2col": 1, "maxpool_forward": 1}


def test_kernel_info_describes_the_gpu():
    g = _cupy_kernels()
    g.compile_all()
    info = g.kernel_info()
    assert info["compiled"] == ["float32", "float64"]
    assert "error" not in info, info
    for key in ("cupy", "cuda_runtime", "nvrtc", "device", "compute_capability"):
        assert info[key], key


# ---------------------------------------------------------------- functional ops, CPU vs GPU

def _conv(stride, padding, kernel, bias=True, need_dx=True):
    def run(xp, dtype):
        x = randn(xp, (3, 4, 9, 8), dtype, 1)
        w = randn(xp, (5, 4) + kernel, dtype, 2)
        b = randn(xp, (5,), dtype, 3) if bias else None
        out, cache = F.conv2d_forward(x, w, b, stride, padding)
        dx, dw, db = F.conv2d_backward(randn(xp, out.shape, dtype, 4), cache, need_dx=need_dx)
        return {"out": out, "dx": dx, "dw": dw, "db": db}
    return run


def _pool(kind, kernel, stride, padding, ties=False):
    forward = getattr(F, f"{kind}2d_forward")
    backward = getattr(F, f"{kind}2d_backward")

    def run(xp, dtype):
        x = randn(xp, (2, 3, 9, 10), dtype, 1, ties)
        out, cache = forward(x, kernel, stride, padding)
        result = {"out": out, "dx": backward(randn(xp, out.shape, dtype, 2), cache)}
        if kind == "maxpool":
            result["argmax"] = cache.argmax
        return result
    return run


def _global_avgpool(xp, dtype):
    x = randn(xp, (2, 3, 5, 6), dtype, 1)
    out, cache = F.global_avgpool2d_forward(x)
    return {"out": out, "dx": F.global_avgpool2d_backward(randn(xp, out.shape, dtype, 2), cache)}


def _linear(bias):
    def run(xp, dtype):
        x, w = randn(xp, (6, 20), dtype, 1), randn(xp, (7, 20), dtype, 2)
        b = randn(xp, (7,), dtype, 3) if bias else None
        out, cache = F.linear_forward(x, w, b)
        dx, dw, db = F.linear_backward(randn(xp, out.shape, dtype, 4), cache)
        return {"out": out, "dx": dx, "dw": dw, "db": db}
    return run


def _flatten(xp, dtype):
    x = randn(xp, (2, 3, 4, 5), dtype, 1)
    out, cache = F.flatten_forward(x)
    return {"out": out, "dx": F.flatten_backward(randn(xp, out.shape, dtype, 2), cache)}


def _activation(name, **kwargs):
    forward, backward = getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward")

    def run(xp, dtype):
        x = randn(xp, (4, 50), dtype, 1) * 4
        out, cache = forward(x, **kwargs)
        return {"out": out, "dx": backward(randn(xp, out.shape, dtype, 2), cache)}
    return run


def _dropout(training):
    def run(xp, dtype):
        x = randn(xp, (6, 40), dtype, 1)
        out, cache = F.dropout_forward(x, 0.3, training=training, rng=np.random.default_rng(5))
        return {"out": out, "dx": F.dropout_backward(randn(xp, out.shape, dtype, 2), cache)}
    return run


def _batchnorm(dims, training):
    forward = getattr(F, f"batchnorm{dims}d_forward")
    backward = getattr(F, f"batchnorm{dims}d_backward")

    def run(xp, dtype):
        shape = (5, 3, 4, 6) if dims == 2 else (8, 3)
        x = randn(xp, shape, dtype, 1) * 2 + 1
        gamma, beta = randn(xp, (3,), dtype, 2), randn(xp, (3,), dtype, 3)
        running_mean = randn(xp, (3,), dtype, 4)
        running_var = xp.abs(randn(xp, (3,), dtype, 5)) + 0.5
        out, cache = forward(x, gamma, beta, running_mean, running_var, training=training)
        dx, dgamma, dbeta = backward(randn(xp, out.shape, dtype, 6), cache)
        return {"out": out, "dx": dx, "dgamma": dgamma, "dbeta": dbeta,
                "running_mean": running_mean, "running_var": running_var}
    return run


def _cross_entropy(label_smoothing):
    def run(xp, dtype):
        logits = randn(xp, (7, 5), dtype, 1) * 3
        y = np.random.default_rng(2).integers(0, 5, size=7)
        loss, dlogits = F.softmax_cross_entropy(logits, y, label_smoothing=label_smoothing)
        return {"loss": loss, "dlogits": dlogits}
    return run


def _mse(xp, dtype):
    loss, dpred = F.mse_loss(randn(xp, (4, 6), dtype, 1), randn(xp, (4, 6), dtype, 2))
    return {"loss": loss, "dpred": dpred}


def _softmaxes(xp, dtype):
    logits = randn(xp, (3, 8), dtype, 1) * 10
    return {"softmax": F.softmax(logits), "log_softmax": F.log_softmax(logits)}


# name -> (run(xp, dtype) -> {output name: array}, whether a GEMM is involved)
FUNCTIONAL_CASES = {
    "conv3x3_s1_p1": (_conv(1, 1, (3, 3)), True),
    "conv_nonsquare_s21_p10": (_conv((2, 1), (1, 0), (3, 2)), True),
    "conv5x5_s2_p2_nobias": (_conv(2, 2, (5, 5), bias=False), True),
    "conv1x1_no_dx": (_conv(1, 0, (1, 1), need_dx=False), True),
    "maxpool2x2": (_pool("maxpool", 2, None, 0), False),
    "maxpool3x3_s2_p1": (_pool("maxpool", 3, 2, 1), False),
    "maxpool3x2_s12_p11_ties": (_pool("maxpool", (3, 2), (1, 2), (1, 1), ties=True), False),
    "avgpool2x2": (_pool("avgpool", 2, None, 0), False),
    "avgpool3x3_s2_p1": (_pool("avgpool", 3, 2, 1), False),
    "global_avgpool": (_global_avgpool, False),
    "linear": (_linear(True), True),
    "linear_nobias": (_linear(False), True),
    "flatten": (_flatten, False),
    "relu": (_activation("relu"), False),
    "leaky_relu": (_activation("leaky_relu", negative_slope=0.1), False),
    "sigmoid": (_activation("sigmoid"), False),
    "tanh": (_activation("tanh"), False),
    "dropout_train": (_dropout(True), False),
    "dropout_eval": (_dropout(False), False),
    "batchnorm2d_train": (_batchnorm(2, True), False),
    "batchnorm2d_eval": (_batchnorm(2, False), False),
    "batchnorm1d_train": (_batchnorm(1, True), False),
    "softmax_cross_entropy": (_cross_entropy(0.0), False),
    "softmax_cross_entropy_smoothed": (_cross_entropy(0.1), False),
    "mse_loss": (_mse, False),
    "softmax": (_softmaxes, False),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(FUNCTIONAL_CASES))
def test_functional_op_on_gpu_matches_cpu(name, dtype):
    run, matmul = FUNCTIONAL_CASES[name]
    on_cpu, on_gpu = run(np, dtype), run(cp, dtype)
    assert on_cpu.keys() == on_gpu.keys()
    for key, cpu_value in on_cpu.items():
        gpu_value = on_gpu[key]
        if cpu_value is None:
            assert gpu_value is None, f"{name}.{key}"
            continue
        assert_gpu_matches(gpu_value, np.asarray(cpu_value), dtype, f"{name}.{key}", matmul=matmul)


def test_functional_validation_is_the_same_on_gpu():
    x = cp.zeros((2, 3, 8, 8), dtype=np.float32)
    w = cp.zeros((5, 4, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="x has 3 channels but w expects 4"):
        F.conv2d_forward(x, w, None)
    with pytest.raises(ValueError, match="dtype"):
        F.conv2d_forward(x, w.astype(np.float64)[:, :3], None)


# ---------------------------------------------------------------- modules and training

def _models():
    return pytest.importorskip("minicnn.models")


def _all_arrays(model):
    return {**{f"param:{k}": v for k, v in model.parameters().items()},
            **{f"grad:{k}": v for k, v in model.grads().items()},
            **{f"buffer:{k}": v for k, v in model.buffers().items()}}


@pytest.mark.parametrize("builder", ["lenet5", "fashion_net"])
def test_module_to_gpu_and_back_round_trips_exactly(builder):
    models = _models()
    if not hasattr(models, builder):
        pytest.skip(f"minicnn.models.{builder} not available")
    model = getattr(models, builder)(seed=3)
    for g in model.grads().values():
        g[...] = np.random.default_rng(1).standard_normal(g.shape)
    before = {k: np.array(v, copy=True) for k, v in _all_arrays(model).items()}

    assert model.to("gpu") is model
    assert getattr(model, "device", "gpu") == "gpu"
    for name, a in _all_arrays(model).items():
        assert isinstance(a, cp.ndarray), f"{name} stayed on the host after to('gpu')"
        assert a.dtype == before[name].dtype

    model.to("cpu")
    after = _all_arrays(model)
    assert after.keys() == before.keys()
    for name, a in after.items():
        assert isinstance(a, np.ndarray) and not isinstance(a, cp.ndarray), name
        assert same_bits(a, before[name]), f"{name} changed on the round trip"


def _batches(input_shape, num_classes, steps, batch, seed):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch,) + input_shape).astype(np.float32),
             rng.integers(0, num_classes, size=batch)) for _ in range(steps)]


def _loss_curve(model, batches, device, dtype, lr=0.05):
    """Plain training loop (forward, loss, backward, SGD with momentum) -> losses as floats."""
    optim = pytest.importorskip("minicnn.optim")
    model.to(device)
    model.train()
    optimizer = optim.SGD(model, lr=lr, momentum=0.9)
    losses = []
    for x, y in batches:
        x = backend.to_device(x.astype(dtype), device)
        logits = model(x)
        loss, dlogits = F.softmax_cross_entropy(logits, y)
        model.backward(dlogits)
        optimizer.step()
        losses.append(float(loss))
    return np.array(losses)


@pytest.mark.parametrize("builder, input_shape, dtype, rtol", [
    ("lenet5", (1, 28, 28), np.float32, 1e-4),
    ("lenet5", (1, 28, 28), np.float64, 1e-10),
    ("cifar_convnet", (3, 32, 32), np.float32, 1e-4),
    ("fashion_net", (1, 28, 28), np.float32, 1e-4),       # batchnorm and dropout too
])
def test_training_loss_curve_on_gpu_matches_cpu(builder, input_shape, dtype, rtol):
    models = _models()
    if not hasattr(models, builder):
        pytest.skip(f"minicnn.models.{builder} not available")
    if TF32 and dtype == np.float32:
        rtol = 2e-2
    batches = _batches(input_shape, 10, steps=8, batch=16, seed=11)
    cpu = _loss_curve(getattr(models, builder)(seed=0, dtype=dtype), batches, "cpu", dtype)
    gpu_model = getattr(models, builder)(seed=0, dtype=dtype)
    gpu = _loss_curve(gpu_model, batches, "gpu", dtype)
    assert np.all(np.isfinite(cpu)) and cpu[-1] != cpu[0]
    np.testing.assert_allclose(gpu, cpu, rtol=rtol, err_msg=f"{builder} loss curve, GPU vs CPU")
    for name, p in gpu_model.parameters().items():
        assert isinstance(p, cp.ndarray) and p.dtype == dtype, name


def test_fit_on_gpu_matches_fit_on_cpu():
    train = pytest.importorskip("minicnn.train")
    models = _models()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((96, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=96)
    histories = {}
    for device in ("cpu", "gpu"):
        model = models.lenet5(seed=0)
        histories[device] = train.fit(model, (x, y), epochs=2, batch_size=32, lr=0.05,
                                      device=device, progress=False, seed=0)
        assert model.device == device
    cpu_loss = np.array(histories["cpu"]["train_loss"], dtype=float)
    gpu_loss = np.array(histories["gpu"]["train_loss"], dtype=float)
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=2e-2 if TF32 else 1e-4)


def test_optimizer_state_moves_with_the_model():
    models, optim = _models(), pytest.importorskip("minicnn.optim")
    model = models.lenet5(seed=0).to("gpu")
    optimizer = optim.Adam(model, lr=1e-3)
    x = randn(cp, (4, 1, 28, 28), np.float32, 0)
    _, dlogits = F.softmax_cross_entropy(model(x), np.arange(4))
    model.backward(dlogits)
    optimizer.step()
    model.to("cpu")
    optimizer.to("cpu")
    for state in optimizer.state.values():
        for key, value in state.items():
            if hasattr(value, "shape"):
                assert not isinstance(value, cp.ndarray), key
