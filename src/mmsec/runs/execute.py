"""Execute one grid cell through its task plugin; the same code in-process and in a Ray worker.

A cell is a plain dict (see :mod:`mmsec.runs.grid`). :func:`execute_cell` asks the task registered
under ``cell["task"]`` to run it with a :class:`~mmsec.runs.context.CellContext`, turns the task's
values into metric rows (each with its definition and threat model) and returns a plain,
JSON-serialisable dict; the driver alone writes to the results store.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from .cells import cell_result, metric_rows
from .context import CellContext
from .task import get_task

logger = logging.getLogger(__name__)


def execute_cell(cell: dict, staging_dir: str | Path | None = None, results_dir: str | Path | None = None) -> dict:
    """Run one cell and return its metrics (and staged artifact files) as a plain dict.

    Artifacts (when ``cell['save_artifacts']`` and ``staging_dir`` is given) are written to a fresh
    temporary folder under ``staging_dir``; the driver moves them into place with ``os.replace``
    just before committing the cell. Models trained inside the cell are persisted under
    ``results_dir`` (when given) for other cells and later runs.

    Returns ``{"metrics": [{name, value, metric_version, threat_model, definition,
    higher_is_better}], "artifacts": [{kind, filename, tmp_path, sha256, bytes}],
    "attack_params", "baseline_params", "n_samples", "wall_time_s", "mmsec_version",
    "torch_version", "host", "pid"}``.
    """
    t0 = time.perf_counter()
    task = get_task(cell["task"])
    ctx = CellContext(results_dir, staging_dir, weights=model_weights(cell, task))
    out = task.run(cell, ctx)
    rows = metric_rows(cell["metrics"], out.values, task.metrics, out.threat_of)
    return cell_result(rows, out.artifacts, out.attack_params, out.baseline_params, out.n_samples, t0)


def model_weights(cell: dict, task: object) -> dict[str, str]:
    """The cell's model names -> the content hashes of their files, from the cell's ``inputs`` (see grid)."""
    from .grid import model_roles

    inputs = cell.get("inputs") or {}
    return {name: inputs[role] for role, name in model_roles(task.models_of(cell)) if name and role in inputs}


def run_cell(cell: dict, staging_dir: str | Path | None = None, results_dir: str | Path | None = None) -> dict:
    """:func:`execute_cell` that never raises an ``Exception``: a failure becomes
    ``{"status": "failed", "error": <traceback>, "wall_time_s": ...}``; success adds
    ``"status": "done"``. (KeyboardInterrupt still propagates: the cell stays resumable.)"""
    t0 = time.perf_counter()
    try:
        out = execute_cell(cell, staging_dir, results_dir)
    except Exception as e:  # noqa: BLE001 - recorded in the store, reported by the runner
        logger.debug("cell failed", exc_info=True)
        return {"status": "failed", "error": f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}",
                "wall_time_s": time.perf_counter() - t0}
    out["status"] = "done"
    return out


__all__ = ["execute_cell", "run_cell"]
