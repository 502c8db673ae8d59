"""Reused buffers for the NumPy path of the functional ops (conv2d, relu).

First touching freshly allocated pages is expensive (the OS zeroes each page on the first
write; benchmarks/NOTES.md measures it), so large outputs are handed out from a pool, but only
when no one can see the reuse.
"""
import sys
import threading

import numpy as np


class _Workspace(threading.local):
    """Reused buffers for the NumPy path (one set per thread).

    ``scratch``: internal buffers (conv's dL/dX and layout chunks) that never leave the function
    that asked for them; reused on every call.

    ``recycled``: arrays that do leave: outputs, input gradients, conv's im2col matrix kept in
    its cache.  Each
    call needs a fresh one because the caller may still hold the previous, but first touching
    the pages of a freshly allocated large buffer is expensive on these machines (the kernel
    zeroes every page; glibc hands large blocks back to the OS on free).  So a buffer is handed
    out again only once *nobody else references it*: the CPython reference count says that only
    this pool holds it, so no caller, cache or view (views hold their base) can ever see it
    overwritten.  (A caller keeping only a weakref to such an array could; nothing here does.)
    """

    MAX_POOLED = 4                     # buffers kept per shape and dtype

    def __init__(self):
        self._scratch = {}
        self._pool = {}

    def scratch(self, name, shape, dtype):
        key = (name, dtype.str)
        buf = self._scratch.get(key)
        size = int(np.prod(shape))
        if buf is None or buf.size < size:
            buf = self._scratch[key] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)

    def recycled(self, shape, dtype):
        if not _REFCOUNTS or int(np.prod(shape)) * dtype.itemsize < _POOL_MIN_BYTES:
            return np.empty(shape, dtype=dtype)
        key = (shape, dtype.str)
        pool = self._pool.setdefault(key, [])
        for buf in pool:
            # references: the pool's list, the loop variable, getrefcount's argument
            if sys.getrefcount(buf) == 3:
                return buf
        buf = np.empty(shape, dtype=dtype)
        if len(pool) >= self.MAX_POOLED:
            pool.pop(0)                # forget the oldest; whoever holds it keeps it alive
        pool.append(buf)
        return buf

    def clear(self):
        self._scratch.clear()
        self._pool.clear()


_REFCOUNTS = hasattr(sys, "getrefcount") and sys.implementation.name == "cpython"
_POOL_MIN_BYTES = 1 << 20              # smaller blocks come back warm from malloc anyway
workspace = _Workspace()


def clear_workspace():
    """Free the reused buffers of this thread (they are re-created on demand)."""
    workspace.clear()
