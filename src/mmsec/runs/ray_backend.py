"""Ray backend: the grid's cells as Ray tasks on a local (or already running) cluster.

Workers only compute (:func:`mmsec.runs.execute.run_cell`) and return plain dicts; the driver
alone writes to SQLite, in completion order. Each task asks for one CPU and pins torch to one
thread, so ``num_cpus`` tasks run side by side without oversubscribing the machine; this also
makes a cell's numbers identical to the sequential backend's at one thread.

Artifacts are staged by the worker under the results folder and moved into place by the
driver, so on a multi-node cluster the results folder must be on a shared file system.

If Ray is not initialised, :func:`run_cells` starts a local instance
(``ray.init(num_cpus=..., include_dashboard=False, log_to_driver=False)``) and shuts it down
when done; an instance the caller started is used as is and left running.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MMSEC_QUIET": "1"}


def require_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError('the Ray backend needs Ray: pip install "mmsec[ray]" (or use backend="sequential")') from e
    return ray


def _run_in_worker(cell: dict, staging_dir: str | None, results_dir: str | None = None) -> dict:
    """The Ray task body: one torch thread, then the same code path as the sequential backend."""
    import torch

    for k, v in _THREAD_ENV.items():
        os.environ.setdefault(k, v)
    torch.set_num_threads(1)
    from .execute import run_cell

    return run_cell(cell, staging_dir, results_dir)


def run_cells(cells: list[dict], staging_dir: str | Path | None, num_cpus: int | None = None,
              results_dir: str | Path | None = None) -> Iterator[tuple[int, dict]]:
    """Run ``cells`` as Ray tasks; yield ``(index, result)`` as each finishes.

    A task that dies (worker crash, out of memory) yields ``{"status": "failed", "error": ...}``
    like a cell that raised; the other cells carry on.
    """
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": dict(_THREAD_ENV)})
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_run_in_worker)
        staging = str(staging_dir) if staging_dir is not None else None
        results = str(results_dir) if results_dir is not None else None
        refs = {task.remote(cell, staging, results): i for i, cell in enumerate(cells)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a dead worker is a failed cell, not a dead grid
                    logger.debug("ray task failed", exc_info=True)
                    result = {"status": "failed", "error": f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}",
                              "wall_time_s": None}
                yield refs[ref], result
    finally:
        if started:
            ray.shutdown()


__all__ = ["require_ray", "run_cells"]
