"""Experiment specs: a YAML file naming model, data, task, attack, baseline and metrics.

Example (``recipes/quickstart.yaml``)::

    name: quickstart
    seed: 0                      # an int or a list of ints (one grid axis)
    model: zoo:shapes-clip-resnet  # or a list; zoo:NAME, hf:/dir, open_clip:ARCH:/file
    data: {name: shapes, split: test, n: 1000, image_size: 32}
    task: zeroshot               # zeroshot | retrieval
    attack:
      name: pgd
      params:
        eps: [1/255, 2/255, 4/255, 8/255]   # any list-valued parameter is a grid axis
        alpha: eps/4                         # relative to the cell's eps
        steps: 10
    baseline: noise              # uniform noise of the same budget, run in every cell (null: none)
    metrics: [clean_accuracy, robust_accuracy, noise_accuracy, attack_success_rate]

Numbers for ``eps`` and ``alpha`` may be written as fractions (``"8/255"``); any parameter
other than ``eps`` may be written relative to the cell's eps (``eps/4``, ``eps*0.25``). Both
are resolved once, here and in :mod:`mmsec.runs.grid`, so cells and their hashes hold plain
floats.

:func:`load_spec` is the entry point: it parses YAML, validates the structure with pydantic
(unknown fields are errors) and then the meaning (registered names, budgets in [0, 1], metrics
the task can compute, attack parameters the attack accepts), and raises :class:`SpecError`
whose message reads as-is at the CLI: one line per problem, each naming the field path
(``attack.params.eps[2]``), what was received and what is allowed.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

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
    model_validator,
)

from ..registry import close_names
from .execute import (
    ATTACK_KIND,
    DEFAULT_METRICS,
    DEFENSE_KINDS,
    NOISE_METRIC,
    TASK_METRICS,
    TASKS,
    _accepted_kwargs,
    attack_kind,
    build_attack,
    build_baseline,
    build_defense,
    metric_definition,
    task_attack_kinds,
)

DATASETS = ("shapes", "imagefolder", "captions")
SHAPES_SPLITS = ("train", "val", "test")
MODEL_SCHEMES = ("zoo", "hf", "hf-blip", "open_clip")
BUDGET_PARAMS = ("eps", "alpha")  # numbers in [0, 1] (pixel units), fractions allowed
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_NUM = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_FRACTION = re.compile(rf"^\s*({_NUM})\s*(?:/\s*({_NUM})\s*)?$")
_RELATIVE = re.compile(rf"^\s*eps\s*([*/])\s*({_NUM}(?:\s*/\s*{_NUM})?)\s*$")

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None
ParamValue = Scalar | list[Scalar]


class SpecError(ValueError):
    """An experiment spec is malformed; the message is meant to be shown to the user as-is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Which images to evaluate. ``seed`` is the shapes world's seed (not the run seed)."""

    name: StrictStr
    split: StrictStr = "test"
    n: StrictInt | None = Field(default=None, gt=0)
    image_size: StrictInt | None = Field(default=None, ge=8)
    seed: StrictInt = 0
    path: StrictStr | None = None


class AttackSpec(_Strict):
    name: StrictStr
    params: dict[str, ParamValue] = Field(default_factory=dict)


class DefenseSpec(_Strict):
    """A hardening defense applied to the model before the attack (``name: none`` = undefended).

    ``data`` is the defense's training data (default: 2,000 shapes-world train images);
    ``params`` are the defense's ``__init__`` arguments (scalars; fractions allowed for eps);
    ``models`` restricts the entry to some of the spec's models (default: all of them), so one
    spec can train each model with its own settings (two ``tecoa`` entries, one per model).
    """

    name: StrictStr
    params: dict[str, Scalar] = Field(default_factory=dict)
    data: DataSpec | None = None
    models: list[StrictStr] | None = None

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models


