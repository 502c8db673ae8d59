"""Batch transforms: each is called as ``transform(x, rng) -> x`` on a whole NCHW batch.

Random parameters are drawn once per batch, one value per image, from the ``rng`` passed in (the
DataLoader's seeded Generator), in a fixed documented order, so a run can be repeated and resumed.
Transforms return new arrays (the input is never modified) of the input's dtype.  They run on
NumPy batches on the CPU (the trainer moves batches to the device afterwards).

Each transform's ``config()`` is a JSON-able dict (``{"name": ..., **arguments}``) that
``transform_from_config`` turns back into the transform.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from minicnn.functional._checks import pair


def _check_batch(x, op):
    if not hasattr(x, "ndim") or x.ndim != 4:
        raise ValueError(f"{op}: expected an NCHW batch (4-D array), got shape {tuple(np.shape(x))}")


def _check_rng(rng, op):
    if not hasattr(rng, "integers"):
        raise ValueError(f"{op}: needs a numpy.random.Generator as rng, got {type(rng).__name__}")


def crop_windows(x, top, left, size, padding):
    """Per-image crops of a zero-padded batch.

    ``out[n, c, i, j] = padded[n, c, top[n] + i, left[n] + j]`` where ``padded`` is ``x`` with
    ``padding = (ph, pw)`` zero rows/columns on each side; ``size = (out_h, out_w)``.
    """
    ph, pw = padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    # windows[n, c, i0, j0] is the (out_h, out_w) window whose top-left corner is (i0, j0);
    # indexing it with (n, top[n], left[n]) picks one window per image without copying the rest.
    windows = sliding_window_view(padded, size, axis=(2, 3))
    out = windows[np.arange(len(x)), :, top, left]  # (N, C, out_h, out_w)
    return np.ascontiguousarray(out)


class Transform:
    """Base class: subclasses define ``__call__(x, rng)`` and ``_args()``."""

    def _args(self):
        return {}

    def config(self):
        return {"name": type(self).__name__, **self._args()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._args().items())
        return f"{type(self).__name__}({args})"


class Normalize(Transform):
    """``out[:, c] = (x[:, c] - mean[c]) / std[c]``; mean/std a scalar or one value per channel."""

    def __init__(self, mean, std):
        self.mean = tuple(float(m) for m in np.atleast_1d(mean))
        self.std = tuple(float(s) for s in np.atleast_1d(std))
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: mean has {len(self.mean)} values but std has {len(self.std)}")
        if not (all(np.isfinite(self.mean)) and all(np.isfinite(s) and s > 0 for s in self.std)):
            raise ValueError(f"Normalize: mean must be finite and std positive and finite, got "
                             f"mean {self.mean}, std {self.std}")

    @classmethod
    def fit(cls, x):
        """Per-channel mean and (population) std of an NCHW dataset, computed in float64."""
        _check_batch(x, "Normalize.fit")
        if x.shape[0] == 0 or x.size == 0:
            raise ValueError(f"Normalize.fit: x holds no values (x.shape={tuple(x.shape)})")
        return cls(x.mean(axis=(0, 2, 3), dtype=np.float64), x.std(axis=(0, 2, 3), dtype=np.float64))

    def __call__(self, x, rng=None):
        _check_batch(x, "Normalize")
        if x.dtype.kind != "f":
            raise ValueError(f"Normalize: x must be floating (float32 or float64), got {x.dtype}")
        channels = x.shape[1]
        if len(self.mean) not in (1, channels):
            raise ValueError(f"Normalize: {len(self.mean)} mean/std values for x with {channels} "
                             f"channels (x.shape={tuple(x.shape)})")
        shape = (1, len(self.mean), 1, 1)
        mean = np.asarray(self.mean, dtype=x.dtype).reshape(shape)
        std = np.asarray(self.std, dtype=x.dtype).reshape(shape)
        if not np.all(std > 0):
            raise ValueError(f"Normalize: std {self.std} rounds to 0 in {x.dtype}")
        return (x - mean) / std

    def _args(self):
        return {"mean": list(self.mean), "std": list(self.std)}


class RandomCrop(Transform):
    """Zero-pad by ``padding`` on each side, then crop ``size`` at an independent random offset per image.

    Draws ``top = rng.integers(0, H + 2*ph - out_h + 1, size=N)`` then ``left`` likewise;
    ``out[n, :, i, j] = padded[n, :, top[n] + i, left[n] + j]``.
    """

    def __init__(self, size, padding=0):
        self.size = pair(size, "size", "RandomCrop", 1)
        self.padding = pair(padding, "padding", "RandomCrop", 0)

    def __call__(self, x, rng):
        _check_batch(x, "RandomCrop")
        _check_rng(rng, "RandomCrop")
        n, _, h, w = x.shape
        (out_h, out_w), (ph, pw) = self.size, self.padding
        if out_h > h + 2 * ph or out_w > w + 2 * pw:
            raise ValueError(f"RandomCrop: size {self.size} is larger than the padded image "
                             f"{(h + 2 * ph, w + 2 * pw)} (x.shape={tuple(x.shape)}, padding={self.padding})")
        top = rng.integers(0, h + 2 * ph - out_h + 1, size=n)
        left = rng.integers(0, w + 2 * pw - out_w + 1, size=n)
        return crop_windows(x, top, left, self.size, self.padding)

    def _args(self):
        return {"size": list(self.size), "padding": list(self.padding)}


class RandomTranslate(Transform):
    """Shift each image by a random (dy, dx) with ``|dy| <= max_shift_h``, ``|dx| <= max_shift_w``; zero fill.

    Draws ``dy = rng.integers(-mh, mh + 1, size=N)`` then ``dx`` likewise;
    ``out[n, :, i, j] = x[n, :, i - dy[n], j - dx[n]]`` (zero where that falls outside the image).
    """

    def __init__(self, max_shift):
        self.max_shift = pair(max_shift, "max_shift", "RandomTranslate", 0)

    def __call__(self, x, rng):
        _check_batch(x, "RandomTranslate")
        _check_rng(rng, "RandomTranslate")
        n, _, h, w = x.shape
        mh, mw = self.max_shift
        dy = rng.integers(-mh, mh + 1, size=n)
        dx = rng.integers(-mw, mw + 1, size=n)
        # With m zero rows on each side, padded[m + r] = x[r]: so x[i - dy] = padded[i + (m - dy)].
        return crop_windows(x, mh - dy, mw - dx, (h, w), (mh, mw))

    def _args(self):
        return {"max_shift": list(self.max_shift)}


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``: draws ``rng.random(N) < p``."""

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x, rng):
        _check_batch(x, "RandomHorizontalFlip")
        _check_rng(rng, "RandomHorizontalFlip")
        flip = rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out

    def _args(self):
        return {"p": self.p}


class Compose(Transform):
    """Apply transforms in order, each with the same ``rng``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose: {t!r} is not callable")

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def config(self):
        return {"name": "Compose", "transforms": [t.config() for t in self.transforms]}

    def __repr__(self):
        return f"Compose({self.transforms!r})"


TRANSFORMS = {cls.__name__: cls for cls in
              (Normalize, RandomCrop, RandomTranslate, RandomHorizontalFlip, Compose)}


def transform_from_config(config):
    """Rebuild a transform from its ``config()`` dict (None -> None)."""
    if config is None:
        return None
    config = dict(config)
    name = config.pop("name", None)
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r} (known: {sorted(TRANSFORMS)})")
    if name == "Compose":
        return Compose([transform_from_config(c) for c in config["transforms"]])
    return TRANSFORMS[name](**config)
