"""minicnn on the GPU (CuPy) next to PyTorch CUDA, in one run: kernels, conv layers, train steps.

    python benchmarks/bench_gpu.py [--cases A,B,C1,C2,D,E1,E2,D256,F,G,G512] [--repeat 50]
                                   [--torch-tf32 both|off|on] [--json bench_gpu.json]

Cases (float32, NCHW; the README's table): A-D conv layers (forward, forward+backward), E1/E2
max-pool, D256 (case D at batch 256: im2col, GEMM and bias of minicnn's forward timed apart,
next to PyTorch's conv), F (LeNet-5 training step, batch 128), G (CIFAR convnet step, batch 64)
and G512 (the same at batch 512). A training step is forward, softmax cross-entropy, backward
and SGD with momentum, on data already on the GPU, on both sides.

Timing: every measurement is warmed up, then each repetition is bracketed by CUDA events and
synchronised (CuPy events for minicnn, torch.cuda events for PyTorch); the median is reported.
Events time the GPU stream, so gaps where the GPU waits for Python to launch the next kernel
count too: that is the cost of a launch-bound step.

TF32: CuPy's GEMMs are full FP32 unless CUPY_TF32=1 is set before the process starts (it is
read at import). PyTorch's flags are set explicitly: by default each PyTorch case runs twice,
with ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` both False
("fp32") and both True ("tf32"); the ratio that compares like with like is the one matching
CuPy's setting, and it is marked in the table.

Kernel launches per training step: counted with PyTorch's profiler (Kineto/CUPTI records every
kernel the process runs on the GPU, CuPy's included) from its Chrome trace, split into minicnn's
own RawKernels, cuBLAS GEMMs and the rest (CuPy element-wise and reduction kernels); minicnn's
own launch counter (``minicnn.kernels._cupy.launch_counts``) cross-checks the first number.
Without a CUDA PyTorch only that counter is reported.

Without a GPU the script says so and exits 0. ``--smoke`` runs the same code paths on the CPU
(NumPy arrays, CPU PyTorch, wall-clock timing, two repetitions) to check the script itself;
its numbers mean nothing.
"""
import argparse
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minicnn import backend  # noqa: E402
from minicnn import functional as F  # noqa: E402
from minicnn.io import write_text_atomic  # noqa: E402

CONV_CASES = {   # name: (N, C, H, W, F, K, S, P, first layer)
    "A": (64, 3, 32, 32, 32, 3, 1, 1, True),
    "B": (64, 32, 16, 16, 64, 3, 1, 1, False),
    "C1": (128, 1, 28, 28, 6, 5, 1, 0, True),
    "C2": (128, 6, 14, 14, 16, 5, 1, 0, False),
    "D": (32, 64, 32, 32, 64, 3, 1, 1, False),
}
POOL_CASES = {   # name: (N, C, H, W, K, S, P)
    "E1": (64, 64, 32, 32, 2, 2, 0),
    "E2": (32, 64, 56, 56, 3, 2, 1),
}
TRAIN_CASES = {  # name: (model builder, batch, input shape)
    "F": ("lenet5", 128, (1, 28, 28)),
    "G": ("cifar_convnet", 64, (3, 32, 32)),
    "G512": ("cifar_convnet", 512, (3, 32, 32)),
}
ALL_CASES = list(CONV_CASES) + list(POOL_CASES) + ["D256"] + list(TRAIN_CASES)
OWN_KERNELS = ("im2col", "col2im", "maxpool_", "avgpool_")
GEMM_MARKERS = ("gemm", "cutlass", "xmma", "cublas", "sm90_", "sm80_", "ampere_", "volta_", "turing_")


def gpu_skip_reason():
    try:
        import cupy
    except Exception as exc:
        return f"CuPy is not installed ({type(exc).__name__}: {exc}); pip install 'minicnn[gpu]'"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees 0 GPUs"
    except Exception as exc:
        return f"CuPy {cupy.__version__} sees no usable GPU ({type(exc).__name__}: {exc})"
    return None


# ---------------------------------------------------------------- clocks

class CupyClock:
    """Median milliseconds of ``fn`` between two CuPy CUDA events, synchronised every repetition."""
    name = "cuda events (cupy)"

    def __init__(self, cp):
        self.cp = cp
        self.xp = cp

    def sync(self):
        self.cp.cuda.Device().synchronize()

    def time(self, fn, repeat, warmup):
        for _ in range(warmup):
            fn()
        self.sync()
        start, end = self.cp.cuda.Event(), self.cp.cuda.Event()
        times = []
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(self.cp.cuda.get_elapsed_time(start, end))
        return statistics.median(times)


