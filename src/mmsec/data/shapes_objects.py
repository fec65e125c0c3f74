"""Shapes-world material for object-pasting poisoners (CorruptEncoder): reference objects and backgrounds.

The attack (:mod:`mmsec.attacks.backdoor.corruptencoder`) takes cut-out target-class objects and
unlabelled background images as inputs; these helpers make them from the shapes world::

    world = ShapesWorld(32)
    refs = shapes_reference_objects(world, scenes_of_the_target_class[:3])
    backgrounds = shapes_backgrounds(world, range(10**6, 10**6 + 200))
    CorruptEncoder("red circle", rate=0.005)(clean_images, refs, backgrounds)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .objects import ReferenceObject, cut_out
from .shapes import _POSITION_CENTRE, _SIZE_RADIUS, Scene, ShapesWorld, _coverage


def shapes_object_mask(world: ShapesWorld, scene: Scene) -> torch.Tensor:
    """(H, W) coverage in [0, 1] of the primary object of ``scene`` as ``world`` renders it."""
    n, ss = world.image_size, world._ss
    cx, cy = _POSITION_CENTRE[scene.position]
    cx, cy = cx + scene.jitter[0] / 64, cy + scene.jitter[1] / 64
    cover = _coverage(scene.shape, cx, cy, _SIZE_RADIUS[scene.size], n, ss)
    return torch.from_numpy(cover.reshape(n, ss, n, ss).mean(axis=(1, 3)).astype(np.float32))


def shapes_reference_objects(world: ShapesWorld, scenes: Sequence[Scene]) -> list[ReferenceObject]:
    """Reference objects cut out of shapes-world scenes (their primary object; ``source`` = scene id)."""
    if not scenes:
        raise ValueError("scenes is empty: give at least one reference scene of the target class")
    labels = {s.label for s in scenes}
    if len(labels) > 1:
        raise ValueError(f"reference scenes must all be of the target class, got labels {sorted(labels)}")
    out = []
    for s in scenes:
        image = torch.from_numpy(world.render(s)).permute(2, 0, 1).float() / 255
        out.append(cut_out(image, shapes_object_mask(world, s), s.scene_id))
    return out


def shapes_backgrounds(world: ShapesWorld, scene_ids: Sequence[int]) -> torch.Tensor:
    """(M, 3, H, W) textured shapes-world backgrounds (scenes without their objects): the
    attacker's unlabelled background images."""
    bgs = [world._background(world.scene(int(i))) for i in scene_ids]
    if not bgs:
        raise ValueError("scene_ids is empty")
    return torch.from_numpy(np.stack(bgs).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()


__all__ = ["shapes_backgrounds", "shapes_object_mask", "shapes_reference_objects"]
