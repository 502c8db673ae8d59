"""The data side of training: dataset readers, a seeded DataLoader, batch transforms.

Every loader returns ``x`` float32 NCHW scaled to [0, 1] and ``y`` int64 class indices.
Randomness (shuffling, splits, augmentation) comes from explicit seeded
``numpy.random.Generator`` objects; downloads are checksummed and written atomically; CIFAR's
pickled batches are read with an unpickler that cannot run code.

    load_idx / save_idx                      IDX files (.gz or plain)
    load_mnist, load_fashion_mnist           the four standard IDX files
    load_cifar10                             the python batches
    load_image_folder                        root/<class>/<image>  (needs Pillow)
    load_digits                              scikit-learn's bundled 8x8 digits (the demo)
    DataLoader, random_split, train_val_split
    Normalize, RandomCrop, RandomHorizontalFlip, RandomTranslate, Compose
"""
from minicnn.data.idx import load_idx, save_idx  # noqa: F401
from minicnn.data.download import download_file, download_files, file_digest  # noqa: F401
from minicnn.data.mnist import (  # noqa: F401
    FASHION_MNIST_CLASSES, FASHION_MNIST_MD5, FASHION_MNIST_SYSTEM_DIR, FASHION_MNIST_URL,
    MNIST_CLASSES, MNIST_MD5, MNIST_URL, load_fashion_mnist, load_idx_pair, load_mnist,
    load_mnist_split,
)
from minicnn.data.cifar import (  # noqa: F401
    CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, SafeUnpickler, load_cifar10, load_cifar_batch,
    safe_load_pickle,
)
from minicnn.data.folder import load_image_folder  # noqa: F401
from minicnn.data.digits import DIGITS_CLASSES, load_digits  # noqa: F401
from minicnn.data.split import random_split, train_val_split  # noqa: F401
from minicnn.data.loader import DataLoader  # noqa: F401
from minicnn.data.transforms import (  # noqa: F401
    Compose, Normalize, RandomCrop, RandomHorizontalFlip, RandomTranslate, Transform,
    transform_from_config,
)
