"""The ``minicnn`` command, run in-process through ``main(argv)`` (and once as a subprocess)."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minicnn.cli import main

SHARED_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                            "data", "mnist")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short digits run shared by the evaluate / predict / resume tests."""
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--epochs", "3", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_info_lists_kernels_threads_and_blas(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert "kernels:" in out and "threads:" in out and "blas:" in out


def test_bench_passes_its_arguments_to_minicnn_bench(capsys):
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0 and "--cases" in out


def test_train_on_digits_prints_the_test_accuracy_and_writes_the_run(tmp_path, capsys):
    code, out, err = run(capsys, "train", "--epochs", "4", "--augment", "--out", str(tmp_path))
    assert code == 0, err
    line = [l for l in out.splitlines() if l.startswith("test accuracy:")][0]
    assert float(line.split()[2].rstrip("%")) > 90.0
    assert "epoch 4/4" in err                     # the progress / summary lines go to stderr
    for name in ("best.npz", "last.npz", "history.csv", "history.json"):
        assert (tmp_path / name).exists()
    meta = json.loads((tmp_path / "history.json").read_text())["meta"]
    assert meta["dataset"] == "digits" and meta["model"] == "digits_net"


def test_resume_continues_a_finished_run_for_more_epochs(trained_run, tmp_path, capsys):
    import shutil
    run_dir = tmp_path / "copy"
    shutil.copytree(trained_run, run_dir)
    before = json.loads((run_dir / "history.json").read_text())["rows"]
    code, out, err = run(capsys, "train", "--epochs", "4", "--out", str(run_dir), "--quiet",
                         "--resume", str(run_dir / "last.npz"))
    assert code == 0, err
    rows = json.loads((run_dir / "history.json").read_text())["rows"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[:3] == before                    # the finished epochs are kept, not rerun
    # epoch 4 started from epoch 3's weights: its training loss continues the trend
    assert rows[3]["train_loss"] < before[0]["train_loss"]


def test_evaluate_prints_accuracy_confusion_matrix_and_report(trained_run, capsys):
    from minicnn.cli import load_dataset
    from minicnn.data import Normalize
    from minicnn.train import evaluate, load_trained_model
    code, out, err = run(capsys, "evaluate", str(trained_run))
    assert code == 0, err
    assert "accuracy:" in out and "confusion matrix" in out
    # the printed accuracy is the model's on the test images, normalised as in training
    model, info = load_trained_model(trained_run)
    x, y = load_dataset("digits", splits=("test",))["test"]
    norm = info["meta"]["normalize"]
    x = Normalize(norm["mean"], norm["std"])(x).astype(np.float32)
    accuracy = evaluate(model, x, y, batch_size=256)["accuracy"]
    assert f"accuracy: {100 * accuracy:.2f}%" in out
    assert "precision" in out and "macro avg" in out
    assert "on digits test (359 images)" in out


@pytest.mark.parametrize("array, words", [
    (np.full((8, 8), 255, np.int64), "int64 array"),
    (np.zeros((0, 1, 8, 8), np.float32), "empty"),
])
def test_predict_refuses_arrays_it_would_misread(trained_run, tmp_path, capsys, array, words):
    np.save(tmp_path / "odd.npy", array)
    code, _, err = run(capsys, "predict", str(trained_run / "best.npz"), str(tmp_path / "odd.npy"))
    assert code == 2 and words in err, err


@pytest.mark.skipif(not os.path.isdir(SHARED_MNIST), reason="shared/data/mnist not beside the repository")
def test_evaluate_on_images_of_another_shape_names_both(trained_run, capsys):
    code, _, err = run(capsys, "evaluate", str(trained_run), "--dataset", "mnist",
                       "--data-root", SHARED_MNIST, "--split", "test", "--limit", "5")
    assert code == 2 and "(1, 28, 28)" in err and "(1, 8, 8)" in err, err


def test_a_model_file_moved_alone_keeps_its_preprocessing(trained_run, tmp_path, capsys):
    """best.npz carries the run's normalisation and class names; without them the same file
    gave other predictions once history.json was left behind."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(trained_run / "best.npz", alone / "best.npz")
    outputs = []
    for folder in (trained_run, alone):
        code, out, err = run(capsys, "evaluate", str(folder / "best.npz"), "--dataset", "digits")
        assert code == 0, err
        outputs.append(out.replace(str(folder), "RUN"))
    assert outputs[0] == outputs[1]


def test_predict_labels_npy_arrays_with_probabilities(trained_run, tmp_path, capsys):
    from minicnn.data import load_digits
    _, (x, y) = load_digits()
    np.save(tmp_path / "five.npy", x[:5])
    np.save(tmp_path / "one.npy", x[5, 0])                      # a single (H, W) image
    code, out, err = run(capsys, "predict", str(trained_run / "best.npz"),
                         str(tmp_path / "five.npy"), str(tmp_path / "one.npy"), "--top-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 6
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert np.mean(np.array(predicted) == y[:6]) >= 0.8
    assert "(" in lines[0] and "[" in lines[0]                  # probability and runner-up


def test_gradcheck_reports_every_tensor_and_passes(capsys):
    code, out, err = run(capsys, "gradcheck", "--model", "digits_net", "--max-elements", "200",
                         "--directions", "1")
    assert code == 0, err
    for name in ("x ", "0.weight", "2.bias", "6.weight", "8.bias"):
        assert name in out
    assert "PASS" in out


def test_tune_ranks_trials_and_saves_the_best_config(tmp_path, capsys):
    code, out, err = run(capsys, "tune", "--trials", "2", "--epochs", "1", "--limit-train", "400",
                         "--out", str(tmp_path), "--quiet")
    assert code == 0, err
    assert "| rank |" in out and "val_acc" in out
    best = json.loads((tmp_path / "best_config.json").read_text())
    assert best["model"] == "digits_net" and {"lr", "batch_size", "weight_decay"} <= set(best["config"])
    assert len(json.loads((tmp_path / "trials.json").read_text())["trials"]) == 2


def test_tune_on_a_grayscale_folder_and_the_train_command_it_prints(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    root = tmp_path / "images dir"                      # a space: the printed command quotes it
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    data = ["--dataset", "folder", "--data-root", str(root), "--image-size", "8", "--grayscale"]
    code, out, err = run(capsys, "tune", *data, "--trials", "1", "--epochs", "1",
                         "--out", str(tmp_path / "tune"), "--quiet")
    assert code == 0, err
    best = json.loads((tmp_path / "tune" / "best_config.json").read_text())
    assert best["model_kwargs"]["in_channels"] == 1 and best["model_kwargs"]["input_size"] == 8
    command = next(line for line in out.splitlines() if line.startswith("train it: "))
    argv = shlex.split(command[len("train it: "):])
    assert argv[:2] == ["minicnn", "train"] and argv[2:2 + len(data)] == data
    code, out, err = run(capsys, *argv[1:], "--epochs", "1", "--out", str(tmp_path / "run"),
                         "--quiet")
    assert code == 0, err


def test_errors_print_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = run(capsys, "train", "--dataset", "cifar10", "--data-root", str(tmp_path))
    assert code == 2
    assert err.startswith("minicnn: error: ") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "train", "--epochs", "many")
    assert code == 2 and err.startswith("minicnn: error: ") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "evaluate", str(tmp_path / "missing.npz"))
    assert code == 2 and "checkpoint not found" in err


@pytest.mark.parametrize("argv, option", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--warmup", "inf"], "--warmup"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--clip-norm", "-1"], "--clip-norm"),
    (["gradcheck", "--tol", "-1"], "--tol"),
    (["gradcheck", "--tol", "nan"], "--tol"),
])
def test_out_of_range_option_values_are_usage_errors(capsys, argv, option):
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"argument {option}" in err, err


@pytest.mark.parametrize("text, words", [
    ("{not json", "cannot read it"),
    ("[1, 2]", "not a best_config.json"),
    ('{"config": {"lr": "abc"}}', "lr: expected a number"),
    ('{"config": {"optimizer": "adagrad"}}', "optimizer: expected one of"),
])
def test_a_bad_config_file_is_one_clear_error(tmp_path, capsys, text, words):
    (tmp_path / "best_config.json").write_text(text)
    code, _, err = run(capsys, "train", "--config", str(tmp_path / "best_config.json"))
    assert code == 2 and words in err and "best_config.json" in err, err


def test_debug_shows_the_traceback_instead(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10: batches"):   # raised, not printed
        main(["train", "--debug", "--dataset", "cifar10", "--data-root", str(tmp_path)])


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401
        pytest.skip("matplotlib is installed")
    except ImportError:
        pass
    code, _, err = run(capsys, "train", "--epochs", "1", "--plot", "--out", str(tmp_path))
    assert code == 2 and "matplotlib" in err


def test_the_module_runs_as_a_program():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "minicnn", "info"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0 and "numpy:" in proc.stdout