class TorchClock:
    """The same with torch.cuda events."""
    name = "cuda events (torch)"

    def __init__(self, torch):
        self.torch = torch
        self.device = torch.device("cuda")

    def sync(self):
        self.torch.cuda.synchronize()

    def time(self, fn, repeat, warmup):
        for _ in range(warmup):
            fn()
        self.sync()
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)


class WallClock:
    """--smoke: NumPy / CPU PyTorch, wall-clock time (meaningless numbers, real code paths)."""
    name = "wall clock (smoke run on the CPU)"

    def __init__(self, torch=None):
        self.xp = np
        self.torch = torch
        self.device = None if torch is None else torch.device("cpu")

    def sync(self):
        pass

    def time(self, fn, repeat, warmup):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


# ---------------------------------------------------------------- settings

def torch_cuda():
    try:
        import torch
    except Exception:
        return None
    return torch if torch.cuda.is_available() else None


def set_torch_tf32(torch, enabled):
    """Set both PyTorch TF32 switches; return them as read back."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return {"torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}


def torch_modes(torch, choice):
    if torch is None:
        return []
    return {"off": ["fp32"], "on": ["tf32"], "both": ["fp32", "tf32"]}[choice]


def environment(cp, torch, smoke):
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "CUPY_TF32": os.environ.get("CUPY_TF32"),
           "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE"),
           "minicnn_tf32": os.environ.get("CUPY_TF32") == "1", "smoke": smoke}
    if cp is not None:
        from minicnn.kernels import _cupy
        _cupy.compile_all()
        env["gpu"] = _cupy.kernel_info()
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_cuda"] = getattr(torch.version, "cuda", None)
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return env


def sgemm_peak(clock, repeat):
    """GFLOP/s of one large FP32 GEMM through CuPy (cuBLAS), the yardstick for the convs."""
    n = 4096 if clock.xp is not np else 512
    rng = np.random.default_rng(0)
    a = clock.xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = clock.xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    ms = clock.time(lambda: a @ b, repeat, 3)
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e9


# ---------------------------------------------------------------- layer cases

def _host(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def conv_case(name, clock, tclock, modes, repeat, warmup, peak, torch):
    n, c, h, w, f, k, s, p, first = CONV_CASES[name]
    oh = (h + 2 * p - k) // s + 1
    x_h, w_h, b_h = _host((n, c, h, w), 0), _host((f, c, k, k), 1, 0.1), _host((f,), 2)
    dout_h = _host((n, f, oh, oh), 3)
    xp = clock.xp
    x, wt, b, dout = (xp.asarray(a) for a in (x_h, w_h, b_h, dout_h))
    flop_fwd = 2.0 * n * f * c * k * k * oh * oh
    rows = []
    for need_dx in ((True, False) if first else (True,)):
        def fwd():
            return F.conv2d_forward(x, wt, b, s, p)

        def fwd_bwd():
            _, cache = F.conv2d_forward(x, wt, b, s, p)
            return F.conv2d_backward(dout, cache, need_dx=need_dx)

        t_f, t_fb = clock.time(fwd, repeat, warmup), clock.time(fwd_bwd, repeat, warmup)
        flop = flop_fwd * (3 if need_dx else 2)
        row = {"case": name, "op": "conv", "dx": need_dx, "minicnn_fwd_ms": t_f,
               "minicnn_fwd_bwd_ms": t_fb, "gflops": flop / (t_fb * 1e-3) / 1e9}
        row["peak_frac"] = row["gflops"] / peak if peak else None
        for mode in modes:
            set_torch_tf32(torch, mode == "tf32")
            tf, tfb = torch_conv_times(torch, tclock, x_h, w_h, b_h, dout_h, s, p, need_dx,
                                       repeat, warmup)
            row[f"torch_{mode}_fwd_ms"], row[f"torch_{mode}_fwd_bwd_ms"] = tf, tfb
        rows.append(row)
    return rows


def torch_conv_times(torch, tclock, x_h, w_h, b_h, dout_h, stride, padding, need_dx, repeat, warmup):
    dev = tclock.device
    x = torch.from_numpy(x_h).to(dev).requires_grad_(need_dx)
    w = torch.from_numpy(w_h).to(dev).requires_grad_()
    b = torch.from_numpy(b_h).to(dev).requires_grad_()
    dout = torch.from_numpy(dout_h).to(dev)
    conv = torch.nn.functional.conv2d

    def fwd():
        with torch.no_grad():
            return conv(x, w, b, stride, padding)

    def fwd_bwd():
        conv(x, w, b, stride, padding).backward(dout)
        x.grad = w.grad = b.grad = None
    return tclock.time(fwd, repeat, warmup), tclock.time(fwd_bwd, repeat, warmup)


def pool_case(name, clock, tclock, modes, repeat, warmup, torch):
    n, c, h, w, k, s, p = POOL_CASES[name]
    oh = (h + 2 * p - k) // s + 1
    x_h, dout_h = _host((n, c, h, w), 0), _host((n, c, oh, oh), 1)
    x, dout = clock.xp.asarray(x_h), clock.xp.asarray(dout_h)

    def fwd_bwd():
        _, cache = F.maxpool2d_forward(x, k, s, p)
        return F.maxpool2d_backward(dout, cache)

    t_f = clock.time(lambda: F.maxpool2d_forward(x, k, s, p), repeat, warmup)
    t_fb = clock.time(fwd_bwd, repeat, warmup)
    # bytes moved: forward reads x, writes out and argmax; backward reads dout, argmax, writes dx
    nbytes = 2 * x_h.nbytes + 4 * dout_h.nbytes
    row = {"case": name, "op": "maxpool", "dx": True, "minicnn_fwd_ms": t_f,
           "minicnn_fwd_bwd_ms": t_fb, "gbs": nbytes / (t_fb * 1e-3) / 1e9}
    for mode in modes:   # pooling has no TF32 path; both modes are timed for a uniform table
        set_torch_tf32(torch, mode == "tf32")
        xt = torch.from_numpy(x_h).to(tclock.device).requires_grad_()
        dt = torch.from_numpy(dout_h).to(tclock.device)
        pool = torch.nn.functional.max_pool2d

        def tfwd():
            with torch.no_grad():
                return pool(xt, k, s, p)

        def tfwd_bwd():
            pool(xt, k, s, p).backward(dt)
            xt.grad = None
        row[f"torch_{mode}_fwd_ms"] = tclock.time(tfwd, repeat, warmup)
        row[f"torch_{mode}_fwd_bwd_ms"] = tclock.time(tfwd_bwd, repeat, warmup)
    return [row]


def kernel_only(clock, repeat, warmup):
    """minicnn's own kernels alone, per case (GPU only: the kernels of minicnn.kernels._cupy)."""
    if clock.xp is np:
        return []
    from minicnn.kernels import _cupy as g
    xp, rows = clock.xp, []
    for name, (n, c, h, w, f, k, s, p, _) in CONV_CASES.items():
        x = xp.asarray(_host((n, c, h, w), 0))
        cols = g.im2col(x, (k, k), (s, s), (p, p))
        rows.append({"case": name, "kernel": "im2col",
                     "ms": clock.time(lambda: g.im2col(x, (k, k), (s, s), (p, p)), repeat, warmup),
                     "bytes": x.nbytes + cols.nbytes})
        rows.append({"case": name, "kernel": "col2im",
                     "ms": clock.time(lambda: g.col2im(cols, x.shape, (k, k), (s, s), (p, p)),
                                      repeat, warmup),
                     "bytes": x.nbytes + cols.nbytes})
    for name, (n, c, h, w, k, s, p) in POOL_CASES.items():
        x = xp.asarray(_host((n, c, h, w), 0))
        out, argmax = g.maxpool_forward(x, (k, k), (s, s), (p, p))
        dout = xp.ones_like(out)
        io = x.nbytes + out.nbytes + argmax.nbytes
        rows.append({"case": name, "kernel": "maxpool_forward", "bytes": io,
                     "ms": clock.time(lambda: g.maxpool_forward(x, (k, k), (s, s), (p, p)),
                                      repeat, warmup)})
        rows.append({"case": name, "kernel": "maxpool_backward (2 passes, no geometry)",
                     "bytes": io, "ms": clock.time(lambda: g.maxpool_backward(dout, argmax, x.shape),
                                                  repeat, warmup)})
        rows.append({"case": name, "kernel": "maxpool_backward (gather, geometry given)",
                     "bytes": io,
                     "ms": clock.time(lambda: g.maxpool_backward(dout, argmax, x.shape, (k, k),
                                                                 (s, s), (p, p)), repeat, warmup)})
    for r in rows:
        r["gbs"] = r["bytes"] / (r["ms"] * 1e-3) / 1e9
    return rows


