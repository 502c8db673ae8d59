"""minicnn.data: readers against files written here, downloads from file:// URLs, the loader, transforms."""
import builtins
import gzip
import hashlib
import json
import os
import pickle
import re
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn.data as D
from minicnn.data.transforms import crop_windows

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
MNIST_T10K_RAW_MD5 = {  # of the decompressed files, from shared/data/README.md
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def error_naming(path):
    return re.escape(str(path))


# ------------------------------------------------------------------ IDX

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_plain_and_gz(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = D.save_idx(tmp_path / ("a.idx" + suffix), array)
    loaded = D.load_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.writeable


def test_idx_reads_hand_written_header(tmp_path):
    # magic 0x00000802 (uint8, 2 dims), dims 2 and 3 big-endian, then 6 bytes
    blob = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes(range(6))
    (tmp_path / "raw").write_bytes(blob)
    np.testing.assert_array_equal(D.load_idx(tmp_path / "raw"), [[0, 1, 2], [3, 4, 5]])
    # int32 is stored big-endian: 0x00000102 = 258
    blob = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", 258, -1)
    (tmp_path / "i32").write_bytes(blob)
    np.testing.assert_array_equal(D.load_idx(tmp_path / "i32"), [258, -1])


def test_idx_gzip_detected_by_magic_bytes_not_name(tmp_path):
    blob = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([9, 8, 7])
    (tmp_path / "no-suffix").write_bytes(gzip.compress(blob))
    np.testing.assert_array_equal(D.load_idx(tmp_path / "no-suffix"), [9, 8, 7])


@pytest.mark.parametrize("blob, message", [
    (b"", "shorter than the 4-byte magic"),
    (bytes([1, 0, 8, 1]) + struct.pack(">I", 1) + b"x", "two zero bytes"),
    (bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"x", "unknown IDX element type 0x07"),
    (bytes([0, 0, 8, 3]) + struct.pack(">I", 1), "truncated IDX header"),
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"abc", "truncated"),
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"abc", "trailing bytes"),
])
def test_idx_corrupt_file_raises_naming_the_file(tmp_path, blob, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=error_naming(path)) as info:
        D.load_idx(path)
    assert message in str(info.value)


def test_idx_truncated_gzip_raises_naming_the_file(tmp_path):
    good = tmp_path / "good.gz"
    D.save_idx(good, np.arange(1000, dtype=np.uint8).reshape(10, 100) * 7)
    bad = tmp_path / "cut.gz"
    bad.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(ValueError, match=error_naming(bad)):
        D.load_idx(bad)


def test_idx_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        D.load_idx(tmp_path / "nothing-here")


# ------------------------------------------------------------------ MNIST / Fashion-MNIST

