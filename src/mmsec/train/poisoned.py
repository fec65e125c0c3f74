"""Training on poisoned data: pre-training a zoo CLIP from scratch, fine-tuning, clean fine-tuning.

All three reuse :func:`~mmsec.train.contrastive.train_contrastive` (symmetric InfoNCE, CLIP's
AdamW, warm-up then cosine decay); only the ``batches(step)`` they hand it differ.

* :func:`pretrain_poisoned` -- a zoo contrastive recipe (default ``shapes-clip-resnet``) trained
  from scratch exactly as ``mmsec zoo train`` does (same seed, initialisation, fresh train-split
  scenes every step, one random caption each), with a poisoning attack applied to the stream
  (:meth:`~mmsec.attacks.backdoor.poisoning.PoisoningAttack.stream`). ``poisoner=None`` is the
  clean control: the shipped checkpoint's recipe run again (same data and initialisation; not
  guaranteed bit-identical to the shipped weights across machines and torch builds).
  ``steps`` overrides the recipe (tests), scaling the warm-up as ``train_recipe`` does.
* :func:`pretrain_pairs` -- the same recipe from scratch, but epochs over a fixed set of pairs
  (the setting of pre-training defenses such as RoCLIP, which work epoch by epoch on a data set),
  with a ``loss_fn`` hook.
* :func:`finetune_pairs` -- fine-tune a copy of a model on a fixed set of pairs
  (:class:`~mmsec.data.datasets.ImageTextData`): ``steps`` batches drawn epoch by epoch from a
  seeded shuffle, one random caption variant per pair. :func:`clean_finetune` is this on clean
  pairs (the persistence check of a backdoor, and the baseline of fine-tuning defenses);
  :func:`poisoned_finetune` poisons clean pairs with an attack first.

The input model is never modified: training runs on :func:`~mmsec.models.towers.trainable_copy`.
BatchNorm trains in train mode (batch statistics), as in pre-training; the returned model is in
eval mode.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks.backdoor.poisoning import PoisonedData, PoisoningAttack, PoisonRecord
from ..checks import check_budget, check_int, check_pixels, check_positive
from ..data.datasets import ImageTextData
from ..models.base import require_contrastive
from .contrastive import LossFn, TrainConfig, TrainLog, pair_clip_loss, train_contrastive


@dataclass
class TrainedModel:
    """A model trained by this module and what it was trained on.

    Attributes:
        model: the trained model (a new object, eval mode).
        log: per-step losses and wall time (``log.seconds``).
        config: the optimiser settings actually used.
        record: the poisoning record (None for clean training).
        extras: recipe name, batch size, data size, seed.
    """

    model: nn.Module
    log: TrainLog
    config: TrainConfig
    record: PoisonRecord | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Wall time of the training."""
        return self.log.seconds


# ------------------------------------------------------------------------------------------
# Pre-training from scratch on a (poisoned) stream of fresh shapes-world scenes
# ------------------------------------------------------------------------------------------
def pretrain_poisoned(poisoner: PoisoningAttack | None, recipe: str = "shapes-clip-resnet",
                      steps: int | None = None, quiet: bool = True) -> TrainedModel:
    """Train zoo ``recipe`` from scratch on its fresh-scene stream, poisoned by ``poisoner``.

    The rate (or count) of ``poisoner`` applies to the ``steps * batch_size`` pairs of the run.
    """
    from ..zoo import load_recipe
    from ..zoo.train import caption_batches, recipe_start

    if poisoner is not None and not isinstance(poisoner, PoisoningAttack):
        raise TypeError(f"poisoner must be a PoisoningAttack (e.g. PBCLBackdoor(...)) or None for the clean control, "
                        f"got {type(poisoner).__name__}")
    spec = load_recipe(recipe)
    family = spec.get("family", "contrastive")
    if family != "contrastive":
        raise ValueError(f"recipe {recipe!r} trains a {family!r} model; poisoned pre-training needs a contrastive "
                         "(CLIP) recipe such as 'shapes-clip-resnet'")
    # the same seed, initialisation, world and settings as `mmsec zoo train`
    start = recipe_start(spec, recipe, None if steps is None else check_int("steps", steps, 1))
    model, world, batch_size, t, seed = start.model, start.world, start.batch_size, start.train, start.seed
    cfg = TrainConfig(**t)
    batches = caption_batches(world, batch_size, seed)
    record = None
    if poisoner is not None:
        stream = poisoner.stream(batches, cfg.steps, batch_size)
        batches, record = stream, stream.record
    what = "clean" if record is None else f"{record.n_poisoned} poisoned pairs"
    log = train_contrastive(model, batches, cfg, desc=f"pre-training {recipe} ({what})", quiet=quiet)
    return TrainedModel(model.eval(), log, cfg, record,
                        {"recipe": recipe, "batch_size": batch_size, "pairs_seen": cfg.steps * batch_size,
                         "seed": seed})


