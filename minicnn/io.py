"""Saving and loading without pickle: arrays in ``.npz``, structure in JSON, atomic writes.

File format (one file; the ``.npz`` suffix is customary, the path is used exactly as given):
a NumPy ``.npz`` archive whose member ``__minicnn__`` is a uint8 array holding UTF-8 JSON,

    {"format": "minicnn", "format_version": 1, "minicnn_version": "0.1.0",
     "kind": "model" | "arrays" | "checkpoint", "meta": {...}}

and whose other members are the arrays by name. For a model (``save_model``) the arrays are its
parameters and buffers by dotted name ('0.weight', '3.body.1.running_mean') and ``meta`` holds
``"architecture"`` (``Module.config()``). Everything is read back with ``allow_pickle=False``;
a file from a newer ``format_version`` is refused with a ValueError.

Writes are atomic: the archive goes to a temporary file in the target's directory, is flushed
to disk and then renamed over the target (``os.replace``), so a crash leaves either the old file
or the new one, never half of one.
"""
import json
import os
import secrets
import zipfile

import numpy as np

from minicnn import __version__
from minicnn.backend import to_numpy

__all__ = ["FORMAT_VERSION", "save_arrays", "load_arrays", "save_model", "load_model", "load_weights",
           "save_checkpoint", "load_checkpoint", "load_torch_state_dict", "write_atomic",
           "write_bytes_atomic", "write_text_atomic"]

FORMAT_VERSION = 1
_HEADER_KEY = "__minicnn__"


# ---------------------------------------------------------------- the container

def write_atomic(path, write):
    """Call ``write(f)`` on a binary file that then atomically replaces ``path``.

    The data goes to a temporary file in the target's directory, is flushed to disk and renamed
    over the target (``os.replace``), so a crash leaves the old file or the new one, never half
    of one; on an error the temporary file is removed and the error raised."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for any new file.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:          # name the file asked for, not the hidden temporary one
        raise type(exc)(exc.errno, exc.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:                                    # make the rename itself durable (POSIX)
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_bytes_atomic(path, blob):
    """Write ``blob`` (bytes) to ``path`` atomically (see ``write_atomic``)."""
    write_atomic(path, lambda f: f.write(blob))


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` as UTF-8, atomically (see ``write_atomic``)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _to_savable(name, value):
    a = to_numpy(value) if hasattr(value, "shape") else np.asarray(value)
    if a.dtype.kind in "OUSV" or a.dtype.hasobject:
        raise ValueError(f"save: array {name!r} has dtype {a.dtype}; only numeric/bool arrays are "
                         "stored (no pickle); put strings and other values in meta")
    return a


def _write(path, kind, arrays, meta):
    if _HEADER_KEY in arrays:
        raise ValueError(f"save: {_HEADER_KEY!r} is a reserved array name")
    for name in arrays:
        if not isinstance(name, str) or not name:
            raise ValueError(f"save: array names must be non-empty strings, got {name!r}")
    header = {"format": "minicnn", "format_version": FORMAT_VERSION, "minicnn_version": __version__,
              "kind": kind, "meta": meta if meta is not None else {}}
    try:
        text = json.dumps(header, allow_nan=True)
    except TypeError as exc:
        raise ValueError(f"save: meta must be JSON-serialisable: {exc}") from None
    payload = {name: _to_savable(name, a) for name, a in arrays.items()}
    payload[_HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **payload))


def _read(path, kinds):
    """(arrays, header) of a minicnn file; ValueError for anything that is not one we can read."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("it is a single .npy array, not an .npz archive")
            if _HEADER_KEY not in archive.files:
                raise ValueError(f"it has no {_HEADER_KEY!r} header (not written by minicnn)")
            header = json.loads(archive[_HEADER_KEY].tobytes().decode("utf-8"))
            arrays = {k: archive[k] for k in archive.files if k != _HEADER_KEY}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable minicnn file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict) or header.get("format") != "minicnn":
        raise ValueError(f"{path}: not a minicnn file (header {header!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: damaged header: format_version {version!r} is not a version "
                         f"number")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version!r} (written by minicnn "
                         f"{header.get('minicnn_version')}) is newer than this minicnn {__version__} "
                         f"reads (up to {FORMAT_VERSION}); upgrade minicnn")
    if header.get("kind") not in kinds:
        raise ValueError(f"{path}: holds {header.get('kind')!r} data, expected {' or '.join(kinds)}")
    return arrays, header


def save_arrays(path, arrays, meta=None):
    """Atomically write ``arrays`` (dict name -> array; CuPy arrays are copied to the host) and a
    JSON-able ``meta`` dict to ``path``."""
    _write(path, "arrays", dict(arrays), meta)


def load_arrays(path):
    """(arrays, meta) from ``save_arrays`` (also reads model and checkpoint files)."""
    arrays, header = _read(path, ("arrays", "model", "checkpoint"))
    return arrays, header["meta"]


# ---------------------------------------------------------------- models

