"""Registry: every attack, defense, model and data set has a short name usable in specs and the CLI.

Registration is explicit (a decorator on the class or a call with a loader), never ``eval``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

# attacks: evasion attacks on images against an objective; pair_attacks: attacks on (image, caption)
# pairs of a vision-language model (Co-Attack, SGA), used by the transfer task; poisoning: attacks
# on training data (PBCL, BadCLIP); model_backdoors: attacks that return a backdoored model (BadEncoder).
KINDS = ("attacks", "pair_attacks", "poisoning", "model_backdoors", "defenses", "models", "datasets")


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    summary: str
    factory: Callable


_REGISTRY: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}


def close_names(name: str, names: list[str]) -> str:
    """A ' Did you mean ...?' suffix for error messages, or '' when nothing is close."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def register(kind: str, name: str, summary: str = "") -> Callable:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def deco(factory: Callable) -> Callable:
        doc = summary or (factory.__doc__ or "").strip().splitlines()[0] if (summary or factory.__doc__) else ""
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind[:-1]} {name!r} is registered twice")
        _REGISTRY[kind][name] = Entry(name, kind, doc, factory)
        return factory

    return deco


def _load_builtins() -> None:
    # Importing these modules runs their @register decorators.
    from . import attacks, data, defenses, models  # noqa: F401


def entries(kind: str) -> list[Entry]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _load_builtins()
    return sorted(_REGISTRY[kind].values(), key=lambda e: e.name)


def get(kind: str, name: str) -> Entry:
    _load_builtins()
    table = _REGISTRY[kind]
    if name not in table:
        raise KeyError(f"unknown {kind[:-1]} {name!r}; known: {sorted(table)}.{close_names(name, sorted(table))}")
    return table[name]
