"""Reading the results store: rows for a spec, formatted as a table, CSV or JSON.

:func:`query` returns one row per (run, metric): everything needed to interpret the number
(the metric's definition, version and threat model; spec hash, seed, versions, wall time).

:func:`format_results` chooses the shape per format:

- ``table`` and ``csv`` are *pivoted*: one line per run (grid cell), one column per metric, so
  "robust accuracy per eps" reads down a column next to the clean and noise-baseline accuracy
  of the same cell. The table shows the attack parameters that vary plus ``eps``/``norm``/
  ``steps``, writes budgets as ``k/255`` and rounds values; the CSV keeps every parameter and
  full precision.
- ``json`` is the long form (one object per run and metric, with definitions), for tools.

Pass ``pivot=`` to override. With ``seeds="mean"`` the pivoted views aggregate the seeds of a grid's seed
axis (:func:`aggregate_seeds`): one line per group of runs that differ only in their seed, each metric as its
mean with a 95% Student-t interval (:func:`mmsec.metrics.intervals.t_interval`) and the number of seeds. :func:`unfinished` and :func:`format_unfinished` list the cells that are
not done (failed with their error's first line, running, or interrupted), which ``mmsec results``
prints after the finished ones. The store is opened read-only (:func:`mmsec.runs.store.open_for_reading`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .cells import format_eps
from .store import DB_NAME, StoreError, reading

FORMATS = ("table", "csv", "json")
SEED_VIEWS = ("each", "mean")
INTERVAL_LEVEL = 0.95
# Metric column order in pivoted views (others follow alphabetically).
_METRIC_ORDER = ("clean_accuracy", "top5_accuracy", "noise_accuracy", "robust_accuracy", "attack_success_rate",
                 "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1_noise", "i2t_r1_adv",
                 "i2t_r5_adv", "i2t_r10_adv", "t2i_r1_adv", "mean_perturbation_linf", "defense_train_seconds",
                 "clean_i2t_r1", "clean_t2i_r1", "asr_noise", "asr", "asr_i2t", "asr_t2i", "adv_i2t_r1",
                 "adv_t2i_r1", "words_changed")
ALWAYS_SHOWN_PARAMS = ("eps", "norm", "steps")
_PARAM_ORDER = ("eps", "alpha", "steps", "norm")


# The generic keys of a cell (runs/grid.py) and task blocks that are settings, not axes.
CELL_KEYS = {"spec_name", "model", "seed", "data", "task", "attack", "targeted", "baseline", "metrics", "batch_size",
              "save_artifacts", "defense", "inputs", "target", "training"}


def axis_value(value: Any) -> Any:
    if isinstance(value, dict):
        params = value.get("params") or {}
        inner = ",".join(f"{k}={v}" for k, v in params.items())
        return f"{value['name']}({inner})" if inner else value["name"]
    return value


def query(results_dir: str | Path, spec_name: str | None = None) -> list[dict]:
    """Rows of finished runs, one per (run, metric), in run order.

    Each row: run_id, spec_name, spec_hash, cell_hash, model, attack, params (the attack's
    hyper-parameters as it ran, defaults included), spec_params (as the spec gave them), seed,
    targeted, task, data (dict), metric, value, metric_version, threat_model, definition,
    higher_is_better, mmsec_version, torch_version, wall_time_s, finished_at.
    """
    with reading(results_dir) as conn:
        sql = ("SELECT r.run_id, r.spec_name, r.cell_hash, r.cell_json, r.attack_params_json, r.model, r.attack, "
               "r.finished_at, "
               "m.name AS metric, m.value, m.metric_version, m.threat_model, m.definition, m.higher_is_better, "
               "m.spec_hash, m.seed, m.mmsec_version, m.torch_version, m.wall_time_s "
               "FROM runs r JOIN metrics m ON m.run_id = r.run_id WHERE r.status = 'done'")
        args: list[Any] = []
        if spec_name is not None:
            sql += " AND r.spec_name = ?"
            args.append(spec_name)
        rows = conn.execute(sql + " ORDER BY r.run_id, m.rowid", args).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        try:
            cell = json.loads(d.pop("cell_json"))
            resolved = json.loads(d.pop("attack_params_json") or "null")
            spec_params = cell["attack"]["params"]
            if not isinstance(spec_params, dict) or not isinstance(cell, dict):
                raise TypeError("the cell's attack parameters are not a mapping")
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"run {d['run_id']} in {Path(results_dir) / DB_NAME} is damaged (its cell does not "
                             f"read back: {type(e).__name__}); the store file was modified outside mmsec") from e
        d["params"] = resolved if isinstance(resolved, dict) else spec_params
        d["spec_params"] = spec_params
        d["targeted"] = cell.get("targeted", False)
        d["target"] = cell.get("target")  # task transfer: the model the source's pairs were scored on
        d["defense"] = (cell.get("defense") or {}).get("name", "none")
        d["defense_params"] = (cell.get("defense") or {}).get("params", {})
        d["task"] = cell.get("task")
        for key, value in cell.items():  # a task's own axis values (universal's world, merging's method), as params
            if key not in CELL_KEYS and (isinstance(value, (str, int, float)) or
                                          (isinstance(value, dict) and "name" in value)):
                d["params"] = {**d["params"], key: axis_value(value)}
        d["data"] = cell.get("data")
        d["higher_is_better"] = bool(d["higher_is_better"])
        out.append(d)
    return out


def spec_names(results_dir: str | Path) -> list[str]:
    """The spec names with runs (of any status) in the store, sorted."""
    with reading(results_dir) as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT spec_name FROM runs ORDER BY spec_name")]


def unfinished(results_dir: str | Path, spec_name: str | None = None) -> list[dict]:
    """Cells not done: one dict per failed or running run (spec_name, model, attack, label, status, error,
    attempts, host, pid, started_at), ``status`` ``interrupted`` for a running row whose process on this host
    is gone; ``error`` is the first line of the latest failure."""
    import socket

    from .store import _pid_alive

    with reading(results_dir) as conn:
        sql = ("SELECT run_id, spec_name, model, attack, cell_json, status, error, attempts, host, pid, started_at "
               "FROM runs WHERE status != 'done'")
        args: list[Any] = []
        if spec_name is not None:
            sql += " AND spec_name = ?"
            args.append(spec_name)
        rows = [dict(r) for r in conn.execute(sql + " ORDER BY run_id", args)]
    host = socket.gethostname()
    for r in rows:
        try:
            cell = json.loads(r.pop("cell_json"))
            r["params"] = (cell.get("attack") or {}).get("params") or {}
        except (ValueError, AttributeError):
            r["params"] = {}
    for r in rows:  # label: the budget and what tells the cell apart from the others listed of its spec and attack
        peers = [o["params"] for o in rows if (o["spec_name"], o["attack"]) == (r["spec_name"], r["attack"])]
        shown = [k for k, v in r["params"].items() if not isinstance(v, (dict, list)) and (
            k in ALWAYS_SHOWN_PARAMS or len({json.dumps(p.get(k)) for p in peers}) > 1)]
        r["label"] = " ".join(f"{k}={format_param(k, r['params'][k])}" for k in shown)
        r["error"] = (str(r["error"] or "").strip().splitlines() or [""])[0]
        if r["status"] == "running" and r["host"] == host and r["pid"] is not None and not _pid_alive(r["pid"]):
            r["status"] = "interrupted"
    return rows


def format_unfinished(rows: list[dict]) -> str:
    """Failed, running and interrupted cells as text lines (what, status, the error's first line)."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("failed", "running", "interrupted")}
    head = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [f"cells not finished ({head}):"]
    for r in rows:
        what = f"{r['spec_name']} | {r['model']} | {r['attack']} {r['label']}".rstrip()
        if r["status"] == "failed":
            state = f"failed (attempt {r['attempts']}): {r['error']}"
        elif r["status"] == "running":
            state = f"running (pid {r['pid']} on {r['host']}, since {r['started_at']})"
        else:
            state = f"interrupted (pid {r['pid']} is gone; `mmsec run` computes it again)"
        lines.append(f"  run {r['run_id']}: {what}: {state}")
    return "\n".join(lines) + "\n"


def pivot(rows: list[dict]) -> tuple[list[str], list[str], list[dict]]:
    """(param names, metric names, one record per run with ``params`` and ``metrics`` dicts)."""
    runs: dict[int, dict] = {}
    for r in rows:
        rec = runs.setdefault(r["run_id"], {k: r.get(k, d) for k, d in (
            ("run_id", None), ("spec_name", None), ("model", None), ("target", None), ("defense", "none"),
            ("defense_params", {}), ("attack", None),
            ("seed", None), ("targeted", False), ("params", {}), ("wall_time_s", None))})
        rec.setdefault("metrics", {})[r["metric"]] = r["value"]
    records = list(runs.values())
    found = {k for rec in records for k in rec["params"]}
    params = [p for p in _PARAM_ORDER if p in found] + sorted(found - set(_PARAM_ORDER))
    metric_names = {m for rec in records for m in rec["metrics"]}
    metrics = [m for m in _METRIC_ORDER if m in metric_names] + sorted(metric_names - set(_METRIC_ORDER))
    records.sort(key=lambda rec: (rec["spec_name"], rec["model"], rec["defense"], rec["attack"],
                                  tuple(_sort_key(rec["params"].get(p)) for p in params), rec["target"] or "",
                                  rec["seed"]))
    return params, metrics, records


def _sort_key(v: Any) -> tuple:
    if v is None:
        return (0, 0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0, str(v))


def format_value(name: str, v: Any) -> str:
    if v is None:
        return ""
    if name == "mean_perturbation_linf":
        return f"{v:.4f}"
    if name == "defense_train_seconds":
        return f"{v:.1f}"
    return f"{v:.3f}"


def _fmt_interval(name: str, iv: Any) -> str:
    if iv is None:
        return ""
    if iv.n < 2:
        return format_value(name, iv.mean)
    return f"{format_value(name, iv.mean)} ± {format_value(name, iv.half_width)}"


def format_param(name: str, v: Any) -> str:
    if v is None:
        return ""
    if name in ("eps", "alpha", "step_size") and isinstance(v, (int, float)) and 0 <= v <= 1:  # pixel budgets: k/255
        return format_eps(v)
    return str(v)


def format_results(rows: list[dict], fmt: str = "table", pivot_runs: bool | None = None,
                   cached: set[int] | None = None, seeds: str = "each") -> str:
    """Render :func:`query` rows as ``table`` (text), ``csv`` or ``json``; see the module docstring.

    ``cached``: run ids read back from the store by the run being reported (``mmsec run``); the table's
    ``time_s`` reads ``cached`` for them, not a compute time that was not spent now. ``seeds``: ``each``
    (one line per run) or ``mean`` (runs that differ only in their seed aggregated, :func:`aggregate_seeds`;
    pivoted, in every format).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if seeds not in SEED_VIEWS:
        raise ValueError(f"seeds must be one of {SEED_VIEWS}, got {seeds!r}")
    if seeds == "mean":
        return _format_aggregated(rows, fmt)
    wide = (fmt != "json") if pivot_runs is None else pivot_runs
    if not wide:
        if fmt == "json":
            return json.dumps(rows, indent=2, sort_keys=True)
        return _csv([{**{k: v for k, v in r.items() if k not in ("params", "spec_params", "data")},
                      **{f"param.{k}": v for k, v in r["params"].items()}} for r in rows])
    params, metrics, records = pivot(rows)
    if fmt == "json":
        return json.dumps(records, indent=2, sort_keys=True)
    if fmt == "csv":
        return _csv([{"run_id": rec["run_id"], "spec": rec["spec_name"], "model": rec["model"],
                      **({"target": rec["target"]} if rec["target"] else {}), "defense": rec["defense"], "attack": rec["attack"], **{p: rec["params"].get(p) for p in params}, "seed": rec["seed"],
                      "targeted": rec["targeted"], **{m: rec["metrics"].get(m) for m in metrics},
                      "wall_time_s": rec["wall_time_s"]} for rec in records])
    return _table(params, metrics, records, cached or set())


def aggregate_seeds(records: list[dict], level: float = INTERVAL_LEVEL) -> list[dict]:
    """Group :func:`pivot` records that differ only in their seed (and run id, wall time): one record per
    group, in the records' order, with ``seeds`` (sorted), ``n_seeds``, ``metrics`` (the mean over the
    group's runs that have the metric), ``intervals`` (metric -> :class:`~mmsec.metrics.intervals.Interval`,
    Student-t at ``level``; NaN bounds for one value) and ``wall_time_s`` (the mean)."""
    from ..metrics.intervals import t_interval

    groups: dict[str, list[dict]] = {}
    for rec in records:
        key = json.dumps([rec["spec_name"], rec["model"], rec["target"], rec["defense"], rec["defense_params"],
                          rec["attack"], rec["targeted"], rec["params"]], sort_keys=True, default=str)
        groups.setdefault(key, []).append(rec)
    out = []
    for recs in groups.values():
        first = recs[0]
        names = list(dict.fromkeys(m for r in recs for m in r["metrics"]))
        intervals = {m: t_interval([r["metrics"][m] for r in recs if r["metrics"].get(m) is not None], level)
                     for m in names if any(r["metrics"].get(m) is not None for r in recs)}
        times = [r["wall_time_s"] for r in recs if r["wall_time_s"] is not None]
        out.append({**{k: v for k, v in first.items() if k not in ("run_id", "seed", "metrics", "wall_time_s")},
                    "run_ids": [r["run_id"] for r in recs], "seeds": sorted(r["seed"] for r in recs),
                    "n_seeds": len(recs), "metrics": {m: iv.mean for m, iv in intervals.items()},
                    "intervals": intervals, "wall_time_s": sum(times) / len(times) if times else None})
    return out


def _format_aggregated(rows: list[dict], fmt: str) -> str:
    params, metrics, records = pivot(rows)
    groups = aggregate_seeds(records)
    if fmt == "json":
        return json.dumps([{**{k: v for k, v in g.items() if k != "intervals"},
                            "intervals": {m: {"low": _finite(iv.low), "high": _finite(iv.high), "n": iv.n,
                                              "level": iv.level, "method": iv.method}
                                          for m, iv in g["intervals"].items()}} for g in groups],
                          indent=2, sort_keys=True)
    if fmt == "csv":
        return _csv([{"spec": g["spec_name"], "model": g["model"], **({"target": g["target"]} if g["target"] else {}),
                      "defense": g["defense"], "attack": g["attack"], **{p: g["params"].get(p) for p in params},
                      "targeted": g["targeted"], "n_seeds": g["n_seeds"], "seeds": " ".join(map(str, g["seeds"])),
                      **{f"{m}{suffix}": _finite(getattr(g["intervals"][m], attr)) if m in g["intervals"] else None
                         for m in metrics for suffix, attr in (("", "mean"), ("_low", "low"), ("_high", "high"))},
                      "wall_time_s": g["wall_time_s"]} for g in groups])
    if all(g["n_seeds"] == 1 for g in groups):  # no seed axis: the per-run table says more (the seed itself)
        return _table(params, metrics, records)
    return _table(params, metrics, groups, aggregated=True)


def _finite(v: float) -> float | None:
    return None if v != v else v  # (NaN, an undefined bound, as null / an empty CSV field)


def _csv(dicts: list[dict]) -> str:
    buf = io.StringIO()
    if not dicts:
        return ""
    fields = list(dict.fromkeys(k for d in dicts for k in d))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(dicts)
    return buf.getvalue()


def _table(params: list[str], metrics: list[str], records: list[dict],
           cached: set[int] | frozenset[int] = frozenset(), aggregated: bool = False) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if not records:
        return "(no finished runs)\n"
    shown = [p for p in params if p in ALWAYS_SHOWN_PARAMS
             or len({json.dumps(rec["params"].get(p)) for rec in records}) > 1]
    # Context columns that are the same on every line move to the title, to keep the table narrow.
    label_defenses(records)
    context = {"spec": "spec_name", "model": "model", "target": "target", "defense": "defense_label",
               "attack": "attack"}
    if all(rec["defense"] == "none" for rec in records):
        del context["defense"]  # runs without any defense: nothing to say
    if all(rec["target"] is None for rec in records):
        del context["target"]  # not a transfer run
    constant = {col for col, key in context.items() if len({rec[key] for rec in records}) == 1}
    title = " | ".join(f"{col} {records[0][context[col]]}" for col in context if col in constant)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title or None, title_justify="left")
    # (a method's own parameter named like a column of the cell, e.g. an attack's seed, is headed as a parameter)
    headers = [f"{p} (param)" if p in ("seed", "seeds") else p for p in shown]
    for col in [c for c in context if c not in constant] + [*headers, "seeds" if aggregated else "seed"]:
        table.add_column(col)
    targeted = any(rec["targeted"] for rec in records)
    if targeted:
        table.add_column("targeted")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("time_s", justify="right")
    for rec in records:
        cells = [rec[key] for col, key in context.items() if col not in constant]
        cells += [*[format_param(p, rec["params"].get(p)) for p in shown],
                  str(rec["n_seeds"]) if aggregated else str(rec["seed"])]
        if targeted:
            cells.append("yes" if rec["targeted"] else "no")
        if aggregated:
            cells += [_fmt_interval(m, rec["intervals"].get(m)) for m in metrics]
        else:
            cells += [format_value(m, rec["metrics"].get(m)) for m in metrics]
        if not aggregated and rec["run_id"] in cached:
            cells.append("cached")
        else:
            cells.append(f"{rec['wall_time_s']:.1f}" if rec["wall_time_s"] is not None else "")
        table.add_row(*cells)
    console = Console(file=io.StringIO(), width=1000, color_system=None, force_terminal=False, highlight=False)
    console.print(table)
    if aggregated:
        console.print(f"each value: the mean over the seeds, +- half the {INTERVAL_LEVEL:.0%} Student-t interval (none "
                      "with one seed); time_s: the mean; `--seeds each` shows every run")
    text = console.file.getvalue()
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def label_defenses(records: list[dict]) -> None:
    """``defense_label``: the defense's name, with the parameters that tell apart entries of the same name."""
    by_name: dict[str, list[dict]] = {}
    for rec in records:
        by_name.setdefault(rec["defense"], []).append(rec)
    for name, recs in by_name.items():
        keys = sorted({k for r in recs for k in r.get("defense_params", {})})
        differing = [k for k in keys if len({json.dumps(r.get("defense_params", {}).get(k)) for r in recs}) > 1]
        for r in recs:
            p = r.get("defense_params", {})
            shown = [k for k in differing if k in p]  # (an entry that leaves a parameter at its default omits it)
            r["defense_label"] = f"{name}({', '.join(f'{k}={format_param(k, p[k])}' for k in shown)})" if shown else name


