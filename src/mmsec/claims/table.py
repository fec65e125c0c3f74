"""Claims as text: a table for the terminal, or JSON for tools (one object per claim, per-seed values)."""

from __future__ import annotations

import json
import math

from .base import VERDICTS, ClaimResult

FORMATS = ("table", "json")


def number_text(v: float) -> str:
    """An effect as text: signed, 3 decimals (``-inf`` where the claim's setting does not occur)."""
    return f"{v:+.3f}" if math.isfinite(v) else str(v)


def effect_numbers(r: ClaimResult) -> tuple[str, str, str, int] | None:
    """The effect's mean, interval low and high as text and its number of seeds (low and high empty when there
    is no interval: one seed); None when no seed is complete. The terminal table and the report format these."""
    iv = r.interval
    if iv is None or iv.n == 0:
        return None
    if iv.n < 2 or not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return number_text(iv.mean), "", "", iv.n
    return number_text(iv.mean), number_text(iv.low), number_text(iv.high), iv.n


def effect_text(r: ClaimResult) -> str:
    """``mean [low, high] (n seeds)``, ``mean (1 seed)``, or ``-``."""
    numbers = effect_numbers(r)
    if numbers is None:
        return "-"
    mean, low, high, n = numbers
    return f"{mean} [{low}, {high}] ({n} seeds)" if low else f"{mean} (1 seed)"


def to_dict(r: ClaimResult) -> dict:
    iv = r.interval
    finite = (lambda x: x if x is not None and math.isfinite(x) else None)  # noqa: E731
    return {"name": r.name, "version": r.version, "paper": r.paper, "statement": r.statement, "recipe": r.recipe,
            "preset": r.preset, "spec_name": r.spec_name, "bar": r.bar, "direction": r.direction, "unit": r.unit,
            "values": {str(k): v if math.isfinite(v) else "no setting" for k, v in sorted(r.values.items())},
            "mean": finite(iv.mean) if iv else None, "low": finite(iv.low) if iv else None,
            "high": finite(iv.high) if iv else None, "n_seeds": iv.n if iv else 0,
            "interval": f"{iv.method} {iv.level:.0%}" if iv else None, "verdict": r.verdict, "missing": r.missing}


def format_claims(results: list[ClaimResult], fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "json":
        return json.dumps([to_dict(r) for r in results], indent=2, allow_nan=False)
    header = ("claim", "recipe", "effect: mean [95% interval]", "bar", "verdict")
    rows = [(f"{r.name} v{r.version}", f"{r.recipe} ({r.preset or 'recipe'})", effect_text(r),
             f"{r.direction} {r.bar:g}" + (f" ({r.unit})" if r.unit else ""), r.verdict) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        if r.missing:
            lines.append(f"  {r.name}: missing {r.missing}")
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no claims")
    return "\n".join(lines) + "\n"


__all__ = ["FORMATS", "effect_numbers", "effect_text", "format_claims", "number_text", "to_dict"]
