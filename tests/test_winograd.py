"""Winograd F(2x2, 3x3): the NumPy version (minicnn/functional/winograd.py) and the C kernels
(csrc/winograd_tmpl.h) against the loop reference, over random shapes, paddings and dtypes;
functional.conv2d's choice of route; the same bits on 1 and 2 threads; clear errors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory import bytes_kept_after
from minicnn import backend, kernels, nn, reference
from minicnn import functional as F
from minicnn.functional import winograd
from minicnn.gradcheck import check_module

try:
    from minicnn.kernels import _cpu
except ImportError:
    _cpu = None

needs_fused = pytest.mark.skipif(not kernels.fused_conv_available(),
                                 reason="no fused conv (C extension or NumPy's OpenBLAS missing)")
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def winograd_problem(draw):
    """Random x, w (3x3), b, padding: odd and even output sizes, paddings 0..2, tiny planes."""
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 3 - 2 * ph), 11))
    w = draw(st.integers(max(1, 3 - 2 * pw), 11))
    n, c, f = draw(st.integers(1, 19)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((f, c, 3, 3)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype) if draw(st.booleans()) else None
    return x, weight, bias, (ph, pw)


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


def _check_against_reference(x, w, b, padding, out, dout, dx, dw, db):
    ref_out, ref_cache = reference.conv2d_forward(x, w, b, 1, padding)
    np.testing.assert_allclose(out, ref_out, **_tol(x.dtype), err_msg="forward")
    ref_dx, ref_dw, _ = reference.conv2d_backward(dout, ref_cache)
    np.testing.assert_allclose(dw, ref_dw, **_tol(x.dtype), err_msg="dw")
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3), dtype=np.float64), **_tol(x.dtype),
                               err_msg="db")
    if dx is not None:
        np.testing.assert_allclose(dx, ref_dx, **_tol(x.dtype), err_msg="dx")


@SETTINGS
@given(winograd_problem())
def test_numpy_winograd_equals_the_loop_reference(problem):
    x, w, b, padding = problem
    out = winograd.conv2d_winograd(x, w, b, padding)
    assert out.dtype == x.dtype
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    dx, dw, db = winograd.conv2d_winograd_backward(dout, x, w, padding)
    _check_against_reference(x, w, b, padding, out, dout, dx, dw, db)


@needs_fused
@SETTINGS
@given(winograd_problem(), st.booleans())
def test_c_winograd_equals_the_loop_reference(problem, need_dx):
    x, w, b, padding = problem
    u = winograd.filter_transform(w)
    out = _cpu.winograd_forward(x, u, b, padding)
    assert out.dtype == x.dtype
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    dx, du, db = _cpu.winograd_backward(dout, x, u, padding, need_dx=need_dx)
    assert (dx is None) == (not need_dx)
    dw = winograd.filter_transform_adjoint(du)
    _check_against_reference(x, w, b, padding, out, dout, dx, dw, db)


def test_filter_transform_adjoint_is_its_transpose():
    """<T(w), du> = <w, T*(du)>: what makes dw = T*(dL/dU) the gradient."""
    rng = np.random.default_rng(7)
    w, du = rng.standard_normal((5, 4, 3, 3)), rng.standard_normal((16, 5, 4))
    lhs = np.vdot(winograd.filter_transform(w), du)
    rhs = np.vdot(w, winograd.filter_transform_adjoint(du))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


@needs_fused
def test_route_choice():
    assert kernels.winograd_wanted((8, 16, 10, 10), (16, 16, 3, 3), (1, 1))
    assert not kernels.winograd_wanted((8, 3, 10, 10), (16, 3, 3, 3), (1, 1))     # few channels
    assert not kernels.winograd_wanted((8, 16, 10, 10), (8, 16, 3, 3), (1, 1))    # few filters
    assert not kernels.winograd_wanted((8, 16, 10, 10), (16, 16, 5, 5), (1, 1))   # 5x5
    assert not kernels.winograd_wanted((8, 16, 10, 10), (16, 16, 3, 3), (2, 2))   # stride 2
    with kernels.use_winograd(False):
        assert not kernels.winograd_wanted((8, 16, 10, 10), (16, 16, 3, 3), (1, 1))


def test_info_says_whether_winograd_runs():
    line = backend.info()["winograd"]
    assert line.startswith("yes" if kernels.winograd_enabled() else "no"), line
    with kernels.use_winograd(False):
        assert backend.info()["winograd"].startswith("no"), backend.info()["winograd"]


@needs_fused
def test_environment_variable_switches_winograd_off(python_with_env):
    code = ("import minicnn.kernels as k, minicnn.backend as b; "
            "print(k.winograd_wanted((8, 16, 9, 9), (16, 16, 3, 3), (1, 1)), b.info()['winograd'])")
    out = python_with_env(code, MINICNN_WINOGRAD="0")
    assert out.startswith("False no (MINICNN_WINOGRAD=0"), out


@needs_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv2d_takes_winograd_and_agrees_with_the_direct_route(dtype, need_dx):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 16, 11, 7)).astype(dtype)
    w = rng.standard_normal((17, 16, 3, 3)).astype(dtype) / 12
    b = rng.standard_normal(17).astype(dtype)
    dout = rng.standard_normal((9, 17, 11, 7)).astype(dtype)
    results = []
    for on in (True, False):
        with kernels.use_winograd(on):
            assert kernels.winograd_wanted(x.shape, w.shape, (1, 1)) == on
            out, cache = F.conv2d_forward(x, w, b, 1, 1)
            grads = F.conv2d_backward(dout, cache, need_dx=need_dx)
            results.append((out.copy(), *(None if g is None else g.copy() for g in grads)))
    for name, wino, direct in zip(("out", "dx", "dw", "db"), *results):
        if direct is None:
            assert wino is None
        else:
            np.testing.assert_allclose(wino, direct, **_tol(dtype), err_msg=name)


@needs_fused
def test_gradcheck_through_a_layer_on_the_winograd_route():
    """nn.Conv2D with 16 channels takes the Winograd route; its float64 gradients must pass the
    numerical check as tightly as the direct route's."""
    conv = nn.Conv2D(16, 16, 3, padding=1, rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 16, 6, 5))
    assert kernels.winograd_wanted(x.shape, conv.weight.shape, (1, 1))
    errors = check_module(conv, x, verbose=False)
    assert set(errors) == {"x", "weight", "bias"}
    assert max(errors.values()) < 1e-7, errors


