"""CIFAR-10 from its "python version" batches, read without trusting pickle.

The batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) are pickles of a plain dict:
``data`` a uint8 array ``(10000, 3072)`` (1024 red, 1024 green, 1024 blue values, row-major),
``labels`` a list of ints in 0..9 (keys are bytes or str depending on who wrote the file).

``pickle.load`` runs whatever a file asks it to import and call, so a tampered batch could run
arbitrary code.  ``SafeUnpickler`` therefore resolves only a short allow-list of globals: the plain
builtin containers, and the few NumPy functions that rebuild an array from its bytes
(``_reconstruct``/``ndarray``/``dtype`` for protocols 0-4, ``_frombuffer`` for protocol 5) plus
``_codecs.encode`` (how protocol 2 spells bytes).  Any other global -> ``ValueError`` naming the
file.  Object arrays are refused as well.  A hostile file can still ask for a large allocation;
it cannot run code.
"""
import _codecs
import io
import os
import pickle
import tarfile

import numpy as np

from minicnn.data.download import download_file
from minicnn.data.mnist import check_label_range
from minicnn.io import write_bytes_atomic

try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # NumPy < 2
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = {CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a"}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
}
for _module in ("builtins", "__builtin__"):
    for _type in (dict, list, tuple, bytes, bytearray, str, int):
        _ALLOWED_GLOBALS[(_module, _type.__name__)] = _type


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed (only plain containers and NumPy arrays)"
            ) from None


def safe_load_pickle(path):
    """Load a pickle of plain containers and NumPy arrays; anything else -> ``ValueError``."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        blob = f.read()
    try:
        # latin1: Python 2 str -> str, which is what NumPy needs for Python-2 array pickles.
        return SafeUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused to unpickle: {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as e:
        raise ValueError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None


def _get(batch, key, path):
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise ValueError(f"{path}: CIFAR batch has no {key!r} entry (keys: {sorted(map(repr, batch))})")


def load_cifar_batch(path):
    """One CIFAR-10 batch file -> ``x`` uint8 ``(N, 3, 32, 32)``, ``y`` int64 ``(N,)``."""
    batch = safe_load_pickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: a CIFAR batch is a dict, got {type(batch).__name__}")
    data = _get(batch, "data", path)
    labels = _get(batch, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or \
            not all(isinstance(v, (int, np.integer)) for v in labels):
        raise ValueError(f"{path}: 'labels' must be a list of ints")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except OverflowError:
        raise ValueError(f"{path}: a label is too large for int64") from None
    check_label_range(y, 10, path)
    if len(y) != len(data):
        raise ValueError(f"{path}: image/label count mismatch: {len(data)} images, {len(y)} labels")
    return data.reshape(-1, 3, 32, 32), y


def _batches_folder(root):
    for folder in (root, os.path.join(root, CIFAR10_FOLDER)):
        if all(os.path.isfile(os.path.join(folder, b))
               for b in CIFAR10_TRAIN_BATCHES + [CIFAR10_TEST_BATCH]):
            return folder
    return None


def _extract_batches(archive, root):
    """Copy the batch files out of the archive by name (no extractall: no path tricks possible)."""
    out_dir = os.path.join(root, CIFAR10_FOLDER)
    os.makedirs(out_dir, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for name in CIFAR10_TRAIN_BATCHES + [CIFAR10_TEST_BATCH, "batches.meta"]:
            try:
                member = tar.getmember(f"{CIFAR10_FOLDER}/{name}")
            except KeyError:
                raise ValueError(f"{archive}: archive lacks {CIFAR10_FOLDER}/{name}") from None
            if not member.isfile():
                raise ValueError(f"{archive}: {member.name} is not a regular file")
            write_bytes_atomic(os.path.join(out_dir, name), tar.extractfile(member).read())


def _to_float(x_uint8):
    x = x_uint8.astype(np.float32)
    x /= 255.0
    return x


def load_cifar10(root, download=False, base_url=None, checksums=None):
    """CIFAR-10 -> ``((x_train, y_train), (x_test, y_test))``; x float32 ``(N, 3, 32, 32)`` in [0, 1], y int64.

    The batches are looked for in ``root`` and in ``root/cifar-10-batches-py``.  ``download=True``
    fetches ``cifar-10-python.tar.gz`` from ``base_url`` (default ``CIFAR10_URL``), checks it
    against ``checksums`` (default ``CIFAR10_MD5``) and extracts the batches.  See the module
    docstring for why the pickles are safe to read.
    """
    root = os.fspath(root)
    folder = _batches_folder(root)
    if folder is None and download:
        checksums = CIFAR10_MD5 if checksums is None else checksums
        if CIFAR10_ARCHIVE not in checksums:
            raise ValueError(f"no checksum given for {CIFAR10_ARCHIVE}")
        os.makedirs(root, exist_ok=True)
        base = base_url or CIFAR10_URL
        archive = download_file(base.rstrip("/") + "/" + CIFAR10_ARCHIVE,
                                os.path.join(root, CIFAR10_ARCHIVE), checksums[CIFAR10_ARCHIVE])
        _extract_batches(archive, root)
        folder = _batches_folder(root)
    if folder is None:
        raise FileNotFoundError(
            f"CIFAR-10: batches {CIFAR10_TRAIN_BATCHES + [CIFAR10_TEST_BATCH]} not found in "
            f"{root!r} or {os.path.join(root, CIFAR10_FOLDER)!r}. Pass download=True to fetch them.")
    train = [load_cifar_batch(os.path.join(folder, b)) for b in CIFAR10_TRAIN_BATCHES]
    x_test, y_test = load_cifar_batch(os.path.join(folder, CIFAR10_TEST_BATCH))
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (_to_float(x_train), y_train), (_to_float(x_test), y_test)
