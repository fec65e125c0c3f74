"""Shared building blocks of norm-bounded evasion attacks: norms, projection, random starts.

All tensors are NCHW pixels in [0, 1] (or perturbations of them), per-sample budgets are taken
over the whole (3, H, W) image, and every random draw takes a ``torch.Generator`` so the same
seed gives the same perturbation. ``norm`` is ``"linf"`` or ``"l2"``.

Example::

    delta = random_delta(pixels.shape, 8/255, "linf", generator)      # (B, 3, H, W)
    adv = project(pixels + delta + step, pixels, 8/255, "linf")        # back in the ball and in [0, 1]
"""

from __future__ import annotations

import torch

# Floor of per-sample norms before dividing (a zero gradient or zero perturbation stays zero).
_TINY = 1e-12


def _view(per_sample: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) to broadcast over an image batch."""
    return per_sample.view(-1, *([1] * (like.ndim - 1)))


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """(B,) per-sample L-inf or L2 norm of a perturbation (B, ...)."""
    flat = delta.flatten(1)  # (B, 3*H*W)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def clamp_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Clamp to the valid pixel range [0, 1]."""
    return pixels.clamp(0.0, 1.0)


def project_delta(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a perturbation onto the ``norm`` ball of radius ``eps`` (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        factor = (eps / lp_norm(delta, "l2").clamp_min(_TINY)).clamp(max=1.0)  # (B,), 1 inside the ball
        return delta * _view(factor, delta)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def project(adv: torch.Tensor, clean: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``adv`` onto {x : ||x - clean|| <= eps} and then onto [0, 1].

    Clamping to [0, 1] after the ball projection only moves each pixel towards ``clean`` (which
    is inside [0, 1]), so the result stays in the ball, up to float rounding.
    """
    delta = project_delta(adv - clean, eps, norm)  # a fresh tensor, so in-place below is safe
    return delta.add_(clean).clamp_(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm``: sign(grad) for L-inf, grad / ||grad||_2 for L2."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        return grad / _view(lp_norm(grad, "l2").clamp_min(_TINY), grad)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def _rand(shape: torch.Size | tuple[int, ...], generator: torch.Generator, like: torch.Tensor,
          normal: bool = False) -> torch.Tensor:
    """Draw on the generator's device in float32 (the same numbers for every dtype), then move."""
    draw = torch.randn if normal else torch.rand
    return draw(tuple(shape), generator=generator, device=generator.device).to(device=like.device, dtype=like.dtype)


def random_delta(clean: torch.Tensor, eps: float, norm: str, generator: torch.Generator,
                 radius: str = "uniform") -> torch.Tensor:
    """A random perturbation of ``clean``'s shape inside the ``norm`` ball of radius ``eps``.

    L-inf: each pixel uniform in [-eps, eps]. L2: a uniformly random direction (a normalised
    Gaussian) with radius ``r * eps``, where ``r`` is uniform in [0, 1] for ``radius="uniform"``
    (torchattacks' PGDL2 start; note this is not uniform in the ball's volume) or ``r = 1`` for
    ``radius="sphere"`` (the L2 noise baseline, norm exactly ``eps``).
    """
    if radius not in ("uniform", "sphere"):
        raise ValueError(f"radius must be 'uniform' or 'sphere', got {radius!r}")
    if norm == "linf":
        return (2.0 * _rand(clean.shape, generator, clean) - 1.0) * eps  # (B, 3, H, W) in [-eps, eps]
    if norm == "l2":
        direction = _rand(clean.shape, generator, clean, normal=True)  # (B, 3, H, W)
        direction = direction / _view(lp_norm(direction, "l2").clamp_min(_TINY), direction)
        r = _rand((clean.shape[0],), generator, clean) if radius == "uniform" else clean.new_ones(clean.shape[0])
        return direction * _view(r * eps, direction)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def random_start(clean: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random starting point in the ball around ``clean``, clamped to [0, 1] (a new tensor)."""
    return clamp_pixels(clean + random_delta(clean, eps, norm, generator))
