"""Where a training step's time goes, layer by layer (cases F and G of bench_train.py, fashion_net).

Times each layer's forward and backward, the loss and the SGD update, as medians over many steps
after a warm-up, in the order the step runs them.  A layer's time here includes what it pays for
its place in the step (first touch of fresh output pages, threads waking after the previous
layer), which the kernel benchmark, timing each op alone, does not see.

    python benchmarks/profile_step.py F
    python benchmarks/profile_step.py G --steps 20
    python benchmarks/profile_step.py fashion_net     # the compact BN net, batch 128
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicnn import models, optim  # noqa: E402
from minicnn.losses import softmax_cross_entropy  # noqa: E402

CASES = {"F": ("lenet5", 128, (1, 28, 28)), "G": ("cifar_convnet", 64, (3, 32, 32)),
         "fashion_net": ("fashion_net", 128, (1, 28, 28))}


def _timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def profile(case, steps=40, warmup=10, seed=0):
    """{"step": [s], "forward": [[s] per layer], "backward": [[s] per layer], "loss": [s], "update": [s]}."""
    name, batch, shape = CASES[case]
    model = models.get_model(name, seed=seed)
    model.needs_input_grad = False                     # as the trainer runs a first layer
    opt = optim.SGD(model, lr=0.01, momentum=0.9)
    rng = np.random.default_rng(seed)
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, size=batch)
    layers = model.layers
    times = {"step": [], "forward": [[] for _ in layers], "backward": [[] for _ in layers],
             "loss": [], "update": []}

    for i in range(warmup + steps):
        record = i >= warmup
        t0 = time.perf_counter()
        h = x
        forward_times = []
        for layer in layers:
            h, t = _timed(layer.forward, h)
            forward_times.append(t)
        (_, d), loss_time = _timed(softmax_cross_entropy, h, y)
        backward_times = [0.0] * len(layers)
        for j in reversed(range(len(layers))):
            d, backward_times[j] = _timed(layers[j].backward, d)
        _, update_time = _timed(opt.step)
        if record:
            times["step"].append(time.perf_counter() - t0)
            for j in range(len(layers)):
                times["forward"][j].append(forward_times[j])
                times["backward"][j].append(backward_times[j])
            times["loss"].append(loss_time)
            times["update"].append(update_time)
    return model, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    model, times = profile(args.case, args.steps, args.warmup)

    def ms(samples):
        return 1e3 * statistics.median(samples)

    print(f"case {args.case}: step {ms(times['step']):.2f} ms (median of {args.steps})\n")
    print("| # | layer | forward ms | backward ms |")
    print("|---|---|---:|---:|")
    for j, layer in enumerate(model.layers):
        print(f"| {j} | {type(layer).__name__} | {ms(times['forward'][j]):.3f} | "
              f"{ms(times['backward'][j]):.3f} |")
    print(f"| | loss | {ms(times['loss']):.3f} | |")
    print(f"| | SGD update | {ms(times['update']):.3f} | |")


if __name__ == "__main__":
    main()