def write_mnist(folder, n_train=5, n_test=3, gz=(True, False, True, False), seed=0):
    """Four small IDX files; returns the uint8 images and labels written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (split, n) in enumerate([("train", n_train), ("t10k", n_test)]):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[split] = (images, labels)
        D.save_idx(folder / (STEMS[2 * i] + (".gz" if gz[2 * i] else "")), images)
        D.save_idx(folder / (STEMS[2 * i + 1] + (".gz" if gz[2 * i + 1] else "")), labels)
    return arrays


def check_split(pair, images, labels):
    x, y = pair
    assert x.dtype == np.float32 and x.shape == (len(images), 1, 28, 28)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_reads_the_four_files_gz_or_plain(tmp_path):
    arrays = write_mnist(tmp_path)
    train, test = D.load_mnist(tmp_path)
    check_split(train, *arrays["train"])
    check_split(test, *arrays["t10k"])
    assert train[0].min() >= 0.0 and train[0].max() <= 1.0


def test_load_mnist_missing_files_lists_what_and_where(tmp_path):
    D.save_idx(tmp_path / (STEMS[0] + ".gz"), np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(FileNotFoundError) as info:
        D.load_mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert all(stem in message for stem in STEMS[1:])


@pytest.mark.parametrize("labels, words", [
    (np.array([0, 10, 1], np.uint8), r"label 10 at index 1 is outside \[0, 10\)"),
    (np.array([0.0, 1.7, 1.0], np.float32), "integer labels"),
])
def test_load_mnist_refuses_labels_that_are_not_classes(tmp_path, labels, words):
    write_mnist(tmp_path)
    D.save_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError, match=words):
        D.load_mnist(tmp_path)


def test_load_mnist_count_mismatch_raises(tmp_path):
    write_mnist(tmp_path)
    D.save_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))  # 3 images, 4 labels
    with pytest.raises(ValueError, match="count mismatch"):
        D.load_mnist(tmp_path)


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="shared/data/mnist not beside the repository")
def test_real_mnist_t10k_matches_known_md5_and_loads():
    for name, want in MNIST_T10K_RAW_MD5.items():
        assert hashlib.md5(gzip.decompress((SHARED_MNIST / name).read_bytes())).hexdigest() == want
    x, y = D.load_mnist_split(SHARED_MNIST, "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert 0.0 == x.min() and x.max() == 1.0
    np.testing.assert_array_equal(y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def test_load_fashion_mnist_prefers_files_in_root(tmp_path):
    arrays = write_mnist(tmp_path, gz=(False,) * 4)
    train, test = D.load_fashion_mnist(tmp_path)
    check_split(train, *arrays["train"])
    check_split(test, *arrays["t10k"])
    assert len(D.FASHION_MNIST_CLASSES) == 10 and D.FASHION_MNIST_CLASSES[9] == "Ankle boot"


@pytest.mark.skipif(not os.path.isfile(os.path.join(D.FASHION_MNIST_SYSTEM_DIR, "t10k-labels-idx1-ubyte.gz")),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_load_fashion_mnist_falls_back_to_the_debian_copy(tmp_path):
    (x_train, y_train), (x_test, y_test) = D.load_fashion_mnist(tmp_path / "empty")
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)


def test_load_fashion_mnist_searches_subfolders_of_the_system_folder(tmp_path, monkeypatch):
    import minicnn.data.mnist as mnist
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "system"))
    arrays = write_mnist(tmp_path / "system" / "fashion")
    train, _ = D.load_fashion_mnist()
    check_split(train, *arrays["train"])
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError) as info:
        D.load_fashion_mnist(tmp_path / "root")
    assert str(tmp_path / "root") in str(info.value) and str(tmp_path / "elsewhere") in str(info.value)
    with pytest.raises(ValueError, match="needs a root"):
        D.load_fashion_mnist(download=True)


# ------------------------------------------------------------------ downloads (offline, file://)

def test_download_mnist_from_file_url_with_checksums(tmp_path):
    src, dest = tmp_path / "mirror", tmp_path / "data"
    arrays = write_mnist(src, gz=(True,) * 4)
    checksums = {s + ".gz": md5(src / (s + ".gz")) for s in STEMS}
    # a SHA-256 works as well as an MD5
    checksums[STEMS[0] + ".gz"] = "sha256:" + hashlib.sha256((src / (STEMS[0] + ".gz")).read_bytes()).hexdigest()
    train, test = D.load_mnist(dest, download=True, base_url=src.as_uri(), checksums=checksums)
    check_split(train, *arrays["train"])
    check_split(test, *arrays["t10k"])
    assert sorted(os.listdir(dest)) == sorted(s + ".gz" for s in STEMS)  # no temp files left


def test_download_checksum_mismatch_deletes_and_raises(tmp_path):
    src, dest = tmp_path / "mirror", tmp_path / "data"
    write_mnist(src, gz=(True,) * 4)
    checksums = {s + ".gz": md5(src / (s + ".gz")) for s in STEMS}
    checksums["t10k-images-idx3-ubyte.gz"] = "0" * 32
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*checksum"):
        D.load_mnist(dest, download=True, base_url=src.as_uri() + "/", checksums=checksums)
    assert "t10k-images-idx3-ubyte.gz" not in os.listdir(dest)
    assert not [f for f in os.listdir(dest) if f.endswith(".part")]


def test_download_needs_a_checksum_for_every_file(tmp_path):
    src = tmp_path / "mirror"
    write_mnist(src, gz=(True,) * 4)
    with pytest.raises(ValueError, match="no checksum"):
        D.load_mnist(tmp_path / "data", download=True, base_url=src.as_uri(), checksums={})


def test_download_file_keeps_an_existing_verified_file(tmp_path):
    (tmp_path / "f").write_bytes(b"payload")
    url = (tmp_path / "does-not-exist").as_uri()  # would fail if fetched
    assert D.download_file(url, tmp_path / "f", hashlib.md5(b"payload").hexdigest()) == str(tmp_path / "f")


# ------------------------------------------------------------------ CIFAR-10

def cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def write_cifar_batch(path, data, labels, protocol=2, bytes_keys=True):
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    batch = {key("batch_label"): key("training batch"), key("data"): data, key("labels"): labels,
             key("filenames"): [key(f"img{i}.png") for i in range(len(labels))]}
    Path(path).write_bytes(pickle.dumps(batch, protocol=protocol))


def python2_cifar_pickle(data, labels):
    """A batch as Python 2's cPickle (protocol 2) writes it: keys and the array bytes are BINSTRINGs."""
    def short(b):
        return b"U" + bytes([len(b)]) + b
    n = len(data)
    out = b"\x80\x02}(" + short(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b") + b"\x87R"
    out += b"(K\x01M" + struct.pack("<H", n) + b"M" + struct.pack("<H", 3072) + b"\x86"
    out += (b"cnumpy\ndtype\n" + short(b"u1") + b"K\x00K\x01\x87R(K\x03" + short(b"|")
            + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    out += b"\x89T" + struct.pack("<i", data.nbytes) + data.tobytes() + b"tb"
    out += short(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu."
    return out


def write_cifar(folder, per_batch=2, n_test=3):
    folder.mkdir(parents=True, exist_ok=True)
    train = [cifar_arrays(per_batch, seed=i) for i in range(5)]
    for i, (data, labels) in enumerate(train):
        write_cifar_batch(folder / f"data_batch_{i + 1}", data, labels, protocol=[0, 2, 3, 4, 5][i])
    test = cifar_arrays(n_test, seed=99)
    write_cifar_batch(folder / "test_batch", *test, bytes_keys=False)
    return train, test


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_load_cifar10_reads_written_batches(tmp_path, subfolder):
    train, test = write_cifar(tmp_path / subfolder if subfolder else tmp_path)
    (x_train, y_train), (x_test, y_test) = D.load_cifar10(tmp_path)
    assert x_train.shape == (10, 3, 32, 32) and x_test.shape == (3, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    data = np.concatenate([d for d, _ in train])
    # row = 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major
    np.testing.assert_array_equal(x_train[3, 1, 2, 5], data[3, 1024 + 2 * 32 + 5] / np.float32(255))
    np.testing.assert_array_equal(x_train * 255, data.reshape(10, 3, 32, 32).astype(np.float32))
    np.testing.assert_array_equal(y_train, sum((labels for _, labels in train), []))
    np.testing.assert_array_equal(y_test, test[1])


def test_cifar_python2_style_batch_loads(tmp_path):
    data, labels = cifar_arrays(4, seed=5)
    (tmp_path / "py2_batch").write_bytes(python2_cifar_pickle(data, labels))
    x, y = D.load_cifar_batch(tmp_path / "py2_batch")
    np.testing.assert_array_equal(x.reshape(4, 3072), data)
    np.testing.assert_array_equal(y, labels)


class _RemoveFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.remove, (self.path,)


class _Eval:
    def __reduce__(self):
        return builtins.eval, ("__import__('os').getcwd()",)


@pytest.mark.parametrize("payload", ["remove", "eval"])
def test_malicious_pickle_is_refused(tmp_path, payload):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")
    evil = _RemoveFile(str(sentinel)) if payload == "remove" else _Eval()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}))
    with pytest.raises(ValueError, match=error_naming(path) + ".*not allowed"):
        D.load_cifar_batch(path)
    assert sentinel.read_text() == "still here"


def test_cifar_batch_with_wrong_shape_or_counts_raises(tmp_path):
    path = tmp_path / "b"
    write_cifar_batch(path, np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="3072"):
        D.load_cifar_batch(path)
    write_cifar_batch(path, np.zeros((2, 3072), np.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match="count mismatch"):
        D.load_cifar_batch(path)
    write_cifar_batch(path, np.zeros((2, 3072), np.uint8), [0, 99])
    with pytest.raises(ValueError, match=r"label 99 at index 1 is outside \[0, 10\)"):
        D.load_cifar_batch(path)
    write_cifar_batch(path, np.zeros((2, 3072), np.uint8), [0, 2 ** 70])
    with pytest.raises(ValueError, match="too large"):
        D.load_cifar_batch(path)


def test_cifar_missing_batches_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        D.load_cifar10(tmp_path)


def test_download_cifar10_archive_from_file_url(tmp_path):
    staging, mirror = tmp_path / "staging", tmp_path / "mirror"
    train, test = write_cifar(staging / "cifar-10-batches-py")
    (staging / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps({"label_names": []}))
    mirror.mkdir()
    archive = mirror / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    checksums = {"cifar-10-python.tar.gz": md5(archive)}
    (x_train, y_train), (x_test, y_test) = D.load_cifar10(
        tmp_path / "data", download=True, base_url=mirror.as_uri(), checksums=checksums)
    assert x_train.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(y_test, test[1])
    with pytest.raises(ValueError, match="checksum"):
        D.load_cifar10(tmp_path / "other", download=True, base_url=mirror.as_uri(),
                       checksums={"cifar-10-python.tar.gz": "f" * 32})
    assert not (tmp_path / "other" / "cifar-10-python.tar.gz").exists()


# ------------------------------------------------------------------ image folder

def test_image_folder_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=re.escape("minicnn[images]")):
        D.load_image_folder(tmp_path)


def test_load_image_folder_classes_pixels_and_resize(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    written = {}
    for cls, count in (("dog", 2), ("cat", 3)):
        (tmp_path / cls).mkdir()
        for i in range(count):
            pixels = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
            written[(cls, i)] = pixels
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    x, y, names = D.load_image_folder(tmp_path)
    assert names == ["cat", "dog"]
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
    assert x.shape == (5, 3, 4, 5) and x.dtype == np.float32
    np.testing.assert_array_equal(x[4] * 255, written[("dog", 1)].transpose(2, 0, 1).astype(np.float32))
    gray, _, _ = D.load_image_folder(tmp_path, grayscale=True)
    assert gray.shape == (5, 1, 4, 5)
    dog1 = Image.fromarray(written[("dog", 1)])
    # Pillow's own luminance (ITU-R 601-2) and bilinear resize, scaled to [0, 1]
    np.testing.assert_array_equal(gray[4, 0] * 255, np.asarray(dog1.convert("L"), np.float32))
    small, _, _ = D.load_image_folder(tmp_path, size=(2, 3))
    assert small.shape == (5, 3, 2, 3)
    resized = np.asarray(dog1.resize((3, 2), getattr(Image, "Resampling", Image).BILINEAR))
    np.testing.assert_array_equal(small[4] * 255, resized.transpose(2, 0, 1).astype(np.float32))
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "dog" / "big.png")
    with pytest.raises(ValueError, match="big.png"):
        D.load_image_folder(tmp_path)


def test_images_wider_than_8_bits_are_refused_not_clipped(tmp_path):
    """Pillow's conversion to 8 bits clips: a 16-bit image of 1000s would load as all ones."""
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "a" / "wide.png")
    with pytest.raises(ValueError, match=r"wide.png: I;16.* not supported"):
        D.load_image_folder(tmp_path, grayscale=True)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "a" / "wide.png", format="TIFF")
    with pytest.raises(ValueError, match=r"wide.png: F images"):
        D.load_image_folder(tmp_path)


