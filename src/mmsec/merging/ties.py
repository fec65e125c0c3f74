"""TIES-merging: Prateek Yadav, Derek Tam, Leshem Choshen, Colin Raffel, Mohit Bansal,
"TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023.

Three steps on the task vectors ``tau_k`` (flattened over the whole image tower):

1. **Trim**: keep the top ``k`` % of each ``tau_k``'s entries by magnitude, reset the rest to 0.
2. **Elect sign**: per parameter, ``gamma = sign(sum_k trimmed_k)`` (the sign of greater total mass).
3. **Disjoint merge**: per parameter, the mean of the trimmed values whose sign agrees with
   ``gamma`` (zeros excluded); ``theta = theta_pre + lambda * tau_merged``.

Defaults: ``k = 20`` (%), ``lambda = 1`` (the paper's recommended values when no validation set is
used). Ties in magnitude at the threshold keep every tied entry (a negligible difference).
"""

from __future__ import annotations

from typing import Any

import torch

from ..checks import check_budget
from ..registry import register
from .base import MergingMethod
from .task_vectors import TowerState


@register("merging", "ties")
class TiesMerging(MergingMethod):
    """Trim, elect sign, disjoint merge.

    Args:
        k: percentage of each task vector's entries kept by magnitude (default 20).
        lam: scaling of the merged task vector (default 1).
    """

    name = "ties"
    paper = "Yadav, Tam, Choshen, Raffel, Bansal, NeurIPS 2023"

    def __init__(self, k: float = 20.0, lam: float = 1.0):
        self.k = check_budget("k", k, 0.0, 100.0, hint=" (percent of entries kept, e.g. 20)")
        if self.k == 0:
            raise ValueError("k must be > 0 percent (k = 0 trims every entry away)")
        self.lam = check_budget("lam", lam, 0.0, 10.0, hint=" (TIES's scaling, default 1)")

    def merge_state(self, pretrained, task_models, pre: TowerState, taus: list[TowerState], data) -> tuple[TowerState, dict[str, Any]]:
        names = list(pre)
        flat = torch.stack([torch.cat([t[n].flatten() for n in names]) for t in taus])  # (K, P)
        keep = max(1, int(round(flat.shape[1] * self.k / 100)))
        thresh = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values  # (K, 1)
        trimmed = torch.where(flat.abs() >= thresh, flat, torch.zeros_like(flat))  # (K, P)
        sign = torch.sign(trimmed.sum(0))  # (P,) elected sign
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)  # (K, P)
        merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)  # (P,) disjoint mean
        out, i = {}, 0
        for n in names:
            size = pre[n].numel()
            out[n] = pre[n] + self.lam * merged[i:i + size].view_as(pre[n])
            i += size
        return out, {"kept_fraction": float((trimmed != 0).float().mean())}