def pairs_recipe(data: ImageTextData, recipe: str) -> tuple[dict, int]:
    """Zoo recipe ``recipe`` and its batch size, checked for pre-training from scratch on the pairs
    ``data``: a contrastive (CLIP) recipe, and at least one of its batches of pairs."""
    from ..zoo import load_recipe

    _check_pairs(data)
    spec = load_recipe(recipe)
    if spec.get("family", "contrastive") != "contrastive":
        raise ValueError(f"recipe {recipe!r} is not a contrastive (CLIP) recipe")
    batch_size = int(spec["train"]["batch_size"])
    if len(data) < batch_size:
        raise ValueError(f"data has {len(data)} pairs, fewer than one batch of recipe {recipe!r} ({batch_size})")
    return spec, batch_size


def pairs_start(data: ImageTextData, recipe: str, epochs: int) -> tuple[Any, int]:
    """What training zoo ``recipe`` from scratch for ``epochs`` passes over the pairs ``data`` starts
    from: the recipe's seeded initial model and settings (a ``RecipeStart``, its steps set to
    ``epochs * (len(data) // batch_size)``, the warm-up capped at a tenth of them) and its batch size.
    For pre-training defenses with a loop of their own (SafeCLIP), so they need not import the zoo."""
    from ..zoo.train import recipe_start

    epochs = check_int("epochs", epochs, 1)
    spec, batch_size = pairs_recipe(data, recipe)
    return recipe_start(spec, recipe, epochs * (len(data) // batch_size)), batch_size


def pretrain_pairs(data: ImageTextData, recipe: str = "shapes-clip-resnet", epochs: int = 12, seed: int = 0,
                   loss_fn: LossFn = pair_clip_loss, desc: str | None = None, quiet: bool = True) -> TrainedModel:
    """Train zoo ``recipe`` from scratch (its seed, initialisation, batch size, optimiser and schedule)
    for ``epochs`` passes over the fixed pairs ``data`` (:func:`pair_batches`, shuffled per epoch by
    ``seed``): ``epochs * (len(data) // batch_size)`` steps, the recipe's warm-up capped at a tenth of
    them. ``loss_fn`` is the CLIP loss unless a pre-training defense supplies its own."""
    from ..zoo.train import recipe_start

    epochs = check_int("epochs", epochs, 1)
    seed = check_int("seed", seed, 0)
    spec, batch_size = pairs_recipe(data, recipe)
    steps = epochs * (len(data) // batch_size)
    start = recipe_start(spec, recipe, steps)
    cfg = TrainConfig(**start.train)
    log = train_contrastive(start.model, pair_batches(data, batch_size, seed), cfg, quiet=quiet, loss_fn=loss_fn,
                            desc=desc or f"pre-training {recipe} on {len(data)} pairs")
    return TrainedModel(start.model.eval(), log, cfg, None,
                        {"recipe": recipe, "batch_size": batch_size, "pairs": len(data), "epochs": epochs,
                         "steps_per_epoch": len(data) // batch_size, "seed": seed})


# ------------------------------------------------------------------------------------------
# Fine-tuning on a fixed set of pairs
# ------------------------------------------------------------------------------------------
def pair_batches(data: ImageTextData, batch_size: int, seed: int):
    """``batches(step)`` over a fixed set of pairs: position ``p = step * B + j`` of the endless
    sequence of seeded per-epoch shuffles (epoch ``p // N``), one random caption variant per pair.
    A pure function of ``step``. ``B`` is capped at ``N``."""
    n = len(data)
    b = min(batch_size, n)
    perms: dict[int, torch.Tensor] = {}

    def perm(epoch: int) -> torch.Tensor:
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        return perms[epoch]

    def batches(step: int) -> tuple[torch.Tensor, list[str]]:
        pos = torch.arange(step * b, (step + 1) * b)
        idx = torch.stack([perm(int(p) // n)[int(p) % n] for p in pos])  # (B,)
        rng = random.Random(seed * 1_000_003 + step)
        captions = [rng.choice(data.captions[i]) for i in idx.tolist()]
        return data.pixels[idx], captions

    return batches


def _check_pairs(data: ImageTextData, name: str = "data") -> None:
    if not isinstance(data, ImageTextData):
        raise TypeError(f"{name} must be an ImageTextData (e.g. ShapesDataset('train', n=2000).to_data()), "
                        f"got {type(data).__name__}")
    if data.captions is None:
        raise ValueError(f"{name} has no captions: contrastive fine-tuning needs image-caption pairs")
    if len(data) < 2:
        raise ValueError(f"{name} must hold at least 2 pairs (a contrastive batch needs negatives), got {len(data)}")
    if any(not caps for caps in data.captions):
        raise ValueError(f"{name} has a pair without any caption")
    check_pixels(data.pixels, f"{name}.pixels")


def finetune_pairs(model: nn.Module, data: ImageTextData, steps: int, batch_size: int = 64, lr: float = 1e-4,
                   weight_decay: float = 0.1, warmup: int | None = None, grad_clip: float = 1.0, seed: int = 0,
                   desc: str = "contrastive fine-tuning", quiet: bool = True,
                   loss_fn: LossFn = pair_clip_loss) -> TrainedModel:
    """Fine-tune a copy of ``model`` contrastively on ``data`` for ``steps`` batches; ``model`` is untouched.

    Defaults: batch 64, lr 1e-4 (1/20 of the zoo's pre-training lr), weight decay 0.1 and gradient
    clipping 1 (as the zoo), warm-up 10% of the steps; the CLIP loss (``loss_fn``, see
    :func:`~mmsec.train.contrastive.train_contrastive`).
    """
    from ..models.towers import trainable_copy

    require_contrastive(model, "fine-tuning")
    _check_pairs(data)
    steps = check_int("steps", steps, 1)
    batch_size = check_int("batch_size", batch_size, 2)
    seed = check_int("seed", seed, 0)
    lr = check_positive("lr", lr, 1.0, hint=" (AdamW learning rate, e.g. 1e-4)")
    weight_decay = check_budget("weight_decay", weight_decay, 0.0, 10.0, hint=" (AdamW decoupled weight decay)")
    warmup = max(1, steps // 10) if warmup is None else check_int("warmup", warmup, 0)
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, warmup=warmup, grad_clip=grad_clip)
    tuned = trainable_copy(model)
    log = train_contrastive(tuned, pair_batches(data, batch_size, seed), cfg, desc=desc, quiet=quiet, loss_fn=loss_fn)
    return TrainedModel(tuned.eval(), log, cfg, None,
                        {"batch_size": min(batch_size, len(data)), "pairs": len(data), "seed": seed})


def clean_finetune(model: nn.Module, data: ImageTextData, steps: int, batch_size: int = 64, lr: float = 1e-4,
                   seed: int = 0, quiet: bool = True, **kwargs: Any) -> TrainedModel:
    """Fine-tune a copy of ``model`` on clean pairs for a budget of ``steps`` batches (see
    :func:`finetune_pairs`): does a backdoor persist through it, and the baseline of fine-tuning
    defenses. Returns a new model; ``model`` is untouched."""
    return finetune_pairs(model, data, steps, batch_size=batch_size, lr=lr, seed=seed,
                          desc="clean fine-tuning", quiet=quiet, **kwargs)


def poisoned_finetune(model: nn.Module, poisoner: PoisoningAttack, data: ImageTextData, steps: int,
                      batch_size: int = 64, lr: float = 1e-4, seed: int = 0, quiet: bool = True,
                      **kwargs: Any) -> TrainedModel:
    """Poison the clean pairs ``data`` with ``poisoner``, then fine-tune a copy of ``model`` on them
    (see :func:`finetune_pairs`). The result carries the poisoning record."""
    if not isinstance(poisoner, PoisoningAttack):
        raise TypeError(f"poisoner must be a PoisoningAttack (e.g. PBCLBackdoor(...)), got {type(poisoner).__name__}")
    poisoned: PoisonedData = poisoner(data)
    out = finetune_pairs(model, poisoned.data, steps, batch_size=batch_size, lr=lr, seed=seed,
                         desc="poisoned fine-tuning", quiet=quiet, **kwargs)
    out.record = poisoned.record
    return out


__all__ = ["TrainedModel", "clean_finetune", "finetune_pairs", "pair_batches", "pairs_recipe", "pairs_start",
           "poisoned_finetune", "pretrain_pairs", "pretrain_poisoned"]
