"""Kernel and layer benchmarks over cases A-E: conv and pooling layers against PyTorch.

``minicnn bench`` and benchmarks/bench_kernels.py run it; the cases are ``CASES`` below.

For every case it times, in one run and side by side:

    numpy    the layer with the NumPy kernels, all threads
    c-1t     the layer with the C kernels, 1 thread (kernels and BLAS)
    c-Nt     the layer with the C kernels, all threads
    torch    PyTorch CPU eager, all threads (when importable)

The C kernels run a conv layer as one fused call when NumPy's OpenBLAS can be used
(``minicnn info``); ``MINICNN_FUSED_CONV=0`` measures the batched route instead (im2col of a
chunk of images, then one multi-threaded NumPy GEMM).  Compare the two in separate processes:
the OpenMP spin-wait is chosen at import for the route in use (see ``minicnn.kernels``).
3x3 stride-1 convs with 16+ channels run by Winograd F(2x2, 3x3) (column ``algo``); for those
the table adds ``c-Nt direct``, the same layer on the direct (im2col + GEMM) route.

median forward and forward+backward times, GFLOP/s and the fraction of the sgemm peak measured
in the same run (convs), achieved GB/s against a plain large copy (pooling), the ratio to
PyTorch, and kernel-only timings (im2col, col2im, pooling: C vs NumPy, 1 vs N threads, the
bytes they read and write per second, and the "stream" floor: the time the same threads take
just to store what the kernel writes and load what it reads, which bounds a memory-bound
kernel and so the ratios it can reach).
Conv fwd+bwd is measured with dx (``dx=yes``) and, for first layers, without (``dx=no``);
PyTorch gets ``requires_grad`` on x accordingly, so like is compared with like.

Reusable helpers (``timeit``, ``sgemm_peak``, ``blas_description``, ``copy_bandwidth``,
``store_bandwidth``) are imported by the other benchmark scripts.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np

from minicnn import backend, kernels
from minicnn import functional as F
from minicnn.io import write_text_atomic

# case: (op, N, C, H, W, F or None, kernel, stride, padding, first layer?); a "pool" case times
# max- and average-pooling (column ``algo``); the project's E cases are max-pool layers
POOL_KINDS = ("max", "avg")
CASES = {
    "A": ("conv", 64, 3, 32, 32, 32, 3, 1, 1, True),
    "B": ("conv", 64, 32, 16, 16, 64, 3, 1, 1, False),
    "C1": ("conv", 128, 1, 28, 28, 6, 5, 1, 0, True),
    "C2": ("conv", 128, 6, 14, 14, 16, 5, 1, 0, False),
    "D": ("conv", 32, 64, 32, 32, 64, 3, 1, 1, False),
    "E1": ("pool", 64, 64, 32, 32, None, 2, 2, 0, False),
    "E2": ("pool", 32, 64, 56, 56, None, 3, 2, 1, False),
}


# ---------------------------------------------------------------- helpers (shared)

def settle(seconds=0.25):
    """Let the previous variant's idle BLAS / OpenMP threads stop spinning (OpenBLAS workers spin
    for ~0.1 s after a GEMM) so they do not steal a core from the next variant's threads."""
    time.sleep(seconds)


# Every layer and kernel is timed over at least this many seconds: medians of 9 runs of the
# 0.1-2 ms ones moved by up to 30 % when the VM's other core was briefly taken.
MIN_TIME = 0.3


def timeit(fn, repeat=10, warmup=2, min_time=0.0):
    """Median wall time of fn() in seconds over `repeat` runs and at least `min_time` seconds,
    after `warmup` runs and at least min_time / 2 seconds of them: after settle()'s sleep the
    cores took ~0.1 s to get up to speed (case D's im2col ran its first 15 calls up to 40%
    slower, on 1 thread or 2)."""
    settle()
    start = time.perf_counter()
    warm = 0
    while warm < warmup or time.perf_counter() - start < min_time / 2:
        fn()
        warm += 1
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sgemm_peak(n=2048, repeat=5):
    """GFLOP/s of a large float32 np.matmul (the BLAS rate every conv is compared with)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    t = timeit(lambda: np.matmul(a, b, out=out), repeat=repeat, warmup=1)
    return 2.0 * n ** 3 / t / 1e9


def copy_bandwidth(nbytes=64 << 20, repeat=10):
    """GB/s (bytes read + written) of a plain copy into a reused buffer."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    t = timeit(lambda: np.copyto(dst, src), repeat=repeat)
    return 2.0 * nbytes / t / 1e9


