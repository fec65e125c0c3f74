"""Which plot fits a spec's results, read from the grid itself (first rule that applies):

1. ``roc``: a detector's ROC curves were stored (``roc.json`` artifacts) -> the curves;
2. ``matrix``: transfer cells (a ``target`` axis) with several sources or targets -> source x target heatmap;
3. ``curve``: a numeric parameter axis (``eps``, a poison ``rate``, a defense's ``defense.lr``, ...) with at least
   two values -> each metric against it, one line per combination of the other axes;
4. ``attack_defense``: both the attack and the defense vary -> heatmap of the headline metric;
5. ``bars``: otherwise, the headline metrics per cell, with error bars across seeds.

A parameter that is a function of the x axis (PGD's ``alpha = eps / 4``) does not split lines. The headline
metric is the first of :data:`HEADLINE` measured in at least half the cells, else the one measured most;
book-keeping numbers (``*_seconds``, counts ``n_*``) are never plotted. Where cells measure different things
(a defense axis mixing detectors and repairs), the next metrics are chosen to cover the cells the first miss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..runs.tasks.common import ROC_KIND
from .store_view import SpecView, axis_values, group_label, varying_axes

ROC, MATRIX, CURVE, ATTACK_DEFENSE, BARS, NONE = "roc", "matrix", "curve", "attack_defense", "bars", "none"
# What a study is about, most telling first (a spec's first match measured in half its cells is its headline).
HEADLINE = ("robust_accuracy", "asr", "attack_success_rate", "backdoor_asr", "detector_auroc", "detection_auroc",
            "input_detector_auroc", "target_hit_rate", "asr_i2t", "asr_t2i", "i2t_r1_adv", "adv_i2t_r1",
            "model_detector_flagged", "clean_accuracy", "i2t_r1")
# Numeric axes that are the x of a study when several are numeric (others: the one with most values).
X_PREFERENCE = ("eps", "rate", "poison_rate", "pairs", "steps", "epochs")
MAX_CURVE_METRICS = 6
MAX_BAR_METRICS = 4


@dataclass(frozen=True)
class PlotChoice:
    """``kind`` (one of roc, matrix, curve, attack_defense, bars, none), the ``metrics`` to draw (headline first),
    ``x`` (a curve's axis), ``rows`` / ``cols`` (a heatmap's axes) and ``why`` (one line for the caption)."""

    kind: str
    metrics: tuple[str, ...] = ()
    x: str | None = None
    rows: str | None = None
    cols: str | None = None
    why: str = ""


def bookkeeping(metric: str) -> bool:
    """Times and counts: stored for the record, not the effect a study measures."""
    return metric.endswith("seconds") or metric.startswith("n_") or metric.endswith("_clean_models")


def coverage(view: SpecView, metric: str) -> int:
    return sum(metric in g["metrics"] and g["metrics"][metric] == g["metrics"][metric] for g in view.groups)


def plotted_metrics(view: SpecView) -> list[str]:
    """The metrics worth a plot: the headline first; then, while some cells have none of the chosen metrics
    (a defense axis mixing detectors and repairs measures different things per cell), the metric that covers
    most of them; then the rest in the table's order."""
    candidates = [m for m in view.metrics if not bookkeeping(m) and coverage(view, m) > 0]
    if not candidates:
        return []
    half = (len(view.groups) + 1) // 2
    known = [m for m in HEADLINE if m in candidates]
    headline = next((m for m in known if coverage(view, m) >= half), None) or \
        max(known or candidates, key=lambda m: coverage(view, m))  # (ties: the first, in HEADLINE or table order)
    chosen = [headline]
    uncovered = [g for g in view.groups if not _has_any(g, chosen)]
    while uncovered:
        rest = [m for m in known + candidates if m not in chosen]
        best = max(rest, key=lambda m: sum(_has_any(g, [m]) for g in uncovered), default=None)
        if best is None or not any(_has_any(g, [best]) for g in uncovered):
            break
        chosen.append(best)
        uncovered = [g for g in uncovered if not _has_any(g, [best])]
    return chosen + [m for m in candidates if m not in chosen]