def _config_diff(a, b, where="architecture"):
    """The first place two configs differ, as 'path: a vs b', or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                left = "missing" if k not in a else repr(a[k])
                right = "missing" if k not in b else repr(b[k])
                return f"{where}.{k}: {left} vs {right}"
            d = _config_diff(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} entries vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _config_diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def save_model(model, path, run=None):
    """Write the architecture (``model.config()``) and the parameters and buffers to one file.

    ``run``: JSON-able facts to keep with the weights (``fit`` stores its ``meta``, such as the
    class names and the input normalisation, and its ``config``), so the file stands alone."""
    meta = {"architecture": model.config(),
            "parameters": list(model.parameters()), "buffers": list(model.buffers())}
    if run is not None:
        meta["run"] = run
    _write(path, "model", {**model.parameters(), **model.buffers()}, meta)


def load_model(path):
    """Rebuild the model saved by ``save_model`` (on the CPU, in training mode)."""
    from minicnn.nn import module_from_config
    arrays, header = _read(path, ("model",))
    model = module_from_config(header["meta"]["architecture"])
    try:
        model.load_state_dict(arrays, strict=True)
    except ValueError as exc:
        raise ValueError(f"{path}: the weights do not fit the saved architecture: {exc}") from None
    return model


def load_weights(model, path, strict=True):
    """Load the parameters and buffers from ``path`` (a model, arrays or checkpoint file) into
    ``model``, in place. Errors name the missing and unexpected names and the shapes that differ
    (and, for a model file, where its architecture differs from ``model``'s)."""
    arrays, header = _read(path, ("model", "arrays", "checkpoint"))
    if header["kind"] == "checkpoint":
        arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state_dict(arrays, strict=strict)
    except ValueError as exc:
        msg = f"{path}: weights do not fit the model: {exc}"
        if header["kind"] == "model":
            diff = _config_diff(header["meta"].get("architecture"), model.config())
            if diff:
                msg += f"; architecture differs (file vs model) at {diff}"
        raise ValueError(msg) from None
    return model


# ---------------------------------------------------------------- checkpoints (nested state)

# In the header's skeleton of the state, {ARRAY_KEY: name} stands for the array stored as name.
ARRAY_KEY = "__array__"


def _flatten(tree, prefix, arrays):
    if hasattr(tree, "shape") and hasattr(tree, "dtype") and not isinstance(tree, np.generic):
        if prefix in arrays:
            raise ValueError(f"save_checkpoint: two entries flatten to the same name {prefix!r}")
        arrays[prefix] = tree
        return {ARRAY_KEY: prefix}
    if isinstance(tree, dict):
        for k in tree:
            if not isinstance(k, str):
                raise ValueError(f"save_checkpoint: dict keys must be strings, got {k!r} at {prefix!r}")
        if ARRAY_KEY in tree:       # the file marks arrays so: such a dict would load as one
            where = repr(prefix) if prefix else "the top level"
            raise ValueError(f"save_checkpoint: the key {ARRAY_KEY!r} is reserved, found at {where}")
        return {k: _flatten(v, f"{prefix}/{k}" if prefix else k, arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}" if prefix else str(i), arrays) for i, v in enumerate(tree)]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _unflatten(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {ARRAY_KEY}:
            return arrays[tree[ARRAY_KEY]]
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree


def save_checkpoint(path, state):
    """Atomically write a nested dict of arrays and JSON-able values, e.g.

        save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": 3,
                               "rng": rng.bit_generator.state})

    Arrays are stored under their '/'-joined path ('model/0.weight'); tuples come back as lists.
    Keys are strings, and '__array__' is reserved (it marks the arrays in the file's header).
    """
    arrays = {}
    skeleton = _flatten(state, "", arrays)
    _write(path, "checkpoint", arrays, {"state": skeleton})


def load_checkpoint(path):
    """The nested dict written by ``save_checkpoint`` (arrays as NumPy arrays)."""
    arrays, header = _read(path, ("checkpoint",))
    try:
        return _unflatten(header["meta"]["state"], arrays)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: damaged checkpoint: the header names {exc} but the file "
                         f"does not hold it") from None


# ---------------------------------------------------------------- PyTorch interop

def load_torch_state_dict(model, npz_path, strict=True):
    """Load a PyTorch ``state_dict`` saved as ``.npz`` into ``model`` (layouts are the same).

    Save it with ``np.savez(path, **{k: v.detach().cpu().numpy() for k, v in sd.items()})``.
    'num_batches_tracked' entries are ignored, a DataParallel 'module.' prefix is stripped, and
    arrays are cast to the model's dtype. Names must otherwise match ('0.weight', '1.running_mean').
    """
    try:
        with np.load(os.fspath(npz_path), allow_pickle=False) as archive:
            state = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{npz_path}: not a readable .npz state_dict ({type(exc).__name__}: {exc})") from exc
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=strict)
    except ValueError as exc:
        raise ValueError(f"{npz_path}: the PyTorch state_dict does not fit the model: {exc}") from None
    return model
