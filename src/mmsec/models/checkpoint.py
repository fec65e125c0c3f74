"""Safe checkpoint I/O: safetensors only, verified against the sha256 of a card.

mmsec is handed suspicious models on purpose, so it never unpickles a file: a pickle-based
checkpoint (``.pt``, ``.bin``, ``.ckpt``, or any file whose bytes look like a pickle or a
torch zip archive) is refused with an explanation of how to convert it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint is missing, unsafe, corrupt, or does not match its card."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    # Pickle protocol 2+ starts with 0x80; torch.save writes a zip archive ("PK\x03\x04").
    return head[:1] == b"\x80" or head == b"PK\x03\x04"


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write safetensors atomically; return the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def load_checkpoint(path: str | Path, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a safetensors checkpoint and its metadata; refuse pickles and hash mismatches."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix in {".pt", ".pth", ".bin", ".ckpt", ".pkl"} or looks_like_pickle(path):
        raise CheckpointError(
            f"refusing to load {path}: it is a pickle-based checkpoint, and unpickling runs arbitrary code. "
            "Convert it to safetensors in a sandbox you trust (safetensors.torch.save_file) and load that.")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise CheckpointError(f"sha256 mismatch for {path}: card says {expected_sha256}, file is {actual}. "
                                  "The file was modified or corrupted; refusing to load it.")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: {e}") from e
    return tensors, meta


def read_card(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model card not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"model card {path} is not valid JSON: {e}") from e
