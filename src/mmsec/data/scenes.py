"""Named, disjoint ranges of shapes-world scene ids, so every experiment draws its image sets from one map.

An experiment about a backdoor needs several image sets that must not overlap: the victim's
training pairs, the attacker's own clean scenes, a downstream user's probe-training scenes, the
defender's clean scenes, the evaluation scenes. Each is a :class:`SceneRange` here (a split, a
first index into it, a default count); tasks, recipes and tests name them instead of writing
numbers, so the numbers cannot drift apart.

Indices are into a split (``ShapesWorld.batch(split, start, count)``); training streams and pair
sets start at train index 0 and stay below :data:`STREAM_END`.
"""

from __future__ import annotations

from dataclasses import dataclass

STREAM_END = 90_000  # training pairs and streams of the victims stay below this train index


@dataclass(frozen=True)
class SceneRange:
    split: str
    start: int
    count: int

    def batch(self, world: object, count: int | None = None):
        """The range's scenes rendered by ``world`` (a :class:`~mmsec.data.shapes.ShapesWorld`)."""
        return world.batch(self.split, self.start, self.count if count is None else count)


REFERENCE_POOL = SceneRange("train", 90_000, 960)  # BadEncoder's reference inputs (target-class scenes) come from here
ATTACKER = SceneRange("train", 100_000, 512)  # the attacker's own clean scenes (an optimised trigger is fit on them)
DEFENDER_CLEAN = SceneRange("train", 200_000, 256)  # a defender's clean scenes (model-level detection)
PROBE_TRAIN = SceneRange("train", 300_000, 2000)  # a downstream user's probe-training scenes
BUG_REPORTS = SceneRange("val", 10_000, 2000)  # inputs a user reports as misclassified (repair from bug inputs)
# Model merging (BadMerging): an off-task attacker's few images of the target class are the first of that class
# among these (the published study's scenes; below STREAM_END, but no victim of a merge trains on them).
MERGING_TARGET_POOL = SceneRange("train", 50_000, 400)
# Self-supervised poisoning (CorruptEncoder): the attacker's background images (the scenes with their objects
# removed) come from here; its reference objects from REFERENCE_POOL, the naive baseline's whole target-class
# images from ATTACKER (as many scenes as it needs from its start).
SSL_BACKGROUNDS = SceneRange("train", 400_000, 400)
# A label-poisoned supervised classifier (PSBD's victim): its fixed labelled training set is the first scenes of
# train (a training set, below STREAM_END); a sample detector's clean held-out validation images come from test,
# apart from the evaluation scenes (test from index 0, below DETECTOR_VALIDATION.start).
CLASSIFIER_TRAIN = SceneRange("train", 0, 20_000)
DETECTOR_VALIDATION = SceneRange("test", 5_000, 1_000)
# The zoo's diffusion models (shapes-ddpm, shapes-t2i) train on exactly these scenes (single-object world, 16 px):
# the members of a membership-inference study; any scene outside them (e.g. the test split) is a non-member.
DIFFUSION_TRAIN = SceneRange("train", 0, 8192)

__all__ = ["ATTACKER", "BUG_REPORTS", "CLASSIFIER_TRAIN", "DEFENDER_CLEAN", "DETECTOR_VALIDATION", "DIFFUSION_TRAIN",
           "MERGING_TARGET_POOL", "PROBE_TRAIN", "REFERENCE_POOL", "SSL_BACKGROUNDS", "STREAM_END", "SceneRange"]
