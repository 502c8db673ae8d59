"""The ``minicnn`` command: train, evaluate, predict, gradcheck, bench, info, tune.

    minicnn train                        # digits_net on scikit-learn's 8x8 digits, a few seconds
    minicnn train --dataset fashion-mnist --model fashion_net --epochs 15 --augment --plot
    minicnn evaluate runs/digits_net-digits            # accuracy, confusion matrix, report
    minicnn predict runs/digits_net-digits image.png batch.npy
    minicnn gradcheck --model lenet5                   # float64, per-tensor relative errors
    minicnn tune --trials 8 --time-budget 120          # random search on a validation split
    minicnn bench ... / minicnn info

Errors print one line, ``minicnn: error: ...``, and exit with status 2 (``--debug`` shows the
traceback instead). Ctrl-C during training saves a checkpoint and exits with status 130.
"""
import argparse
import json
import math
import os
import shlex
import sys

import numpy as np

__all__ = ["main", "build_parser"]

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder")

# Per-dataset defaults: model, epochs, batch size, lr (SGD with momentum 0.9).
DATASET_DEFAULTS = {
    "digits": {"model": "digits_net", "epochs": 10, "batch_size": 32, "lr": 0.05},
    "mnist": {"model": "lenet5", "epochs": 5, "batch_size": 128, "lr": 0.05},
    "fashion-mnist": {"model": "lenet5", "epochs": 10, "batch_size": 128, "lr": 0.05},
    "cifar10": {"model": "cifar_convnet", "epochs": 20, "batch_size": 64, "lr": 0.01},
    "folder": {"model": "cifar_convnet", "epochs": 20, "batch_size": 32, "lr": 0.01},
}
DEFAULT_ROOTS = {"mnist": "data/mnist", "cifar10": "data/cifar10"}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: ``minicnn: error: ... (see 'PROG --help')``."""

    def error(self, message):
        sys.stderr.write(f"minicnn: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


# ---------------------------------------------------------------- data

def _augmentation(dataset, size, channels):
    """The default augmentation of a dataset (used by ``--augment``)."""
    from minicnn.data import Compose, RandomCrop, RandomHorizontalFlip, RandomTranslate
    if dataset == "digits":
        return RandomTranslate(1)
    if dataset == "mnist":
        return RandomTranslate(2)
    if dataset == "fashion-mnist":
        return Compose([RandomHorizontalFlip(), RandomCrop(size, padding=2)])
    return Compose([RandomHorizontalFlip(), RandomCrop(size, padding=max(size // 8, 1))])


def load_dataset(name, root=None, *, image_size=None, grayscale=False, seed=0, splits=("train", "test")):
    """{"train": (x, y) or None, "test": (x, y) or None, "classes": [...]} for a CLI dataset name."""
    from minicnn import data
    if name not in DATASETS:
        raise CLIError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        size = image_size or 8
        train, test = data.load_digits(test_fraction=0.2, seed=0, size=size)
        classes = data.DIGITS_CLASSES
    elif name == "mnist":
        root = root or DEFAULT_ROOTS["mnist"]
        if splits == ("test",):            # the test files alone are enough (e.g. shared/data/mnist)
            train, test = None, data.load_mnist_split(root, "test")
        else:
            train, test = data.load_mnist(root)
        classes = data.MNIST_CLASSES
    elif name == "fashion-mnist":
        train, test = data.load_fashion_mnist(root)
        classes = data.FASHION_MNIST_CLASSES
    elif name == "cifar10":
        train, test = data.load_cifar10(root or DEFAULT_ROOTS["cifar10"])
        classes = data.CIFAR10_CLASSES
    else:
        if root is None:
            raise CLIError("--dataset folder needs --data-root ROOT (images in ROOT/<class>/)")
        x, y, classes = data.load_image_folder(root, size=image_size or 32, grayscale=grayscale)
        train, test = data.random_split(x, y, 0.8, seed=seed)
    return {"train": train, "test": test, "classes": list(classes), "name": name}


def _normalizer(meta):
    from minicnn.data import Normalize
    pre = meta.get("normalize")
    return None if not pre else Normalize(pre["mean"], pre["std"])


def _prepare(x, meta):
    """Apply the preprocessing a model was trained with (stored in its run's meta)."""
    norm = _normalizer(meta)
    x = np.asarray(x, dtype=np.float32)
    return x if norm is None else norm(x).astype(np.float32, copy=False)


# ---------------------------------------------------------------- train

def _apply_config_file(args):
    """``--config best_config.json`` (from ``minicnn tune``) fills options not given explicitly."""
    if not args.config:
        return
    try:
        with open(args.config, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as exc:
        raise CLIError(f"--config {args.config}: cannot read it ({exc})") from None
    if not isinstance(saved, dict) or not all(
            isinstance(saved.get(k, {}), dict) for k in ("fit_kwargs", "config")):
        raise CLIError(f"--config {args.config}: not a best_config.json written by minicnn tune")
    values = {**saved.get("fit_kwargs", {}), **saved.get("config", {})}
    if saved.get("model") and args.model is None:
        args.model = saved["model"]
    # each value passes the check its command-line option has
    checks = {"lr": _non_negative_float, "weight_decay": _non_negative_float,
              "batch_size": _positive_int, "momentum": _non_negative_float,
              "optimizer": _optimizer_name, "label_smoothing": _non_negative_float}
    for key, check in checks.items():
        if key in values and getattr(args, key) is None:
            try:
                setattr(args, key, check(str(values[key])))
            except argparse.ArgumentTypeError as exc:
                raise CLIError(f"--config {args.config}: {key}: {exc}") from None
    if values.get("augment") == "default" and not args.augment:
        args.augment = True


def cmd_train(args):
    from minicnn import backend, models
    from minicnn.data import Compose, Normalize, train_val_split
    from minicnn.train import NonFiniteLossError, Trainer, evaluate

    _apply_config_file(args)
    if args.plot:
        _require_matplotlib()
    defaults = DATASET_DEFAULTS[args.dataset]
    model_name = args.model or defaults["model"]
    if model_name not in models.MODELS:
        raise CLIError(f"unknown model {model_name!r}; choose one of {', '.join(models.MODELS)}")
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    lr = defaults["lr"] if args.lr is None else args.lr
    if args.threads:
        backend.set_num_threads(args.threads)
    if args.device == "gpu" and not backend.gpu_available():
        raise CLIError("--device gpu needs CuPy and an NVIDIA GPU (pip install 'minicnn[gpu]')")

    ds = load_dataset(args.dataset, args.data_root, image_size=args.image_size,
                      grayscale=args.grayscale, seed=args.seed)
    x_train, y_train = ds["train"]
    if args.limit_train is not None:
        if args.limit_train < 2:
            raise CLIError(f"--limit-train must be >= 2, got {args.limit_train}")
        x_train, y_train = x_train[:args.limit_train], y_train[:args.limit_train]
    val = None
    if args.val_fraction > 0:
        (x_train, y_train), val = train_val_split(x_train, y_train, val_fraction=args.val_fraction,
                                                  seed=args.seed)
    channels, size = x_train.shape[1], x_train.shape[2]
    num_classes = len(ds["classes"])
    dtype = np.dtype(args.dtype)

    # Per-channel standardisation from the training images; stored with the run for predict.
    norm = Normalize.fit(x_train)
    meta = {"dataset": args.dataset, "data_root": args.data_root, "model": model_name,
            "classes": ds["classes"], "input_shape": [int(channels), int(size), int(x_train.shape[3])],
            "normalize": {"mean": list(norm.mean), "std": list(norm.std)},
            "image_size": args.image_size, "grayscale": args.grayscale}
    augment = None
    if args.augment:
        augment = Compose([_augmentation(args.dataset, size, channels), norm])   # augment, then normalise
    else:
        x_train = norm(x_train).astype(np.float32, copy=False)
    if val is not None:
        val = (_prepare(val[0], meta).astype(dtype, copy=False), val[1])
    if not args.augment:
        x_train = x_train.astype(dtype, copy=False)

    try:
        model = models.get_model(model_name, num_classes=num_classes, in_channels=int(channels),
                                 input_size=int(size), seed=args.seed, dtype=dtype)
    except ValueError as exc:
        raise CLIError(f"{exc} (the {args.dataset} images are {channels}x{size}x{x_train.shape[3]}; "
                       f"pick another --model or --image-size)") from None
    out_dir = args.out or os.path.join("runs", f"{model_name}-{args.dataset}")
    trainer = Trainer(model, epochs=epochs, batch_size=batch_size, optimizer=args.optimizer or "sgd",
                      lr=lr, momentum=0.9 if args.momentum is None else args.momentum,
                      weight_decay=args.weight_decay or 0.0, nesterov=args.nesterov,
                      schedule=args.schedule, warmup=args.warmup, clip_norm=args.clip_norm,
                      augment=augment, label_smoothing=args.label_smoothing or 0.0, seed=args.seed,
                      out_dir=out_dir, early_stopping=args.early_stopping, device=args.device,
                      progress=not args.quiet, log_every=args.log_every, meta=meta)
    out = sys.stdout
    if not args.quiet:
        out.write(f"training {model_name} ({models.count_parameters(model):,} parameters) on "
                  f"{args.dataset}: {len(x_train)} train / {0 if val is None else len(val[0])} val images, "
                  f"{epochs} epochs, batch {batch_size}, {trainer.config()['optimizer']} lr {lr:g}"
                  f"{', augmented' if augment is not None else ''}; run folder {out_dir}\n")
        out.flush()
    try:
        history = trainer.fit((x_train, y_train), val, resume=args.resume)
    except NonFiniteLossError as exc:
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt as exc:
        raise _Interrupted(str(exc) or "interrupted") from None

    x_test, y_test = ds["test"]
    result = evaluate(model, _prepare(x_test, meta).astype(dtype, copy=False), y_test,
                      batch_size=max(batch_size, 256))
    if history.stop_reason == "early stopping":
        out.write(history.message + "\n")
    out.write(f"test accuracy: {100 * result['accuracy']:.2f}% ({len(y_test)} images, "
              f"loss {result['loss']:.4f}); checkpoints in {out_dir} (best.npz, last.npz)\n")
    if args.plot:
        from minicnn.metrics import confusion_matrix
        paths = [_plot_history(history.rows, os.path.join(out_dir, "curves.png")),
                 _plot_confusion(confusion_matrix(y_test, result["predictions"], num_classes),
                                 ds["classes"], os.path.join(out_dir, "confusion.png"))]
        out.write("plots: " + ", ".join(paths) + "\n")
    return 0


class _Interrupted(Exception):
    pass


# ---------------------------------------------------------------- evaluate / predict

def _load(path):
    from minicnn.train import load_trained_model
    if not os.path.exists(path):
        raise CLIError(f"checkpoint not found: {path}")
    return load_trained_model(path)


def cmd_evaluate(args):
    from minicnn.metrics import classification_report, confusion_matrix
    from minicnn.train import evaluate

    if args.plot:
        _require_matplotlib()
    model, info = _load(args.checkpoint)
    meta = info["meta"]
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise CLIError("--dataset is needed: the checkpoint does not say which dataset it was trained on")
    ds = load_dataset(dataset, args.data_root or meta.get("data_root"),
                      image_size=meta.get("image_size"), grayscale=meta.get("grayscale", False),
                      splits=(args.split,))
    if ds[args.split] is None:
        raise CLIError(f"{dataset} has no {args.split} split here")
    x, y = ds[args.split]
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    expected = meta.get("input_shape")
    if expected and tuple(x.shape[1:]) != tuple(expected):
        raise CLIError(f"{dataset} images are {tuple(x.shape[1:])} (C, H, W) but the model was "
                       f"trained on {tuple(expected)}")
    classes = meta.get("classes") or ds["classes"]
    result = evaluate(model, _prepare(x, meta).astype(model.dtype, copy=False), y, args.batch_size)
    cm = confusion_matrix(y, result["predictions"], len(classes))
    out = sys.stdout
    out.write(f"{info['path']} on {dataset} {args.split} ({len(y)} images)\n")
    out.write(f"accuracy: {100 * result['accuracy']:.2f}%   loss: {result['loss']:.4f}\n\n")
    out.write("confusion matrix (rows: true class, columns: predicted)\n")
    out.write(_format_matrix(cm, classes) + "\n\n")
    out.write(classification_report(y, result["predictions"], class_names=classes))
    if args.plot:
        target = os.path.join(os.path.dirname(info["path"]) or ".", f"confusion-{args.split}.png")
        out.write(f"plot: {_plot_confusion(cm, classes, target)}\n")
    return 0


def _format_matrix(cm, classes):
    """The matrix with class indices on both axes, and a legend when the names are not indices."""
    labels = [str(c) for c in classes]
    width = max(len(str(len(labels) - 1)), len(str(int(cm.max()))))
    lines = [" " * (width + 1) + " ".join(f"{i:>{width}}" for i in range(len(labels)))]
    for i, row in enumerate(cm):
        lines.append(f"{i:>{width}} " + " ".join(f"{v:>{width}}" for v in row))
    if labels != [str(i) for i in range(len(labels))]:
        lines.append("classes: " + ", ".join(f"{i}={name}" for i, name in enumerate(labels)))
    return "\n".join(lines)


def _read_inputs(paths, meta):
    """(names, x (N, C, H, W) in [0, 1]) from image files (Pillow) and .npy arrays."""
    channels, height, width = meta.get("input_shape") or (None, None, None)
    names, arrays = [], []
    for path in paths:
        if not os.path.exists(path):
            raise CLIError(f"input not found: {path}")
        if path.lower().endswith(".npy"):
            a = np.load(path, allow_pickle=False)
            if a.dtype == np.uint8:
                a = a.astype(np.float32) / 255.0
            elif a.dtype.kind != "f":       # int64 pixels: 0..255, or already 0..1? say so
                raise CLIError(f"{path}: a {a.dtype} array; give uint8 pixels (0-255) or floats "
                               f"in [0, 1]")
            if a.size == 0:
                raise CLIError(f"{path}: the array is empty (shape {a.shape})")
            a = np.asarray(a, dtype=np.float32)
            if a.ndim == 2:
                a = a[None, None]
            elif a.ndim == 3:
                a = a[None] if channels is None or a.shape[0] == channels else a[:, None]
            elif a.ndim != 4:
                raise CLIError(f"{path}: expected an (H, W), (C, H, W), (N, H, W) or (N, C, H, W) "
                               f"array, got shape {a.shape}")
            names += [path] if len(a) == 1 else [f"{path}[{i}]" for i in range(len(a))]
            arrays.append(a)
        else:
            from minicnn.data.folder import read_image
            try:
                pixels = read_image(path, grayscale=channels == 1,
                                    size=(height, width) if height else None)
            except ImportError:
                raise CLIError(f"reading {path} needs Pillow (pip install Pillow); "
                               ".npy arrays work without it") from None
            a = pixels.astype(np.float32) / 255.0
            a = a[None, None] if a.ndim == 2 else a.transpose(2, 0, 1)[None]
            names.append(path)
            arrays.append(a)
    x = np.concatenate(arrays)
    if channels is not None and tuple(x.shape[1:]) != (channels, height, width):
        raise CLIError(f"inputs have shape {tuple(x.shape[1:])} but the model expects "
                       f"{(channels, height, width)}")
    return names, x


def cmd_predict(args):
    from minicnn.train import predict_proba

    model, info = _load(args.checkpoint)
    meta = info["meta"]
    names, x = _read_inputs(args.inputs, meta)
    probs = predict_proba(model, _prepare(x, meta).astype(model.dtype, copy=False), args.batch_size)
    classes = meta.get("classes") or [str(i) for i in range(probs.shape[1])]
    k = max(1, min(args.top_k, probs.shape[1]))
    for name, p in zip(names, probs):
        order = np.argsort(-p, kind="stable")[:k]
        best = order[0]
        others = ", ".join(f"{classes[i]} {p[i]:.3f}" for i in order[1:])
        sys.stdout.write(f"{name}: {classes[best]} ({p[best]:.3f})" + (f"   [{others}]" if others else "") + "\n")
    return 0


# ---------------------------------------------------------------- gradcheck / bench / info

def cmd_gradcheck(args):
    from minicnn import models
    from minicnn.gradcheck import check_module, kink_free_input

    name = args.model
    if name not in models.MODELS:
        raise CLIError(f"unknown model {name!r}; choose one of {', '.join(models.MODELS)}")
    channels, size = models.DEFAULT_INPUT[name]
    size = args.input_size or size
    model = models.get_model(name, num_classes=10, in_channels=channels, input_size=size,
                             seed=args.seed, dtype=np.float64)
    model.train() if args.mode == "train" else model.eval()
    x = kink_free_input((args.batch, channels, size, size), seed=args.seed)
    print(f"gradcheck {name} in float64, {args.mode} mode, input {x.shape} "
          f"(tensors above {args.max_elements} elements: {args.directions} random directions)")
    errors = check_module(model, x, seed=args.seed, max_elements=args.max_elements,
                          directions=args.directions, verbose=True)
    worst_name = max(errors, key=errors.get)
    worst = errors[worst_name]
    ok = worst <= args.tol
    print(f"max relative error {worst:.3e} ({worst_name}): {'PASS' if ok else 'FAIL'} (tolerance {args.tol:g})")
    return 0 if ok else 1


def cmd_bench(args):
    return _run_bench(args.bench_args)


def _run_bench(argv):
    from minicnn import bench
    try:
        rc = bench.main(list(argv))
    except SystemExit as exc:              # bench's own argparse: --help or a usage error
        return exc.code if isinstance(exc.code, int) else 0
    return 0 if rc is None else int(rc)


def cmd_info(args):
    from minicnn.backend import format_info
    print(format_info())
    return 0


# ---------------------------------------------------------------- tune

def cmd_tune(args):
    from minicnn import models
    from minicnn.data import Compose, Normalize
    from minicnn.tune import DEFAULT_SPACE, tune

    defaults = DATASET_DEFAULTS[args.dataset]
    model_name = args.model or defaults["model"]
    if model_name not in models.MODELS:
        raise CLIError(f"unknown model {model_name!r}; choose one of {', '.join(models.MODELS)}")
    ds = load_dataset(args.dataset, args.data_root, image_size=args.image_size,
                      grayscale=args.grayscale, seed=args.seed)
    x, y = ds["train"]
    if args.limit_train is not None:
        x, y = x[:args.limit_train], y[:args.limit_train]
    channels, size = x.shape[1], x.shape[2]
    norm = Normalize.fit(x)
    space = dict(DEFAULT_SPACE)
    if args.lr_range:
        space["lr"] = ("log", args.lr_range[0], args.lr_range[1])
    if args.batch_sizes:
        space["batch_size"] = args.batch_sizes
    if args.weight_decays is not None:
        space["weight_decay"] = args.weight_decays
    if args.no_augment_search:
        space.pop("augment")
    out_dir = args.out or os.path.join("runs", f"tune-{model_name}-{args.dataset}")
    result = tune((norm(x).astype(np.float32), y), model=model_name,
                  model_kwargs={"num_classes": len(ds["classes"]), "in_channels": int(channels),
                                "input_size": int(size)},
                  space=space, search=args.search, trials=args.trials, time_budget=args.time_budget,
                  epochs=args.epochs, val_fraction=args.val_fraction, seed=args.seed,
                  augmentations={"default": Compose([_augmentation(args.dataset, size, channels)])},
                  fit_kwargs={"optimizer": args.optimizer, "momentum": args.momentum,
                              "schedule": args.schedule},
                  out_dir=out_dir, progress=not args.quiet)
    print()
    print(result.table())
    best = result.best
    if best is None or best["val_accuracy"] is None:
        raise CLIError("no trial produced a finite validation score (every trial diverged?)")
    cfg = best["config"]
    print(f"\nbest: trial {best['trial']}, val accuracy {100 * best['val_accuracy']:.2f}%; "
          f"saved {os.path.join(out_dir, 'best_config.json')}")
    train_argv = ["minicnn", "train", *_data_flags(args), "--model", model_name,
                  "--config", os.path.join(out_dir, "best_config.json")]
    if cfg.get("augment") == "default":
        train_argv.append("--augment")
    print("train it: " + " ".join(shlex.quote(a) for a in train_argv))
    return 0


def _data_flags(args):
    """The data options of a parsed command line, as command-line words again."""
    flags = ["--dataset", args.dataset]
    if args.data_root is not None:
        flags += ["--data-root", args.data_root]
    if args.image_size is not None:
        flags += ["--image-size", str(args.image_size)]
    if args.grayscale:
        flags.append("--grayscale")
    return flags


# ---------------------------------------------------------------- plots

def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plot needs matplotlib, which is not installed (pip install matplotlib, "
                       "or pip install 'minicnn[plot]')") from None


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_history(rows, path):
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in rows], "o-", label="train")
    if rows and rows[0].get("val_loss") is not None:
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
        ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in rows], "o-", label="validation")
    from matplotlib.ticker import MaxNLocator
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_confusion(cm, classes, path):
    plt = _pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 1.0 + 0.55 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels([str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticklabels([str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the parser

def _int_at_least(minimum):
    """An argparse type: an integer >= minimum."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _non_negative_float(text):
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive_float(text):
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def _optimizer_name(text):
    if text not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(OPTIMIZERS)}, got {text!r}")
    return text


def _fraction(text):
    value = _non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def build_parser():
    from minicnn import __version__
    from minicnn.models import MODELS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")

    parser = _Parser(prog="minicnn", description="A CNN engine written by hand in NumPy.",
                     parents=[common])
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def data_args(p, with_limit=True):
        p.add_argument("--dataset", choices=DATASETS, default="digits",
                       help="dataset (default: digits, scikit-learn's bundled 8x8 digits)")
        p.add_argument("--data-root", default=None,
                       help="folder of the dataset files (fashion-mnist also looks in "
                            "/usr/share/datasets/fashion-mnist)")
        p.add_argument("--image-size", type=_positive_int, default=None,
                       help="resize folder images to this side (default 32); digits: 8, 16, 24, ...")
        p.add_argument("--grayscale", action="store_true", help="folder images as 1 channel")
        if with_limit:
            p.add_argument("--limit-train", type=_positive_int, default=None, metavar="N",
                           help="use only the first N training images (quick runs)")

    # train
    p = sub.add_parser("train", parents=[common], help="train a model from the zoo",
                       description="Train a zoo model; writes history.csv/json, best.npz and "
                                   "last.npz to --out and prints the test accuracy.")
    data_args(p)
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="zoo model (default per dataset: digits_net, lenet5, cifar_convnet)")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--lr", type=_non_negative_float, default=None)
    p.add_argument("--momentum", type=_non_negative_float, default=None, help="default 0.9")
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=_non_negative_float, default=None)
    p.add_argument("--schedule", choices=["none", "step", "cosine"], default="cosine")
    p.add_argument("--warmup", type=_non_negative_float, default=0.0, help="warm-up epochs")
    p.add_argument("--clip-norm", type=_positive_float, default=None)
    p.add_argument("--label-smoothing", type=_non_negative_float, default=None)
    p.add_argument("--augment", action="store_true",
                   help="the dataset's standard augmentation (shifts / crops / flips)")
    p.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="fraction of the training images held out for validation (0: none)")
    p.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<dataset>)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue from a last.npz")
    p.add_argument("--config", default=None, help="best_config.json from 'minicnn tune'")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--log-every", type=_positive_int, default=50)
    p.add_argument("--plot", action="store_true", help="write curves.png and confusion.png (matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    # evaluate
    p = sub.add_parser("evaluate", parents=[common], help="accuracy, confusion matrix and report",
                       description="Evaluate a checkpoint (best.npz, last.npz or a run folder).")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: the one it was trained on")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--plot", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    # predict
    p = sub.add_parser("predict", parents=[common], help="labels and probabilities for images / .npy",
                       description="Classify image files (Pillow) or .npy arrays with a checkpoint.")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", help="image files or .npy arrays ((H,W), (C,H,W) or (N,C,H,W))")
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.set_defaults(func=cmd_predict)

    # gradcheck
    p = sub.add_parser("gradcheck", parents=[common], help="numerical gradient check of a zoo model",
                       description="Build a zoo model in float64 and compare every tensor's analytic "
                                   "gradient with centered finite differences.")
    p.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    p.add_argument("--batch", type=_positive_int, default=2)
    p.add_argument("--input-size", type=_positive_int, default=None)
    p.add_argument("--mode", choices=["train", "eval"], default="train")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--max-elements", type=_positive_int, default=2000,
                   help="check tensors up to this size element by element")
    p.add_argument("--directions", type=_positive_int, default=3)
    p.add_argument("--tol", type=_positive_float, default=1e-5)
    p.set_defaults(func=cmd_gradcheck)

    # bench
    p = sub.add_parser("bench", parents=[common], help="kernel benchmarks (minicnn.bench)",
                       description="Run minicnn.bench; arguments after 'bench' go to it.")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    # info
    p = sub.add_parser("info", parents=[common], help="versions, kernels, threads, BLAS, GPU")
    p.set_defaults(func=cmd_info)

    # tune
    p = sub.add_parser("tune", parents=[common], help="random / grid hyper-parameter search",
                       description="Search lr, weight decay, batch size and augmentation on a "
                                   "validation split; prints a ranked table, saves best_config.json.")
    data_args(p)
    p.add_argument("--model", choices=sorted(MODELS), default=None)
    p.add_argument("--search", choices=["random", "grid"], default="random")
    p.add_argument("--trials", type=_positive_int, default=8)
    p.add_argument("--time-budget", type=_non_negative_float, default=None, metavar="SECONDS")
    p.add_argument("--epochs", type=_positive_int, default=3, help="epochs per trial")
    p.add_argument("--val-fraction", type=_fraction, default=0.2)
    p.add_argument("--lr-range", type=_positive_float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    p.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=None)
    p.add_argument("--weight-decays", type=_non_negative_float, nargs="+", default=None)
    p.add_argument("--no-augment-search", action="store_true", help="do not search over augmentation")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--momentum", type=_non_negative_float, default=0.9)
    p.add_argument("--schedule", choices=["none", "step", "cosine"], default="cosine")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--out", default=None, help="default runs/tune-<model>-<dataset>")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_tune)
    return parser


def main(argv=None):
    """Entry point of the ``minicnn`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:              # everything after 'bench' (--help too) is bench's
        return _run_bench(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:              # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except _Interrupted as exc:
        sys.stderr.write(f"\nminicnn: {exc}\n")
        return 130
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("\nminicnn: interrupted\n")
        return 130
    except Exception as exc:               # noqa: BLE001 - one clear line, not a traceback
        if debug:
            raise
        message = str(exc) if isinstance(exc, CLIError) else _describe(exc)
        sys.stderr.write(f"minicnn: error: {message}\n")
        return 2


def _describe(exc):
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    if isinstance(exc, (FileNotFoundError, ImportError)) or not text:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
