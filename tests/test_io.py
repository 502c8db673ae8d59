"""minicnn.io: pickle-free, atomic saving and loading of models, arrays and checkpoints."""
import json
import os
import zipfile

import numpy as np
import pytest

from minicnn import io, nn, optim


def _model(seed=0, dtype=np.float32, width=4):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(1, width, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm2D(width, dtype=dtype),
        nn.ReLU(), nn.MaxPool2D(2),
        nn.Residual(nn.Sequential(nn.Conv2D(width, width, 3, padding=1, rng=rng, dtype=dtype), nn.Tanh())),
        nn.Flatten(), nn.Dropout(0.2, rng=rng), nn.Linear(width * 4, 3, rng=rng, dtype=dtype))


def _trained(model):
    model(np.random.default_rng(1).standard_normal((4, 1, 4, 4)).astype(model.dtype))   # moves running stats
    return model


def _listdir(path):
    return sorted(os.listdir(path))


def test_save_and_load_model_round_trip(tmp_path):
    model = _trained(_model())
    path = tmp_path / "model.npz"
    io.save_model(model, path)
    assert _listdir(tmp_path) == ["model.npz"]                 # no temp file left behind
    loaded = io.load_model(path)
    assert loaded.config() == model.config() and repr(loaded) == repr(model)
    for k, v in {**model.parameters(), **model.buffers()}.items():
        np.testing.assert_array_equal({**loaded.parameters(), **loaded.buffers()}[k], v)
        assert {**loaded.parameters(), **loaded.buffers()}[k].dtype == v.dtype
    x = np.random.default_rng(2).standard_normal((2, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.eval()(x), model.eval()(x))


def test_model_file_is_a_plain_npz_with_a_json_header_and_no_pickle(tmp_path):
    path = tmp_path / "m.npz"
    io.save_model(_model(dtype=np.float64), path)
    with np.load(path, allow_pickle=False) as archive:
        assert "0.weight" in archive.files and "1.running_var" in archive.files
        header = json.loads(archive["__minicnn__"].tobytes().decode("utf-8"))
        assert all(archive[k].dtype != object for k in archive.files)
    assert header["format_version"] == io.FORMAT_VERSION and header["kind"] == "model"
    assert header["minicnn_version"]
    assert header["meta"]["architecture"]["type"] == "Sequential"


def test_load_weights_into_an_existing_model(tmp_path):
    source = _trained(_model(seed=0))
    path = tmp_path / "w.npz"
    io.save_model(source, path)
    target = _model(seed=5)
    assert io.load_weights(target, path) is target
    np.testing.assert_array_equal(target[7].weight, source[7].weight)
    np.testing.assert_array_equal(target[1].running_mean, source[1].running_mean)


def test_wrong_architecture_error_names_missing_unexpected_and_shapes(tmp_path):
    path = tmp_path / "w.npz"
    io.save_model(_model(width=4), path)
    with pytest.raises(ValueError) as err:
        io.load_weights(_model(width=6), path)
    msg = str(err.value)
    assert "0.weight: model (6, 1, 3, 3) vs given (4, 1, 3, 3)" in msg
    assert "architecture differs" in msg and "out_channels" in msg

    other = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1, rng=0))         # with a bias; the file's has none
    with pytest.raises(ValueError) as err:
        io.load_weights(other, path)
    msg = str(err.value)
    assert "missing names: ['0.bias']" in msg
    assert "unexpected names:" in msg and "'4.body.0.weight'" in msg


