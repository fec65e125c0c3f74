"""Backdoor defenses for CLIP: clean-ups that return a new model (fine-tuning on clean pairs, CleanCLIP),
Mudjacking, which repairs a backdoored image encoder from one reported bug input (a library call: it
needs the bug instance), and InverTune, which names the target with a universal perturbation,
inverts the trigger and tunes the backdoor neurons on one batch of 64 clean images (a library call;
``InverTune.harden`` gives a DefenseResult); and the pre-training defenses RoCLIP and SafeCLIP, which
train a CLIP from scratch on untrusted pairs in place of plain CLIP training. SEER is a model-level
detector (a library call): it searches a trigger and a target text jointly and gives a verdict.

Importing this package registers them (``mmsec.registry.entries("defenses")``); in a spec they
apply to the poisoned model of a ``task: backdoor`` cell (``defense: clean_finetune``); a pre-training
defense replaces the victim's training of a cell that pre-trains on a fixed set of pairs
(``training: {mode: pretrain, pairs: ..., epochs: ...}``).
"""

from .clean_finetune import CleanFineTune
from .cleanclip import CleanCLIP
from .invertune import InverTune, InverTuneResult
from .mudjacking import Mudjacking, MudjackingResult
from .roclip import RoCLIP
from .safeclip import SafeCLIP, SafeCLIPResult
from .seer import SEER, SEERResult, model_dictionary

__all__ = ["CleanCLIP", "CleanFineTune", "InverTune", "InverTuneResult", "Mudjacking", "MudjackingResult", "RoCLIP",
           "SEER", "SEERResult", "SafeCLIP", "SafeCLIPResult", "model_dictionary"]
