"""Test helper: does calling a function keep allocating memory that is never freed?"""
import gc
import tracemalloc


def bytes_kept_after(once, rounds=500, warmup=50):
    """Bytes still allocated (tracemalloc) after ``rounds`` calls of once(), past a warm-up."""
    for _ in range(warmup):
        once()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            once()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
