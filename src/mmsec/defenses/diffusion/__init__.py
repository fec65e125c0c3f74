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
from .terd import TERD
from .terd_input import TERDInput
from .ufid import UFID

__all__ = ["DiffusionInputDetector", "DiffusionModelDetector", "DiffusionRepair", "Elijah", "ElijahRemoval",
           "InputVerdict", "ModelVerdict", "RepairResult", "TERD", "TERDInput", "UFID"]
