"""Registry: every method, model loader, data set and task has a short name usable in specs and the CLI.

A leaf: it imports nothing from mmsec. The module that defines a contract declares its kind
(:func:`declare_kind`), and each implementation registers itself under that kind with a decorator
(or a call with a loader); nothing is found by ``eval`` or by scanning. The built-in
implementations are imported explicitly by :func:`mmsec.builtins.load`, which the CLI and the
runner call; library code that only uses a method imports its class directly.

    @register("attacks", "pgd")
    class PGD(EvasionAttack): ...

    from mmsec import builtins, registry
    builtins.load()
    registry.get("attacks", "pgd").factory(eps=4/255)

Each entry records what ``mmsec list --json`` prints: its kind, name, the model family it needs,
the paper it implements and the file it lives in (all read from the factory unless given).
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Kind:
    """A kind of registered thing: its name, what it is, and where its contract lives."""

    name: str
    summary: str
    contract: str  # "module:Class" or "module:function" of the contract entries of this kind follow


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    summary: str
    factory: Callable
    family: str | None = None  # the model family it needs ("contrastive", "fusion", ...), None: no model
    paper: str | None = None

    @property
    def file(self) -> str:
        """The source file of the factory, relative to the folder above the ``mmsec`` package."""
        target = self.factory.func if hasattr(self.factory, "func") else self.factory  # functools.partial
        try:
            path = Path(inspect.getsourcefile(target) or "")
        except TypeError:
            return ""
        parts = path.parts
        return str(Path(*parts[parts.index("mmsec"):])) if "mmsec" in parts else str(path)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "family": self.family, "paper": self.paper,
                "file": self.file, "summary": self.summary}


_KINDS: dict[str, Kind] = {}
_REGISTRY: dict[str, dict[str, Entry]] = {}


def close_names(name: str, names: list[str]) -> str:
    """A ' Did you mean ...?' suffix for error messages, or '' when nothing is close."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def declare_kind(name: str, summary: str, contract: str = "") -> None:
    """Declare a kind (idempotent for the same summary). Called by the module defining the contract."""
    if not re.match(r"^[a-z][a-z0-9_]*$", name):
        raise ValueError(f"kind names are lower_snake_case, got {name!r}")
    known = _KINDS.get(name)
    if known is not None and known.summary != summary:
        raise ValueError(f"kind {name!r} is declared twice with different summaries")
    _KINDS[name] = Kind(name, summary, contract)
    _REGISTRY.setdefault(name, {})


def kinds() -> list[Kind]:
    """The declared kinds, in declaration order (what has been imported so far)."""
    return list(_KINDS.values())


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; declared kinds: {sorted(_KINDS)}.{close_names(kind, sorted(_KINDS))}")


def _first_line(text: str | None) -> str:
    """The docstring's first sentence-line, joined across wrapped lines up to the first blank line."""
    if not text:
        return ""
    para = inspect.cleandoc(text).split("\n\n", 1)[0]
    return " ".join(line.strip() for line in para.splitlines())


def register(kind: str, name: str, summary: str = "", family: str | None = None,
             paper: str | None = None) -> Callable:
    """Register ``factory`` (a class or a function) under ``kind`` / ``name``.

    ``family`` and ``paper`` default to the factory's class attributes of those names.
    """
    _check_kind(kind)

    def deco(factory: Callable) -> Callable:
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind} {name!r} is registered twice")
        fam = family if family is not None else getattr(factory, "family", None)
        ref = paper if paper is not None else getattr(factory, "paper", None)
        doc = summary or _first_line(getattr(factory, "__doc__", None))
        _REGISTRY[kind][name] = Entry(name, kind, doc, factory, fam if isinstance(fam, str) else None,
                                      ref if isinstance(ref, str) else None)
        return factory

    return deco


def entries(kind: str) -> list[Entry]:
    """The entries of ``kind`` registered so far, sorted by name."""
    _check_kind(kind)
    return sorted(_REGISTRY[kind].values(), key=lambda e: e.name)


def names(kind: str) -> list[str]:
    return [e.name for e in entries(kind)]


def get(kind: str, name: str) -> Entry:
    """The entry ``name`` of ``kind``; a KeyError naming the known ones (and close names) otherwise."""
    _check_kind(kind)
    table = _REGISTRY[kind]
    if name not in table:
        known = sorted(table)
        raise KeyError(f"unknown {_singular(kind)} {name!r}; known: {known}.{close_names(name, known)}")
    return table[name]


def _singular(kind: str) -> str:
    words = kind.replace("_", " ")
    return words[:-1] if words.endswith("s") else words


def find(name: str, kinds_: tuple[str, ...] | list[str]) -> Entry | None:
    """The entry ``name`` in the first of ``kinds_`` that has it, or None."""
    for k in kinds_:
        if k in _REGISTRY and name in _REGISTRY[k]:
            return _REGISTRY[k][name]
    return None


def kind_of(factory: Any) -> str | None:
    """The kind a factory (or an instance of a registered class) is registered under, else None."""
    entry = entry_of(factory)
    return entry.kind if entry else None


def entry_of(obj: Any) -> Entry | None:
    """The entry whose factory is ``obj`` or ``type(obj)``, else None."""
    targets = (obj, type(obj))
    for table in _REGISTRY.values():
        for e in table.values():
            if e.factory in targets:
                return e
    return None


__all__ = ["Entry", "Kind", "close_names", "declare_kind", "entries", "entry_of", "find", "get", "kind_of",
           "kinds", "names", "register"]
