"""Array-library dispatch, device moves, thread control and a description of what runs.

Every op finds its array library with ``xp = get_array_module(x)``: NumPy for NumPy arrays,
CuPy for CuPy arrays.  There is no global "device" switch; the arrays decide.  CuPy is
imported lazily inside ``try`` so machines without it never fail.
"""
import os
import platform

import numpy as np

_cupy = None
_cupy_checked = False


def cupy_or_none():
    """The ``cupy`` module if it imports and sees a GPU, else None (checked once)."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception:
            _cupy = None
    return _cupy


def gpu_available():
    return cupy_or_none() is not None


def is_cupy_array(x):
    # Look at the type's module first so NumPy-only runs never import cupy.
    return type(x).__module__.startswith("cupy") and cupy_or_none() is not None


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if is_cupy_array(a):
            return cupy_or_none()
    return np


def to_device(x, device):
    """Move an array to ``"cpu"`` (NumPy) or ``"gpu"``/``"cuda"`` (CuPy); a no-op if already there."""
    device = normalize_device(device)
    if x is None:
        return None
    if device == "cpu":
        return x.get() if is_cupy_array(x) else np.asarray(x)
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError("device='gpu' needs CuPy and an NVIDIA GPU: pip install 'minicnn[gpu]'")
    return cp.asarray(x)


def to_numpy(x):
    return to_device(x, "cpu")


def normalize_device(device):
    name = str(device).lower()
    if name in ("cpu", "numpy"):
        return "cpu"
    if name in ("gpu", "cuda", "cupy") or name.startswith("cuda:"):
        return "gpu"
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


# ---------------------------------------------------------------- threads

def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "")
    try:
        n = int(env.split(",")[0])
        if n > 0:
            return n
    except ValueError:
        pass
    return os.cpu_count() or 1


_num_threads = _default_threads()


def get_num_threads():
    """Threads used by the C kernels (OpenMP)."""
    return _num_threads


def set_num_threads(n):
    """Set the thread count of the C kernels and, through threadpoolctl if installed, of the BLAS.

    Keeping both at the same number avoids oversubscribing the cores: kernels and GEMM run one
    after the other, never at the same time, so each may use every core.
    """
    global _num_threads
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _num_threads = int(n)
    _set_blas_threads(_num_threads)


_blas_limiter = None


def _set_blas_threads(n):
    global _blas_limiter
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")


def blas_info():
    """A list of dicts describing the BLAS libraries NumPy uses (threadpoolctl), or []."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
        for d in threadpool_info()
        if d.get("user_api") == "blas"
    ]


def info():
    """What runs here: versions, kernels in use, threads, BLAS, GPU."""
    from minicnn import __version__
    from minicnn import kernels

    gpu = "not available" if cupy_or_none() is None else _gpu_summary()
    return {
        "minicnn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "kernels": kernels.cpu_kernel_name(),
        "openmp": kernels.openmp_enabled(),
        "fused": _fused_conv_summary(kernels),
        "winograd": _winograd_summary(kernels),
        "gemm": conv_gemm_summary(kernels),
        "threads": get_num_threads(),
        "blas": blas_info(),
        "gpu": gpu,
    }


def _fused_conv_summary(kernels):
    """Whether conv / linear layers run as one C call each, and with which BLAS."""
    if kernels.fused_conv_available():
        return (f"yes: conv and linear GEMMs run from the kernels' threads "
                f"({kernels.fused_conv_blas()})")
    if kernels.cpu_kernel_name() != "c":
        return "no (NumPy kernels)"
    if os.environ.get("MINICNN_FUSED_CONV") == "0":
        return "no (MINICNN_FUSED_CONV=0)"
    return "no: NumPy's BLAS is not an OpenBLAS minicnn can call (batched NumPy GEMMs instead)"


def _winograd_summary(kernels):
    """Whether 3x3 convolutions may run by Winograd F(2x2, 3x3)."""
    if kernels.winograd_enabled():
        return (f"yes: 3x3 stride-1 convs with {kernels.WINOGRAD_MIN_CHANNELS}+ input and "
                f"output channels")
    if not kernels.fused_conv_available():
        return "no (it runs inside the fused kernels, which are off)"
    return "no (MINICNN_WINOGRAD=0 or use_winograd(False))"


def conv_gemm_summary(kernels):
    """Which GEMM multiplies the conv layers' float32 products: minicnn's own or the BLAS."""
    if not kernels.fused_conv_available():
        return "NumPy's matmul (the fused kernels are off)"
    if kernels.own_sgemm_enabled():
        return "conv layers' float32 products on minicnn's AVX-512 kernels (csrc/small_gemm.c)"
    return "conv layers' float32 products on OpenBLAS (MINICNN_OWN_SGEMM=1: on minicnn's kernels)"


def _gpu_summary():
    """One line on the GPU: device, CUDA versions, CuPy, and whether minicnn's kernels compile."""
    try:
        from minicnn.kernels import _cupy
        details = _cupy.kernel_info()
    except Exception as exc:  # pragma: no cover - depends on the GPU
        return f"CuPy present but unusable: {type(exc).__name__}: {exc}"
    try:
        _cupy.compile_all()
        kernels_state = "kernels compiled (float32, float64)"
    except Exception as exc:  # pragma: no cover - depends on the GPU and NVRTC
        kernels_state = f"kernels did NOT compile: {type(exc).__name__}: {exc}"
    return (f"{details.get('device', '?')} (compute capability {details.get('compute_capability', '?')}), "
            f"CUDA runtime {details.get('cuda_runtime', '?')}, driver {details.get('cuda_driver', '?')}, "
            f"CuPy {details['cupy']}; {kernels_state}")


def format_info(d=None):
    d = d or info()
    lines = [f"{k:>8}: {v}" for k, v in d.items() if k != "blas"]
    for lib in d["blas"] or [{"internal_api": "unknown (pip install threadpoolctl)"}]:
        desc = ", ".join(f"{k}={v}" for k, v in lib.items() if v is not None and k != "filepath")
        lines.append(f"{'blas':>8}: {desc}")
    return "\n".join(lines)
