"""The plots of a spec's section, drawn with matplotlib and inlined as SVG.

:func:`render_plot` draws what :func:`~mmsec.report.chooser.choose_plot` chose: curves against a numeric axis
(small multiples, one panel per metric, one line per combination of the other axes, error bars from the
seed intervals), heatmaps (source x target, attack x defense; one panel per combination of the other axes),
ROC curves from ``roc.json`` artifacts, or horizontal bars with error bars. Each is capped (lines, panels,
bars) and says what it left out.

SVGs are made small and safe to inline: matplotlib's ``Figure`` (no pyplot state, no GUI backend), text
as text (``svg.fonttype: none``: no embedded glyphs), no XML header or metadata, no ``xmlns`` URLs, and
element ids prefixed per figure (several SVGs share one HTML document) with the unreferenced ones dropped.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from .chooser import ATTACK_DEFENSE, BARS, CURVE, MATRIX, ROC, PlotChoice, line_axes, roc_runs
from .store_view import SpecView, axis_values, format_axis, group_label, varying_axes

MAX_LINES = 10
MAX_PANELS = 4  # heatmaps
MAX_SIDE = 30  # rows or columns of a heatmap
MAX_BARS = 30
MAX_ROC_CURVES = 10
MAX_LABEL = 40  # characters of a tick or legend label
_RC = {"svg.fonttype": "none", "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "sans-serif"],
       "font.size": 8, "axes.titlesize": 9, "axes.spines.top": False, "axes.spines.right": False,
       "svg.hashsalt": "mmsec-report"}


def render_plot(choice: PlotChoice, view: SpecView, results_dir: str | Path, prefix: str) -> tuple[str, list[str]]:
    """(inline SVG, notes on what was left out) of ``choice`` for ``view``; ``("", [])`` when there is nothing to
    draw. ``prefix`` makes the SVG's element ids unique in the page."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        if choice.kind == CURVE:
            fig, notes = _curves(view, choice)
        elif choice.kind in (MATRIX, ATTACK_DEFENSE):
            fig, notes = _heatmaps(view, choice)
        elif choice.kind == ROC:
            fig, notes = _roc(view, Path(results_dir))
        elif choice.kind == BARS:
            fig, notes = _bars(view, choice)
        else:
            return "", []
        if fig is None:
            return "", notes
        return svg_of(fig, prefix), notes


def svg_of(fig: Any, prefix: str) -> str:
    """``fig`` as an ``<svg>`` element for inlining (see the module docstring)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text, count=2)
    referenced = set(re.findall(r'(?:href="#|url\(#)([^")]+)', text))

    def rename(m: re.Match) -> str:
        return f' id="{prefix}-{m.group(1)}"' if m.group(1) in referenced else ""

    text = re.sub(r'\s+id="([^"]+)"', rename, text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    return re.sub(r"\n\s*", "\n", text).strip()


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _value(group: dict, metric: str) -> tuple[float, float, float] | None:
    """(mean, error below, error above) of ``metric`` in ``group``: the interval's half-widths (0 for one seed)."""
    mean = group["metrics"].get(metric)
    if mean is None or mean != mean:
        return None
    iv = group.get("intervals", {}).get(metric)
    if iv is None or iv.n < 2 or not math.isfinite(iv.low):
        return mean, 0.0, 0.0
    return mean, mean - iv.low, iv.high - mean


