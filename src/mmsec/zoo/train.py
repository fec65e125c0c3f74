"""Train a zoo model from its recipe and write its checkpoint and card (``mmsec zoo train NAME``).

A recipe's ``family`` names its checkpoint family (``contrastive`` by default), registered by the
module defining the model (:func:`mmsec.models.checkpoint.register_checkpoint_family`: TinyCLIP,
TinyALBEF). The trainer is looked up by that architecture's *model* family in :data:`ZOO_TRAINERS`:
``contrastive`` (:func:`~mmsec.train.contrastive.train_contrastive`) or ``fusion`` (ITC + ITM with
hard negatives, :func:`~mmsec.train.fusion.train_fusion`, plus ITM retrieval and binding metrics
on the card); ``diffusion`` recipes (a diffusers folder per model, :mod:`mmsec.zoo.diffusion`) train, measure
and write themselves. A new zoo architecture of an existing model family is one
``register_checkpoint_family`` call; a new model family adds one :func:`register_zoo_trainer`.

Training writes to the user zoo (:func:`mmsec.zoo.user_dir`: ``$MMSEC_ZOO_DIR`` or ``./mmsec-zoo``) or to
``out_dir``, never into the package's shipped checkpoints unless ``overwrite_shipped=True``
(``mmsec zoo train NAME --overwrite-shipped``), which logs a warning naming what it replaces.
"""

from __future__ import annotations

import json
import logging
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from ..data.scenes import STREAM_END
from ..data.shapes import CAPTION_TEMPLATES, COLORS, POSITIONS, SHAPES, SIZES, TEXTURES, Scene, ShapesWorld
from ..models.checkpoint import checkpoint_families, save_checkpoint
from ..models.tokenizer import WordTokenizer
from ..train.classifier import OUTLIER, ClassifierTrainConfig, shapes_outliers, train_classifier
from ..train.contrastive import TrainConfig, train_contrastive
from ..train.fusion import FusionBatch, FusionTrainConfig, train_fusion
from ..version import __version__
from . import CHECKPOINTS, is_shipped_dir, load_recipe, user_dir
from .diffusion import train_diffusion_recipe
from .evaluate import (
    binding_accuracy,
    classifier_metrics,
    retrieval,
    retrieval_itm,
    true_captions,
    zeroshot_accuracy,
)

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


def false_caption(scene: Scene, template: int, rng: random.Random) -> str | None:
    """Caption ``template`` of ``scene`` made false by one attribute edit: the two objects' colours
    or shapes swapped (a binding error), or the primary object's colour, size or position changed.
    None when no edit changes that template's text."""
    others = lambda options, current: [o for o in options if o != current]  # noqa: E731
    edits = [replace(scene, color=rng.choice(others(list(COLORS), scene.color))),
             replace(scene, size=rng.choice(others(SIZES, scene.size))),
             replace(scene, position=rng.choice(others(POSITIONS, scene.position)))]
    if scene.second is not None:
        (shape2, color2) = scene.second
        edits += [replace(scene, color=color2, second=(shape2, scene.color)),
                  replace(scene, shape=shape2, second=(scene.shape, color2))]
    truth = true_captions(scene)
    candidates = [c for c in (e.captions()[template] for e in edits) if c not in truth]
    return rng.choice(candidates) if candidates else None


def fusion_batches(world: ShapesWorld, batch_size: int, seed: int):
    """``batches(step)`` for the fusion trainer: fresh train scenes and a random caption each (as
    :func:`caption_batches`), the (B, B) matrix of pairs whose caption is true of the image (never
    drawn as hard negatives), and one :func:`false_caption` per image (an extra ITM negative)."""

    def batches(step: int) -> FusionBatch:
        b = world.batch("train", step * batch_size, batch_size)
        rng = random.Random(seed * 1_000_003 + step)
        templates = [rng.randrange(len(caps)) for caps in b.captions]
        captions = [caps[k] for caps, k in zip(b.captions, templates, strict=True)]
        truth = [true_captions(s) for s in b.scenes]
        positives = torch.tensor([[c in t for c in captions] for t in truth])  # (B, B)
        negatives = [false_caption(s, k, rng) for s, k in zip(b.scenes, templates, strict=True)]
        return FusionBatch(b.pixels(), captions, positives, negatives)

    return batches


