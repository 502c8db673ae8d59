"""Hyper-parameter search: random or grid search on a validation split, within a budget.

Each trial builds the model afresh from the same seed (so trials differ only in their
hyperparameters), trains it with ``minicnn.train.fit`` for a few epochs and scores it by its best
validation accuracy over those epochs.  The search stops after ``trials`` trials or, with
``time_budget`` seconds, before starting a trial once the budget is spent (the first trial
always runs, and a trial that has started always finishes).  Everything random (sampling, splits, data order, initial weights)
follows ``seed``, so a search can be repeated.

A search space maps a hyperparameter to its candidates:

    {"lr": ("log", 1e-3, 0.3),          # log-uniform (random search); 4 log-spaced points (grid)
     "weight_decay": [0.0, 5e-4],       # a list: choose one (random) / every one (grid)
     "batch_size": [32, 64, 128],
     "augment": ["none", "default"]}    # names of entries of ``augmentations``

``("uniform", lo, hi)`` samples uniformly.  Keys other than ``augment`` go to ``fit`` as keyword
arguments (``momentum``, ``label_smoothing``, ``optimizer``, ...).
"""
import itertools
import json
import math
import os
import sys
import time

import numpy as np

from minicnn import models
from minicnn.io import write_text_atomic
from minicnn.train import NonFiniteLossError, fit

__all__ = ["tune", "TuneResult", "DEFAULT_SPACE", "sample_configs", "format_table"]

DEFAULT_SPACE = {
    "lr": ("log", 1e-3, 0.3),
    "weight_decay": [0.0, 1e-4, 5e-4, 1e-3],
    "batch_size": [32, 64, 128],
    "augment": ["none", "default"],
}

GRID_POINTS = 4          # points a continuous range contributes to a grid


# fit arguments that every trial sets itself: searching them would be silently overridden
FIXED_BY_TUNE = ("epochs", "seed", "progress", "out_dir", "monitor")


def _check_space(space):
    """The space with its list values as plain Python scalars (so that the results can be written
    as JSON); ValueError naming the key for anything a search could not use."""
    if not isinstance(space, dict) or not space:
        raise ValueError(f"tune: space must be a non-empty dict, got {space!r}")
    checked = {}
    for key, spec in space.items():
        if key in FIXED_BY_TUNE:
            raise ValueError(f"tune: {key!r} cannot be searched: every trial sets it (pass it "
                             f"to tune as an argument)")
        if isinstance(spec, tuple):
            if len(spec) != 3 or spec[0] not in ("log", "uniform") or key in ("augment", "batch_size"):
                raise ValueError(f"tune: space[{key!r}] must be ('log'|'uniform', low, high) or a "
                                 f"list ({key!r} takes only a list of choices), got {spec!r}")
            low, high = spec[1], spec[2]
            numbers_ok = all(isinstance(v, (int, float, np.integer, np.floating))
                             and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
            if not numbers_ok or not low <= high or (spec[0] == "log" and low <= 0):
                raise ValueError(f"tune: space[{key!r}] has an invalid range {spec!r}")
            checked[key] = (spec[0], float(low), float(high))
        elif isinstance(spec, list) and spec:
            values = [v.item() if isinstance(v, np.generic) else v for v in spec]
            if not all(isinstance(v, (str, int, float, bool, type(None))) for v in values):
                raise ValueError(f"tune: space[{key!r}] must list numbers or strings, got {spec!r}")
            if key == "batch_size" and not all(isinstance(v, int) and not isinstance(v, bool)
                                               and v >= 1 for v in values):
                raise ValueError(f"tune: space['batch_size'] must list positive ints, got {spec!r}")
            checked[key] = values
        else:
            raise ValueError(f"tune: space[{key!r}] must be a non-empty list or a range tuple, got {spec!r}")
    return checked


def _grid_values(spec):
    if isinstance(spec, list):
        return spec
    kind, low, high = spec
    if kind == "log":
        return [float(v) for v in np.geomspace(low, high, GRID_POINTS)]
    return [float(v) for v in np.linspace(low, high, GRID_POINTS)]


def _sample_value(spec, rng):
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    kind, low, high = spec
    if kind == "log":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def sample_configs(space, search="random", trials=10, seed=0):
    """The list of configs (dicts) a search would try, in order.

    Random: ``trials`` independent draws. Grid: the full product, visited in a seeded random order
    and cut to ``trials`` (so a short budget still spreads over the grid).
    """
    space = _check_space(space)
    if not isinstance(trials, (int, np.integer)) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"tune: trials must be a positive int, got {trials!r}")
    rng = np.random.default_rng(seed)
    keys = list(space)
    if search == "random":
        return [{k: _sample_value(space[k], rng) for k in keys} for _ in range(trials)]
    if search == "grid":
        grid = [dict(zip(keys, values)) for values in itertools.product(*(_grid_values(space[k]) for k in keys))]
        order = rng.permutation(len(grid))
        return [grid[i] for i in order[:trials]]
    raise ValueError(f"tune: search must be 'random' or 'grid', got {search!r}")


class TuneResult:
    """``trials``: list of dicts (config, val_accuracy, val_loss, epoch, time, status), ranked best
    first; ``best``: the first of them; ``table()``: the ranked table as text."""

    def __init__(self, trials, space, search, seed, elapsed):
        self.trials = trials
        self.space = space
        self.search = search
        self.seed = seed
        self.elapsed = elapsed

    @property
    def best(self):
        return self.trials[0] if self.trials else None

    def table(self):
        return format_table(self.trials)

    def __repr__(self):
        return f"TuneResult({len(self.trials)} trials, best={self.best})"


