"""Backdoor defenses for CLIP: clean-ups that return a new model (fine-tuning on clean pairs, ...).

Importing this package registers them (``mmsec.registry.entries("defenses")``); in a spec they
apply to the poisoned model of a ``task: backdoor`` cell (``defense: clean_finetune``).
"""

from .clean_finetune import CleanFineTune

__all__ = ["CleanFineTune"]