@dataclass
class RecipeStart:
    """What training a zoo recipe starts from: the seeded initial model, its world and train settings."""

    seed: int
    family: str
    config: object  # the family's model config
    model: torch.nn.Module
    world: ShapesWorld
    batch_size: int
    train: dict  # the recipe's train section without batch_size, steps overridden


def recipe_start(recipe: dict, name: str, steps: int | None = None) -> RecipeStart:
    """Seed torch and build a recipe's initial model, training world and settings (``steps`` overrides
    the recipe's, with the warm-up shortened to at most a tenth of the run, as for smoke tests)."""
    seed = int(recipe["seed"])
    torch.manual_seed(seed)
    family = recipe.get("family", "contrastive")
    known = checkpoint_families()
    if family not in known:
        raise ValueError(f"recipe {name}: family must be one of {sorted(known)}, got {family!r}")
    arch = known[family]
    # Configs with a text tower get the shapes world's vocabulary.
    vocab = {"vocab": shapes_vocabulary()} if "vocab" in getattr(arch.config, "__dataclass_fields__", {}) else {}
    cfg = arch.config.from_dict({**recipe["model"], **vocab})
    model = arch.model(cfg)  # right after seeding: the initial weights depend on nothing else
    data = recipe["data"]
    world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"],
                        second_object_prob=data["second_object_prob"])
    t = dict(recipe["train"])
    batch_size = int(t.pop("batch_size"))
    if steps is not None:
        t["steps"] = steps
        t["warmup"] = min(t["warmup"], max(1, steps // 10))
    return RecipeStart(seed, family, cfg, model, world, batch_size, t)


@dataclass(frozen=True)
class ZooTrainer:
    """How the zoo trains, and what more it measures, for the models of one model family.

    ``train(start, name, quiet)`` trains ``start.model`` in place and returns (its train config, with
    ``steps``, and its log, with ``seconds`` and ``losses``); ``metrics(model, world, eval_cfg)``
    returns the card's family-specific metrics on the retrieval world (beyond zero-shot accuracy and
    retrieval recall, measured for every model); ``card(log)`` the family-specific card entries. A family
    that zero-shot accuracy and retrieval cannot score (no text tower: a classifier, a diffusion model)
    gives ``evaluate(model, data, eval_cfg)`` instead, the card's whole metrics. A family whose models are
    folders, not one mmsec checkpoint (diffusers layout: the diffusion models), gives only
    ``write(recipe, name, out, steps, quiet) -> card``, which builds, trains, measures and writes the model
    and its card itself.
    """

    train: Callable[[RecipeStart, str, bool], tuple] | None = None
    metrics: Callable[[nn.Module, ShapesWorld, dict], dict] = lambda model, world, eval_cfg: {}
    card: Callable[[object], dict] = lambda run_log: {}
    # For a family without text (a classifier, a diffusion model): evaluate(model, recipe data section,
    # eval_cfg) -> the card's metrics, in place of zero-shot accuracy, retrieval and ``metrics``.
    evaluate: Callable[[nn.Module, dict, dict], dict] | None = None
    write: Callable[[dict, str, Path, int | None, bool], dict] | None = None


ZOO_TRAINERS: dict[str, ZooTrainer] = {}


def register_zoo_trainer(family: str, trainer: ZooTrainer) -> None:
    """Register how the zoo trains models of model family ``family`` (``contrastive``, ``fusion``, ...)."""
    if family in ZOO_TRAINERS and ZOO_TRAINERS[family] is not trainer:
        raise ValueError(f"a zoo trainer for model family {family!r} is registered twice")
    ZOO_TRAINERS[family] = trainer


def zoo_trainer(checkpoint_family: str, name: str) -> ZooTrainer:
    """The trainer of recipe ``name`` whose checkpoint family is ``checkpoint_family``."""
    family = checkpoint_families()[checkpoint_family].family
    if family not in ZOO_TRAINERS:
        raise ValueError(f"recipe {name}: the zoo has no trainer for {family!r} models (checkpoint family "
                         f"{checkpoint_family!r}); trainers exist for {sorted(ZOO_TRAINERS)}. "
                         "Add one with mmsec.zoo.train.register_zoo_trainer")
    return ZOO_TRAINERS[family]


def _train_contrastive(start: RecipeStart, name: str, quiet: bool) -> tuple:
    train_cfg = TrainConfig(**start.train)
    run_log = train_contrastive(start.model, caption_batches(start.world, start.batch_size, start.seed), train_cfg,
                                desc=f"training {name}", quiet=quiet)
    return train_cfg, run_log


def _train_fusion(start: RecipeStart, name: str, quiet: bool) -> tuple:
    train_cfg = FusionTrainConfig(**start.train, seed=start.seed)
    run_log = train_fusion(start.model, fusion_batches(start.world, start.batch_size, start.seed), train_cfg,
                           desc=f"training {name}", quiet=quiet)
    return train_cfg, run_log


def _fusion_metrics(model: nn.Module, world: ShapesWorld, eval_cfg: dict) -> dict:
    metrics = retrieval_itm(model, world, eval_cfg["n_retrieval"], k=eval_cfg.get("itm_k", 16))
    metrics.update(binding_accuracy(model, world, eval_cfg.get("n_binding", 500)))
    return metrics


def _fusion_card(run_log) -> dict:
    return {"final_itc_loss": round(run_log.itc_losses[-1], 4), "final_itm_loss": round(run_log.itm_losses[-1], 4)}


def labelled_batches(world: ShapesWorld, batch_size: int, outliers: int = 0, seed: int = 0):
    """``batches(step)`` for the classifier trainer: fresh train scenes each step with their class labels,
    from train index 0, wrapping around before :data:`~mmsec.data.scenes.STREAM_END` (the named scene
    ranges above it stay unseen). With ``outliers`` > 0, that many images of no class are appended
    (label :data:`~mmsec.train.classifier.OUTLIER`; :func:`~mmsec.train.classifier.shapes_outliers`, made
    from the step's own scenes and noise seeded by ``seed`` and the step)."""
    if not 0 <= 2 * outliers <= batch_size:
        raise ValueError(f"outliers_per_batch must be in [0, batch_size / 2 = {batch_size // 2}], got {outliers}")
    per_pass = STREAM_END // batch_size

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (step % per_pass) * batch_size
        b = world.batch("train", start, batch_size)
        if not outliers:
            return b.pixels(), b.labels
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        extra = shapes_outliers(world, "train", start, outliers, gen)
        return (torch.cat([b.pixels(), extra]),
                torch.cat([b.labels, torch.full((outliers,), OUTLIER, dtype=torch.long)]))

    return batches


def _train_classifier(start: RecipeStart, name: str, quiet: bool) -> tuple:
    settings = dict(start.train)
    outliers = int(settings.pop("outliers_per_batch", 0))
    train_cfg = ClassifierTrainConfig(**settings)
    run_log = train_classifier(start.model, labelled_batches(start.world, start.batch_size, outliers, start.seed),
                               train_cfg, desc=f"training {name}", quiet=quiet)
    return train_cfg, run_log


def _classifier_evaluate(model: nn.Module, data: dict, eval_cfg: dict) -> dict:
    world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"],
                        second_object_prob=data["second_object_prob"])
    return classifier_metrics(model, world, eval_cfg["n_classification"])


def _classifier_card(run_log) -> dict:
    last = run_log.accuracies[-20:]
    return {"final_train_batch_accuracy": round(sum(last) / len(last), 4)}


register_zoo_trainer("contrastive", ZooTrainer(_train_contrastive))
register_zoo_trainer("fusion", ZooTrainer(_train_fusion, _fusion_metrics, _fusion_card))
register_zoo_trainer("diffusion", ZooTrainer(write=train_diffusion_recipe))
register_zoo_trainer("classifier", ZooTrainer(_train_classifier, card=_classifier_card, evaluate=_classifier_evaluate))


def output_dir(out_dir: str | Path | None = None, overwrite_shipped: bool = False) -> Path:
    """Where :func:`train_recipe` writes: ``out_dir``, else the user zoo (:func:`mmsec.zoo.user_dir`); the
    package's shipped checkpoints (:data:`mmsec.zoo.CHECKPOINTS`) only with ``overwrite_shipped``.

    A ValueError names the folder when ``out_dir`` is the shipped zoo without ``overwrite_shipped``, or
    another folder with it.
    """
    if out_dir is None or str(out_dir) == "":
        out = CHECKPOINTS if overwrite_shipped else user_dir()
    else:
        out = Path(out_dir)
    shipped = is_shipped_dir(out)
    if shipped and not overwrite_shipped:
        where = "out_dir (--out)" if out_dir else "the user zoo ($MMSEC_ZOO_DIR)"
        raise ValueError(f"{where} is {out}, the package's shipped zoo: training would replace the checkpoints that "
                         "ship with mmsec. Write elsewhere (the default is ./mmsec-zoo), or pass --overwrite-shipped "
                         "(overwrite_shipped=True) if you mean to re-train a shipped model")
    if overwrite_shipped and not shipped:
        raise ValueError(f"--overwrite-shipped (overwrite_shipped=True) replaces the package's shipped checkpoints in "
                         f"{CHECKPOINTS}, but the output folder is {out}: drop --out, or drop --overwrite-shipped")
    return out


def train_recipe(name: str, out_dir: str | Path | None = None, steps: int | None = None,
                 quiet: bool = False, overwrite_shipped: bool = False) -> dict:
    """Train zoo model ``name`` and write ``NAME.safetensors`` (or the folder ``NAME/`` of a diffusion model) +
    ``NAME.json`` to ``out_dir`` (default: the
    user zoo, :func:`mmsec.zoo.user_dir`); into the package's shipped zoo only with ``overwrite_shipped``
    (see :func:`output_dir`), with a warning naming the files it replaces.

    ``steps`` overrides the recipe (for smoke tests); the card records what was actually run.
    Returns the card.
    """
    recipe = load_recipe(name)
    out = output_dir(out_dir, overwrite_shipped)
    folder_trainer = ZOO_TRAINERS.get(recipe.get("family", ""))
    if folder_trainer is not None and folder_trainer.write is None:
        folder_trainer = None  # (a single-file model)
    if overwrite_shipped:
        smoke = (f" with {steps} steps instead of the recipe's {recipe['train']['steps']} (a smoke run)"
                 if steps is not None and steps != recipe["train"]["steps"] else "")
        log.warning("overwriting the shipped zoo checkpoint %s and its card%s (--overwrite-shipped)",
                    out / name if folder_trainer is not None else out / f"{name}.safetensors", smoke)
    if folder_trainer is not None:  # a folder model (diffusers layout)
        return folder_trainer.write(recipe, name, out, steps, quiet)
    start = recipe_start(recipe, name, steps)
    seed, family, cfg, model, data = start.seed, start.family, start.config, start.model, recipe["data"]
    trainer = zoo_trainer(family, name)
    cpu_start = time.process_time()  # CPU seconds: comparable across machines busy with other work
    train_cfg, run_log = trainer.train(start, name, quiet)
    train_cpu_seconds = time.process_time() - cpu_start

    eval_cfg = recipe["eval"]
    if trainer.evaluate is not None:
        metrics = trainer.evaluate(model, data, eval_cfg)
    else:
        eval_world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"], second_object_prob=0.0)
        metrics = zeroshot_accuracy(model, eval_world, eval_cfg["n_classification"])
        ret_world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"],
                                second_object_prob=data["second_object_prob"])
        metrics.update(retrieval(model, ret_world, eval_cfg["n_retrieval"]))
        metrics.update(trainer.metrics(model, ret_world, eval_cfg))

    meta = {"config": json.dumps(cfg.to_dict()), "name": name, "family": family, "mmsec_version": __version__}
    sha = save_checkpoint(out / f"{name}.safetensors", model.state_dict(), meta)
    card = {
        "name": name,
        "description": recipe.get("description", ""),
        "version": __version__,
        "sha256": sha,
        "seed": seed,
        "family": family,
        "recipe": recipe,
        "steps_run": train_cfg.steps,
        "data": {"world": "shapes", **data, "eval_split": "test"},
        "metrics": metrics,
        "train_seconds": round(run_log.seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "final_loss": round(run_log.losses[-1], 4),
        **trainer.card(run_log),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_on": {"torch": torch.__version__, "python": platform.python_version(),
                       "threads": torch.get_num_threads(), "date": datetime.now(timezone.utc).date().isoformat()},
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("trained %s: %s", name, metrics)
    return card
