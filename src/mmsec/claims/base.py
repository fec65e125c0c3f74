"""A claim of a paper as a named, versioned check over recipe results, and its verdict over seeds.

A :class:`Claim` names the recipe that measures it, the effect it states (a function of one seed's cells of
that recipe, returning a number) and the bar the effect must clear. Over several independent seeds the
effect has a mean and a 95% interval (:mod:`mmsec.metrics.intervals`), and the verdict reads the interval
against the bar (:func:`verdict`):

- ``reproduced``: the whole interval clears the bar;
- ``not reproduced``: the whole interval misses it;
- ``inconclusive``: the interval straddles the bar, or there is a single seed (no interval);
- ``not run``: no seed has every cell the effect reads.

:class:`Cells` is what an effect function sees: the finished cells of one seed, selected by model, defense,
attack, target and attack parameters (``cells.value("asr", attack="co_attack", mode="co", eps="4/255")``);
a selection that matches no cell raises :class:`MissingResult` (the seed is not complete yet), one that
matches several raises ``ValueError`` (the claim is ambiguous: a bug in the ledger).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..metrics.intervals import Interval

VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run")
DIRECTIONS = (">=", "<=")
_GENERIC = ("model", "defense", "attack", "target")  # selector keys that are record fields, not parameters


class MissingResult(LookupError):
    """The cells an effect reads are not (all) in the store for this seed."""


@dataclass(frozen=True)
class Claim:
    """One headline claim of a paper mmsec implements.

    Attributes:
        name: unique, dotted (``co_attack.beats_single_modality``).
        version: bump it when the effect, the bar or the recipe's setting changes meaning.
        paper: the source (authors, venue, year).
        statement: the claim in words, with the bar (what the verdict answers).
        recipe: the recipe file (in ``recipes/``) whose cells measure it.
        effect: one seed's :class:`Cells` -> the effect (a float).
        bar: the threshold the effect must clear.
        direction: ``">="`` (the effect must be at least ``bar``) or ``"<="``.
        unit: how to read the effect (``"points"``, ``"AUROC"``, ...), for tables.
        metrics: the metrics ``effect`` reads (checked against the recipe's metric list by the tests).
    """

    name: str
    version: int
    paper: str
    statement: str
    recipe: str
    effect: Callable[[Cells], float] = field(repr=False, compare=False)
    bar: float
    direction: str = ">="
    unit: str = ""
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.name!r}: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"claim {self.name!r}: version must be a positive int, got {self.version!r}")
        if not math.isfinite(self.bar):
            raise ValueError(f"claim {self.name!r}: bar must be a finite number, got {self.bar!r}")


@dataclass
class ClaimResult:
    """A claim's verdict at one preset over the seeds found in the store.

    ``values`` maps each complete seed to its effect; ``interval`` is over those values (None when no seed is
    complete); ``missing`` says what is not in the store yet (empty when every asked seed is complete).
    """

    claim: Claim
    preset: str | None
    spec_name: str
    values: dict[int, float]
    interval: Interval | None
    verdict: str
    missing: str = ""

    # (flat access for tables and the report)
    @property
    def name(self) -> str:
        return self.claim.name

    @property
    def version(self) -> int:
        return self.claim.version

    @property
    def paper(self) -> str:
        return self.claim.paper

    @property
    def statement(self) -> str:
        return self.claim.statement

    @property
    def recipe(self) -> str:
        return self.claim.recipe

    @property
    def bar(self) -> float:
        return self.claim.bar

    @property
    def direction(self) -> str:
        return self.claim.direction

    @property
    def unit(self) -> str:
        return self.claim.unit


def verdict(interval: Interval | None, bar: float, direction: str) -> str:
    """The verdict of an effect's interval against ``bar`` (see the module docstring)."""
    if interval is None or interval.n == 0:
        return "not run"
    if interval.n < 2 or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "inconclusive"
    low, high = (interval.low, interval.high) if direction == ">=" else (-interval.high, -interval.low)
    bar = bar if direction == ">=" else -bar
    if low >= bar:
        return "reproduced"
    if high < bar:
        return "not reproduced"
    return "inconclusive"


def _number(v: Any) -> float | None:
    """A selector value as a float when it is a number or a fraction string (``"4/255"``), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(Fraction(v.strip()))
        except (ValueError, ZeroDivisionError):
            return None
    return None


def _matches(actual: Any, wanted: Any) -> bool:
    a, w = _number(actual), _number(wanted)
    if a is not None and w is not None:
        return math.isclose(a, w, rel_tol=1e-9, abs_tol=1e-12)
    return actual == wanted


class Cells:
    """The finished cells of one seed of a claim's recipe (records of :func:`mmsec.runs.results.pivot`)."""

    def __init__(self, records: Iterable[dict], seed: int):
        self.records = list(records)
        self.seed = seed

    def select(self, **where: Any) -> list[dict]:
        """The records matching every ``key=value`` (model, defense, attack, target, or an attack parameter /
        task axis value; numbers and fractions compare as numbers)."""
        out = []
        for rec in self.records:
            ok = True
            for key, wanted in where.items():
                actual = rec.get(key) if key in _GENERIC else rec["params"].get(key, _ABSENT)
                if actual is _ABSENT or not _matches(actual, wanted):
                    ok = False
                    break
            if ok:
                out.append(rec)
        return out

    def value(self, metric: str, **where: Any) -> float:
        """The one value of ``metric`` in the cell selected by ``where``."""
        found = [r for r in self.select(**where) if metric in r["metrics"]]
        if not found:
            raise MissingResult(f"seed {self.seed}: no finished cell with {metric} where {_fmt(where)}")
        if len(found) > 1:
            raise ValueError(f"seed {self.seed}: {len(found)} cells have {metric} where {_fmt(where)}; the claim "
                             "must select one (add the axis that differs)")
        return float(found[0]["metrics"][metric])

    def values(self, metric: str, **where: Any) -> list[tuple[dict, float]]:
        """(record, value) of ``metric`` in every cell selected by ``where`` (at least one)."""
        found = [(r, float(r["metrics"][metric])) for r in self.select(**where) if metric in r["metrics"]]
        if not found:
            raise MissingResult(f"seed {self.seed}: no finished cell with {metric} where {_fmt(where)}")
        return found


class _Absent:
    pass


_ABSENT = _Absent()


def _fmt(where: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in where.items()) or "(any cell)"


__all__ = ["DIRECTIONS", "VERDICTS", "Cells", "Claim", "ClaimResult", "MissingResult", "verdict"]
