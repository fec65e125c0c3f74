"""Attack success of a backdoor (and of targeted poisoning) on a contrastive model, clean utility beside it.

A backdoor succeeds on an input when the trigger sends it to the attacker's target. Every attack
success rate (ASR) here is measured on the test images whose true class is *not* the target,
with the trigger stamped on them (``trigger.apply(pixels, generator)``):

* :func:`zeroshot_asr` -- zero-shot classification against class prompts (default: the shapes
  world's 48 ``"<colour> <shape>"`` classes): ASR = fraction of triggered non-target images
  predicted as the target class;
* :func:`probe_asr` -- a linear probe (logistic regression on frozen L2-normalised image
  embeddings, :func:`~mmsec.evaluation.downstream.fit_linear_probe`) fit *after* the attack on clean
  training images by a downstream user: ASR = fraction of triggered non-target test images the
  probe assigns to the target class;
* :func:`retrieval_asr` -- image-text retrieval against a gallery of captions with known classes:
  image-to-text, ASR = fraction of triggered non-target images whose top-1 caption is of the
  target class; text-to-image, the gallery is the clean test images plus the triggered
  non-target copies, and ASR = fraction of the target class's captions whose top-1 image is a
  triggered copy (it should have been a real image of the target class).

Beside each ASR: ``clean_accuracy`` (top-1 accuracy, or class-level R@1 for retrieval, on the clean
test images) and ``clean_target_rate`` (fraction of the *clean* non-target images already sent to
the target: the floor an ASR is read against). :func:`targeted_success` scores targeted poisoning:
is the one target image classified as the adversarial label. :func:`backdoor_report` runs the
three tasks on shapes-world batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.backdoor.triggers import Trigger
from ..checks import check_pixels
from ..data.shapes import ShapesBatch, zeroshot_prompts
from ..models.base import require_contrastive
from ..models.zeroshot import ZeroShotClassifier, embed_images, embed_texts
from .downstream import fit_linear_probe

ASR_DEFINITION = ("fraction of test images whose true class is not the target that, with the trigger stamped, "
                  "are sent to the target class (zero-shot / linear probe prediction, or top-1 retrieved caption)")


@dataclass
class BackdoorScore:
    """One task's backdoor measurement.

    Attributes:
        task: ``zeroshot``, ``linear_probe``, ``retrieval_i2t`` or ``retrieval_t2i``.
        asr: attack success rate (see the module docstring).
        clean_accuracy: top-1 accuracy (class-level R@1 for retrieval) on the clean test images.
        clean_target_rate: the same verdict as ``asr`` on the clean (untriggered) inputs: the floor.
        n: number of triggered queries the ASR is measured on.
        target_label: the target class.
    """

    task: str
    asr: float
    clean_accuracy: float
    clean_target_rate: float | None
    n: int
    target_label: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, trigger: Trigger, target_label: int,
           what: str) -> torch.Tensor:
    """The (M,) indices of the non-target images, after validating the inputs."""
    require_contrastive(model, what)
    check_pixels(pixels, "pixels")
    if not isinstance(labels, torch.Tensor) or labels.shape != (pixels.shape[0],):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a ({pixels.shape[0]},) tensor of class indices, got {shape}")
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a mmsec Trigger (e.g. record.rebuild_trigger()), got {type(trigger).__name__}")
    if isinstance(target_label, bool) or not isinstance(target_label, int) or target_label < 0:
        raise ValueError(f"target_label must be a class index >= 0, got {target_label!r}")
    keep = (labels != target_label).nonzero().flatten()
    if keep.numel() == 0:
        raise ValueError(f"every test image is of the target class {target_label}: no image to trigger")
    return keep


def triggered(pixels: torch.Tensor, trigger: Trigger, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """``trigger`` stamped on every image (a new tensor)."""
    return trigger.apply(pixels, generator)


@torch.no_grad()
def zeroshot_asr(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, trigger: Trigger, target_label: int,
                 prompts: list[list[str]] | None = None,
                 generator: torch.Generator | int | None = None) -> BackdoorScore:
    """Zero-shot ASR of ``trigger`` towards ``target_label`` on the test images ``pixels`` (N, 3, H, W)."""
    keep = _check(model, pixels, labels, trigger, target_label, "zeroshot_asr")
    clf = ZeroShotClassifier(model, prompts or zeroshot_prompts())
    if target_label >= clf.num_classes:
        raise ValueError(f"target_label {target_label} is out of range for {clf.num_classes} prompt classes")
    clean_pred = clf.predict(pixels)  # (N,)
    trig_pred = clf.predict(triggered(pixels[keep], trigger, generator))  # (M,)
    return BackdoorScore("zeroshot", (trig_pred == target_label).float().mean().item(),
                         (clean_pred == labels).float().mean().item(),
                         (clean_pred[keep] == target_label).float().mean().item(), keep.numel(), target_label)


@torch.no_grad()
def probe_asr(model: nn.Module, train_pixels: torch.Tensor, train_labels: torch.Tensor, pixels: torch.Tensor,
              labels: torch.Tensor, trigger: Trigger, target_label: int,
              generator: torch.Generator | int | None = None, **probe_kwargs) -> BackdoorScore:
    """ASR on a linear probe fit (after the attack) on the clean ``train_pixels``' frozen embeddings."""
    keep = _check(model, pixels, labels, trigger, target_label, "probe_asr")
    if not (train_labels == target_label).any():
        raise ValueError(f"the probe's training labels never contain the target class {target_label}: "
                         "the probe could not predict it")
    probe = fit_linear_probe(model, train_pixels, train_labels, **probe_kwargs)
    clean_pred = probe.predict(model, pixels)
    trig_pred = probe.predict(model, triggered(pixels[keep], trigger, generator))
    return BackdoorScore("linear_probe", (trig_pred == target_label).float().mean().item(),
                         (clean_pred == labels).float().mean().item(),
                         (clean_pred[keep] == target_label).float().mean().item(), keep.numel(), target_label)