# ------------------------------------------------------------------ digits

def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=re.escape("minicnn[demo]")):
        D.load_digits()


def test_load_digits_split_is_deterministic_and_complete():
    pytest.importorskip("sklearn")
    (x_train, y_train), (x_test, y_test) = D.load_digits(test_fraction=0.2, seed=0)
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == round(0.2 * 1797)
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    (x2, y2), _ = D.load_digits(test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(x2, x_train)
    np.testing.assert_array_equal(y2, y_train)
    (x3, _), _ = D.load_digits(test_fraction=0.2, seed=1)
    assert not np.array_equal(x3, x_train)
    (x16, y16), _ = D.load_digits(seed=0, size=16)
    assert x16.shape[1:] == (1, 16, 16)
    np.testing.assert_array_equal(x16[:, :, ::2, ::2], x_train)
    np.testing.assert_array_equal(y16, y_train)


# ------------------------------------------------------------------ splits

def test_random_split_is_a_seeded_partition():
    x = np.arange(20, dtype=np.float32).reshape(20, 1) * 10
    y = np.arange(20)
    (xa, ya), (xb, yb) = D.random_split(x, y, 0.75, seed=3)
    assert len(ya) == 15 and len(yb) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate([ya, yb])), y)
    np.testing.assert_array_equal(xa[:, 0], ya * 10)
    (_, ya2), _ = D.random_split(x, y, 0.75, seed=3)
    np.testing.assert_array_equal(ya, ya2)
    (_, _), (_, y_val) = D.train_val_split(x, y, val_fraction=0.25, seed=3)
    np.testing.assert_array_equal(y_val, yb)
    with pytest.raises(ValueError, match="fraction"):
        D.random_split(x, y, 1.0)