def _curves(view: SpecView, choice: PlotChoice) -> tuple[Any, list[str]]:
    x = choice.x
    split = line_axes(view, x, varying_axes(view.groups))
    by_line: dict[str, list[dict]] = {}
    for g in view.groups:
        if axis_values(g).get(x) is not None:
            by_line.setdefault(group_label(g, split) if split else "", []).append(g)
    names = list(by_line)[:MAX_LINES]
    notes = [f"{len(by_line) - len(names)} more lines (of {len(by_line)}) not drawn; the table has them all"] \
        if len(by_line) > len(names) else []
    xs_all = sorted({axis_values(g)[x] for line in by_line.values() for g in line})
    log = xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 20
    metrics = choice.metrics
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    legend_rows = math.ceil(len(names) / 3) if any(names) else 0
    fig = _figure(3.2 * ncols, 2.4 * nrows + 0.22 * legend_rows)
    handles = []
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for j, name in enumerate(names):
            points = sorted((axis_values(g)[x], v) for g in by_line[name] if (v := _value(g, metric)) is not None)
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1][0] for p in points]
            err = [[p[1][1] for p in points], [p[1][2] for p in points]]
            h = ax.errorbar(xs, ys, yerr=err if any(e for side in err for e in side) else None, marker="o", ms=3,
                            lw=1.2, capsize=2, color=f"C{j % 10}", label=_short(name) or None)
            if i == 0:
                handles.append(h)
        if log:
            ax.set_xscale("log")
        ticks = xs_all if len(xs_all) <= 8 else xs_all[:: math.ceil(len(xs_all) / 8)]
        ax.set_xticks(ticks, [format_axis(x, t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(x)
        ax.set_title(metric)
        ax.grid(alpha=0.3, lw=0.5)
    if any(names):
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(names)), fontsize=7, frameon=False)
    return fig, notes


def _heatmaps(view: SpecView, choice: PlotChoice) -> tuple[Any, list[str]]:
    import numpy as np

    metric, rows_axis, cols_axis = choice.metrics[0], choice.rows, choice.cols
    others = [a for a in varying_axes(view.groups) if a not in (rows_axis, cols_axis)]
    panels: dict[str, list[dict]] = {}
    for g in view.groups:
        if (choice.kind == MATRIX and not g.get("target")) or metric not in g["metrics"]:
            continue  # (a transfer spec's cells without a target are not in its matrix)
        panels.setdefault(group_label(g, others) if others else "", []).append(g)
    names = list(panels)[:MAX_PANELS]
    notes = [f"{len(panels) - len(names)} more panels (of {len(panels)}) not drawn"] if len(panels) > len(names) else []
    if not names:
        return None, notes
    values = [g["metrics"][metric] for name in names for g in panels[name]]
    low, high = min(values), max(values)
    if 0 <= low and high <= 1:
        low, high = 0.0, 1.0  # rates and accuracies: one scale for every spec

    def labels(groups: list[dict], axis: str) -> list[str]:
        return list(dict.fromkeys(format_axis(axis, axis_values(g)[axis]) for g in groups))

    shape = {name: (labels(panels[name], rows_axis), labels(panels[name], cols_axis)) for name in names}
    if any(len(r) > MAX_SIDE or len(c) > MAX_SIDE for r, c in shape.values()):
        notes.append(f"rows or columns beyond the first {MAX_SIDE} not drawn")
    shape = {name: (r[:MAX_SIDE], c[:MAX_SIDE]) for name, (r, c) in shape.items()}
    n_rows = max(len(r) for r, _ in shape.values())
    n_cols = max(len(c) for _, c in shape.values())
    grid = (math.ceil(len(names) / 2), min(2, len(names)))
    fig = _figure(min(12.0, 2.8 + 0.55 * n_cols) * grid[1], (1.2 + 0.32 * n_rows) * grid[0] + 0.3)
    for i, name in enumerate(names):
        rows, cols = shape[name]
        cells = np.full((len(rows), len(cols)), np.nan)
        for g in panels[name]:
            r, c = format_axis(rows_axis, axis_values(g)[rows_axis]), format_axis(cols_axis, axis_values(g)[cols_axis])
            if r in rows and c in cols:
                cells[rows.index(r), cols.index(c)] = g["metrics"][metric]
        ax = fig.add_subplot(*grid, i + 1)
        image = ax.imshow(np.ma.masked_invalid(cells), cmap="viridis", vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), [_short(r) for r in rows])
        ax.set_xlabel(cols_axis)
        ax.set_ylabel(rows_axis)
        ax.set_title(metric + (f" | {_short(name)}" if name else ""))
        ax.spines[:].set_visible(False)
        if len(rows) * len(cols) <= 144:  # the numbers themselves, where they fit
            for (r, c), v in np.ndenumerate(cells):
                if v == v:
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if (v - low) / ((high - low) or 1) < 0.6 else "black")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig, notes