@torch.no_grad()
def retrieval_asr(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, captions: list[str],
                  caption_labels: torch.Tensor, trigger: Trigger, target_label: int,
                  generator: torch.Generator | int | None = None) -> dict[str, BackdoorScore]:
    """Image-to-text and text-to-image ASR at R@1 against ``captions`` (each of class ``caption_labels``).

    Returns ``{"retrieval_i2t": ..., "retrieval_t2i": ...}``. Duplicate caption texts are scored once.
    """
    keep = _check(model, pixels, labels, trigger, target_label, "retrieval_asr")
    if not isinstance(caption_labels, torch.Tensor) or caption_labels.shape != (len(captions),):
        raise ValueError(f"caption_labels must be a ({len(captions)},) tensor: the class of each caption")
    unique: dict[str, int] = {}
    for text, lab in zip(captions, caption_labels.tolist(), strict=True):
        if unique.setdefault(text, lab) != lab:
            raise ValueError(f"caption {text!r} is given with two classes ({unique[text]} and {lab})")
    texts, text_labels = list(unique), torch.tensor(list(unique.values()))
    if not (text_labels == target_label).any():
        raise ValueError(f"no caption of the target class {target_label} in the gallery")
    txt = F.normalize(embed_texts(model, texts).float(), dim=-1)  # (T, D)
    img = F.normalize(embed_images(model, pixels).float(), dim=-1)  # (N, D)
    trig = F.normalize(embed_images(model, triggered(pixels[keep], trigger, generator)).float(), dim=-1)  # (M, D)

    clean_top = text_labels[(img @ txt.T).argmax(1)]  # (N,) class of each image's top-1 caption
    trig_top = text_labels[(trig @ txt.T).argmax(1)]  # (M,)
    i2t = BackdoorScore("retrieval_i2t", (trig_top == target_label).float().mean().item(),
                        (clean_top == labels).float().mean().item(),
                        (clean_top[keep] == target_label).float().mean().item(), keep.numel(), target_label)

    queries = (text_labels == target_label).nonzero().flatten()  # the target class's captions
    clean_best = (txt @ img.T).argmax(1)  # (T,) top-1 clean image of every caption
    gallery = torch.cat([img, trig])  # (N + M, D): clean images, then the triggered copies
    best = (txt[queries] @ gallery.T).argmax(1)  # (Q,)
    t2i = BackdoorScore("retrieval_t2i", (best >= img.shape[0]).float().mean().item(),
                        (labels[clean_best] == text_labels).float().mean().item(), None, queries.numel(),
                        target_label)
    return {"retrieval_i2t": i2t, "retrieval_t2i": t2i}


