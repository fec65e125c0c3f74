"""Defenses against backdoored diffusion models: model detectors, triggered-input detectors and repairs
(:mod:`.base` holds the three contracts). Importing this package registers them."""

from .base import (
    DiffusionInputDetector,
    DiffusionModelDetector,
    DiffusionRepair,
    InputVerdict,
    ModelVerdict,
    RepairResult,
)
from .elijah import Elijah
from .elijah_removal import ElijahRemoval

__all__ = ["DiffusionInputDetector", "DiffusionModelDetector", "DiffusionRepair", "InputVerdict", "ModelVerdict",
           "RepairResult"]
__all__ += ["Elijah", "ElijahRemoval"]
