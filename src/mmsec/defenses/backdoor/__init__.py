"""Backdoor defenses for CLIP, one registry kind per call contract (:mod:`mmsec.defenses.base`):

* ``defenses`` (return a new model from clean data): clean fine-tuning, CleanCLIP, and InverTune,
  which names the target with a universal perturbation, inverts the trigger and tunes the backdoor
  neurons on one batch of 64 clean images (:meth:`InverTune.repair` is the same on explicit inputs);
  in a spec they apply to the poisoned model of a ``task: backdoor`` cell (``defense: invertune``);
* ``pretraining_defenses``: RoCLIP and SafeCLIP, which train a CLIP from scratch on untrusted pairs
  in place of plain CLIP training (``defense(data, recipe, seed)``; in a spec they replace the
  victim's training of a cell that pre-trains on a fixed set of pairs, ``training: {mode: pretrain,
  pairs: ..., epochs: ...}``);
* ``repairs``: Mudjacking, which patches a backdoored image encoder from one reported bug input;
* ``model_detectors``: SEER, which searches a trigger and a target text jointly and gives a verdict.

Importing this package registers them (``mmsec.registry.entries(kind)``).
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