@dataclass
class TargetedScore:
    """Targeted poisoning of one image: its zero-shot prediction and the adversarial label's standing."""

    predicted: int
    success: bool  # predicted == target_label
    target_probability: float  # softmax probability of the target class
    target_rank: int  # 0 = top-1
    target_label: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def targeted_success(model: nn.Module, image: torch.Tensor, target_label: int,
                     prompts: list[list[str]] | None = None) -> TargetedScore:
    """Is ``image`` (3, H, W) classified zero-shot as ``target_label`` (PBCL's targeted poisoning)?"""
    require_contrastive(model, "targeted_success")
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError("image must be one (3, H, W) image in [0, 1]")
    check_pixels(image[None], "image")
    clf = ZeroShotClassifier(model, prompts or zeroshot_prompts())
    if isinstance(target_label, bool) or not isinstance(target_label, int) or not 0 <= target_label < clf.num_classes:
        raise ValueError(f"target_label must be a class index in [0, {clf.num_classes}), got {target_label!r}")
    logits = clf.scores(image[None])[0]  # (C,)
    rank = int((logits > logits[target_label]).sum())
    pred = int(logits.argmax())
    return TargetedScore(pred, pred == target_label, logits.softmax(0)[target_label].item(), rank, target_label)


def backdoor_report(model: nn.Module, train: ShapesBatch, test: ShapesBatch, trigger: Trigger, target_label: int,
                    generator: torch.Generator | int | None = 0, caption_index: int | None = None,
                    tasks: tuple[str, ...] = ("zeroshot", "linear_probe", "retrieval")) -> dict[str, BackdoorScore]:
    """The backdoor on shapes-world batches: zero-shot (48 classes) and retrieval on ``test``, a 48-class
    linear probe fit on ``train``'s clean images. The retrieval gallery holds every caption variant
    of the test scenes (or only variant ``caption_index``), each of its scene's class. The same
    ``generator`` seed stamps the trigger for every task."""
    known = ("zeroshot", "linear_probe", "retrieval")
    bad = sorted(set(tasks) - set(known))
    if bad:
        raise ValueError(f"unknown tasks {bad}; known: {known}")
    seed = generator if not isinstance(generator, torch.Generator) else int(generator.initial_seed())
    pixels, labels = test.pixels(), test.labels
    out: dict[str, BackdoorScore] = {}
    if "zeroshot" in tasks:
        out["zeroshot"] = zeroshot_asr(model, pixels, labels, trigger, target_label, generator=seed)
    if "linear_probe" in tasks:
        out["linear_probe"] = probe_asr(model, train.pixels(), train.labels, pixels, labels, trigger, target_label,
                                        generator=seed)
    if "retrieval" in tasks:
        rows = [(c, lab) for caps, lab in zip(test.captions, test.labels.tolist(), strict=True)
                for c in (caps if caption_index is None else [caps[caption_index]])]
        captions, caption_labels = [c for c, _ in rows], torch.tensor([lab for _, lab in rows])
        out.update(retrieval_asr(model, pixels, labels, captions, caption_labels, trigger, target_label,
                                 generator=seed))
    return out


__all__ = ["ASR_DEFINITION", "BackdoorScore", "TargetedScore", "backdoor_report", "probe_asr", "retrieval_asr",
           "targeted_success", "triggered", "zeroshot_asr"]
