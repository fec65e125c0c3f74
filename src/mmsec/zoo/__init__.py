"""The model zoo: small models trained on the shapes world, shipped as hashed safetensors.

Each zoo model ``NAME`` has a recipe ``recipes/NAME.yaml`` (how to train it), a checkpoint
``checkpoints/NAME.safetensors`` and a card ``checkpoints/NAME.json`` (recipe, seed, data,
measured metrics, sha256, version). Loading verifies the sha256 and refuses a mismatch.

Example::

    from mmsec.zoo import load_model
    model = load_model("shapes-clip-resnet")

A checkpoint's metadata names its checkpoint family, registered by the module defining the
model (:func:`mmsec.models.checkpoint.register_checkpoint_family`): ``contrastive`` (TinyCLIP;
also when absent, as in checkpoints written before families existed) or ``fusion`` (TinyALBEF).
The zoo itself knows no architecture. Checkpoint I/O lives in :mod:`mmsec.models.checkpoint`;
its names are re-exported here for users.

Shipped checkpoints are read-only to the tool: ``mmsec zoo train NAME`` (:func:`mmsec.zoo.train.train_recipe`)
writes to the user zoo, :func:`user_dir` (``$MMSEC_ZOO_DIR``, else ``./mmsec-zoo``), and replaces a
shipped file only when asked to explicitly (``--overwrite-shipped``). A user-trained model loads by path
(``zoo:/path/NAME.safetensors``, the ``.safetensors`` optional) or, when no shipped model has that name, by
name (``zoo:NAME`` looks in the package first, then in the user zoo). A card without a sha256 loads with a
warning naming the file (:func:`mmsec.models.checkpoint.card_sha256`).

Diffusion models are folders in diffusers layout, ``checkpoints/NAME/`` (``unet/``, ``scheduler/``, ...), with
the card ``checkpoints/NAME.json`` beside the folder: its ``format`` says how to load the folder
(``diffusers``: :func:`mmsec.models.diffusers_adapter.load_diffusers`), ``files`` the sha256 of every file
(a missing, modified or unlisted file is refused) and ``sha256`` that of the list (:func:`folder_sha256`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .. import models as _models  # noqa: F401  (its architectures register their checkpoint families)
from ..fingerprint import combine
from ..models.checkpoint import (
    CheckpointError,
    card_sha256,
    load_checkpoint,
    model_from_checkpoint,
    read_card,
    save_checkpoint,
    sha256_file,
)

_HERE = Path(str(resources.files(__package__)))
CHECKPOINTS = _HERE / "checkpoints"
RECIPES = _HERE / "recipes"
USER_DIR_ENV = "MMSEC_ZOO_DIR"
DEFAULT_USER_DIR = Path("mmsec-zoo")


def user_dir() -> Path:
    """Where user-trained zoo models go and are looked up by name: ``$MMSEC_ZOO_DIR``, else ``./mmsec-zoo``."""
    return Path(os.environ.get(USER_DIR_ENV) or DEFAULT_USER_DIR)


def is_shipped_dir(path: str | Path) -> bool:
    """Whether ``path`` is the package's own checkpoint folder (whose files ship with mmsec)."""
    try:
        return Path(path).resolve() == CHECKPOINTS.resolve()
    except OSError:
        return False


def _models_in(base: Path) -> list[str]:
    """Zoo models in folder ``base``: checkpoints ``NAME.safetensors`` and model folders ``NAME/`` with a card."""
    if not base.is_dir():
        return []
    folders = {p.name for p in base.iterdir() if p.is_dir() and (base / f"{p.name}.json").is_file()}
    return sorted({p.stem for p in base.glob("*.safetensors")} | folders)


def user_trained() -> list[str]:
    """Models in the user zoo (:func:`user_dir`) that no shipped model shadows: loadable as ``zoo:NAME``."""
    base = user_dir()
    if is_shipped_dir(base) or not base.is_dir():
        return []
    shipped = set(available())
    return [name for name in _models_in(base) if name not in shipped]


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load_recipe(name: str) -> dict:
    path = RECIPES / f"{name}.yaml"
    if not path.is_file():
        from ..registry import close_names

        raise KeyError(f"no zoo recipe {name!r}; known: {recipe_names()}{close_names(name, recipe_names())}")
    return yaml.safe_load(path.read_text())