# ------------------------------------------------------------------ DataLoader

def collect(loader, count=None):
    batches = []
    for xb, yb in loader:
        batches.append((xb, yb))
        if count is not None and len(batches) == count:
            break
    return batches


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 12), drop_last=st.booleans(),
       shuffle=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_loader_covers_each_sample_exactly_once_per_epoch(n, batch_size, drop_last, shuffle, seed):
    if drop_last and n < batch_size:
        return
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    loader = D.DataLoader(x, np.arange(n), batch_size, shuffle=shuffle, rng=seed, drop_last=drop_last)
    for _ in range(2):
        batches = collect(loader)
        assert len(batches) == len(loader)
        seen = np.concatenate([yb for _, yb in batches])
        assert all(len(yb) == batch_size for _, yb in batches[:-1])
        assert len(np.unique(seen)) == len(seen) == (n // batch_size * batch_size if drop_last else n)
        np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]).reshape(-1), seen)
        if not shuffle:
            np.testing.assert_array_equal(seen, np.arange(len(seen)))
    assert loader.epoch == 2


def test_loader_same_seed_same_order_new_order_each_epoch():
    x, y = np.zeros((50, 1, 2, 2), np.float32), np.arange(50)
    orders = []
    for _ in range(2):
        loader = D.DataLoader(x, y, batch_size=8, rng=7)
        orders.append([np.concatenate([yb for _, yb in collect(loader)]) for _ in range(2)])
    np.testing.assert_array_equal(orders[0][0], orders[1][0])
    np.testing.assert_array_equal(orders[0][1], orders[1][1])
    assert not np.array_equal(orders[0][0], orders[0][1])
    other = D.DataLoader(x, y, batch_size=8, rng=8)
    assert not np.array_equal(np.concatenate([yb for _, yb in collect(other)]), orders[0][0])
    assert len(D.DataLoader(x, y, batch_size=8)) == 7
    assert len(D.DataLoader(x, y, batch_size=8, drop_last=True)) == 6


