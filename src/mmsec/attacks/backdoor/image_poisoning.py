"""Base of data-poisoning attacks on an unlabelled image set for self-supervised pre-training.

``attack(images (N, 3, H, W), <the attacker's target-class material>) -> PoisonedImages(images,
record)``: the poisoned images are appended after the clean ones (which are returned unchanged) and
the record says which positions were poisoned and how (ground truth for detectors, and enough to
rebuild the images). What the attacker brings besides the clean images is method-specific:
CorruptEncoder pastes cut-out reference objects (:class:`mmsec.data.objects.ReferenceObject`) on
background images, the naive SSL-backdoor baseline stamps its trigger on whole target-class images.
Neither knows the world the images come from: the caller cuts the objects out and picks the images
(for the shapes world, :mod:`mmsec.data.shapes_objects`).
"""

from __future__ import annotations

from typing import ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("image_poisoning", "poisoning of unlabelled images for self-supervised pre-training: "
                      "attack(images, <target-class material>) -> PoisonedImages(images, record)",
                      "mmsec.attacks.backdoor.image_poisoning:ImagePoisoningAttack")


class ImagePoisoningAttack(Method):
    """Base of image-set poisoners (CorruptEncoder, the naive SSL backdoor); subclasses implement ``__call__``."""

    family: ClassVar[str | None] = None  # it poisons data and never sees a model
    components: ClassVar[dict[str, str]] = {"trigger": "triggers"}
    threat_model: ClassVar[str] = ("data poisoning of self-supervised pre-training (a few injected unlabelled "
                                   "images, no control of training)")


__all__ = ["ImagePoisoningAttack"]