def format_matrix(rows: list[dict], metric: str = "asr") -> str:
    """Transfer runs as source x target matrices of ``metric``, one per (spec, attack, parameters, seed)."""
    params, _, records = pivot([r for r in rows if r.get("target")])
    if not records:
        return "(no transfer runs: a matrix needs task 'transfer' results)\n"
    groups: dict[tuple, dict[tuple[str, str], float | None]] = {}
    for rec in records:
        key = (rec["spec_name"], rec["attack"],  # (only the parameters this attack has, when attacks are mixed)
               tuple((p, json.dumps(rec["params"][p])) for p in params if p in rec["params"]), rec["seed"])
        groups.setdefault(key, {})[(rec["model"], rec["target"])] = rec["metrics"].get(metric)
    varying = [p for p in params if len({json.dumps(rec["params"].get(p)) for rec in records}) > 1
               or p in ALWAYS_SHOWN_PARAMS]
    out = []
    for (spec, attack, ps, seed), cells in groups.items():
        values = dict(ps)
        shown = ", ".join(f"{p}={format_param(p, json.loads(values[p]))}" for p in varying if p in values)
        sources = list(dict.fromkeys(s for s, _ in cells))
        targets = list(dict.fromkeys(t for _, t in cells))
        lines = [f"{spec} | {attack} ({shown}) | seed {seed} | {metric}: rows = source, columns = target"]
        width = max(len(s) for s in sources + targets)
        lines.append(" " * width + "  " + "  ".join(t.rjust(width) for t in targets))
        for s in sources:
            lines.append(s.ljust(width) + "  " + "  ".join(
                (format_value(metric, cells.get((s, t))) or "-").rjust(width) for t in targets))
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


__all__ = ["ALWAYS_SHOWN_PARAMS", "CELL_KEYS", "FORMATS", "aggregate_seeds", "axis_value", "format_matrix",
           "format_param", "format_results", "format_unfinished", "format_value", "label_defenses", "pivot", "query",
           "spec_names", "unfinished"]