class TrainingSpec(_Strict):
    """The victim's training in task ``backdoor``: the poisoned data set is trained on this way.

    ``finetune``: the model fine-tuned on ``pairs`` clean shapes-world train pairs plus the attack's
    poisoned pairs, ``steps`` batches of ``batch_size`` at ``lr``; ``pretrain``: the model's zoo
    recipe trained from scratch on a poisoned stream of fresh scenes (``steps`` overrides the
    recipe's; ``batch_size`` and ``lr`` are the recipe's) or, with ``epochs``, for ``epochs`` passes
    over a fixed set of ``pairs`` clean pairs plus the poisoned ones (the setting of pre-training
    defenses such as RoCLIP, which a cell's ``defense`` then runs in place of plain training).
    """

    mode: Literal["finetune", "pretrain"] = "finetune"
    steps: StrictInt | None = Field(default=None, gt=0)
    epochs: StrictInt | None = Field(default=None, gt=0)
    pairs: StrictInt = Field(default=4096, gt=1)
    batch_size: StrictInt = Field(default=64, gt=1)
    lr: StrictFloat = Field(default=2e-3, gt=0)

    @model_validator(mode="after")
    def _epochs_only_for_pretraining_on_pairs(self) -> TrainingSpec:
        if self.epochs is not None and self.mode != "pretrain":
            raise ValueError("training.epochs: only mode 'pretrain' trains in epochs over a fixed set of pairs "
                             "(mode 'finetune' takes steps)")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("training: give steps (a fresh-scene stream) or epochs (passes over `pairs` fixed "
                             "pairs), not both")
        return self

    def config(self) -> dict:
        """The cell's ``training`` entry (fine-tuning defaults filled in: 300 steps)."""
        d = self.model_dump()
        del d["epochs"]  # (not stored unless set: cells of the stream and fine-tune settings keep their hash)
        if self.mode == "finetune" and d["steps"] is None:
            d["steps"] = 300
        if self.mode == "pretrain":
            d = ({"mode": "pretrain", "steps": d["steps"]} if self.epochs is None
                 else {"mode": "pretrain", "epochs": self.epochs, "pairs": self.pairs})
        return d


class Spec(_Strict):
    """A validated experiment spec (build it with :func:`load_spec`)."""

    name: StrictStr
    description: StrictStr = ""
    seed: StrictInt | list[StrictInt] = 0
    model: StrictStr | list[StrictStr]
    data: DataSpec
    task: StrictStr = "zeroshot"
    attack: AttackSpec | list[AttackSpec]  # a list is a grid axis: methods side by side
    defense: StrictStr | DefenseSpec | list[StrictStr | DefenseSpec] | None = None
    target: StrictStr | list[StrictStr] | None = None  # task transfer: the models scored on the source's pairs
    training: TrainingSpec | None = None  # task backdoor: how the victim trains on the poisoned data
    targeted: StrictBool = False
    baseline: StrictStr | None = "noise"
    metrics: list[StrictStr] | None = None
    batch_size: StrictInt = Field(default=64, gt=0)
    save_artifacts: StrictBool = True
    _checked: bool = PrivateAttr(default=False)  # set by load_spec once the meaning has been validated

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
    def targets(self) -> list[str | None]:
        """The transfer targets (``[None]`` for tasks without targets)."""
        if self.target is None:
            return [None]
        return list(self.target) if isinstance(self.target, list) else [self.target]

    @property
    def defenses(self) -> list[DefenseSpec | None]:
        """The defense axis, normalised: ``None`` for no defense."""
        items = self.defense if isinstance(self.defense, list) else [self.defense]
        out: list[DefenseSpec | None] = []
        for d in items:
            d = DefenseSpec(name=d) if isinstance(d, str) else d
            out.append(None if d is None or d.name == "none" else d)
        return out


# -- entry point ----------------------------------------------------------------------------------
def load_spec(source: str | Path | dict | Spec) -> Spec:
    """Load and validate a spec from a YAML path, a dict, or an existing :class:`Spec`.

    Returns a normalised Spec (fractions resolved to floats, default metrics filled in).
    Raises :class:`SpecError` with a readable, multi-line message.
    """
    origin = "spec"
    if isinstance(source, Spec) and source._checked:
        return source
    if isinstance(source, Spec):
        raw: Any = source.model_dump()
        origin = f"spec {source.name!r}"
    elif isinstance(source, dict):
        raw = source
    elif isinstance(source, (str, Path)):
        path = Path(source)
        origin = str(path)
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
    else:
        raise SpecError(f"a spec must be a YAML path, a dict or a Spec, got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: the top level must be a mapping of fields (name, model, data, task, "
                        f"attack, ...), got {type(raw).__name__}")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_errors(origin, _pydantic_issues(e.errors()))) from None
    spec, issues = _check(spec)
    if issues:
        raise SpecError(_format_errors(origin, issues))
    spec._checked = True
    return spec


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
    return tuple(p for p in loc if isinstance(p, int) or not re.match(r"^(list|str|int|bool|float|none|dict)\b|"
                                                                      r"^(Strict|function-)", str(p)))


