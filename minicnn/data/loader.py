"""Mini-batches from in-memory arrays, shuffled by a seeded Generator, resumable bit for bit.

The loader is a cursor over a stream of epochs.  Each epoch draws its order with
``rng.permutation(N)`` (when ``shuffle``) and then yields ``ceil(N / batch_size)`` batches
(``floor`` with ``drop_last``); a transform draws its random numbers from the same Generator, in
batch order.  Iterating continues where the previous iteration stopped, so breaking out of a
loop and iterating again resumes the same epoch; an epoch ends when its last batch is yielded.

``state_dict()`` captures the position and the Generator's state as plain JSON data (ints,
strings, lists).  Because an epoch's order is a pure function of the Generator state it was drawn
from, that state is saved instead of the order itself; ``load_state_dict`` redraws the order and
puts the Generator back where it was, so the remaining batches -- and their random
augmentations -- are exactly those the original run would have produced.
"""
import numpy as np

from minicnn.data.split import _check_xy, as_generator


def _jsonable(value):
    """Generator states hold ints and (for MT19937) a uint32 array: make them plain JSON data."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def _from_jsonable(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


def generator_state(rng):
    """The state of a ``numpy.random.Generator`` as JSON-able data."""
    return _jsonable(rng.bit_generator.state)


def set_generator_state(rng, state):
    """Put a Generator back into a state from ``generator_state`` (same bit generator type)."""
    state = _from_jsonable(state)
    kind = type(rng.bit_generator).__name__
    if state.get("bit_generator") != kind:
        raise ValueError(f"Generator state is for {state.get('bit_generator')!r} but this loader's "
                         f"Generator uses {kind!r}")
    rng.bit_generator.state = state


class DataLoader:
    """Iterate ``(xb, yb)`` mini-batches over ``x`` (N, ...) and ``y`` (N,).

    rng: an int seed or a ``numpy.random.Generator`` (None means seed 0: runs repeat by default).
    transform: ``transform(xb, rng) -> xb`` applied to each batch (see ``minicnn.data.transforms``).
    Batches are copies; the dataset arrays are never modified.  One iteration at a time.
    """

    def __init__(self, x, y, batch_size=64, shuffle=True, rng=None, transform=None, drop_last=False):
        _check_xy(x, y, "DataLoader")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"DataLoader: transform must be callable as transform(xb, rng), "
                             f"got {type(transform).__name__}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.rng = as_generator(rng)
        if len(self) == 0:
            raise ValueError(f"DataLoader: {len(x)} samples with batch_size={batch_size} and "
                             f"drop_last={self.drop_last} give no batches")
        self.epoch = 0                 # epochs completed
        self._batch = 0                # index of the next batch within the current epoch
        self._order = None             # sample order of the current epoch (None: not drawn yet)
        self._epoch_rng_state = None   # Generator state the current order was drawn from

    @property
    def num_samples(self):
        return len(self.x)

    def __len__(self):
        """Batches per epoch."""
        n, bs = self.num_samples, self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def _draw_order(self):
        if self.shuffle:
            self._epoch_rng_state = generator_state(self.rng)
            self._order = self.rng.permutation(self.num_samples)
        else:
            self._order = np.arange(self.num_samples)

    def __iter__(self):
        if self._order is None:
            self._draw_order()
        num_batches = len(self)
        for k in range(self._batch, num_batches):
            idx = self._order[k * self.batch_size:(k + 1) * self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb, self.rng)
            # Advance the cursor before yielding, so a state_dict() taken while the caller holds
            # this batch resumes with the next one.
            self._batch = k + 1
            if self._batch == num_batches:
                self.epoch += 1
                self._batch, self._order, self._epoch_rng_state = 0, None, None
            yield xb, yb

    def state_dict(self):
        """Position and Generator state as JSON-able data (``json.dumps`` works on it)."""
        return {
            "epoch": self.epoch,
            "batch": self._batch,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "rng_state": generator_state(self.rng),
            "epoch_rng_state": self._epoch_rng_state if self._order is not None else None,
        }

    def load_state_dict(self, state):
        """Resume from ``state_dict()`` output; the loader must see the same data and settings.
        Nothing changes unless the whole state is accepted."""
        missing = [k for k in ("num_samples", "batch_size", "shuffle", "drop_last", "batch",
                               "epoch", "rng_state") if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"DataLoader.load_state_dict: the state lacks {missing}")
        for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"DataLoader.load_state_dict: saved {key}={state[key]!r} but this "
                                 f"loader has {key}={getattr(self, key)!r}")
        for key in ("batch", "epoch"):
            value = state[key]
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"DataLoader.load_state_dict: {key} must be an int >= 0, got "
                                 f"{value!r}")
        batch = int(state["batch"])
        if not 0 <= batch < len(self):
            raise ValueError(f"DataLoader.load_state_dict: batch {batch} out of range for {len(self)} "
                             f"batches per epoch")
        epoch_state = state.get("epoch_rng_state")
        if self.shuffle and batch > 0 and epoch_state is None:
            raise ValueError("DataLoader.load_state_dict: state is mid-epoch but has no epoch_rng_state")
        saved_rng = generator_state(self.rng)          # put back if a generator state is refused
        try:
            if self.shuffle and epoch_state is not None:
                set_generator_state(self.rng, epoch_state)
                epoch_rng_state = generator_state(self.rng)
                order = self.rng.permutation(self.num_samples)
            elif not self.shuffle and batch > 0:
                order, epoch_rng_state = np.arange(self.num_samples), None
            else:
                order, epoch_rng_state = None, None
            set_generator_state(self.rng, state["rng_state"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            set_generator_state(self.rng, saved_rng)
            raise ValueError(f"DataLoader.load_state_dict: a generator state does not fit this "
                             f"loader's generator ({type(exc).__name__}: {exc})") from None
        self._order, self._epoch_rng_state = order, epoch_rng_state
        self.epoch, self._batch = int(state["epoch"]), batch

    def __repr__(self):
        return (f"DataLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, batches={len(self)}, "
                f"transform={self.transform!r})")