def augmenting_loader(rng=11):
    x = np.random.default_rng(0).random((23, 1, 6, 6)).astype(np.float32)
    transform = D.Compose([D.RandomCrop(6, padding=2), D.RandomHorizontalFlip(), D.RandomTranslate(1)])
    return D.DataLoader(x, np.arange(23), batch_size=5, rng=rng, transform=transform)


@pytest.mark.parametrize("stop_after", [0, 2, 5, 7, 10])  # 5 batches per epoch: 5 and 10 are epoch boundaries
def test_loader_state_dict_resume_gives_the_same_remaining_batches(stop_after):
    reference = augmenting_loader()
    expected = [b for _ in range(3) for b in collect(reference)]
    first = augmenting_loader()
    got = []
    while len(got) < stop_after:
        got += collect(first, count=min(5, stop_after - len(got)))
    state = json.loads(json.dumps(first.state_dict()))
    resumed = augmenting_loader(rng=12345)  # a different seed: the state must override it
    resumed.load_state_dict(state)
    while len(got) < len(expected):
        got += collect(resumed)
    assert len(got) == len(expected)
    for (xa, ya), (xb, yb) in zip(got, expected):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)  # augmentations too, bit for bit


def test_loader_breaking_out_resumes_the_same_epoch():
    loader = augmenting_loader()
    head = collect(loader, count=2)
    rest = collect(loader)
    ys = np.concatenate([yb for _, yb in head + rest])
    np.testing.assert_array_equal(np.sort(ys), np.arange(23))
    assert loader.epoch == 1


