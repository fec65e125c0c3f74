"""The runner: expand a spec into cells, skip the finished ones, run the rest, store everything.

    from mmsec.runs import run_spec
    summaries = run_spec("recipes/quickstart.yaml", "mmsec-results")

Resume is the default: a cell already ``done`` in the store is never recomputed (re-running a
finished spec is a no-op); a cell left ``running`` by a killed process, or ``failed``, is run
again. A cell another live process is computing (same spec, same store) is left to it and reported
``busy``: claims are atomic and a runner renews its hold with a heartbeat while it computes, so two
runners never compute one cell twice. A cell that raises is recorded as ``failed`` with its traceback
and the grid carries on; the summaries (and a warning on the log) report it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..progress import progress_bar
from . import execute
from .context import CellContext
from .grid import Cell, expand, spec_hash
from .spec import Spec, load_spec
from .store import Heartbeat, ResultsStore
from .task import get_task

logger = logging.getLogger(__name__)

BACKENDS = ("sequential", "ray")


def _summary(cell: Cell, status: str, run_id: int | None = None, metrics: dict | None = None,
             wall_time_s: float | None = None, error: str | None = None) -> dict:
    return {"index": cell.index, "cell_hash": cell.cell_hash, "label": cell.label, "status": status,
            "run_id": run_id, "metrics": metrics or {}, "wall_time_s": wall_time_s, "error": error}


def _short(error: str | None) -> str | None:
    return error.split("\n\n", 1)[0] if error else error


def run_spec(spec: str | Path | dict | Spec, results_dir: str | Path, backend: str = "sequential",
             quiet: bool = False, num_cpus: int | None = None) -> list[dict]:
    """Run every cell of ``spec`` not yet done in ``results_dir``; return one summary per cell.

    Args:
        spec: a YAML path, a dict or a :class:`~mmsec.runs.spec.Spec`.
        results_dir: folder of the results store (created if missing).
        backend: ``"sequential"`` (in this process) or ``"ray"`` (one Ray task per cell).
        quiet: no progress bar.
        num_cpus: CPUs for a local Ray cluster started here (default: all).

    Returns, in grid order, dicts ``{index, cell_hash, label, status, run_id, metrics,
    wall_time_s, error}`` where status is ``done`` (computed now), ``cached`` (already in the
    store), ``failed`` (error holds the first line; the store holds the traceback) or
    ``busy`` (being computed by another live process on this host).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    spec = load_spec(spec)
    cells = expand(spec)
    shash = spec_hash(spec)
    summaries: list[dict | None] = [None] * len(cells)
    with ResultsStore(results_dir) as store:
        store.clean_staging()
        todo: list[Cell] = []
        for cell in cells:
            run = store.get_run(cell.cell_hash)
            if run is not None and run["status"] == "done":
                summaries[cell.index] = _summary(cell, "cached", run["run_id"], store.metrics(run["run_id"]),
                                                 run["wall_time_s"])
            elif run is not None and store.held_elsewhere(run):
                logger.warning("cell %s is being computed by process %s; skipping it", cell.label, run["pid"])
                summaries[cell.index] = _summary(cell, "busy", run["run_id"])
            else:
                todo.append(cell)
        if todo and backend == "sequential":
            # Pre-flight: a model that cannot be loaded (missing, tampered, pickled) is one clear error
            # before any cell starts, not the same failure once per cell. Cached, so cells reuse it.
            task = get_task(spec.task)
            ctx = CellContext(results_dir)
            for model in dict.fromkeys(m for c in todo for m in task.models_of(c.config) if m):
                ctx.load_model(model)
        if len(todo) < len(cells):
            logger.info("%s: %d of %d cells already in %s", spec.name, len(cells) - len(todo), len(cells), store.path)

        def unclaimed(cell: Cell) -> None:
            """A claim refused: the cell was finished meanwhile, or another live process holds it."""
            run = store.get_run(cell.cell_hash)
            if run is not None and run["status"] == "done":
                summaries[cell.index] = _summary(cell, "cached", run["run_id"], store.metrics(run["run_id"]),
                                                 run["wall_time_s"])
            else:
                logger.warning("cell %s is being computed by process %s on %s; leaving it to that process",
                               cell.label, run and run["pid"], run and run["host"])
                summaries[cell.index] = _summary(cell, "busy", run and run["run_id"])

        def record(cell: Cell, run_id: int, result: dict) -> None:
            heartbeat.release(run_id)
            if not store.holds(run_id):  # taken over meanwhile (this process was thought dead): keep theirs
                logger.warning("cell %s was taken over by another process while it ran here; this result is "
                               "dropped", cell.label)
                summaries[cell.index] = _summary(cell, "busy", run_id)
                return
            if result.get("status") == "done":
                try:
                    store.finish(run_id, result)
                except Exception as e:  # noqa: BLE001 - a cell that cannot be stored is a failed cell
                    result = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                              "wall_time_s": result.get("wall_time_s")}
                else:
                    summaries[cell.index] = _summary(cell, "done", run_id, store.metrics(run_id),
                                                     result["wall_time_s"])
                    return
            store.fail(run_id, result["error"], result.get("wall_time_s"))
            logger.error("cell %s failed: %s", cell.label, _short(result["error"]))
            summaries[cell.index] = _summary(cell, "failed", run_id, wall_time_s=result.get("wall_time_s"),
                                             error=_short(result["error"]))

        with progress_bar(len(todo), f"{spec.name} ({backend})", quiet=quiet) as bar, \
                Heartbeat(store.path) as heartbeat:
            if backend == "sequential":
                for cell in todo:
                    run_id = store.claim(cell.cell_hash, cell.config, shash)
                    if run_id is None:
                        unclaimed(cell)
                        bar.advance(1, cell=cell.label)
                        continue
                    heartbeat.hold(run_id)
                    record(cell, run_id, execute.run_cell(cell.config, store.staging_dir, store.results_dir))
                    bar.advance(1, cell=cell.label)
            else:
                from . import ray_backend

                ray_backend.require_ray()
                claimed = [(cell, store.claim(cell.cell_hash, cell.config, shash)) for cell in todo]
                for cell, run_id in claimed:
                    if run_id is None:
                        unclaimed(cell)
                    else:
                        heartbeat.hold(run_id)
                claimed = [(c, r) for c, r in claimed if r is not None]
                results = (ray_backend.run_cells([c.config for c, _ in claimed], store.staging_dir, num_cpus,
                                                 store.results_dir)
                           if claimed else iter(()))
                for i, result in results:
                    cell, run_id = claimed[i]
                    record(cell, run_id, result)
                    bar.advance(1, cell=cell.label)

    out = [s for s in summaries if s is not None]
    failed = [s for s in out if s["status"] == "failed"]
    if failed:
        logger.warning("%s: %d of %d cells failed: %s", spec.name, len(failed), len(out),
                       json.dumps([f"{s['label']}: {s['error']}" for s in failed]))
    return out


__all__ = ["BACKENDS", "run_spec"]
