"""The hot loops: im2col / col2im and max- / average-pooling, behind one signature.

Three implementations share these signatures:

    _numpy  vectorized NumPy (always available; the fallback)
    _cpu    C99 + OpenMP behind Cython (csrc/), used when the extension is built
    _cupy   CuPy RawKernels, used when the array is a CuPy array

Signatures (``kernel_size``, ``stride``, ``padding`` are ``(h, w)`` tuples of ints; inputs are
validated by ``minicnn.functional`` and C-contiguous; outputs are new arrays of the input dtype):

    im2col(x, kernel_size, stride, padding, out=None)        x (N,C,H,W) -> cols (N, C*KH*KW, OH*OW)
        cols[n, (c*KH + i)*KW + j, oh*OW + ow] = x_pad[n, c, oh*SH + i, ow*SW + j]
    col2im(cols, x_shape, kernel_size, stride, padding, out=None)
                                                             the adjoint of im2col: sums into (N,C,H,W)
        ``out``: optional C-contiguous buffer of the exact result shape and dtype to write into
        (``functional.conv`` passes its reused scratch; the result is then ``out`` itself)

    maxpool_forward(x, kernel_size, stride, padding)         -> (out (N,C,OH,OW), argmax int32 (N,C,OH,OW))
        argmax holds h*W + w, the flat index of the winner in its unpadded (n, c) plane;
        padded cells never win; ties go to the first maximum in window (row-major) order
    maxpool_backward(dout, argmax, x_shape)                  -> dx (N,C,H,W)
    avgpool_forward(x, kernel_size, stride, padding)         -> out; zero padding counts in the divisor KH*KW
    avgpool_backward(dout, x_shape, kernel_size, stride, padding) -> dx

Buffers a kernel writes (``out``, ``dx_out``, ``work``, ``c``, ``buf``) must not share memory
with the arrays it reads (the C kernels raise ValueError); only the elementwise loops below may
write over their input in place, element for element (``relu_forward(x, out=x)``).

The C kernels' new results of 4 MiB or more start on a huge-page boundary (Linux): they are
views into a byte buffer one huge page longer (their ``.base``), so that transparent huge pages
back them whole; fresh pages cost fewer faults (benchmarks/NOTES.md, round 7).

The C extension also runs a whole convolution layer (csrc/conv_tmpl.h), calling the BLAS that
NumPy links from its own threads; ``fused_conv_available()`` says whether it found that BLAS
(OpenBLAS; see ``_blas``):

    conv_forward(x, w, b, stride, padding, out=None, work=None)     -> out (N, F, OH, OW)
    conv_backward(dout, x, w, stride, padding, need_dx=True, dx_out=None, work=None)
                                                                    -> (dx, dw, db)
    conv_work_elems(x_shape, w_shape, stride, padding)              -> scratch size for ``work``
    matmul(a, b)                                                    -> a @ b (2-D), same threads

and, for 3x3 kernels at stride 1, the same layer by Winograd's F(2x2, 3x3) (csrc/winograd_tmpl.h;
u = functional.winograd.filter_transform(w), of shape (16, F, C); ``winograd_wanted`` says when
functional.conv takes it):

    winograd_forward(x, u, b, padding, out=None, work=None)         -> out (N, F, OH, OW)
    winograd_backward(dout, x, u, padding, need_dx=True, dx_out=None, work=None)
                                                                    -> (dx, du, db)
    winograd_work_elems(x_shape, f, padding)                        -> scratch size for ``work``

and one-pass elementwise loops for CPU float arrays when ``elementwise_in_c(x)``:

    relu_forward(x, out=None); relu_backward(dout, out, dx=None)
    sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first)   in place
    channel_stats(x) -> (mean, var);  batchnorm_apply(x, mean, inv_std, gamma, beta) -> (xhat, out)
    batchnorm_backward(dout, xhat, gamma, inv_std, batch_stats) -> (dx, dgamma, dbeta)

The conv and matmul kernels keep NumPy's OpenBLAS on one thread and call it from the kernels'
OpenMP threads: a BLAS thread pool woken beside those threads keeps spinning on the cores they
need (measured: a train step 30 % slower; see benchmarks/NOTES.md).  ``MINICNN_FUSED_CONV=0``
switches them off, ``MINICNN_WINOGRAD=0`` (or ``use_winograd(False)``) only the Winograd route.
The conv layers' float32 products (direct and Winograd) run on minicnn's own AVX-512 GEMM
(csrc/small_gemm.c) where NumPy's OpenBLAS has no small-matrix kernel of its own (``own_sgemm_enabled()``;
``MINICNN_OWN_SGEMM=1`` or ``=0`` forces the choice, ``use_own_sgemm`` for a block of code).

Choose the CPU implementation with ``MINICNN_KERNELS=numpy`` (environment) or
``use_kernels("numpy")`` (context manager, for tests and benchmarks).
"""
import contextlib
import os
import warnings

