"""A supervised classifier trained on a fixed, label-poisoned training set: the victim of PSBD.

* :func:`poison_labelled` -- BadNets-style all-to-one poisoning of a labelled image set (Gu, Dolan-Gavitt
  and Garg, "BadNets", arXiv 2017): ``round(rate * N)`` images, drawn without replacement among those not
  of the target class, are stamped with a trigger (:mod:`mmsec.attacks.backdoor.triggers`) and relabelled
  to the target, in place (the set keeps its size). 10% is the rate PSBD's authors default to
  (``poisoning_ratio=0.1``); they draw among all images, this among the non-target ones so that every
  poisoned sample has its label changed.
* :func:`epoch_batches` -- ``batches(step)`` for :func:`~mmsec.train.classifier.train_classifier`: epochs
  over the fixed set, each a fresh seeded shuffle (a sample detector needs a fixed set to score).
* :func:`train_on_set` -- both together: trains a model in place on a fixed labelled set.

Nothing here knows the world the images come from: the caller brings pixels and labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.backdoor.triggers import Trigger
from ..checks import check_indices, check_int, check_pixels
from .classifier import ClassifierTrainConfig, ClassifierTrainLog, train_classifier


@dataclass
class LabelledPoisoning:
    """A label-poisoned training set and its ground truth.

    Attributes:
        pixels: (N, 3, H, W) the training images, the poisoned ones stamped.
        labels: (N,) the training labels, the poisoned ones set to ``target``.
        true_labels: (N,) the labels before poisoning.
        poisoned: (N,) bool, True at the poisoned samples (the detectors' ground truth).
        target: the target class index.
        trigger: the trigger's record (``Trigger.to_dict()``).
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    true_labels: torch.Tensor
    poisoned: torch.Tensor
    target: int
    trigger: dict


def poison_labelled(pixels: torch.Tensor, labels: torch.Tensor, trigger: Trigger, target: int,
                    rate: float = 0.1, seed: int = 0) -> LabelledPoisoning:
    """Stamp ``trigger`` on ``round(rate * N)`` non-target images and relabel them ``target`` (new tensors)."""
    check_pixels(pixels, "pixels")
    check_indices("labels", labels, pixels.shape[0])
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger (e.g. PatchTrigger()), got {type(trigger).__name__}")
    check_int("target", target, low=0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"rate must be a poisoning rate in [0, 1), got {rate!r}")
    candidates = torch.nonzero(labels != target).flatten()
    count = round(rate * pixels.shape[0])
    if count > candidates.numel():
        raise ValueError(f"rate={rate} asks for {count} poisoned images but only {candidates.numel()} are not of "
                         f"target class {target}")
    order = torch.randperm(candidates.numel(), generator=torch.Generator().manual_seed(seed))
    chosen = candidates[order[:count]].sort().values
    out_pixels, out_labels = pixels.clone(), labels.clone()
    if count:
        out_pixels[chosen] = trigger(pixels[chosen], seed)
        out_labels[chosen] = target
    poisoned = torch.zeros(pixels.shape[0], dtype=torch.bool)
    poisoned[chosen] = True
    return LabelledPoisoning(out_pixels, out_labels, labels.clone(), poisoned, int(target), trigger.to_dict())


def epoch_batches(pixels: torch.Tensor, labels: torch.Tensor, batch_size: int,
                  seed: int = 0) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batches(step)``: consecutive slices of a seeded shuffle of the set, reshuffled each epoch (the last
    batch of an epoch may be smaller)."""
    check_int("batch_size", batch_size)
    n = pixels.shape[0]
    per_epoch = -(-n // batch_size)
    orders: dict[int, torch.Tensor] = {}

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        idx = orders[epoch][i * batch_size:(i + 1) * batch_size]
        return pixels[idx], labels[idx]

    return batches


def train_on_set(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, cfg: ClassifierTrainConfig,
                 batch_size: int = 64, seed: int = 0, quiet: bool = True) -> ClassifierTrainLog:
    """Train ``model`` in place for ``cfg.steps`` steps on epochs over (``pixels``, ``labels``); left in eval mode."""
    check_pixels(pixels, "pixels")
    check_indices("labels", labels, pixels.shape[0])
    return train_classifier(model, epoch_batches(pixels, labels, batch_size, seed), cfg,
                            desc="training on a fixed set", quiet=quiet)


__all__ = ["LabelledPoisoning", "epoch_batches", "poison_labelled", "train_on_set"]
