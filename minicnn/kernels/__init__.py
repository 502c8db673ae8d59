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

Choose the CPU implementation with ``MINICNN_KERNELS=numpy`` (environment) or
``use_kernels("numpy")`` (context manager, for tests and benchmarks).
"""
import contextlib
import os
import warnings

from minicnn.backend import is_cupy_array
from minicnn.kernels import _numpy



def _import_cpu_kernels():
    """Import the C extension with a short OpenMP spin-wait (libgomp: GOMP_SPINCOUNT=3000).

    After a parallel region, OpenMP threads spin-wait for the next one; libgomp's default is
    300,000 spins (milliseconds).  Here the next thing to run is usually a BLAS GEMM whose own
    threads need those cores, and spinning threads slowed conv layers 2-8x on 2 cores (worse
    when other processes share them).  Sleeping at once (OMP_WAIT_POLICY=passive) is no better:
    waking a thread on an idle virtual CPU costs a few hundred microseconds per kernel call.
    About 3,000 spins (tens of microseconds) keeps back-to-back kernel calls fast and leaves the
    cores to the BLAS soon after.  The runtime reads these settings once, when the extension
    loads it, so they are set only for that moment and only if the user has not chosen them;
    OpenMP runtimes loaded later (PyTorch bundles its own libgomp) see the environment unchanged.
    """
    settings = {"GOMP_SPINCOUNT": "3000"}
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


_cpu = _import_cpu_kernels()

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
