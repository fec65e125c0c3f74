"""The zoo's model loader: ``zoo:NAME`` (a shipped model, else one in the user zoo ``./mmsec-zoo`` or
``$MMSEC_ZOO_DIR``), a bare ``NAME``, ``zoo:/path/NAME.safetensors`` (the suffix may be left out).

Registered with :func:`mmsec.models.loaders.register_loader` when this module is imported, so the
models layer below knows no zoo: ``mmsec.models.load_model("zoo:...")`` works once the built-ins are
loaded (``mmsec.builtins.load()``, or ``mmsec.load_model``, which loads them); in Python,
``mmsec.zoo.load_model(NAME)`` loads a zoo model directly.
"""

from __future__ import annotations

import functools
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from ..fingerprint import combine, file_sha256, tree_sha256
from ..models.base import FAMILIES
from ..models.checkpoint import DEFAULT_CHECKPOINT_FAMILY, checkpoint_families
from ..models.loaders import register_loader
from ..registry import register

RECIPES = Path(__file__).resolve().parent / "recipes"
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def zoo_recipes() -> dict[str, tuple[str, str | None]]:
    """Zoo recipe name -> (its one-line description, the model family it declares), read from the files
    (parsed again only when a recipe file or the registered checkpoint families change: every spec check
    asks for it)."""
    files = tuple((f.stem, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(RECIPES.glob("*.yaml")))
    arch = checkpoint_families()
    return dict(_parse_recipes(files, tuple(sorted((k, v.family) for k, v in arch.items()))))


@functools.lru_cache(maxsize=4)
def _parse_recipes(files: tuple, arch: tuple) -> tuple[tuple[str, tuple[str, str | None]], ...]:
    families = dict(arch)
    out = []
    for stem, _, _ in files:
        recipe = yaml.safe_load((RECIPES / f"{stem}.yaml").read_text()) or {}
        name = str(recipe.get("family", DEFAULT_CHECKPOINT_FAMILY))
        fam = families[name] if name in families else (name if name in FAMILIES else None)
        out.append((stem, (str(recipe.get("description", "zoo model")), fam)))
    return tuple(out)


def zoo_names() -> list[str]:
    """Zoo models that can be named: recipes, shipped checkpoints and the user zoo's (:func:`mmsec.zoo.user_trained`)."""
    from . import available, user_trained

    return sorted(set(zoo_recipes()) | set(available()) | set(user_trained()))


def load_zoo(name: str) -> Any:
    """A zoo model by name, or a zoo-format checkpoint file (``.../NAME.safetensors``, card beside it)."""
    from . import load_model, load_model_file

    if not name:
        raise ValueError("model spec 'zoo:' names no zoo model: write zoo:NAME (e.g. zoo:shapes-clip-resnet) or "
                         "zoo:/path/to/NAME.safetensors")
    if "/" in name or "\\" in name or "." in name:  # a checkpoint file, not a shipped name
        return load_model_file(name)
    return load_model(name)


def zoo_fingerprint(rest: str) -> str:
    """The checkpoint's bytes (its card's sha256 when it has one: loading checks the file against it) and its
    recipe's (a cell that pre-trains from the recipe depends on it)."""
    from . import read_card

    if "/" in rest or "\\" in rest or "." in rest:
        weights = Path(rest)
        card, recipe = weights.with_suffix(".json"), None
    else:
        folder = CHECKPOINTS / rest  # a folder model (diffusers layout)
        weights = folder if folder.is_dir() else CHECKPOINTS / f"{rest}.safetensors"
        card, recipe = CHECKPOINTS / f"{rest}.json", RECIPES / f"{rest}.yaml"
    parts = []
    if weights.is_file() or weights.is_dir():
        sha = read_card(card).get("sha256") if card.is_file() else None
        parts.append(sha or (file_sha256(weights) if weights.is_file() else tree_sha256(weights)))
    if recipe is not None and recipe.is_file():
        parts.append(file_sha256(recipe))
    if not parts:
        raise FileNotFoundError(f"no zoo checkpoint or recipe for {rest!r}")
    return combine(*parts)


def _family_of(rest: str) -> str | None:
    return zoo_recipes().get(rest, (None, None))[1]


def _register() -> None:
    register_loader("zoo", load_zoo, family=None, name="zoo:<path>.safetensors",
                    form="zoo:NAME (e.g. zoo:shapes-clip-resnet, or the bare NAME) or zoo:/path/to/NAME.safetensors",
                    summary="a zoo-format checkpoint on disk, its card NAME.json beside it (the family is read "
                            "from its metadata), e.g. zoo:/models/my-clip.safetensors",
                    names=zoo_names, family_of=_family_of, fingerprint=zoo_fingerprint)
    for name, (description, fam) in zoo_recipes().items():
        register("models", f"zoo:{name}", description, family=fam)(partial(load_zoo, name))


_register()

__all__ = ["load_zoo", "zoo_fingerprint", "zoo_names", "zoo_recipes"]
