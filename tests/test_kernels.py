"""The C kernels (minicnn.kernels._cpu) against the NumPy kernels, the oracle for layouts.

Exact equality for im2col and max-pool forward; tight tolerances where the two sum in a different
order (col2im, avg-pool, overlapping max-pool backward).  Same bits for 1 and 2 threads, clear
errors on bad arguments, no leaks.  Skips without the extension unless MINICNN_REQUIRE_C=1 (CI).
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory import bytes_kept_after
from minicnn import backend, kernels
from minicnn.kernels import _numpy

try:
    from minicnn.kernels import _cpu
except ImportError:
    _cpu = None

needs_c = pytest.mark.skipif(_cpu is None, reason="C extension not built (pip install -e .)")
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = [np.float32, np.float64]


def test_c_extension_present_when_required():
    """CI sets MINICNN_REQUIRE_C=1 so the kernel tests cannot silently run on the fallback."""
    if os.environ.get("MINICNN_REQUIRE_C") == "1":
        assert _cpu is not None, "MINICNN_REQUIRE_C=1 but minicnn.kernels._cpu did not import"
        assert kernels.c_extension_available()
    else:
        pytest.skip("MINICNN_REQUIRE_C not set")


@st.composite
def window_problem(draw, pool=False):
    """A random (x shape, kernel, stride, padding) whose window fits the padded input."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if pool:  # PyTorch's rule: padding at most half the kernel
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    else:
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, kh - 2 * ph), 12))
    w = draw(st.integers(max(1, kw - 2 * pw), 12))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2 ** 16))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), dtype, seed


