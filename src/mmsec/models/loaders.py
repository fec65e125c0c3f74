"""Model names used in experiment specs and the CLI, resolved to a ContrastiveModel.

Accepted forms::

    zoo:NAME                         a shipped zoo model (mmsec.zoo.load_model), e.g. zoo:shapes-clip-resnet
    zoo:/path/NAME.safetensors       a zoo-format checkpoint on disk, its card NAME.json beside it
    NAME                             the same, without the prefix
    hf:/path/to/folder               a Hugging Face CLIP saved with save_pretrained (HFCLIP)
    hf-blip:/path/to/folder          a Hugging Face BlipForImageTextRetrieval folder (HFBLIPRetrieval, a FusionModel)
    open_clip:ARCH:/path/file.safetensors   an open_clip architecture with local weights (OpenCLIP)

Nothing is ever downloaded, and only safetensors weights are loaded. Importing this module
registers the model kinds (``mmsec.registry.entries("models")``); the heavy libraries
(transformers, open_clip) are imported only when such a model is loaded.
"""

from __future__ import annotations

from functools import partial
from importlib import resources
from pathlib import Path

import yaml

from ..registry import close_names, declare_kind, register
from .base import ContrastiveModel, FusionModel, require_fusion

SPEC_FORMS = ("zoo:NAME (e.g. zoo:shapes-clip-resnet, or the bare NAME)", "zoo:/path/to/NAME.safetensors", "hf:/path/to/hf_clip_folder",
              "hf-blip:/path/to/blip_retrieval_folder", "open_clip:ARCH:/path/to/weights.safetensors")


declare_kind("models", "model names for specs and the CLI: zoo:NAME, hf:DIR, ... -> a model of one family",
             "mmsec.models.loaders:load_model")


def _forms() -> str:
    return "Accepted forms: " + "; ".join(SPEC_FORMS)


def _zoo_recipes() -> dict[str, str]:
    """Zoo recipe name -> its one-line description, read from the recipe files.

    Read directly rather than through ``mmsec.zoo.recipe_names()``: ``mmsec.zoo`` imports
    ``mmsec.models``, so calling into it while this package initialises would be circular.
    """
    out = {}
    for f in (resources.files("mmsec.zoo") / "recipes").iterdir():
        if f.name.endswith(".yaml"):
            recipe = yaml.safe_load(f.read_text()) or {}
            out[f.name[: -len(".yaml")]] = str(recipe.get("description", "zoo model"))
    return dict(sorted(out.items()))


def load_zoo(name: str) -> ContrastiveModel:
    from .. import zoo

    if "/" in name or "\\" in name or "." in name:  # a checkpoint file, not a shipped name
        return zoo.load_model_file(name)
    return zoo.load_model(name)


def load_hf(directory: str | Path) -> ContrastiveModel:
    from .hf_clip import HFCLIP

    return HFCLIP.from_pretrained(directory)


def load_hf_blip(directory: str | Path) -> FusionModel:
    from .hf_blip import HFBLIPRetrieval

    return HFBLIPRetrieval.from_pretrained(directory)


def load_open_clip(arch: str, weights: str | Path) -> ContrastiveModel:
    from .open_clip_adapter import OpenCLIP

    return OpenCLIP.from_file(arch, weights)


def load_contrastive(spec: str) -> ContrastiveModel:
    """Load the ContrastiveModel named by ``spec`` (see the module docstring for the forms)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}. {_forms()}")
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    if sep and len(prefix) == 1 and rest.startswith(("\\", "/")):
        prefix, sep = "", ""  # a bare Windows path such as C:\models, not a prefix
    if not sep:
        names = sorted(set(_zoo_recipes()) | set(_zoo_available()))
        if spec in names:
            return load_zoo(spec)
        hint = (f" {spec!r} looks like a path: write 'hf:{spec}' for a Hugging Face CLIP folder or "
                f"'open_clip:ARCH:{spec}' for open_clip weights." if ("/" in spec or "\\" in spec) else "")
        raise ValueError(f"unknown model {spec!r}; zoo models are {names}.{close_names(spec, names)}{hint} {_forms()}")
    if prefix == "zoo":
        if not rest:
            raise ValueError(f"model spec {spec!r} names no zoo model. {_forms()}")
        return load_zoo(rest)
    if prefix == "hf":
        if not rest:
            raise ValueError(f"model spec {spec!r} names no folder: write hf:/path/to/hf_clip_folder")
        return load_hf(rest)
    if prefix == "hf-blip":
        if not rest:
            raise ValueError(f"model spec {spec!r} names no folder: write hf-blip:/path/to/blip_retrieval_folder")
        return load_hf_blip(rest)
    if prefix == "open_clip":
        arch, sep2, weights = rest.partition(":")
        if not arch or not sep2 or not weights:
            raise ValueError(f"model spec {spec!r} must be open_clip:ARCH:/path/to/weights.safetensors "
                             "(e.g. open_clip:ViT-B-32:/models/vit-b-32.safetensors)")
        return load_open_clip(arch, weights)
    prefixes = ["zoo", "hf", "hf-blip", "open_clip"]
    raise ValueError(f"unknown model prefix {prefix!r} in {spec!r}.{close_names(prefix.lower(), prefixes)} "
                     f"{_forms()}")


def load_fusion(spec: str) -> FusionModel:
    """Load the model named by ``spec`` (the forms of :func:`load_contrastive`) and require that it
    is a FusionModel (e.g. ``zoo:shapes-albef`` or ``hf-blip:/dir``)."""
    model = load_contrastive(spec)
    require_fusion(model, f"model {spec!r}")
    return model


def _zoo_available() -> list[str]:
    from .. import zoo

    return zoo.available()


def _register() -> None:
    for name, description in _zoo_recipes().items():
        register("models", f"zoo:{name}", description)(partial(load_zoo, name))
    register("models", "hf:<dir>", "a Hugging Face transformers CLIPModel folder (safetensors), "
             "e.g. hf:/models/clip-vit-base-patch32")(load_hf)
    register("models", "hf-blip:<dir>", "a Hugging Face transformers BlipForImageTextRetrieval folder (safetensors; "
             "a fusion model with ITC and ITM), e.g. hf-blip:/models/blip-itm-base-coco")(load_hf_blip)
    register("models", "open_clip:<arch>:<file>", "an open_clip architecture with local safetensors weights, "
             "e.g. open_clip:ViT-B-32:/models/vit-b-32.safetensors")(load_open_clip)


_register()


def schemes() -> dict[str, str]:
    """Registered model-name schemes and the form each takes (for spec checks)."""
    return {"zoo": "zoo:NAME", "hf": "hf:/path/to/dir", "hf-blip": "hf-blip:/path/to/dir",
            "open_clip": "open_clip:ARCH:/path/to/file"}


def load_model(spec: str, family: str | None = None):
    """Load the model named by ``spec``; ``family`` ("fusion") requires that family."""
    return load_fusion(spec) if family == "fusion" else load_contrastive(spec)
