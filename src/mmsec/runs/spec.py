"""Experiment specs: a YAML file naming model, data, task, attack, baseline and metrics.

Example (``recipes/quickstart.yaml``)::

    name: quickstart
    seed: 0                      # an int or a list of ints (one grid axis)
    model: zoo:shapes-clip-resnet  # or a list; zoo:NAME, hf:/dir, open_clip:ARCH:/file
    data: {name: shapes, split: test, n: 1000, image_size: 32}
    task: zeroshot               # a registered task (mmsec list tasks)
    attack:
      name: pgd
      params:
        eps: [1/255, 2/255, 4/255, 8/255]   # any list-valued parameter is a grid axis
        alpha: eps/4                         # relative to the cell's eps
        steps: 10
    baseline: noise              # uniform noise of the same budget, run in every cell (null: none)
    metrics: [clean_accuracy, robust_accuracy, noise_accuracy, attack_success_rate]

The fields above are the generic ones; a task adds its own top-level fields (``target`` for
``transfer``, ``training`` for ``backdoor``), validated by the task's block (:mod:`mmsec.runs.task`).
Numbers for ``eps`` and ``alpha`` may be written as fractions (``"8/255"``); any parameter
other than ``eps`` may be written relative to the cell's eps (``eps/4``, ``eps*0.25``). Both
are resolved once, here and in :mod:`mmsec.runs.grid`, so cells and their hashes hold plain
floats. A parameter that is an object of a registered kind (a trigger, a universal perturbation)
is written as a nested ``{name, params}``.

A recipe may carry ``presets``: named overrides of its fields (``smoke``: under a minute, ``dev``,
``paper``: the published figure's settings), merged into the spec by ``load_spec(path,
preset=NAME)`` (mappings merge key by key; a method given another name, a list or a scalar replaces). A preset that changes anything renames the spec ``NAME-<preset>``, so its cells
and results stay apart from the recipe's own.

:func:`load_spec` is the entry point: it parses YAML, validates the structure with pydantic
(unknown fields are errors), then the sizes against the limits of :mod:`mmsec.limits` (images per
data block, image side -- the shapes world renders 16 pixels or more --, steps, epochs and pairs
wherever a parameter has such a name, cells in the grid, and the estimated memory of the data),
so a mistyped ``n: 1000000000`` fails before anything runs (set ``MMSEC_NO_LIMITS=1`` to run such a
spec on purpose), and then the meaning (registered names, budgets in [0, 1], metrics
the task can compute, attack parameters the attack accepts, the task's own checks), and raises
:class:`SpecError` whose message reads as-is at the CLI: one line per problem, each naming the
field path (``attack.params.eps[2]``), what was received and what is allowed.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ..data.shapes import MIN_IMAGE_SIZE as MIN_SHAPES_SIZE
from ..methods import accepted_parameters
from ..registry import close_names
from .task import Task, TaskBlock

BUDGET_PARAMS = ("eps", "alpha")  # numbers in [0, 1] (pixel units), fractions allowed
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_NUM = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_FRACTION = re.compile(rf"^\s*({_NUM})\s*(?:/\s*({_NUM})\s*)?$")
_RELATIVE = re.compile(rf"^\s*eps\s*([*/])\s*({_NUM}(?:\s*/\s*{_NUM})?)\s*$")
PRESETS_KEY = "presets"

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None
# A seed: what numpy's and torch's generators take and SQLite stores (a 64-bit signed integer, not negative).
Seed = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
# A dict is a component written as {name, params}; a list (of values or components) is a grid axis.
ParamValue = Scalar | dict[str, Any] | list[Scalar | dict[str, Any]]


class SpecError(ValueError):
    """An experiment spec is malformed; the message is meant to be shown to the user as-is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Which images to evaluate. ``seed`` is the shapes world's seed (not the run seed); ``start`` the first
    scene index of the split (shapes world; default 0), e.g. a defense's clean data apart from the victim's.

    ``resample: true`` (shapes world) gives each run seed its own sample of the split: seed ``s`` evaluates
    scenes ``[start + s * n, start + (s + 1) * n)``, so repeats over seeds vary the data as well as every
    random stream the seed drives (what ``mmsec claims`` needs for independent repeats). Seed 0's cells are
    the cells of the same spec without ``resample`` (the flag is resolved into ``start``, not stored)."""

    name: StrictStr
    split: StrictStr = "test"
    n: StrictInt | None = Field(default=None, gt=0)
    image_size: StrictInt | None = Field(default=None, ge=8)
    seed: Seed = 0
    path: StrictStr | None = None
    start: StrictInt | None = Field(default=None, ge=0)
    resample: StrictBool = False

    def config(self, seed: int = 0) -> dict:
        """The plain-dict form stored in the cells of run seed ``seed`` (``start`` only when set, so other cells
        keep their hashes; ``resample`` resolved into ``start``)."""
        d = self.model_dump(mode="json")
        resample = d.pop("resample")
        if resample and seed:
            d["start"] = (d["start"] or 0) + int(seed) * int(d["n"])
        if d["start"] is None:
            del d["start"]
        return d

    def end(self, seeds: list[int]) -> int:
        """One past the last scene index any of ``seeds`` evaluates (shapes world)."""
        last = max(seeds) if self.resample else 0
        return (self.start or 0) + (last + 1) * (self.n or 0)


class AttackSpec(_Strict):
    name: StrictStr
    params: dict[str, ParamValue] = Field(default_factory=dict)


class DefenseSpec(_Strict):
    """A defense applied in each cell (``name: none`` = undefended); what "applied" means is the task's.

    ``data`` is the defense's training data (default: 2,000 shapes-world train images);
    ``params`` are the defense's ``__init__`` arguments (fractions allowed for eps; a component as
    ``{name, params}``); ``models`` restricts the entry to some of the spec's models (default: all
    of them), so one spec can train each model with its own settings (two ``tecoa`` entries, one
    per model).
    """

    name: StrictStr
    params: dict[str, Scalar | dict[str, Any]] = Field(default_factory=dict)
    data: DataSpec | None = None
    models: list[StrictStr] | None = None

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models


class Spec(BaseModel):
    """A validated experiment spec (build it with :func:`load_spec`). Fields other than the ones
    below belong to the task (``spec.block``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: StrictStr
    description: StrictStr = ""
    seed: Seed | list[Seed] = 0
    model: StrictStr | list[StrictStr]
    data: DataSpec
    task: StrictStr = "zeroshot"
    attack: AttackSpec | list[AttackSpec]  # a list is a grid axis: methods side by side
    defense: StrictStr | DefenseSpec | list[StrictStr | DefenseSpec] | None = None
    targeted: StrictBool = False
    baseline: StrictStr | None = "noise"
    metrics: list[StrictStr] | None = None
    batch_size: StrictInt = Field(default=64, gt=0)
    save_artifacts: StrictBool = True
    _checked: bool = PrivateAttr(default=False)  # set by load_spec once the meaning has been validated
    _block: TaskBlock | None = PrivateAttr(default=None)

    @property
    def block(self) -> TaskBlock:
        """The task's own fields, validated (available once :func:`load_spec` has checked the spec)."""
        if self._block is None:
            raise RuntimeError("spec.block is set by load_spec; build specs with mmsec.runs.load_spec")
        return self._block

    @property
    def seeds(self) -> list[int]:
        return list(self.seed) if isinstance(self.seed, list) else [self.seed]

    @property
    def models(self) -> list[str]:
        return list(self.model) if isinstance(self.model, list) else [self.model]

    @property
    def attacks(self) -> list[AttackSpec]:
        return list(self.attack) if isinstance(self.attack, list) else [self.attack]

    @property
    def defenses(self) -> list[DefenseSpec | None]:
        """The defense axis, normalised: ``None`` for no defense."""
        items = self.defense if isinstance(self.defense, list) else [self.defense]
        out: list[DefenseSpec | None] = []
        for d in items:
            d = DefenseSpec(name=d) if isinstance(d, str) else d
            out.append(None if d is None or d.name == "none" else d)
        return out


GENERIC_FIELDS = tuple(f for f in Spec.model_fields)


# -- entry point ----------------------------------------------------------------------------------
def load_spec(source: str | Path | dict | Spec, preset: str | None = None) -> Spec:
    """Load and validate a spec from a YAML path, a dict, or an existing :class:`Spec`.

    ``preset`` names one of the recipe's ``presets`` to merge in first. Returns a normalised Spec
    (fractions resolved to floats, default metrics filled in, the task's block validated).
    Raises :class:`SpecError` with a readable, multi-line message.
    """
    origin = "spec"
    if isinstance(source, Spec) and source._checked and preset is None:
        return source
    if isinstance(source, Spec):
        raw: Any = {**source.model_dump(exclude_unset=False), **(source.model_extra or {})}
        origin = f"spec {source.name!r}"
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        origin = str(path)
        if path.is_dir():
            raise SpecError(f"{path} is a folder; expected a spec file (YAML), e.g. recipes/quickstart.yaml")
        if not path.is_file():
            raise SpecError(f"spec file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            where = ""
            mark = getattr(e, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            problem = getattr(e, "problem", None) or str(e)
            raise SpecError(f"{path} is not valid YAML{where}: {problem}") from None
        except UnicodeDecodeError:
            raise SpecError(f"{path} is not a text (UTF-8) YAML file") from None
    else:
        raise SpecError(f"a spec must be a YAML path, a dict or a Spec, got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: the top level must be a mapping of fields (name, model, data, task, "
                        f"attack, ...), got {type(raw).__name__}")
    raw = apply_preset(raw, preset, origin)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_errors(origin, _pydantic_issues(e.errors()))) from None
    spec, issues = _check(spec)
    if issues:
        raise SpecError(_format_errors(origin, issues))
    spec._checked = True
    return spec


def preset_names(source: str | Path | dict) -> list[str]:
    """The presets a recipe offers (``[]`` when it has none)."""
    raw = yaml.safe_load(Path(source).read_text()) if isinstance(source, (str, Path)) else source
    presets = raw.get(PRESETS_KEY) if isinstance(raw, dict) else None
    return sorted(presets) if isinstance(presets, dict) else []


def apply_preset(raw: dict, preset: str | None, origin: str = "spec") -> dict:
    """``raw`` without its ``presets``, with ``preset``'s overrides merged in (mappings merge, a method with
    another name and everything else replaces), renamed ``<name>-<preset>`` when the preset changes anything."""
    raw = dict(raw)
    presets = raw.pop(PRESETS_KEY, None)
    if presets is not None and (not isinstance(presets, dict)
                                or not all(isinstance(v, dict) or v is None for v in presets.values())):
        raise SpecError(f"{origin}: presets must map preset names to mappings of fields to override")
    if preset is None:
        return raw
    presets = presets or {}
    if preset not in presets:
        known = sorted(presets)
        raise SpecError(f"{origin}: no preset {preset!r}; this spec has {known or 'no presets'}."
                        f"{close_names(preset, known)}")
    overrides = presets[preset] or {}
    merged = _merge(raw, overrides)
    if overrides and "name" not in overrides and isinstance(merged.get("name"), str):
        merged["name"] = f"{merged['name']}-{preset}"
    return merged


def _merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``: mappings merge key by key, except that a method named anew (another
    ``name``) replaces the old one with its parameters; every other value replaces."""
    renamed = isinstance(base, dict) and isinstance(over, dict) and "name" in over and base.get("name") != over["name"]
    if isinstance(base, dict) and isinstance(over, dict) and not renamed:
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _format_errors(origin: str, issues: list[str]) -> str:
    head = f"invalid experiment spec ({origin}): {len(issues)} problem{'s' if len(issues) > 1 else ''}"
    return "\n".join([head] + [f"  - {i}" for i in issues])


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_TYPE_WORDS = {"int": "an integer", "bool": "true or false", "str": "a string", "float": "a number",
               "list": "a list", "dict": "a mapping"}


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch labels ("int", "list[int]", "str", ...) from a location."""
    return tuple(p for p in loc if isinstance(p, int) or not re.match(r"^(list|str|int|bool|float|none|dict|constrained-)\b|"
                                                                      r"^(Strict|function-)|^[A-Z][A-Za-z]+$", str(p)))


def _pydantic_issues(errors: list[dict], root: type[BaseModel] | None = None, prefix: tuple = ()) -> list[str]:
    """One line per error; for a union (``seed: int | list[int]``) keep only the deepest branch."""
    locs = [_clean_loc(tuple(err["loc"])) for err in errors]
    keep = [err for err, loc in zip(errors, locs, strict=True)
            if not any(len(other) > len(loc) and other[:len(loc)] == loc for other in locs)]
    return list(dict.fromkeys(_pydantic_issue(err, root or Spec, prefix) for err in keep))


def _pydantic_issue(err: dict, root: type[BaseModel], prefix: tuple = ()) -> str:
    loc = tuple(err["loc"])
    path = _path(prefix + _clean_loc(loc))
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        field = str(loc[-1])
        allowed = sorted(_model_at(root, loc[:-1]).model_fields)
        return (f"{path}: unknown field {field!r}; allowed fields here: {', '.join(allowed)}."
                f"{close_names(field, allowed)}")
    if kind == "missing":
        return f"{path}: required field is missing"
    for word, text in _TYPE_WORDS.items():
        if kind in (f"{word}_type", f"{word}_parsing"):
            return f"{path}: expected {text}, got {got!r} ({type(got).__name__})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{path}: {err['msg'].lower()}, got {got!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {msg} (got {got!r})"


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel]:
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return model


# -- numbers ----------------------------------------------------------------------------------------
def parse_number(value: Any) -> float | None:
    """A float from a number or a ``"a/b"`` / ``"0.03"`` string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            num, den = float(m.group(1)), float(m.group(2)) if m.group(2) else 1.0
            return num / den if den != 0 else None
    return None


def resolve_relative(value: Any, eps: float | None) -> Any:
    """Resolve ``"eps/4"`` / ``"eps*0.25"`` against ``eps``; other values are returned unchanged."""
    if isinstance(value, str) and isinstance(eps, (int, float)) and not isinstance(eps, bool):
        m = _RELATIVE.match(value)
        if m:
            factor = parse_number(m.group(2))
            if factor is None or (m.group(1) == "/" and factor == 0):
                raise ValueError(f"cannot resolve {value!r}")
            return eps / factor if m.group(1) == "/" else eps * factor
    return value


def is_relative(value: Any) -> bool:
    return isinstance(value, str) and bool(_RELATIVE.match(value))


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, list) else [v]


def _duplicates(values: list) -> list[int]:
    """Indices of the values equal to an earlier one (in linear time: values compared as canonical JSON)."""
    import json

    scalars: set[Any] = set()  # (1 == 1.0 == True here, as for list.index)
    others: set[str] = set()
    out = []
    for i, v in enumerate(values):
        seen: set[Any]
        if isinstance(v, (dict, list)):
            seen, key = others, json.dumps(v, sort_keys=True, default=repr)
        else:
            seen, key = scalars, v
        if key in seen:
            out.append(i)
        seen.add(key)
    return out


# -- meaning ----------------------------------------------------------------------------------------
def _check(spec: Spec) -> tuple[Spec, list[str]]:
    from .task import get_task, task_names

    issues: list[str] = []
    if not _NAME.match(spec.name):
        issues.append(f"name: {spec.name!r} must be 1-100 characters of letters, digits, '.', '_' or '-' "
                      "(it names the artifacts folder), starting with a letter or digit")

    # the task and its own fields
    tasks = task_names()
    task: Task | None = get_task(spec.task) if spec.task in tasks else None
    if task is None:
        issues.append(f"task: unknown task {spec.task!r}; allowed: {', '.join(tasks)}.{close_names(spec.task, tasks)}")
    block, block_issues = _check_block(spec, task, tasks)
    issues += block_issues

    for field, values in (("model", spec.model), ("seed", spec.seed)):
        if isinstance(values, list):
            if not values:
                issues.append(f"{field}: empty list; give at least one value")
            for i in _duplicates(values):
                issues.append(f"{field}[{i}]: duplicate value {values[i]!r} (each grid cell must be distinct)")
    issues += check_model_names([(f"model[{i}]" if isinstance(spec.model, list) else "model", m)
                                 for i, m in enumerate(spec.models)])
    issues += _check_data(spec.data)

    issues += _check_limits(spec, task, block)

    metrics = list(spec.metrics) if spec.metrics is not None else list(task.default_metrics if task else ())
    if spec.metrics is not None and not spec.metrics:
        issues.append("metrics: empty list; omit the field for the task's defaults")
    if task is not None:
        issues += _check_metrics(task, spec, metrics)
        if spec.targeted and not task.targeted:
            issues.append(f"targeted: task {spec.task!r} is untargeted" + task.targeted_hint)
        issues += _check_defenses(spec, task)
        issues += _check_attacks(spec, task, issues)
        issues += _check_families(spec, task)
        if block is not None:
            issues += task.check(spec, block)
            block = task.normalise(spec, block)
    checked = [AttackSpec(name=a.name, params=_normalise_params(a.params)) for a in spec.attacks]
    spec = spec.model_copy(update={"metrics": metrics,
                                   "attack": checked if isinstance(spec.attack, list) else checked[0]})
    spec._block = block
    return spec, issues


def _check_block(spec: Spec, task: Task | None, tasks: list[str]) -> tuple[TaskBlock | None, list[str]]:
    """Validate the task's own top-level fields; an unknown field names the task that has it."""
    extras = dict(spec.model_extra or {})
    if task is None:
        return None, []
    from .task import get_task

    issues = []
    owners: dict[str, list[tuple[str, str]]] = {}
    for other in tasks:
        for f, info in get_task(other).Block.model_fields.items():
            owners.setdefault(f, []).append((other, info.description or f"has field {f!r}"))
    for f in list(extras):
        if f not in task.Block.model_fields and f in owners:
            if len(owners[f]) == 1:
                (other, what), = owners[f]
                issues.append(f"{f}: only task {other!r} {what} (task is {spec.task!r})")
            else:
                names = "; ".join(f"{o!r} ({what})" for o, what in owners[f])
                issues.append(f"{f}: only these tasks have this field: {names} (task is {spec.task!r})")
            del extras[f]
    try:
        block = task.Block.model_validate(extras)
    except ValidationError as e:
        allowed = sorted(set(GENERIC_FIELDS) | set(task.Block.model_fields))
        for line in _pydantic_issues(e.errors(), task.Block):
            m = re.match(r"^(\w+): unknown field '(\w+)'; allowed fields here: [^.]*\.", line)
            if m and "." not in line.split(":")[0]:  # a top-level typo: list the generic fields too
                line = (f"{m.group(1)}: unknown field {m.group(2)!r}; allowed fields here: {', '.join(allowed)}."
                        f"{close_names(m.group(2), allowed)}")
            issues.append(line)
        return None, issues
    return block, issues


def check_model_names(named: list[tuple[str, str]]) -> list[str]:
    """Each (field path, model name) is a registered scheme (and, for the zoo, a known model)."""
    from ..models.loaders import schemes

    issues = []
    from ..zoo.loader import zoo_names

    known_zoo = zoo_names()  # recipes, shipped checkpoints and the user's own (mmsec zoo train)
    known = schemes()
    for where, m in named:
        scheme, _, rest = m.partition(":")
        if scheme not in known or not rest:
            hint = f" Did you mean 'zoo:{m}'?" if m in known_zoo else ""
            forms = [repr(f.split(" (")[0]) for s, f in sorted(known.items(), key=lambda kv: kv[0] != "zoo")]
            shown = ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
            issues.append(f"{where}: {m!r} must be {shown}.{hint}")
        elif scheme == "zoo" and rest not in known_zoo and "/" not in rest and "\\" not in rest:
            issues.append(f"{where}: unknown zoo model {rest!r}; known: {', '.join(known_zoo) or '(none)'}."
                          f"{close_names(rest, known_zoo)}")
    return issues


def _check_limits(spec: Spec, task: Task | None, block: TaskBlock | None) -> list[str]:
    """Sizes within :mod:`mmsec.limits`: images, image side, memory, steps / epochs / pairs, cells."""
    from .. import limits

    issues: list[str] = []
    zoo_only = all(m.startswith("zoo:") or ":" not in m for m in spec.models)
    data_blocks = [("data", spec.data)]
    listed = isinstance(spec.defense, list)
    data_blocks += [(f"defense[{i}].data" if listed else "defense.data", d.data)
                    for i, d in enumerate(spec.defenses) if d is not None and d.data is not None]
    for where, d in data_blocks:
        for problem in (limits.over(f"{where}.n", d.n or 0, limits.MAX_IMAGES, "images"),
                        limits.over(f"{where}.image_size", d.image_size or 0, limits.MAX_IMAGE_SIZE, "pixels")):
            if problem:
                issues.append(problem)
        if d.n is not None:
            size = d.image_size or (32 if zoo_only else 224)  # (unset: the model's side; zoo models are 32)
            problem = limits.over_memory(f"{where}", d.n, size)
            if problem and not any(i.startswith(f"{where}.") for i in issues):
                issues.append(problem)
    params: list[tuple[str, Any]] = []
    for i, a in enumerate(spec.attacks):
        params.append((f"attack[{i}].params" if isinstance(spec.attack, list) else "attack.params", a.params))
    for i, d in enumerate(spec.defenses):
        if d is not None:
            params.append((f"defense[{i}].params" if listed else "defense.params", d.params))
    if block is not None:
        params.append(("", block.model_dump(mode="json")))
    for where, tree in params:
        issues += _limit_params(where, tree)
    if task is not None:
        cells = grid_size(spec, task, block)
        problem = limits.over("grid", cells, limits.MAX_CELLS, "cells")
        if problem:
            issues.append(problem.replace("grid: ", "the grid (model x defense x seed x attack x list-valued "
                                          "parameters): ", 1))
    return issues


def _limit_params(where: str, tree: Any) -> list[str]:
    """Integers under parameter names such as ``steps``, ``epochs``, ``pairs`` (in lists and components too)."""
    from .. import limits

    issues: list[str] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{where}.{key}" if where else str(key)
            rule = limits.param_limit(str(key))
            for j, v in enumerate(_as_list(value)):
                at = f"{path}[{j}]" if isinstance(value, list) else path
                if rule is not None and isinstance(v, int) and not isinstance(v, bool):
                    problem = limits.over(at, v, *rule)
                    if problem:
                        issues.append(problem)
                elif isinstance(v, dict):
                    issues += _limit_params(at, v)
    return issues


def grid_size(spec: Spec, task: Task, block: TaskBlock | None) -> int:
    """The number of cells :func:`mmsec.runs.grid.expand` makes, counted without making them."""
    per_model = sum(1 for m in spec.models for d in spec.defenses if d is None or d.applies_to(m))
    attacks = sum(math.prod(len(v) if isinstance(v, list) else 1 for v in a.params.values()) for a in spec.attacks)
    axes = 1
    if block is not None:
        for name in task.axes:
            v = getattr(block, name, None)
            axes *= len(v) if isinstance(v, list) else 1
    return per_model * len(spec.seeds) * attacks * axes


def _check_data(d: DataSpec) -> list[str]:
    from .. import registry

    issues = []
    datasets = registry.names("datasets")
    if d.name not in datasets:
        issues.append(f"data.name: unknown data set {d.name!r}; allowed: {', '.join(datasets)}."
                      f"{close_names(d.name, datasets)}")
    elif d.name == "shapes":
        splits = ("train", "val", "test")
        if d.split not in splits:
            issues.append(f"data.split: {d.split!r} is not a shapes split; allowed: {', '.join(splits)}."
                          f"{close_names(d.split, list(splits))}")
        if d.n is None:
            issues.append("data.n: required for the shapes world (how many images to evaluate, e.g. 1000)")
        if d.image_size is not None and d.image_size < MIN_SHAPES_SIZE:
            issues.append(f"data.image_size: {d.image_size} is too small for the shapes world, which renders "
                          f"images of {MIN_SHAPES_SIZE} pixels or more (its default: 32)")
        if d.path is not None:
            issues.append("data.path: not used by the shapes world (it is generated from data.seed); remove it")
    elif d.start is not None or d.resample:
        field = "data.start" if d.start is not None else "data.resample"
        issues.append(f"{field}: only the shapes world has scene indices to resample; data set {d.name!r} has none")
    else:
        if d.path is None:
            issues.append(f"data.path: required for data set {d.name!r} (a folder or file on disk)")
        elif not Path(d.path).exists():
            issues.append(f"data.path: {d.path!r} does not exist")
    return issues


def _check_metrics(task: Task, spec: Spec, metrics: list[str]) -> list[str]:
    from .cells import metric_definition

    issues = []
    allowed = list(task.metrics)
    for i, m in enumerate(metrics):
        if m not in allowed:
            try:
                metric_definition(m)
                why = f"metric {m!r} is not computed for task {spec.task!r}"
            except KeyError:
                why = f"unknown metric {m!r}"
            issues.append(f"metrics[{i}]: {why}; allowed for {spec.task}: {', '.join(allowed)}."
                          f"{close_names(m, allowed)}")
        elif metrics.index(m) != i:
            issues.append(f"metrics[{i}]: duplicate metric {m!r}")
    noise = task.noise_metric
    if noise is not None:
        if spec.baseline is None and noise in metrics:
            issues.append(f"metrics: {noise!r} needs a baseline, but baseline is null; set `baseline: noise`")
        if spec.baseline is not None and noise not in metrics:
            metrics.append(noise)  # the baseline runs in every cell: always store its number
    return issues


def _check_attacks(spec: Spec, task: Task, earlier: list[str]) -> list[str]:
    from .. import registry

    issues: list[str] = []
    attack_names = [e.name for k in task.attack_kinds for e in registry.entries(k)]
    if task.baselines is not None:
        if spec.baseline is not None and spec.baseline not in task.baselines:
            allowed = " or ".join(repr(b) for b in task.baselines)
            issues.append(f"baseline: task {spec.task!r} has only the {allowed} baseline ({task.baseline_words}) or "
                          f"null, got {spec.baseline!r}")
    elif spec.baseline is not None and spec.baseline not in registry.names("attacks"):
        issues.append(f"baseline: unknown attack {spec.baseline!r}; use 'noise' (uniform noise of the attack's "
                      f"budget) or null.{close_names(spec.baseline, registry.names('attacks'))}")
    listed = isinstance(spec.attack, list)
    if listed and not spec.attack:
        issues.append("attack: empty list; give at least one attack")
    for i, attack in enumerate(spec.attacks):
        attack_issues = []
        entry = registry.find(attack.name, task.attack_kinds)
        if entry is None:
            attack_issues.append(f"attack.name: unknown {task.attack_words} {attack.name!r} for task {spec.task!r}; "
                                 f"registered: {', '.join(attack_names) or '(none)'}."
                                 f"{close_names(attack.name, attack_names)}")
        elif listed and attack in spec.attacks[:i]:
            attack_issues.append("attack: duplicate entry (each grid cell must be distinct)")
        attack_issues += _check_params(attack.params, entry)
        if not attack_issues and not issues and not earlier:
            attack_issues += _try_build(spec, task, entry, _normalise_params(attack.params))
        if listed:  # name the entry: attack[1].params.eps
            attack_issues = [f"attack[{i}]{m[len('attack'):]}" if m.startswith("attack") else m
                             for m in attack_issues]
        issues += attack_issues
    return issues


def _check_families(spec: Spec, task: Task) -> list[str]:
    """Each model's family (as far as known without loading it) is one the task and the cell's methods need."""
    from .. import registry
    from ..models.base import FAMILIES, implies
    from ..models.loaders import declared_family

    issues: list[str] = []
    for i, m in enumerate(spec.models):
        where = f"model[{i}]" if isinstance(spec.model, list) else "model"
        try:
            have = declared_family(m)
        except (ValueError, KeyError, OSError):
            continue  # a bad name is reported by the name check
        if have is None or have not in FAMILIES:
            continue
        needs = [(f"task {spec.task!r}", task.family)]
        needs += [(f"attack {a.name!r}", e.family) for a in spec.attacks
                  for e in [registry.find(a.name, task.attack_kinds)] if e is not None]
        needs += [(f"defense {d.name!r}", e.family) for d in spec.defenses if d is not None and d.applies_to(m)
                  for e in [registry.find(d.name, task.defense_kinds)] if e is not None]
        for who, family in needs:
            if family in FAMILIES and not implies(have, family):
                issues.append(f"{where}: {m!r} is a {have!r} model, but {who} needs a {family!r} model "
                              f"({FAMILIES[family].description})")
    return issues


DEFAULT_DEFENSE_DATA = {"name": "shapes", "split": "train", "n": 2000, "image_size": 32, "seed": 0}


def _check_defenses(spec: Spec, task: Task) -> list[str]:
    """Defense names are registered for the task, parameters accepted, training data well-formed, no duplicates."""
    from .. import registry
    from ..methods import build

    issues: list[str] = []
    if not task.defense_kinds:
        if any(d is not None for d in spec.defenses):
            issues.append(f"defense: not supported with task {spec.task!r}{task.no_defense_hint}")
        return issues
    names = [e.name for k in task.defense_kinds for e in registry.entries(k)]
    listed = isinstance(spec.defense, list)
    if listed and not spec.defense:
        issues.append("defense: empty list; give at least one defense (or 'none')")
    seen: list[Any] = []
    for i, d in enumerate(spec.defenses):
        where = f"defense[{i}]" if listed else "defense"
        if d in seen:
            issues.append(f"{where}: duplicate defense (each grid cell must be distinct)")
        seen.append(d)
        if d is None:
            continue
        for m in d.models or []:
            if m not in spec.models:
                issues.append(f"{where}.models: {m!r} is not one of the spec's models ({', '.join(spec.models)})")
        if d.models is not None and not d.models:
            issues.append(f"{where}.models: empty list; leave it out to apply the defense to every model")
        entry = registry.find(d.name, task.defense_kinds)
        if entry is None:
            issues.append(f"{where}.name: unknown defense {d.name!r}; registered: {', '.join(names) or '(none)'}, "
                          f"or 'none' for the undefended model.{close_names(d.name, names + ['none'])}")
            continue
        accepted, var_kw = accepted_parameters(entry.factory)
        for key, value in d.params.items():
            if not var_kw and key not in accepted:
                issues.append(f"{where}.params.{key}: {d.name} has no parameter {key!r}; its parameters are "
                              f"{', '.join(sorted(accepted))}.{close_names(key, sorted(accepted))}")
            elif key in BUDGET_PARAMS and parse_number(value) is None:
                issues.append(f"{where}.params.{key}: expected a number or a fraction such as '4/255', got {value!r}")
        if not issues:
            try:
                build(entry.kind, {"name": d.name, "params": resolve_defense_params(d.params)}, where)
            except (TypeError, ValueError, KeyError) as e:
                issues.append(f"{where}.params: {d.name} rejected {dict(d.params)}: {e}")
        if d.data is not None and d.data.name == "shapes" and d.data.split == "test":
            issues.append(f"{where}.data.split: a defense must not train on the test split it is evaluated on; "
                          "use train or val")
        if d.data is not None and d.data.name == "shapes" and (d.data.image_size or 32) < MIN_SHAPES_SIZE:
            issues.append(f"{where}.data.image_size: {d.data.image_size} is too small for the shapes world, which "
                          f"renders images of {MIN_SHAPES_SIZE} pixels or more (its default: 32)")
    return issues


def resolve_defense_params(params: dict[str, Any]) -> dict[str, Any]:
    """Defense parameters with fractions ('4/255') resolved to floats."""
    return {k: (parse_number(v) if k in BUDGET_PARAMS else v) for k, v in params.items()}


def defense_config(d: DefenseSpec | None) -> dict | None:
    """The plain-dict form of a defense stored in a cell (and hashed with it)."""
    if d is None:
        return None
    data = d.data.config() if d.data is not None else dict(DEFAULT_DEFENSE_DATA, path=None)
    return {"name": d.name, "params": resolve_defense_params(d.params), "data": data}


def _check_params(params: dict[str, Any], entry: Any) -> list[str]:
    """Budget params are numbers in range (fractions allowed); names are the attack's parameters."""
    issues: list[str] = []
    if entry is not None:
        accepted, var_kw = accepted_parameters(entry.factory)
        if not var_kw:
            for key in params:
                if key not in accepted:
                    issues.append(f"attack.params.{key}: {entry.name} has no parameter {key!r}; its parameters are "
                                  f"{', '.join(sorted(accepted))}.{close_names(key, sorted(accepted))}")
    norms = {str(v) for v in _as_list(params.get("norm", "linf"))}
    for key, value in params.items():
        if key in BUDGET_PARAMS and any(isinstance(v, dict) for v in _as_list(value)):
            issues.append(f"attack.params.{key}: expected a number (pixel units) or a fraction such as '8/255', "
                          f"got {value!r}")
            continue
        if isinstance(value, dict):
            continue  # a component ({name, params}): checked when the attack is built
        # L-inf budgets are in [0, 1]; an L2 budget is the norm of the whole perturbation (>= 0).
        high = math.inf if "l2" in norms else 1.0
        listed = isinstance(value, list)
        if listed and not value:
            issues.append(f"attack.params.{key}: empty list; give at least one value")
        values = []
        for i, v in enumerate(_as_list(value)):
            where = f"attack.params.{key}[{i}]" if listed else f"attack.params.{key}"
            if isinstance(v, dict):  # a component: checked when the attack is built
                values.append(v)
                continue
            if key != "eps" and is_relative(v):
                try:
                    resolve_relative(v, 1.0)
                except ValueError:
                    issues.append(f"{where}: {v!r} divides eps by zero")
                    continue
                values.append(v)
                continue
            if key in BUDGET_PARAMS:
                x = parse_number(v)
                if x is None:
                    rel = "" if key == "eps" else ", or relative to eps such as 'eps/4'"
                    issues.append(f"{where}: expected a number (pixel units) or a fraction such as '8/255'{rel}, "
                                  f"got {v!r}")
                    continue
                if not (math.isfinite(x) and 0.0 <= x <= high):
                    rng = "[0, 1]" if high == 1.0 else ">= 0"
                    shown = f"{v!r} = {x:.4g}" if isinstance(v, str) else f"{v!r}"
                    issues.append(f"{where}: {shown} is outside {rng}; {key} is in pixel units of [0, 1] "
                                  f"images, e.g. 8/255 = {8 / 255:.4f}")
                    continue
                v = x
            values.append(v)
        for i in _duplicates(values):
            issues.append(f"attack.params.{key}[{i}]: duplicate value {values[i]!r} (each grid cell must be distinct)")
    return issues


def _normalise_params(params: dict[str, Any]) -> dict[str, Any]:
    """Fractions of budget params resolved to floats; relative values compacted (``eps / 4`` -> ``eps/4``)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out[key] = value
            continue
        values = []
        for v in _as_list(value):
            if is_relative(v) and key != "eps":
                v = v.strip().replace(" ", "")
            elif key in BUDGET_PARAMS and parse_number(v) is not None:
                v = parse_number(v)
            values.append(v)
        out[key] = values if isinstance(value, list) else values[0]
    return out


def param_combinations(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The cartesian product of list-valued params (spec order), relative values resolved."""
    keys = list(params)
    axes = [_as_list(params[k]) for k in keys]
    combos = []
    for values in itertools.product(*axes):
        combo = dict(zip(keys, values, strict=True))
        eps = combo.get("eps")
        combos.append({k: resolve_relative(v, eps) for k, v in combo.items()})
    return combos


def _try_build(spec: Spec, task: Task, entry: Any, params: dict[str, Any]) -> list[str]:
    """Construct the attack (and check its baseline) for every parameter combination, so a bad value fails now."""
    from ..methods import build

    issues: list[str] = []
    for combo in param_combinations(params):
        shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
        unresolved = [k for k, v in combo.items() if is_relative(v)]
        if unresolved:
            issues.append(f"attack.params.{unresolved[0]}: {combo[unresolved[0]]!r} is relative to eps, "
                          "but the attack has no eps parameter")
            break
        try:
            attack = build(entry.kind, {"name": entry.name, "params": combo}, "attack")
        except (TypeError, ValueError, KeyError) as e:
            issues.append(f"attack.params: {entry.name} rejected ({shown}): {e}")
            break
        if spec.baseline is not None:
            problem = task.check_baseline(spec.baseline, attack, entry.name)
            if problem:
                issues.append(f"baseline: {problem}")
                break
    return issues


__all__ = ["AttackSpec", "DataSpec", "DefenseSpec", "Spec", "SpecError", "apply_preset", "check_model_names",
           "defense_config", "grid_size", "load_spec", "param_combinations", "parse_number", "preset_names",
           "resolve_defense_params", "resolve_relative"]
