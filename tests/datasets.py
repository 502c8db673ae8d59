"""Small synthetic datasets shared by the training and tuning tests."""
import numpy as np


def separable_set(n=240, seed=0):
    """Two classes of 1x8x8 images: a bright left half (0) or a bright right half (1), plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = 0.3 * rng.random((n, 1, 8, 8))
    x[y == 0, :, :, :4] += 0.7
    x[y == 1, :, :, 4:] += 0.7
    return x.astype(np.float32), y.astype(np.int64)
