"""Benchmark cases A-E (``minicnn.bench.CASES``): conv and pooling layers, NumPy vs C kernels
vs PyTorch.

    python benchmarks/bench_kernels.py [--cases A,B] [--repeat 10] [--json out.json]

The same as ``minicnn bench``; the code is ``minicnn.bench``.
"""
import sys

from minicnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
