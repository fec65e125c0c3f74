"""The task contract: one kind of experiment as a plugin of the generic runner.

A task says what a grid cell measures. The runner, the spec, the grid and the store know no task
by name: they ask the task registered under ``spec.task`` (registry kind ``tasks``) for

- ``Block``: a pydantic model of the task's own top-level spec fields (``target`` for transfer,
  ``training`` for backdoor, ...); unknown fields are errors naming the allowed ones;
- ``axes``: which of those fields are grid axes when written as a list (innermost, in that order);
- ``metrics``: every metric it can store, each with its definition; ``default_metrics``; the
  ``noise_metric`` its baseline produces (always stored when the spec has a baseline);
- ``attack_kinds`` / ``defense_kinds``: the registry kinds its ``attack`` and ``defense`` name;
  ``baselines``: the baseline names it accepts (``None``: any registered evasion attack);
  ``targeted``: whether ``targeted: true`` means anything to it;
- ``check(spec, block)``: the meaning checks only the task knows, as a list of problems;
- ``cell_fields(block, axis_values)``: what it adds to each cell's config (and so to its hash);
- ``run(cell, ctx)``: the cell itself, returning a :class:`CellOutput`.

A new task is one new module under ``mmsec/runs/tasks/`` plus its import in that package's
``__init__``::

    @register("tasks", "zeroshot")
    class ZeroShotTask(Task):
        metrics = {...}
        def run(self, cell, ctx): ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .. import registry
from ..metrics import MetricDefinition

registry.declare_kind("tasks", "experiment tasks of the runner: what one grid cell measures (task: NAME in a spec)",
                      "mmsec.runs.task:Task")


class TaskBlock(BaseModel):
    """Base of a task's own spec fields (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class CellOutput:
    """What a task's cell returns to the runner.

    Attributes:
        values: metric name -> value (every metric of the cell's ``metrics`` list that applies;
            a metric the cell cannot measure, e.g. detection on a fresh-scene stream, is left out).
        threat_model: metric name -> the threat model it was measured under (a callable or a dict).
        artifacts: staged artifact records (:meth:`mmsec.runs.context.CellContext.artifact`).
        attack_params / baseline_params: the configured attack's (and baseline's) parameters.
        n_samples: how many samples the metrics are computed over.
    """

    values: dict[str, float]
    threat_model: Callable[[str], str] | dict[str, str]
    artifacts: list[dict] = field(default_factory=list)
    attack_params: dict[str, Any] = field(default_factory=dict)
    baseline_params: dict[str, Any] | None = None
    n_samples: int = 0

    def threat_of(self, metric: str) -> str:
        tm = self.threat_model
        return tm(metric) if callable(tm) else tm[metric]


class Task:
    """Base of task plugins; see the module docstring for what each attribute means."""

    name: ClassVar[str]
    Block: ClassVar[type[TaskBlock]] = TaskBlock
    axes: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[dict[str, MetricDefinition]] = {}
    default_metrics: ClassVar[tuple[str, ...]] = ()
    noise_metric: ClassVar[str | None] = None
    attack_kinds: ClassVar[tuple[str, ...]] = ("attacks",)
    defense_kinds: ClassVar[tuple[str, ...]] = ()
    baselines: ClassVar[tuple[str, ...] | None] = None  # None: any registered evasion attack (noise, ...)
    targeted: ClassVar[bool] = False
    family: ClassVar[str] = "contrastive"  # the model family its models must have
    # Words for error messages.
    attack_words: ClassVar[str] = "attack"
    baseline_words: ClassVar[str] = "uniform noise of the attack's budget"
    targeted_hint: ClassVar[str] = ""
    no_defense_hint: ClassVar[str] = ""

    def check(self, spec: Any, block: TaskBlock) -> list[str]:
        """Problems with ``spec`` that only this task can see (one readable line each)."""
        return []

    def check_baseline(self, baseline: str, attack: Any, name: str) -> str | None:
        """Why ``baseline`` cannot accompany ``attack`` (built from the spec), or None."""
        return None

    def normalise(self, spec: Any, block: TaskBlock) -> TaskBlock:
        """The block with task defaults filled in (called after :meth:`check`)."""
        return block

    def cell_fields(self, block: TaskBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        """What this task adds to each cell's config: by default its axis values (under their names)."""
        return {k: v for k, v in axis_values.items() if v is not None}

    def models_of(self, cell: dict) -> list[str]:
        """The model names a cell loads (checked up front by the runner)."""
        return [cell["model"]]

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        raise NotImplementedError


def get_task(name: str) -> Task:
    """The registered task ``name`` (an instance)."""
    from .. import builtins

    builtins.load()
    return registry.get("tasks", name).factory()


def task_names() -> list[str]:
    from .. import builtins

    builtins.load()
    return registry.names("tasks")


__all__ = ["CellOutput", "Task", "TaskBlock", "get_task", "task_names"]