def _pydantic_issues(errors: list[dict]) -> list[str]:
    """One line per error; for a union (``seed: int | list[int]``) keep only the deepest branch."""
    locs = [_clean_loc(tuple(err["loc"])) for err in errors]
    keep = [err for err, loc in zip(errors, locs, strict=True)
            if not any(len(other) > len(loc) and other[:len(loc)] == loc for other in locs)]
    return list(dict.fromkeys(_pydantic_issue(err) for err in keep))


def _pydantic_issue(err: dict) -> str:
    loc = tuple(err["loc"])
    path = _path(_clean_loc(loc))
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        field = str(loc[-1])
        allowed = sorted(_model_at(loc[:-1]).model_fields)
        return (f"{path}: unknown field {field!r}; allowed fields here: {', '.join(allowed)}."
                f"{close_names(field, allowed)}")
    if kind == "missing":
        return f"{path}: required field is missing"
    for word, text in _TYPE_WORDS.items():
        if kind in (f"{word}_type", f"{word}_parsing"):
            return f"{path}: expected {text}, got {got!r} ({type(got).__name__})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{path}: {err['msg'].lower()}, got {got!r}"
    return f"{path}: {err['msg']} (got {got!r})"


def _model_at(loc: tuple) -> type[BaseModel]:
    model: type[BaseModel] = Spec
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return model


# -- meaning --------------------------------------------------------------------------------------
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
    if isinstance(value, str) and eps is not None:
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


