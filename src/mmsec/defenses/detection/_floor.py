"""Guard shared by the scores: distances of exact duplicates are 0, and ratios or logs of 0 are not finite."""

from __future__ import annotations

import torch

REL_FLOOR = 1e-12  # relative to the largest distance: far below any real gap, far above float64 underflow


def floor_distances(d: torch.Tensor) -> torch.Tensor:
    """``d`` (float64) with zeros raised to ``1e-12 x max(d)`` (a new tensor)."""
    d = d.double()
    top = float(d.max()) if d.numel() else 1.0
    return d.clamp_min(REL_FLOOR * (top if top > 0 else 1.0))
