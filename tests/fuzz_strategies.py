"""Hypothesis strategies for fuzzing the CLI (tests/test_fuzz.py): specs, argument lists, store snapshots.

Specs start from valid ones (a tiny zero-shot spec, and the recipes' smoke presets) and are then
damaged: a field replaced by garbage (wrong types, out-of-range and huge numbers, unknown names,
nested lists and mappings), removed, renamed, wrapped in a list; or the YAML itself is broken.
Argument lists are the CLI's commands with generated options, or tokens drawn at random.

A valid spec may run cells: :func:`cheap_cell` says which ones really run (zero-shot, at most 4
images of 32 pixels, a few attack steps); the rest are recorded as failed by the harness, so the
store's failure path is exercised without training anything.
"""

from __future__ import annotations

import copy
import functools
import json
import sqlite3
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # (libyaml's when there: the fuzzer dumps many specs)


def to_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, allow_unicode=True)

TINY = {
    "name": "fuzz",
    "seed": 0,
    "model": "zoo:shapes-clip-resnet",
    "data": {"name": "shapes", "split": "test", "n": 2, "image_size": 32, "seed": 0},
    "task": "zeroshot",
    "attack": {"name": "pgd", "params": {"eps": "8/255", "alpha": "eps/2", "steps": 2}},
    "baseline": "noise",
    "batch_size": 8,
    "save_artifacts": False,
}

HUGE = [0, -1, 1, 2, 3, 4, 7, 8, 10, 15, 16, 17, 255, 1000, 10**5, 10**6, 10**9, 2**31, 2**63, 10**30, -(10**9)]
WORDS = ["", " ", "pgd", "pgdd", "fgsm", "noise", "none", "shapes", "imagefolder", "test", "train", "val",
         "zeroshot", "retrieval", "transfer", "backdoor", "segmentation", "zoo:shapes-clip-resnet",
         "zoo:shapes-clip-vit", "zoo:shapes-albef", "zoo:", "zoo:nope", "zoo:/nonexistent/x.safetensors",
         "hf:", "hf:/nonexistent", "open_clip:ViT-B-32:/nope.safetensors", "shapes-clip-resnet", "8/255",
         "1/0", "0/0", "eps/4", "eps/0", "eps*2", "-8/255", "1e309", "nan", "inf", "linf", "l2", "l7",
         "clean_accuracy", "robust_accuracy", "asr", "red circle", "patch", "cleanclip", "clean_finetune",
         "../../etc", "[/bold]", "[red]x", "a" * 120, "名前", "\x00", "{", "- x", "null", "true", "smoke", "dev", "paper"]
KEYS = ["name", "params", "n", "image_size", "split", "seed", "path", "start", "eps", "alpha", "steps", "norm",
        "model", "data", "task", "attack", "defense", "metrics", "baseline", "target", "training", "pairs",
        "epochs", "mode", "rate", "trigger", "models", "batch_size", "presets", "unknown_field", "x"]

DAMAGED: list[str] = []  # model names of damaged checkpoints, filled by make_damaged_models()


def make_damaged_models(folder: Path) -> list[str]:
    """Damaged copies of a shipped checkpoint, its card and a Hugging Face folder; their model names."""
    import os

    from mmsec import zoo

    folder.mkdir(parents=True, exist_ok=True)
    weights = (zoo.CHECKPOINTS / "shapes-clip-resnet.safetensors").read_bytes()
    card = json.loads((zoo.CHECKPOINTS / "shapes-clip-resnet.json").read_text())
    nosha = {k: v for k, v in card.items() if k != "sha256"}
    rng = __import__("random").Random(0)
    noise = bytes(rng.randrange(256) for _ in range(4096))
    cases = {  # name: (weights bytes, card text or bytes, or None for no card)
        "truncated": (weights[: len(weights) // 2], json.dumps(card)),
        "truncated-nosha": (weights[: len(weights) // 2], json.dumps(nosha)),
        "header-only": (weights[:8], json.dumps(nosha)),
        "random": (noise, json.dumps(nosha)),
        "empty": (b"", json.dumps(nosha)),
        "nocard": (weights, None),
        "card-bytes": (weights, noise),
        "card-list": (weights, "[1, 2]"),
        "card-string": (weights, '"sha256"'),
        "card-badsha": (weights, json.dumps({**card, "sha256": 12})),
        "card-truncated": (weights, json.dumps(card)[:40]),
    }
    names = []
    for name, (w, c) in cases.items():
        (folder / f"{name}.safetensors").write_bytes(w)
        if c is not None:
            (folder / f"{name}.json").write_bytes(c if isinstance(c, bytes) else c.encode())
        names.append(f"zoo:{folder / name}.safetensors")
    for name, config, w in (("hf-truncated", {"model_type": "clip"}, weights[:5000]),
                            ("hf-config-bytes", noise, weights), ("hf-config-list", [1], weights),
                            ("hf-random", {"model_type": "clip"}, noise)):
        d = folder / name
        d.mkdir(exist_ok=True)
        (d / "config.json").write_bytes(config if isinstance(config, bytes) else json.dumps(config).encode())
        (d / "model.safetensors").write_bytes(w)
        names.append(f"hf:{d}")
    unreadable = folder / "unreadable.safetensors"
    unreadable.write_bytes(weights)
    (folder / "unreadable.json").write_text(json.dumps(card))
    os.chmod(unreadable, 0)
    names.append(f"zoo:{unreadable}")
    DAMAGED[:] = names
    return names


scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(HUGE), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS), st.text(max_size=12))
garbage = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner,
                                            max_size=4)),
    max_leaves=8)


