"""Simple weight averaging of task models ("model soup" style; the baseline of every merging paper).

``theta = mean_k theta_k = theta_pre + (1/n) sum_k tau_k`` over the image tower. No hyper-parameter.
Wortsman et al., "Model soups", ICML 2022, averaged models fine-tuned on one task; the merging
papers (task arithmetic, TIES, RegMean, AdaMerging, BadMerging) use it as the multi-task baseline.
"""

from __future__ import annotations

from typing import Any

from ..registry import register
from .base import MergingMethod
from .task_vectors import TowerState


@register("merging", "weight_averaging")
class WeightAveraging(MergingMethod):
    """``theta_pre + mean_k tau_k``."""

    name = "weight_averaging"
    paper = "Wortsman et al., ICML 2022"

    def merge_state(self, pretrained, task_models, pre: TowerState, taus: list[TowerState], data) -> tuple[TowerState, dict[str, Any]]:
        n = len(taus)
        return {k: pre[k] + sum(t[k] for t in taus) / n for k in pre}, {}