def _x(shape, dtype, seed, ties=False):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many ties, so the tie rule is exercised
        return rng.integers(-2, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _out_hw(shape, k, s, p):
    return tuple((shape[2 + d] + 2 * p[d] - k[d]) // s[d] + 1 for d in (0, 1))


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- equality with NumPy

@needs_c
@SETTINGS
@given(window_problem())
def test_im2col_equals_numpy_exactly(problem):
    shape, k, s, p, dtype, seed = problem
    x = _x(shape, dtype, seed)
    cols = _cpu.im2col(x, k, s, p)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, _numpy.im2col(x, k, s, p))


@needs_c
@SETTINGS
@given(window_problem())
def test_col2im_equals_numpy(problem):
    shape, k, s, p, dtype, seed = problem
    oh, ow = _out_hw(shape, k, s, p)
    cols = _x((shape[0], shape[1] * k[0] * k[1], oh * ow), dtype, seed)
    dx = _cpu.col2im(cols, shape, k, s, p)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(dx, _numpy.col2im(cols, shape, k, s, p), **_tol(dtype))


@needs_c
@SETTINGS
@given(window_problem(pool=True), st.booleans())
def test_maxpool_forward_equals_numpy_exactly(problem, ties):
    shape, k, s, p, dtype, seed = problem
    x = _x(shape, dtype, seed, ties)
    out, argmax = _cpu.maxpool_forward(x, k, s, p)
    out_np, argmax_np = _numpy.maxpool_forward(x, k, s, p)
    assert out.dtype == dtype and argmax.dtype == np.int32
    np.testing.assert_array_equal(out, out_np)
    np.testing.assert_array_equal(argmax, argmax_np)


@needs_c
@SETTINGS
@given(window_problem(pool=True), st.booleans())
def test_maxpool_backward_equals_numpy(problem, ties):
    shape, k, s, p, dtype, seed = problem
    x = _x(shape, dtype, seed, ties)
    _, argmax = _numpy.maxpool_forward(x, k, s, p)
    dout = _x(argmax.shape, dtype, seed + 1)
    dx = _cpu.maxpool_backward(dout, argmax, shape)
    expected = _numpy.maxpool_backward(dout, argmax, shape)
    if s[0] >= k[0] and s[1] >= k[1]:  # windows do not overlap: one term per cell, exact
        np.testing.assert_array_equal(dx, expected)
    else:
        np.testing.assert_allclose(dx, expected, **_tol(dtype))


@needs_c
@SETTINGS
@given(window_problem())
def test_avgpool_forward_and_backward_equal_numpy(problem):
    shape, k, s, p, dtype, seed = problem
    x = _x(shape, dtype, seed)
    out = _cpu.avgpool_forward(x, k, s, p)
    np.testing.assert_allclose(out, _numpy.avgpool_forward(x, k, s, p), **_tol(dtype))
    dout = _x(out.shape, dtype, seed + 1)
    dx = _cpu.avgpool_backward(dout, shape, k, s, p)
    np.testing.assert_allclose(dx, _numpy.avgpool_backward(dout, shape, k, s, p), **_tol(dtype))
    assert out.dtype == dx.dtype == dtype


@needs_c
@SETTINGS
@given(window_problem(), st.integers(0, 2))
def test_im2col_into_a_k_major_view_and_col2im_from_it(problem, margin):
    """functional.conv keeps the columns as one (K, N, L) buffer; the kernels write and read
    its (N, K, L) transposed view in place, leaving the rest of the buffer alone."""
    shape, k, s, p, dtype, seed = problem
    x = _x(shape, dtype, seed)
    expected = _numpy.im2col(x, k, s, p)
    n, rows, length = expected.shape
    for impl in (_cpu, _numpy):
        buf = np.full((rows, n + 2 * margin, length), 7, dtype)
        view = buf[:, margin:margin + n].transpose(1, 0, 2)
        assert impl.im2col(x, k, s, p, out=view) is view
        np.testing.assert_array_equal(view, expected)
        assert (buf[:, :margin] == 7).all() and (buf[:, margin + n:] == 7).all()
    np.testing.assert_allclose(_cpu.col2im(view, shape, k, s, p),
                               _numpy.col2im(expected, shape, k, s, p), **_tol(dtype))


@needs_c
def test_im2col_refuses_an_out_whose_rows_overlap():
    x = np.zeros((2, 1, 4, 4), np.float32)
    base = np.zeros(64, np.float32)
    overlapping = np.lib.stride_tricks.as_strided(base, (2, 4, 9), (4, 4, 4))
    with pytest.raises(ValueError, match="non-overlapping"):
        _cpu.im2col(x, (2, 2), (1, 1), (0, 0), out=overlapping)
    with pytest.raises(ValueError, match="out"):
        _cpu.im2col(x, (2, 2), (1, 1), (0, 0), out=np.zeros((2, 4, 9), np.float32)[:, :, ::-1])


@needs_c
def test_every_small_window_geometry_matches_numpy_and_stays_in_bounds():
    """All H, W <= 4, kernels <= 4, strides <= 2, paddings <= 2: windows lying wholly in the
    padding included.  Guard cells around the output catch any write outside it."""
    import itertools
    rng = np.random.default_rng(5)
    for h, w, kh, kw, sh, sw, ph, pw in itertools.product(range(1, 5), range(1, 5), range(1, 5),
                                                          range(1, 5), (1, 2), (1, 2), range(3),
                                                          range(3)):
        if kh > h + 2 * ph or kw > w + 2 * pw:
            continue
        k, s, p = (kh, kw), (sh, sw), (ph, pw)
        x = rng.standard_normal((2, 2, h, w)).astype(np.float32)
        expected = _numpy.im2col(x, k, s, p)
        guarded = np.full(expected.size + 8, 7, np.float32)
        cols = guarded[4:-4].reshape(expected.shape)
        _cpu.im2col(x, k, s, p, out=cols)
        where = f"h={h} w={w} k={k} s={s} p={p}"
        np.testing.assert_array_equal(cols, expected, err_msg=where)
        assert (guarded[:4] == 7).all() and (guarded[-4:] == 7).all(), where
        np.testing.assert_allclose(_cpu.col2im(cols, x.shape, k, s, p),
                                   _numpy.col2im(expected, x.shape, k, s, p), atol=1e-5,
                                   err_msg=where)
        if ph <= kh // 2 and pw <= kw // 2:
            out, argmax = _cpu.maxpool_forward(x, k, s, p)
            out_np, argmax_np = _numpy.maxpool_forward(x, k, s, p)
            np.testing.assert_array_equal(out, out_np, err_msg=where)
            np.testing.assert_array_equal(argmax, argmax_np, err_msg=where)
        avg = _cpu.avgpool_forward(x, k, s, p)
        np.testing.assert_allclose(avg, _numpy.avgpool_forward(x, k, s, p), atol=1e-6,
                                   err_msg=where)
        np.testing.assert_allclose(_cpu.avgpool_backward(avg, x.shape, k, s, p),
                                   _numpy.avgpool_backward(avg, x.shape, k, s, p), atol=1e-6,
                                   err_msg=where)


@needs_c
def test_maxpool_nan_wins_like_numpy_argmax():
    x = np.array([[[[1.0, np.nan, 3.0, np.nan]]]], dtype=np.float32)
    out, argmax = _cpu.maxpool_forward(x, (1, 4), (1, 1), (0, 0))
    assert np.isnan(out[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1


@needs_c
def test_maxpool_padded_cells_never_win():
    x = -np.ones((1, 1, 3, 3), np.float64) * 5.0
    _, argmax = _cpu.maxpool_forward(x, (3, 3), (1, 1), (1, 1))
    assert argmax.min() >= 0 and argmax.max() < 9


# ---------------------------------------------------------------- determinism, threads

@needs_c
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_one_and_two_threads(dtype, threads):
    # Large enough that the kernels really use 2 threads; overlapping windows for the sums.
    x = _x((4, 16, 33, 31), dtype, 3)
    k, s, p = (3, 3), (1, 2), (1, 1)
    results = []
    for n in (1, 2):
        threads(n)
        cols = _cpu.im2col(x, k, s, p)
        out, argmax = _cpu.maxpool_forward(x, k, s, p)
        results.append([cols, _cpu.col2im(cols, x.shape, k, s, p), out, argmax,
                        _cpu.maxpool_backward(out, argmax, x.shape),
                        _cpu.avgpool_forward(x, k, s, p),
                        _cpu.avgpool_backward(out, x.shape, k, s, p)])
    for one, two in zip(*results):
        assert one.tobytes() == two.tobytes()


@needs_c
def test_openmp_flag_is_a_bool():
    assert isinstance(_cpu.openmp_enabled(), bool)
    assert kernels.openmp_enabled() == _cpu.openmp_enabled()


# ---------------------------------------------------------------- bad arguments: errors, not crashes

@needs_c
def test_non_contiguous_and_byteswapped_input_is_accepted():
    x = _x((2, 3, 10, 12), np.float64, 0)
    view = x[:, :, ::2, 1::2]
    np.testing.assert_array_equal(_cpu.im2col(view, (2, 2), (1, 1), (0, 0)),
                                  _numpy.im2col(np.ascontiguousarray(view), (2, 2), (1, 1), (0, 0)))
    swapped = x.astype(x.dtype.newbyteorder(">"))
    np.testing.assert_array_equal(_cpu.maxpool_forward(swapped, (2, 2), (2, 2), (0, 0))[0],
                                  _numpy.maxpool_forward(x, (2, 2), (2, 2), (0, 0))[0])


X = np.zeros((2, 3, 8, 8), np.float32)
COLS = np.zeros((2, 3, 64), np.float32)
BAD_CALLS = [
    ("im2col", lambda: _cpu.im2col([[1.0]], (2, 2), (1, 1), (0, 0)), TypeError, "x"),
    ("im2col", lambda: _cpu.im2col(X.astype(np.int64), (2, 2), (1, 1), (0, 0)), TypeError, "dtype"),
    ("im2col", lambda: _cpu.im2col(X[0], (2, 2), (1, 1), (0, 0)), ValueError, "4-D"),
    ("im2col", lambda: _cpu.im2col(X, (9, 9), (1, 1), (0, 0)), ValueError, "larger"),
    ("im2col", lambda: _cpu.im2col(X, (2, 2), (0, 1), (0, 0)), ValueError, "stride"),
    ("im2col", lambda: _cpu.im2col(X, (2, 2), (1, 1), (-1, 0)), ValueError, "padding"),
    ("im2col", lambda: _cpu.im2col(X, (-3, 2), (1, 1), (0, 0)), ValueError, "kernel_size"),
    ("im2col", lambda: _cpu.im2col(X, (2, 2), (1, 1), (2 ** 40, 0)), ValueError, "padding"),
    ("im2col", lambda: _cpu.im2col(X, "2", (1, 1), (0, 0)), TypeError, "kernel_size"),
    ("im2col", lambda: _cpu.im2col(X, (2, 2), (1, 1), (0, 0), out=np.zeros((2, 12, 48), np.float32)),
     ValueError, "out"),
    ("col2im", lambda: _cpu.col2im(np.zeros((2, 12, 50), np.float32), X.shape, (2, 2), (1, 1), (0, 0)),
     ValueError, "cols"),
    ("col2im", lambda: _cpu.col2im(np.zeros((2, 12, 49), np.float32), (2, 3, 8), (2, 2), (1, 1), (0, 0)),
     ValueError, "x_shape"),
    ("col2im", lambda: _cpu.col2im(np.zeros((2, 12, 49), np.float32), (2, 3, -8, 8), (2, 2), (1, 1),
                                   (0, 0)), ValueError, "x_shape"),
    ("col2im", lambda: _cpu.col2im(np.zeros((2, 12, 49), np.float32),
                                   (2 ** 30, 2 ** 30, 2 ** 30, 8), (2, 2), (1, 1), (0, 0)),
     ValueError, "too large"),
    ("maxpool_forward", lambda: _cpu.maxpool_forward(X, (2, 2), (2, 2), (2, 0)), ValueError, "padding"),
    ("maxpool_backward", lambda: _cpu.maxpool_backward(np.zeros((2, 3, 4, 4), np.float32),
                                                       np.full((2, 3, 4, 4), 64, np.int32), X.shape),
     ValueError, "outside"),
    ("maxpool_backward", lambda: _cpu.maxpool_backward(np.zeros((2, 3, 4, 4), np.float32),
                                                       np.full((2, 3, 4, 4), -1, np.int32), X.shape),
     ValueError, "outside"),
    ("maxpool_backward", lambda: _cpu.maxpool_backward(np.zeros((2, 3, 4, 4), np.float32),
                                                       np.zeros((2, 3, 4, 4), np.int64), X.shape),
     TypeError, "int32"),
    ("maxpool_backward", lambda: _cpu.maxpool_backward(np.zeros((2, 3, 4, 4), np.float32),
                                                       np.zeros((2, 3, 4, 5), np.int32), X.shape),
     ValueError, "argmax.shape"),
    ("maxpool_backward", lambda: _cpu.maxpool_backward(np.zeros((2, 3, 4, 4), np.float32),
                                                       np.zeros((2, 3, 4, 4), np.int32), (2, 4, 8, 8)),
     ValueError, "x_shape"),
    ("avgpool_backward", lambda: _cpu.avgpool_backward(np.zeros((2, 3, 4, 5), np.float32), X.shape,
                                                       (2, 2), (2, 2), (0, 0)), ValueError, "dout"),
    ("avgpool_backward", lambda: _cpu.avgpool_backward(np.zeros((2, 3, 4, 4), np.float32), 5,
                                                       (2, 2), (2, 2), (0, 0)), TypeError, "x_shape"),
    ("col2im", lambda: _cpu.col2im(np.zeros((2, 12, 49), np.float32), None, (2, 2), (1, 1), (0, 0)),
     TypeError, "x_shape must be a tuple"),
    ("im2col", lambda: _cpu.im2col(X, (2, 2), (2 ** 64, 1), (0, 0)), ValueError,
     r"stride must be in \[1, "),
    # the kernel would read what it has already overwritten
    ("im2col", lambda: _cpu.im2col(X, (1, 1), (1, 1), (0, 0), out=X.reshape(2, 3, 64)), ValueError,
     "out must not overlap x"),
    ("col2im", lambda: _cpu.col2im(COLS, X.shape, (1, 1), (1, 1), (0, 0), out=COLS.reshape(X.shape)),
     ValueError, "out must not overlap cols"),
]


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_beside_the_input_in_one_buffer_is_accepted(dtype):
    """The overlap check looks at the bytes: an out= next to x in the same buffer is fine."""
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(dtype)
    cols_size, dx_size = 2 * 27 * 36, x.size
    buf = np.zeros(x.size + cols_size + dx_size, dtype)
    x_in = buf[:x.size].reshape(x.shape)
    x_in[...] = x
    cols = _cpu.im2col(x_in, (3, 3), (1, 1), (1, 1),
                       out=buf[x.size:x.size + cols_size].reshape(2, 27, 36))
    np.testing.assert_array_equal(cols, _numpy.im2col(x, (3, 3), (1, 1), (1, 1)))
    dx = _cpu.col2im(cols, x.shape, (3, 3), (1, 1), (1, 1),
                     out=buf[x.size + cols_size:].reshape(x.shape))
    np.testing.assert_allclose(dx, _numpy.col2im(cols.copy(), x.shape, (3, 3), (1, 1), (1, 1)),
                               rtol=1e-6)


@needs_c
def test_im2col_of_no_images_into_an_empty_out():
    out = np.empty((0, 27, 16), np.float32)      # NumPy gives it strides (0, 0, 0)
    assert _cpu.im2col(np.zeros((0, 3, 4, 4), np.float32), 3, 1, 1, out=out) is out


@needs_c
@pytest.mark.parametrize("name, call, error, words", BAD_CALLS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_clear_errors(name, call, error, words):
    with pytest.raises(error, match=words):
        call()


# ---------------------------------------------------------------- the benchmark's stream kernels

@needs_c
@pytest.mark.parametrize("nthreads", [1, 2, 3])
@given(n=st.integers(0, 5000), seed=st.integers(0, 2 ** 16))
@settings(max_examples=40, deadline=None)
def test_stream_kernels_store_every_word_and_load_every_word(nthreads, n, seed):
    # Sizes that 2 and 3 threads do not divide: each part must start where the last one ended.
    previous = backend.get_num_threads()
    backend.set_num_threads(nthreads)
    try:
        guarded = np.zeros(n + 2, np.uint32)            # a word either side must stay untouched
        _cpu.stream_store(guarded[1:-1])
        assert guarded[0] == 0 and guarded[-1] == 0
        assert np.all(guarded[1:-1] == np.float32(1.0).view(np.uint32))
        words = np.random.default_rng(seed).integers(0, 2 ** 32, size=n, dtype=np.uint32)
        assert _cpu.stream_load(words) == int(np.bitwise_xor.reduce(words, initial=0))
    finally:
        backend.set_num_threads(previous)


@needs_c
@pytest.mark.parametrize("call, error, words", [
    (lambda: _cpu.stream_store(np.zeros(8, np.float32)), TypeError, "dst must be uint32"),
    (lambda: _cpu.stream_store(np.zeros(8, np.uint32)[::2]), ValueError, "dst must be C-contig"),
    (lambda: _cpu.stream_load(np.zeros((3, 4), np.uint32, order="F")), ValueError,
     r"src must be C-contiguous and aligned \(src.shape=\(3, 4\)"),
    (lambda: _cpu.stream_load([1, 2, 3]), TypeError, "src must be a numpy.ndarray"),
    (lambda: _cpu.stream_load(np.zeros(8, np.int64)), TypeError, "got dtype int64"),
])
def test_stream_kernels_refuse_what_they_cannot_stream(call, error, words):
    with pytest.raises(error, match=words):
        call()


@needs_c
def test_stream_store_refuses_a_read_only_array():
    dst = np.zeros(8, np.uint32)
    dst.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _cpu.stream_store(dst)
    assert _cpu.stream_load(dst) == 0                   # loading from it is fine


# ---------------------------------------------------------------- leaks

@needs_c
def test_repeated_calls_do_not_leak():
    x = _x((2, 4, 16, 16), np.float32, 0)
    k, s, p = (3, 3), (2, 2), (1, 1)

    def once():
        cols = _cpu.im2col(x, k, s, p)
        _cpu.col2im(cols, x.shape, k, s, p)
        out, argmax = _cpu.maxpool_forward(x, k, s, p)
        _cpu.maxpool_backward(out, argmax, x.shape)
        _cpu.avgpool_backward(_cpu.avgpool_forward(x, k, s, p), x.shape, k, s, p)
        with pytest.raises(ValueError):
            _cpu.maxpool_backward(out, argmax + 10_000, x.shape)

    grown = bytes_kept_after(once, rounds=500)
    assert grown < 64 * 1024, f"{grown} bytes still allocated after 500 rounds"


@needs_c
def test_large_results_start_on_a_huge_page_and_hold_the_right_values():
    # Results of 4 MiB or more are views into a longer buffer, starting on a huge-page boundary
    x = _x((8, 16, 64, 64), np.float64, 4)                     # 4 MiB, as is every dx below
    k, s, p = (3, 3), (2, 2), (1, 1)
    dout = _x((8, 16, 32, 32), np.float64, 5)
    results = {"im2col": (_cpu.im2col(x, k, s, p), _numpy.im2col(x, k, s, p)),
               "avgpool_backward": (_cpu.avgpool_backward(dout, x.shape, k, s, p),
                                    _numpy.avgpool_backward(dout, x.shape, k, s, p))}
    out, argmax = _cpu.maxpool_forward(x, k, s, p)
    results["maxpool_backward"] = (_cpu.maxpool_backward(dout, argmax, x.shape),
                                   _numpy.maxpool_backward(dout, argmax, x.shape))
    huge = _cpu._huge_page_bytes()
    for name, (got, want) in results.items():
        assert got.nbytes >= 4 << 20, name
        assert got.flags.c_contiguous and got.flags.writeable and got.flags.aligned, name
        if huge:
            assert got.ctypes.data % huge == 0, f"{name} starts mid huge page"
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=name)
    cols = results.pop("im2col")[0]
    del results
    cols[...] = 1.0                 # the memory is still owned (by cols.base), and writable
    assert cols.sum() == cols.size


@needs_c
def test_large_results_are_freed():
    x = _x((4, 16, 32, 32), np.float64, 6)                     # cols: 4.5 MiB

    def once():
        _cpu.im2col(x, (3, 3), (1, 1), (1, 1))

    grown = bytes_kept_after(once, rounds=40, warmup=5)
    assert grown < 64 * 1024, f"{grown} bytes still allocated after 40 rounds"


# ---------------------------------------------------------------- conv2d's reused buffers

@pytest.fixture
def batched_conv():
    """conv2d on its batched NumPy-GEMM route (the fused C kernel switched off)."""
    with kernels.use_fused_conv(False):
        yield


def test_conv_forward_never_overwrites_a_cache_still_held(batched_conv):
    """conv2d recycles its large column buffers only once nobody references them."""
    from minicnn import functional as F
    from minicnn.functional import _workspace
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((8, 16, 34, 34), dtype=np.float32)   # cols: 8*144*1156*4 = 5.3 MB
    x2 = rng.standard_normal(x1.shape, dtype=np.float32)
    w = rng.standard_normal((4, 16, 3, 3), dtype=np.float32)
    old_min = _workspace._POOL_MIN_BYTES
    _workspace._POOL_MIN_BYTES = 0                               # pool even this small case
    try:
        _, cache1 = F.conv2d_forward(x1, w, None, 1, 1)
        kept = cache1.x_cols.copy()
        _, cache2 = F.conv2d_forward(x2, w, None, 1, 1)
        assert cache2.x_cols is not cache1.x_cols
        np.testing.assert_array_equal(cache1.x_cols, kept)
        view = cache2.x_cols[0]                                   # a view keeps its base alive
        del cache2
        _, cache3 = F.conv2d_forward(x1, w, None, 1, 1)
        assert not np.shares_memory(cache3.x_cols, view)
        np.testing.assert_array_equal(cache1.x_cols, kept)
        del view
        np.testing.assert_array_equal(cache3.x_cols, kept)
    finally:
        _workspace._POOL_MIN_BYTES = old_min
        _workspace.clear_workspace()


def test_conv_outputs_are_never_overwritten_while_held():
    """Both routes hand out out and dx from the pool only once nobody holds them."""
    from minicnn import functional as F
    from minicnn.functional import _workspace
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 8, 16, 34, 34), dtype=np.float32)
    w = rng.standard_normal((4, 16, 3, 3), dtype=np.float32)
    old_min = _workspace._POOL_MIN_BYTES
    _workspace._POOL_MIN_BYTES = 0
    try:
        for fused in (True, False):
            with kernels.use_fused_conv(fused):
                out1, cache1 = F.conv2d_forward(x1, w, None, 1, 1)
                dx1, _, _ = F.conv2d_backward(out1, cache1)
                kept = out1.copy(), dx1.copy()
                out2, cache2 = F.conv2d_forward(x2, w, None, 1, 1)
                dx2, _, _ = F.conv2d_backward(out2, cache2)
                assert not np.shares_memory(out1, out2) and not np.shares_memory(dx1, dx2)
                np.testing.assert_array_equal(out1, kept[0])
                np.testing.assert_array_equal(dx1, kept[1])
    finally:
        _workspace._POOL_MIN_BYTES = old_min
        _workspace.clear_workspace()


def test_conv_chunked_matches_unchunked(batched_conv):
    from minicnn import functional as F
    from minicnn.functional import conv
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 9, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    dout = rng.standard_normal((5, 4, 5, 8))
    results = []
    old = conv.CHUNK_BYTES
    try:
        for chunk_bytes in (1 << 30, 1):                         # one chunk; one image per chunk
            conv.CHUNK_BYTES = chunk_bytes
            out, cache = F.conv2d_forward(x, w, b, (2, 1), (1, 1))
            results.append((out, *F.conv2d_backward(dout, cache)))
    finally:
        conv.CHUNK_BYTES = old
    for one, many in zip(*results):
        np.testing.assert_allclose(one, many, rtol=1e-12, atol=1e-12)
