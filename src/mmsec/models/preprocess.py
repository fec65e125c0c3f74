"""Differentiable image preprocessing shared by the real-model adapters (HF CLIP, open_clip).

Real CLIP pipelines resize with PIL or torchvision on uint8 images, which cuts the gradient.
Here the same geometry (resize the shortest edge, centre-crop; or squash; or fit the longest
edge and pad) is done with ``torch.nn.functional.interpolate`` (antialiased) on float pixels
in [0, 1], so attacks get gradients to the caller's pixels and every epsilon stays in pixel
units. Results match PIL to interpolation rounding, not bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# OpenAI CLIP's normalisation (also Hugging Face's and open_clip's default).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

RESIZE_MODES = ("shortest", "squash", "longest")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class ImagePreprocess:
    """The geometry and statistics of a tower's input pipeline.

    Attributes:
        image_size: (H, W) the tower expects.
        resize: target of the resize step: an int is the shortest (``"shortest"``) or longest
            (``"longest"``) edge, a pair is an exact (H, W) (``"squash"``).
        resize_mode: ``"shortest"`` (resize the shortest edge, keep the aspect ratio, then
            centre-crop to ``image_size``: CLIP's pipeline), ``"squash"`` (resize to ``resize``
            ignoring the aspect ratio, then centre-crop if that is larger than ``image_size``),
            or ``"longest"`` (fit the longest edge, then pad to ``image_size`` with ``fill``).
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        mean, std: per-channel statistics subtracted / divided after resizing.
        fill: padding value in [0, 1] for ``"longest"``.
    """

    image_size: tuple[int, int]
    resize: int | tuple[int, int]
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 channels, got mean={self.mean}, std={self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.resize_mode == "squash" and isinstance(self.resize, int):
            object.__setattr__(self, "resize", (self.resize, self.resize))
        if self.resize_mode != "squash" and not isinstance(self.resize, int):
            raise ValueError(f"resize_mode {self.resize_mode!r} needs an int edge length, got {self.resize}")
        h, w = self.image_size
        if self.resize_mode == "shortest" and self.resize < min(h, w):
            raise ValueError(f"resizing the shortest edge to {self.resize} cannot fill a crop of {h}x{w}")
        if self.resize_mode == "squash" and (self.resize[0] < h or self.resize[1] < w):
            raise ValueError(f"resizing to {self.resize} cannot fill a crop of {h}x{w}")


def check_image_batch(pixels: torch.Tensor, who: str) -> None:
    """Cheap checks (no pass over the values): a float (B, 3, H, W) tensor."""
    if not isinstance(pixels, torch.Tensor):
        raise TypeError(f"{who}: pixels must be a torch.Tensor, got {type(pixels).__name__}")
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        hint = " (add a batch dimension with pixels.unsqueeze(0))" if pixels.ndim == 3 else ""
        raise ValueError(f"{who}: pixels must have shape (B, 3, H, W) with values in [0, 1], "
                         f"got {tuple(pixels.shape)}{hint}")
    if not pixels.is_floating_point():
        raise ValueError(f"{who}: pixels must be float in [0, 1], got dtype {pixels.dtype} "
                         "(divide uint8 images by 255)")
    if pixels.shape[2] < 1 or pixels.shape[3] < 1:
        raise ValueError(f"{who}: pixels have an empty spatial size {tuple(pixels.shape[2:])}")


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    y = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    # PIL clamps to the uint8 range; bicubic overshoots it near edges.
    return y.clamp(0.0, 1.0) if mode == "bicubic" else y


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = size
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))  # torchvision's rounding
    return x[..., top:top + ch, left:left + cw]


def resize_and_crop(pixels: torch.Tensor, pp: ImagePreprocess) -> torch.Tensor:
    """(B, 3, H, W) pixels of any size -> (B, 3, *pp.image_size), differentiably. No mean/std."""
    h, w = pixels.shape[-2:]
    if pp.resize_mode == "shortest":
        s = pp.resize
        # torchvision / Hugging Face: short edge -> s, long edge -> int(s * long / short).
        size = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        return _center_crop(_interpolate(pixels, size, pp.interpolation), pp.image_size)
    if pp.resize_mode == "squash":
        return _center_crop(_interpolate(pixels, tuple(pp.resize), pp.interpolation), pp.image_size)
    # "longest": fit the longest edge, then pad symmetrically to image_size (open_clip's fill).
    s = pp.resize
    scale = s / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = _interpolate(pixels, size, pp.interpolation)
    th, tw = pp.image_size
    ph, pw = max(0, th - size[0]), max(0, tw - size[1])
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=pp.fill)
    return _center_crop(x, pp.image_size)
