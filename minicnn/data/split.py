"""Seeded random splits of a labelled dataset."""
import numbers

import numpy as np


def as_generator(rng):
    """An int seed or a ``numpy.random.Generator`` -> a Generator (None means seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng: a seed must be an int >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def _check_xy(x, y, op):
    """x and y: arrays (NumPy or CuPy) with one entry per sample."""
    for name, a in (("x", x), ("y", y)):
        if not (hasattr(a, "shape") and hasattr(a, "dtype")) or len(a.shape) == 0:
            raise TypeError(f"{op}: {name} must be an array with a sample axis (use np.asarray), "
                            f"got {type(a).__name__}")
    if len(x) != len(y):
        raise ValueError(f"{op}: x and y hold different numbers of samples "
                         f"(x.shape={tuple(np.shape(x))}, y.shape={tuple(np.shape(y))})")


def random_split(x, y, fraction, seed=0):
    """Shuffle the samples with ``seed`` and cut them in two -> ``((x_a, y_a), (x_b, y_b))``.

    Part a holds ``round(fraction * N)`` samples, part b the rest; both must be non-empty.
    Within each part the samples keep their original relative order.
    """
    _check_xy(x, y, "random_split")
    n = len(x)
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < fraction < 1.0:
        raise ValueError(f"random_split: fraction must be a number in (0, 1), got {fraction!r}")
    n_a = int(round(fraction * n))
    if n_a == 0 or n_a == n:
        raise ValueError(f"random_split: fraction={fraction} of {n} samples leaves a part empty")
    order = as_generator(seed).permutation(n)
    idx_a, idx_b = np.sort(order[:n_a]), np.sort(order[n_a:])
    return (x[idx_a], y[idx_a]), (x[idx_b], y[idx_b])


def train_val_split(x, y, val_fraction=0.1, seed=0):
    """Hold out ``round(val_fraction * N)`` random samples -> ``((x_train, y_train), (x_val, y_val))``."""
    _check_xy(x, y, "train_val_split")
    if (isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real)
            or not 0.0 < val_fraction < 1.0):
        raise ValueError(f"train_val_split: val_fraction must be a number in (0, 1), got {val_fraction!r}")
    n = len(x)
    n_val = int(round(val_fraction * n))
    if n_val == 0 or n_val == n:
        raise ValueError(f"train_val_split: val_fraction={val_fraction} of {n} samples leaves a part empty")
    return random_split(x, y, (n - n_val) / n, seed)
