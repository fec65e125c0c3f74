"""The claims section at the top of the report: one row per claim of the ledger (:mod:`mmsec.claims`).

A function of a list of claim results, so it renders any objects with the fields of
:class:`mmsec.claims.ClaimResult`: ``name``, ``version``, ``paper``, ``statement``, ``recipe``, ``preset``,
``bar``, ``direction``, ``unit``, ``values`` (seed -> effect), ``interval``
(:class:`~mmsec.metrics.intervals.Interval` or None), ``verdict``, ``spec_name`` and ``missing``. Each row:
the claim and its statement, the paper, the effect as ``mean [low, high]`` with the number of seeds, the bar,
the verdict (coloured), and on demand the effect of each seed and what the store still lacks; the recipe
links to its spec's section when the page has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from ..claims.table import effect_numbers, number_text

VERDICT_CLASS = {"reproduced": "ok", "not reproduced": "bad", "inconclusive": "maybe", "not run": "none"}


def effect_html(result: Any) -> str:
    """``mean [low, high]`` and ``n seeds`` (the mean alone with one seed; a dash when nothing ran)."""
    numbers = effect_numbers(result)
    if numbers is None:
        return "–"
    mean, low, high, n = numbers
    if not low:
        return f'{mean} <span class="ci">(1 seed)</span>'
    return f'{mean} <span class="ci">[{low}, {high}] n={n}</span>'


def claims_section(results: Sequence[Any], anchors: dict[str, str], preset: str | None,
                   problem: str | None = None) -> str:
    """The section's HTML. ``anchors``: spec name -> the id of its section on the page; ``problem``: why the
    ledger could not be read (shown instead of the table)."""
    head = f'<section id="claims"><h2>Claims <span class="sub">preset {escape(str(preset))}</span></h2>'
    if problem:
        return head + f'<p class="note warn">The claims could not be evaluated: {escape(problem)}</p></section>'
    if not results:
        return head + '<p class="empty">No claims in the ledger.</p></section>'
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICT_CLASS}
    summary = " · ".join(f'<span class="verdict {VERDICT_CLASS[v]}">{n} {escape(v)}</span>'
                         for v, n in counts.items() if n)
    rows = []
    for r in results:
        spec = anchors.get(r.spec_name)
        recipe = escape(f"{r.recipe} ({r.preset or 'recipe'})")
        recipe = f'<a href="#{escape(spec)}">{recipe}</a>' if spec else recipe
        unit = f" {escape(r.unit)}" if r.unit else ""
        verdict = escape(r.verdict)
        per_seed = ", ".join(f"seed {s}: {number_text(v)}" for s, v in sorted(r.values.items())) or "no complete seed"
        more = f"<p>{escape(per_seed)}</p>"
        if r.missing:
            more += f'<p class="warn">missing: {escape(r.missing)}</p>'
        rows.append(
            f'<tr data-verdict="{verdict}"><td><b>{escape(r.name)}</b> v{r.version}'
            f'<div class="statement">{escape(r.statement)}</div></td>'
            f"<td>{escape(r.paper)}</td><td>{recipe}</td>"
            f'<td class="num" data-v="{r.interval.mean if r.interval else ""}">{effect_html(r)}'
            f"<details><summary>per seed</summary>{more}</details></td>"
            f'<td class="num" data-v="{r.bar!r}">{escape(r.direction)} {r.bar:g}{unit}</td>'
            f'<td><span class="verdict {VERDICT_CLASS.get(r.verdict, "none")}">{verdict}</span></td></tr>')
    return (head + f'<p class="summary">{len(results)} claims: {summary}. A claim is reproduced when the whole 95% '
            "interval of its effect over the seeds clears the bar, not reproduced when it misses it, "
            "inconclusive when it straddles it (or one seed).</p>"
            '<div class="tools"><input type="search" class="filter" data-table="claims-table" '
            'placeholder="filter claims" aria-label="filter claims"><span class="count" data-table="claims-table">'
            f'{len(results)} row{"" if len(results) == 1 else "s"}</span></div>'
            '<div class="scroll"><table class="results" id="claims-table">'
            "<thead><tr><th>claim</th><th>paper</th><th>recipe</th><th>effect: mean [95% interval]</th><th>bar</th>"
            "<th>verdict</th></tr></thead><tbody>" + "\n".join(rows) + "</tbody></table></div></section>")


__all__ = ["VERDICT_CLASS", "claims_section", "effect_html"]
