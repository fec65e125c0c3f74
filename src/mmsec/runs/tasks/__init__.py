"""Task plugins of the runner, one module per task; importing this package registers them.

``zeroshot`` and ``retrieval`` (evasion attacks against an objective, :mod:`.evasion`), ``transfer``
(pair attacks crafted on a source, scored on targets), ``backdoor`` (a backdoored model, a defense,
the backdoor measured), ``merging`` (a backdoored task model in a merge), ``targeted_poisoning``
(Yang et al.'s and PBCL's targeted poisoning of fine-tuning, retrieval of the target), ``ssl_backdoor``
(poisoned self-supervised pre-training, a downstream probe). A new task is one module here plus its
import below.
"""

from . import backdoor, merging, retrieval, ssl_backdoor, targeted_poisoning, transfer, zeroshot

__all__ = ["backdoor", "merging", "retrieval", "ssl_backdoor", "targeted_poisoning", "transfer", "zeroshot"]
