"""Training benchmarks: minicnn next to PyTorch CPU, same architecture, weights, data and threads.

Step cases (the README's F and G; float32, NCHW):

    F  LeNet-5 train step (SGD momentum 0.9), batch 128, 1x28x28
    G  CIFAR convnet train step ([conv3x3 32, relu]x2, pool, [conv3x3 64, relu]x2, pool, fc 512,
       relu, fc 10), batch 64, 3x32x32

A step is forward + softmax cross-entropy + backward + SGD update, as ``minicnn.train`` runs it
(the first layer computes no input gradient, as PyTorch does for an input without requires_grad).
Reported: median step time over ``--repeats`` steps after warm-up, images/s, and the ratio
minicnn images/s / PyTorch images/s (the target is >= 0.8). Both run in this one process with the
same thread count (``--threads``, default minicnn's), one after the other (``--rounds``).

Accuracy runs (``--accuracy``): LeNet-5 and fashion_net trained on Fashion-MNIST by
``minicnn.train.fit`` and by a plain PyTorch loop over the very same batches (the same seeded
``minicnn.data.DataLoader``, so the same order and augmentation), from the same initial weights,
with the same hyperparameters (SGD momentum 0.9, weight decay 5e-4, cosine schedule per step);
reported: test accuracy and training wall time of each. Targets: LeNet-5 >= 90%, fashion_net >= 92.5%.

    python benchmarks/bench_train.py                  # cases F and G
    python benchmarks/bench_train.py --accuracy       # + the full Fashion-MNIST runs (long)
    python benchmarks/bench_train.py --quick --accuracy   # a smoke version of everything

Prints markdown tables and writes everything as JSON (``--json``, default bench_train.json).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicnn import backend, models, optim  # noqa: E402
from minicnn.io import write_text_atomic  # noqa: E402
from minicnn.losses import softmax_cross_entropy  # noqa: E402

STEP_CASES = {
    "F": {"model": "lenet5", "batch": 128, "shape": (1, 28, 28), "desc": "LeNet-5 train step, batch 128"},
    "G": {"model": "cifar_convnet", "batch": 64, "shape": (3, 32, 32), "desc": "CIFAR convnet train step, batch 64"},
}

ACCURACY_RUNS = {
    # model: (epochs, batch, lr, augment, target accuracy)
    "lenet5": {"epochs": 15, "batch": 128, "lr": 0.05, "augment": False, "target": 0.90},
    "fashion_net": {"epochs": 15, "batch": 128, "lr": 0.05, "augment": True, "target": 0.925},
}
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


# ---------------------------------------------------------------- step timing

def _median_times(steps, warmup, repeats, rounds=1):
    """Median seconds of each step function.

    The frameworks take turns in ``rounds`` blocks, so a busy neighbour on a shared machine slows
    both alike; each block starts with ``warmup`` untimed steps, because the thread pools of the
    framework that ran before (OpenMP, OpenBLAS, PyTorch's) keep spinning for a moment and would
    steal the cores from the first timed steps.
    """
    times = [[] for _ in steps]
    per_round = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for step, bucket in zip(steps, times):
            for _ in range(warmup):
                step()
            for _ in range(per_round):
                t0 = time.perf_counter()
                step()
                bucket.append(time.perf_counter() - t0)
    return [statistics.median(bucket) for bucket in times]


def bench_step(case, threads, warmup, repeats, seed=0, rounds=1):
    spec = STEP_CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.random((spec["batch"],) + spec["shape"], dtype=np.float32)
    y = rng.integers(0, 10, size=spec["batch"])

    model = models.get_model(spec["model"], seed=seed)
    torch = _torch()
    torch_model = models.to_torch(model) if torch is not None else None   # same initial weights
    opt = optim.SGD(model, lr=0.01, momentum=MOMENTUM)
    model.needs_input_grad = False

    def minicnn_step():
        logits = model(x)
        _, dlogits = softmax_cross_entropy(logits, y)
        model.backward(dlogits)
        opt.step()

    steps = [minicnn_step]
    if torch is not None:
        torch.set_num_threads(threads)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        topt = torch.optim.SGD(torch_model.parameters(), lr=0.01, momentum=MOMENTUM)
        loss_fn = torch.nn.CrossEntropyLoss()

        def torch_step():
            topt.zero_grad(set_to_none=True)
            loss = loss_fn(torch_model(xt), yt)
            loss.backward()
            topt.step()

        steps.append(torch_step)
    times = _median_times(steps, warmup, repeats, rounds)
    result = {"case": case, "desc": spec["desc"], "batch": spec["batch"], "threads": threads,
              "repeats": repeats, "minicnn_ms": 1e3 * times[0], "minicnn_img_s": spec["batch"] / times[0]}
    if torch is not None:
        result["torch_ms"] = 1e3 * times[1]
        result["torch_img_s"] = spec["batch"] / times[1]
        result["ratio"] = result["minicnn_img_s"] / result["torch_img_s"]
    return result


# ---------------------------------------------------------------- accuracy runs

def _fashion(limit_train=None, limit_test=None, root=None):
    from minicnn.data import load_fashion_mnist
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(root)
    if limit_train:
        x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    if limit_test:
        x_test, y_test = x_test[:limit_test], y_test[:limit_test]
    return (x_train, y_train), (x_test, y_test)


def _transform(augment, norm):
    from minicnn.data import Compose, RandomCrop, RandomHorizontalFlip
    steps = [RandomHorizontalFlip(), RandomCrop(28, padding=2)] if augment else []
    return Compose(steps + [norm])


def accuracy_run(name, spec, data, threads, seed=0, log=print):
    from minicnn.data import DataLoader, Normalize
    from minicnn.train import Trainer, evaluate

    (x_train, y_train), (x_test, y_test) = data
    norm = Normalize.fit(x_train)
    x_test_n = norm(x_test).astype(np.float32)
    epochs, batch, lr = spec["epochs"], spec["batch"], spec["lr"]
    out = {"model": name, "epochs": epochs, "batch": batch, "lr": lr, "augment": spec["augment"],
           "train_images": len(x_train), "test_images": len(x_test), "target": spec["target"]}

    def loader():
        return DataLoader(x_train, y_train, batch_size=batch, shuffle=True, rng=seed,
                          transform=_transform(spec["augment"], norm))

    model = models.get_model(name, seed=seed)
    torch = _torch()
    torch_model = models.to_torch(model) if torch is not None else None    # before any update

    trainer = Trainer(model, epochs=epochs, batch_size=batch, lr=lr, momentum=MOMENTUM,
                      weight_decay=WEIGHT_DECAY, schedule="cosine", seed=seed, progress=True)
    t0 = time.perf_counter()
    trainer.fit(loader())
    out["minicnn_train_s"] = time.perf_counter() - t0
    out["minicnn_test_acc"] = evaluate(model, x_test_n, y_test)["accuracy"]
    log(f"  minicnn {name}: {100 * out['minicnn_test_acc']:.2f}% in {out['minicnn_train_s']:.0f}s")

    if torch is not None:
        torch.set_num_threads(threads)
        total_steps = epochs * len(loader())
        topt = torch.optim.SGD(torch_model.parameters(), lr=lr, momentum=MOMENTUM,
                               weight_decay=WEIGHT_DECAY)
        loss_fn = torch.nn.CrossEntropyLoss()
        batches = loader()
        torch_model.train()
        t0 = time.perf_counter()
        step = 0
        for _ in range(epochs):
            for xb, yb in batches:
                for group in topt.param_groups:        # the same cosine schedule, per step
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total_steps))
                topt.zero_grad(set_to_none=True)
                loss = loss_fn(torch_model(torch.from_numpy(xb)), torch.from_numpy(yb))
                loss.backward()
                topt.step()
                step += 1
        out["torch_train_s"] = time.perf_counter() - t0
        torch_model.eval()
        with torch.no_grad():
            pred = torch.cat([torch_model(torch.from_numpy(x_test_n[i:i + 1000])).argmax(1)
                              for i in range(0, len(x_test_n), 1000)]).numpy()
        out["torch_test_acc"] = float((pred == y_test).mean())
        out["time_ratio"] = out["torch_train_s"] / out["minicnn_train_s"]
        log(f"  torch   {name}: {100 * out['torch_test_acc']:.2f}% in {out['torch_train_s']:.0f}s")
    return out


# ---------------------------------------------------------------- reporting

def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def step_table(rows):
    lines = ["| case | step | minicnn ms | minicnn img/s | PyTorch ms | PyTorch img/s | ratio (>= 0.8) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['desc']} | {_fmt(r['minicnn_ms'], '.2f')} | "
                     f"{_fmt(r['minicnn_img_s'], ',.0f')} | {_fmt(r.get('torch_ms'), '.2f')} | "
                     f"{_fmt(r.get('torch_img_s'), ',.0f')} | {_fmt(r.get('ratio'), '.2f')} |")
    return "\n".join(lines)


def accuracy_table(rows):
    lines = ["| model | epochs | train imgs | minicnn acc | minicnn time | PyTorch acc | PyTorch time | target |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t_acc = r.get("torch_test_acc")
        lines.append(f"| {r['model']} | {r['epochs']} | {r['train_images']} | "
                     f"{100 * r['minicnn_test_acc']:.2f}% | {r['minicnn_train_s']:.0f}s | "
                     f"{'-' if t_acc is None else f'{100 * t_acc:.2f}%'} | "
                     f"{_fmt(r.get('torch_train_s'), '.0f')}{'s' if r.get('torch_train_s') else ''} | "
                     f">= {100 * r['target']:.1f}% "
                     f"{'ok' if r['minicnn_test_acc'] >= r['target'] else 'MISSED'} |")
    return "\n".join(lines)


def environment(threads):
    torch = _torch()
    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": None if torch is None else torch.__version__,
            "kernels": backend.info()["kernels"], "threads": threads, "blas": backend.blas_info(),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "machine": platform.machine()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["F", "G"], choices=sorted(STEP_CASES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="blocks in which minicnn and PyTorch take turns (default 1: one after the "
                             "other, PyTorch's best case; taking turns evens out a busy neighbour but "
                             "was seen to slow PyTorch's small steps)")
    parser.add_argument("--threads", type=int, default=None, help="default: minicnn's thread count")
    parser.add_argument("--accuracy", action="store_true", help="also run the Fashion-MNIST training runs")
    parser.add_argument("--models", nargs="+", default=list(ACCURACY_RUNS), choices=list(ACCURACY_RUNS))
    parser.add_argument("--epochs", type=int, default=None, help="override the accuracy runs' epochs")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: Debian's)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke version: 3 timed steps; accuracy runs on 2,000 images for 1 epoch")
    parser.add_argument("--json", default="bench_train.json", help="where to write the results")
    args = parser.parse_args(argv)

    threads = args.threads or backend.get_num_threads()
    backend.set_num_threads(threads)
    repeats, warmup = (4, 1) if args.quick else (args.repeats, args.warmup)
    env = environment(threads)
    print(f"minicnn kernels={env['kernels']} threads={threads} numpy {env['numpy']} torch {env['torch']}")
    for lib in env["blas"]:
        print(f"BLAS: {lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')}), "
              f"{lib.get('num_threads')} threads; OPENBLAS_CORETYPE={env['openblas_coretype']}")

    steps = [bench_step(case, threads, warmup, repeats, rounds=args.rounds) for case in args.cases]
    print("\n" + step_table(steps))
    results = {"environment": env, "steps": steps, "accuracy": []}

    if args.accuracy:
        data = _fashion(2000 if args.quick else None, 1000 if args.quick else None, args.data_root)
        print(f"\nFashion-MNIST: {len(data[0][0])} train / {len(data[1][0])} test images")
        for name in args.models:
            spec = dict(ACCURACY_RUNS[name])
            if args.quick:
                spec["epochs"] = 1
            if args.epochs:
                spec["epochs"] = args.epochs
            results["accuracy"].append(accuracy_run(name, spec, data, threads))
        print("\n" + accuracy_table(results["accuracy"]))

    write_text_atomic(args.json, json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
