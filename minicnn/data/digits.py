"""The demo dataset: scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

The images hold integers 0..16; they are scaled to [0, 1].  ``size=16`` (or any multiple of 8)
enlarges each pixel to a k x k block (nearest neighbour), which lets a LeNet-style model with two
poolings run on them.
"""
import numpy as np

from minicnn.data.split import random_split

DIGITS_CLASSES = [str(d) for d in range(10)]


def load_digits(test_fraction=0.2, seed=0, size=8):
    """-> ``((x_train, y_train), (x_test, y_test))``; x float32 ``(N, 1, size, size)`` in [0, 1], y int64.

    The split is a seeded random permutation (the same ``seed`` gives the same split).
    Needs scikit-learn (``pip install 'minicnn[demo]'``).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn, which ships the digits data: "
                          "pip install 'minicnn[demo]' (or pip install scikit-learn)") from None
    if not (isinstance(size, (int, np.integer)) and size > 0 and size % 8 == 0):
        raise ValueError(f"load_digits: size must be a positive multiple of 8, got {size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits: test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sklearn_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[:, None]
    scale = int(size) // 8
    if scale > 1:
        x = x.repeat(scale, axis=2).repeat(scale, axis=3)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = random_split(np.ascontiguousarray(x), y, 1.0 - test_fraction, seed)
    return train, test