def d256_breakdown(clock, tclock, modes, repeat, warmup, peak, torch):
    """Case D at batch 256: minicnn's forward as im2col + GEMM (+ bias) next to PyTorch's conv."""
    from minicnn import kernels
    _, c, h, w, f, k, s, p, _ = CONV_CASES["D"]
    n = 16 if isinstance(clock, WallClock) else 256
    x_h, w_h, b_h = _host((n, c, h, w), 0), _host((f, c, k, k), 1, 0.1), _host((f,), 2)
    xp = clock.xp
    x, wt, b = xp.asarray(x_h), xp.asarray(w_h), xp.asarray(b_h)
    w_mat = wt.reshape(f, -1)
    cols = kernels.im2col(x, (k, k), (s, s), (p, p))
    out = w_mat @ cols
    flop = 2.0 * n * f * c * k * k * h * w
    parts = {"im2col_ms": lambda: kernels.im2col(x, (k, k), (s, s), (p, p)),
             "gemm_ms": lambda: w_mat @ cols,
             "bias_ms": lambda: out.__iadd__(b[:, None]),
             "forward_ms": lambda: F.conv2d_forward(x, wt, b, s, p)}
    row = {"case": "D256", "batch": n}
    for key, fn in parts.items():
        row[key] = clock.time(fn, repeat, warmup)
    row["gemm_gflops"] = flop / (row["gemm_ms"] * 1e-3) / 1e9
    row["forward_gflops"] = flop / (row["forward_ms"] * 1e-3) / 1e9
    row["gemm_peak_frac"] = row["gemm_gflops"] / peak if peak else None
    row["forward_peak_frac"] = row["forward_gflops"] / peak if peak else None
    for mode in modes:
        set_torch_tf32(torch, mode == "tf32")
        xt = torch.from_numpy(x_h).to(tclock.device)
        wt_t, bt = torch.from_numpy(w_h).to(tclock.device), torch.from_numpy(b_h).to(tclock.device)

        def tfwd():
            with torch.no_grad():
                return torch.nn.functional.conv2d(xt, wt_t, bt, s, p)
        torch_ms = tclock.time(tfwd, repeat, warmup)
        row[f"torch_{mode}_forward_ms"] = torch_ms
        row[f"torch_{mode}_gflops"] = flop / (torch_ms * 1e-3) / 1e9
    return row


