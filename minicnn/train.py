"""The training loop: ``fit`` / ``Trainer``, ``evaluate`` and ``predict_proba``.

One training step is the data flow of the whole package, written out::

    logits = model(x)                                   # forward, caches kept by each layer
    loss, dlogits = softmax_cross_entropy(logits, y)    # mean over the batch, and dL/dlogits
    model.backward(dlogits)                             # writes every parameter's gradient
    clip_grad_norm(model, clip_norm)                    # optional
    optimizer.step(); schedule.step()                   # update in place, then the next lr

Around it the trainer keeps: a plain-text progress bar (``\\r``, running loss / accuracy and
images/s), a validation pass every epoch, the history (in memory, and as ``history.csv`` /
``history.json`` in ``out_dir``), early stopping on a monitored metric, the best model
(``best.npz``, a ``minicnn.io`` model file) and the full training state after every epoch
(``last.npz``, a ``minicnn.io`` checkpoint).

Resuming is exact: ``last.npz`` holds the parameters and buffers, the optimizer and schedule
state, the data loader's and every random generator's state (shuffling, augmentation, dropout),
the epoch, the step within it and the history.  ``fit(..., resume="out/last.npz")`` therefore
continues bit for bit as if the run had never stopped (same machine, same thread count).

- A non-finite loss stops training with ``NonFiniteLossError``; ``last.npz`` is not overwritten,
  so it still holds the last good state.
- Ctrl-C (SIGINT) lets the current step finish, saves ``last.npz`` at that step and raises
  ``KeyboardInterrupt``; resuming from it continues mid-epoch, still bit for bit. A second Ctrl-C
  aborts at once (``last.npz`` then keeps the previous epoch).
- ``device="gpu"`` moves the model (``model.to``) and each batch once per step; the loss and the
  correct count stay on the device and are read back only every ``log_every`` steps and at the
  end of the epoch (so non-finite losses are noticed there, not at the very step). Per-step
  times there measure the launch of the work, not its completion.
"""
import contextlib
import csv
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from minicnn import io as mio
from minicnn import optim
from minicnn.backend import get_array_module, normalize_device, to_device, to_numpy
from minicnn.losses import softmax, softmax_cross_entropy

__all__ = ["Trainer", "fit", "evaluate", "predict_proba", "History", "NonFiniteLossError",
           "load_trained_model"]

