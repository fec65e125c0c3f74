"""Model protocols: the only way attacks, defenses and metrics reach a model.

Pixels are float tensors in [0, 1], NCHW. Resizing and normalisation live inside the model
(``normalize``), so every epsilon anywhere in mmsec is in pixel units.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ContrastiveModel(Protocol):
    """A CLIP-like dual encoder.

    ``encode_image`` and ``encode_text`` return the projected, *un-normalised* embeddings
    (as Hugging Face's ``get_image_features``); callers L2-normalise where cosine similarity
    is meant. Both must be differentiable with respect to their input pixels.
    """

    image_size: int

    def tokenize(self, texts: list[str]) -> torch.Tensor: ...

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] pixels of any size to the tower's input (resize + mean/std)."""
        ...

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, D) embeddings."""
        ...

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids from ``tokenize`` -> (B, D) embeddings."""
        ...

    @property
    def logit_scale(self) -> torch.Tensor:
        """The (exponentiated) temperature multiplying cosine similarities."""
        ...


def check_pixels(pixels: torch.Tensor, name: str = "pixels") -> None:
    """Raise a teaching error unless ``pixels`` is a float (B, 3, H, W) tensor in [0, 1]."""
    if not isinstance(pixels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(pixels).__name__}")
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(pixels.shape)}")
    if not pixels.is_floating_point():
        raise ValueError(f"{name} must be float pixels in [0, 1], got dtype {pixels.dtype} "
                         "(divide uint8 images by 255)")
    if pixels.numel() and not torch.isfinite(pixels).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if pixels.numel() and (pixels.min() < 0 or pixels.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got range [{pixels.min().item():.3f}, "
                         f"{pixels.max().item():.3f}]")


def require_contrastive(model: object, who: str) -> None:
    """Fail at construction time if ``model`` lacks the ContrastiveModel protocol."""
    missing = [a for a in ("encode_image", "encode_text", "tokenize", "normalize", "logit_scale", "image_size")
               if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{who} needs a ContrastiveModel; {type(model).__name__} lacks {missing}")
