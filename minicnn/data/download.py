"""Fetching dataset files: urllib, a checksum on every file, atomic writes.

A file is streamed into a temporary file beside its destination while its digest is computed;
only if the digest matches the expected one is the temporary file renamed into place
(``os.replace``), so a half-finished or tampered download never sits where a loader would read it.
A mismatch deletes the temporary file and raises ``ValueError``.

Checksums are hex strings: 32 digits are an MD5, 64 digits a SHA-256; a ``"md5:"`` or
``"sha256:"`` prefix may say so explicitly.  ``file://`` URLs work too (the tests use them).
"""
import hashlib
import os
import tempfile
import urllib.request

_CHUNK = 1 << 20


def _parse_checksum(checksum):
    text = str(checksum).strip().lower()
    if ":" in text:
        algorithm, digest = text.split(":", 1)
    else:
        algorithm, digest = {32: "md5", 64: "sha256"}.get(len(text), "?"), text
    if algorithm not in ("md5", "sha256") or len(digest) != {"md5": 32, "sha256": 64}[algorithm] \
            or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"checksum {checksum!r} is neither an MD5 (32 hex digits) nor a SHA-256 "
                         f"(64 hex digits)")
    return algorithm, digest


def file_digest(path, algorithm="md5"):
    """Hex digest of a file's bytes (``algorithm`` is ``"md5"`` or ``"sha256"``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def checksum_matches(path, checksum):
    algorithm, digest = _parse_checksum(checksum)
    return file_digest(path, algorithm) == digest


def download_file(url, dest, checksum, timeout=60.0):
    """Fetch ``url`` to ``dest`` if ``dest`` is not already there with the right checksum.

    Returns ``dest``.  Raises ``ValueError`` (and leaves nothing at ``dest``) when the downloaded
    bytes do not match ``checksum``; network errors propagate as ``urllib.error.URLError``.
    """
    algorithm, digest = _parse_checksum(checksum)
    dest = os.fspath(dest)
    if os.path.isfile(dest) and file_digest(dest, algorithm) == digest:
        return dest
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(dest) + ".", suffix=".part")
    try:
        h = hashlib.new(algorithm)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != digest:
            raise ValueError(f"download of {url} failed its checksum: expected {algorithm} {digest}, "
                             f"got {got}; the file was deleted (nothing written to {dest})")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def download_files(names, root, base_url, checksums, timeout=60.0):
    """Download each of ``names`` from ``base_url`` into ``root``, verifying ``checksums[name]``.

    Every name needs an entry in ``checksums``: nothing is fetched unverified.
    """
    missing = [name for name in names if name not in checksums]
    if missing:
        raise ValueError(f"no checksum given for {missing}; pass checksums={{name: md5_or_sha256}}")
    base = base_url if base_url.endswith("/") else base_url + "/"
    return [download_file(base + name, os.path.join(root, name), checksums[name], timeout)
            for name in names]
