"""Content fingerprints of the files a cell reads (weights, data), cached by path, size and mtime.

A cell's identity must change when the weights or the data it reads change, even under the same name
(``hf:DIR`` re-saved, a zoo model retrained): the runner puts these fingerprints into each cell's
config, so its hash covers them. Hashing is sha256 of the bytes, computed once per file per process
(cached by resolved path, size and modification time, so an edited file is hashed again). A leaf:
it imports nothing from mmsec.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of one file's bytes (cached by path, size and mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def tree_sha256(path: str | os.PathLike) -> str:
    """sha256 over a file, or over every regular file under a folder (relative names and contents,
    in sorted order; hidden files and folders skipped)."""
    root = Path(path)
    if root.is_file():
        return file_sha256(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist")
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            h.update(rel.as_posix().encode("utf-8") + b"\0" + file_sha256(f).encode("ascii") + b"\n")
    return h.hexdigest()


def combine(*parts: str) -> str:
    """One fingerprint of several (order matters)."""
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


__all__ = ["combine", "file_sha256", "tree_sha256"]