@functools.lru_cache(maxsize=1)
def base_specs() -> tuple[dict, ...]:
    """The tiny spec and every recipe's smoke preset (raw dicts, presets merged in; copy before changing)."""
    from mmsec.runs.spec import apply_preset

    bases = [TINY]
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        presets = raw.get("presets") or {}
        bases.append(apply_preset(raw, "smoke" if "smoke" in presets else None))
    return tuple(bases)


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a nested dict/list, the root included."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, prefix + (i,))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _delete(root: Any, path: tuple) -> Any:
    if not path:
        return {}
    parent = _get(root, path[:-1])
    del parent[path[-1]]
    return root


@st.composite
def mutated_spec(draw) -> Any:
    """A base spec with 1-3 mutations."""
    bases = base_specs()
    spec = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(spec)))
        current = _get(spec, where)
        op = draw(st.sampled_from(["garbage", "size", "word", "delete", "extra", "listify", "duplicate",
                                   "number"]))
        if op == "garbage":
            spec = _set(spec, where, draw(garbage))
        elif op == "size":
            spec = _set(spec, where, draw(st.sampled_from(HUGE)))
        elif op == "word":
            spec = _set(spec, where, draw(st.sampled_from(WORDS + DAMAGED)))
        elif op == "delete":
            spec = _delete(spec, where)
        elif op == "extra" and isinstance(current, dict):
            current[draw(st.sampled_from(KEYS))] = draw(garbage)
        elif op == "listify":
            spec = _set(spec, where, [copy.deepcopy(current)] * draw(st.integers(0, 3)))
        elif op == "duplicate" and isinstance(current, list) and current:
            current.append(copy.deepcopy(current[0]))
        elif op == "number" and isinstance(current, (int, float)) and not isinstance(current, bool):
            spec = _set(spec, where, draw(st.sampled_from([current * 1000, -current, current + 0.5, 10**9])))
    return spec