def test_loader_state_with_mt19937_generator_round_trips_json():
    x, y = np.zeros((10, 1, 1, 1), np.float32), np.arange(10)
    rng = np.random.Generator(np.random.MT19937(3))
    loader = D.DataLoader(x, y, batch_size=3, rng=rng)
    collect(loader, count=1)
    state = json.loads(json.dumps(loader.state_dict()))
    rest = [yb for _, yb in collect(loader)]
    loader2 = D.DataLoader(x, y, batch_size=3, rng=np.random.Generator(np.random.MT19937(0)))
    loader2.load_state_dict(state)
    for a, b in zip(rest, [yb for _, yb in collect(loader2)]):
        np.testing.assert_array_equal(a, b)


def test_loader_load_state_dict_rejects_other_settings():
    x, y = np.zeros((10, 1, 1, 1), np.float32), np.arange(10)
    state = D.DataLoader(x, y, batch_size=3).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        D.DataLoader(x, y, batch_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples"):
        D.DataLoader(x[:9], y[:9], batch_size=3).load_state_dict(state)


def test_loader_validates_arguments():
    x = np.zeros((10, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="different numbers of samples"):
        D.DataLoader(x, np.arange(9))
    with pytest.raises(ValueError, match="batch_size"):
        D.DataLoader(x, np.arange(10), batch_size=0)
    with pytest.raises(ValueError, match="no batches"):
        D.DataLoader(x, np.arange(10), batch_size=11, drop_last=True)


# ------------------------------------------------------------------ transforms

class FixedRng:
    """Stands in for a Generator: hands out preset draws and checks they are asked for in order."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def _next(self, kind, size):
        got_kind, values = self.draws.pop(0)
        assert got_kind == kind
        values = np.asarray(values)
        assert values.shape == (size,)
        return values

    def integers(self, low, high, size):
        values = self._next("integers", size)
        assert np.all((low <= values) & (values < high)), (low, high, values)
        return values

    def random(self, size):
        return self._next("random", size)


def grid(n=1, h=3, w=3, dtype=np.float32):
    """Images holding 1..h*w (image k offset by 100*k)."""
    base = np.arange(1, h * w + 1).reshape(h, w)
    return np.stack([base + 100 * k for k in range(n)])[:, None].astype(dtype)


def test_flip_mirrors_exactly_the_drawn_images():
    x = grid(n=2, h=2, w=3)
    out = D.RandomHorizontalFlip(p=0.5)(x, FixedRng(("random", [0.2, 0.7])))
    np.testing.assert_array_equal(out[0, 0], [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_array_equal(out[1, 0], [[101, 102, 103], [104, 105, 106]])
    np.testing.assert_array_equal(x, grid(n=2, h=2, w=3))  # input untouched


def test_crop_with_padding_takes_an_independent_window_per_image():
    x = grid(n=2)
    # padded image 0:  0 0 0 0 0 / 0 1 2 3 0 / 0 4 5 6 0 / 0 7 8 9 0 / 0 0 0 0 0
    out = D.RandomCrop(3, padding=1)(x, FixedRng(("integers", [0, 2]), ("integers", [0, 1])))
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
    np.testing.assert_array_equal(out[1, 0], [[104, 105, 106], [107, 108, 109], [0, 0, 0]])
    out = D.RandomCrop((2, 1))(grid(), FixedRng(("integers", [1]), ("integers", [2])))
    np.testing.assert_array_equal(out[0, 0], [[6], [9]])


def test_translate_shifts_with_zero_fill():
    x = grid(n=2)
    # image 0: dy=+1, dx=-1 -> out[i, j] = x[i-1, j+1];  image 1: no shift
    out = D.RandomTranslate(1)(x, FixedRng(("integers", [1, 0]), ("integers", [-1, 0])))
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0], [2, 3, 0], [5, 6, 0]])
    np.testing.assert_array_equal(out[1], x[1])


def test_normalize_per_channel():
    x = np.array([[[[1.0, 3.0]], [[2.0, 10.0]]]], dtype=np.float32)  # (1, 2, 1, 2)
    out = D.Normalize(mean=[1.0, 2.0], std=[2.0, 4.0])(x, None)
    np.testing.assert_array_equal(out, [[[[0.0, 1.0]], [[0.0, 2.0]]]])
    assert out.dtype == np.float32
    assert D.Normalize(0.5, 0.25)(x.astype(np.float64)).dtype == np.float64
    fitted = D.Normalize.fit(x)
    np.testing.assert_allclose(fitted.mean, [2.0, 6.0])
    np.testing.assert_allclose(fitted.std, [1.0, 4.0])
    with pytest.raises(ValueError, match="2 mean/std values for x with 3 channels"):
        D.Normalize([1, 2], [1, 1])(np.zeros((1, 3, 2, 2), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_transforms_preserve_dtype_and_shape(dtype):
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(dtype)
    rng = np.random.default_rng(1)
    for t, shape in ((D.RandomCrop(8, 2), x.shape), (D.RandomCrop(5), (4, 3, 5, 5)),
                     (D.RandomHorizontalFlip(), x.shape), (D.RandomTranslate(3), x.shape)):
        out = t(x, rng)
        assert out.dtype == dtype and out.shape == shape and out.flags.c_contiguous


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6),
       pad=st.integers(0, 2), seed=st.integers(0, 1000))
def test_crop_windows_matches_a_loop(n, c, h, w, pad, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, c, h, w))
    out_h, out_w = rng.integers(1, h + 2 * pad + 1), rng.integers(1, w + 2 * pad + 1)
    top = rng.integers(0, h + 2 * pad - out_h + 1, size=n)
    left = rng.integers(0, w + 2 * pad - out_w + 1, size=n)
    expected = np.zeros((n, c, out_h, out_w))
    for k in range(n):
        for i in range(out_h):
            for j in range(out_w):
                r, s = top[k] + i - pad, left[k] + j - pad
                if 0 <= r < h and 0 <= s < w:
                    expected[k, :, i, j] = x[k, :, r, s]
    np.testing.assert_array_equal(crop_windows(x, top, left, (out_h, out_w), (pad, pad)), expected)


def test_transform_configs_are_json_and_rebuild_the_same_transform():
    transform = D.Compose([D.RandomCrop(6, padding=2), D.RandomHorizontalFlip(0.3),
                           D.RandomTranslate((1, 2)), D.Normalize([0.5], [0.2])])
    config = json.loads(json.dumps(transform.config()))
    rebuilt = D.transform_from_config(config)
    assert rebuilt.config() == transform.config()
    x = np.random.default_rng(0).random((3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(transform(x, np.random.default_rng(5)), rebuilt(x, np.random.default_rng(5)))
    with pytest.raises(ValueError, match="unknown transform"):
        D.transform_from_config({"name": "Rotate"})


def test_crop_larger_than_padded_image_raises():
    with pytest.raises(ValueError, match="larger than the padded image"):
        D.RandomCrop(8, padding=1)(np.zeros((1, 1, 5, 5), np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("call, words", [
    (lambda: D.Normalize.fit(np.zeros((0, 3, 4, 4))), "no values"),
    (lambda: D.Normalize(0.0, float("nan")), "std positive and finite"),
    (lambda: D.Normalize(0.0, 1e-46)(np.ones((1, 1, 2, 2), np.float32)), "rounds to 0 in float32"),
])
def test_normalize_refuses_statistics_that_would_give_nan_or_inf(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_a_refused_loader_state_changes_nothing():
    x, y = np.zeros((10, 1, 2, 2), np.float32), np.zeros(10, np.int64)
    loader = D.DataLoader(x, y, 3, shuffle=True, rng=np.random.default_rng(0))
    next(iter(loader))
    state = loader.state_dict()
    fresh = D.DataLoader(x, y, 3, shuffle=True, rng=np.random.default_rng(1))
    before = fresh.state_dict()
    for bad in ({**state, "rng_state": {"bit_generator": "MT19937"}}, {**state, "batch": 1.7},
                {k: v for k, v in state.items() if k != "epoch"}):
        with pytest.raises(ValueError, match="DataLoader.load_state_dict"):
            fresh.load_state_dict(bad)
        assert fresh.state_dict() == before


@pytest.mark.parametrize("call, error, words", [
    (lambda: D.DataLoader([[1.0]] * 4, np.zeros(4, np.int64), 2), TypeError, "x must be an array"),
    (lambda: D.DataLoader(np.zeros((4, 1)), 5, 2), TypeError, "y must be an array"),
    (lambda: D.random_split(np.zeros((4, 1)), np.zeros(4), 0.5, seed=-1), ValueError, "seed"),
    (lambda: D.random_split(np.zeros((4, 1)), np.zeros(4), "0.5"), ValueError, "'0.5'"),
    (lambda: D.DataLoader(np.zeros((0, 1)), np.zeros(0), 3), ValueError, "drop_last=False give"),
])
def test_loaders_and_splits_name_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()
