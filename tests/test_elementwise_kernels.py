"""The C extension's one-pass loops (csrc/elementwise_tmpl.h) and its threaded matmul.

ReLU and the SGD step must give the same bits as the NumPy formulas they replace (functional,
optim), for any thread count; matmul must equal NumPy's product for every transpose.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicnn import backend, kernels, nn, optim

try:
    from minicnn.kernels import _cpu
except ImportError:
    _cpu = None

needs_c = pytest.mark.skipif(_cpu is None, reason="C extension not built (pip install -e .)")
needs_blas = pytest.mark.skipif(not kernels.fused_conv_available(),
                                reason="no usable OpenBLAS for the C extension")
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def float_arrays(min_side=0):
    """Arrays of any shape (up to 4-D), both dtypes, with NaN, infinities and signed zeros."""
    return st.sampled_from([np.float32, np.float64]).flatmap(lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=1, max_dims=4, min_side=min_side, max_side=9),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)))


@needs_c
@SETTINGS
@given(float_arrays())
def test_relu_forward_has_the_bits_of_numpy_maximum(x):
    assert _cpu.relu_forward(x).tobytes() == np.maximum(x, 0).tobytes()


@needs_c
@SETTINGS
@given(float_arrays(), st.integers(0, 2 ** 16))
def test_relu_backward_passes_dout_where_out_is_positive(x, seed):
    out = np.maximum(x, 0)
    dout = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
    expected = np.where(out > 0, dout, x.dtype.type(0))
    assert _cpu.relu_backward(dout, out).tobytes() == expected.tobytes()


@needs_c
def test_relu_in_place_gives_the_same_values():
    """An elementwise kernel reads each element before writing it, so out may be x itself."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(300_001).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    out = np.maximum(x, 0)
    expected_dx = np.where(out > 0, dout, np.float32(0))
    assert _cpu.relu_forward(x, out=x) is x
    np.testing.assert_array_equal(x, out)
    assert _cpu.relu_backward(dout, out, dx=dout) is dout
    np.testing.assert_array_equal(dout, expected_dx)


@needs_c
def test_relu_same_bits_for_one_and_two_threads(threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300_001,)).astype(np.float32)      # large enough for two threads
    dout = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for n in (1, 2):
        threads(n)
        out = _cpu.relu_forward(x)
        results.append((out, _cpu.relu_backward(dout, out)))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def _train_linear_layer(kernel_choice, dtype, **hyper):
    """Three SGD steps on one Linear layer with fixed gradients; returns weight, bias, buffers."""
    rng = np.random.default_rng(0)
    layer = nn.Linear(7, 300, rng=rng, dtype=dtype)
    for p in layer.parameters().values():
        p[...] = rng.standard_normal(p.shape)
    opt = optim.SGD(layer, lr=0.05, **hyper)
    with kernels.use_kernels(kernel_choice):
        assert optim._in_c(layer.weight, layer.grads()["weight"]) == (kernel_choice == "c")
        for step in range(3):
            for name, g in layer.grads().items():
                g[...] = np.random.default_rng(step).standard_normal(g.shape)
            opt.step()
    buffers = [s.get("momentum_buffer") for s in opt.state.values()]
    return [layer.weight.copy(), layer.bias.copy()] + [b for b in buffers if b is not None]


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hyper", [
    dict(), dict(momentum=0.9), dict(momentum=0.9, weight_decay=5e-4),
    dict(momentum=0.8, dampening=0.3, weight_decay=1e-2), dict(momentum=0.9, nesterov=True),
    dict(weight_decay=0.1)], ids=str)
def test_sgd_step_in_c_has_the_bits_of_the_numpy_formula(dtype, hyper):
    in_c = _train_linear_layer("c", dtype, **hyper)
    in_numpy = _train_linear_layer("numpy", dtype, **hyper)
    assert len(in_c) == len(in_numpy)
    for a, b in zip(in_c, in_numpy):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


@needs_c
def test_sgd_step_same_bits_for_one_and_two_threads(threads):
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(500_000).astype(np.float32)
    g = rng.standard_normal(p0.shape).astype(np.float32)
    results = []
    for n in (1, 2):
        threads(n)
        p, buf = p0.copy(), np.empty_like(p0)
        _cpu.sgd_step(p, g, buf, 0.1, 0.9, 0.0, 1e-3, True, True)
        _cpu.sgd_step(p, g, buf, 0.1, 0.9, 0.0, 1e-3, True, False)
        results.append((p, buf))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


