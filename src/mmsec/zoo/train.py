"""Train a zoo model from its recipe and write its checkpoint and card (``mmsec zoo train NAME``)."""

from __future__ import annotations

import json
import logging
import platform
import random
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..data.shapes import CAPTION_TEMPLATES, COLORS, POSITIONS, SHAPES, SIZES, TEXTURES, ShapesWorld
from ..models.tiny_clip import TinyCLIP, TinyCLIPConfig
from ..models.tokenizer import WordTokenizer
from ..train.contrastive import TrainConfig, train_contrastive
from ..version import __version__
from . import CHECKPOINTS, load_recipe
from .checkpoint import save_checkpoint
from .evaluate import retrieval, zeroshot_accuracy

log = logging.getLogger(__name__)


def shapes_vocabulary() -> list[str]:
    """Every word the shapes world can say, plus prompt words users commonly write."""
    corpus = list(CAPTION_TEMPLATES) + list(SHAPES) + list(COLORS) + list(SIZES) + list(POSITIONS) + list(TEXTURES)
    corpus += ["and", "an", "image", "of", "the", "with", "object", "shape", "colour", "color"]
    return WordTokenizer.from_corpus(corpus).vocab


def caption_batches(world: ShapesWorld, batch_size: int, seed: int):
    """``batches(step)`` for the contrastive trainer: fresh train scenes each step, a random caption each."""

    def batches(step: int) -> tuple[torch.Tensor, list[str]]:
        b = world.batch("train", step * batch_size, batch_size)
        rng = random.Random(seed * 1_000_003 + step)
        return b.pixels(), [rng.choice(caps) for caps in b.captions]

    return batches


def train_recipe(name: str, out_dir: str | Path | None = None, steps: int | None = None,
                 quiet: bool = False) -> dict:
    """Train zoo model ``name`` and write ``NAME.safetensors`` + ``NAME.json`` to ``out_dir``.

    ``steps`` overrides the recipe (for smoke tests); the card records what was actually run.
    Returns the card.
    """
    recipe = load_recipe(name)
    out = Path(out_dir) if out_dir else CHECKPOINTS
    seed = int(recipe["seed"])
    torch.manual_seed(seed)
    cfg = TinyCLIPConfig.from_dict({**recipe["model"], "vocab": shapes_vocabulary()})
    model = TinyCLIP(cfg)
    data = recipe["data"]
    world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"],
                        second_object_prob=data["second_object_prob"])
    t = dict(recipe["train"])
    batch_size = int(t.pop("batch_size"))
    if steps is not None:
        t["steps"] = steps
        t["warmup"] = min(t["warmup"], max(1, steps // 10))
    train_cfg = TrainConfig(**t)
    run_log = train_contrastive(model, caption_batches(world, batch_size, seed), train_cfg,
                                desc=f"training {name}", quiet=quiet)

    eval_cfg = recipe["eval"]
    eval_world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"], second_object_prob=0.0)
    metrics = zeroshot_accuracy(model, eval_world, eval_cfg["n_classification"])
    ret_world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"],
                            second_object_prob=data["second_object_prob"])
    metrics.update(retrieval(model, ret_world, eval_cfg["n_retrieval"]))

    meta = {"config": json.dumps(cfg.to_dict()), "name": name, "mmsec_version": __version__}
    sha = save_checkpoint(out / f"{name}.safetensors", model.state_dict(), meta)
    card = {
        "name": name,
        "description": recipe.get("description", ""),
        "version": __version__,
        "sha256": sha,
        "seed": seed,
        "recipe": recipe,
        "steps_run": train_cfg.steps,
        "data": {"world": "shapes", **data, "eval_split": "test"},
        "metrics": metrics,
        "train_seconds": round(run_log.seconds, 1),
        "final_loss": round(run_log.losses[-1], 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_on": {"torch": torch.__version__, "python": platform.python_version(),
                       "threads": torch.get_num_threads(), "date": datetime.now(timezone.utc).date().isoformat()},
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("trained %s: %s", name, metrics)
    return card
