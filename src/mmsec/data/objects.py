"""Objects cut out of images by their masks (the target-class material of object-pasting poisoners).

:class:`ReferenceObject` is what CorruptEncoder (:mod:`mmsec.attacks.backdoor.corruptencoder`) pastes
into its poisoned images; :func:`cut_out` makes one from any image and a mask of its object (a
segmentation, or the shapes world's rendered coverage, :mod:`mmsec.data.shapes_objects`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_pixels

Box = tuple[int, int, int, int]  # (y, x, h, w) in pixels


@dataclass(eq=False)
class ReferenceObject:
    """A target-class object cut out of a reference image.

    Attributes:
        pixels: (3, h, w) the object's bounding box in [0, 1].
        mask: (h, w) alpha in [0, 1] (1 on the object).
        image: (3, H, W) the whole reference image (CorruptEncoder+ concatenates it).
        source: the caller's id of the reference image (e.g. a scene id), or None.
        box: ``(y, x, h, w)`` of the object's bounding box in ``image``.
    """

    pixels: torch.Tensor
    mask: torch.Tensor
    image: torch.Tensor
    source: int | None = None
    box: Box | None = None


def cut_out(image: torch.Tensor, mask: torch.Tensor, source: int | None = None) -> ReferenceObject:
    """The object of ``image`` (3, H, W) under ``mask`` (H, W, values in [0, 1]) cropped to the mask's
    bounding box (CorruptEncoder's code: ``binary_mask_to_box``)."""
    check_pixels(image[None] if isinstance(image, torch.Tensor) and image.ndim == 3 else image, "image")
    if not isinstance(mask, torch.Tensor) or mask.shape != image.shape[-2:]:
        raise ValueError(f"mask must be a {tuple(image.shape[-2:])} tensor (the image's H, W), got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    mask = mask.float()
    if mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask values must lie in [0, 1]")
    rows, cols = (mask > 0.5).any(1).nonzero().flatten(), (mask > 0.5).any(0).nonzero().flatten()
    if rows.numel() == 0:
        raise ValueError("mask covers no pixel (no value > 0.5): there is no object to cut out")
    y0, y1, x0, x1 = rows[0].item(), rows[-1].item() + 1, cols[0].item(), cols[-1].item() + 1
    return ReferenceObject(image[:, y0:y1, x0:x1].clone(), mask[y0:y1, x0:x1].clone(), image.clone(), source,
                           (y0, x0, y1 - y0, x1 - x0))


__all__ = ["Box", "ReferenceObject", "cut_out"]
