"""The IDX file format (MNIST, Fashion-MNIST): a reader that checks everything, and a writer.

Layout, all integers big-endian::

    bytes 0-1   zero
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions, ndim
    4 * ndim    the size of each dimension, uint32
    payload     prod(dims) elements, row-major

A file may be gzip-compressed; that is recognised by its first two bytes (0x1f 0x8b), not by the name.
"""
import gzip
import math
import os
import zlib

import numpy as np

from minicnn.io import write_bytes_atomic

# IDX type code -> (big-endian dtype in the file, native dtype returned)
IDX_DTYPES = {
    0x08: (np.dtype(np.uint8), np.dtype(np.uint8)),
    0x09: (np.dtype(np.int8), np.dtype(np.int8)),
    0x0B: (np.dtype(">i2"), np.dtype(np.int16)),
    0x0C: (np.dtype(">i4"), np.dtype(np.int32)),
    0x0D: (np.dtype(">f4"), np.dtype(np.float32)),
    0x0E: (np.dtype(">f8"), np.dtype(np.float64)),
}
_CODE_OF_DTYPE = {native: code for code, (_, native) in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None


def load_idx(path):
    """Read an IDX file (gzip-compressed or not) into a NumPy array of native byte order.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` naming the file if
    the magic number, the type code or the dimensions are wrong, or if the payload is shorter or
    longer than the header says (a truncated download, say).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    zero, code, ndim = data[0:2], data[2], data[3]
    if zero != b"\0\0":
        raise ValueError(f"{path}: not an IDX file: magic number 0x{data[:4].hex()} "
                         f"does not start with two zero bytes")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX element type 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header_len} bytes, "
                         f"file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    file_dtype, native_dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * file_dtype.itemsize
    payload = len(data) - header_len
    if payload != expected:
        what = "truncated" if payload < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX payload {what}: header says shape {dims} of {file_dtype.name} "
                         f"= {expected} bytes, file holds {payload}")
    array = np.frombuffer(data, dtype=file_dtype, count=expected // file_dtype.itemsize,
                          offset=header_len)
    return array.reshape(dims).astype(native_dtype)  # astype copies: writable, native order


def save_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``; atomic.

    ``array.dtype`` must be one of uint8, int8, int16, int32, float32, float64.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    if array.dtype not in _CODE_OF_DTYPE:
        raise ValueError(f"save_idx: dtype {array.dtype} has no IDX type code "
                         f"(use uint8, int8, int16, int32, float32 or float64)")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"save_idx: array must have 1 to 255 dimensions, got shape {array.shape}")
    code = _CODE_OF_DTYPE[array.dtype]
    file_dtype = IDX_DTYPES[code][0]
    blob = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
            + np.ascontiguousarray(array, dtype=file_dtype).tobytes())
    if path.endswith(".gz"):
        blob = gzip.compress(blob, mtime=0)
    write_bytes_atomic(path, blob)
    return path