import numpy as np

from minicnn.backend import is_cupy_array
from minicnn.kernels import _numpy


def _import_cpu_kernels(spin_count):
    """Import the C extension with libgomp's spin-wait set to ``spin_count`` (GOMP_SPINCOUNT).

    After a parallel region, OpenMP threads spin-wait for the next one before they sleep, and
    waking a sleeping thread on an idle virtual CPU costs 0.1-0.3 ms, more than a small kernel
    call takes (A's col2im, 0.17 ms on 2 threads, took 0.4 ms with a sleeping second thread).
    A long spin is right when the kernels' threads do all the work, as with the fused kernels:
    libgomp's default, 300,000 spins (about a millisecond).  When the GEMMs run on NumPy's own
    BLAS threads instead (the batched route), spinning kernel threads hold the cores those
    threads need and slowed conv layers 2-8x on 2 cores, so there 3,000 spins (tens of
    microseconds).  The runtime reads this once, when the extension loads it, so it is set only
    for that moment and only if the user has not chosen it; OpenMP runtimes loaded later
    (PyTorch bundles its own libgomp) see the environment unchanged.
    """
    settings = {"GOMP_SPINCOUNT": str(spin_count)}
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        settings = {}
    added = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(added)
    try:
        from minicnn.kernels import _cpu as module
        return module
    except ImportError:  # extension not built: NumPy kernels serve
        return None
    finally:
        for key in added:
            os.environ.pop(key, None)


def _find_blas():
    from minicnn.kernels._blas import find_numpy_openblas
    return find_numpy_openblas()


def _own_sgemm_default(cpu, openblas):
    """Whether the conv layers' float32 products go to minicnn's AVX-512 kernels
    (csrc/small_gemm.c) instead of OpenBLAS.  ``MINICNN_OWN_SGEMM=1`` or ``=0`` decides; by
    default yes where the CPU has AVX-512 and OpenBLAS's kernel has no small-matrix sgemm of its
    own: there ours run those products 1.4-2.9x faster, while beside OpenBLAS's SkylakeX kernel
    they are slower on some (benchmarks/bench_gemm.py; benchmarks/NOTES.md, round 5)."""
    choice = os.environ.get("MINICNN_OWN_SGEMM", "auto")
    if choice in ("0", "1"):
        return choice == "1"
    if choice != "auto":
        warnings.warn(f"minicnn: MINICNN_OWN_SGEMM must be 0, 1 or auto, got {choice!r}; "
                      f"using auto", RuntimeWarning, stacklevel=2)
    return cpu.sgemm_avx512_supported() and not openblas.has_small_matrix_sgemm()


_openblas = _find_blas()              # NumPy's OpenBLAS, for the fused kernels; None: batched
_cpu = _import_cpu_kernels(300_000 if _openblas is not None else 3_000)
if _cpu is not None:
    _cpu._set_blas(_openblas)
    if _openblas is not None:
        _cpu._set_own_sgemm(_own_sgemm_default(_cpu, _openblas))
else:
    _openblas = None

_choice = os.environ.get("MINICNN_KERNELS", "auto").lower()
_warned = False


def c_extension_available():
    return _cpu is not None