CHECKPOINT_FORMAT = "minicnn-train"
CHECKPOINT_VERSION = 1
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "epoch_time", "images_per_s", "step_time_median"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; ``checkpoint`` names the last good state (or None)."""

    def __init__(self, message, history=None, checkpoint=None):
        super().__init__(message)
        self.history = history
        self.checkpoint = checkpoint


# ---------------------------------------------------------------- history

class History:
    """Per-epoch rows of metrics, plus how the run ended.

    ``rows``: list of dicts with the keys of ``HISTORY_COLUMNS`` (val_* are None without a
    validation set); ``history["val_accuracy"]`` gives one column as a list. ``best`` is
    ``{"monitor", "mode", "value", "epoch"}``; ``stop_reason`` one of "completed",
    "early stopping", "non-finite loss", "interrupted"; ``step_times`` the wall time of every
    training step this process ran (seconds).
    """

    def __init__(self, rows=None):
        self.rows = list(rows or [])
        self.best = None
        self.stop_reason = None
        self.message = ""
        self.step_times = []
        self.out_dir = None

    def __getitem__(self, key):
        return [row.get(key) for row in self.rows]

    def __len__(self):
        return len(self.rows)

    def last(self, key):
        return self.rows[-1].get(key) if self.rows else None

    def as_dict(self):
        return {"rows": self.rows, "best": self.best, "stop_reason": self.stop_reason,
                "message": self.message}

    def to_csv(self, path):
        mio.write_text_atomic(path, _csv_text(self.rows))

    def to_json(self, path, extra=None):
        payload = {**self.as_dict(), **(extra or {})}
        mio.write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=True))

    def __repr__(self):
        return f"History({len(self.rows)} epochs, stop_reason={self.stop_reason!r}, best={self.best})"


def _csv_text(rows):
    import io as _io
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_COLUMNS})
    return buffer.getvalue()


# ---------------------------------------------------------------- evaluation

def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _model_device(model):
    return getattr(model, "device", "cpu")


@contextlib.contextmanager
def _eval_mode(model):
    was_training = getattr(model, "training", True)
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def evaluate(model, x, y, batch_size=256, *, label_smoothing=0.0):
    """Loss, accuracy and predicted labels of ``model`` on ``(x, y)``, in eval mode.

    Returns ``{"loss": float, "accuracy": float in [0, 1], "predictions": int64 array (N,)}``;
    the model's train/eval mode is restored afterwards. Runs on the model's device.
    """
    x = np.asarray(x) if not hasattr(x, "shape") else x
    n = len(x)
    if n == 0:
        raise ValueError("evaluate: x holds no samples")
    if len(y) != n:
        raise ValueError(f"evaluate: x and y hold different numbers of samples "
                         f"(x.shape={tuple(x.shape)}, y.shape={tuple(np.shape(y))})")
    device = _model_device(model)
    dtype = getattr(model, "dtype", np.float32)
    loss_sum, predictions = 0.0, []
    with _eval_mode(model):
        for part in _batches(n, batch_size):
            xb = to_device(np.asarray(x[part], dtype=dtype), device)
            yb = to_device(np.asarray(y[part]), device)
            logits = model(xb)
            loss, _ = softmax_cross_entropy(logits, yb, label_smoothing)
            loss_sum = loss_sum + loss * (part.stop - part.start)     # stays on the device
            predictions.append(logits.argmax(axis=1))
    xp = get_array_module(predictions[0])
    predictions = to_numpy(xp.concatenate(predictions)).astype(np.int64)
    y_host = to_numpy(y).astype(np.int64)
    return {"loss": float(loss_sum) / n, "accuracy": float((predictions == y_host).mean()),
            "predictions": predictions}


def predict_proba(model, x, batch_size=256):
    """Softmax probabilities (N, num_classes) of ``model`` on ``x``, in eval mode, as NumPy."""
    device = _model_device(model)
    dtype = getattr(model, "dtype", np.float32)
    out = []
    with _eval_mode(model):
        for part in _batches(len(x), batch_size):
            logits = model(to_device(np.asarray(x[part], dtype=dtype), device))
            out.append(to_numpy(softmax(logits)))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=dtype)


# ---------------------------------------------------------------- progress display

class _Progress:
    """One status line rewritten with ``\\r`` (at most every 0.1 s) while an epoch runs.

    On a stream that is not a terminal only the per-epoch summary lines are written.
    """

    def __init__(self, enabled, stream=None):
        self.enabled = bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._width = 0

    def update(self, epoch, epochs, step, steps, loss, accuracy, images_per_s, force=False):
        if not self.live:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        bar_len = 24
        filled = int(bar_len * step / max(steps, 1))
        bar = "=" * filled + (">" if filled < bar_len else "") + " " * (bar_len - filled - 1)
        text = (f"epoch {epoch}/{epochs} [{bar[:bar_len]}] {step}/{steps}"
                f"  loss {loss:.4f}  acc {100 * accuracy:5.2f}%  {images_per_s:,.0f} img/s")
        self._write("\r" + text.ljust(self._width))
        self._width = len(text)

    def line(self, text):
        if not self.enabled:
            return
        if self.live:
            self._write("\r" + text.ljust(self._width) + "\n")
        else:
            self._write(text + "\n")
        self._width = 0

    def end(self):
        """Finish a half-written status line (before an error message)."""
        if self.live and self._width:
            self._write("\n")
            self._width = 0

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()


# ---------------------------------------------------------------- the trainer

_OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop}


def _find_generators(obj, prefix="", found=None, seen=None, depth=0):
    """{path: Generator} reachable through the attributes of minicnn objects (loader, transforms)."""
    found = {} if found is None else found
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return found
    seen.add(id(obj))
    if isinstance(obj, np.random.Generator):
        found[prefix or "rng"] = obj
        return found
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _find_generators(item, f"{prefix}.{i}" if prefix else str(i), found, seen, depth + 1)
        return found
    if isinstance(obj, dict):
        for key, item in obj.items():
            if isinstance(key, str):
                _find_generators(item, f"{prefix}.{key}" if prefix else key, found, seen, depth + 1)
        return found
    module = type(obj).__module__ or ""
    if module.startswith("minicnn") and hasattr(obj, "__dict__"):
        for key, item in vars(obj).items():
            if isinstance(item, (np.ndarray,)) or callable(getattr(item, "forward", None)):
                continue
            _find_generators(item, f"{prefix}.{key}" if prefix else key, found, seen, depth + 1)
    return found


class Trainer:
    """Train a classifier made of ``minicnn.nn`` modules with softmax cross-entropy.

    Arguments (all keyword):
      epochs, batch_size         number of passes over ``train`` and samples per step
      optimizer                  "sgd" | "adam" | "adamw" | "rmsprop" or an ``minicnn.optim`` object
      lr, momentum, weight_decay, nesterov   used to build a named optimizer
      schedule                   None | "none" | "step" | "cosine" or an ``LRScheduler`` object
      warmup                     epochs of linear learning-rate warm-up (may be fractional)
      schedule_interval          "step" (default: named schedules count iterations) or "epoch"
      clip_norm                  clip the global gradient norm to this value (None: no clipping)
      augment                    a transform handed to the DataLoader (applied to training batches)
      label_smoothing            epsilon of the smoothed targets (0: plain cross-entropy)
      seed                       seeds the data order and augmentation (the model has its own seed)
      out_dir                    where history.csv/json, best.npz and last.npz go (None: nowhere)
      monitor                    metric for the best model (default "val_accuracy", or "train_loss"
                                 without validation data); mode follows ("max" for accuracies)
      early_stopping             None, a patience (int), or a dict(patience=, monitor=, mode=, min_delta=)
      device                     "cpu" or "gpu"
      progress, log_every, stream  progress display; on a GPU the loss is read back every log_every steps
      eval_batch_size            batch size of the validation pass
      meta                       JSON-able dict stored with the checkpoints (class names, preprocessing)
    """

    def __init__(self, model, *, epochs=10, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9,
                 weight_decay=0.0, nesterov=False, schedule=None, warmup=0, schedule_interval="step",
                 clip_norm=None, augment=None, label_smoothing=0.0, seed=0, out_dir=None,
                 monitor=None, early_stopping=None, save_best=True, device="cpu", progress=True,
                 log_every=50, stream=None, eval_batch_size=256, meta=None):
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
        if schedule_interval not in ("step", "epoch"):
            raise ValueError(f"fit: schedule_interval must be 'step' or 'epoch', got {schedule_interval!r}")
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"fit: label_smoothing must be in [0, 1], got {label_smoothing}")
        if float(warmup) < 0:
            raise ValueError(f"fit: warmup must be >= 0 epochs, got {warmup}")
        if clip_norm is not None and not float(clip_norm) > 0:
            raise ValueError(f"fit: clip_norm must be > 0 or None, got {clip_norm}")
        if not isinstance(log_every, (int, np.integer)) or log_every < 1:
            raise ValueError(f"fit: log_every must be a positive int, got {log_every!r}")
        self.model = model
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.optimizer_spec = optimizer
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.nesterov = bool(nesterov)
        self.schedule_spec = schedule
        self.warmup = float(warmup)
        self.schedule_interval = schedule_interval
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.augment = augment
        self.label_smoothing = float(label_smoothing)
        self.seed = int(seed)
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.monitor = monitor
        self.early_stopping = early_stopping
        self.save_best = bool(save_best)
        self.device = normalize_device(device)
        self.progress = _Progress(progress, stream)
        self.log_every = int(log_every)
        self.eval_batch_size = int(eval_batch_size)
        self.meta = dict(meta or {})

        self.optimizer = None
        self.schedule = None
        self.loader = None
        self.history = History()
        self.epoch = 0                  # completed epochs
        self.step_in_epoch = 0          # completed steps of the current epoch (non-zero after an interrupt)
        self._partial = None            # running sums of the interrupted epoch
        self._wait = 0                  # epochs without improvement (early stopping)
        self._interrupt = False
        self._epoch_lr = None
        self._last_saved = None         # path of the last checkpoint this run wrote (or resumed from)

    # ------------------------------------------------------------ configuration

    def config(self):
        """The hyperparameters as JSON-able data (stored in checkpoints and history.json)."""
        def name_of(spec):
            return spec if spec is None or isinstance(spec, str) else type(spec).__name__
        augment = self.augment
        if augment is not None and hasattr(augment, "config"):
            try:
                augment = augment.config()
            except Exception:               # a transform that cannot describe itself
                augment = type(augment).__name__
        elif augment is not None:
            augment = getattr(augment, "__name__", type(augment).__name__)
        return {"epochs": self.epochs, "batch_size": self.batch_size,
                "optimizer": name_of(self.optimizer_spec), "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                "schedule": name_of(self.schedule_spec), "warmup": self.warmup,
                "schedule_interval": self.schedule_interval, "clip_norm": self.clip_norm,
                "augment": augment, "label_smoothing": self.label_smoothing, "seed": self.seed,
                "device": self.device}

    def _monitor_spec(self, has_val):
        es = self.early_stopping
        monitor = self.monitor
        if isinstance(es, dict) and es.get("monitor"):
            monitor = monitor or es["monitor"]
        if monitor is None:
            monitor = "val_accuracy" if has_val else "train_loss"
        if monitor not in HISTORY_COLUMNS:
            raise ValueError(f"fit: monitor must be one of {HISTORY_COLUMNS[2:6]}, got {monitor!r}")
        if monitor.startswith("val_") and not has_val:
            raise ValueError(f"fit: monitor={monitor!r} needs validation data (pass val=(x, y))")
        mode = "max" if "accuracy" in monitor else "min"
        if isinstance(es, dict) and es.get("mode"):
            mode = es["mode"]
        if mode not in ("min", "max"):
            raise ValueError(f"fit: early_stopping mode must be 'min' or 'max', got {mode!r}")
        return monitor, mode

    def _early_stopping_spec(self):
        es = self.early_stopping
        if es is None or es is False:
            return None
        if isinstance(es, (int, np.integer)) and not isinstance(es, bool):
            es = {"patience": int(es)}
        if not isinstance(es, dict):
            raise ValueError(f"fit: early_stopping must be None, a patience int or a dict, got {es!r}")
        patience = es.get("patience", 5)
        if not isinstance(patience, (int, np.integer)) or patience < 1:
            raise ValueError(f"fit: early_stopping patience must be a positive int, got {patience!r}")
        return {"patience": int(patience), "min_delta": float(es.get("min_delta", 0.0))}

    def _build_optimizer(self):
        spec = self.optimizer_spec
        if not isinstance(spec, str):
            if not (hasattr(spec, "step") and hasattr(spec, "state_dict")):
                raise ValueError(f"fit: optimizer must be a name {sorted(_OPTIMIZERS)} or an optimizer "
                                 f"object, got {spec!r}")
            return spec
        key = spec.lower()
        if key not in _OPTIMIZERS:
            raise ValueError(f"fit: unknown optimizer {spec!r}; choose one of {sorted(_OPTIMIZERS)}")
        if key == "sgd":
            return optim.SGD(self.model, lr=self.lr, momentum=self.momentum,
                             weight_decay=self.weight_decay, nesterov=self.nesterov)
        if key == "rmsprop":
            return optim.RMSprop(self.model, lr=self.lr, momentum=self.momentum,
                                 weight_decay=self.weight_decay)
        return _OPTIMIZERS[key](self.model, lr=self.lr, weight_decay=self.weight_decay)

    def _build_schedule(self, steps_per_epoch):
        spec = self.schedule_spec
        if spec is not None and not isinstance(spec, str):
            return spec
        per_epoch = steps_per_epoch if self.schedule_interval == "step" else 1
        total = max(self.epochs * per_epoch, 1)
        warmup = int(round(self.warmup * per_epoch))
        key = "none" if spec is None else spec.lower()
        if key == "none":
            after = None
        elif key == "step":
            # lr x 0.1 after each third of the run
            after = optim.StepLR(self.optimizer, step_size=max((total - warmup) // 3, 1), gamma=0.1)
        elif key == "cosine":
            after = optim.CosineAnnealingLR(self.optimizer, T_max=max(total - warmup, 1))
        else:
            raise ValueError(f"fit: unknown schedule {spec!r}; choose 'none', 'step' or 'cosine' "
                             "or pass an LRScheduler object")
        if warmup > 0:
            return optim.LinearWarmup(self.optimizer, warmup, after=after)
        return after

    def _build_loader(self, train):
        if isinstance(train, (tuple, list)) and len(train) == 2:
            from minicnn.data import DataLoader
            x, y = train
            if len(x) != len(y):
                raise ValueError(f"fit: x and y hold different numbers of samples "
                                 f"(x.shape={tuple(np.shape(x))}, y.shape={tuple(np.shape(y))})")
            if len(x) == 0:
                raise ValueError("fit: the training set is empty")
            return DataLoader(x, y, batch_size=self.batch_size, shuffle=True,
                              rng=np.random.default_rng(self.seed), transform=self.augment,
                              drop_last=False)
        if hasattr(train, "__iter__") and hasattr(train, "state_dict"):
            if self.augment is not None:
                raise ValueError("fit: augment applies to an (x, y) pair; give your DataLoader "
                                 "its transform instead")
            return train                     # a DataLoader built by the caller
        raise ValueError("fit: train must be an (x, y) pair or a DataLoader")

    # ------------------------------------------------------------ state (checkpoints)

    def _data_generators(self):
        return _find_generators(self.loader, "loader")

    def _data_state(self):
        loader_state = self.loader.state_dict() if hasattr(self.loader, "state_dict") else None
        return {"loader": loader_state,
                "generators": {k: g.bit_generator.state for k, g in self._data_generators().items()}}

    def _load_data_state(self, state):
        if state.get("loader") is not None and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state["loader"])
        generators = self._data_generators()
        for path, g_state in state.get("generators", {}).items():
            if path in generators:
                generators[path].bit_generator.state = g_state

    def state_dict(self, partial=None):
        """Everything needed to continue exactly: model, optimizer, schedule, data, progress, history."""
        model = self.model
        generators = model.generators() if hasattr(model, "generators") else {}
        try:
            architecture = model.config()
        except Exception:                   # a module that cannot describe itself
            architecture = None
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "architecture": architecture,
            "model": model.state_dict(),
            "model_generators": {k: g.bit_generator.state for k, g in generators.items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "data": self._data_state(),
            "progress": {"epoch": self.epoch, "step": self.step_in_epoch, "partial": partial},
            "history": self.history.rows,
            "best": self.history.best,
            "early_stopping_wait": self._wait,
            "config": self.config(),
            "meta": self.meta,
        }

    def load_state_dict(self, state):
        """Continue from ``state`` (a checkpoint's contents); ValueError when it is not one."""
        try:
            self._load_state(state)
        except (KeyError, TypeError, AttributeError) as exc:
            what = f"it lacks {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise ValueError(f"resume: damaged checkpoint ({what})") from None

    def _load_state(self, state):
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: not a training checkpoint (format {state.get('format')!r}); "
                             "resume from the last.npz that fit() writes")
        try:
            self.model.load_state_dict(state["model"])
        except ValueError as exc:
            raise ValueError(f"resume: the checkpoint does not fit this model: {exc}") from None
        generators = self.model.generators() if hasattr(self.model, "generators") else {}
        for path, g_state in state.get("model_generators", {}).items():
            if path in generators:
                generators[path].bit_generator.state = g_state
        self.optimizer.load_state_dict(state["optimizer"])
        if (state.get("schedule") is None) != (self.schedule is None):
            raise ValueError("resume: the checkpoint and this run differ in whether an lr schedule "
                             f"is used (checkpoint: {state.get('schedule')}, now: {self.schedule})")
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        self._load_data_state(state["data"])
        progress = state["progress"]
        self.epoch, self.step_in_epoch = int(progress["epoch"]), int(progress["step"])
        self._partial = progress.get("partial")
        self.history.rows = list(state["history"])
        self.history.best = state.get("best")
        self._wait = int(state.get("early_stopping_wait", 0))
        if not self.meta:
            self.meta = dict(state.get("meta") or {})

    def _path(self, name):
        return None if self.out_dir is None else os.path.join(self.out_dir, name)

    def save_checkpoint(self, partial=None):
        """Write ``last.npz`` (atomic) and return its path, or None without an out_dir."""
        path = self._path("last.npz")
        if path is not None:
            mio.save_checkpoint(path, self.state_dict(partial))
            self._last_saved = path
        return path

    def _write_history(self):
        if self.out_dir is None:
            return
        self.history.to_csv(self._path("history.csv"))
        self.history.to_json(self._path("history.json"),
                             {"config": self.config(), "meta": self.meta})

    # ------------------------------------------------------------ interrupts

    @contextlib.contextmanager
    def _deferred_sigint(self):
        """While training, the first Ctrl-C only raises a flag checked after each step."""
        self._interrupt = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._interrupt:
                raise KeyboardInterrupt
            self._interrupt = True
            sys.stderr.write("\nminicnn: interrupt: finishing this step, then saving a checkpoint "
                             "(Ctrl-C again to abort at once)\n")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # ------------------------------------------------------------ the loop

    def fit(self, train, val=None, *, resume=None):
        """Train; returns the ``History``. ``resume``: a ``last.npz`` to continue from."""
        model = self.model
        if val is not None:
            if not (isinstance(val, (tuple, list)) and len(val) == 2):
                raise ValueError("fit: val must be an (x, y) pair or None")
            if len(val[0]) != len(val[1]) or len(val[0]) == 0:
                raise ValueError(f"fit: val x and y must be non-empty and of equal length, got "
                                 f"{len(val[0])} and {len(val[1])}")
        monitor, mode = self._monitor_spec(val is not None)
        stopping = self._early_stopping_spec()
        if self.out_dir is not None:
            os.makedirs(self.out_dir, exist_ok=True)

        if self.device != _model_device(model):
            model.to(self.device)
        self.loader = self._build_loader(train)
        steps_per_epoch = len(self.loader)
        self.optimizer = self._build_optimizer()
        self.schedule = self._build_schedule(steps_per_epoch)
        if resume is not None:
            self.load_state_dict(mio.load_checkpoint(resume))
            self._last_saved = os.fspath(resume)
        self.history.out_dir = self.out_dir

        # The first layer's input is the data: nobody needs dL/dx there.
        needs_input_grad = getattr(model, "needs_input_grad", True)
        model.needs_input_grad = False
        try:
            with self._deferred_sigint():
                self._run(val, steps_per_epoch, monitor, mode, stopping)
        finally:
            model.needs_input_grad = needs_input_grad
        return self.history

    def _run(self, val, steps_per_epoch, monitor, mode, stopping):
        model, history = self.model, self.history
        history.stop_reason = "completed"
        while self.epoch < self.epochs:
            # the lr the epoch started with (an interrupted epoch saved its own)
            lr_at_start = (self._partial or {}).get("lr", self.optimizer.lr)
            self._epoch_lr = lr_at_start
            train_loss, train_acc, seen, elapsed, step_times = self._train_epoch(steps_per_epoch)
            if not self._parameters_finite():
                # The last update overflowed: stop before a checkpoint records it.
                self._stop_non_finite(float("nan"), self.step_in_epoch, what="a parameter")
            self.epoch += 1
            self.step_in_epoch = 0
            self._partial = None
            if self.schedule is not None and self.schedule_interval == "epoch":
                self.schedule.step()

            row = {"epoch": self.epoch, "lr": lr_at_start, "train_loss": train_loss,
                   "train_accuracy": train_acc, "val_loss": None, "val_accuracy": None,
                   "epoch_time": elapsed, "images_per_s": seen / elapsed if elapsed > 0 else None,
                   "step_time_median": float(np.median(step_times)) if step_times else None}
            if val is not None:
                result = evaluate(model, val[0], val[1], self.eval_batch_size,
                                  label_smoothing=self.label_smoothing)
                row["val_loss"], row["val_accuracy"] = result["loss"], result["accuracy"]
                if not math.isfinite(result["loss"]):       # overflowed weights: stop before saving
                    self._stop_non_finite(result["loss"], steps_per_epoch, what="the validation loss",
                                          epoch=self.epoch)
            history.rows.append(row)

            improved = self._update_best(row, monitor, mode, stopping)
            if improved and self.save_best and self.out_dir is not None:
                mio.save_model(model, self._path("best.npz"),
                               run={"meta": self.meta, "config": self.config()})
            self.save_checkpoint()
            self._write_history()
            self.progress.line(self._summary(row))

            if self._interrupt:                 # Ctrl-C during validation or saving
                history.stop_reason = "interrupted"
                history.message = (f"interrupted after epoch {self.epoch}: checkpoint saved to "
                                   f"{self._path('last.npz')}" if self.out_dir else
                                   f"interrupted after epoch {self.epoch} (no out_dir, nothing saved)")
                self._write_history()
                raise KeyboardInterrupt(history.message)
            if stopping is not None and self._wait >= stopping["patience"]:
                best = history.best
                history.stop_reason = "early stopping"
                history.message = (f"early stopping: {monitor} did not improve for {self._wait} epochs "
                                   f"(best {best['value']:.4f} at epoch {best['epoch']})")
                self.progress.line(history.message)
                self._write_history()
                break
        return history

    def _update_best(self, row, monitor, mode, stopping):
        value = row[monitor]
        best = self.history.best
        min_delta = stopping["min_delta"] if stopping else 0.0
        if best is None or best.get("monitor") != monitor:
            improved = value is not None and math.isfinite(value)
        elif mode == "max":
            improved = value > best["value"] + min_delta
        else:
            improved = value < best["value"] - min_delta
        if improved:
            self.history.best = {"monitor": monitor, "mode": mode, "value": value, "epoch": row["epoch"]}
            self._wait = 0
        else:
            self._wait += 1
        return improved

    def _summary(self, row):
        parts = [f"epoch {row['epoch']}/{self.epochs}", f"loss {row['train_loss']:.4f}",
                 f"acc {100 * row['train_accuracy']:.2f}%"]
        if row["val_loss"] is not None:
            parts += [f"val_loss {row['val_loss']:.4f}", f"val_acc {100 * row['val_accuracy']:.2f}%"]
        parts += [f"lr {row['lr']:.4g}", f"{row['epoch_time']:.1f}s"]
        if row["images_per_s"]:
            parts.append(f"{row['images_per_s']:,.0f} img/s")
        return "  ".join(parts)

    def _train_epoch(self, steps_per_epoch):
        """One pass over the loader; returns (mean loss, accuracy, samples, seconds, step times)."""
        model, optimizer, schedule = self.model, self.optimizer, self.schedule
        on_gpu = self.device == "gpu"
        dtype = model.dtype
        partial = self._partial or {}
        loss_sum = float(partial.get("loss_sum", 0.0))       # on the GPU these become device scalars
        correct = int(partial.get("correct", 0))
        seen = int(partial.get("seen", 0))
        elapsed_before = float(partial.get("elapsed", 0.0))
        step = self.step_in_epoch               # non-zero when resuming an interrupted epoch
        step_times = []
        model.train()
        start = time.perf_counter()
        batches = iter(self.loader)             # the loader continues where its state says
        synced_loss, synced_acc = (loss_sum / seen if seen else 0.0), (correct / seen if seen else 0.0)
        for xb, yb in batches:
            t0 = time.perf_counter()
            if xb.dtype != dtype:
                xb = xb.astype(dtype)
            xb, yb = to_device(xb, self.device), to_device(yb, self.device)
            n = len(yb)

            logits = model(xb)
            loss, dlogits = softmax_cross_entropy(logits, yb, self.label_smoothing)
            if not on_gpu and not math.isfinite(float(loss)):
                self._stop_non_finite(float(loss), step + 1)
            model.backward(dlogits)
            if self.clip_norm is not None:
                optim.clip_grad_norm(model, self.clip_norm)
            optimizer.step()
            if schedule is not None and self.schedule_interval == "step":
                schedule.step()

            batch_correct = (logits.argmax(axis=1) == yb).sum()
            if on_gpu:
                loss_sum = loss_sum + loss * n               # no host sync here
                correct = correct + batch_correct
            else:
                loss_sum += float(loss) * n
                correct += int(batch_correct)
            seen += n
            step += 1
            self.step_in_epoch = step
            step_times.append(time.perf_counter() - t0)

            sync = (not on_gpu) or step % self.log_every == 0 or step == steps_per_epoch
            if sync:
                total = float(loss_sum)
                if on_gpu and not math.isfinite(total):
                    self._stop_non_finite(total, step)
                synced_loss, synced_acc = total / seen, int(correct) / seen
            elapsed = elapsed_before + time.perf_counter() - start
            self.progress.update(self.epoch + 1, self.epochs, step, steps_per_epoch, synced_loss,
                                 synced_acc, seen / elapsed if elapsed > 0 else 0.0,
                                 force=step == steps_per_epoch)
            if self._interrupt:
                self._stop_interrupted(float(loss_sum), int(correct), seen, elapsed)

        self.history.step_times.extend(step_times)
        elapsed = elapsed_before + time.perf_counter() - start
        if seen == 0:
            raise ValueError("fit: the data loader yielded no batches")
        return float(loss_sum) / seen, int(correct) / seen, seen, elapsed, step_times

    def _parameters_finite(self):
        for p in self.model.parameters().values():
            xp = get_array_module(p)
            if not bool(xp.isfinite(p).all()):
                return False
        return True

    def _stop_non_finite(self, value, step, what="the loss", epoch=None):
        epoch = self.epoch + 1 if epoch is None else epoch
        kept = self._last_saved                 # written by this run, or the one it resumed from
        where = (f"{kept} (epoch {self.history.rows[-1]['epoch']})" if kept and self.history.rows
                 else kept or "none (no epoch finished" + ("" if self.out_dir else ", no out_dir") + ")")
        message = (f"training stopped: {what} became {value} at epoch {epoch}, step {step} "
                   f"(lr {self.optimizer.lr:.4g}); try a smaller lr or clip_norm. "
                   f"Last good checkpoint: {where}")
        self.history.stop_reason = "non-finite loss"
        self.history.message = message
        self.progress.end()
        self._write_history()
        raise NonFiniteLossError(message, self.history, kept)

    def _stop_interrupted(self, loss_sum, correct, seen, elapsed):
        partial = {"loss_sum": loss_sum, "correct": correct, "seen": seen, "elapsed": elapsed,
                   "lr": self._epoch_lr}
        path = self.save_checkpoint(partial)          # the loader's state is mid-epoch
        self.history.stop_reason = "interrupted"
        where = (f"checkpoint saved to {path}; continue with resume={path!r} (minicnn train --resume)"
                 if path else "no out_dir, so no checkpoint was saved")
        self.history.message = f"interrupted at epoch {self.epoch + 1}, step {self.step_in_epoch}: {where}"
        self.progress.end()
        self._write_history()
        raise KeyboardInterrupt(self.history.message)


