"""minicnn's own float32 GEMM (csrc/small_gemm.c) against NumPy in float64.

The conv layers send their per-image products there where NumPy's OpenBLAS has no small-matrix
kernel (minicnn.kernels.own_sgemm_enabled()); tests/test_fused_conv.py runs the whole layer
both ways.  Here the kernels alone: every tile shape and edge (8-row tiles, 32- and
16-column panels, 16-lane chunks of the dot products), accumulation into C, and the order of
summation, which must not depend on where an element falls in a tile.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import kernels

try:
    from minicnn.kernels import _cpu
except ImportError:
    _cpu = None

needs_c = pytest.mark.skipif(_cpu is None, reason="C extension not built")
SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def product(draw):
    """a (m, k), b (k, n) or, when trans_b, (n, k), and maybe a c to add to."""
    # k up to 300: the nn kernel goes over k in blocks of 256
    m, n = draw(st.integers(1, 20)), draw(st.integers(1, 70))
    k = draw(st.one_of(st.integers(0, 40), st.integers(250, 300)))
    trans_b = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32) if draw(st.booleans()) else None
    return a, b, trans_b, c


@needs_c
@SETTINGS
@given(product(), st.booleans())
def test_small_sgemm_equals_numpy(problem, loops):
    """The AVX-512 kernels and the plain loops (the fallback on other CPUs) both."""
    a, b, trans_b, c = problem
    b_plain = b.T if trans_b else b
    expected = a.astype(np.float64) @ b_plain.astype(np.float64)
    if c is not None:
        expected += c
    got = _cpu.small_sgemm(a, b, trans_b=trans_b, c=None if c is None else c.copy(), loops=loops)
    assert got.dtype == np.float32 and got.shape == expected.shape
    # float32 sums of k products of standard normals: a bound linear in k (the error is far
    # smaller, about sqrt(k) * 6e-8 times the terms' size)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * (1 + a.shape[1]))


@needs_c
@SETTINGS
@given(product(), st.data())
def test_an_element_does_not_depend_on_its_place_in_a_tile(problem, data):
    """Each element is summed in an order fixed by k alone: one row, or one column, computed on
    its own (a tile edge, masked) has the same bits as inside the whole product."""
    a, b, trans_b, _ = problem
    whole = _cpu.small_sgemm(a, b, trans_b=trans_b)
    i = data.draw(st.integers(0, a.shape[0] - 1))
    j = data.draw(st.integers(0, whole.shape[1] - 1))
    row = _cpu.small_sgemm(a[i:i + 1], b, trans_b=trans_b)
    column = _cpu.small_sgemm(a, b[j:j + 1] if trans_b else b[:, j:j + 1], trans_b=trans_b)
    np.testing.assert_array_equal(row[0], whole[i])
    np.testing.assert_array_equal(column[:, 0], whole[:, j])


@needs_c
@SETTINGS
@given(product())
def test_small_sgemm_writes_only_its_result(problem):
    """C is a block of rows inside a larger array: the rows around it stay as they were (the
    kernels store with masks at the right edge and never past the last row).  AddressSanitizer
    does not see inside AVX-512 masked loads and stores, so this is the check on them."""
    a, b, trans_b, c = problem
    m, n = a.shape[0], (b.shape[0] if trans_b else b.shape[1])
    start = np.zeros((m, n), np.float32) if c is None else c
    sentinel = np.float32(-7.25)
    block = np.full((m + 2, n), sentinel, np.float32)
    block[1:m + 1] = start
    _cpu.small_sgemm(a, b, trans_b=trans_b, c=block[1:m + 1])
    assert (block[0] == sentinel).all() and (block[m + 1] == sentinel).all()
    b_plain = b.T if trans_b else b
    expected = a.astype(np.float64) @ b_plain.astype(np.float64) + start
    np.testing.assert_allclose(block[1:m + 1], expected, rtol=1e-5, atol=1e-5 * (1 + a.shape[1]))


@needs_c
@pytest.mark.parametrize("m, n, k", [(32, 1024, 28), (16, 100, 151), (150, 100, 16)])
def test_small_sgemm_on_the_shapes_of_the_benchmark_layers(m, n, k):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(_cpu.small_sgemm(a, b), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_cpu.small_sgemm(a, np.ascontiguousarray(b.T), trans_b=True),
                               expected, rtol=1e-5, atol=1e-4)


SQUARE = np.ones((4, 4), np.float32)


@needs_c
@pytest.mark.parametrize("call, error, words", [
    (lambda: _cpu.small_sgemm(np.ones((2, 3)), np.ones((3, 4))), TypeError, "float32"),
    (lambda: _cpu.small_sgemm(np.ones((2, 3), np.float32), np.ones((4, 4), np.float32)),
     ValueError, "inner sizes differ"),
    (lambda: _cpu.small_sgemm(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32),
                              c=np.ones((2, 5), np.float32)), ValueError, "(2, 4)"),
    (lambda: _cpu.small_sgemm(np.ones(3, np.float32), np.ones((3, 4), np.float32)),
     ValueError, "2-D"),
    (lambda: _cpu.small_sgemm(SQUARE, SQUARE.copy(), c=SQUARE), ValueError, "c must not overlap a"),
])
def test_small_sgemm_rejects_bad_arguments(call, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


class _FakeBLAS:
    def __init__(self, corename):
        self.corename = corename

    def has_small_matrix_sgemm(self):
        from minicnn.kernels._blas import OpenBLAS
        return OpenBLAS.has_small_matrix_sgemm(self)


class _FakeCPU:
    def __init__(self, avx512):
        self.avx512 = avx512

    def sgemm_avx512_supported(self):
        return self.avx512


@pytest.mark.parametrize("env, avx512, corename, expected", [
    (None, True, "Haswell", True),          # OpenBLAS would pack every product
    (None, True, "SkylakeX", False),        # its small-matrix kernels are as fast
    (None, True, "SapphireRapids", False),
    (None, False, "Haswell", False),        # no AVX-512: ours would be plain loops
    ("0", True, "Haswell", False),
    ("1", True, "SkylakeX", True),
])
def test_own_sgemm_default(monkeypatch, env, avx512, corename, expected):
    if env is None:
        monkeypatch.delenv("MINICNN_OWN_SGEMM", raising=False)
    else:
        monkeypatch.setenv("MINICNN_OWN_SGEMM", env)
    assert kernels._own_sgemm_default(_FakeCPU(avx512), _FakeBLAS(corename)) is expected


def test_own_sgemm_setting_other_than_0_1_auto_warns(monkeypatch):
    monkeypatch.setenv("MINICNN_OWN_SGEMM", "yes")
    with pytest.warns(RuntimeWarning, match="MINICNN_OWN_SGEMM must be 0, 1 or auto, got 'yes'"):
        assert kernels._own_sgemm_default(_FakeCPU(True), _FakeBLAS("Haswell")) is True


@pytest.mark.skipif(not kernels.fused_conv_available(), reason="no fused conv")
def test_info_says_which_gemm_the_conv_layers_use():
    from minicnn import backend
    for own, words in [(True, "minicnn's AVX-512 kernels"), (False, "on OpenBLAS")]:
        with kernels.use_own_sgemm(own):
            assert kernels.own_sgemm_enabled() is own
            assert words in backend.info()["gemm"]


@pytest.mark.skipif(not kernels.fused_conv_available(), reason="no fused conv")
@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("m, n, k, trans_b", [
    (32, 1024, 28, False), (26, 6, 576, True),
    (300, 64, 600, True),         # operands past the nt kernel's 512 KiB: the BLAS either way
])
def test_layer_sgemm_multiplies_as_the_layers_do(own, m, n, k, trans_b):
    """The benchmark's entry point: the layers' dispatch, repeated; the result of the last
    repetition is the product."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    expected = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    got = _cpu.layer_sgemm(a, b, trans_b, own=own, repeat=3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="repeat"):
        _cpu.layer_sgemm(a, b, trans_b, own=own, repeat=0)
