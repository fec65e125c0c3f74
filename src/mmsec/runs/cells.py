"""What every cell shares, whatever its task: seeds per purpose, eps formatting, metric rows, the result dict.

Determinism: every random draw of a cell comes from a generator seeded by :func:`derive_seed`
from the cell seed, one independent stream per purpose (attack random start, baseline noise,
target choice, defense training), so one purpose never shifts another's draws.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from typing import Any

import torch

from ..metrics import DEFINITIONS, MetricDefinition


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose, a pure function of (seed, purpose)."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def generator(seed: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


def format_eps(value: Any) -> str:
    """``8/255`` for multiples of 1/255 (up to two decimals: ``0.25/255``), else ``%g``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    k = value * 255
    if abs(k - round(k, 2)) < 1e-9 and value != 0:
        return f"{round(k, 2):g}/255"
    return f"{value:g}"


def jsonable(v: Any) -> Any:
    """A JSON-safe copy of a parameter value (objects as their repr, one-element tensors as numbers)."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    to_dict = getattr(v, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    return repr(v)


def method_params(method: Any) -> dict[str, Any]:
    """A method's configured hyper-parameters, JSON-safe (what the store keeps with each run)."""
    params = method.params() if hasattr(method, "params") else {}
    return {k: jsonable(v) for k, v in params.items()}


def compact(method: Any) -> str:
    """A registered method as ``name(k=v, ...)`` with only the arguments that differ from its defaults."""
    import inspect

    from ..methods import Method

    if not isinstance(method, Method):
        return str(method)
    config = method.config()
    defaults = {p.name: p.default for p in inspect.signature(type(method).__init__).parameters.values()}
    changed = {k: v for k, v in config["params"].items() if jsonable(defaults.get(k)) != v}
    inner = ",".join(f"{k}={format_eps(v) if k in ('eps', 'alpha') else _brief(v)}" for k, v in changed.items())
    return f"{config['name']}({inner})" if inner else config["name"]


def _brief(v: Any) -> str:
    """A long nested list (a pattern) as its shape, ``<3x4x4>``; anything else as itself."""
    if isinstance(v, list) and len(str(v)) > 40:
        shape = []
        while isinstance(v, list):
            shape.append(len(v))
            v = v[0] if v else None
        return "<" + "x".join(map(str, shape)) + ">"
    return str(v)


def metric_definition(name: str) -> MetricDefinition:
    """The definition of a metric any registered task can store (global DEFINITIONS first)."""
    if name in DEFINITIONS:
        return DEFINITIONS[name]
    from .. import builtins, registry

    builtins.load()
    for entry in registry.entries("tasks"):
        d = entry.factory.metrics.get(name)
        if d is not None:
            return d
    raise KeyError(f"no definition for metric {name!r}")


def metric_rows(names: list[str], values: dict[str, float], definitions: dict[str, MetricDefinition],
                threat_of: Any) -> list[dict]:
    """One stored row per metric present in ``values``: its value, definition and threat model."""
    rows = []
    for name in names:
        if name not in values:
            continue
        value = float(values[name])
        if not math.isfinite(value):
            raise ValueError(f"metric {name} is {value}; refusing to store a non-finite value")
        d = definitions.get(name) or metric_definition(name)
        rows.append({"name": name, "value": value, "metric_version": d.version, "threat_model": threat_of(name),
                     "definition": d.description, "higher_is_better": bool(d.higher_is_better)})
    return rows


def cell_result(metrics: list[dict], artifacts: list[dict], attack_params: dict, baseline_params: dict | None,
                n_samples: int, t0: float) -> dict:
    """The plain dict a cell returns to the runner, with versions, host and timing."""
    from .. import __version__

    return {"metrics": metrics, "artifacts": artifacts, "attack_params": attack_params,
            "baseline_params": baseline_params, "n_samples": n_samples, "wall_time_s": time.perf_counter() - t0,
            "mmsec_version": __version__, "torch_version": torch.__version__, "host": socket.gethostname(),
            "pid": os.getpid()}


__all__ = ["cell_result", "compact", "derive_seed", "format_eps", "generator", "jsonable", "method_params", "metric_definition",
           "metric_rows"]