P = np.zeros((4, 5), np.float32)
Q = np.zeros(21, np.float32)
BAD_CALLS = [
    (lambda: _cpu.relu_forward([1.0, -1.0]), TypeError, "numpy.ndarray"),
    (lambda: _cpu.relu_forward(P.astype(np.int32)), TypeError, "dtype"),
    (lambda: _cpu.relu_forward(P, out=np.zeros((4, 4), np.float32)), ValueError, "out"),
    (lambda: _cpu.relu_forward(P, out=np.zeros((5, 4), np.float32).T), ValueError, "in place"),
    (lambda: _cpu.relu_backward(P, np.zeros((4, 5))), ValueError, "dtype"),
    (lambda: _cpu.sgd_step(P[:, ::2], P[:, ::2], None, 0.1, 0, 0, 0, False, False), ValueError,
     "in place"),
    (lambda: _cpu.sgd_step(P, P[:3], None, 0.1, 0, 0, 0, False, False), ValueError, "g must"),
    (lambda: _cpu.sgd_step(P, P, None, 0.1, 0.9, 0, 0, False, False), ValueError, "buffer"),
    (lambda: _cpu.sgd_step(P, P, P.astype(np.float64), 0.1, 0.9, 0, 0, False, False), ValueError,
     "buf"),
    (lambda: _cpu.sgd_step(P, P.copy(), P, 0.1, 0.9, 0, 0, False, False), ValueError,
     "buf must not overlap p"),
    (lambda: _cpu.sgd_step(P, P.copy(), None, None, 0, 0, 0, False, False), TypeError,
     "lr must be a real number"),
    (lambda: _cpu.sgd_step(P, P.copy(), None, 10 ** 400, 0, 0, 0, False, False), ValueError,
     "lr must be finite"),
    (lambda: _cpu.sgd_step(P, P.copy(), P.copy(), 0.1, float("nan"), 0, 0, False, False),
     ValueError, "momentum must be finite"),
    (lambda: _cpu.relu_forward(Q[:20], out=Q[1:21]), ValueError, "out must not overlap x"),
]


@needs_c
@pytest.mark.parametrize("call, error, words", BAD_CALLS, ids=[str(i) for i in range(len(BAD_CALLS))])
def test_bad_arguments_raise_clear_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ---------------------------------------------------------------- matmul

@needs_blas
@SETTINGS
@given(st.integers(1, 70), st.integers(0, 40), st.integers(1, 70), st.booleans(), st.booleans(),
       st.sampled_from([np.float32, np.float64]), st.integers(1, 2))
def test_matmul_equals_numpy_for_every_transpose(m, k, n, trans_a, trans_b, dtype, n_threads):
    previous = backend.get_num_threads()
    backend.set_num_threads(n_threads)
    try:
        rng = np.random.default_rng(m * 1000 + n)
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        a_arg = np.ascontiguousarray(a.T) if trans_a else a
        b_arg = np.ascontiguousarray(b.T) if trans_b else b
        got = _cpu.matmul(a_arg, b_arg, trans_a=trans_a, trans_b=trans_b)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, a @ b, **tol)
        # through the dispatcher, with transposed views as the linear layers pass them
        np.testing.assert_allclose(kernels.matmul(a_arg.T if trans_a else a,
                                                  b_arg.T if trans_b else b), a @ b, **tol)
    finally:
        backend.set_num_threads(previous)


@needs_blas
def test_matmul_same_bits_for_one_and_two_threads(threads):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 1000)).astype(np.float32)
    b = rng.standard_normal((300, 1000)).astype(np.float32)
    results = []
    for n in (1, 2):
        threads(n)
        results.append(kernels.matmul(a, b.T))
    np.testing.assert_array_equal(*results)


@needs_blas
def test_matmul_leaves_what_it_cannot_take_to_numpy():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 2))
    mixed = kernels.matmul(a, b)                                     # mixed dtypes: NumPy's rule
    assert mixed.dtype == np.float64
    np.testing.assert_array_equal(mixed, a @ b)
    ints_a, ints_b = rng.integers(-5, 5, (3, 4)), rng.integers(-5, 5, (4, 2))
    ints = kernels.matmul(ints_a, ints_b)
    assert ints.dtype == ints_a.dtype
    np.testing.assert_array_equal(ints, ints_a @ ints_b)


SQUARE = np.ones((4, 4))