# ---------------------------------------------------------------- training steps

def torch_twin(torch, model, device):
    """The same network in torch.nn, with minicnn's initial weights copied in."""
    layers = []
    for layer in model:
        kind = type(layer).__name__
        if kind == "Conv2D":
            t = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                layer.stride, layer.padding, bias=layer.bias is not None)
        elif kind == "Linear":
            t = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        elif kind == "MaxPool2D":
            t = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif kind == "ReLU":
            t = torch.nn.ReLU()
        elif kind == "Flatten":
            t = torch.nn.Flatten()
        else:
            raise ValueError(f"bench_gpu: no PyTorch twin for layer {kind}")
        with torch.no_grad():
            for name, value in layer.parameters().items():
                getattr(t, name).copy_(torch.from_numpy(backend.to_numpy(value)))
        layers.append(t)
    return torch.nn.Sequential(*layers).to(device)


def train_case(name, clock, tclock, modes, repeat, warmup, torch, count):
    from minicnn import models, optim
    builder, batch, shape = TRAIN_CASES[name]
    if isinstance(clock, WallClock):
        batch = min(batch, 16)              # --smoke: exercise the code, not the CPU
    rng = np.random.default_rng(0)
    x_h = rng.standard_normal((batch,) + shape).astype(np.float32)
    y_h = rng.integers(0, 10, size=batch)
    model = getattr(models, builder)(seed=0)
    model.to("cpu" if clock.xp is np else "gpu")
    model.train()
    model.needs_input_grad = False          # the input is data (PyTorch skips its gradient too)
    optimizer = optim.SGD(model, lr=0.01, momentum=0.9)
    x, y = clock.xp.asarray(x_h), clock.xp.asarray(y_h)
    losses = []

    def step():
        logits = model(x)
        loss, dlogits = F.softmax_cross_entropy(logits, y)
        model.backward(dlogits)
        optimizer.step()
        return loss

    losses.append(float(step()))           # the first loss, before any update: compared below
    row = {"case": name, "model": builder, "batch": batch,
           "minicnn_ms": clock.time(step, repeat, warmup), "minicnn_first_loss": losses[0]}
    if count:
        row.update(count_launches("minicnn", step, clock, torch))
    for mode in modes:
        set_torch_tf32(torch, mode == "tf32")
        tmodel = torch_twin(torch, model_at_start(builder), tclock.device)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
        xt = torch.from_numpy(x_h).to(tclock.device)
        yt = torch.from_numpy(y_h).to(tclock.device)

        def tstep():
            topt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(tmodel(xt), yt)
            loss.backward()
            topt.step()
            return loss

        row[f"torch_{mode}_first_loss"] = float(tstep())
        row[f"torch_{mode}_ms"] = tclock.time(tstep, repeat, warmup)
        if count and mode == modes[0]:
            row.update(count_launches("torch", tstep, tclock, torch))
    return row


