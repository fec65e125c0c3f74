"""Building blocks several task plugins share: the evaluation data, prompts, methods by name, defenses.

Nothing here knows a task by name; each function takes the cell (a plain dict) and the
:class:`~mmsec.runs.context.CellContext`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ...methods import build
from ..cells import derive_seed
from ..context import artifact_entry

# Class-prompt templates for image folders (CLIP-style; the shapes world has its own prompts).
IMAGEFOLDER_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}")


def first_n(dataset: Any, n: int) -> Any:
    """The first ``n`` samples of an in-memory data set (pixels, labels, class names, captions)."""
    labels, captions = getattr(dataset, "labels", None), getattr(dataset, "captions", None)
    return SimpleNamespace(pixels=dataset.pixels[:n], labels=None if labels is None else labels[:n],
                           class_names=getattr(dataset, "class_names", None),
                           captions=None if captions is None else captions[:n])


def first_caption(c: Any) -> str:
    return c if isinstance(c, str) else c[0]


def evaluation_data(ctx: Any, data: dict, image_size: int) -> Any:
    """The cell's ``data`` block, loaded and cut to ``data.n`` (a clear error when the set is smaller)."""
    dataset = ctx.load_data(data, image_size)
    n = data.get("n")
    if n is not None:
        if n > len(dataset.pixels):
            raise ValueError(f"data.n = {n} but data set {data['name']!r} has only {len(dataset.pixels)} images")
        dataset = first_n(dataset, n)
    return dataset


def class_prompts(dataset: Any, data_name: str) -> list[list[str]]:
    """Zero-shot prompts per class: the shapes world's own, else CLIP-style templates over class names."""
    if data_name == "shapes":
        from ...data.shapes import zeroshot_prompts

        return zeroshot_prompts()
    if not getattr(dataset, "class_names", None) or getattr(dataset, "labels", None) is None:
        raise ValueError(f"zero-shot classification needs labels and class names, but data set {data_name!r} "
                         "has none (use task: retrieval for caption-only data)")
    names = [str(c).replace("_", " ") for c in dataset.class_names]
    return [[t.format(c) for t in IMAGEFOLDER_TEMPLATES] for c in names]


def build_method(kinds: tuple[str, ...], config: dict, where: str = "attack") -> tuple[Any, str]:
    """The method a cell's ``{name, params}`` names among ``kinds``: (object, its kind)."""
    from ... import registry

    entry = registry.find(config["name"], kinds)
    if entry is None:
        raise KeyError(f"{where}: {config['name']!r} is not registered as any of {list(kinds)}")
    return build(entry.kind, config, where), entry.kind


def image_size_of(model: Any) -> int:
    return int(getattr(model, "image_size", 32))


def choose_targets(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Deterministic targets, uniformly among the classes other than each sample's label."""
    if num_classes < 2:
        raise ValueError(f"a targeted attack needs at least 2 classes, got {num_classes}")
    gen = torch.Generator().manual_seed(derive_seed(seed, "targets"))
    shift = torch.randint(1, num_classes, labels.shape, generator=gen)  # (N,) in [1, C-1]
    return (labels + shift) % num_classes


def hardened(ctx: Any, cell: dict, defense_kinds: tuple[str, ...]) -> tuple[Any, float]:
    """The cell's model after its ``defense`` (a HardeningDefense), trained once and shared by the cells
    that differ only in the attack; persisted in the results folder when it keeps the model's
    architecture. Returns (model, the defense's training seconds; 0 without a defense)."""
    from ..context import Trained

    defense = cell.get("defense")
    if not defense:
        return ctx.load_model(cell["model"]), 0.0

    def train() -> Trained:
        model, seconds = apply_defense(ctx, ctx.load_model(cell["model"]), defense, int(cell["seed"]), defense_kinds)
        return Trained(model, {"seconds": seconds})

    key = {"hardened": cell["model"], "defense": defense, "seed": int(cell["seed"])}
    out = ctx.trained(key, train, base=cell["model"])
    return out.model, float(out.info["seconds"])


def apply_defense(ctx: Any, model: Any, defense: dict, seed: int,
                  defense_kinds: tuple[str, ...] = ("defenses",)) -> tuple[Any, float]:
    """A cell's ``defense`` (its plain-dict form) trained on ``model``: the new model and the seconds."""
    built, _ = build_method(defense_kinds, {"name": defense["name"], "params": defense["params"]}, "defense")
    data = ctx.load_data(defense["data"], image_size_of(model))
    prompts = class_prompts(data, defense["data"]["name"]) if getattr(data, "labels", None) is not None else None
    result = built(model, data, prompts=prompts, generator=torch.Generator().manual_seed(derive_seed(seed, "defense")))
    return result.model.eval(), float(result.seconds)


ROC_FILE = "roc.json"  # the ROC curves of a cell's detector (and its baseline), plotted by `mmsec report`
ROC_KIND = "roc_json"  # its artifact kind in the store


def write_roc(folder: Path, curves: list[dict]) -> dict:
    """``roc.json`` in ``folder``: ``{"curves": [...]}``, each curve a dict with ``metric`` (the stored AUROC it
    draws), ``label`` and :func:`mmsec.evaluation.detection.roc_points`' fields; returns its artifact record."""
    for c in curves:
        if not {"metric", "label", "fpr", "tpr", "auroc"} <= set(c):
            raise ValueError(f"a ROC curve needs metric, label, fpr, tpr and auroc, got keys {sorted(c)}")
    path = Path(folder) / ROC_FILE
    path.write_text(json.dumps({"curves": curves}, sort_keys=True) + "\n")
    return artifact_entry(ROC_KIND, path)


__all__ = ["IMAGEFOLDER_TEMPLATES", "ROC_FILE", "ROC_KIND", "apply_defense", "build_method", "choose_targets", "class_prompts",
           "evaluation_data", "first_caption", "first_n", "hardened", "image_size_of", "write_roc"]
