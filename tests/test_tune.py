"""Hyper-parameter search: sampling, budgets, ranking and the saved best config."""
import json
import math

import numpy as np
import pytest

from minicnn.tune import format_table, sample_configs, tune

from datasets import separable_set


SPACE = {"lr": ("log", 1e-3, 0.3), "batch_size": [16, 32], "weight_decay": [0.0, 1e-3]}


def test_random_search_is_seeded_and_stays_in_the_space():
    a = sample_configs(SPACE, "random", trials=20, seed=1)
    assert a == sample_configs(SPACE, "random", trials=20, seed=1)
    assert a != sample_configs(SPACE, "random", trials=20, seed=2)
    assert all(1e-3 <= c["lr"] <= 0.3 and c["batch_size"] in (16, 32) for c in a)


def test_grid_search_visits_every_combination_once():
    grid = sample_configs(SPACE, "grid", trials=100, seed=0)
    assert len(grid) == 4 * 2 * 2                 # a range gives 4 log-spaced points
    assert len({json.dumps(c, sort_keys=True) for c in grid}) == len(grid)
    assert sorted({c["lr"] for c in grid}) == pytest.approx([1e-3, 1e-3 * 300 ** (1 / 3),
                                                             1e-3 * 300 ** (2 / 3), 0.3])
    assert len(sample_configs(SPACE, "grid", trials=5, seed=0)) == 5


@pytest.mark.parametrize("space, words", [
    ({"lr": ("log", 0.0, 1.0)}, r"space\['lr'\]"),
    ({"lr": ("uniform", 0.0, math.inf)}, "invalid range"),
    ({"epochs": [5]}, "'epochs' cannot be searched"),         # every trial sets it
    ({"seed": [1, 2]}, "'seed' cannot be searched"),
    ({"batch_size": [2.7]}, "positive ints"),
    ({"augment": ("uniform", 0, 1)}, "takes only a list"),
    ({"lr": [object()]}, "numbers or strings"),
])
def test_bad_spaces_and_searches_are_rejected(space, words):
    with pytest.raises(ValueError, match=words):
        sample_configs(space)


def test_bad_searches_and_trial_counts_are_rejected():
    with pytest.raises(ValueError, match="search must be"):
        sample_configs(SPACE, "bayes")
    with pytest.raises(ValueError, match="trials must be a positive int"):
        sample_configs(SPACE, trials=-3)


def test_numpy_scalars_in_the_space_are_written_as_plain_json(tmp_path):
    """They used to fail in json.dumps after every trial had run."""
    x, y = separable_set(64)
    tune((x, y), model="digits_net", model_kwargs={"num_classes": 2},
         space={"lr": [np.float32(0.05)], "batch_size": [np.int64(32)]}, trials=1, epochs=1,
         out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "best_config.json").read_text())
    assert saved["config"] == {"lr": pytest.approx(0.05), "batch_size": 32}


def test_tune_ranks_by_validation_accuracy_and_saves_the_best(tmp_path):
    x, y = separable_set(160)
    space = {"lr": [0.05, 1e-5], "batch_size": [32]}
    result = tune((x, y), model="digits_net", model_kwargs={"num_classes": 2}, space=space,
                  search="grid", trials=2, epochs=2, out_dir=tmp_path, progress=False)
    assert [t["config"]["lr"] for t in result.trials] == [0.05, 1e-5]
    assert result.best["val_accuracy"] > 0.9
    saved = json.loads((tmp_path / "best_config.json").read_text())
    assert saved["config"] == {"lr": 0.05, "batch_size": 32}
    assert "| rank |" in result.table()


@pytest.mark.filterwarnings("ignore:overflow")
def test_a_diverging_trial_is_recorded_and_ranked_last():
    x, y = separable_set(160)
    result = tune((x, y), model="digits_net", model_kwargs={"num_classes": 2},
                  space={"lr": [1e9, 0.05]}, search="grid", trials=2, epochs=2, progress=False)
    assert result.trials[-1]["status"] == "diverged" and result.trials[-1]["config"]["lr"] == 1e9
    assert result.trials[0]["status"] == "ok"
    assert "diverged" in format_table(result.trials)


def test_the_time_budget_stops_before_starting_more_trials():
    x, y = separable_set(64)
    result = tune((x, y), model="digits_net", model_kwargs={"num_classes": 2}, space=SPACE,
                  trials=50, epochs=1, time_budget=1e-9, progress=False)
    assert len(result.trials) == 1               # the first trial always runs
    assert not math.isnan(result.trials[0]["time"])