def _has_any(group: dict, metrics: list[str]) -> bool:
    return any(group["metrics"].get(m) is not None and group["metrics"][m] == group["metrics"][m] for m in metrics)


def numeric_axis(view: SpecView, axes: list[str]) -> str | None:
    """The x axis of a curve: a varying axis whose values are all numbers (in the groups that have it) and that
    takes at least two values along one line (:func:`line_axes`); None when there is none."""
    numeric = {}
    for a in axes:
        present = [v for v in (axis_values(g).get(a) for g in view.groups) if v is not None]
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            numeric[a] = len(set(present))
    order = [a for a in X_PREFERENCE if a in numeric]
    order += sorted((a for a in numeric if a not in order), key=lambda a: (-numeric[a], axes.index(a)))
    for x in order:
        if max(len(xs) for xs in lines(view, x, axes).values()) >= 2:
            return x
    return None


def line_axes(view: SpecView, x: str, axes: list[str]) -> list[str]:
    """The varying axes that split a curve into lines: all but ``x`` and those that are a function of ``x``."""
    out = []
    for a in axes:
        if a == x:
            continue
        by_x: dict[str, set[str]] = {}
        for g in view.groups:
            v = axis_values(g)
            by_x.setdefault(json.dumps(v.get(x)), set()).add(json.dumps(v.get(a), sort_keys=True, default=str))
        if any(len(s) > 1 for s in by_x.values()):
            out.append(a)
    return out


def lines(view: SpecView, x: str, axes: list[str]) -> dict[str, set[float]]:
    """Line label (:func:`~mmsec.report.store_view.group_label` over :func:`line_axes`) -> its x values."""
    split = line_axes(view, x, axes)
    out: dict[str, set[float]] = {}
    for g in view.groups:
        value = axis_values(g).get(x)
        if value is not None:
            out.setdefault(group_label(g, split) if split else "", set()).add(value)
    return out


def roc_runs(view: SpecView) -> list[dict]:
    return [a for a in view.artifacts if a["kind"] == ROC_KIND]


def choose_plot(view: SpecView) -> PlotChoice:
    """The plot that fits ``view`` (see the module docstring)."""
    metrics = plotted_metrics(view)
    if not view.groups or not metrics:
        return PlotChoice(NONE, why="no finished cell with a metric to plot")
    if roc_runs(view):
        aurocs = tuple(m for m in view.metrics if "auroc" in m)
        return PlotChoice(ROC, aurocs, why="detector cells stored their ROC curves")
    axes = varying_axes(view.groups)
    targets = {g["target"] for g in view.groups if g.get("target")}
    sources = {g["model"] for g in view.groups if g.get("target")}
    if targets and (len(targets) > 1 or len(sources) > 1):
        return PlotChoice(MATRIX, (metrics[0],), rows="model", cols="target",
                          why="transfer cells: a source x target matrix")
    x = numeric_axis(view, axes)
    if x is not None:
        return PlotChoice(CURVE, tuple(metrics[:MAX_CURVE_METRICS]), x=x,
                          why=f"a numeric axis ({x}): each metric against it")
    if "attack" in axes and "defense" in axes:
        return PlotChoice(ATTACK_DEFENSE, (metrics[0],), rows="attack", cols="defense",
                          why="an attack x defense grid: the headline metric")
    return PlotChoice(BARS, tuple(metrics[:MAX_BAR_METRICS]), why="the headline metrics per cell")


__all__ = ["ATTACK_DEFENSE", "BARS", "CURVE", "HEADLINE", "MATRIX", "NONE", "ROC", "ROC_KIND", "PlotChoice",
           "bookkeeping", "choose_plot", "line_axes", "lines", "numeric_axis", "plotted_metrics", "roc_runs"]