def model_at_start(builder):
    from minicnn import models
    return getattr(models, builder)(seed=0)


def count_launches(side, step, clock, torch):
    """Kernels one training step launches: {side_kernels, side_own, side_gemm, side_other, ...}."""
    out = {}
    own_counter = None
    if side == "minicnn" and clock.xp is not np:
        from minicnn.kernels import _cupy
        _cupy.reset_launch_counts()
        step()
        clock.sync()
        own_counter = sum(_cupy.launch_counts().values())
        out["minicnn_own_kernels_counter"] = own_counter
    if torch is None:
        return out
    names = profiled_kernel_names(torch, step, clock)
    if names is None:
        return out
    kernels = names["kernel"]
    own = sum(v for k, v in kernels.items() if any(m in k for m in OWN_KERNELS))
    gemm = sum(v for k, v in kernels.items() if any(m in k.lower() for m in GEMM_MARKERS))
    total = sum(kernels.values())
    out.update({f"{side}_kernels": total, f"{side}_gemm_kernels": gemm,
                f"{side}_memcpy": sum(names["gpu_memcpy"].values()),
                f"{side}_memset": sum(names["gpu_memset"].values()),
                f"{side}_kernel_names": dict(kernels.most_common(40))})
    if side == "minicnn":
        out["minicnn_own_kernels"] = own
        out["minicnn_other_kernels"] = total - own - gemm
        if own_counter is not None and own != own_counter:
            out["minicnn_count_warning"] = (f"the profiler saw {own} of minicnn's {own_counter} "
                                            "RawKernel launches: its counts are a lower bound")
    return out


def profiled_kernel_names(torch, step, clock):
    """{category: Counter(kernel name)} of one step, from PyTorch's profiler trace (or None)."""
    try:
        from torch.profiler import ProfilerActivity, profile
    except Exception:
        return None
    activities = [ProfilerActivity.CPU]
    if not isinstance(clock, WallClock):
        activities.append(ProfilerActivity.CUDA)
    step()
    clock.sync()
    with profile(activities=activities) as prof:
        step()
        clock.sync()
        if ProfilerActivity.CUDA in activities:
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    found = {c: collections.Counter() for c in ("kernel", "gpu_memcpy", "gpu_memset")}
    for e in events:
        if e.get("cat") in found and e.get("ph") == "X":
            found[e["cat"]][str(e.get("name", "?"))[:120]] += 1
    return found


# ---------------------------------------------------------------- report

