"""The fused convolution of the C extension (csrc/conv_tmpl.h) against the loop reference.

It runs a whole layer image by image and calls NumPy's OpenBLAS from its own threads, so
besides the values (forward, dx, dw, db for random shapes, strides, paddings, both dtypes) the
tests check what that design could break: the same bits for 1 and 2 threads, the BLAS thread
count restored afterwards, clear errors on bad arguments, no leaks.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory import bytes_kept_after
from minicnn import backend, kernels, reference
from minicnn import functional as F

try:
    from minicnn.kernels import _cpu
except ImportError:
    _cpu = None

needs_fused = pytest.mark.skipif(not kernels.fused_conv_available(),
                                 reason="no fused conv (C extension or NumPy's OpenBLAS missing)")
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _openblas_in_numpy():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return False
    return any(i.get("internal_api") == "openblas" for i in threadpool_info())


def test_fused_conv_present_when_required():
    """CI (MINICNN_REQUIRE_C=1, NumPy's OpenBLAS wheel) must run the fused kernel, not skip it."""
    if os.environ.get("MINICNN_REQUIRE_C") != "1" or not _openblas_in_numpy():
        pytest.skip("MINICNN_REQUIRE_C not set, or NumPy does not use OpenBLAS")
    assert kernels.fused_conv_available(), "the C extension found no usable OpenBLAS"


@st.composite
def conv_problem(draw):
    """Random x, w, b, stride, padding whose window fits the padded input."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 10))
    w = draw(st.integers(max(1, kw - 2 * pw), 10))
    n, c, f = draw(st.integers(1, 20)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((f, c, kh, kw)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype) if draw(st.booleans()) else None
    return x, weight, bias, stride, (ph, pw)


@pytest.fixture(params=[False, True], ids=["blas-gemm", "own-gemm"])
def gemm(request):
    """Runs a test with the layer's float32 products on the BLAS, then on minicnn's own kernels
    (csrc/small_gemm.c; plain loops where the CPU lacks AVX-512)."""
    with kernels.use_own_sgemm(request.param):
        yield request.param


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


@needs_fused
@SETTINGS
@given(conv_problem(), st.booleans())
def test_fused_conv_equals_the_loop_reference(gemm, problem, need_dx):
    x, w, b, stride, padding = problem
    out = _cpu.conv_forward(x, w, b, stride, padding)
    ref_out, ref_cache = reference.conv2d_forward(x, w, b, stride, padding)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, ref_out, **_tol(x.dtype))
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    dx, dw, db = _cpu.conv_backward(dout, x, w, stride, padding, need_dx=need_dx)
    ref_dx, ref_dw, _ = reference.conv2d_backward(dout, ref_cache)
    np.testing.assert_allclose(dw, ref_dw, **_tol(x.dtype))
    # the reference gives no db without a bias; dL/db = sum of dout over n, oh, ow
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3), dtype=np.float64), **_tol(x.dtype))
    if need_dx:
        np.testing.assert_allclose(dx, ref_dx, **_tol(x.dtype))
    else:
        assert dx is None


@needs_fused
@pytest.mark.parametrize("x_shape, kernel, padding", [
    ((3, 2, 16, 16), 3, 1),       # L = 256: D_n transposed, then a plain product
    ((3, 2, 1, 257), 1, 0),       # L = 257: a transposed operand
    ((3, 2, 18, 18), 3, 1),       # L = 324
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_on_both_sides_of_the_transpose_threshold(x_shape, kernel, padding, dtype,
                                                                 gemm):
    """conv_tmpl.h multiplies by D_n^T in two ways, chosen by the output size L (with its own
    kernels: the nn kernel on D_n^T, or the nt dot-product kernel); the hypothesis problems
    above are all small (L <= 100)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((5, x_shape[1], kernel, kernel)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    _, cache = reference.conv2d_forward(x, w, b, 1, padding)
    dout = rng.standard_normal(_cpu.conv_forward(x, w, b, 1, padding).shape).astype(dtype)
    dx, dw, db = _cpu.conv_backward(dout, x, w, 1, padding)
    ref_dx, ref_dw, ref_db = reference.conv2d_backward(dout, cache)
    for got, want in [(dx, ref_dx), (dw, ref_dw), (db, ref_db)]:
        np.testing.assert_allclose(got, want, **_tol(dtype))


@needs_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_and_batched_routes_agree(dtype):
    """functional.conv2d gives the same gradients on both of its CPU routes."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 6, 13, 11)).astype(dtype)
    w = rng.standard_normal((8, 6, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    dout = rng.standard_normal((37, 8, 7, 11)).astype(dtype)
    results = []
    for fused in (True, False):
        with kernels.use_fused_conv(fused):
            out, cache = F.conv2d_forward(x, w, b, (2, 1), (1, 1))
            assert (cache.x_cols is None) == fused
            results.append((out.copy(), *(g.copy() for g in F.conv2d_backward(dout, cache))))
    for fused_value, batched_value in zip(*results):
        np.testing.assert_allclose(fused_value, batched_value, **_tol(dtype))


@needs_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_for_one_and_two_threads(dtype, threads, gemm):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 5, 12, 12)).astype(dtype)     # 37 images: uneven blocks
    w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    dout = rng.standard_normal((37, 7, 12, 12)).astype(dtype)
    results = []
    for n in (1, 2):
        threads(n)
        out = _cpu.conv_forward(x, w, b, 1, 1)
        results.append((out, *_cpu.conv_backward(dout, x, w, 1, 1)))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@needs_fused
def test_blas_thread_count_is_restored(threads):
    from threadpoolctl import threadpool_info
    threads(2)
    x = np.ones((4, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    out = _cpu.conv_forward(x, w, None, 1, 1)
    _cpu.conv_backward(out, x, w, 1, 1)
    blas = [i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas"]
    assert blas and all(n == 2 for n in blas)


@needs_fused
def test_blas_thread_count_survives_calls_from_several_python_threads(threads):
    """Overlapping fused calls (the GIL is released inside) must not leave the BLAS at 1 thread."""
    import threading
    from threadpoolctl import threadpool_info
    threads(2)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    errors = []

    def work():
        try:
            for _ in range(30):
                out = _cpu.conv_forward(x, w, None, 1, 1)
                _cpu.conv_backward(out, x, w, 1, 1)
                _cpu.matmul(x.reshape(16, -1), x.reshape(16, -1), trans_b=True)
        except Exception as exc:                         # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    blas = [i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas"]
    assert blas and all(n == 2 for n in blas)


@needs_fused
def test_first_layer_without_dx_gives_the_same_weight_gradients():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 3, 10, 10))
    w = rng.standard_normal((4, 3, 5, 5))
    out = _cpu.conv_forward(x, w, None, 1, 2)
    _, dw_alone, db_alone = _cpu.conv_backward(out, x, w, 1, 2, need_dx=False)
    _, dw, db = _cpu.conv_backward(out, x, w, 1, 2)
    np.testing.assert_array_equal(dw_alone, dw)
    np.testing.assert_array_equal(db_alone, db)


X = np.zeros((2, 3, 8, 8), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)
D = np.zeros((2, 4, 6, 6), np.float32)
X_ALIAS = X.copy()
WORK = np.zeros(X.size + 10 ** 5, np.float32)
X_IN_WORK = WORK[:X.size].reshape(X.shape)
BAD_CALLS = [
    (lambda: _cpu.conv_forward(X, W[:, :2], None, 1, 0), ValueError, "channels"),
    (lambda: _cpu.conv_forward(X, W.astype(np.float64), None, 1, 0), TypeError, "dtype"),
    (lambda: _cpu.conv_forward(X[0], W, None, 1, 0), ValueError, "4-D"),
    (lambda: _cpu.conv_forward(X, W, np.zeros(3, np.float32), 1, 0), ValueError, "b must"),
    (lambda: _cpu.conv_forward(X, W, None, 0, 0), ValueError, "stride"),
    (lambda: _cpu.conv_forward(X, np.zeros((4, 3, 9, 9), np.float32), None, 1, 0), ValueError,
     "larger"),
    (lambda: _cpu.conv_forward(X[:0], W, None, 1, 0), ValueError, "at least one image"),
    (lambda: _cpu.conv_forward(X, W, None, 1, 0, out=np.zeros((2, 4, 6, 5), np.float32)),
     ValueError, "out"),
    (lambda: _cpu.conv_forward(X, W, None, 1, 0, work=np.zeros(10, np.float32)), ValueError,
     "work"),
    (lambda: _cpu.conv_forward(X, W, None, 1, 0, work=[0.0] * 10 ** 6), TypeError, "work"),
    (lambda: _cpu.conv_backward(D[:, :3], X, W, 1, 0), ValueError, "dout"),
    (lambda: _cpu.conv_backward(D.astype(np.float64), X, W, 1, 0), ValueError, "dtype"),
    (lambda: _cpu.conv_backward(D, X, W, 1, 0, dx_out=np.zeros((2, 3, 8, 8))), ValueError,
     "dx_out must have shape"),
    (lambda: _cpu.conv_backward(D, X, W, 1, 0, dx_out=[0.0]), TypeError, "dx_out must be"),
    (lambda: _cpu.conv_forward(X, W, None, 1, 0, out=np.zeros((2, 4, 6, 12), np.float32)[..., ::2]),
     ValueError, "out must be C-contiguous"),
    (lambda: _cpu.conv_backward(D, X, W, 1, 0, work=np.zeros(27 * 36 - 1, np.float32)),
     ValueError, "work"),
    # the kernels would read what they have already overwritten
    (lambda: _cpu.conv_backward(D, X_ALIAS, W, 1, 0, dx_out=X_ALIAS), ValueError,
     "dx_out must not overlap x"),
    (lambda: _cpu.conv_forward(X_IN_WORK, W, None, 1, 0, work=WORK), ValueError,
     "work must not overlap x"),
    (lambda: _cpu.conv_backward(D, X, W, 1, 0, need_dx=False, dx_out=X_ALIAS), ValueError,
     "need_dx is False"),
    (lambda: _cpu.conv_work_elems((2, 3, 8, 8), (4, 2, 3, 3), 1, 0), ValueError, "channels"),
    (lambda: _cpu.conv_work_elems((2, 3, 8, 8), (4, 3, 3), 1, 0), ValueError, "w_shape"),
    (lambda: _cpu.conv_work_elems((1, 2 ** 31 - 1, 1, 1), (2 ** 31 - 1, 2 ** 31 - 1, 3, 3), 1, 1),
     ValueError, "too large"),
]


@needs_fused
@pytest.mark.parametrize("call, error, words", BAD_CALLS, ids=[str(i) for i in range(len(BAD_CALLS))])
def test_bad_arguments_raise_clear_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()


@needs_fused
def test_set_blas_takes_only_an_openblas():
    with pytest.raises(TypeError, match="OpenBLAS"):
        _cpu._set_blas(12345)


@needs_fused
def test_repeated_calls_do_not_leak():
    x = np.random.default_rng(5).standard_normal((4, 3, 12, 12)).astype(np.float32)
    w = np.ones((5, 3, 3, 3), np.float32)

    def once():
        out = _cpu.conv_forward(x, w, np.ones(5, np.float32), 2, 1)
        _cpu.conv_backward(out, x, w, 2, 1)
        with pytest.raises(ValueError):
            _cpu.conv_backward(out[:, :4], x, w, 2, 1)

    grown = bytes_kept_after(once, rounds=500)
    assert grown < 64 * 1024, f"{grown} bytes still allocated after 500 rounds"


def test_info_says_whether_the_fused_kernels_run():
    line = backend.info()["fused"]
    assert line.startswith("yes" if kernels.fused_conv_available() else "no"), line


@needs_fused
def test_environment_variable_switches_the_fused_kernels_off(python_with_env):
    code = ("import minicnn.kernels as k, minicnn.backend as b; "
            "print(k.fused_conv_available(), b.info()['fused'])")
    out = python_with_env(code, MINICNN_FUSED_CONV="0")
    assert out.startswith("False no (MINICNN_FUSED_CONV=0)"), out
