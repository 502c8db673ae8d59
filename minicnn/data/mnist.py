"""MNIST and Fashion-MNIST: four IDX files each, same format.

    train-images-idx3-ubyte   (60000, 28, 28) uint8        train-labels-idx1-ubyte   (60000,) uint8
    t10k-images-idx3-ubyte    (10000, 28, 28) uint8        t10k-labels-idx1-ubyte    (10000,) uint8

each plain or ``.gz``.  Loaders return ``x`` float32 ``(N, 1, 28, 28)`` scaled to [0, 1] and ``y``
int64.  Files already on disk are used as they are (a recompressed copy is fine); only files
fetched with ``download=True`` are checked against the published checksums below.
"""
import os

import numpy as np

from minicnn.data.download import download_files
from minicnn.data.idx import load_idx

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
# Where Debian's ``dataset-fashion-mnist`` package installs the four .gz files (flat layout).
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_STEMS = SPLIT_FILES["train"] + SPLIT_FILES["test"]

# MD5 of the published .gz files (as served at the URLs above).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _find(folder, stem):
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (the plain one first), else None."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _complete_folder(folders, stems):
    """The first folder holding every stem (plain or .gz), or None."""
    for folder in folders:
        if folder is not None and os.path.isdir(folder) and all(_find(folder, s) for s in stems):
            return folder
    return None


def check_label_range(labels, num_classes, path):
    """Every label in [0, num_classes), else a ValueError naming the file and the first bad one."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside "
                         f"[0, {num_classes}) ({bad.size} such labels)")


def images_labels_to_arrays(images, labels, images_path="images", labels_path="labels",
                            num_classes=10):
    """uint8 ``(N, H, W)`` images and ``(N,)`` integer labels in [0, num_classes) -> float32
    ``(N, 1, H, W)`` in [0, 1], int64."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W), "
                         f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{labels_path}: expected 1-D integer labels, got {labels.dtype} "
                         f"{labels.shape}")
    check_label_range(labels, num_classes, labels_path)
    if len(images) != len(labels):
        raise ValueError(f"image/label count mismatch: {images_path} has {len(images)} images "
                         f"but {labels_path} has {len(labels)} labels")
    x = images.astype(np.float32)[:, None]
    x /= 255.0
    return x, labels.astype(np.int64)


def load_idx_pair(images_path, labels_path):
    """One split from an images file and a labels file -> ``(x, y)`` (see the module docstring)."""
    return images_labels_to_arrays(load_idx(images_path), load_idx(labels_path),
                                   images_path, labels_path)


def _load_dataset(name, folders, root, download, base_url, checksums, default_url, default_md5,
                  splits=("train", "test")):
    stems = [stem for split in splits for stem in SPLIT_FILES[split]]
    folder = _complete_folder(folders, stems)
    if folder is None and download:
        if root is None:
            raise ValueError(f"{name}: download=True needs a root folder to download into")
        os.makedirs(root, exist_ok=True)
        missing = [stem + ".gz" for stem in stems if _find(root, stem) is None]
        download_files(missing, root, base_url or default_url,
                       default_md5 if checksums is None else checksums)
        folder = root
    if folder is None:
        looked = ", ".join(repr(os.fspath(f)) for f in folders if f is not None)
        absent = {os.fspath(f): [s for s in stems if not _find(f, s)]
                  for f in folders if f is not None}
        raise FileNotFoundError(
            f"{name}: no folder holds all of {stems} (each plain or .gz); looked in {looked}; "
            f"missing per folder: {absent}. Pass download=True to fetch them.")
    return tuple(load_idx_pair(_find(folder, SPLIT_FILES[split][0]), _find(folder, SPLIT_FILES[split][1]))
                 for split in splits)


def load_mnist(root, download=False, base_url=None, checksums=None):
    """MNIST from ``root`` -> ``((x_train, y_train), (x_test, y_test))``.

    x float32 ``(N, 1, 28, 28)`` in [0, 1], y int64.  ``download=True`` fetches missing files from
    ``base_url`` (default ``MNIST_URL``) and checks them against ``checksums`` (a mapping file name
    -> MD5/SHA-256 hex; default ``MNIST_MD5``).  Missing files -> ``FileNotFoundError``.
    """
    root = os.fspath(root)
    return _load_dataset("MNIST", [root], root, download, base_url, checksums, MNIST_URL, MNIST_MD5)


def load_mnist_split(root, split="test"):
    """Only one split of MNIST (``"train"`` or ``"test"``) -> ``(x, y)``; e.g. when just t10k is at hand."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = os.fspath(root)
    (pair,) = _load_dataset("MNIST", [root], root, False, None, None, MNIST_URL, MNIST_MD5, (split,))
    return pair


def fashion_mnist_folders(root=None):
    """Folders searched for Fashion-MNIST, in order: ``root``, the Debian folder, its subfolders."""
    folders = [] if root is None else [os.fspath(root)]
    folders.append(FASHION_MNIST_SYSTEM_DIR)
    if os.path.isdir(FASHION_MNIST_SYSTEM_DIR):
        folders += [e.path for e in sorted(os.scandir(FASHION_MNIST_SYSTEM_DIR), key=lambda e: e.name)
                    if e.is_dir()]
    return folders


def load_fashion_mnist(root=None, download=False, base_url=None, checksums=None):
    """Fashion-MNIST -> ``((x_train, y_train), (x_test, y_test))``, same format as ``load_mnist``.

    Looks in ``root`` (if given), then in ``FASHION_MNIST_SYSTEM_DIR`` (Debian's
    ``dataset-fashion-mnist``) and its subfolders.  ``download=True`` fetches into ``root`` when no
    folder has all four files.  Class names: ``FASHION_MNIST_CLASSES``.
    """
    root = None if root is None else os.fspath(root)
    return _load_dataset("Fashion-MNIST", fashion_mnist_folders(root), root, download, base_url,
                         checksums, FASHION_MNIST_URL, FASHION_MNIST_MD5)