def openmp_enabled():
    return bool(_cpu is not None and _cpu.openmp_enabled())


def cpu_kernel_name():
    """'c' or 'numpy': the implementation CPU arrays go to now."""
    return "c" if (_cpu is not None and _choice != "numpy") else "numpy"


def _cpu_module():
    global _warned
    if _choice == "c" and _cpu is None:
        raise RuntimeError("MINICNN_KERNELS=c but the C extension is not built (pip install -e .)")
    if _cpu is None or _choice == "numpy":
        if _cpu is None and not _warned:
            _warned = True
            warnings.warn("minicnn: C kernels not built; using the NumPy kernels (slower)",
                          RuntimeWarning, stacklevel=3)
        return _numpy
    return _cpu


def _module_for(x):
    if is_cupy_array(x):
        from minicnn.kernels import _cupy
        return _cupy
    return _cpu_module()


@contextlib.contextmanager
def use_kernels(name):
    """Temporarily route CPU arrays to ``"numpy"`` or ``"c"`` kernels (``"auto"``: C if built)."""
    global _choice
    if name not in ("numpy", "c", "auto"):
        raise ValueError(f"use_kernels: name must be 'numpy', 'c' or 'auto', got {name!r}")
    if name == "c" and _cpu is None:
        raise RuntimeError("use_kernels('c'): the C extension is not built")
    previous, _choice = _choice, name
    try:
        yield
    finally:
        _choice = previous


def im2col(x, kernel_size, stride, padding, out=None):
    if out is None:
        return _module_for(x).im2col(x, kernel_size, stride, padding)
    return _module_for(x).im2col(x, kernel_size, stride, padding, out=out)


def col2im(cols, x_shape, kernel_size, stride, padding, out=None):
    if out is None:
        return _module_for(cols).col2im(cols, tuple(x_shape), kernel_size, stride, padding)
    return _module_for(cols).col2im(cols, tuple(x_shape), kernel_size, stride, padding, out=out)


def maxpool_forward(x, kernel_size, stride, padding):
    return _module_for(x).maxpool_forward(x, kernel_size, stride, padding)


def maxpool_backward(dout, argmax, x_shape):
    return _module_for(dout).maxpool_backward(dout, argmax, tuple(x_shape))


def avgpool_forward(x, kernel_size, stride, padding):
    return _module_for(x).avgpool_forward(x, kernel_size, stride, padding)


def avgpool_backward(dout, x_shape, kernel_size, stride, padding):
    return _module_for(dout).avgpool_backward(dout, tuple(x_shape), kernel_size, stride, padding)


# ---------------------------------------------------------------- beyond im2col and pooling
# (C extension only; the callers in minicnn.functional and minicnn.optim keep the NumPy
# formulas for everything else)

_fused_conv_on = True


def fused_conv_available():
    """True when CPU convolutions run through the C extension's fused kernel."""
    return _fused_conv_on and cpu_kernel_name() == "c" and _cpu.fused_conv_available()


def fused_conv_blas():
    """A line on the BLAS the fused kernels call (library file, integer size), or None."""
    return None if _openblas is None else _openblas.describe()


@contextlib.contextmanager
def use_fused_conv(enabled):
    """Temporarily switch the fused convolution off (False) or back on (for tests, benchmarks)."""
    global _fused_conv_on
    previous, _fused_conv_on = _fused_conv_on, bool(enabled)
    try:
        yield
    finally:
        _fused_conv_on = previous


def own_sgemm_enabled():
    """True when the conv layers' float32 products run on minicnn's own kernels
    (csrc/small_gemm.c) rather than on the BLAS."""
    return fused_conv_available() and _cpu.own_sgemm_enabled()


@contextlib.contextmanager
def use_own_sgemm(enabled):
    """Temporarily run the conv layers' float32 products on minicnn's own kernels (True) or on
    the BLAS (False), for tests and benchmarks.  Where the CPU lacks AVX-512 the own
    kernels are plain loops: correct, and slow."""
    if _cpu is None or _openblas is None:
        raise RuntimeError("use_own_sgemm: the fused convolution is not available")
    previous = _cpu.own_sgemm_enabled()
    _cpu._set_own_sgemm(enabled)
    try:
        yield
    finally:
        _cpu._set_own_sgemm(previous)


