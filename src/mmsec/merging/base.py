"""The contract of merging methods (registry kind ``merging``): configured in ``__init__`` with the
paper's defaults, called as ``method(pretrained, task_models, data=None) -> MergeResult``.

``pretrained`` is the CLIP the task models were fine-tuned from, ``task_models`` the fine-tuned
models (same architecture; only their image towers are merged), ``data`` one entry per task model for
the methods that need it (RegMean: each owner's training pixels; AdaMerging: each task's unlabelled
test pixels and its frozen head, see :func:`mmsec.merging.tasks.task_head`). Every method is
registered by name (``weight_averaging``, ``task_arithmetic``, ``ties``, ``regmean``,
``adamerging``) and built from a spec as any method: ``build("merging", {"name": "ties", "params": {"k": 20}})``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from .. import registry
from ..methods import Method
from ..models.base import require_contrastive
from .task_vectors import TowerState, check_task_models, task_vectors, tower_names, tower_state, with_tower


@dataclass
class MergeResult:
    """What a merging method returns.

    Attributes:
        model: the merged model (a new object; the inputs are untouched).
        method: the method's registered name.
        params: the method's hyper-parameters.
        seconds: wall time of the merge.
        extras: method-specific outputs (e.g. AdaMerging's learnt coefficients, its entropy trace).
    """

    model: nn.Module
    method: str
    params: dict[str, Any]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


registry.declare_kind("merging", "model merging: method(pretrained, task_models, data=None) -> MergeResult(model, ...)",
                      "mmsec.merging.base:MergingMethod")


class MergingMethod(Method):
    """Base of merging methods. Subclasses implement :meth:`merge_state` on tower states."""

    name: ClassVar[str]  # the registered name
    family: ClassVar[str | None] = "contrastive"
    needs_data: ClassVar[bool] = False  # RegMean (training inputs) and AdaMerging (unlabelled test inputs)

    def __call__(self, pretrained: nn.Module, task_models: Sequence[nn.Module], data: Sequence[Any] | None = None,
                 ) -> MergeResult:
        require_contrastive(pretrained, type(self).__name__)
        check_task_models(task_models)
        if self.needs_data:
            if data is None or len(data) != len(task_models):
                got = "None" if data is None else f"{len(data)} entries"
                raise ValueError(f"{type(self).__name__} needs data: one entry per task model "
                                 f"({len(task_models)}), got {got}")
        start = time.perf_counter()
        names = tower_names(pretrained)
        pre = tower_state(pretrained, names)
        taus = task_vectors(pretrained, task_models, names)
        state, extras = self.merge_state(pretrained, task_models, pre, taus, data)
        return MergeResult(with_tower(pretrained, state), self.name, self.params(), time.perf_counter() - start, extras)

    def merge_state(self, pretrained: nn.Module, task_models: Sequence[nn.Module], pre: TowerState,
                    taus: list[TowerState], data: Sequence[Any] | None) -> tuple[TowerState, dict[str, Any]]:
        raise NotImplementedError
