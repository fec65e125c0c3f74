"""The contract of merging methods: configured in ``__init__``, called on (pre-trained, task models[, data])."""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..models.base import require_contrastive
from .task_vectors import TowerState, check_task_models, task_vectors, tower_names, tower_state, with_tower


@dataclass
class MergeResult:
    """What a merging method returns.

    Attributes:
        model: the merged model (a new object; the inputs are untouched).
        method: the method's registry-style name.
        params: the method's hyper-parameters.
        seconds: wall time of the merge.
        extras: method-specific outputs (e.g. AdaMerging's learnt coefficients, its entropy trace).
    """

    model: nn.Module
    method: str
    params: dict[str, Any]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


class MergingMethod:
    """Base of merging methods. Subclasses implement :meth:`merge_state` on tower states."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False  # RegMean (training inputs) and AdaMerging (unlabelled test inputs)

    def params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

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