def conv_forward(x, w, b, stride, padding, out=None, work=None):
    return _cpu.conv_forward(x, w, b, stride, padding, out=out, work=work)


def conv_backward(dout, x, w, stride, padding, need_dx=True, dx_out=None, work=None):
    return _cpu.conv_backward(dout, x, w, stride, padding, need_dx=need_dx, dx_out=dx_out,
                              work=work)


_winograd_on = os.environ.get("MINICNN_WINOGRAD", "1") != "0"

# Below these channel counts the direct route is faster: Winograd saves multiplies in the 16
# products (F, C) @ (C, tiles), and with few channels those are not where the time goes
# (benchmarks/NOTES.md, round 3).
WINOGRAD_MIN_CHANNELS = 16


def winograd_enabled():
    """True when eligible convolutions may take the Winograd route (see ``winograd_wanted``)."""
    return _winograd_on and fused_conv_available()


def winograd_wanted(x_shape, w_shape, stride):
    """True when functional.conv computes this convolution by Winograd F(2x2, 3x3): the fused
    kernels are on, the kernel is 3x3 with stride 1, and both channel counts are at least
    ``WINOGRAD_MIN_CHANNELS``."""
    return (winograd_enabled() and tuple(w_shape[2:]) == (3, 3)
            and tuple(stride) == (1, 1)
            and min(x_shape[1], w_shape[0]) >= WINOGRAD_MIN_CHANNELS)


@contextlib.contextmanager
def use_winograd(enabled):
    """Temporarily switch the Winograd route off (False) or back on (for tests, benchmarks)."""
    global _winograd_on
    previous, _winograd_on = _winograd_on, bool(enabled)
    try:
        yield
    finally:
        _winograd_on = previous


def winograd_forward(x, u, b, padding, out=None, work=None):
    return _cpu.winograd_forward(x, u, b, padding, out=out, work=work)


def winograd_backward(dout, x, u, padding, need_dx=True, dx_out=None, work=None):
    return _cpu.winograd_backward(dout, x, u, padding, need_dx=need_dx, dx_out=dx_out, work=work)


def winograd_work_elems(x_shape, f, padding):
    return _cpu.winograd_work_elems(x_shape, f, padding)


def matmul(a, b):
    """a @ b for 2-D arrays.  CPU float arrays of one dtype go to the C extension's threaded
    GEMM when ``fused_conv_available()``; transposed views (``w.T``) are passed without a copy."""
    if not (fused_conv_available() and isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            and a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype
            and a.dtype in (np.float32, np.float64)):
        return a @ b
    a_t = a.flags.f_contiguous and not a.flags.c_contiguous
    b_t = b.flags.f_contiguous and not b.flags.c_contiguous
    return _cpu.matmul(a.T if a_t else a, b.T if b_t else b, trans_a=a_t, trans_b=b_t)


def elementwise_in_c(x):
    """True when x is a NumPy array whose ReLU, SGD step and batch norm the C extension runs."""
    return isinstance(x, np.ndarray) and cpu_kernel_name() == "c"


def relu_forward(x, out=None):
    return _cpu.relu_forward(x, out=out)


def relu_backward(dout, out, dx=None):
    return _cpu.relu_backward(dout, out, dx=dx)


def sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    return _cpu.sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first)


def channel_stats(x):
    return _cpu.channel_stats(x)


def batchnorm_apply(x, mean, inv_std, gamma, beta, xhat=None, out=None):
    return _cpu.batchnorm_apply(x, mean, inv_std, gamma, beta, xhat=xhat, out=out)


def batchnorm_backward(dout, xhat, gamma, inv_std, batch_stats, dx=None):
    return _cpu.batchnorm_backward(dout, xhat, gamma, inv_std, batch_stats, dx=dx)


def conv_work_elems(x_shape, w_shape, stride, padding):
    return _cpu.conv_work_elems(x_shape, w_shape, stride, padding)
