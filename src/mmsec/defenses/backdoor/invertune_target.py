"""InverTune, step 1: name the backdoor's target class from a universal adversarial perturbation.

Paper: Mengyuan Sun, Yu Li, Yuchen Liu, Bo Du, Yunjie Ge, "InverTune: Removing Backdoors from
Multimodal Contrastive Learning Models via Trigger Inversion and Activation Tuning", arXiv
2506.12411, 2025 (code: github.com/Goodman-liyu/InverTune, ``TargetLabel.py``). The whole
defense is :mod:`mmsec.defenses.backdoor.invertune`.

Observation: a backdoored CLIP has a short path from many images to the target's region of the
embedding space. An *untargeted* universal perturbation, learnt only to push images away from
their own clean embeddings and captions, falls into that path: under it the zero-shot predictions
pile up on the target. The target is the candidate class whose prediction frequency rises most::

    y* = argmax_y  P_adv(y) - P_clean(y)

with ``P`` the fraction of the defender's clean images predicted as ``y`` (zero-shot, against the
candidate classes' prompts) without / with the perturbation. The paper reports a +97.23% rise
for its "mushroom" target; a clean model gives no such winner.

The paper's perturbation is AdvCLIP's (Zhou et al., ACM MM 2023: a GAN-made universal patch, 3%
of the area, bottom-right), :class:`~mmsec.attacks.universal.AdvCLIP` with its defaults, the
default of :class:`~.invertune.InverTune`. Any object with the same call works, e.g.
:class:`~mmsec.attacks.universal.UAPPatch` (the same objective without the GAN): measured on the
zoo ResNet with 1,024 clean images, UAPPatch named a BadEncoder target (+0.98) but not a 1% PBCL
patch backdoor's ("cyan ring" +0.17; the target +0.04), where AdvCLIP named it (+0.29, margin
0.16); the clean model's largest rise under UAPPatch was +0.06. Departures: the defender's
images carry no captions, so each image is given its candidate class prompts of the model's own
clean zero-shot prediction (the text term of AdvCLIP's loss needs a caption); the score is the
absolute rise (the code prints absolute and relative rises; absolute is the paper's ``P_adv -
P_clean``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ...checks import check_pixels
from ...models.zeroshot import ZeroShotClassifier


class UniversalPerturbation(Protocol):
    """``uap(model, (pixels, captions), generator) -> result`` with ``result.apply(pixels)`` (AdvCLIP, UAPPatch)."""

    def __call__(self, model: nn.Module, data: object, generator: torch.Generator | int | None = None): ...


@dataclass
class TargetIdentification:
    """What step 1 found.

    Attributes:
        label: index of the identified target among the candidate classes.
        name: its name (``None`` if no names were given).
        rise: (C,) ``P_adv(y) - P_clean(y)`` per candidate class, in [-1, 1].
        p_clean, p_adv: (C,) prediction frequencies without / with the perturbation.
        margin: rise of the winner minus the runner-up's (a clear winner has a large margin).
        perturbation: the universal perturbation's result (its patch and settings).
    """

    label: int
    name: str | None
    rise: torch.Tensor
    p_clean: torch.Tensor
    p_adv: torch.Tensor
    margin: float
    perturbation: object

    def to_dict(self) -> dict:
        return {"label": self.label, "name": self.name, "rise": float(self.rise[self.label]), "margin": self.margin,
                "p_clean": float(self.p_clean[self.label]), "p_adv": float(self.p_adv[self.label])}


def prediction_frequencies(classifier: ZeroShotClassifier, pixels: torch.Tensor) -> torch.Tensor:
    """(C,) fraction of ``pixels`` predicted as each class."""
    pred = classifier.predict(pixels)  # (N,)
    return torch.bincount(pred, minlength=classifier.num_classes).float() / pixels.shape[0]


def identify_target(model: nn.Module, pixels: torch.Tensor, prompts: list[list[str]], uap: UniversalPerturbation,
                    class_names: list[str] | None = None,
                    generator: torch.Generator | int | None = None) -> TargetIdentification:
    """Learn ``uap`` on ``pixels`` (N, 3, H, W) against ``model`` and return the class whose frequency rises most.

    ``prompts`` holds, for each candidate class, its prompt strings (the open vocabulary the defender
    searches); the model must be in eval mode (the perturbation's optimiser checks it).
    """
    check_pixels(pixels, "pixels")
    if not isinstance(prompts, list) or len(prompts) < 2 or not all(isinstance(p, list) and p for p in prompts):
        raise ValueError("prompts must be a list of >= 2 candidate classes, each a non-empty list of prompt strings")
    if class_names is not None and len(class_names) != len(prompts):
        raise ValueError(f"class_names has {len(class_names)} names for {len(prompts)} prompt classes")
    classifier = ZeroShotClassifier(model, prompts)
    with torch.no_grad():
        clean_pred = classifier.predict(pixels)  # (N,)
    captions = [prompts[int(c)] for c in clean_pred]  # pseudo-captions: the model's own clean prediction
    result = uap(model, (pixels, captions), generator=generator)
    with torch.no_grad():
        p_clean = torch.bincount(clean_pred, minlength=len(prompts)).float() / pixels.shape[0]
        p_adv = prediction_frequencies(classifier, result.apply(pixels))
    rise = p_adv - p_clean  # (C,)
    top = torch.topk(rise, 2)
    label = int(top.indices[0])
    return TargetIdentification(label, None if class_names is None else class_names[label], rise, p_clean, p_adv,
                                float(top.values[0] - top.values[1]), result)


__all__ = ["TargetIdentification", "UniversalPerturbation", "identify_target", "prediction_frequencies"]