def _roc(view: SpecView, results_dir: Path) -> tuple[Any, list[str]]:
    group_of = {run_id: g for g in view.groups for run_id in g["run_ids"]}
    seed_of = {r["run_id"]: r["seed"] for r in view.rows}
    axes = varying_axes(view.groups)
    artifacts = roc_runs(view)
    notes = []
    if len(artifacts) > MAX_ROC_CURVES:
        notes.append(f"the ROC curves of {len(artifacts) - MAX_ROC_CURVES} more cells (of {len(artifacts)}) not drawn")
    fig = _figure(4.8, 3.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
    drawn = 0
    for j, art in enumerate(artifacts[:MAX_ROC_CURVES]):
        path = results_dir / art["path"]
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != art["sha256"]:
            notes.append(f"{art['path']}: missing or changed since its run (sha256 differs); not drawn")
            continue
        curves = json.loads(path.read_text())["curves"]
        group = group_of.get(art["run_id"])
        cell = group_label(group, axes) if group is not None else f"run {art['run_id']}"
        if view.seeded:
            cell += f", seed {seed_of.get(art['run_id'])}"
        for k, c in enumerate(curves):
            name = cell if len(curves) == 1 else f"{cell}: {c['label']}"
            ax.plot(c["fpr"], c["tpr"], lw=1.2, color=f"C{j % 10}", ls="-" if k == 0 else "--",
                    label=f"{_short(name)} (AUROC {c['auroc']:.3f})", drawstyle="default")
            drawn += 1
    if not drawn:
        return None, notes
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (clean flagged)")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC curves")
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(fontsize=6.5, loc="lower right", frameon=False)
    return fig, notes


def _bars(view: SpecView, choice: PlotChoice) -> tuple[Any, list[str]]:
    axes = varying_axes(view.groups)
    groups = view.groups[:MAX_BARS]
    notes = [f"{len(view.groups) - len(groups)} more cells (of {len(view.groups)}) not drawn; the table has them all"] \
        if len(view.groups) > len(groups) else []
    labels = [_short(group_label(g, axes)) for g in groups]
    metrics = choice.metrics
    fig = _figure(1.6 + 2.2 * len(metrics), 0.9 + 0.22 * len(groups))
    first = None
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1, sharey=first)
        first = first or ax
        ys, widths, err = [], [], [[], []]
        for y, g in enumerate(groups):
            v = _value(g, metric)
            if v is None:
                continue
            ys.append(y)
            widths.append(v[0])
            err[0].append(v[1])
            err[1].append(v[2])
        ax.barh(ys, widths, xerr=err if any(e for side in err for e in side) else None, color=f"C{i}",
                height=0.7, capsize=2, error_kw={"lw": 0.8})
        top = max([w + e for w, e in zip(widths, err[1], strict=True)] + [0.0])
        pad = 0.02 * (max(top, -min(widths, default=0)) or 1)
        for y, w, below, above in zip(ys, widths, err[0], err[1], strict=True):  # the value (a bar of 0 reads 0)
            x, side = (w + above + pad, "left") if w >= 0 else (w - below - pad, "right")
            ax.text(x, y, f"{w:.3g}", va="center", ha=side, fontsize=6.5)
        if min(widths, default=0) >= 0:
            ax.set_xlim(0, (top or 1) * 1.25)
        elif max(widths, default=0) <= 0:
            ax.set_xlim(min(w - e for w, e in zip(widths, err[0], strict=True)) * 1.35, 0)
        if i == 0:  # (the y axis is shared: ticks, labels and direction set once)
            ax.set_yticks(range(len(groups)), labels)
            ax.invert_yaxis()  # the first cell at the top, as in the table
        else:
            ax.tick_params(labelleft=False)
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3, lw=0.5)
    return fig, notes


__all__ = ["MAX_BARS", "MAX_LINES", "MAX_PANELS", "MAX_SIDE", "MAX_ROC_CURVES", "render_plot", "svg_of"]