def _f(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def _ratio(a, b):
    return None if (a is None or b is None or b == 0) else a / b


def report(env, peak, layer_rows, kernel_rows, d256, train_rows, modes, like):
    out = []
    gpu = env.get("gpu", {})
    title = "SMOKE RUN ON THE CPU: numbers mean nothing" if env["smoke"] else gpu.get("device", "?")
    out.append(f"# minicnn GPU benchmark ({title})")
    out.append("")
    out.append(f"- CuPy {gpu.get('cupy', '-')}, CUDA runtime {gpu.get('cuda_runtime', '-')}, driver "
               f"{gpu.get('cuda_driver', '-')}, NVRTC {gpu.get('nvrtc', '-')}; PyTorch "
               f"{env.get('torch', '-')} (CUDA {env.get('torch_cuda', '-')}, cuDNN {env.get('cudnn', '-')}, "
               f"cudnn.benchmark={env.get('cudnn_benchmark', '-')})")
    out.append(f"- TF32: minicnn/CuPy {'ON' if env['minicnn_tf32'] else 'off (full FP32)'} "
               f"(CUPY_TF32={env['CUPY_TF32']}); PyTorch columns: "
               + ", ".join(f"{m} = allow_tf32 {m == 'tf32'} (cuda.matmul and cudnn)" for m in modes)
               + f"; NVIDIA_TF32_OVERRIDE={env['NVIDIA_TF32_OVERRIDE']}. "
               f"Like-with-like ratio: vs torch {like}.")
    out.append(f"- cuBLAS FP32 GEMM peak (4096^3 via CuPy): {_f(peak, ',.0f')} GFLOP/s. "
               "Times: median ms, CUDA events, synchronised per repetition.")
    out.append("")
    head = "| case | dx | minicnn fwd | minicnn fwd+bwd | GFLOP/s | % peak |"
    sep = "|---|---|---|---|---|---|"
    for m in modes:
        head += f" torch {m} fwd | torch {m} fwd+bwd | ratio{' *' if m == like else ''} |"
        sep += "---|---|---|"
    out += ["## Layers (A-E)", "", head, sep]
    for r in layer_rows:
        line = (f"| {r['case']} | {'yes' if r['dx'] else 'no'} | {_f(r['minicnn_fwd_ms'])} | "
                f"{_f(r['minicnn_fwd_bwd_ms'])} | {_f(r.get('gflops'), ',.0f')} | "
                f"{_f(None if r.get('peak_frac') is None else 100 * r['peak_frac'], '.1f')} |")
        for m in modes:
            line += (f" {_f(r.get(f'torch_{m}_fwd_ms'))} | {_f(r.get(f'torch_{m}_fwd_bwd_ms'))} | "
                     f"{_f(_ratio(r['minicnn_fwd_bwd_ms'], r.get(f'torch_{m}_fwd_bwd_ms')), '.2f')} |")
        out.append(line)
    out.append("")
    out.append("ratio = minicnn fwd+bwd / torch fwd+bwd (above 1: minicnn slower); * = same TF32 "
               "setting as minicnn. Pool rows: GFLOP/s column left empty.")
    if kernel_rows:
        out += ["", "## minicnn's kernels alone", "", "| case | kernel | ms | GB/s |", "|---|---|---|---|"]
        for r in kernel_rows:
            out.append(f"| {r['case']} | {r['kernel']} | {_f(r['ms'], '.4f')} | {_f(r['gbs'], ',.0f')} |")
    if d256:
        out += ["", f"## D at batch {d256['batch']}: im2col + GEMM forward vs PyTorch's conv", ""]
        out.append("| im2col | GEMM | bias | whole forward | GEMM GFLOP/s (% peak) | forward GFLOP/s |"
                   + "".join(f" torch {m} conv | torch {m} GFLOP/s |" for m in modes))
        out.append("|---|---|---|---|---|---|" + "---|---|" * len(modes))
        d = d256
        out.append(f"| {_f(d['im2col_ms'])} | {_f(d['gemm_ms'])} | {_f(d['bias_ms'])} | "
                   f"{_f(d['forward_ms'])} | {_f(d['gemm_gflops'], ',.0f')} "
                   f"({_f(None if d['gemm_peak_frac'] is None else 100 * d['gemm_peak_frac'], '.0f')}%) | "
                   f"{_f(d['forward_gflops'], ',.0f')} |"
                   + "".join(f" {_f(d.get(f'torch_{m}_forward_ms'))} | "
                             f"{_f(d.get(f'torch_{m}_gflops'), ',.0f')} |" for m in modes))
    if train_rows:
        out += ["", "## Training steps (forward, loss, backward, SGD momentum)", ""]
        head = "| case | model | batch | minicnn ms/step |"
        sep = "|---|---|---|---|"
        for m in modes:
            head += f" torch {m} ms/step | ratio{' *' if m == like else ''} |"
            sep += "---|---|"
        head += (" kernels/step minicnn (own / GEMM / other) | kernels/step torch |"
                 " first loss minicnn / torch |")
        sep += "---|---|---|"
        out += [head, sep]
        for r in train_rows:
            line = f"| {r['case']} | {r['model']} | {r['batch']} | {_f(r['minicnn_ms'])} |"
            for m in modes:
                ratio = _ratio(r["minicnn_ms"], r.get(f"torch_{m}_ms"))
                line += f" {_f(r.get(f'torch_{m}_ms'))} | {_f(ratio, '.2f')} |"
            if "minicnn_kernels" in r:
                launches = (f"{r['minicnn_kernels']} ({r['minicnn_own_kernels']} / "
                            f"{r['minicnn_gemm_kernels']} / {r['minicnn_other_kernels']})")
            elif "minicnn_own_kernels_counter" in r:
                launches = f"own only: {r['minicnn_own_kernels_counter']}"
            else:
                launches = "-"
            first_torch = r.get(f"torch_{modes[0]}_first_loss") if modes else None
            line += (f" {launches} | {r.get('torch_kernels', '-')} | "
                     f"{_f(r['minicnn_first_loss'], '.5f')} / {_f(first_torch, '.5f')} |")
            out.append(line)
            if r.get("minicnn_count_warning"):
                out.append(f"\nwarning ({r['case']}): {r['minicnn_count_warning']}\n")
        out.append("")
        out.append("Kernel launches: counted from PyTorch's profiler trace of one step (see the "
                   "script's docstring); 'own' = minicnn's RawKernels, GEMM = cuBLAS.")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help="comma-separated subset of " + ",".join(ALL_CASES))
    ap.add_argument("--repeat", type=int, default=50, help="timed repetitions per measurement (median)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--train-repeat", type=int, default=30)
    ap.add_argument("--torch-tf32", choices=["both", "off", "on"], default="both")
    ap.add_argument("--no-torch", action="store_true", help="minicnn only")
    ap.add_argument("--no-count", action="store_true", help="skip counting kernel launches")
    ap.add_argument("--json", default="bench_gpu.json", help="where to write the results ('' for nowhere)")
    ap.add_argument("--smoke", action="store_true",
                    help="run the code paths on the CPU (NumPy, CPU PyTorch) to check this script")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; known: {ALL_CASES}")

    if args.smoke:
        try:
            import torch
        except Exception:
            torch = None
        torch = None if args.no_torch else torch
        cp, clock, tclock = None, WallClock(torch), WallClock(torch)
        repeat, warmup, train_repeat = 2, 1, 2
    else:
        reason = gpu_skip_reason()
        if reason:
            print(f"bench_gpu: skipped, no GPU: {reason}")
            return 0
        cp = backend.cupy_or_none()
        torch = None if args.no_torch else torch_cuda()
        if torch is None and not args.no_torch:
            print("bench_gpu: PyTorch with CUDA not available; timing minicnn only")
        clock, tclock = CupyClock(cp), (None if torch is None else TorchClock(torch))
        repeat, warmup, train_repeat = args.repeat, args.warmup, args.train_repeat
    modes = torch_modes(torch, args.torch_tf32)
    like = "tf32" if os.environ.get("CUPY_TF32") == "1" else "fp32"

    env = environment(cp, torch, args.smoke)
    peak = sgemm_peak(clock, repeat)
    layer_rows, train_rows, d256 = [], [], None
    for name in cases:
        print(f"bench_gpu: {name} ...", file=sys.stderr, flush=True)
        if name in CONV_CASES:
            layer_rows += conv_case(name, clock, tclock, modes, repeat, warmup, peak, torch)
        elif name in POOL_CASES:
            layer_rows += pool_case(name, clock, tclock, modes, repeat, warmup, torch)
        elif name == "D256":
            d256 = d256_breakdown(clock, tclock, modes, repeat, warmup, peak, torch)
        else:
            train_rows.append(train_case(name, clock, tclock, modes, train_repeat, warmup, torch,
                                         count=not args.no_count))
    kernel_rows = kernel_only(clock, repeat, warmup)
    if torch is not None:
        env["torch_tf32_after_run"] = set_torch_tf32(torch, like == "tf32")
    text = report(env, peak, layer_rows, kernel_rows, d256, train_rows, modes, like)
    print(text)
    if args.json:
        result = {"environment": env, "sgemm_peak_gflops": peak, "torch_modes": modes,
                  "like_with_like": like, "clock": clock.name, "repeat": repeat, "warmup": warmup,
                  "layers": layer_rows, "kernels": kernel_rows, "d256": d256, "train": train_rows}
        write_text_atomic(args.json, json.dumps(result, indent=2, default=str))
        print(f"\nbench_gpu: results written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
