"""A spec's results table as HTML: one row per cell, one column per metric, sortable and filterable by the page's
script, each number's provenance a click away (:mod:`mmsec.report.provenance`).

Rows are the groups of :class:`~mmsec.report.store_view.SpecView`: with a seed axis, each metric reads
``mean [low, high]`` (the 95% Student-t interval of :func:`mmsec.runs.results.aggregate_seeds`; the mean alone
for one seed) beside an ``n`` column; without one, one row per run with its ``seed``. Context every row shares
(one model, one attack) is named above the table instead of in a column. Sort keys ride in ``data-v``
(full-precision numbers), so ``16/255`` sorts after ``2/255``.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from ..runs.results import format_value
from .store_view import SpecView, axis_values, constant_context, format_axis, shown_axes


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def metric_cell(metric: str, group: dict) -> str:
    """One metric of one row: the value (mean and interval with several seeds), its sort key and its metric."""
    mean = group["metrics"].get(metric)
    if mean is None or mean != mean:
        return '<td class="num" data-v=""></td>'
    text = escape(format_value(metric, mean))
    iv = group.get("intervals", {}).get(metric)
    if iv is not None and iv.n > 1 and math.isfinite(iv.low):
        text += (f'<span class="ci"> [{escape(format_value(metric, iv.low))}, '
                 f'{escape(format_value(metric, iv.high))}]</span>')
    return f'<td class="num prov" data-m="{escape(metric)}" data-v="{_number(mean)}">{text}</td>'


def results_table(view: SpecView, table_id: str) -> str:
    """The filter box, the context line and the table of ``view`` (``table_id``: the table's element id)."""
    if not view.groups:
        return '<p class="empty">No finished cell yet.</p>'
    axes = shown_axes(view.groups, view.params)
    context = constant_context(view.groups)
    seeded = view.seeded
    head = [*(f"{a} (param)" if a in ("seed", "n") else a for a in axes), "n" if seeded else "seed", *view.metrics,
            "time_s"]
    out = []
    if context:
        out.append('<p class="context">' + " · ".join(f"{escape(k)} <b>{escape(format_axis(k, v))}</b>"
                                                     for k, v in context.items()) + "</p>")
    out.append(f'<div class="tools"><input type="search" class="filter" data-table="{escape(table_id)}" '
               f'placeholder="filter rows (all words must match)" aria-label="filter rows">'
               f'<span class="count" data-table="{escape(table_id)}">{_rows(len(view.groups))}</span></div>')
    out.append(f'<div class="scroll"><table class="results" id="{escape(table_id)}">')
    out.append("<thead><tr>" + "".join(f'<th scope="col">{escape(h)}</th>' for h in head) + "</tr></thead><tbody>")
    for g in view.groups:
        values = axis_values(g)
        cells = [f'<td data-v="{_number(values.get(a))}">{escape(format_axis(a, values.get(a)))}</td>' for a in axes]
        if seeded:
            seeds = ", ".join(map(str, g["seeds"]))
            cells.append(f'<td class="num" data-v="{g["n_seeds"]}" title="seeds {escape(seeds)}">{g["n_seeds"]}</td>')
        else:
            cells.append(f'<td class="num" data-v="{g["seeds"][0]}">{g["seeds"][0]}</td>')
        cells += [metric_cell(m, g) for m in view.metrics]
        wall = g.get("wall_time_s")
        cells.append(f'<td class="num" data-v="{_number(wall)}">{"" if wall is None else f"{wall:.1f}"}</td>')
        runs = " ".join(str(r) for r in g["run_ids"])
        out.append(f'<tr data-runs="{runs}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    note = ("each value: the mean over the seeds and its 95% Student-t interval (the mean alone for one seed); "
            "time_s: the mean" if seeded else "one row per run")
    out.append(f'<p class="note">{note}. Click a number for its provenance; click a header to sort.</p>')
    return "\n".join(out)


__all__ = ["metric_cell", "results_table"]
