"""The benchmark's bookkeeping (minicnn.bench), on a tiny case with the timing floor removed: every
row it prints must be the layer it names, and each ratio must compare like with like."""
import numpy as np
import pytest

from minicnn import bench
from minicnn import functional as F

TINY_POOL = ("pool", 2, 3, 8, 8, None, 2, 2, 0, False)


@pytest.fixture
def quick_bench(monkeypatch):
    monkeypatch.setattr(bench, "CASES", {"T": TINY_POOL})
    monkeypatch.setattr(bench, "MIN_TIME", 0.0)
    monkeypatch.setattr(bench, "settle", lambda seconds=0.0: None)


def test_a_pool_case_times_max_and_avg_pooling_and_their_ratios_pair_by_kind(quick_bench):
    rows = bench.run_case("T", repeat=1, threads=1, peak=None, copy_gbs=1.0, with_torch=True)
    kinds = {r["algo"] for r in rows}
    assert kinds == {"max", "avg"}
    for kind in kinds:
        same_kind = [r for r in rows if r["algo"] == kind]
        assert "numpy" in {r["variant"] for r in same_kind}
        torch_rows = [r for r in same_kind if r["variant"] == "torch"]
        if not torch_rows:                      # PyTorch not installed: no ratios at all
            assert all(r["ratio_torch"] is None for r in same_kind)
            continue
        torch_ms = torch_rows[0]["fwd_bwd_ms"]
        for r in same_kind:
            assert r["ratio_torch"] == pytest.approx(r["fwd_bwd_ms"] / torch_ms)


def test_the_pool_runners_run_the_layer_they_are_named_after():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))
    dout = rng.standard_normal((2, 3, 4, 4))
    for kind, forward, backward in [("max", F.maxpool2d_forward, F.maxpool2d_backward),
                                    ("avg", F.avgpool2d_forward, F.avgpool2d_backward)]:
        fwd, fwd_bwd = bench._pool_runners(kind, x, 2, 2, 0, dout)
        out, cache = forward(x, 2, 2, 0)
        np.testing.assert_array_equal(fwd()[0], out, err_msg=kind)
        np.testing.assert_array_equal(fwd_bwd(), backward(dout, cache), err_msg=kind)


def test_the_torch_pool_runner_matches_minicnn_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    dout = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    for kind, forward in [("max", F.maxpool2d_forward), ("avg", F.avgpool2d_forward)]:
        fwd, _ = bench._torch_pool(torch, kind, x, 3, 2, 1, dout)
        # float32 sums in another order: a few units in the last place, absolute near zero
        np.testing.assert_allclose(fwd().numpy(), forward(x, 3, 2, 1)[0], rtol=1e-5, atol=1e-6,
                                   err_msg=kind)


def test_kernel_timings_count_the_bytes_each_kernel_reads_and_writes(quick_bench, monkeypatch):
    monkeypatch.setattr(bench, "CASES", {"P": TINY_POOL,
                                         "K": ("conv", 2, 3, 8, 8, 4, 3, 1, 1, False)})
    conv = bench.kernel_timings("K", repeat=1, threads=1)
    x_bytes, cols_bytes = 2 * 3 * 8 * 8 * 4, 2 * 27 * 64 * 4
    assert conv["bytes"] == dict.fromkeys(["im2col", "im2col out=", "col2im"], x_bytes + cols_bytes)
    pool = bench.kernel_timings("P", repeat=1, threads=1)
    x_bytes, out_bytes = 2 * 3 * 8 * 8 * 4, 2 * 3 * 4 * 4 * 4     # argmax: int32, as big as out
    assert pool["bytes"]["avgpool_fwd"] == x_bytes + out_bytes
    assert pool["bytes"]["maxpool_bwd"] == x_bytes + 2 * out_bytes
    assert set(pool["ms"]) >= {(job, "numpy") for job in pool["bytes"]}
    table = bench.kernel_table({"P": pool}, threads=1)
    assert "GB/s" in table.splitlines()[0] and "avgpool_bwd" in table


