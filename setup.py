"""Build script: the Cython/C kernels are optional.

The C extension ``minicnn.kernels._cpu`` is compiled from ``minicnn/kernels/_cpu.pyx`` and the
plain C99 sources in ``csrc/``.  OpenMP is used where the compiler supports it; without OpenMP
the kernels are built serial (with a warning), and without a compiler or Cython the package
installs anyway and runs on the NumPy kernels.

Environment variables:
    MINICNN_NATIVE=1     add -march=native (local builds only; wheels stay portable)
    MINICNN_NO_EXT=1     skip the extension entirely (pure NumPy install)
    MINICNN_ASAN=1       build with AddressSanitizer (see docs/asan.md)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext


OPENMP_PROGRAM = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
PLAIN_PROGRAM = "int main(void){return 0;}\n"


def _compiler_accepts(compiler, flags, link_flags=(), src=OPENMP_PROGRAM):
    """True if ``compiler`` compiles and links the program ``src`` with ``flags``."""
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        exe = os.path.join(tmp, "t")
        cmd = [compiler, path, "-o", exe, *flags, *link_flags]
        return subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExtOptional(build_ext):
    """build_ext that adds OpenMP flags when they work, and never fails the install."""

    def build_extensions(self):
        cc = self.compiler.compiler_so[0] if hasattr(self.compiler, "compiler_so") else "cc"
        if self.compiler.compiler_type == "msvc":
            omp_compile, omp_link = ["/openmp"], []
            base = ["/O2"]
        else:
            base = ["-O3", "-std=c99", "-ffp-contract=off"]   # no FMA: bitwise equal to NumPy
            # keep short copy loops inline (GCC would call memcpy for 10 values, csrc/im2col_tmpl.h)
            no_memcpy_calls = ["-fno-tree-loop-distribute-patterns", "-Werror"]
            if _compiler_accepts(cc, no_memcpy_calls, src=PLAIN_PROGRAM):
                base.append(no_memcpy_calls[0])
            # functions and loops on fixed boundaries: without this, code added elsewhere in the
            # file moved im2col's copy loop and case C2's forward went from 0.46 to 0.58 ms with
            # the very same instructions (benchmarks/NOTES.md, round 3)
            aligned = ["-falign-functions=64", "-falign-loops=32", "-Werror"]
            if _compiler_accepts(cc, aligned, src=PLAIN_PROGRAM):
                base += aligned[:2]
            if os.environ.get("MINICNN_JCC") == "1":
                base.append("-Wa,-mbranches-within-32B-boundaries")
            omp_compile, omp_link = ["-fopenmp"], ["-fopenmp"]
            if not _compiler_accepts(cc, omp_compile, omp_link):
                warnings.warn("minicnn: the C compiler does not support OpenMP; "
                              "building the kernels single-threaded")
                omp_compile, omp_link = [], []
            if os.environ.get("MINICNN_NATIVE") == "1":
                base.append("-march=native")
            if os.environ.get("MINICNN_ASAN") == "1":
                base += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
                omp_link = omp_link + ["-fsanitize=address"]
        for ext in self.extensions:
            ext.extra_compile_args = base + omp_compile
            ext.extra_link_args = omp_link
        try:
            super().build_extensions()
        except Exception as exc:  # no compiler, broken toolchain: fall back to NumPy kernels
            warnings.warn(f"minicnn: C extension not built ({exc}); using the NumPy kernels")


def extensions():
    if os.environ.get("MINICNN_NO_EXT") == "1":
        return []
    pyx = os.path.join("minicnn", "kernels", "_cpu.pyx")
    if not os.path.exists(pyx):
        return []
    try:
        import numpy
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError as exc:
        warnings.warn(f"minicnn: {exc}; installing without the C extension")
        return []
    csrc = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".c"))
    ext = Extension(
        "minicnn.kernels._cpu",
        sources=[pyx, *csrc],
        depends=sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h")),
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtOptional})
