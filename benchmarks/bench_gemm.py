"""The conv layers' per-image float32 products: minicnn's own GEMM (csrc/small_gemm.c) next to
NumPy's OpenBLAS, one thread each, side by side in one run.

Each row is one product a layer makes per image (cases of ``minicnn.bench.CASES``; K1 = K + 1,
the bias row):

    nn  C (m, n) = A (m, k) @ B (k, n)        the forward, dx's columns, dW on D_n^T, Winograd
    nt  C (m, n) = A (m, k) @ B (n, k)^T      dW for long rows (L > 256)

OpenBLAS multiplies small matrices in place only with its AVX-512 kernels (SkylakeX and later);
with any other (``OPENBLAS_CORETYPE=Haswell``) it packs both operands first.  Run it both ways:

    python benchmarks/bench_gemm.py
    OPENBLAS_CORETYPE=Haswell python benchmarks/bench_gemm.py

Both sides are timed the way the layers call them (``minicnn.kernels._cpu.layer_sgemm``: the
same dispatch, the BLAS on one thread), each product repeated in a C loop so that no Python runs
between calls.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicnn.bench import blas_description, timeit  # noqa: E402

# (layer product, m, n, k, trans_b)
SHAPES = [
    ("A forward      W1 @ X1", 32, 1024, 28, False),
    ("A dx columns   W^T @ D", 27, 1024, 32, False),
    ("A dW           X1 @ D^T", 28, 32, 1024, True),
    ("C1 forward", 6, 576, 26, False),
    ("C1 dx columns", 25, 576, 6, False),
    ("C1 dW", 26, 6, 576, True),
    ("C2 forward", 16, 100, 151, False),
    ("C2 dx columns", 150, 100, 16, False),
    ("C2 dW (D^T)", 151, 16, 100, False),
    ("B Winograd M = U @ V", 64, 72, 32, False),
    ("B Winograd dV = U^T @ dM", 32, 72, 64, False),
    ("B Winograd dU = dM @ V^T", 64, 32, 72, False),
    ("D Winograd M = U @ V", 64, 272, 64, False),
    ("D direct forward", 64, 1024, 577, False),
    ("D direct dW", 577, 64, 1024, True),
]

MIN_SECONDS = 0.002          # each timing repeats the product for at least this long


def per_call(product, repeat):
    """Median seconds of one call of product(times), which computes the product `times` times."""
    one_call = timeit(lambda: product(1), repeat=3, warmup=1)
    times = max(1, int(MIN_SECONDS / max(one_call, 1e-7)))
    return timeit(lambda: product(times), repeat=repeat, warmup=1) / times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timings per median")
    args = parser.parse_args(argv)
    try:
        from minicnn.kernels import _cpu
    except ImportError as exc:
        sys.exit(f"bench_gemm needs the C extension: {exc}")
    if not _cpu.fused_conv_available():
        sys.exit("bench_gemm needs NumPy's OpenBLAS (see minicnn.kernels._blas)")

    print(f"- BLAS: {blas_description()}")
    own = "AVX-512" if _cpu.sgemm_avx512_supported() else "plain loops (no AVX-512)"
    print(f"- minicnn's kernels: {own}")
    print("- one thread each; GFLOP/s = 2 m n k / time; products past the nt kernel's size "
          "limit run on OpenBLAS in both columns, as in the layers\n")
    print("| product | m | n | k | op | OpenBLAS GFLOP/s | minicnn GFLOP/s | minicnn / OpenBLAS |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name, m, n, k, trans_b in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)

        def seconds(own):
            return per_call(lambda times: _cpu.layer_sgemm(a, b, trans_b, own=own, repeat=times),
                            args.repeat)

        t_blas, t_own = seconds(False), seconds(True)
        flops = 2.0 * m * n * k
        print(f"| {name} | {m} | {n} | {k} | {'nt' if trans_b else 'nn'} | "
              f"{flops / t_blas / 1e9:.0f} | {flops / t_own / 1e9:.0f} | {t_blas / t_own:.2f} |")


if __name__ == "__main__":
    main()
