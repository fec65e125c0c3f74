"""Task plugins of the runner, one module per task; importing this package registers them.

``zeroshot`` and ``retrieval`` (evasion attacks against an objective, :mod:`.evasion`), ``transfer``
(pair attacks crafted on a source, scored on targets), ``backdoor`` (a backdoored model, a defense,
the backdoor measured). A new task is one module here plus its import below.
"""

from . import backdoor, retrieval, transfer, zeroshot

__all__ = ["backdoor", "retrieval", "transfer", "zeroshot"]