def store_bandwidth(nbytes=8 << 20, repeat=20):
    """GB/s of one thread filling a reused buffer larger than a core's L2 cache: the rate at which
    one core's stores leave it, the ceiling of a kernel that mostly writes (im2col)."""
    dst = np.zeros(nbytes // 4, np.float32)
    t = timeit(lambda: dst.fill(1.0), repeat=repeat)
    return nbytes / t / 1e9


def blas_description():
    """'openblas 0.3.x (Haswell), 2 threads' from threadpoolctl, or what is known without it."""
    libs = backend.blas_info()
    if not libs:
        return "unknown (pip install threadpoolctl)"
    return "; ".join(f"{d.get('internal_api')} {d.get('version')} (kernel {d.get('architecture')}), "
                     f"{d.get('num_threads')} threads" for d in libs)


def environment():
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                          "OMP_NUM_THREADS", "MINICNN_KERNELS",
                                          "MINICNN_OWN_SGEMM")}
    torch = _torch()
    return {
        "python": platform.python_version(), "numpy": np.__version__,
        "cpu_count": os.cpu_count(), "threads": backend.get_num_threads(),
        "c_extension": kernels.c_extension_available(), "openmp": kernels.openmp_enabled(),
        "blas": blas_description(), "conv_gemm": backend.conv_gemm_summary(kernels), "env": env,
        "torch": None if torch is None else torch.__version__,
    }


def _torch():
    try:
        import torch
        return torch
    except Exception:
        return None


# ---------------------------------------------------------------- one case

