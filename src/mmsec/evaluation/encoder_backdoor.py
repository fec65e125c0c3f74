"""Backdoor ASR of an image-only encoder through a linear probe fit afterwards on clean labelled data.

:func:`mmsec.evaluation.backdoor.probe_asr` needs a ContrastiveModel (a CLIP); encoders pre-trained
without text (SimCLR, :class:`mmsec.train.simclr.ImageEncoder`) have only ``encode_image``. This is
the same measurement for them: a multinomial logistic regression on frozen L2-normalised embeddings
of ``train_pixels`` (:func:`~mmsec.evaluation.downstream.fit_linear_probe`), then, for each trigger,
ASR = fraction of the test images whose true class is not the target that the probe assigns to
the target once the trigger is stamped. The probe is fit once and scores every trigger given, so
an attack's trigger and its same-size noise baseline are read off one classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.backdoor.triggers import Trigger
from ..checks import check_pixels
from .backdoor import BackdoorScore
from .downstream import fit_linear_probe


@torch.no_grad()
def encoder_probe_scores(encoder: nn.Module, train_pixels: torch.Tensor, train_labels: torch.Tensor,
                         pixels: torch.Tensor, labels: torch.Tensor, triggers: dict[str, Trigger], target_label: int,
                         generator: int = 0, **probe_kwargs) -> dict[str, BackdoorScore]:
    """``{name: BackdoorScore}`` of each trigger through one linear probe on ``encoder.encode_image``."""
    if not hasattr(encoder, "encode_image"):
        raise TypeError(f"encoder must have encode_image(pixels) (e.g. an ImageEncoder), got {type(encoder).__name__}")
    check_pixels(train_pixels, "train_pixels")
    check_pixels(pixels, "pixels")
    if labels.shape != (pixels.shape[0],):
        raise ValueError(f"labels must be a ({pixels.shape[0]},) tensor, got {tuple(labels.shape)}")
    if not triggers or not all(isinstance(t, Trigger) for t in triggers.values()):
        raise TypeError("triggers must be a non-empty {name: Trigger} dict")
    if isinstance(target_label, bool) or not isinstance(target_label, int) or target_label < 0:
        raise ValueError(f"target_label must be a class index >= 0, got {target_label!r}")
    if not (train_labels == target_label).any():
        raise ValueError(f"the probe's training labels never contain the target class {target_label}")
    keep = (labels != target_label).nonzero().flatten()
    if keep.numel() == 0:
        raise ValueError(f"every test image is of the target class {target_label}: no image to trigger")
    encoder.eval()
    probe = fit_linear_probe(encoder, train_pixels, train_labels, **probe_kwargs)
    clean_pred = probe.predict(encoder, pixels)  # (N,)
    clean_acc = (clean_pred == labels).float().mean().item()
    floor = (clean_pred[keep] == target_label).float().mean().item()
    out = {}
    for name, trigger in triggers.items():
        pred = probe.predict(encoder, trigger.apply(pixels[keep], generator))  # (M,)
        out[name] = BackdoorScore("linear_probe", (pred == target_label).float().mean().item(), clean_acc, floor,
                                  keep.numel(), target_label)
    return out
