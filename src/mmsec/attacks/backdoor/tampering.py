"""Base of model-tampering backdoor attacks: the attacker edits the model itself (BadEncoder).

``attack(model, shadow_pixels, reference_pixels, generator, ...) -> result`` with ``.model`` (a
new, backdoored model; the input is untouched), ``.record`` (what was done: trigger, target,
reference inputs) and ``.seconds``.
"""

from __future__ import annotations

from typing import ClassVar

from ... import registry
from ...methods import Method

registry.declare_kind("model_backdoors", "attacks that return a backdoored model: attack(model, shadow_pixels, "
                      "reference_pixels, generator) -> result(.model, .record)",
                      "mmsec.attacks.backdoor.tampering:ModelTamperingAttack")


class ModelTamperingAttack(Method):
    """Base of attacks that backdoor a model by changing its weights."""

    family: ClassVar[str | None] = "contrastive"
    components: ClassVar[dict[str, str]] = {"trigger": "triggers"}
    threat_model: ClassVar[str] = "model tampering (the attacker controls the weights of the published model)"


__all__ = ["ModelTamperingAttack"]
