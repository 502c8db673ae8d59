"""Find the GEMM of the OpenBLAS that NumPy links, for the fused convolution in C.

The fused kernel (csrc/conv_tmpl.h) calls ``cblas_sgemm`` / ``cblas_dgemm`` once per image
from inside its own OpenMP threads, so it needs the BLAS's entry points as C function
addresses, and a way to run that BLAS on one thread meanwhile.  NumPy's wheels ship OpenBLAS
with renamed symbols (``scipy_cblas_sgemm64_``: a prefix, and a suffix for the 64-bit integer
interface); threadpoolctl tells which library is loaded and this module probes its names.

Anything else (MKL, Accelerate, BLIS, no threadpoolctl, symbols not found), or
``MINICNN_FUSED_CONV=0`` in the environment, gives ``None``: ``functional.conv`` then keeps to
its batched NumPy-GEMM route, and linear layers to NumPy's matmul.
"""
import ctypes
import os

import numpy as np

# (prefix, suffix) pairs OpenBLAS builds use for their exported symbols
_AFFIXES = [("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", "")]


class OpenBLAS:
    """Entry points of one OpenBLAS library: C addresses of its GEMMs, and its thread control."""

    def __init__(self, lib, prefix, suffix, filepath):
        def symbol(name):
            return getattr(lib, f"{prefix}{name}{suffix}")

        self.filepath = filepath
        self._lib = lib                                  # keeps the handle open
        self.sgemm = ctypes.cast(symbol("cblas_sgemm"), ctypes.c_void_p).value
        self.dgemm = ctypes.cast(symbol("cblas_dgemm"), ctypes.c_void_p).value
        self.set_num_threads = ctypes.cast(symbol("openblas_set_num_threads"),
                                           ctypes.c_void_p).value
        self.get_num_threads = ctypes.cast(symbol("openblas_get_num_threads"),
                                           ctypes.c_void_p).value
        get_config = symbol("openblas_get_config")
        get_config.restype = ctypes.c_char_p
        self.config = (get_config() or b"").decode("ascii", "replace")
        get_corename = symbol("openblas_get_corename")
        get_corename.restype = ctypes.c_char_p
        self.corename = (get_corename() or b"").decode("ascii", "replace")   # kernel: "Haswell"
        # INTERFACE64 builds take 64-bit ints; their config string says USE64BITINT
        self.ilp64 = "USE64BITINT" in self.config

    def describe(self):
        ints = "64-bit" if self.ilp64 else "32-bit"
        return f"{os.path.basename(self.filepath)}, {ints} ints, kernel {self.corename}"

    def has_small_matrix_sgemm(self):
        """True for OpenBLAS's AVX-512 targets, whose "direct" sgemm multiplies small matrices
        in place; its other kernels pack both operands first (kernel/x86_64/sgemm_direct_skylakex.c
        is built for SKYLAKEX, COOPERLAKE and SAPPHIRERAPIDS only)."""
        return self.corename.lower() in ("skylakex", "cooperlake", "sapphirerapids")


def _numpy_openblas_path():
    """File of the OpenBLAS NumPy uses (threadpoolctl), or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    libs = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    numpy_home = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    # NumPy's wheels keep theirs next to the package (numpy.libs, numpy/.dylibs); another
    # OpenBLAS in the process (SciPy's, say) may also be listed
    own = [i for i in libs if os.path.abspath(i["filepath"]).startswith(numpy_home + os.sep)
           and "numpy" in os.path.relpath(i["filepath"], numpy_home).split(os.sep)[0]]
    if own:
        return own[0]["filepath"]
    return libs[0]["filepath"] if len(libs) == 1 else None


def find_numpy_openblas():
    """An ``OpenBLAS`` for the library NumPy links, or None when it cannot be used."""
    if os.environ.get("MINICNN_FUSED_CONV", "1") == "0":
        return None
    path = _numpy_openblas_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix, suffix in _AFFIXES:
        try:
            return OpenBLAS(lib, prefix, suffix, path)
        except AttributeError:
            continue
    return None
