"""What the report reads from a results store: per spec, its cells as ``mmsec results`` groups them.

:func:`read_specs` opens the store read-only (through :mod:`mmsec.runs.results` and
:func:`mmsec.runs.store.reading`; it never writes) and returns one :class:`SpecView` per spec: the long rows
of :func:`~mmsec.runs.results.query` (every number with its provenance), the pivoted cells aggregated over the
seed axis by :func:`~mmsec.runs.results.aggregate_seeds` (a grid without a seed axis gives groups of one run),
the artifact rows and the cells not finished.

The axes of a cell group (:func:`axis_values`) are what tells groups apart: model, transfer target, defense
(its name with the parameters that tell entries of one name apart), attack, the attack's and the task's
parameters, and the defense's numeric parameters as ``defense.NAME``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs.results import (
    ALWAYS_SHOWN_PARAMS,
    aggregate_seeds,
    format_param,
    label_defenses,
    pivot,
    query,
    spec_names,
    unfinished,
)
from ..runs.store import reading

CONTEXT_AXES = ("model", "target", "defense", "attack")


@dataclass
class SpecView:
    """One spec's results. ``groups``: :func:`~mmsec.runs.results.aggregate_seeds` records (``metrics`` the
    means, ``intervals``, ``n_seeds``, ``seeds``, ``run_ids``) with ``defense_label`` set."""

    name: str
    rows: list[dict]
    params: list[str]
    metrics: list[str]
    groups: list[dict]
    artifacts: list[dict] = field(default_factory=list)  # run_id, kind, path, sha256, bytes
    unfinished: list[dict] = field(default_factory=list)

    @property
    def seeded(self) -> bool:
        """Whether some group holds several seeds (the table then shows means and intervals)."""
        return any(g["n_seeds"] > 1 for g in self.groups)

    @property
    def tasks(self) -> list[str]:
        return sorted({str(r["task"]) for r in self.rows if r.get("task")})

    @property
    def n_runs(self) -> int:
        return sum(g["n_seeds"] for g in self.groups)

    def definitions(self) -> dict[str, dict]:
        """Metric name -> the definition, version, direction of its first row (for plot captions)."""
        out: dict[str, dict] = {}
        for r in self.rows:
            out.setdefault(r["metric"], {"definition": r["definition"], "version": r["metric_version"],
                                         "higher_is_better": r["higher_is_better"]})
        return out


def read_specs(results_dir: str | Path, names: list[str] | None = None) -> list[SpecView]:
    """One :class:`SpecView` per spec in the store (all, sorted, or ``names`` in their order); a name not in the
    store is a ValueError naming the specs there. A missing store: FileNotFoundError (from the store)."""
    present = spec_names(results_dir)
    if names:
        unknown = [n for n in names if n not in present]
        if unknown:
            raise ValueError(f"--spec {unknown[0]!r}: no runs of that spec in {Path(results_dir)}; specs there: "
                             f"{', '.join(present) or '(none yet)'}")
    chosen = list(dict.fromkeys(names)) if names else present
    artifacts = _artifacts(results_dir)
    views = []
    for name in chosen:
        rows = query(results_dir, spec_name=name)
        params, metrics, records = pivot(rows)
        groups = aggregate_seeds(records)
        label_defenses(groups)
        run_ids = {r["run_id"] for r in rows}
        views.append(SpecView(name, rows, params, metrics, groups, [a for a in artifacts if a["run_id"] in run_ids],
                              unfinished(results_dir, spec_name=name)))
    return views


def _artifacts(results_dir: str | Path) -> list[dict]:
    with reading(results_dir) as conn:
        return [dict(r) for r in conn.execute("SELECT run_id, kind, path, sha256, bytes FROM artifacts "
                                              "ORDER BY run_id, rowid")]


def axis_values(group: dict) -> dict[str, Any]:
    """The values that place ``group`` in its grid: context axes, then parameters (see the module docstring)."""
    values: dict[str, Any] = {"model": group["model"], "target": group.get("target"),
                              "defense": group.get("defense_label", group.get("defense")), "attack": group["attack"]}
    values.update(group["params"])
    for k, v in (group.get("defense_params") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values[f"defense.{k}"] = v
    return values


def varying_axes(groups: list[dict]) -> list[str]:
    """The axes with more than one value over ``groups``, context axes first, then parameters in pivot order."""
    seen: dict[str, set[str]] = {}
    for g in groups:
        for k, v in axis_values(g).items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    present = {k for g in groups for k in axis_values(g)}
    for k in present:  # a parameter that some groups lack varies too (present vs absent)
        if any(k not in axis_values(g) for g in groups):
            seen[k].add("<absent>")
    return [k for k in seen if len(seen[k]) > 1]


def shown_axes(groups: list[dict], params: list[str]) -> list[str]:
    """The columns a table shows: the varying axes, plus a budget parameter that every cell shares
    (``eps``, ``norm``, ``steps``: what ``mmsec results`` always shows)."""
    varying = varying_axes(groups)
    always = [p for p in params if p in ALWAYS_SHOWN_PARAMS and p not in varying]
    ordered = [a for a in CONTEXT_AXES if a in varying]
    ordered += [p for p in params if p in varying or p in always]
    return ordered + [a for a in varying if a not in ordered]


def constant_context(groups: list[dict]) -> dict[str, Any]:
    """The context axes every group shares (named once above a table instead of in a column)."""
    if not groups:
        return {}
    varying = set(varying_axes(groups))
    first = axis_values(groups[0])
    return {a: first[a] for a in CONTEXT_AXES if a not in varying and first.get(a) not in (None, "none")}


def format_axis(name: str, value: Any) -> str:
    """An axis value as the tables show it (budgets as k/255)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return format_param(name.removeprefix("defense."), value)


def group_label(group: dict, axes: list[str], skip: tuple[str, ...] = ()) -> str:
    """``axis=value`` pairs of ``axes`` (context axes by value alone), e.g. ``zoo:shapes-clip-vit, tecoa, eps=4/255``."""
    values = axis_values(group)
    parts = []
    for a in axes:
        if a in skip or a not in values:
            continue
        text = format_axis(a, values[a])
        parts.append(text if a in CONTEXT_AXES else f"{a}={text}")
    return ", ".join(parts) or group["attack"]


__all__ = ["CONTEXT_AXES", "SpecView", "axis_values", "constant_context", "format_axis", "group_label",
           "read_specs", "shown_axes", "varying_axes"]
