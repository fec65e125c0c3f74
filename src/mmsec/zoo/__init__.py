"""The model zoo: small models trained on the shapes world, shipped as hashed safetensors.

Each zoo model ``NAME`` has a recipe ``recipes/NAME.yaml`` (how to train it), a checkpoint
``checkpoints/NAME.safetensors`` and a card ``checkpoints/NAME.json`` (recipe, seed, data,
measured metrics, sha256, version). Loading verifies the sha256 and refuses a mismatch.

Example::

    from mmsec.zoo import load_model
    model = load_model("shapes-clip-resnet")

A checkpoint's metadata names its model family: ``contrastive`` (TinyCLIP; also when absent, as
in checkpoints written before families existed) or ``fusion`` (TinyALBEF).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

from ..models.checkpoint import CheckpointError, load_checkpoint, read_card
from ..models.tiny_albef import TinyALBEF, TinyALBEFConfig
from ..models.tiny_clip import TinyCLIP, TinyCLIPConfig

_HERE = Path(str(resources.files(__package__)))
CHECKPOINTS = _HERE / "checkpoints"
RECIPES = _HERE / "recipes"
# Checkpoint metadata "family" -> (config class, model class).
FAMILIES = {"contrastive": (TinyCLIPConfig, TinyCLIP), "fusion": (TinyALBEFConfig, TinyALBEF)}


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


def load_model_file(path: str | Path) -> TinyCLIP | TinyALBEF:
    """Load a zoo-format checkpoint from a file path; its card ``<stem>.json`` must lie beside it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        # Let the checkpoint loader explain pickles; anything else is simply not a zoo checkpoint.
        if path.is_file():
            load_checkpoint(path)
        raise CheckpointError(f"{path} is not a zoo checkpoint: expected a .safetensors file with its .json card beside it")
    return load_model(path.stem, checkpoint_dir=path.parent)


def load_model(name: str, checkpoint_dir: str | Path | None = None) -> TinyCLIP | TinyALBEF:
    """Load zoo model ``name`` (its sha256 checked against its card), in eval mode."""
    base = Path(checkpoint_dir) if checkpoint_dir else CHECKPOINTS
    if not (base / f"{name}.safetensors").is_file():
        from ..registry import close_names

        names = sorted(p.stem for p in base.glob("*.safetensors"))
        raise CheckpointError(f"no zoo checkpoint {name!r} in {base}; available: {names}"
                              f"{close_names(name, names)}. Train it with `mmsec zoo train {name}`.")
    info = read_card(base / f"{name}.json")
    tensors, meta = load_checkpoint(base / f"{name}.safetensors", expected_sha256=info.get("sha256"))
    if "config" not in meta:
        raise CheckpointError(f"checkpoint {name} has no 'config' metadata; it was not written by mmsec")
    family = meta.get("family", "contrastive")
    if family not in FAMILIES:
        raise CheckpointError(f"checkpoint {name} has model family {family!r} in its metadata; this mmsec knows "
                              f"{sorted(FAMILIES)} (is the checkpoint from a newer mmsec?)")
    config_cls, model_cls = FAMILIES[family]
    model = model_cls(config_cls.from_dict(json.loads(meta["config"])))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {name} does not fit its config: missing {missing}, unexpected {unexpected}")
    return model.eval()


__all__ = ["CheckpointError", "available", "card", "load_model", "load_model_file", "load_recipe", "recipe_names"]