def _check(spec: Spec) -> tuple[Spec, list[str]]:
    from .. import builtins, registry, zoo

    builtins.load()
    issues: list[str] = []
    if not _NAME.match(spec.name):
        issues.append(f"name: {spec.name!r} must be 1-100 characters of letters, digits, '.', '_' or '-' "
                      "(it names the artifacts folder), starting with a letter or digit")

    # models and seeds: grid axes
    for field, values in (("model", spec.model), ("seed", spec.seed)):
        if isinstance(values, list):
            if not values:
                issues.append(f"{field}: empty list; give at least one value")
            for i, v in enumerate(values):
                if values.index(v) != i:
                    issues.append(f"{field}[{i}]: duplicate value {v!r} (each grid cell must be distinct)")
    known_zoo = sorted(set(zoo.recipe_names()) | set(zoo.available()))
    if isinstance(spec.target, list):
        if not spec.target:
            issues.append("target: empty list; give at least one target model")
        for i, v in enumerate(spec.target):
            if spec.target.index(v) != i:
                issues.append(f"target[{i}]: duplicate value {v!r} (each grid cell must be distinct)")
    named = [(f"model[{i}]" if isinstance(spec.model, list) else "model", m) for i, m in enumerate(spec.models)]
    named += [(f"target[{i}]" if isinstance(spec.target, list) else "target", m)
              for i, m in enumerate(spec.targets) if m is not None]
    for where, m in named:
        scheme, _, rest = m.partition(":")
        if scheme not in MODEL_SCHEMES or not rest:
            hint = f" Did you mean 'zoo:{m}'?" if m in known_zoo else ""
            issues.append(f"{where}: {m!r} must be 'zoo:NAME', 'hf:/path/to/dir', 'hf-blip:/path/to/dir' or "
                          f"'open_clip:ARCH:/path/to/file'.{hint}")
        elif scheme == "zoo" and rest not in known_zoo and not rest.endswith((".safetensors", ".pt", ".pth", ".bin")):
            issues.append(f"{where}: unknown zoo model {rest!r}; known: {', '.join(known_zoo) or '(none)'}."
                          f"{close_names(rest, known_zoo)}")

    # data
    d = spec.data
    if d.name not in DATASETS:
        issues.append(f"data.name: unknown data set {d.name!r}; allowed: {', '.join(DATASETS)}."
                      f"{close_names(d.name, list(DATASETS))}")
    elif d.name == "shapes":
        if d.split not in SHAPES_SPLITS:
            issues.append(f"data.split: {d.split!r} is not a shapes split; allowed: {', '.join(SHAPES_SPLITS)}."
                          f"{close_names(d.split, list(SHAPES_SPLITS))}")
        if d.n is None:
            issues.append("data.n: required for the shapes world (how many images to evaluate, e.g. 1000)")
        if d.path is not None:
            issues.append("data.path: not used by the shapes world (it is generated from data.seed); remove it")
    else:
        if d.path is None:
            issues.append(f"data.path: required for data set {d.name!r} (a folder or file on disk)")
        elif not Path(d.path).exists():
            issues.append(f"data.path: {d.path!r} does not exist")

    # task and metrics
    task_ok = spec.task in TASKS
    if not task_ok:
        issues.append(f"task: unknown task {spec.task!r}; allowed: {', '.join(TASKS)}.{close_names(spec.task, list(TASKS))}")
    metrics = list(spec.metrics) if spec.metrics is not None else list(DEFAULT_METRICS.get(spec.task, ()))
    if spec.metrics is not None and not spec.metrics:
        issues.append("metrics: empty list; omit the field for the task's defaults")
    if task_ok:
        allowed = list(TASK_METRICS[spec.task])
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
        noise_metric = NOISE_METRIC[spec.task]
        if spec.baseline is None and noise_metric in metrics:
            issues.append(f"metrics: {noise_metric!r} needs a baseline, but baseline is null; set `baseline: noise`")
        if spec.baseline is not None and noise_metric not in metrics:
            metrics.append(noise_metric)  # the baseline runs in every cell: always store its number

    issues += _check_defenses(spec)
    if spec.task == "transfer":
        if spec.target is None:
            issues.append("target: task 'transfer' needs the target models the source's adversarial pairs are "
                          "scored on (e.g. target: [zoo:shapes-clip-resnet, zoo:shapes-clip-vit])")
        if any(d is not None for d in spec.defenses):
            issues.append("defense: not supported with task 'transfer' (score a defended target instead)")
        if spec.targeted:
            issues.append("targeted: task 'transfer' is untargeted")
    elif spec.target is not None and task_ok:
        issues.append(f"target: only task 'transfer' has target models (task is {spec.task!r})")
    if spec.task == "backdoor":
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'backdoor' evaluates on the shapes world (its target-class captions come "
                          f"from it), got {spec.data.name!r}")
        if spec.targeted:
            issues.append("targeted: task 'backdoor' has its target in the attack's parameters (target: ...)")
        if spec.training is None:
            spec = spec.model_copy(update={"training": TrainingSpec()})
    elif spec.training is not None and task_ok:
        issues.append(f"training: only task 'backdoor' trains the victim (task is {spec.task!r})")
    on_pairs = spec.task == "backdoor" and spec.training.mode == "pretrain" and spec.training.epochs is not None
    for d in spec.defenses:
        if d is None or not _is_pretraining_defense(d.name):
            continue
        if not on_pairs:
            issues.append(f"defense {d.name!r} is a pre-training defense: it needs task 'backdoor' with training "
                          "{mode: pretrain, pairs: N, epochs: E} (it trains the victim from scratch on the poisoned "
                          "pairs in place of plain CLIP training)")
        if "epochs" in d.params:
            issues.append(f"defense {d.name!r}: params.epochs is the cell's training.epochs (a pre-training "
                          "defense trains as long as the plain training it is compared with); set training.epochs")

    # attack and baseline names
    kind = ATTACK_KIND.get(spec.task, "attacks")
    attack_names = [e.name for k in task_attack_kinds(spec.task) for e in registry.entries(k)]
    if kind in ("pair_attacks", "poisoning"):
        if spec.baseline not in (None, "noise"):
            what = ("uniform image noise of the attack's budget" if kind == "pair_attacks"
                    else "a noise patch of the trigger's size and place")
            issues.append(f"baseline: task {spec.task!r} has only the 'noise' baseline ({what}) or null, "
                          f"got {spec.baseline!r}")
    elif spec.baseline is not None and spec.baseline not in attack_names:
        issues.append(f"baseline: unknown attack {spec.baseline!r}; use 'noise' (uniform noise of the attack's "
                      f"budget) or null.{close_names(spec.baseline, attack_names)}")
    listed = isinstance(spec.attack, list)
    if listed and not spec.attack:
        issues.append("attack: empty list; give at least one attack")
    checked: list[AttackSpec] = []
    for i, attack in enumerate(spec.attacks):
        attack_issues = []
        attack_ok = attack.name in attack_names
        if not attack_ok:
            attack_issues.append(f"attack.name: unknown {'pair attack' if kind == 'pair_attacks' else 'attack'} "
                                 f"{attack.name!r} for task {spec.task!r}; registered: "
                                 f"{', '.join(attack_names) or '(none)'}.{close_names(attack.name, attack_names)}")
        elif listed and attack in spec.attacks[:i]:
            attack_issues.append("attack: duplicate entry (each grid cell must be distinct)")
        params, param_issues = _check_params(attack.params, attack.name if attack_ok else None,
                                             attack_kind(spec.task, attack.name))
        attack_issues += param_issues
        if not attack_issues and not issues:
            attack_issues += _try_build(spec, attack.name, params)
        if listed:  # name the entry: attack[1].params.eps
            attack_issues = [f"attack[{i}]{m[len('attack'):]}" if m.startswith("attack") else m
                             for m in attack_issues]
        issues += attack_issues
        checked.append(AttackSpec(name=attack.name, params=params))
    spec = spec.model_copy(update={"metrics": metrics, "attack": checked if listed else checked[0]})
    return spec, issues