@needs_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_for_one_and_two_threads(dtype, threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 5, 12, 9)).astype(dtype)      # 37 images: uneven blocks
    u = winograd.filter_transform(rng.standard_normal((7, 5, 3, 3)).astype(dtype))
    b = rng.standard_normal(7).astype(dtype)
    dout = rng.standard_normal((37, 7, 12, 9)).astype(dtype)
    results = []
    for n in (1, 2):
        threads(n)
        out = _cpu.winograd_forward(x, u, b, 1)
        results.append((out, *_cpu.winograd_backward(dout, x, u, 1)))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


X = np.zeros((2, 3, 8, 8), np.float32)
U = np.zeros((16, 4, 3), np.float32)
D = np.zeros((2, 4, 6, 6), np.float32)
X_ALIAS = X.copy()
WORK = np.zeros(D.size + 10 ** 5, np.float32)
OUT_IN_WORK = WORK[:D.size].reshape(D.shape)
BAD_CALLS = [
    (lambda: _cpu.winograd_forward(X, U[:, :, :2], None, 0), ValueError, "u must"),
    (lambda: _cpu.winograd_forward(X, U[:9], None, 0), ValueError, "u must"),
    (lambda: _cpu.winograd_forward(X, U.astype(np.float64), None, 0), TypeError, "dtype"),
    (lambda: _cpu.winograd_forward(X[0], U, None, 0), ValueError, "4-D"),
    (lambda: _cpu.winograd_forward(X, U, np.zeros(3, np.float32), 0), ValueError, "b must"),
    (lambda: _cpu.winograd_forward(X, U, None, -1), ValueError, "padding"),
    (lambda: _cpu.winograd_forward(X[:, :, :1, :1], U, None, 0), ValueError, "larger"),
    (lambda: _cpu.winograd_forward(X, U, None, 0, out=np.zeros((2, 4, 6, 5), np.float32)),
     ValueError, "out"),
    (lambda: _cpu.winograd_forward(X, U, None, 0, work=np.zeros(10, np.float32)), ValueError,
     "work"),
    (lambda: _cpu.winograd_backward(D[:, :3], X, U, 0), ValueError, "dout"),
    (lambda: _cpu.winograd_backward(D.astype(np.float64), X, U, 0), ValueError, "dtype"),
    (lambda: _cpu.winograd_backward(D, X, U, 0, dx_out=np.zeros((2, 3, 8, 8))), ValueError,
     "dx_out must have shape"),
    (lambda: _cpu.winograd_work_elems((2, 3, 8), 4, 0), ValueError, "x_shape"),
    (lambda: _cpu.winograd_work_elems((1, 1, 1, 1), 2 ** 31 - 1, 2 ** 27), ValueError, "too large"),
    (lambda: _cpu.winograd_backward(D, X_ALIAS, U, 0, dx_out=X_ALIAS), ValueError,
     "dx_out must not overlap x"),
    (lambda: _cpu.winograd_forward(X, U, None, 0, out=OUT_IN_WORK, work=WORK), ValueError,
     "work must not overlap out"),
]


@needs_fused
@pytest.mark.parametrize("call, error, words", BAD_CALLS, ids=[str(i) for i in range(len(BAD_CALLS))])
def test_bad_arguments_raise_clear_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()


@needs_fused
def test_repeated_calls_do_not_leak():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    u = winograd.filter_transform(np.ones((5, 3, 3, 3), np.float32))

    def once():
        out = _cpu.winograd_forward(x, u, np.ones(5, np.float32), 1)
        _cpu.winograd_backward(out, x, u, 1)
        with pytest.raises(ValueError):
            _cpu.winograd_backward(out[:, :4], x, u, 1)

    grown = bytes_kept_after(once, rounds=500)
    assert grown < 64 * 1024, f"{grown} bytes still allocated after 500 rounds"