@st.composite
def spec_text(draw) -> str | bytes:
    """YAML text of a mutated spec, or broken YAML / bytes."""
    kind = draw(st.sampled_from(["yaml"] * 8 + ["broken", "bytes", "scalar"] + ["model"] * bool(DAMAGED)))
    if kind == "model":  # the tiny spec on a damaged model
        return to_yaml({**TINY, "model": draw(st.sampled_from(DAMAGED))})
    if kind == "broken":
        good = to_yaml(draw(mutated_spec()))
        cut = draw(st.integers(0, len(good)))
        return good[:cut] + draw(st.sampled_from(["", ": [", "\t- {", "'", "&a *b", "!!python/object:os.system x"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "scalar":
        return to_yaml(draw(scalars))
    return to_yaml(draw(mutated_spec()))


TOKENS = ["run", "results", "list", "zoo", "info", "data", "export", "quickstart", "--help", "--json", "--n",
          "--model", "--results-dir", "--spec", "--format", "--matrix", "--preset", "--backend", "--image-size",
          "--split", "--seed", "--overwrite", "--quiet", "-q", "--threads", "0", "1", "2", "-1", "1000000000",
          "table", "csv", "json", "xml", "attacks", "defenses", "tasks", "models", "sequential", "asr", "smoke",
          "nope", "zoo:shapes-clip-vitt", "shapes-clip-vit"]


@st.composite
def cli_args(draw, spec_file: str, folder: str) -> list[str]:
    """One argument list: a command with generated options (``spec_file`` holds a generated spec)."""
    word = st.one_of(st.sampled_from(WORDS), st.text(max_size=10).filter(lambda s: not s.startswith("-")))
    number = st.one_of(st.sampled_from([str(x) for x in HUGE]), st.sampled_from(["x", "1.5", "", "nan"]))
    results = [] if draw(st.booleans()) else ["--results-dir", draw(st.sampled_from(
        [f"{folder}/store", f"{folder}/store", f"{folder}/missing", spec_file, "/proc/nope"]))]
    kind = draw(st.sampled_from(["run"] * 6 + ["results"] * 3 + ["list", "zoo", "quickstart", "export", "tokens"]))
    if kind == "run":
        args = ["run", draw(st.sampled_from([spec_file] * 6 + [folder, f"{folder}/nope.yaml", ""]))]
        if draw(st.integers(0, 4)) == 0:
            args += ["--preset", draw(st.sampled_from(["smoke", "dev", "paper", "nope", ""]))]
        if draw(st.integers(0, 6)) == 0:
            args += ["--backend", draw(st.sampled_from(["nope", "", "SEQUENTIAL"]))]
        return args + (results or ["--results-dir", f"{folder}/store"])
    if kind == "results":
        args = ["results"]
        if draw(st.booleans()):
            args += ["--spec", draw(st.one_of(st.sampled_from(["fuzz", "fuzzz", "quickstart"]), word))]
        if draw(st.booleans()):
            args += ["--format", draw(st.sampled_from(["table", "csv", "json", "xml", ""]))]
        if draw(st.integers(0, 3)) == 0:
            args += ["--matrix", draw(st.one_of(st.sampled_from(["asr", "robust_accuracy"]), word))]
        return args + (results or ["--results-dir", f"{folder}/store"])
    if kind == "list":
        return ["list"] + draw(st.lists(st.one_of(st.sampled_from(["attacks", "tasks", "--json", "nope"]), word),
                                        max_size=2))
    if kind == "zoo":
        return ["zoo"] + draw(st.sampled_from([["list"], ["info"], ["nope"], []])) + draw(
            st.lists(st.one_of(st.sampled_from(["shapes-clip-vit", "shapes-clip-vitt"]), word), max_size=1))
    if kind == "quickstart":
        args = ["quickstart", "--n", draw(number)]
        if draw(st.booleans()):
            args += ["--model", draw(st.one_of(st.sampled_from(WORDS + DAMAGED * 3), word))]
        if draw(st.booleans()):
            args.append("--json")
        return args + (results or ["--results-dir", f"{folder}/store"])
    if kind == "export":
        args = ["data", "export", draw(st.sampled_from([f"{folder}/export", spec_file, "/proc/nope", ""]))]
        for opt in ("--n", "--image-size", "--seed"):
            if draw(st.booleans()):
                args += [opt, draw(number)]
        if draw(st.booleans()):
            args += ["--split", draw(word)]
        return args
    return draw(st.lists(st.one_of(st.sampled_from(TOKENS), word), max_size=6))


def cheap_cell(cell: dict) -> bool:
    """True for a cell the fuzzer really runs: zero-shot, <= 4 images of <= 32 px, a few attack steps."""
    data, attack = cell.get("data") or {}, cell.get("attack") or {}
    params = attack.get("params") or {}
    ints = [v for v in params.values() if isinstance(v, int) and not isinstance(v, bool)]
    return (cell.get("task") == "zeroshot" and data.get("name") == "shapes" and (data.get("n") or 99) <= 4
            and (data.get("image_size") or 32) <= 32 and attack.get("name") in ("pgd", "fgsm", "noise")
            and all(v <= 8 for v in ints) and not cell.get("defense")
            and cell.get("model") in ("zoo:shapes-clip-resnet", "zoo:shapes-clip-vit", "shapes-clip-resnet"))


def store_snapshot(folder: Path) -> dict | None:
    """The finished rows of a store (done runs, their metrics and artifacts), or None when there is none."""
    db = Path(folder) / "results.sqlite"
    if not db.is_file():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = {r[0]: r for r in conn.execute("SELECT * FROM runs WHERE status = 'done'")}
        metrics = sorted(conn.execute("SELECT m.* FROM metrics m JOIN runs r USING (run_id) WHERE r.status = 'done'"))
        artifacts = sorted(conn.execute("SELECT a.* FROM artifacts a JOIN runs r USING (run_id) "
                                        "WHERE r.status = 'done'"))
    finally:
        conn.close()
    return {"runs": runs, "metrics": metrics, "artifacts": artifacts}


def extends(before: dict | None, after: dict | None) -> bool:
    """``after`` keeps every finished row of ``before`` unchanged (and may add more)."""
    if before is None:
        return True
    if after is None:
        return False
    return (all(after["runs"].get(k) == v for k, v in before["runs"].items())
            and set(before["metrics"]) <= set(after["metrics"]) and set(before["artifacts"]) <= set(after["artifacts"]))


def dump(obj: Any) -> str:
    return json.dumps(obj, default=repr)[:400]
