"""``mmsec quickstart``: how robust is a shipped tiny CLIP? One command, under a minute on a laptop CPU.

Runs the quickstart spec (the same as ``recipes/quickstart.yaml``; a test keeps them equal)
through the ordinary runner, so its results land in the results store like any other run and
a second call is a no-op that reads them back.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

EPSILONS = ["1/255", "2/255", "4/255", "8/255"]


class RunFailed(RuntimeError):
    """Some cells of a run failed; their errors are stored in the results store."""


def quickstart_spec(model: str = "zoo:shapes-clip-resnet", n: int = 1000) -> dict:
    return {
        "name": "quickstart",
        "description": "PGD-10 L-inf at eps 1/255..8/255 on the zoo ResNet CLIP, zero-shot shapes, "
                       "with a noise baseline",
        "seed": 0,
        "model": model,
        "data": {"name": "shapes", "split": "test", "n": n, "image_size": 32, "seed": 0},
        "task": "zeroshot",
        "attack": {"name": "pgd", "params": {"eps": list(EPSILONS), "alpha": "eps/4", "steps": 10, "norm": "linf",
                                             "random_start": True}},
        "targeted": False,
        "baseline": "noise",
        "metrics": ["clean_accuracy", "noise_accuracy", "robust_accuracy", "attack_success_rate",
                    "mean_perturbation_linf"],
        "batch_size": 250,
        "save_artifacts": True,
    }


def _eps_key(eps: float) -> str:
    """8/255 as the string "8/255" (the budgets are exact multiples of 1/255)."""
    frac = Fraction(eps).limit_denominator(255)
    return f"{frac.numerator * (255 // frac.denominator)}/255"


def run_quickstart(model: str = "zoo:shapes-clip-resnet", n: int = 1000, results_dir: str | Path = "mmsec-results",
                   quiet: bool = False) -> dict:
    """Run (or read back) the quickstart; return the summary printed by the CLI.

    Keys: ``model``, ``n``, ``clean_accuracy``, ``noise_accuracy`` (uniform noise at 8/255),
    ``robust_accuracy`` (eps string -> accuracy), ``noise_accuracy_by_eps``, ``attack_success_rate``,
    ``results_store``, ``example_png`` (clean vs adversarial at 8/255), ``wall_time_s`` (the compute time of
    the cells computed by this call), ``cached_cells`` (how many cells were read back from the store instead).
    """
    from .runs.runner import run_spec
    from .runs.store import ResultsStore

    summaries = run_spec(quickstart_spec(model, n), results_dir, quiet=quiet)
    failed = [s for s in summaries if s["status"] not in ("done", "cached")]
    if failed:
        raise RunFailed("quickstart cells did not finish: " + "; ".join(f"{s['label']}: {s['error']}" for s in failed)
                        + f". Their tracebacks are in {Path(results_dir) / 'results.sqlite'} (table failures).")
    robust, noise, asr = {}, {}, {}
    pngs: dict[str, str] = {}
    with ResultsStore(results_dir) as store:
        for s in summaries:
            cell = store.get_run(s["cell_hash"])
            eps = _eps_key(json.loads(cell["cell_json"])["attack"]["params"]["eps"])
            robust[eps] = s["metrics"]["robust_accuracy"]
            noise[eps] = s["metrics"]["noise_accuracy"]
            asr[eps] = s["metrics"]["attack_success_rate"]
            for a in store.artifacts(s["run_id"]):
                if a["path"].endswith(".png"):
                    pngs[eps] = str(Path(results_dir) / a["path"])
        store_path = str(store.path)
    robust = {e: robust[e] for e in sorted(robust, key=lambda k: int(k.split("/")[0]))}
    return {
        "model": model,
        "n": n,
        "clean_accuracy": summaries[0]["metrics"]["clean_accuracy"],
        "noise_accuracy": noise["8/255"] if "8/255" in noise else None,
        "robust_accuracy": robust,
        "noise_accuracy_by_eps": noise,
        "attack_success_rate": asr,
        "results_store": store_path,
        "example_png": pngs.get("8/255"),
        "wall_time_s": round(sum(s["wall_time_s"] or 0.0 for s in summaries if s["status"] == "done"), 2),
        "cached_cells": sum(s["status"] == "cached" for s in summaries),
    }
