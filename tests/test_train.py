"""The training loop: learning, exact resume, failure handling, early stopping, history files,
and short runs on real data (Fashion-MNIST, the MNIST test set) when they are present."""
import csv
import json
import os
import signal
import tempfile

import numpy as np
import pytest

from minicnn import io as mio
from minicnn import models, nn
from minicnn.backend import gpu_available
from minicnn.data import RandomTranslate
from minicnn.functional import softmax
from minicnn.train import NonFiniteLossError, evaluate, fit, load_trained_model, predict_proba

from datasets import separable_set

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(REPO, "..", "shared", "data", "mnist")


def small_net(seed=0, dropout=0.25):
    """Conv + batchnorm + dropout: every kind of state a resume must restore."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1, rng=rng), nn.BatchNorm2D(4), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dropout(dropout, rng=rng), nn.Linear(64, 2, rng=rng))


def same_state(a, b):
    pa, pb = a.state_dict(), b.state_dict()
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


METRICS = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]


def metric_rows(history):
    return [{k: row[k] for k in METRICS} for row in history.rows]


def test_training_on_a_separable_set_lowers_the_loss_and_fits_it():
    x, y = separable_set()
    model = models.digits_net(num_classes=2, seed=0)
    history = fit(model, (x, y), (x[:80], y[:80]), epochs=4, batch_size=16, lr=0.05, progress=False)
    losses = history["train_loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert history.last("val_accuracy") >= 0.95
    assert history.stop_reason == "completed"
    assert len(history.step_times) == 4 * 15
    result = evaluate(model, x, y, batch_size=50)
    assert result["accuracy"] >= 0.95 and result["predictions"].shape == (240,)
    assert model.training                       # evaluate restores the mode
    probs = predict_proba(model, x[:5])
    model.eval()
    expected = softmax(model.forward(x[:5]))
    model.train()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)


def test_fit_restores_needs_input_grad_of_the_first_layer():
    x, y = separable_set(64)
    model = small_net()
    fit(model, (x, y), epochs=1, batch_size=32, progress=False)
    assert model.needs_input_grad and model[0].needs_input_grad


def test_resume_after_one_epoch_equals_two_uninterrupted_epochs_bit_for_bit(tmp_path):
    x, y = separable_set(150)
    kw = dict(batch_size=32, lr=0.05, momentum=0.9, weight_decay=1e-3, augment=RandomTranslate(1),
              seed=7, progress=False)
    straight = small_net()
    h_straight = fit(straight, (x, y), (x[:40], y[:40]), epochs=2, out_dir=tmp_path / "a", **kw)

    first = small_net()
    fit(first, (x, y), (x[:40], y[:40]), epochs=1, out_dir=tmp_path / "b", **kw)
    resumed = small_net(seed=99)                 # other weights: only the checkpoint can fix them
    assert not same_state(straight, resumed)
    h_resumed = fit(resumed, (x, y), (x[:40], y[:40]), epochs=2, out_dir=tmp_path / "b",
                    resume=tmp_path / "b" / "last.npz", **kw)
    assert same_state(straight, resumed)         # parameters and batchnorm buffers
    assert metric_rows(h_straight) == metric_rows(h_resumed)
    assert straight[5].rng.bit_generator.state == resumed[5].rng.bit_generator.state


@pytest.mark.parametrize("key", ["optimizer", "progress", "data"])
def test_resume_from_a_checkpoint_lacking_a_part_says_which(tmp_path, key):
    x, y = separable_set(64)
    fit(small_net(), (x, y), epochs=1, batch_size=32, out_dir=tmp_path, progress=False)
    state = mio.load_checkpoint(tmp_path / "last.npz")
    del state[key]
    mio.save_checkpoint(tmp_path / "damaged.npz", state)
    with pytest.raises(ValueError, match=f"resume: damaged checkpoint \\(it lacks '{key}'\\)"):
        fit(small_net(), (x, y), epochs=2, batch_size=32, progress=False,
            resume=tmp_path / "damaged.npz")


def test_ctrl_c_saves_mid_epoch_and_resume_continues_bit_for_bit(tmp_path):
    x, y = separable_set(150)
    kw = dict(batch_size=32, lr=0.05, schedule="cosine", warmup=0.5, seed=3, progress=False)
    straight = small_net()
    h_straight = fit(straight, (x, y), (x[:40], y[:40]), epochs=3, augment=RandomTranslate(1), **kw)

    class CtrlCAt:
        """RandomTranslate that sends this process SIGINT while preparing batch number ``at``."""
        def __init__(self, at):
            self.inner, self.calls, self.at = RandomTranslate(1), 0, at

        def __call__(self, xb, rng):
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)
            return self.inner(xb, rng)

    interrupted = small_net()
    with pytest.raises(KeyboardInterrupt, match="interrupted at epoch 2, step 3"):
        fit(interrupted, (x, y), (x[:40], y[:40]), epochs=3, augment=CtrlCAt(8), out_dir=tmp_path, **kw)
    state = mio.load_checkpoint(tmp_path / "last.npz")
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, 3)

    resumed = small_net(seed=99)                 # other weights: only the checkpoint can fix them
    h_resumed = fit(resumed, (x, y), (x[:40], y[:40]), epochs=3, augment=RandomTranslate(1),
                    out_dir=tmp_path, resume=tmp_path / "last.npz", **kw)
    assert same_state(straight, resumed)
    assert metric_rows(h_straight) == metric_rows(h_resumed)


class PoisonAfter(nn.Module):
    """The identity for the first ``calls`` training forwards, then NaN (a diverging model)."""

    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def forward(self, x):
        if self.training:
            self.calls -= 1
        return x * np.float32(np.nan) if self.calls < 0 else x

    def backward(self, dout):
        return dout

    def config_args(self):
        return {"calls": self.calls}


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = separable_set(96)
    model = nn.Sequential(*small_net(dropout=0.0).layers, PoisonAfter(3 + 2))   # 3 steps per epoch
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, step 3.*last\.npz"):
        fit(model, (x, y), epochs=5, batch_size=32, out_dir=tmp_path, progress=False)
    state = mio.load_checkpoint(tmp_path / "last.npz")
    assert state["progress"]["epoch"] == 1
    assert all(np.isfinite(v).all() for v in state["model"].values())
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["stop_reason"] == "non-finite loss" and len(saved["rows"]) == 1


def test_early_stopping_ends_the_run_when_the_monitored_metric_stalls(tmp_path):
    x, y = separable_set(64)
    history = fit(small_net(), (x, y), (x[:32], y[:32]), epochs=10, batch_size=32, lr=0.0,
                  early_stopping={"patience": 2, "monitor": "val_loss"}, out_dir=tmp_path,
                  progress=False)
    assert history.stop_reason == "early stopping"
    assert len(history) == 3                     # the first epoch sets the best, two more stall
    assert "val_loss did not improve for 2 epochs" in history.message


def test_history_csv_and_json_and_the_best_model_are_written(tmp_path):
    x, y = separable_set(64)
    model = small_net()
    history = fit(model, (x, y), (x[:32], y[:32]), epochs=2, batch_size=32, out_dir=tmp_path,
                  meta={"classes": ["left", "right"]}, progress=False)
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and set(METRICS) <= set(rows[0])
    assert float(rows[1]["train_loss"]) == pytest.approx(history.rows[1]["train_loss"])
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["config"]["epochs"] == 2 and saved["meta"]["classes"] == ["left", "right"]
    assert saved["best"]["monitor"] == "val_accuracy"
    best, info = load_trained_model(tmp_path)
    assert info["meta"]["classes"] == ["left", "right"]
    assert best.config() == model.config()
    last, _ = load_trained_model(tmp_path / "last.npz")
    assert same_state(last, model)


def test_best_npz_holds_the_weights_of_the_best_epoch_not_the_last():
    x, y = separable_set(64)
    # "best" = the largest validation loss: an early epoch, so best and last differ
    spec = {"patience": 100, "monitor": "val_loss", "mode": "max"}
    with tempfile.TemporaryDirectory() as out:
        history = fit(small_net(), (x, y), (x[:32], y[:32]), epochs=3, batch_size=32, out_dir=out,
                      early_stopping=spec, progress=False)
        best_epoch = history.best["epoch"]
        assert best_epoch != 3, history.rows
        best, _ = load_trained_model(out)
    val_loss = evaluate(best, x[:32], y[:32], batch_size=32)["loss"]
    assert val_loss == pytest.approx(history.rows[best_epoch - 1]["val_loss"], rel=1e-6)


def test_bad_arguments_are_rejected_with_clear_messages():
    x, y = separable_set(32)
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        fit(small_net(), (x, y), epochs=1, optimizer="sgdd", progress=False)
    with pytest.raises(ValueError, match="needs validation data"):
        fit(small_net(), (x, y), epochs=1, monitor="val_loss", progress=False)
    with pytest.raises(ValueError, match="different numbers of samples"):
        fit(small_net(), (x, y[:5]), epochs=1, progress=False)


def test_adam_with_clipping_label_smoothing_and_a_step_schedule_trains():
    x, y = separable_set(256)
    history = fit(small_net(dropout=0.0), (x, y), epochs=4, batch_size=32, optimizer="adam",
                  lr=1e-2, clip_norm=1.0, label_smoothing=0.1, schedule="step", progress=False)
    assert history.last("train_accuracy") > 0.9
    assert history["lr"][0] == pytest.approx(1e-2)
    assert history["lr"][-1] < history["lr"][0]


@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a GPU")
def test_training_on_the_gpu_matches_the_cpu_closely():  # pragma: no cover - GPU only
    x, y = separable_set(96)
    cpu, gpu = small_net(dropout=0.0), small_net(dropout=0.0)
    h_cpu = fit(cpu, (x, y), epochs=2, batch_size=32, progress=False)
    h_gpu = fit(gpu, (x, y), epochs=2, batch_size=32, device="gpu", progress=False, log_every=2)
    assert h_gpu.rows[-1]["train_loss"] == pytest.approx(h_cpu.rows[-1]["train_loss"], rel=1e-3)
    gpu.to("cpu")
    for k, v in cpu.parameters().items():
        np.testing.assert_allclose(gpu.parameters()[k], v, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- real data

def test_a_short_run_on_real_fashion_mnist_beats_chance_by_far():
    from minicnn.data import load_fashion_mnist
    try:
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    model = models.lenet5(seed=0)
    fit(model, (x_train[:3000], y_train[:3000]), epochs=2, batch_size=64, lr=0.05, progress=False)
    result = evaluate(model, x_test[:1000], y_test[:1000])
    assert result["accuracy"] > 0.70, result["accuracy"]


def test_a_short_run_on_the_real_mnist_test_set_learns_digits():
    from minicnn.data import load_mnist_split
    try:
        x, y = load_mnist_split(SHARED_MNIST, "test")
    except FileNotFoundError:
        pytest.skip(f"the MNIST test set is not at {SHARED_MNIST}")
    model = models.lenet5(seed=0)
    fit(model, (x[:3000], y[:3000]), epochs=2, batch_size=64, lr=0.05, progress=False)
    result = evaluate(model, x[-2000:], y[-2000:])
    assert result["accuracy"] > 0.85, result["accuracy"]
