"""Fuzzing the CLI (issue 16): generated specs and argument lists through ``mmsec.cli.main`` in-process.

Each generated case (strategies in ``fuzz_strategies.py``: valid specs damaged with wrong types,
out-of-range and huge numbers, unknown names, nested garbage, broken YAML, damaged checkpoints; every
command with generated options; random tokens) runs on one shared results folder that starts with a
finished run, and must end with

- exit code 0, 1 or 2;
- no traceback and no "internal error" on stderr or stdout (an unexpected exception is a bug);
- within 30 seconds (sizes fail fast);
- the store unchanged or extended: every finished row (run, metric, artifact) as it was, and the store
  still readable.

Real cells run only when tiny (``fuzz_strategies.cheap_cell``); the others are recorded as failed by a
stand-in, so the store's failure path is exercised without training anything; likewise a valid ``data
export`` of more than 16 images of 32 x 32 is checked and then skipped. The default run makes
500 cases (derandomised: the same cases every run, a few seconds); ``-m slow`` makes 20,000 random ones.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_strategies as fs
from cli_helpers import one_clean_line, subprocess_cli, unprivileged
from mmsec.cli import main
from mmsec.data import export
from mmsec.runs import ResultsStore, execute
from mmsec.runs.store import open_for_reading

CASE_SECONDS = 30


class TooSlow(BaseException):
    """A case that did not finish in CASE_SECONDS: a size that does not fail fast."""


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    fs.make_damaged_models(folder / "models")
    stats: Counter = Counter()
    real = execute.run_cell

    def guarded(cell, *args, **kwargs):
        if fs.cheap_cell(cell):
            stats["real_cells"] += 1
            return real(cell, *args, **kwargs)
        stats["stand_in_cells"] += 1
        return {"status": "failed", "error": "FuzzStandIn: not a tiny cell, not run by the fuzzer",
                "wall_time_s": 0.0}

    real_export = export.export_shapes

    def guarded_export(out_dir, split="test", n=100, image_size=32, **kwargs):
        if n * image_size**2 <= 16 * 32**2:
            stats["real_exports"] += 1
            return real_export(out_dir, split=split, n=n, image_size=image_size, **kwargs)
        stats["stand_in_exports"] += 1  # (valid but minutes of rendering: not the fuzzer's business)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(execute, "run_cell", guarded)
        mp.setattr(export, "export_shapes", guarded_export)
        mp.chdir(folder)  # (the default --results-dir and relative paths land here)
        mp.setenv("MMSEC_QUIET", "1")
        mp.delenv("MMSEC_NO_LIMITS", raising=False)
        mp.delenv("MMSEC_DEBUG", raising=False)
        (folder / "seed.yaml").write_text(yaml.safe_dump(fs.TINY))
        assert main(["run", str(folder / "seed.yaml"), "--results-dir", str(folder / "store")]) == 0
        assert stats["real_cells"] == 1  # the store starts with a finished run to protect
        yield folder, stats


def fuzz_case(folder: Path, stats: Counter, data) -> None:
    spec_file = folder / "spec.yaml"
    args = data.draw(fs.cli_args(str(spec_file), str(folder)), label="argv")
    text = data.draw(fs.spec_text(), label="spec") if str(spec_file) in args else ""
    if isinstance(text, bytes):
        spec_file.write_bytes(text)
    else:
        spec_file.write_text(text)
    store = folder / "store"
    before = fs.store_snapshot(store)
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = [logging.StreamHandler(err)]

    def too_slow(*_):
        raise TooSlow(f"mmsec {' '.join(args)} ran for more than {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        root.handlers, root.level = handlers, level
    stats["cases"] += 1
    stats[f"exit{code}"] += 1
    shown = f"mmsec {fs.dump(args)}\n--- spec:\n{str(text)[:600]}\n--- stderr:\n{err.getvalue()[-2000:]}"
    assert code in (0, 1, 2), shown
    assert "Traceback" not in err.getvalue() + out.getvalue(), shown
    assert "internal error" not in err.getvalue(), shown
    after = fs.store_snapshot(store)
    assert fs.extends(before, after), shown
    open_for_reading(store).close()  # still a readable store


def _run(arena, n: int, derandomize: bool) -> Counter:
    folder, stats = arena
    start = Counter(stats)

    @settings(max_examples=n, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def case(data):
        fuzz_case(folder, stats, data)

    case()
    return stats - start


def test_fuzz_cli_500_cases(arena):
    made = _run(arena, 500, derandomize=True)
    print(dict(made))
    assert made["cases"] >= 500
    # the cases reach every outcome: success, failed cells, rejected input
    assert made["exit0"] and made["exit1"] and made["exit2"] > made["cases"] // 2, made


@pytest.mark.slow
def test_fuzz_cli_20000_cases(arena):
    made = _run(arena, 20_000, derandomize=False)
    print(dict(made))
    assert made["cases"] >= 20_000, made


def test_the_fuzzer_catches_a_traceback(arena, monkeypatch):
    """The property can fail: a command that raises an unexpected exception is reported."""
    from mmsec import registry

    def broken(*a, **k):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(registry, "kinds", broken)
    folder, stats = arena

    @settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def case(data):
        monkeypatch.setattr(fs, "cli_args", lambda *a: st.just(["list"]))
        fuzz_case(folder, stats, data)

    with pytest.raises(AssertionError, match="internal error"):
        case()
    assert os.environ.get("MMSEC_DEBUG") is None


# -- damaged stores and checkpoints: clean errors -------------------------------------------------------------

@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("damaged")
    return folder, fs.make_damaged_models(folder / "models")


@pytest.mark.parametrize("which", range(15))
def test_damaged_checkpoints_are_one_line_naming_the_file(capsys, damaged, which):
    folder, names = damaged
    name = [n for n in names if "unreadable" not in n][which]  # (the unreadable one: below, with permissions)
    code = main(["quickstart", "--n", "2", "--model", name, "--results-dir", str(folder / "S")])
    line = one_clean_line(capsys.readouterr().err)
    path = Path(name.split(":", 1)[1])
    assert code == 2 and (path.stem in line or path.name in line), (name, line)


def test_unreadable_checkpoint_and_store_are_one_line(tmp_path):
    from mmsec import zoo

    prefix = unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced here")
    for suffix in (".safetensors", ".json"):
        (tmp_path / f"model{suffix}").write_bytes((zoo.CHECKPOINTS / f"shapes-clip-resnet{suffix}").read_bytes())
    (tmp_path / "model.safetensors").chmod(0)
    proc = subprocess_cli("quickstart", "--n", "2", "--model", f"zoo:{tmp_path / 'model.safetensors'}",
                          "--results-dir", str(tmp_path / "S"), prefix=prefix)
    line = one_clean_line(proc.stderr)
    assert proc.returncode == 2 and "model.safetensors" in line and "Permission denied" in line
    (tmp_path / "model.safetensors").chmod(0o644)
    (tmp_path / "model.json").chmod(0)
    proc = subprocess_cli("quickstart", "--n", "2", "--model", f"zoo:{tmp_path / 'model.safetensors'}",
                          "--results-dir", str(tmp_path / "S"), prefix=prefix)
    assert proc.returncode == 2 and "model.json" in one_clean_line(proc.stderr)
    store = tmp_path / "store"
    with ResultsStore(store):
        pass
    (store / "results.sqlite").chmod(0)
    try:
        for argv in (["results"], ["run", str(tmp_path / "nope.yaml")]):
            proc = subprocess_cli(*argv, "--results-dir", str(store), prefix=prefix)
            assert proc.returncode == 2, proc.stderr
            one_clean_line(proc.stderr)
        proc = subprocess_cli("results", "--results-dir", str(store), prefix=prefix)
        assert "results.sqlite" in proc.stderr
    finally:
        (store / "results.sqlite").chmod(0o644)


def _store_with_runs(folder: Path) -> Path:
    cell = {"spec_name": "kept", "model": "zoo:shapes-clip-resnet", "seed": 0,
            "attack": {"name": "pgd", "params": {"eps": 8 / 255}}}
    with ResultsStore(folder) as store:
        for i in range(40):
            run_id = store.claim(f"cell-{i}", {**cell, "seed": i}, "sh")
            if i % 5 == 4:
                store.fail(run_id, f"ValueError: cell {i}")
            else:
                store.finish(run_id, {"metrics": [{"name": "clean_accuracy", "value": i / 40, "metric_version": 1,
                                                   "threat_model": "clean inputs", "definition": "top-1",
                                                   "higher_is_better": True}], "artifacts": [],
                                      "wall_time_s": 0.1})
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("FUZZ_STORE_SEEDS", "12"))))
def test_randomly_damaged_store_never_gives_a_traceback(capsys, tmp_path, monkeypatch, seed):
    """Truncation at a random offset, random bytes over a random range, or a zeroed page: `results` and `run`
    answer with rows or one clean line, never a traceback."""
    import random

    monkeypatch.setattr(execute, "run_cell", lambda cell, *a, **k: {"status": "failed", "error": "StandIn: not run",
                                                                    "wall_time_s": 0.0})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(fs.TINY))

    rng = random.Random(seed)
    store = _store_with_runs(tmp_path / "S")
    db = store / "results.sqlite"
    data = bytearray(db.read_bytes())
    kind = ("truncate", "random", "zero-page")[seed % 3]
    if kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "random":
        at, n = rng.randrange(len(data)), rng.randrange(1, 512)
        data[at:at + n] = bytes(rng.randrange(256) for _ in range(len(data[at:at + n])))
    else:
        page = 4096 * rng.randrange(len(data) // 4096)
        data[page:page + 4096] = bytes(min(4096, len(data) - page))
    db.write_bytes(bytes(data))
    for argv in (["results", "--results-dir", str(store)], ["results", "--results-dir", str(store), "--format", "csv"],
                 ["run", str(tmp_path / "spec.yaml"), "--results-dir", str(store)]):
        code = main(argv)
        captured = capsys.readouterr()
        assert code in ((0, 2) if argv[0] == "results" else (1, 2)), (kind, argv, captured.err)
        assert "Traceback" not in captured.err + captured.out and "internal error" not in captured.err, captured.err
        if code == 2:
            one_clean_line(captured.err)


# -- what the fuzzer found, kept as regressions ---------------------------------------------------------------

FOUND = {  # (argv with {spec} / {models} placeholders, spec or None): each gave a traceback or ran unbounded,
    # except the last, a cell that failed at run time before and is now a spec problem
    "zoo card that is a JSON list": (["quickstart", "--n", "2", "--model", "zoo:{models}/card-list.safetensors"], None),
    "zoo card that is a JSON string": (["quickstart", "--n", "2", "--model", "zoo:{models}/card-string.safetensors"],
                                       None),
    "hf config.json that is a JSON list": (["run", "{spec}"], {**fs.TINY, "model": "hf:{models}/hf-config-list"}),
    "data export of a million images": (["data", "export", "{folder}/export", "--n", "1000000"], None),
    "eps given as a mapping with a relative alpha": (["run", "{spec}"], {
        **fs.TINY, "attack": {"name": "pgd", "params": {"alpha": "eps/2", "eps": {}, "steps": 2}}}),
    "a seed of 2**63 (beyond SQLite's integers)": (["run", "{spec}"], {**fs.TINY, "seed": 2**63}),
    "a negative data seed (numpy refuses it)": (["run", "{spec}"], {**fs.TINY, "data": {**fs.TINY["data"],
                                                                                   "seed": -1}}),
}


@pytest.mark.parametrize("found", list(FOUND))
def test_what_the_fuzzer_found_is_one_clean_line(capsys, damaged, found):
    folder, _ = damaged
    argv, spec = FOUND[found]
    fill = {"spec": str(folder / "found.yaml"), "models": str(folder / "models"), "folder": str(folder)}
    if spec is not None:
        (folder / "found.yaml").write_text(yaml.safe_dump(spec).replace("{models}", fill["models"]))
    code = main([a.format(**fill) for a in argv] + ([] if argv[0] == "data" else ["--results-dir", str(folder / "S")]))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "internal error" not in err and "Traceback" not in err, err
    if "invalid experiment spec" not in err:  # (a spec's problems: one line each under a heading)
        one_clean_line(err)
