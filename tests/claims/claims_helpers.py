"""Synthetic records for claim tests: the cells a recipe's spec expands to, with metric values chosen by the test,
shaped as :func:`mmsec.runs.results.pivot` shapes stored runs (so an effect reads them as it reads the store)."""

from mmsec.claims import Cells
from mmsec.runs import expand
from mmsec.runs.results import CELL_KEYS, axis_value


def record_of(config: dict, metrics: dict) -> dict:
    """A pivot record for one cell config (attack parameters as the spec gave them, plus the task's axes)."""
    params = dict(config["attack"]["params"])
    for key, value in config.items():  # (as results.query adds a task's axis values)
        if key not in CELL_KEYS and (isinstance(value, (str, int, float)) or
                                      (isinstance(value, dict) and "name" in value)):
            params[key] = axis_value(value)
    defense = config.get("defense") or {}
    return {"run_id": None, "spec_name": config["spec_name"], "model": config["model"], "target": config.get("target"),
            "defense": defense.get("name", "none"), "defense_params": defense.get("params", {}),
            "attack": config["attack"]["name"], "seed": config["seed"], "targeted": config.get("targeted", False),
            "params": params, "wall_time_s": None, "metrics": dict(metrics)}


def synthetic_cells(spec, seed: int, value) -> Cells:
    """The cells of ``spec`` at ``seed``, each metric of the spec set to ``value(record, metric)``."""
    records = []
    for cell in expand(spec):
        if cell.config["seed"] != seed:
            continue
        rec = record_of(cell.config, {})
        rec["metrics"] = {m: float(value(rec, m)) for m in cell.config["metrics"]}
        records.append(rec)
    return Cells(records, seed)
