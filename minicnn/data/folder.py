"""A folder of images, one subfolder per class (the ImageFolder layout), read with Pillow.

    root/
      cat/  001.png  002.jpg ...
      dog/  a.png ...

Class indices follow the sorted subfolder names; files are read in sorted order, so the result
does not depend on the file system's listing order.
"""
import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm",
                    ".tif", ".tiff", ".webp")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("load_image_folder needs Pillow: pip install 'minicnn[images]' "
                          "(or pip install Pillow)") from None
    return Image


def _size_pair(size):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size must be a positive int or an (h, w) pair, got {size!r}")
    return int(size[0]), int(size[1])


# Pillow modes holding more than 8 bits per sample: converting them to "L" or "RGB" clips every
# value above 255 (a 16-bit scan would come out all white), so they are refused instead.
_WIDE_MODES = ("I", "F")


def read_image(path, grayscale=False, size=None):
    """One image file as uint8 pixels, (H, W) when ``grayscale`` else (H, W, 3), resized
    bilinearly to ``size`` = (h, w) when given.  Raises ValueError naming the file when Pillow
    cannot read it, or when its samples are wider than 8 bits."""
    Image = _pillow()
    try:
        with Image.open(path) as img:
            if img.mode.startswith(_WIDE_MODES):
                raise ValueError(f"{path}: {img.mode} images (more than 8 bits per sample) are "
                                 f"not supported; save it with 8 bits per channel")
            img = img.convert("L" if grayscale else "RGB")
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), getattr(Image, "Resampling", Image).BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


def load_image_folder(root, size=None, grayscale=False, extensions=IMAGE_EXTENSIONS):
    """Images under ``root/<class>/`` -> ``(x, y, class_names)``.

    x float32 ``(N, C, H, W)`` in [0, 1] with C = 1 (``grayscale=True``) or 3 (RGB); y int64;
    ``class_names`` the sorted subfolder names (y indexes it).  ``size`` (int or ``(h, w)``)
    resizes every image bilinearly; without it all images must already share one size.
    Files whose extension is not in ``extensions`` are skipped; an unreadable image raises
    ``ValueError`` naming it.
    """
    _pillow()
    root = os.fspath(root)
    size = _size_pair(size)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    class_names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not class_names:
        raise ValueError(f"{root}: no class subfolders (expected root/<class_name>/<image files>)")
    extensions = tuple(e.lower() for e in extensions)
    images, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder)
                       if f.lower().endswith(extensions) and os.path.isfile(os.path.join(folder, f)))
        for file_name in files:
            path = os.path.join(folder, file_name)
            pixels = read_image(path, grayscale, size)
            if images and pixels.shape != images[0].shape:
                raise ValueError(f"{path}: image is {pixels.shape[:2]} (h, w) but earlier images are "
                                 f"{images[0].shape[:2]}; pass size= to resize them all")
            images.append(pixels)
            labels.append(label)
    if not images:
        raise ValueError(f"{root}: no image files with extensions {extensions} in {class_names}")
    x = np.stack(images).astype(np.float32)
    x = x[:, None] if grayscale else x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    x = np.ascontiguousarray(x)
    x /= 255.0
    return x, np.asarray(labels, dtype=np.int64), class_names
