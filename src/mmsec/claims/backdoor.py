"""Claims of the CLIP track's backdoor side: poisoning and backdoor attacks on CLIP, their defenses, model
merging.

Each effect reads one seed's cells of its recipe (:class:`~mmsec.claims.base.Cells`); the recipe's header
comment states the claim and its setting, and ``benchmarks/README.md`` has the one-seed figures these
claims were first read from.
"""

from __future__ import annotations

from .base import Claim

BACKDOOR_CLAIMS: tuple[Claim, ...] = ()

__all__ = ["BACKDOOR_CLAIMS"]
