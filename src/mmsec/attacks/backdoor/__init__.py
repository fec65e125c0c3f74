"""Backdoor attacks on multimodal models and the trigger library they share.

:mod:`mmsec.attacks.backdoor.triggers`: patch (BadNets / Carlini & Terzis), blended (Chen et al.
2017), SIG (Barni et al. 2019), WaNet (Nguyen & Tran 2021) and optimised patches (BadCLIP-style),
all ``Trigger.apply(pixels, generator) -> pixels`` with a JSON record (``to_dict`` /
``trigger_from_dict``) so "what was poisoned" can be rebuilt exactly.
"""

from .triggers import (
    CORNERS,
    POSITIONS,
    TRIGGERS,
    BlendedTrigger,
    OptimizedPatch,
    PatchTrigger,
    SIGTrigger,
    Trigger,
    WaNetTrigger,
    build_trigger,
    trigger_from_dict,
)

__all__ = ["CORNERS", "POSITIONS", "TRIGGERS", "BlendedTrigger", "OptimizedPatch", "PatchTrigger", "SIGTrigger",
           "Trigger", "WaNetTrigger", "build_trigger", "trigger_from_dict"]