@needs_blas
@pytest.mark.parametrize("call, error, words", [
    (lambda: _cpu.matmul(np.ones((3, 4)), np.ones((5, 2))), ValueError, "inner sizes"),
    (lambda: _cpu.matmul(np.ones((3, 4)), np.ones((4, 2), np.float32)), TypeError, "dtype"),
    (lambda: _cpu.matmul(np.ones(3), np.ones((3, 2))), ValueError, "2-D"),
    (lambda: _cpu.matmul(np.ones((3, 4)), np.ones((4, 2)), out=np.ones((2, 3))), ValueError, "out"),
    (lambda: _cpu.matmul(SQUARE, SQUARE.copy(), out=SQUARE), ValueError, "out must not overlap a"),
])
def test_matmul_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ---------------------------------------------------------------- batch normalization

def _batchnorm_both_ways(shape, dtype, training, seed=0):
    """forward + backward of batchnorm (2d or 1d by the shape) with the C and NumPy kernels."""
    from minicnn import functional as F
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (3 * rng.standard_normal(shape) + 1).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    forward = F.batchnorm2d_forward if len(shape) == 4 else F.batchnorm1d_forward
    backward = F.batchnorm2d_backward if len(shape) == 4 else F.batchnorm1d_backward
    running_start = [rng.random(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)]
    results = []
    for choice in ("c", "numpy"):
        running = [r.copy() for r in running_start]              # updated in place (training)
        with kernels.use_kernels(choice):
            out, cache = forward(x, gamma, beta, *running, training=training)
            grads = backward(dout, cache)
        results.append((out.copy(), *(g.copy() for g in grads), running))
    return results


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(16, 5, 7, 9), (33, 12)], ids=["2d", "1d"])
def test_batchnorm_in_c_equals_the_numpy_formulas(shape, dtype, training):
    (c_out, c_dx, c_dg, c_db, c_running), (n_out, n_dx, n_dg, n_db, n_running) = \
        _batchnorm_both_ways(shape, dtype, training)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for got, want in [(c_out, n_out), (c_dx, n_dx), (c_dg, n_dg), (c_db, n_db),
                      *zip(c_running, n_running)]:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


@needs_c
def test_batchnorm_takes_byte_swapped_vectors_as_it_takes_a_byte_swapped_x():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    mean, inv_std = rng.standard_normal(3).astype(np.float32), np.ones(3, np.float32)
    swapped = mean.byteswap().view(mean.dtype.newbyteorder())
    expected = _cpu.batchnorm_apply(x, mean, inv_std, mean, mean)
    for got, want in zip(_cpu.batchnorm_apply(x, swapped, inv_std, swapped, swapped), expected):
        np.testing.assert_array_equal(got, want)


@needs_c
def test_channel_stats_are_accurate_for_a_large_mean():
    """Two passes in double: the variance survives a mean 1e4 times the spread."""
    x = (1e4 + np.random.default_rng(0).standard_normal((64, 3, 10, 10))).astype(np.float32)
    mean, var = _cpu.channel_stats(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2, 3)), rtol=1e-6)


@needs_c
def test_batchnorm_same_bits_for_one_and_two_threads(threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 16, 12, 12)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    results = []
    for n in (1, 2):
        threads(n)
        mean, var = _cpu.channel_stats(x)
        inv_std = (1 / np.sqrt(var + 1e-5)).astype(np.float32)
        xhat, out = _cpu.batchnorm_apply(x, mean, inv_std, gamma, beta)
        results.append((mean, var, xhat, out, *_cpu.batchnorm_backward(dout, xhat, gamma, inv_std, True)))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


BN_X, BN_OUT = np.ones((2, 3, 4)), np.empty((2, 3, 4))


@needs_c
@pytest.mark.parametrize("call, error, words", [
    (lambda: _cpu.channel_stats(np.ones(5, np.float32)), ValueError, "N, C"),
    (lambda: _cpu.channel_stats(np.ones((0, 3), np.float32)), ValueError, "no values"),
    (lambda: _cpu.batchnorm_apply(np.ones((2, 3, 4)), np.ones(2), np.ones(3), np.ones(3), np.ones(3)),
     ValueError, "mean"),
    (lambda: _cpu.batchnorm_apply(np.ones((2, 3, 4)), np.ones(3, np.float32), np.ones(3), np.ones(3),
                                  np.ones(3)), ValueError, "dtype"),
    (lambda: _cpu.batchnorm_backward(np.ones((2, 3, 4)), np.ones((2, 3, 5)), np.ones(3), np.ones(3), True),
     ValueError, "xhat"),
    (lambda: _cpu.batchnorm_apply(BN_X, np.ones(3), np.ones(3), np.ones(3), np.ones(3), xhat=BN_OUT,
                                  out=BN_OUT), ValueError, "out must not overlap xhat"),
])
def test_batchnorm_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()
