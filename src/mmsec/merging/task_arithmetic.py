"""Task arithmetic: Gabriel Ilharco, Marco Tulio Ribeiro, Mitchell Wortsman, Suchin Gururangan,
Ludwig Schmidt, Hannaneh Hajishirzi, Ali Farhadi, "Editing Models with Task Arithmetic", ICLR 2023.

Merging by adding task vectors: ``theta = theta_pre + lambda * sum_k tau_k`` with
``tau_k = theta_k - theta_pre`` over the image tower; each task keeps its frozen zero-shot head.

Default: ``lambda = 0.3``. The paper picks lambda on held-out validation data from
{0, 0.05, ..., 1}; 0.3 is the value it reports as typically chosen for many tasks and the one the
BadMerging paper (Zhang et al., CCS 2024) fixes, so a fixed default is used here (no search).
"""

from __future__ import annotations

from typing import Any

from ..checks import check_budget
from ..registry import register
from .base import MergingMethod
from .task_vectors import TowerState


@register("merging", "task_arithmetic")
class TaskArithmetic(MergingMethod):
    """``theta_pre + lam * sum_k tau_k``.

    Args:
        lam: the scaling coefficient lambda (default 0.3, see the module docstring).
    """

    name = "task_arithmetic"
    paper = "Ilharco et al., ICLR 2023"

    def __init__(self, lam: float = 0.3):
        self.lam = check_budget("lam", lam, 0.0, 10.0, hint=" (task arithmetic's scaling coefficient, e.g. 0.3)")

    def merge_state(self, pretrained, task_models, pre: TowerState, taus: list[TowerState], data) -> tuple[TowerState, dict[str, Any]]:
        return {k: pre[k] + self.lam * sum(t[k] for t in taus) for k in pre}, {}
