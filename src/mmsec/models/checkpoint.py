"""Safe checkpoint I/O beside the models: safetensors only, verified against the sha256 of a card.

mmsec is handed suspicious models on purpose, so it never unpickles a file: a pickle-based
checkpoint (``.pt``, ``.bin``, ``.ckpt``, or any file whose bytes look like a pickle or a
torch zip archive) is refused with an explanation of how to convert it.

An mmsec checkpoint is a safetensors file whose metadata holds the model's ``config`` (JSON) and
its checkpoint ``family`` (``contrastive`` when absent, as in checkpoints written before families
existed), with a JSON *card* beside it (recipe, seed, metrics, sha256; see :mod:`mmsec.zoo`). A card
without a sha256 cannot vouch for its file: :func:`card_sha256` lets it load, with a warning naming it.
Each architecture that can be rebuilt from such a file is registered, in the module that
defines it, with :func:`register_checkpoint_family`; :func:`model_from_checkpoint` rebuilds it::

    register_checkpoint_family("fusion", TinyALBEFConfig, TinyALBEF)   # in models/tiny_albef.py

It imports only :mod:`mmsec.models.base` (the model family names it checks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .base import get_family

log = logging.getLogger(__name__)
_WARNED_UNHASHED: set[str] = set()  # checkpoints already warned about (resolved paths), one warning per file

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


def check_safetensors_file(path: str | Path) -> None:
    """Raise a :class:`CheckpointError` naming ``path`` unless it is a complete safetensors file.

    Reads only the header (and checks that the tensors it lists cover the file exactly), so a truncated
    or overwritten file is named here instead of failing deep inside a loader.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a complete safetensors file ({e}); it may be truncated or "
                              "corrupted: save or copy the weights again") from e


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


def card_sha256(card: dict, path: str | Path) -> str | None:
    """The sha256 that ``card`` records for checkpoint ``path``, to pass to :func:`load_checkpoint`.

    A card without one (no ``sha256``, or an empty one) means the file cannot be checked: it then
    loads unchecked, and this logs a warning naming the file, once per file per process.
    """
    sha = card.get("sha256")
    if sha is None or sha == "":
        key = str(Path(path).resolve())
        if key not in _WARNED_UNHASHED:
            _WARNED_UNHASHED.add(key)
            log.warning("checkpoint %s has no sha256 in its card: loading it unchecked (a modified or corrupted "
                        "file would go unnoticed); record the sha256 of the file you trust in its card", path)
        return None
    if not isinstance(sha, str):
        raise CheckpointError(f"the card of {path} has sha256 {sha!r}: expected a hex string (64 characters)")
    return sha


def read_card(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model card not found: {path}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"model card {path} is not valid JSON: {e}") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {path} must hold a JSON object (recipe, metrics, sha256, ...), "
                              f"got {type(card).__name__}")
    if card.get("sha256") not in (None, "") and not (isinstance(card["sha256"], str)
                                                     and re.fullmatch(r"[0-9a-f]{64}", card["sha256"])):
        raise CheckpointError(f"model card {path}: sha256 must be 64 lowercase hex digits (or absent: the file then "
                              f"loads unchecked, with a warning), got {card['sha256']!r}")
    return card


# -- architectures a checkpoint can be rebuilt as -------------------------------------------------------

@dataclass(frozen=True)
class CheckpointFamily:
    """How to rebuild a model from a checkpoint whose metadata names ``name`` as its family.

    ``config`` has ``from_dict(dict)`` / ``to_dict()``; ``model(config)`` builds the untrained
    module; ``family`` is the model family (:data:`mmsec.models.base.FAMILIES`) the model satisfies.
    """

    name: str
    config: type
    model: type
    family: str


_CHECKPOINT_FAMILIES: dict[str, CheckpointFamily] = {}
DEFAULT_CHECKPOINT_FAMILY = "contrastive"  # checkpoints written before families existed


def register_checkpoint_family(name: str, config_cls: type, model_cls: type, family: str | None = None) -> None:
    """Register the architecture of checkpoints whose metadata ``family`` is ``name``.

    Called once by the module that defines the model. ``family`` is the model family the model
    satisfies (default: ``name``); registering the same classes again is a no-op.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"register_checkpoint_family: name must be a non-empty string, got {name!r}")
    for attr in ("from_dict", "to_dict"):
        if not callable(getattr(config_cls, attr, None)):
            raise TypeError(f"register_checkpoint_family({name!r}): config_cls {getattr(config_cls, '__name__', config_cls)} "
                            f"lacks {attr}(); a checkpoint stores its config as JSON")
    if not callable(model_cls):
        raise TypeError(f"register_checkpoint_family({name!r}): model_cls must be a class, got {model_cls!r}")
    entry = CheckpointFamily(name, config_cls, model_cls, get_family(family or name).name)
    known = _CHECKPOINT_FAMILIES.get(name)
    if known is not None and known != entry:
        raise ValueError(f"checkpoint family {name!r} is registered twice: {known.model.__name__} and "
                         f"{model_cls.__name__}")
    _CHECKPOINT_FAMILIES[name] = entry


def checkpoint_families() -> dict[str, CheckpointFamily]:
    """The registered checkpoint families by name (a copy)."""
    return dict(_CHECKPOINT_FAMILIES)


def checkpoint_family(name: str, where: str = "checkpoint") -> CheckpointFamily:
    """The registered checkpoint family ``name``; a CheckpointError naming the known ones otherwise."""
    if name not in _CHECKPOINT_FAMILIES:
        raise CheckpointError(f"{where} has model family {name!r} in its metadata; this mmsec knows "
                              f"{sorted(_CHECKPOINT_FAMILIES)} (is the checkpoint from a newer mmsec?)")
    return _CHECKPOINT_FAMILIES[name]


def model_from_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, str], name: str) -> Any:
    """Rebuild the model a checkpoint's ``tensors`` and ``meta`` (from :func:`load_checkpoint`)
    describe, in eval mode; ``name`` is used in error messages."""
    if "config" not in meta:
        raise CheckpointError(f"checkpoint {name} has no 'config' metadata; it was not written by mmsec")
    arch = checkpoint_family(meta.get("family", DEFAULT_CHECKPOINT_FAMILY), f"checkpoint {name}")
    try:
        config = arch.config.from_dict(json.loads(meta["config"]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {name}: its 'config' metadata is not a valid {arch.config.__name__}: {e}") from e
    model = arch.model(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {name} does not fit its config: missing {missing}, unexpected {unexpected}")
    return model.eval()