def available() -> list[str]:
    """Zoo models with a shipped checkpoint (a file, or a folder for diffusion models)."""
    return _models_in(CHECKPOINTS)


def folder_files(folder: str | Path) -> dict[str, str]:
    """``{relative POSIX path: sha256}`` of every file under a model folder (what its card lists)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def folder_sha256(files: dict[str, str]) -> str:
    """One sha256 of a folder model's file list (paths and their sha256): the card's ``sha256``."""
    return combine(*(f"{rel} {sha}" for rel, sha in sorted(files.items())))


def load_folder(folder: str | Path) -> Any:
    """A folder model (diffusers layout) with its card ``NAME.json`` beside it, in eval mode; every file's
    sha256 is checked against the card before anything is read."""
    folder = Path(folder)
    info = read_card(folder.parent / f"{folder.name}.json")
    files = info.get("files")
    if info.get("format") != "diffusers" or not isinstance(files, dict) or not files:
        raise CheckpointError(f"the card of {folder} must have format 'diffusers' and list its files with their sha256 "
                              f"(files), got format {info.get('format')!r}")
    if info.get("sha256") != folder_sha256(files):
        raise CheckpointError(f"the card of {folder}: sha256 {info.get('sha256')!r} is not that of its file list; the "
                              "card was edited, refusing to load it")
    from ..models.diffusers_adapter import load_diffusers

    return load_diffusers(folder, files).eval()


def card(name: str) -> dict:
    return read_card(CHECKPOINTS / f"{name}.json")


def load_model_file(path: str | Path) -> Any:
    """Load a zoo-format checkpoint from a file path; its card ``<stem>.json`` must lie beside it."""
    path = Path(path)
    if path.is_dir():  # a folder model, its card beside it
        return load_model(path.name, checkpoint_dir=path.parent)
    if path.suffix != ".safetensors" and Path(f"{path}.safetensors").is_file():
        path = Path(f"{path}.safetensors")  # zoo:mmsec-zoo/NAME, as written for a user-trained model
    if path.suffix != ".safetensors":
        # Let the checkpoint loader explain pickles; anything else is simply not a zoo checkpoint.
        if path.is_file():
            load_checkpoint(path)
        raise CheckpointError(f"{path} is not a zoo checkpoint: expected a .safetensors file with its .json card beside it")
    return load_model(path.stem, checkpoint_dir=path.parent)


def load_model(name: str, checkpoint_dir: str | Path | None = None) -> Any:
    """Load zoo model ``name`` (its sha256 checked against its card), in eval mode.

    Without ``checkpoint_dir``: the shipped model of that name, else the user zoo's (:func:`user_dir`).
    A card without a sha256 loads unchecked, with a warning naming the file (once per file).
    """
    if checkpoint_dir:
        base = Path(checkpoint_dir)
    elif name in available() or name not in _models_in(user_dir()):
        base = CHECKPOINTS
    else:
        base = user_dir()
    if (base / name).is_dir() and (base / f"{name}.json").is_file():
        return load_folder(base / name)
    if not (base / f"{name}.safetensors").is_file():
        from ..registry import close_names

        names = _models_in(base)
        where = f"{base}" if checkpoint_dir else f"the shipped zoo ({base}) or the user zoo ({user_dir()})"
        if not checkpoint_dir:
            names = sorted(set(names) | set(user_trained()))
        raise CheckpointError(f"no zoo checkpoint {name!r} in {where}; available: {names}"
                              f"{close_names(name, names)}. Train it with `mmsec zoo train {name}`.")
    path = base / f"{name}.safetensors"
    info = read_card(base / f"{name}.json")
    tensors, meta = load_checkpoint(path, expected_sha256=card_sha256(info, path))
    return model_from_checkpoint(tensors, meta, name)


__all__ = ["CHECKPOINTS", "DEFAULT_USER_DIR", "RECIPES", "USER_DIR_ENV", "CheckpointError", "available", "card",
           "folder_files", "folder_sha256", "is_shipped_dir", "load_checkpoint", "load_folder", "load_model",
           "load_model_file", "load_recipe", "read_card",
           "recipe_names", "save_checkpoint", "sha256_file", "user_dir", "user_trained"]
