"""Grid expansion: a spec's list-valued fields become the cartesian product of cells.

Axes, outermost first: ``model`` x ``defense`` x ``seed`` x ``attack`` (a list of attacks) x each
list-valued attack parameter in the order the spec gives them x the task's own axes (``target``
of task transfer: innermost, so the cells scoring one source's adversarial pairs on every target
run back to back and share them). Each cell is a plain dict holding everything that determines its
result (spec name, model, seed, data, task, resolved attack parameters, targeted, baseline,
metrics, batch size, artifacts flag, and what the task adds: its axis values, its own settings),
and its ``cell_hash`` is the sha256 of that dict's canonical JSON. The dict's ``inputs`` holds the content
hashes of the files the cell reads (each model's weights, file-backed data), so re-saved weights under the
same name make a new cell, never an old result. The spec's own hash is not part
of a cell, so adding a value to a list keeps the other cells' hashes (and their stored results)
valid: a resumed or extended grid only computes what is new.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cells import format_eps
from .spec import Spec, SpecError, defense_config, load_spec, param_combinations
from .task import get_task


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8: the same dict always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def hash_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def spec_hash(spec: Spec | dict | str) -> str:
    """sha256 of the normalised spec (fractions resolved, defaults filled in, the task's block validated)."""
    spec = load_spec(spec)
    return hash_json({**spec.model_dump(mode="json"), **spec.block.model_dump(mode="json")})


@dataclass(frozen=True)
class Cell:
    """One point of the grid. ``config`` is what :func:`mmsec.runs.execute.execute_cell` runs."""

    index: int
    config: dict = field(repr=False)
    varying: tuple[str, ...] = ()

    @property
    def cell_hash(self) -> str:
        return hash_json(self.config)

    @property
    def label(self) -> str:
        """Short human description from the varying axes, e.g. ``eps=4/255 seed=1``."""
        parts = []
        for key in self.varying:
            if key == "model":
                parts.append(f"model={self.config['model']}")
            elif key == "seed":
                parts.append(f"seed={self.config['seed']}")
            elif key == "defense":
                d = self.config.get("defense") or {}
                parts.append(f"defense={_short({'name': d['name'], 'params': d['params']}) if d else 'none'}")
            elif key == "attack":
                parts.append(f"attack={self.config['attack']['name']}")
            elif key in self.config["attack"]["params"]:  # (with a list of attacks, not every one has it)
                v = self.config["attack"]["params"][key]
                parts.append(f"{key}={format_eps(v) if key in ('eps', 'alpha') else _short(v)}")
            elif key in self.config:  # a task's own axis (transfer's target, merging's method)
                parts.append(f"{key}={_short(self.config[key])}")
        return " ".join(parts) or f"{self.config['attack']['name']} seed={self.config['seed']}"


def input_fingerprints(config: dict, task: Any) -> dict[str, str]:
    """Content hashes of the files a cell reads: its models' weights (by role: model, target, ...) and
    file-backed data (the evaluation data, the defense's data). A shapes-world data set is generated, not read."""
    from ..models.loaders import fingerprint

    out: dict[str, str] = {}
    for role, name in model_roles(task.models_of(config)):
        try:
            fp = fingerprint(name) if name else None
        except (KeyError, ValueError) as e:
            raise SpecError(f"invalid experiment spec ({config['spec_name']}): {e}") from None
        if fp is not None:
            out[role] = fp
    for role, data in (("data", config.get("data")), ("defense_data", (config.get("defense") or {}).get("data"))):
        fp = data_fingerprint(data) if data else None
        if fp is not None:
            out[role] = fp
    return out


def model_roles(models: list[str]) -> list[tuple[str, str]]:
    """(role, model name) of a cell's models in ``task.models_of`` order: model, target, model2, ..."""
    roles = ["model", "target"] + [f"model{i}" for i in range(2, len(models))]
    return list(zip(roles, models, strict=False))


def data_fingerprint(data: dict) -> str | None:
    """The content hash of a file-backed data set (its folder or file; a caption file's folder, where its images
    are); None for generated data (the shapes world)."""
    from ..fingerprint import tree_sha256

    path = data.get("path")
    if not path:
        return None
    p = Path(path)
    try:
        return tree_sha256(p.parent if p.is_file() and data.get("name") == "captions" else p)
    except OSError as e:
        raise SpecError(f"invalid experiment spec: data.path {path!r} cannot be read: {e}") from None


def _short(v: Any) -> str:
    """A value for a label: a component ``{name, params}`` as ``name(k=v, ...)``."""
    if isinstance(v, dict) and "name" in v:
        params = v.get("params") or {}
        inner = ",".join(f"{k}={format_eps(x) if k in ('eps', 'alpha') else _short(x)}" for k, x in params.items())
        return f"{v['name']}({inner})" if inner else str(v["name"])
    return str(v)


def expand(spec: Spec | dict | str) -> list[Cell]:
    """The spec's cells in deterministic order (model, defense, seed, attack, attack params, task axes)."""
    spec = load_spec(spec)
    task = get_task(spec.task)
    block = spec.block
    task_axes = [(name, getattr(block, name)) for name in task.axes]
    # (label order: the model and the task's axes first, e.g. "model=A target=B eps=4/255")
    varying = ("model",) if isinstance(spec.model, list) else ()
    varying += tuple(name for name, v in task_axes if isinstance(v, list))
    varying += tuple(k for k, v in (("defense", spec.defense), ("seed", spec.seed), ("attack", spec.attack))
                     if isinstance(v, list))
    varying += tuple(dict.fromkeys(k for a in spec.attacks for k, v in a.params.items() if isinstance(v, list)))
    # a task axis lists its values innermost; outer axes first in their order
    task_values = [list(v) if isinstance(v, list) else [v] for _, v in task_axes]
    task_names = [name for name, _ in task_axes]
    cells = []
    attack_combos = [(a.name, combo) for a in spec.attacks for combo in param_combinations(a.params)]
    axes = [(m, d, s, a, t) for m, d, s, a, *rest in itertools.product(spec.models, spec.defenses, spec.seeds,
                                                                      attack_combos, *task_values)
            for t in [dict(zip(task_names, rest, strict=True))]
            if d is None or d.applies_to(m)]  # a defense entry may name the models it is for
    for i, (model, defense, seed, (attack, combo), task_axis_values) in enumerate(axes):
        config = {
            "spec_name": spec.name,
            "model": model,
            "seed": seed,
            "data": spec.data.config(seed),  # (seed-dependent with data.resample)
            "task": spec.task,
            "attack": {"name": attack, "params": combo},
            "targeted": spec.targeted,
            "baseline": spec.baseline,
            "metrics": list(spec.metrics or []),
            "batch_size": spec.batch_size,
            "save_artifacts": spec.save_artifacts,
        }
        config.update(task.cell_fields(block, task_axis_values))  # (only what the task has: others keep hashes)
        if defense is not None:  # only present when used, so undefended cells keep their hashes
            config["defense"] = defense_config(defense)
        config["inputs"] = input_fingerprints(config, task)
        cells.append(Cell(i, config, varying))
    hashes = [c.cell_hash for c in cells]
    if len(set(hashes)) != len(hashes):  # e.g. two alpha values that resolve to the same float
        raise SpecError(f"invalid experiment spec ({spec.name}): the grid has duplicate cells (two list values resolve to the same setting)")
    return cells


__all__ = ["Cell", "canonical_json", "expand", "hash_json", "spec_hash"]
