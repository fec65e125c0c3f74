"""TRANSITIONAL: the shapes-world task API that ``mmsec.merging`` had before the tasks moved to data.

Until ``attacks/backdoor/badmerging.py``, ``tests/attacks/test_badmerging.py`` and
``benchmarks/badmerging_eval.py`` import the tasks from :mod:`mmsec.data.shapes_tasks` and compute
heads with :func:`mmsec.merging.tasks.task_head`, this module keeps their old spellings working:
``from mmsec.merging(.tasks) import TASKS, ShapesTask, get_task``, ``task.head(model)`` and task
names given as strings to ``finetune_tower`` / ``task_accuracy`` / ``attack_success_rate``. Each use
warns (DeprecationWarning). Delete this file, the two module ``__getattr__`` hooks that reach it
(``merging/__init__.py``, ``merging/tasks.py``) and the string branch of
:func:`mmsec.merging.tasks.check_task` once those callers have moved; the layering test
(``tests/defenses/test_no_world_knowledge.py``) allows this one import and nothing else.
"""

from __future__ import annotations

import warnings

import torch

from ..data import shapes_tasks
from ..models.base import ContrastiveModel

LEGACY_NAMES = ("TASKS", "ShapesTask", "get_task")


def _warn(what: str) -> None:
    warnings.warn(f"{what} from mmsec.merging is transitional: take the tasks from mmsec.data.shapes_tasks and "
                  "heads from mmsec.merging.tasks.task_head(model, task)", DeprecationWarning, stacklevel=3)


class ShapesTask(shapes_tasks.ShapesTask):
    """:class:`mmsec.data.shapes_tasks.ShapesTask` with the old ``head(model)`` method."""

    def head(self, model: ContrastiveModel) -> torch.Tensor:
        from .tasks import task_head

        return task_head(model, self)


TASKS: dict[str, ShapesTask] = {k: ShapesTask(t.name, t.attribute, t.classes) for k, t in shapes_tasks.TASKS.items()}


def get_task(name: str | shapes_tasks.ShapesTask) -> ShapesTask:
    """The task called ``name`` (or ``name`` itself if it is a task), with the old ``head`` method."""
    if isinstance(name, ShapesTask):
        return name
    if isinstance(name, shapes_tasks.ShapesTask):
        return ShapesTask(name.name, name.attribute, name.classes)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]


def legacy(name: str):
    """The old module attribute ``name`` (one of ``LEGACY_NAMES``), with a DeprecationWarning."""
    _warn(name)
    return {"TASKS": TASKS, "ShapesTask": ShapesTask, "get_task": get_task}[name]


def task_by_name(name: str) -> ShapesTask:
    """A shapes-world task given by its name where a task object is now expected."""
    _warn(f"a task given by name ({name!r})")
    return get_task(name)
