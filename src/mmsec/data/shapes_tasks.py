"""Shapes-world classification tasks (shape, colour, position, texture), as model merging uses them.

The model-merging papers (task arithmetic, Ilharco et al., ICLR 2023; TIES-merging, RegMean,
AdaMerging; BadMerging) fine-tune one CLIP image tower per downstream task and classify with a
*frozen* zero-shot head: the class names' prompt embeddings from the untouched text tower. On the
shapes world the tasks are four attributes of the primary object of a scene:

==========  =======  ==========================================================================
task        classes  prompts of a class (averaged, CLIP's ensembling)
==========  =======  ==========================================================================
shape       6        "a photo of a {color} {shape}", "a {color} {shape}", ... over every colour
color       8        the same templates over every shape
position    4        "a {size} {color} {shape} in the {position}", "a picture of a ..." over all
texture     3        "a {color} {shape} on a {texture} background" over every colour and shape
==========  =======  ==========================================================================

The zoo's text tower only knows the shapes world's caption forms, so each class's prompt set is its
caption templates filled in with every value of the other attributes (a prompt ensemble).
Images are single-object scenes (so every attribute names one object).

A :class:`ShapesTask` is what :mod:`mmsec.merging` takes as a task (a name, class names in label
order, :meth:`~ShapesTask.prompts` per class); its head on a model is
:func:`mmsec.merging.tasks.task_head`. World knowledge lives here, not in the merging methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch

from .shapes import COLORS, POSITIONS, SHAPES, SIZES, TEXTURES, ShapesWorld


@dataclass(frozen=True)
class ShapesTask:
    """One classification task of the shapes world.

    Attributes:
        name: the task's name (``"shape"``, ``"color"``, ``"position"``, ``"texture"``).
        attribute: the :class:`~mmsec.data.shapes.Scene` attribute that is the label.
        classes: class names in label order.
    """

    name: str
    attribute: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self, target: str | int) -> int:
        """The label of ``target`` (a class name of this task or an index)."""
        if isinstance(target, int) and not isinstance(target, bool):
            if not 0 <= target < self.num_classes:
                raise ValueError(f"target index {target} is out of range for task {self.name!r} "
                                 f"({self.num_classes} classes: {list(self.classes)})")
            return target
        if target not in self.classes:
            raise ValueError(f"target {target!r} is not a class of task {self.name!r}; classes: {list(self.classes)}")
        return self.classes.index(target)

    def prompts(self) -> list[list[str]]:
        """For each class (label order), its prompt ensemble."""
        return [_class_prompts(self.attribute, c) for c in self.classes]

    def data(self, split: str, start: int, count: int, world_seed: int = 0,
             image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` single-object scenes of ``split`` from ``start``: (pixels (N, 3, H, W) in [0, 1], labels (N,))."""
        batch = ShapesWorld(image_size, seed=world_seed).batch(split, start, count)
        labels = torch.tensor([self.classes.index(getattr(s, self.attribute)) for s in batch.scenes])
        return batch.pixels(), labels


def _class_prompts(attribute: str, value: str) -> list[str]:
    colors, shapes = list(COLORS), SHAPES
    if attribute == "shape":
        return [t.format(color=c, shape=value) for t in _OBJECT_TEMPLATES for c in colors]
    if attribute == "color":
        return [t.format(color=value, shape=s) for t in _OBJECT_TEMPLATES for s in shapes]
    if attribute == "position":
        return [t.format(size=z, color=c, shape=s, position=value)
                for t, z, c, s in product(_POSITION_TEMPLATES, SIZES, colors, shapes)]
    if attribute == "texture":
        return [f"a {c} {s} on a {value} background" for c in colors for s in shapes]
    raise ValueError(f"no prompts for attribute {attribute!r}")


_OBJECT_TEMPLATES = ("a photo of a {color} {shape}", "a {color} {shape}", "a picture of a {color} {shape}")
_POSITION_TEMPLATES = ("a {size} {color} {shape} in the {position}", "a picture of a {color} {shape} in the {position}")

TASKS: dict[str, ShapesTask] = {
    "shape": ShapesTask("shape", "shape", tuple(SHAPES)),
    "color": ShapesTask("color", "color", tuple(COLORS)),
    "position": ShapesTask("position", "position", tuple(POSITIONS)),
    "texture": ShapesTask("texture", "texture", tuple(TEXTURES)),
}


def get_task(name: str | ShapesTask) -> ShapesTask:
    """The task called ``name`` (or ``name`` itself if it is a task)."""
    if isinstance(name, ShapesTask):
        return name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "ShapesTask", "get_task"]
