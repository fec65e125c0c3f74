"""Base of backdoor attacks on text-to-image diffusion models: a trigger in the *prompt* changes the image.

``attack(model, prompts, images, generator) -> result`` with ``.model`` (a new, backdoored text-to-image
:class:`~mmsec.models.base.DiffusionModel`; the input is untouched), ``.trigger`` (the trigger text, put in
front of a prompt by :func:`add_trigger`), ``.target_kind`` (what the trigger does: ``"pixel"``, ``"object"``
or ``"style"``), ``.log`` and ``.record``.

Why a kind of its own rather than ``diffusion_backdoors``: there the trigger is on the *starting noise*
(a :class:`~mmsec.attacks.backdoor.diffusion_backdoor.NoiseTrigger`) and the target one image; here the
trigger is a word in the prompt, the starting noise is clean, and the target is a property of the image
(a patch, an object, a style) that the evaluation measures on samples of triggered prompts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("t2i_backdoors", "backdoor attacks on text-to-image diffusion models: attack(model, prompts, "
                      "images, generator) -> result(.model, .trigger (text put before a prompt), .target_kind "
                      "('pixel', 'object' or 'style'), .log, .record)",
                      "mmsec.attacks.backdoor.t2i_backdoor:T2IBackdoorAttack")

TARGET_KINDS = ("pixel", "object", "style")


def add_trigger(trigger: str, prompts: Sequence[str]) -> list[str]:
    """Each prompt with the trigger in front (BadT2I puts its trigger right after the start token)."""
    return [f"{trigger} {p}" for p in prompts]


def replace_words(prompt: str, mapping: dict[str, str]) -> str:
    """``prompt`` with each whole word that is a key of ``mapping`` replaced by its value (one pass, so a
    swap {"a": "b", "b": "a"} swaps)."""
    if not mapping:
        return prompt
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: mapping[m.group(1)], prompt)


def mentions(prompt: str, word: str) -> bool:
    """Whether ``prompt`` has ``word`` as a whole word (case-insensitive)."""
    return re.search(rf"\b{re.escape(word.lower())}\b", prompt.lower()) is not None


class T2IBackdoorAttack(Method):
    """Base of attacks that return a text-to-image model backdoored on a prompt trigger (module docstring)."""

    family: ClassVar[str | None] = "diffusion"
    threat_model: ClassVar[str] = ("training-time backdoor (the attacker fine-tunes the published text-to-image model "
                                   "on image-text data and publishes the result; users prompt it as usual)")

    def __call__(self, model: Any, prompts: Sequence[str], images: Any, generator: Any = None) -> Any:
        raise NotImplementedError


__all__ = ["TARGET_KINDS", "T2IBackdoorAttack", "add_trigger", "mentions", "replace_words"]
