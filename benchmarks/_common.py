"""Timing helpers shared by the benchmark scripts (they live in ``minicnn.bench``)."""
from minicnn.bench import blas_description, copy_bandwidth, environment, sgemm_peak, timeit

__all__ = ["timeit", "sgemm_peak", "copy_bandwidth", "blas_description", "environment"]
