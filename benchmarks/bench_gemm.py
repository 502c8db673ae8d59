"""The conv layers' per-image float32 products: minicnn's own GEMM (csrc/small_gemm.c) next to
NumPy's OpenBLAS, one thread each, side by side in one run.

Each row is one product a layer makes per image (DESIGN.md cases; K1 = K + 1, the bias row):

    nn  C (m, n) = A (m, k) @ B (k, n)        the forward, dx's columns, dW on D_n^T, Winograd
    nt  C (m, n) = A (m, k) @ B (n, k)^T      dW for long rows (L > 256)

OpenBLAS multiplies small matrices in place only with its AVX-512 kernels (SkylakeX and later);
with any other (``OPENBLAS_CORETYPE=Haswell``) it packs both operands first.  Run it both ways:

    python benchmarks/bench_gemm.py
    OPENBLAS_CORETYPE=Haswell python benchmarks/bench_gemm.py

Both sides pay one Python call per product, a few microseconds where the smallest products take
10-20; each side's call overhead, timed on a 1x1x1 product, is subtracted before GFLOP/s and
ratios are computed (the raw times are in the last two columns).
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

CALLS_PER_TIMING = 20


def per_call(fn, repeat):
    """Median seconds of one fn() call, timed CALLS_PER_TIMING calls at a time."""
    def batch():
        for _ in range(CALLS_PER_TIMING):
            fn()
    return timeit(batch, repeat=repeat, warmup=2) / CALLS_PER_TIMING


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timings per median")
    args = parser.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits
        from minicnn.kernels import _cpu
    except ImportError as exc:
        sys.exit(f"bench_gemm needs threadpoolctl and the C extension: {exc}")

    print(f"- BLAS: {blas_description()}")
    print(f"- minicnn's kernels: {'AVX-512' if _cpu.sgemm_avx512_supported() else 'plain loops (no AVX-512)'}")
    print("- one thread each; GFLOP/s = 2 m n k / time\n")
    print("| product | m | n | k | op | OpenBLAS GFLOP/s | minicnn GFLOP/s | minicnn / OpenBLAS "
          "| OpenBLAS us (raw) | minicnn us (raw) |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        one = np.ones((1, 1), np.float32)
        call_blas = per_call(lambda: np.matmul(one, one, out=one.copy()), args.repeat)
        call_own = per_call(lambda: _cpu.small_sgemm(one, one), args.repeat)
        for name, m, n, k, trans_b in SHAPES:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
            b_op = b.T if trans_b else b                  # a view: OpenBLAS gets the trans flag
            out = np.empty((m, n), np.float32)
            t_blas = per_call(lambda: np.matmul(a, b_op, out=out), args.repeat)
            t_own = per_call(lambda: _cpu.small_sgemm(a, b, trans_b=trans_b), args.repeat)
            net_blas, net_own = t_blas - call_blas, t_own - call_own
            flops = 2.0 * m * n * k
            print(f"| {name} | {m} | {n} | {k} | {'nt' if trans_b else 'nn'} | "
                  f"{flops / net_blas / 1e9:.0f} | {flops / net_own / 1e9:.0f} | "
                  f"{net_blas / net_own:.2f} | {t_blas * 1e6:.1f} | {t_own * 1e6:.1f} |")


if __name__ == "__main__":
    main()