def test_the_stream_floor_moves_what_each_kernel_reads_and_writes(quick_bench, monkeypatch):
    pytest.importorskip("minicnn.kernels._cpu")
    seen = {}

    def fake_stream_timings(traffic, variants, repeat):
        seen.update(traffic)
        return {(job, v): 1.0 for job in traffic for v, _ in variants}

    monkeypatch.setattr(bench, "stream_timings", fake_stream_timings)
    monkeypatch.setattr(bench, "CASES", {"P": TINY_POOL,
                                         "K": ("conv", 2, 3, 8, 8, 4, 3, 1, 1, False)})
    conv = bench.kernel_timings("K", repeat=1, threads=2)
    x_bytes, cols_bytes = 2 * 3 * 8 * 8 * 4, 2 * 27 * 64 * 4
    assert seen == {"im2col": (x_bytes, cols_bytes), "im2col out=": (x_bytes, cols_bytes),
                    "col2im": (cols_bytes, x_bytes)}                  # (read, written)
    assert set(conv["stream_ms"]) == {(job, v) for job in seen for v in ("c-1t", "c-2t")}
    seen.clear()
    bench.kernel_timings("P", repeat=1, threads=2)
    out_bytes = 2 * 3 * 4 * 4 * 4                       # argmax: int32, as big as out
    assert seen == {"maxpool_fwd": (x_bytes, 2 * out_bytes),
                    "maxpool_bwd": (2 * out_bytes, x_bytes),
                    "avgpool_fwd": (x_bytes, out_bytes), "avgpool_bwd": (out_bytes, x_bytes)}


def test_stream_timings_time_a_store_and_a_load_of_each_jobs_bytes(quick_bench, monkeypatch):
    _cpu = pytest.importorskip("minicnn.kernels._cpu")
    sizes = []
    monkeypatch.setattr(_cpu, "stream_store", lambda dst: sizes.append(("store", dst.nbytes)))
    monkeypatch.setattr(_cpu, "stream_load", lambda src: sizes.append(("load", src.nbytes)))
    times = bench.stream_timings({"a": (400, 8000), "b": (8000, 400)}, [("c-1t", 1)], repeat=1)
    assert set(times) == {("a", "c-1t"), ("b", "c-1t")}
    assert set(sizes) == {("store", 8000), ("load", 400), ("store", 400), ("load", 8000)}


def test_the_kernel_table_sets_each_kernel_against_numpy_one_thread_and_the_stream_floor():
    ktimes = {"X": {"ms": {("im2col", "numpy"): 6.0, ("im2col", "c-1t"): 4.0,
                           ("im2col", "c-2t"): 2.0},
                    "stream_ms": {("im2col", "c-1t"): 3.0, ("im2col", "c-2t"): 1.5},
                    "bytes": {"im2col": 4_000_000}}}
    header, _, row = bench.kernel_table(ktimes, threads=2).splitlines()
    cells = dict(zip([h.strip() for h in header.split("|")[1:-1]],
                     [c.strip() for c in row.split("|")[1:-1]]))
    assert cells == {"case": "X", "kernel": "im2col", "numpy ms": "6.00", "c-1t ms": "4.00",
                     "c-2t ms": "2.00", "C vs NumPy": "3.0x", "c-2t vs 1t": "2.00x",
                     "c-2t GB/s": "2.0", "stream c-2t ms": "1.50", "% of stream": "75",
                     "NumPy / stream": "4.0x", "stream c-2t vs 1t": "2.00x"}
    ktimes["X"]["stream_ms"] = {}                       # NumPy only: no stream columns
    row = bench.kernel_table(ktimes, threads=2).splitlines()[2]
    assert row.rstrip().endswith("| - | - | - | - |")


def test_timeit_warms_up_for_half_the_minimum_time_then_times_at_least_the_minimum(monkeypatch):
    # A fake clock: each call of fn takes 10 ms, the first 5 calls 20 ms (a core waking up).
    now = [0.0]
    calls = []

    def fn():
        calls.append(now[0])
        now[0] += 0.020 if len(calls) <= 5 else 0.010

    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(bench, "settle", lambda seconds=0.0: None)
    median = bench.timeit(fn, repeat=3, warmup=2, min_time=0.2)
    # warm-up: 5 slow calls (0.1 s) reach min_time / 2; then 0.2 s of 10 ms calls are timed
    assert len(calls) == 5 + 20
    assert median == pytest.approx(0.010)
    calls.clear()
    now[0] = 0.0
    bench.timeit(fn, repeat=3, warmup=2)                    # no minimum time: counts only
    assert len(calls) == 2 + 3
