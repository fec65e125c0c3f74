"""Validators and generators shared by every layer: a leaf module (it imports nothing from mmsec).

Each validator raises a teaching error naming the argument, the value received and what was
expected (diffusers' ``check_inputs``), and returns the value (as the type it should be) so
``__init__`` methods read ``self.eps = check_budget("eps", eps)``.
"""

from __future__ import annotations

import math

import torch

NORMS = ("linf", "l2")


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


def check_indices(name: str, values: object, batch: int) -> None:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(values).__name__}")
    if values.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one index per image), got {tuple(values.shape)}")
    if values.is_floating_point() or values.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices (torch.long), got dtype {values.dtype}")


def make_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A ``torch.Generator`` from a generator (returned as is), an int seed, or ``None`` (seed 0)."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


def check_budget(name: str, value: float, low: float = 0.0, high: float = 1.0, hint: str | None = None) -> float:
    """Validate a finite scalar hyper-parameter in [low, high] with a teaching error."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        if hint is None:
            hint = f" (pixel units, e.g. 8/255 = {8/255:.4f})"
        raise ValueError(f"{name} must be a finite number in [{low}, {high}]{hint}, got {value}")
    return float(value)


def check_positive(name: str, value: float, high: float, hint: str | None = None) -> float:
    """:func:`check_budget` in (0, high]: a learning rate or a step that must not be zero."""
    value = check_budget(name, value, 0.0, high, hint=hint)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got 0")
    return value


def check_norm(norm: object, allowed: tuple[str, ...] = NORMS) -> str:
    """Validate the threat-model norm name."""
    if not isinstance(norm, str):
        raise TypeError(f"norm must be a string, one of {allowed}, got {type(norm).__name__} {norm!r}")
    if norm not in allowed:
        raise ValueError(f"norm must be one of {allowed}, got {norm!r}")
    return norm


def check_radius(name: str, value: float, norm: str) -> float:
    """Validate a radius or step size in pixel units: in [0, 1] for L-inf, >= 0 for L2."""
    if norm == "linf":
        return check_budget(name, value, 0.0, 1.0)
    return check_budget(name, value, 0.0, math.inf,
                        hint=" (L2 norm of the whole perturbation in pixel units, e.g. 0.5 on 3x32x32)")


def check_int(name: str, value: int, low: int = 1) -> int:
    """Validate an integer hyper-parameter >= low."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return value


def check_bool(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


__all__ = ["NORMS", "check_bool", "check_budget", "check_indices", "check_int", "check_norm", "check_pixels",
           "check_positive", "check_radius", "make_generator"]