DEFAULT_DEFENSE_DATA = {"name": "shapes", "split": "train", "n": 2000, "image_size": 32, "seed": 0}


def _check_defenses(spec: Spec) -> list[str]:
    """Defense names are registered, parameters accepted, training data well-formed, no duplicates."""
    from .. import registry

    issues: list[str] = []
    names = [e.name for k in DEFENSE_KINDS for e in registry.entries(k)]
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
        if d.name not in names:
            issues.append(f"{where}.name: unknown defense {d.name!r}; registered: {', '.join(names) or '(none)'}, "
                          f"or 'none' for the undefended model.{close_names(d.name, names + ['none'])}")
            continue
        accepted, var_kw = _accepted_kwargs(registry.find(d.name, DEFENSE_KINDS).factory)
        for key, value in d.params.items():
            if not var_kw and key not in accepted:
                issues.append(f"{where}.params.{key}: {d.name} has no parameter {key!r}; its parameters are "
                              f"{', '.join(sorted(accepted))}.{close_names(key, sorted(accepted))}")
            elif key in BUDGET_PARAMS and parse_number(value) is None:
                issues.append(f"{where}.params.{key}: expected a number or a fraction such as '4/255', got {value!r}")
        if not issues:
            try:
                build_defense(d.name, resolve_defense_params(d.params))
            except (TypeError, ValueError) as e:
                issues.append(f"{where}.params: {d.name} rejected {dict(d.params)}: {e}")
        if d.data is not None and d.data.name == "shapes" and d.data.split == "test":
            issues.append(f"{where}.data.split: a defense must not train on the test split it is evaluated on; "
                          "use train or val")
    return issues


def _is_pretraining_defense(name: str) -> bool:
    from .. import registry
    from ..defenses.base import PretrainingDefense

    known = {e.name: e.factory for k in DEFENSE_KINDS for e in registry.entries(k)}
    factory = known.get(name)
    return isinstance(factory, type) and issubclass(factory, PretrainingDefense)


def resolve_defense_params(params: dict[str, Any]) -> dict[str, Any]:
    """Defense parameters with fractions ('4/255') resolved to floats."""
    return {k: (parse_number(v) if k in BUDGET_PARAMS else v) for k, v in params.items()}