def _rank_key(trial):
    acc = trial["val_accuracy"]
    loss = trial["val_loss"]
    good = acc is not None and math.isfinite(acc)
    return (0 if good else 1, -(acc if good else 0.0),
            loss if loss is not None and math.isfinite(loss) else math.inf, trial["trial"])


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(trials):
    """A ranked markdown table of the trials."""
    if not trials:
        return "(no trials)"
    keys = list(trials[0]["config"])
    header = ["rank", "trial", *keys, "val_acc", "val_loss", "best_epoch", "time_s", "status"]
    rows = []
    for rank, t in enumerate(trials, 1):
        acc = "-" if t["val_accuracy"] is None or not math.isfinite(t["val_accuracy"]) \
            else f"{100 * t['val_accuracy']:.2f}%"
        loss = "-" if t["val_loss"] is None or not math.isfinite(t["val_loss"]) else f"{t['val_loss']:.4f}"
        rows.append([str(rank), str(t["trial"]), *[_fmt(t["config"][k]) for k in keys], acc, loss,
                     str(t["epoch"] or "-"), f"{t['time']:.1f}", t["status"]])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


def tune(train, val=None, *, model="digits_net", model_kwargs=None, space=None, search="random",
         trials=10, time_budget=None, epochs=3, val_fraction=0.2, augmentations=None, seed=0,
         out_dir=None, progress=True, stream=None, fit_kwargs=None):
    """Search hyperparameters; returns a ``TuneResult`` (trials ranked by validation accuracy).

    train: an ``(x, y)`` pair; without ``val`` a seeded ``val_fraction`` of it is held out.
    model: a zoo name (``minicnn.models.MODELS``) or a callable ``model(seed=...) -> Module``;
           ``model_kwargs`` go to it (num_classes, in_channels, input_size, ...).
    augmentations: {name: transform or None}; "none" -> None is always there, "default" is
           whatever the caller passes under that name (absent: "default" means no augmentation).
    fit_kwargs: fixed keyword arguments for ``fit`` (optimizer, momentum, schedule, ...).
    out_dir: if given, ``trials.json`` and ``best_config.json`` are written there.
    """
    from minicnn.data import train_val_split

    if time_budget is not None and not float(time_budget) > 0:
        raise ValueError(f"tune: time_budget must be > 0 seconds or None, got {time_budget}")
    if not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"tune: trials must be a positive int, got {trials!r}")
    space = _check_space(DEFAULT_SPACE if space is None else space)
    fixed = sorted(set(fit_kwargs or {}) & set(FIXED_BY_TUNE))
    if fixed:
        raise ValueError(f"tune: fit_kwargs {fixed} are set by every trial (pass them to tune)")
    augmentations = {"none": None, **(augmentations or {})}
    augmentations.setdefault("default", None)
    for name in space.get("augment", []) if isinstance(space.get("augment"), list) else []:
        if name not in augmentations:
            raise ValueError(f"tune: augment choice {name!r} is not in augmentations "
                             f"{sorted(augmentations)}")
    if val is None:
        x, y = train
        train, val = train_val_split(x, y, val_fraction=val_fraction, seed=seed)
    build = model if callable(model) else (lambda **kw: models.get_model(model, **kw))
    model_name = model if isinstance(model, str) else getattr(model, "__name__", "custom")
    model_kwargs = dict(model_kwargs or {})
    fit_kwargs = dict(fit_kwargs or {})
    stream = sys.stdout if stream is None else stream
    configs = sample_configs(space, search, trials, seed)

    results = []
    start = time.perf_counter()
    for index, config in enumerate(configs, 1):
        if index > 1 and time_budget is not None and time.perf_counter() - start >= time_budget:
            if progress:
                stream.write(f"tune: time budget of {time_budget:g}s spent after {index - 1} trials\n")
            break
        kwargs = {**fit_kwargs, **{k: v for k, v in config.items() if k != "augment"}}
        augment = augmentations[config["augment"]] if "augment" in config else fit_kwargs.get("augment")
        net = build(seed=seed, **model_kwargs)
        t0 = time.perf_counter()
        status, acc, loss, epoch = "ok", None, None, None
        try:
            history = fit(net, train, val, **{**kwargs, "epochs": epochs, "augment": augment,
                                              "seed": seed, "progress": False, "out_dir": None,
                                              "monitor": "val_accuracy"})
            best = history.best
            if best is not None:
                acc, epoch = best["value"], best["epoch"]
                loss = history.rows[epoch - 1]["val_loss"]
            else:
                status = "no finite score"
        except NonFiniteLossError:
            status = "diverged"
        trial = {"trial": index, "config": config, "val_accuracy": acc, "val_loss": loss,
                 "epoch": epoch, "time": time.perf_counter() - t0, "status": status}
        results.append(trial)
        if progress:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in config.items())
            score = f"val_acc {100 * acc:.2f}%" if acc is not None else status
            stream.write(f"trial {index}/{len(configs)}: {shown} -> {score} ({trial['time']:.1f}s)\n")
            stream.flush()

    results.sort(key=_rank_key)
    result = TuneResult(results, space, search, seed, time.perf_counter() - start)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        payload = {"model": model_name, "model_kwargs": model_kwargs, "search": search, "seed": seed,
                   "epochs": epochs, "space": {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in space.items()},
                   "trials": results}
        _write_json(os.path.join(out_dir, "trials.json"), payload)
        if result.best is not None and result.best["val_accuracy"] is not None:
            best = result.best
            _write_json(os.path.join(out_dir, "best_config.json"),
                        {"model": model_name, "model_kwargs": model_kwargs, "seed": seed,
                         "epochs": epochs, "config": best["config"], "fit_kwargs": _jsonable(fit_kwargs),
                         "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"],
                         "best_epoch": best["epoch"]})
    return result


def _jsonable(d):
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool, type(None)))}


def _write_json(path, payload):
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=True))