class _Threads:
    """Run a block with n threads for the C kernels and the BLAS."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.previous = backend.get_num_threads()
        backend.set_num_threads(self.n)

    def __exit__(self, *exc):
        backend.set_num_threads(self.previous)


def _conv_runners(x, w, b, pad, dout):
    def fwd():
        return F.conv2d_forward(x, w, b, 1, pad)

    def fwd_bwd(need_dx):
        def run():
            _, cache = F.conv2d_forward(x, w, b, 1, pad)
            return F.conv2d_backward(dout, cache, need_dx=need_dx)
        return run
    return fwd, fwd_bwd(True), fwd_bwd(False)


def _pool_runners(kind, x, k, s, p, dout):
    forward, backward = {"max": (F.maxpool2d_forward, F.maxpool2d_backward),
                         "avg": (F.avgpool2d_forward, F.avgpool2d_backward)}[kind]

    def fwd():
        return forward(x, k, s, p)

    def fwd_bwd():
        _, cache = forward(x, k, s, p)
        return backward(dout, cache)
    return fwd, fwd_bwd


def _torch_conv(torch, x, w, b, pad, dout, need_dx):
    xt = torch.from_numpy(x).requires_grad_(need_dx)
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    dt = torch.from_numpy(dout)
    fn = torch.nn.functional.conv2d

    def fwd():
        with torch.no_grad():
            return fn(xt, wt, bt, 1, pad)

    def fwd_bwd():
        y = fn(xt, wt, bt, 1, pad)
        y.backward(dt)
        xt.grad = wt.grad = bt.grad = None
    return fwd, fwd_bwd


def _torch_pool(torch, kind, x, k, s, p, dout):
    xt = torch.from_numpy(x).requires_grad_()
    dt = torch.from_numpy(dout)
    # avg_pool2d's default count_include_pad=True is minicnn's rule too
    fn = {"max": torch.nn.functional.max_pool2d, "avg": torch.nn.functional.avg_pool2d}[kind]

    def fwd():
        with torch.no_grad():
            return fn(xt, k, s, p)

    def fwd_bwd():
        y = fn(xt, k, s, p)
        y.backward(dt)
        xt.grad = None
    return fwd, fwd_bwd


def _variants(threads, winograd_case=False):
    """(name, kernels, thread count, Winograd allowed) of the minicnn variants; a conv that the
    C kernels run by Winograd is also timed on the direct route (``c-Nt direct``)."""
    out = [("numpy", "numpy", threads, True)]
    if kernels.c_extension_available():
        out.append(("c-1t", "c", 1, True))
        if threads > 1:
            out.append((f"c-{threads}t", "c", threads, True))
        if winograd_case:
            out.append((f"c-{threads}t direct", "c", threads, False))
    return out


def _conv_algorithm(x_shape, w_shape, stride):
    """The route functional.conv2d takes under the current kernel settings."""
    return "winograd" if kernels.winograd_wanted(x_shape, w_shape, (stride, stride)) else "direct"


def run_case(name, repeat, threads, peak, copy_gbs, with_torch=True):
    op, n, c, h, w, f, k, s, p, first = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    rows = []
    torch = _torch() if with_torch else None
    if op == "conv":
        weight = rng.standard_normal((f, c, k, k), dtype=np.float32) * 0.1
        bias = rng.standard_normal(f, dtype=np.float32)
        oh = (h + 2 * p - k) // s + 1
        dout = rng.standard_normal((n, f, oh, oh), dtype=np.float32)
        flop_fwd = 2.0 * n * f * c * k * k * oh * oh
        dx_modes = (True, False) if first else (True,)
        c_kernels = kernels.use_kernels("c") if kernels.c_extension_available() else nullcontext()
        with c_kernels:
            winograd_case = _conv_algorithm(x.shape, weight.shape, s) == "winograd"
        for vname, kname, nt, winograd_on in _variants(threads, winograd_case):
            with kernels.use_kernels(kname), _Threads(nt), kernels.use_winograd(winograd_on):
                algo = _conv_algorithm(x.shape, weight.shape, s)
                fwd, fb_dx, fb_nodx = _conv_runners(x, weight, bias, p, dout)
                t_f = timeit(fwd, repeat, min_time=MIN_TIME)
                for need_dx in dx_modes:
                    t_fb = timeit(fb_dx if need_dx else fb_nodx, repeat, min_time=MIN_TIME)
                    rows.append(_conv_row(name, vname, algo, t_f, t_fb, need_dx, flop_fwd, peak))
        if torch is not None:
            torch.set_num_threads(threads)
            for need_dx in dx_modes:
                fwd, fb = _torch_conv(torch, x, weight, bias, p, dout, need_dx)
                t_f = timeit(fwd, repeat, min_time=MIN_TIME)
                t_fb = timeit(fb, repeat, min_time=MIN_TIME)
                rows.append(_conv_row(name, "torch", "-", t_f, t_fb, need_dx, flop_fwd, peak))
    else:
        oh = (h + 2 * p - k) // s + 1
        dout = rng.standard_normal((n, c, oh, oh), dtype=np.float32)
        for kind in POOL_KINDS:
            # bytes moved: fwd reads x, writes out (and max's int32 argmax); bwd reads dout (and
            # argmax), writes dx
            index_bytes = dout.nbytes if kind == "max" else 0
            bytes_fb = 2 * x.nbytes + 2 * (dout.nbytes + index_bytes)
            timings = []
            for vname, kname, nt, _ in _variants(threads):
                with kernels.use_kernels(kname), _Threads(nt):
                    fwd, fb = _pool_runners(kind, x, k, s, p, dout)
                    timings.append((vname, timeit(fwd, repeat, min_time=MIN_TIME),
                                    timeit(fb, repeat, min_time=MIN_TIME)))
            if torch is not None:
                torch.set_num_threads(threads)
                fwd, fb = _torch_pool(torch, kind, x, k, s, p, dout)
                timings.append(("torch", timeit(fwd, repeat, min_time=MIN_TIME),
                                timeit(fb, repeat, min_time=MIN_TIME)))
            rows += [_pool_row(name, vname, kind, t_f, t_fb, bytes_fb, copy_gbs)
                     for vname, t_f, t_fb in timings]
    # ratios to PyTorch on the same dx mode (and, for pooling, the same kind)
    def same(r):
        return r["dx"], r["algo"] if op == "pool" else None
    ref = {same(r): r["fwd_bwd_ms"] for r in rows if r["variant"] == "torch"}
    for r in rows:
        r["ratio_torch"] = (r["fwd_bwd_ms"] / ref[same(r)]) if same(r) in ref else None
    return rows


def _conv_row(case, variant, algo, t_f, t_fb, need_dx, flop_fwd, peak):
    flop = flop_fwd * (3 if need_dx else 2)        # the direct convolution's count, every route
    gflops = flop / t_fb / 1e9
    return {"case": case, "variant": variant, "algo": algo, "fwd_ms": t_f * 1e3,
            "fwd_bwd_ms": t_fb * 1e3,
            "dx": "yes" if need_dx else "no", "gflops": gflops,
            "peak_frac": gflops / peak if peak else None, "gbs": None, "copy_frac": None}


def _pool_row(case, variant, kind, t_f, t_fb, nbytes, copy_gbs):
    gbs = nbytes / t_fb / 1e9
    return {"case": case, "variant": variant, "algo": kind, "fwd_ms": t_f * 1e3,
            "fwd_bwd_ms": t_fb * 1e3, "dx": "yes", "gflops": None, "peak_frac": None, "gbs": gbs,
            "copy_frac": gbs / copy_gbs if copy_gbs else None}


# ---------------------------------------------------------------- kernel-only timings

def kernel_timings(name, repeat, threads):
    """im2col / col2im (convs) or pool fwd / bwd kernels alone: NumPy, C 1 thread, C N threads;
    and, with the C extension, the time the same threads take to store what each kernel writes
    and load what it reads (``stream_ms``), the floor for a kernel bound by memory."""
    op, n, c, h, w, f, k, s, p, _ = CASES[name]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    ks, st, pd = (k, k), (s, s), (p, p)
    from minicnn.kernels import _numpy
    mods = [("numpy", _numpy, threads)]
    if kernels.c_extension_available():
        from minicnn.kernels import _cpu
        mods += [("c-1t", _cpu, 1), (f"c-{threads}t", _cpu, threads)]
    # job: (kernel call, bytes it reads, bytes it writes)
    if op == "conv":
        cols = _numpy.im2col(x, ks, st, pd)
        cols_out = np.empty_like(cols)
        # "im2col" allocates its result (first touch of fresh pages included); "im2col out="
        # writes into a reused buffer, as functional.conv does
        jobs = {"im2col": (lambda m: m.im2col(x, ks, st, pd), x.nbytes, cols.nbytes),
                "im2col out=": (lambda m: m.im2col(x, ks, st, pd, out=cols_out), x.nbytes,
                                cols.nbytes),
                "col2im": (lambda m: m.col2im(cols, x.shape, ks, st, pd), cols.nbytes, x.nbytes)}
    else:
        out, argmax = _numpy.maxpool_forward(x, ks, st, pd)
        jobs = {"maxpool_fwd": (lambda m: m.maxpool_forward(x, ks, st, pd), x.nbytes,
                                out.nbytes + argmax.nbytes),
                "maxpool_bwd": (lambda m: m.maxpool_backward(out, argmax, x.shape),
                                out.nbytes + argmax.nbytes, x.nbytes),
                "avgpool_fwd": (lambda m: m.avgpool_forward(x, ks, st, pd), x.nbytes, out.nbytes),
                "avgpool_bwd": (lambda m: m.avgpool_backward(out, x.shape, ks, st, pd), out.nbytes,
                                x.nbytes)}
    times = {}
    for job, (fn, _, _) in jobs.items():
        for vname, mod, nt in mods:
            with _Threads(nt):
                times[(job, vname)] = timeit(lambda: fn(mod), repeat, min_time=MIN_TIME) * 1e3
    stream = {}
    if kernels.c_extension_available():
        stream = stream_timings({job: (rd, wr) for job, (_, rd, wr) in jobs.items()},
                                [(v, nt) for v, _, nt in mods[1:]], repeat)
    return {"ms": times, "stream_ms": stream,
            "bytes": {job: rd + wr for job, (_, rd, wr) in jobs.items()}}


def stream_timings(traffic, variants, repeat):
    """{(job, variant): ms} to store the bytes each job writes and then load the bytes it reads
    (traffic: {job: (read, written)}), as two passes of the C extension's stream kernels on the
    variant's threads, into reused memory.  Reading and writing at once can beat the sum."""
    from minicnn.kernels import _cpu
    store = np.empty(max(wr for _, wr in traffic.values()) // 4, np.uint32)
    load = np.ones(max(rd for rd, _ in traffic.values()) // 4, np.uint32)
    times = {}
    for vname, nt in variants:
        with _Threads(nt):
            for job, (rd, wr) in traffic.items():
                dst, src = store[:wr // 4], load[:rd // 4]
                times[(job, vname)] = 1e3 * (
                    timeit(lambda: _cpu.stream_store(dst), repeat, min_time=MIN_TIME / 2)
                    + timeit(lambda: _cpu.stream_load(src), repeat, min_time=MIN_TIME / 2))
    return times


# ---------------------------------------------------------------- where the time goes

def conv_breakdown(name, repeat, threads):
    """Stage times (ms) of one conv layer, fwd + bwd with dx, as functional.conv's batched route
    runs them (C kernels, K-major GEMMs) and as the first version did (NumPy kernels, per-image
    GEMMs, einsum for dw); then the whole layer as it runs now.  Meaningful with the batched
    route (MINICNN_FUSED_CONV=0): the fused route has no separate stages, and its long OpenMP
    spin-wait slows the NumPy GEMMs timed here."""
    from minicnn.functional import conv
    op, n, c, h, w, f, k, s, p, _ = CASES[name]
    if op != "conv":
        return None
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((f, c, k, k), dtype=np.float32)
    bias = rng.standard_normal(f, dtype=np.float32)
    ks, st, pd = (k, k), (s, s), (p, p)
    oh = (h + 2 * p - k) // s + 1
    hw, kk = oh * oh, c * k * k
    dout = rng.standard_normal((n, f, hw), dtype=np.float32)
    w_mat = weight.reshape(f, kk)
    from minicnn.kernels import _numpy
    stages = {}
    with _Threads(threads):
        t = lambda fn: timeit(fn, repeat) * 1e3  # noqa: E731
        # before: x_cols = im2col (NumPy), out = W @ x_cols (N GEMMs) + b, dw by einsum, ...
        cols = _numpy.im2col(x, ks, st, pd)
        out = w_mat @ cols
        dx_cols = w_mat.T @ dout
        stages["before"] = {
            "im2col": t(lambda: _numpy.im2col(x, ks, st, pd)),
            "gemm_fwd": t(lambda: w_mat @ cols),
            "bias": t(lambda: out.__iadd__(bias[:, None])),
            "db": t(lambda: dout.sum(axis=(0, 2))),
            "gemm_dw": t(lambda: np.einsum("nfl,nkl->fk", dout, cols, optimize=True)),
            "gemm_dx": t(lambda: w_mat.T @ dout),
            "col2im": t(lambda: _numpy.col2im(dx_cols, x.shape, ks, st, pd)),
        }
        # batched: K-major columns, one GEMM per chunk, transposes fused with the bias
        if kernels.c_extension_available():
            with kernels.use_kernels("c"):
                cols_k = np.empty((kk, n, hw), np.float32)
                view = cols_k.transpose(1, 0, 2)
                kernels.im2col(x, ks, st, pd, out=view)
                out_k = np.empty((f, n * hw), np.float32)
                out_n = np.empty((n, f, hw), np.float32)
                d_k = np.empty((f, n * hw), np.float32)
                dx_k = np.empty((kk, n * hw), np.float32)
                np.matmul(w_mat.T, dout.transpose(1, 0, 2).reshape(f, -1), out=dx_k)
                stages["batched"] = {
                    "im2col": t(lambda: kernels.im2col(x, ks, st, pd, out=view)),
                    "gemm_fwd": t(lambda: np.matmul(w_mat, cols_k.reshape(kk, -1), out=out_k)),
                    "layout+bias": t(lambda: np.add(out_k.reshape(f, n, hw).transpose(1, 0, 2),
                                                    bias[:, None], out=out_n)),
                    "layout dout": t(lambda: np.copyto(d_k.reshape(f, n, hw), dout.transpose(1, 0, 2))),
                    "db": t(lambda: d_k.sum(axis=1)),
                    "gemm_dw": t(lambda: d_k @ cols_k.reshape(kk, -1).T),
                    "gemm_dx": t(lambda: np.matmul(w_mat.T, d_k, out=dx_k)),
                    "col2im": t(lambda: kernels.col2im(dx_k.reshape(kk, n, hw).transpose(1, 0, 2),
                                                       x.shape, ks, st, pd)),
                }
        stages["layer_fwd_bwd"] = t(lambda: F.conv2d_backward(
            dout.reshape(n, f, oh, oh), F.conv2d_forward(x, weight, bias, s, p)[1]))
    conv.clear_workspace()
    return stages


def breakdown_table(breakdowns):
    lines = ["| case | version | " + "stage ms (sum) |", "|---|---|---|"]
    for case, st in breakdowns.items():
        for version in ("before", "batched"):
            if version in st:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in st[version].items())
                lines.append(f"| {case} | {version} | {parts} (sum {sum(st[version].values()):.2f}) |")
        lines.append(f"| {case} | layer now | conv2d fwd+bwd {st['layer_fwd_bwd']:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- report

def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def markdown_table(rows):
    head = ("| case | variant | algo | dx | fwd ms | fwd+bwd ms | GFLOP/s | % sgemm peak | GB/s "
            "| % copy | x torch |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['case']} | {r['variant']} | {r['algo']} | {r['dx']} | {r['fwd_ms']:.2f} | "
                     f"{r['fwd_bwd_ms']:.2f} | {_fmt(r['gflops'], '.1f')} | "
                     f"{_fmt(None if r['peak_frac'] is None else 100 * r['peak_frac'], '.0f')} | "
                     f"{_fmt(r['gbs'], '.1f')} | "
                     f"{_fmt(None if r['copy_frac'] is None else 100 * r['copy_frac'], '.0f')} | "
                     f"{_fmt(r['ratio_torch'], '.2f')} |")
    return "\n".join(lines)


def _ratio(a, b):
    return a / b if a and b else None


def _fmt_times(v, spec):
    return "-" if v is None else format(v, spec) + "x"


def kernel_table(ktimes, threads):
    """The kernels-alone table.  ``stream`` is the time the C kernels' threads take to store what
    a kernel writes and load what it reads (kernel_timings): "% of stream" near 100 means the
    kernel runs at the memory's pace, and "NumPy / stream" is the most that any kernel moving
    those bytes could gain over NumPy."""
    nt = f"c-{threads}t"
    lines = [f"| case | kernel | numpy ms | c-1t ms | {nt} ms | C vs NumPy | {nt} vs 1t | "
             f"{nt} GB/s | stream {nt} ms | % of stream | NumPy / stream | stream {nt} vs 1t |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case, res in ktimes.items():
        for job, nbytes in res["bytes"].items():
            t_np, t_1, t_n = (res["ms"].get((job, v)) for v in ("numpy", "c-1t", nt))
            s_1, s_n = (res["stream_ms"].get((job, v)) for v in ("c-1t", nt))
            stream_frac = _ratio(s_n, t_n)
            lines.append(f"| {case} | {job} | {_fmt(t_np, '.2f')} | {_fmt(t_1, '.2f')} | "
                         f"{_fmt(t_n, '.2f')} | {_fmt_times(_ratio(t_np, t_n), '.1f')} | "
                         f"{_fmt_times(_ratio(t_1, t_n), '.2f')} | "
                         f"{_fmt(nbytes / t_n / 1e6 if t_n else None, '.1f')} | "
                         f"{_fmt(s_n, '.2f')} | "
                         f"{_fmt(None if stream_frac is None else 100 * stream_frac, '.0f')} | "
                         f"{_fmt_times(_ratio(t_np, s_n), '.1f')} | "
                         f"{_fmt_times(_ratio(s_1, s_n), '.2f')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minicnn bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated cases (default: all of %(default)s)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per median")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the multi-threaded variants (default: all)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-kernels", action="store_true", help="skip the kernel-only table")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the stages of each conv (im2col, GEMMs, col2im, layout)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    cases = [c.strip().upper() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    threads = args.threads or backend.get_num_threads()
    backend.set_num_threads(threads)

    env = environment()
    peak = sgemm_peak()
    copy_gbs = copy_bandwidth()
    store_gbs = store_bandwidth()
    print(f"# minicnn kernel benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"- BLAS: {env['blas']}")
    print("- env: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    print(f"- kernels: {'C (OpenMP)' if env['openmp'] else 'C' if env['c_extension'] else 'NumPy only'}"
          f", threads {threads} of {env['cpu_count']} cores; numpy {env['numpy']}; "
          f"torch {env['torch'] or 'not installed'}")
    print(f"- GEMM: {env['conv_gemm']}")
    print(f"- sgemm peak (2048^3 float32 np.matmul, {threads} threads): {peak:.1f} GFLOP/s; "
          f"copy bandwidth: {copy_gbs:.1f} GB/s (read + write, 64 MiB); store bandwidth: "
          f"{store_gbs:.1f} GB/s (1 thread filling 8 MiB)\n")
    sys.stdout.flush()

    rows, ktimes, breakdowns = [], {}, {}
    for case in cases:
        rows += run_case(case, args.repeat, threads, peak, copy_gbs, not args.no_torch)
        if not args.no_kernels:
            ktimes[case] = kernel_timings(case, args.repeat, threads)
        if args.breakdown and CASES[case][0] == "conv" and not kernels.fused_conv_available():
            breakdowns[case] = conv_breakdown(case, args.repeat, threads)
    print(markdown_table(rows))
    if any(r["algo"] == "winograd" for r in rows):
        print("\nGFLOP/s and % sgemm peak count the direct convolution's flops on every route; "
              "for the Winograd rows that is an effective rate (they multiply 2.25x less).")
    if ktimes:
        print("\nKernels alone (float32):\n")
        print(kernel_table(ktimes, threads))
    if args.breakdown and not breakdowns and any(CASES[c][0] == "conv" for c in cases):
        print("\n--breakdown: the convs run fused (one C call, no separate stages); run with "
              "MINICNN_FUSED_CONV=0 for the batched route's stages")
    if breakdowns:
        print(f"\nWhere the time goes (fwd + bwd with dx, {threads} threads):\n")
        print(breakdown_table(breakdowns))
    if args.json:
        data = {"breakdown": breakdowns, "environment": env, "sgemm_peak_gflops": peak, "copy_gbs": copy_gbs,
                "store_gbs_1thread": store_gbs, "threads": threads, "rows": rows,
                "kernels": {case: [{"kernel": j, "variant": v, "ms": t, "bytes": res["bytes"][j],
                                    "stream_ms": res["stream_ms"].get((j, v))}
                                   for (j, v), t in res["ms"].items()]
                            for case, res in ktimes.items()}}
        write_text_atomic(args.json, json.dumps(data, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