def fit(model, train, val=None, *, resume=None, **kwargs):
    """Train ``model`` on ``train`` (an ``(x, y)`` pair or a DataLoader); see ``Trainer`` for the
    keyword arguments. Returns the ``History``."""
    return Trainer(model, **kwargs).fit(train, val, resume=resume)


# ---------------------------------------------------------------- loading what training wrote

def load_trained_model(path):
    """(model, info) from a ``best.npz`` (model file) or ``last.npz`` (checkpoint) written by ``fit``.

    ``info`` holds the run's ``meta`` (class names, preprocessing) and ``config`` when known:
    from the file itself, or, for a model file written before it kept them, from the
    ``history.json`` beside it.
    """
    from minicnn.nn import module_from_config
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("best.npz", "last.npz"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError(f"{path}: no best.npz or last.npz in this folder")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _, header_meta = mio.load_arrays(path)
    info = {"path": path, "meta": {}, "config": None}
    if "architecture" in header_meta:                      # a model file (best.npz)
        model = mio.load_model(path)
        sidecar = os.path.join(os.path.dirname(path) or ".", "history.json")
        if isinstance(header_meta.get("run"), dict):
            run = header_meta["run"]
            info["meta"], info["config"] = run.get("meta") or {}, run.get("config")
        elif os.path.exists(sidecar):
            with open(sidecar, encoding="utf-8") as f:
                run = json.load(f)
            info["meta"], info["config"] = run.get("meta") or {}, run.get("config")
        return model, info
    state = mio.load_checkpoint(path)
    if (not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT
            or state.get("architecture") is None):
        raise ValueError(f"{path}: neither a model file nor a training checkpoint with an architecture")
    try:
        model = module_from_config(state["architecture"])
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc})") from None
    meta = state.get("meta")
    info["meta"], info["config"] = meta if isinstance(meta, dict) else {}, state.get("config")
    return model, info