def defense_config(d: DefenseSpec | None) -> dict | None:
    """The plain-dict form of a defense stored in a cell (and hashed with it)."""
    if d is None:
        return None
    data = d.data.model_dump(mode="json") if d.data is not None else dict(DEFAULT_DEFENSE_DATA, path=None)
    return {"name": d.name, "params": resolve_defense_params(d.params), "data": data}


def _check_params(params: dict[str, Any], attack: str | None,
                  kind: str = "attacks") -> tuple[dict[str, Any], list[str]]:
    """Normalise fractions in budget params; check names against the attack's signature."""
    from .. import registry

    issues: list[str] = []
    out: dict[str, Any] = {}
    if attack is not None:
        accepted, var_kw = _accepted_kwargs(registry.get(kind, attack).factory)
        if not var_kw:
            for key in params:
                if key not in accepted:
                    issues.append(f"attack.params.{key}: {attack} has no parameter {key!r}; its parameters are "
                                  f"{', '.join(sorted(accepted))}.{close_names(key, sorted(accepted))}")
    norms = {str(v) for v in _as_list(params.get("norm", "linf"))}
    for key, value in params.items():
        # L-inf budgets are in [0, 1]; an L2 budget is the norm of the whole perturbation (>= 0).
        high = math.inf if "l2" in norms else 1.0
        listed = isinstance(value, list)
        if listed and not value:
            issues.append(f"attack.params.{key}: empty list; give at least one value")
        values = []
        for i, v in enumerate(_as_list(value)):
            where = f"attack.params.{key}[{i}]" if listed else f"attack.params.{key}"
            if key != "eps" and is_relative(v):
                try:
                    resolve_relative(v, 1.0)
                except ValueError:
                    issues.append(f"{where}: {v!r} divides eps by zero")
                    continue
                values.append(v.strip().replace(" ", ""))
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
        for i, v in enumerate(values):
            if values.index(v) != i:
                issues.append(f"attack.params.{key}[{i}]: duplicate value {v!r} (each grid cell must be distinct)")
        out[key] = values if listed else (values[0] if values else value)
    return out, issues


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


def _try_build(spec: Spec, name: str, params: dict[str, Any]) -> list[str]:
    """Construct the attack (and baseline) for every parameter combination, so a bad value fails now."""
    issues: list[str] = []
    for combo in param_combinations(params):
        shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
        unresolved = [k for k, v in combo.items() if is_relative(v)]
        if unresolved:
            issues.append(f"attack.params.{unresolved[0]}: {combo[unresolved[0]]!r} is relative to eps, "
                          "but the attack has no eps parameter")
            break
        kind = attack_kind(spec.task, name)
        try:
            attack = build_attack(name, combo, kind)
        except (TypeError, ValueError) as e:
            issues.append(f"attack.params: {name} rejected ({shown}): {e}")
            break
        if spec.baseline is not None and kind == "pair_attacks":
            if "eps" not in attack.params():
                issues.append(f"baseline: 'noise' needs the attack's eps, but {name} has none; "
                              "set `baseline: null`")
                break
        elif spec.baseline is not None and kind in ("poisoning", "model_backdoors"):
            from ..attacks.backdoor.triggers import OptimizedPatch, PatchTrigger

            # an attack that optimises its patch later (BadCLIP) has no trigger yet, but a patch_size
            patch = getattr(attack, "trigger", None)
            if not (isinstance(patch, (PatchTrigger, OptimizedPatch)) or (patch is None and hasattr(attack, "patch_size"))):
                issues.append(f"baseline: 'noise' is a noise patch of the trigger's size and place, but {name}'s "
                              "trigger is not a patch; set `baseline: null`")
                break
        elif spec.baseline is not None:
            try:
                build_baseline(spec.baseline, attack)
            except (TypeError, ValueError, KeyError) as e:
                issues.append(f"baseline: {spec.baseline!r} cannot be built with the budget of ({shown}): {e}")
                break
    return issues


__all__ = ["AttackSpec", "DataSpec", "DefenseSpec", "Spec", "TrainingSpec", "SpecError", "load_spec", "param_combinations", "parse_number"]
