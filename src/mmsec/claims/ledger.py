"""The ledger: every claim mmsec checks, by name (the claims themselves live in one module per track)."""

from __future__ import annotations

from .adversarial import ADVERSARIAL_CLAIMS
from .backdoor import BACKDOOR_CLAIMS
from .base import Claim
from .diffusion import DIFFUSION_CLAIMS

CLAIMS: tuple[Claim, ...] = (*ADVERSARIAL_CLAIMS, *BACKDOOR_CLAIMS, *DIFFUSION_CLAIMS)


def _check_unique(claims: tuple[Claim, ...]) -> None:
    seen: set[str] = set()
    for c in claims:
        if c.name in seen:
            raise ValueError(f"two claims are named {c.name!r}")
        seen.add(c.name)


_check_unique(CLAIMS)


def get_claim(name: str) -> Claim:
    """The claim called ``name`` (``KeyError`` naming the close ones otherwise)."""
    from ..registry import close_names

    for c in CLAIMS:
        if c.name == name:
            return c
    names = [c.name for c in CLAIMS]
    raise KeyError(f"no claim {name!r}.{close_names(name, names)} Claims: {', '.join(names)}")


__all__ = ["CLAIMS", "get_claim"]
