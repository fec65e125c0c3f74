"""Backdoor defenses for CLIP: clean-ups that return a new model (fine-tuning on clean pairs, CleanCLIP),
and Mudjacking, which repairs a backdoored image encoder from one reported bug input (a library call: it needs the bug instance).

Importing this package registers them (``mmsec.registry.entries("defenses")``); in a spec they
apply to the poisoned model of a ``task: backdoor`` cell (``defense: clean_finetune``).
"""

from .clean_finetune import CleanFineTune
from .cleanclip import CleanCLIP
from .mudjacking import Mudjacking, MudjackingResult

__all__ = ["CleanCLIP", "CleanFineTune", "Mudjacking", "MudjackingResult"]