def test_newer_format_version_is_refused_with_the_versions_named(tmp_path):
    path = tmp_path / "future.npz"
    header = {"format": "minicnn", "format_version": io.FORMAT_VERSION + 1, "minicnn_version": "9.0",
              "kind": "model", "meta": {"architecture": {"type": "ReLU", "args": {}}}}
    np.savez(path, __minicnn__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    with pytest.raises(ValueError, match=rf"format_version {io.FORMAT_VERSION + 1} .*minicnn 9.0.*newer"):
        io.load_model(path)


@pytest.mark.parametrize("version", [None, "1", True, 0])
def test_a_format_version_that_is_no_version_number_is_called_damaged(tmp_path, version):
    path = tmp_path / "odd.npz"
    header = {"format": "minicnn", "format_version": version, "kind": "model", "meta": {}}
    np.savez(path, __minicnn__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    with pytest.raises(ValueError, match="damaged header: format_version"):
        io.load_model(path)


def test_a_checkpoint_missing_an_array_names_it(tmp_path):
    path, damaged = tmp_path / "last.npz", tmp_path / "damaged.npz"
    io.save_checkpoint(path, {"model": _model().state_dict(), "epoch": 3})
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            if item.filename != "model/0.weight.npy":
                dst.writestr(item, src.read(item.filename))
    with pytest.raises(ValueError, match="damaged.npz: damaged checkpoint.*'model/0.weight'"):
        io.load_checkpoint(damaged)


@pytest.mark.parametrize("state, where", [({"meta": {"__array__": "epoch"}, "epoch": 3}, "'meta'"),
                                          ({"__array__": "x", "x": np.ones(2)}, "the top level")])
def test_a_checkpoint_refuses_the_key_that_marks_arrays(tmp_path, state, where):
    # {"__array__": name} is how the file points at an array: such a dict would load as the array
    path = tmp_path / "last.npz"
    with pytest.raises(ValueError, match=f"'__array__' is reserved, found at {where}"):
        io.save_checkpoint(path, state)
    assert not path.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_minicnn", "pickled"])
def test_corrupt_or_foreign_files_raise_value_error(tmp_path, damage):
    path = tmp_path / "bad.npz"
    if damage in ("truncate", "garbage"):
        io.save_model(_model(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 50)
    elif damage == "not_minicnn":
        np.savez(path, weight=np.zeros(3))
    else:
        np.savez(path, __minicnn__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="bad.npz"):
        io.load_model(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load_model(tmp_path / "nope.npz")


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    io.save_model(_model(seed=0), path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(io.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        io.save_model(_model(seed=1), path)
    assert path.read_bytes() == before
    assert _listdir(tmp_path) == ["model.npz"]


def test_write_text_atomic_replaces_whole_files_only(tmp_path):
    """The JSON and CSV that training, tune and the benchmarks write go through this helper."""
    path = tmp_path / "results.json"
    io.write_text_atomic(path, '{"a": "\u00e9"}')
    assert path.read_text(encoding="utf-8") == '{"a": "\u00e9"}'

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.write_atomic(path, broken)
    assert path.read_text(encoding="utf-8") == '{"a": "\u00e9"}'
    assert _listdir(tmp_path) == ["results.json"]
    missing = tmp_path / "no such folder" / "results.json"
    with pytest.raises(FileNotFoundError) as err:        # names the target, not the temp file
        io.write_text_atomic(missing, "{}")
    assert err.value.filename == str(missing) and ".tmp" not in str(err.value)


def test_save_arrays_round_trip_and_rejects_object_arrays(tmp_path):
    path = tmp_path / "a.npz"
    arrays = {"x": np.arange(6, dtype=np.int64).reshape(2, 3), "y/z": np.float32([1.5]),
              "flag": np.array(True)}
    io.save_arrays(path, arrays, {"epoch": 3, "note": "hi", "nested": {"a": [1, 2]}})
    got, meta = io.load_arrays(path)
    assert meta == {"epoch": 3, "note": "hi", "nested": {"a": [1, 2]}}
    assert set(got) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
        assert got[k].dtype == arrays[k].dtype
    with pytest.raises(ValueError, match="dtype object"):
        io.save_arrays(path, {"o": np.array([{}], dtype=object)})
    with pytest.raises(ValueError, match="JSON"):
        io.save_arrays(path, {}, {"bad": object()})
    with pytest.raises(ValueError, match="reserved"):
        io.save_arrays(path, {"__minicnn__": np.zeros(1)})
    assert _listdir(tmp_path) == ["a.npz"]


def test_checkpoint_with_optimizer_and_rng_resumes_identically(tmp_path):
    rng_data = np.random.default_rng(0)
    batches = [(rng_data.standard_normal((4, 1, 4, 4)).astype(np.float32), rng_data.integers(0, 3, 4))
               for _ in range(4)]

    def train_step(model, opt, sched, batch):
        import minicnn.functional as F
        x, y = batch
        loss, dlogits = F.softmax_cross_entropy(model(x), y)
        model.backward(dlogits)
        opt.step()
        sched.step()
        return loss

    model = _model()
    opt = optim.Adam(model, lr=1e-2)
    sched = optim.StepLR(opt, step_size=1, gamma=0.9)
    for batch in batches[:2]:
        train_step(model, opt, sched, batch)
    path = tmp_path / "ckpt.npz"
    io.save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict(), "epoch": 2,
                              "generators": {k: g.bit_generator.state for k, g in model.generators().items()},
                              "history": (0.5, np.float64(0.25))})
    assert _listdir(tmp_path) == ["ckpt.npz"]

    state = io.load_checkpoint(path)
    assert state["epoch"] == 2 and state["history"] == [0.5, 0.25]
    resumed = _model(seed=42)
    resumed.load_state_dict(state["model"])
    opt2 = optim.Adam(resumed, lr=1.0)
    opt2.load_state_dict(state["optimizer"])
    sched2 = optim.StepLR(opt2, step_size=1, gamma=0.9)
    sched2.load_state_dict(state["scheduler"])
    for name, g in resumed.generators().items():
        g.bit_generator.state = state["generators"][name]
    for batch in batches[2:]:
        assert train_step(model, opt, sched, batch) == train_step(resumed, opt2, sched2, batch)
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v, err_msg=k)
    io.load_weights(_model(seed=3), path)                    # a checkpoint's model part loads too


def test_load_torch_state_dict_maps_names_and_ignores_num_batches_tracked(tmp_path):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(12, 2))
    theirs.train()
    theirs(torch.randn(5, 1, 4, 4))
    path = tmp_path / "torch.npz"
    np.savez(path, **{k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ours = nn.Sequential(nn.Conv2D(1, 3, 3, rng=0), nn.BatchNorm2D(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(12, 2, rng=0))
    io.load_torch_state_dict(ours, path)
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    theirs.eval(), ours.eval()
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"unexpected names: \['1.weight'.*0.weight: model \(3, 3\)"):
        io.load_torch_state_dict(nn.Sequential(nn.Linear(3, 3)), path)


def test_load_torch_state_dict_without_torch(tmp_path):
    path = tmp_path / "sd.npz"
    np.savez(path, **{"module.0.weight": np.ones((2, 3)), "module.0.bias": np.zeros(2),
                      "module.1.num_batches_tracked": np.array(3)})
    model = nn.Sequential(nn.Linear(3, 2, rng=0, dtype=np.float64))
    io.load_torch_state_dict(model, path)
    assert (model[0].weight == 1).all() and model[0].weight.dtype == np.float64
    with zipfile.ZipFile(path) as z:
        assert "module.1.num_batches_tracked.npy" in z.namelist()
