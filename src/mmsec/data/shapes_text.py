"""What the shapes world says in words, for methods that take world knowledge as an input.

Attacks and defenses never import the shapes world (they take class names, captions and word lists
from their inputs); the caller that knows the data hands them these:

* :class:`ShapesCaptions` -- a *caption source* for caption-poisoning attacks (PBCL, BadCLIP; the
  protocol is :class:`mmsec.attacks.backdoor.poisoning.CaptionSource`): the 48 class names, the
  caption set ``Y'`` of a class (:func:`target_caption_set`) and, for each poisoned pair, the six
  caption variants of a random single-object scene of the class (:func:`shapes_target_captions`)::

      attack = PBCLBackdoor("red circle", rate=0.01).use_captions(ShapesCaptions())

* :func:`shapes_lexical_groups` -- the groups of interchangeable words (colours, shapes, sizes,
  textures, position words), the lexical-neighbour table of word-substitution attacks::

      BertAttack(neighbours=shapes_lexical_groups())      # or LexicalNeighbours(shapes_lexical_groups())

* :data:`ZEROSHOT_TEMPLATES_OVER_NAMES` -- the world's zero-shot templates written over a class
  name (``"a photo of a {}"``, ...), which give exactly :func:`~mmsec.data.shapes.zeroshot_prompts`.
"""

from __future__ import annotations

import itertools
import random

from .shapes import COLORS, POSITIONS, SHAPES, SIZES, TEXTURES, Scene, shape_color_classes

# The world's ZEROSHOT_TEMPLATES ("a photo of a {color} {shape}", ...) over a "<colour> <shape>" class name.
ZEROSHOT_TEMPLATES_OVER_NAMES = ("a photo of a {}", "a {}", "a picture of a {}")


def _shapes_parts(target: str) -> tuple[str, str] | None:
    """(colour, shape) of a shapes-world class name, or None."""
    parts = target.split(" ")
    if len(parts) == 2 and parts[0] in COLORS and parts[1] in SHAPES:
        return parts[0], parts[1]
    return None


def _check_class(target: str) -> tuple[str, str]:
    parts = _shapes_parts(target) if isinstance(target, str) else None
    if parts is None:
        raise ValueError(f"target {target!r} is not a shapes-world class ('<colour> <shape>', e.g. 'red circle')")
    return parts


def shapes_target_captions(target: str, rng: random.Random) -> list[str]:
    """The six caption variants of a random single-object shapes-world scene of class ``target``
    (random size, position and background texture, drawn from ``rng`` in that order)."""
    color, shape = _check_class(target)
    scene = Scene(-1, shape, color, rng.choice(SIZES), rng.choice(POSITIONS), rng.choice(TEXTURES),
                  background=(0, 0, 0), jitter=(0, 0))
    return scene.captions()


def target_caption_set(target: str) -> list[str]:
    """``Y'`` of a shapes-world class: every distinct caption the world's templates say of a
    single-object scene of that class (what searching the training captions for the class name
    finds, without the second-object suffixes), sorted."""
    color, shape = _check_class(target)
    caps = {c for size, pos, tex in itertools.product(SIZES, POSITIONS, TEXTURES)
            for c in Scene(-1, shape, color, size, pos, tex, (0, 0, 0), (0, 0)).captions()}
    return sorted(caps)


class ShapesCaptions:
    """The shapes world as a caption source of caption-poisoning attacks (see the module docstring).

    ``class_names``: the 48 ``"<colour> <shape>"`` classes in label order; ``caption_set(target)``:
    :func:`target_caption_set`; ``sample(target, rng)``: :func:`shapes_target_captions`.
    """

    def __init__(self) -> None:
        self.class_names = shape_color_classes()

    def caption_set(self, target: str) -> list[str]:
        return target_caption_set(target)

    def sample(self, target: str, rng: random.Random) -> list[str]:
        return shapes_target_captions(target, rng)

    def __repr__(self) -> str:
        return "ShapesCaptions()"


def shapes_lexical_groups() -> list[list[str]]:
    """Groups of interchangeable words of the shapes world: colours, shapes, sizes, textures, and the
    vertical and horizontal position words (the lexical neighbours of a word-substitution attack)."""
    vertical = {p.split()[0] for p in POSITIONS}
    horizontal = {p.split()[1] for p in POSITIONS}
    return [list(COLORS), list(SHAPES), list(SIZES), list(TEXTURES), sorted(vertical), sorted(horizontal)]


__all__ = ["ShapesCaptions", "ZEROSHOT_TEMPLATES_OVER_NAMES", "shapes_lexical_groups", "shapes_target_captions",
           "target_caption_set"]
