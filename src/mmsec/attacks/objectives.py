"""Attack objectives: what an evasion attack optimises, passed in rather than hard-wired.

An objective turns adversarial pixels into a per-sample loss to *maximise* and decides per
sample whether the attack succeeded. The same PGD code then attacks zero-shot classification,
image-to-text retrieval, or (in later methods) fused embeddings and VLM log-likelihoods.

Untargeted: maximise cross-entropy of the true class / caption. Targeted: maximise the
negative cross-entropy of the target class / caption (i.e. minimise it).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ..checks import check_indices
from ..models.base import ContrastiveModel, require_contrastive
from ..models.zeroshot import ZeroShotClassifier, class_text_embeddings


class Objective(Protocol):
    """What an evasion attack optimises. ``labels`` and ``targets`` are whatever the objective defines
    (class indices here; a target text for a chat model), checked by its optional
    ``check_targets(labels, targets, batch)``."""

    threat_model: str

    def loss(self, pixels: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """(B,) per-sample loss to maximise."""
        ...

    def success(self, pixels: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """(B,) bool: did the attack reach its goal on each sample."""
        ...


class LogitObjective(Objective, Protocol):
    """An objective over a fixed set of C classes (or gallery items) that exposes its logits.

    Attacks whose loss is a function of the logits (APGD's DLR loss, Square's margin loss) need
    it; ``ZeroShotObjective`` and ``RetrievalObjective`` implement it. ``loss(x, ...)`` equals
    ``loss_from_logits(logits(x), ...)`` and ``success`` likewise, so an attack can take the loss,
    the verdict and any logit-based loss from one forward pass.
    """

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels -> (B, C) logits, differentiable in the pixels."""
        ...

    def loss_from_logits(self, logits: torch.Tensor, labels: torch.Tensor,
                         targets: torch.Tensor | None) -> torch.Tensor:
        """(B, C) logits -> (B,) the objective's loss to maximise."""
        ...

    def success_from_logits(self, logits: torch.Tensor, labels: torch.Tensor,
                            targets: torch.Tensor | None) -> torch.Tensor:
        """(B, C) logits -> (B,) bool verdict."""
        ...


LOGIT_MEMBERS = ("logits", "loss_from_logits", "success_from_logits")


def has_logits(objective: object) -> bool:
    """True when ``objective`` implements :class:`LogitObjective`."""
    return all(callable(getattr(objective, m, None)) for m in LOGIT_MEMBERS)


def require_logits(objective: object, who: str, why: str) -> None:
    """Fail with a teaching error unless ``objective`` implements :class:`LogitObjective`."""
    if not has_logits(objective):
        missing = [m for m in LOGIT_MEMBERS if not callable(getattr(objective, m, None))]
        raise TypeError(f"{who} {why}, so it needs an objective over a fixed set of classes that exposes its "
                        f"logits (mmsec.attacks.objectives.LogitObjective: {', '.join(LOGIT_MEMBERS)}), e.g. "
                        f"ZeroShotObjective or RetrievalObjective; {type(objective).__name__} lacks {missing}")


class _LogitObjective:
    """Shared logic for objectives whose model output is a logits matrix over a fixed gallery."""

    threat_model = "white-box"
    model: ContrastiveModel

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def check_targets(labels: torch.Tensor, targets: torch.Tensor | None, batch: int) -> None:
        """Labels and targets index the classes (gallery items): (B,) integer tensors."""
        check_indices("labels", labels, batch)
        if targets is not None:
            check_indices("targets", targets, batch)

    def loss(self, pixels: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        return self.loss_from_logits(self.logits(pixels), labels, targets)

    @staticmethod
    def loss_from_logits(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        if targets is None:
            return F.cross_entropy(logits, labels, reduction="none")  # push away from the truth
        return -F.cross_entropy(logits, targets, reduction="none")  # pull towards the target

    @staticmethod
    def success_from_logits(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        pred = logits.argmax(dim=1)
        return pred != labels if targets is None else pred == targets

    @torch.no_grad()
    def success(self, pixels: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        return self.success_from_logits(self.logits(pixels), labels, targets)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.logits(pixels).argmax(dim=1)


class ZeroShotObjective(_LogitObjective):
    """Zero-shot classification: labels index classes; targets are target class indices.

    Args:
        model: a ContrastiveModel.
        prompts: for each class, its prompt strings (ensembled, as CLIP does).
        class_embeddings: instead of ``prompts``, the (C, D) class text embeddings to classify
            against, e.g. learnt prompts: ``ZeroShotObjective(tuned, class_embeddings=tuned.class_embeddings)``
            for a model returned by a prompt-tuning defense (AdvPT). Give exactly one of the two.
    """

    def __init__(self, model: ContrastiveModel, prompts: list[list[str]] | None = None,
                 class_embeddings: torch.Tensor | None = None):
        require_contrastive(model, "ZeroShotObjective")
        self.model = model
        self.classifier = ZeroShotClassifier(model, prompts, class_embeddings=class_embeddings)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier.logits(pixels)  # (B, C)


class RetrievalObjective(_LogitObjective):
    """Image-to-text retrieval over a caption gallery: labels index each image's true caption;
    a targeted attack names the caption (gallery index) the image must retrieve at rank 1.

    Args:
        model: a ContrastiveModel.
        captions: the gallery of caption strings.
    """

    def __init__(self, model: ContrastiveModel, captions: list[str]):
        require_contrastive(model, "RetrievalObjective")
        if not captions:
            raise ValueError("captions (the retrieval gallery) is empty")
        self.model = model
        self.captions = list(captions)
        self.text_embeddings = class_text_embeddings(model, [[c] for c in captions])  # (M, D)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
        return self.model.logit_scale.detach() * img @ self.text_embeddings.T  # (B, M)
