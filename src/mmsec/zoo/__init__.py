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
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .. import models as _models  # noqa: F401  (its architectures register their checkpoint families)
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


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load_recipe(name: str) -> dict:
    path = RECIPES / f"{name}.yaml"
    if not path.is_file():
        from ..registry import close_names

        raise KeyError(f"no zoo recipe {name!r}; known: {recipe_names()}{close_names(name, recipe_names())}")
    return yaml.safe_load(path.read_text())


def available() -> list[str]:
    """Zoo models with a shipped checkpoint."""
    return sorted(p.stem for p in CHECKPOINTS.glob("*.safetensors"))


def card(name: str) -> dict:
    return read_card(CHECKPOINTS / f"{name}.json")


def load_model_file(path: str | Path) -> Any:
    """Load a zoo-format checkpoint from a file path; its card ``<stem>.json`` must lie beside it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        # Let the checkpoint loader explain pickles; anything else is simply not a zoo checkpoint.
        if path.is_file():
            load_checkpoint(path)
        raise CheckpointError(f"{path} is not a zoo checkpoint: expected a .safetensors file with its .json card beside it")
    return load_model(path.stem, checkpoint_dir=path.parent)


def load_model(name: str, checkpoint_dir: str | Path | None = None) -> Any:
    """Load zoo model ``name`` (its sha256 checked against its card), in eval mode. A card without a
    sha256 loads unchecked, with a warning naming the file (once per file)."""
    base = Path(checkpoint_dir) if checkpoint_dir else CHECKPOINTS
    if not (base / f"{name}.safetensors").is_file():
        from ..registry import close_names

        names = sorted(p.stem for p in base.glob("*.safetensors"))
        raise CheckpointError(f"no zoo checkpoint {name!r} in {base}; available: {names}"
                              f"{close_names(name, names)}. Train it with `mmsec zoo train {name}`.")
    path = base / f"{name}.safetensors"
    info = read_card(base / f"{name}.json")
    tensors, meta = load_checkpoint(path, expected_sha256=card_sha256(info, path))
    return model_from_checkpoint(tensors, meta, name)


__all__ = ["CHECKPOINTS", "RECIPES", "CheckpointError", "available", "card", "load_checkpoint", "load_model",
           "load_model_file", "load_recipe", "read_card", "recipe_names", "save_checkpoint", "sha256_file"]
