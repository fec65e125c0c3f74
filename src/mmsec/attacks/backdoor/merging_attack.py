"""Base of backdoor attacks on model merging: the attacker contributes one task model to a merge.

``attack(model, attacker_task, pixels, labels, target_pixels=None, *, tasks) -> result`` with
``.model`` (the attacker's task model, a new object fine-tuned from ``model``; the input is
untouched), ``.trigger``, ``.record`` (what was done: trigger, tasks, target) and ``.seconds``.
``tasks`` are task objects (:class:`~mmsec.merging.tasks.ClassificationTask`) among which the
attack's ``target_task`` and ``attacker_task`` are named: world knowledge is the caller's.
The merge itself (:mod:`mmsec.merging`) and the backdoor's survival are measured by the caller.
"""

from __future__ import annotations

from typing import ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("merging_attacks", "backdoors of one task model meant to survive model merging: attack(model, "
                      "attacker_task, pixels, labels, target_pixels, *, tasks) -> result(.model, .trigger, .record)",
                      "mmsec.attacks.backdoor.merging_attack:MergingAttack")


class MergingAttack(Method):
    """Base of attacks that backdoor the attacker's task model so the backdoor survives merging."""

    family: ClassVar[str | None] = "contrastive"  # a CLIP fine-tuned per task, merged by task vectors
    threat_model: ClassVar[str] = ("one task model of a merge is the attacker's (it knows the pre-trained model, "
                                   "not the merging method nor the other task models)")


__all__ = ["MergingAttack"]
