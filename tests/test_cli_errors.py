"""Every error path of the CLI (issue 16): one line naming the input, exit 2 for bad input, exit 1 for a
failed cell, never a traceback (unless MMSEC_DEBUG=1); failed and running cells visible in `mmsec results`;
`mmsec --help` without torch; `mmsec list` never cuts a summary; cached cells said to be cached."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cli_helpers import SRC, one_clean_line, subprocess_cli, unprivileged
from mmsec import cli
from mmsec.cli import main
from mmsec.quickstart import quickstart_spec
from mmsec.runs import ResultsStore


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_spec_file(folder: Path, name: str = "tiny", **changes) -> Path:
    spec = quickstart_spec(n=4)
    spec.update(name=name, save_artifacts=False, batch_size=4)
    spec["attack"]["params"].update(eps=["8/255"], steps=2, alpha="eps/2")
    spec.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def finished_store(folder: Path, value: float = 0.75) -> Path:
    """A store with one finished run (written through the store's API, no cell computed)."""
    cell = {"spec_name": "stored", "model": "zoo:shapes-clip-resnet", "seed": 0,
            "attack": {"name": "pgd", "params": {"eps": 8 / 255}}}
    with ResultsStore(folder) as store:
        run_id = store.claim("cell-1", cell, "spec-hash")
        store.finish(run_id, {"metrics": [{"name": "clean_accuracy", "value": value, "metric_version": 1,
                                           "threat_model": "clean inputs", "definition": "top-1",
                                           "higher_is_better": True}], "artifacts": [], "wall_time_s": 2.5})
    return folder


# -- damaged stores ---------------------------------------------------------------------------------------

STORE_DAMAGE = {
    "random bytes": lambda db: db.write_bytes(os.urandom(4096)),
    "truncated": lambda db: db.write_bytes(db.read_bytes()[:4096]),
    "another program's database": lambda db: (db.unlink(), __import__("sqlite3").connect(db).executescript(
        "CREATE TABLE things (x INTEGER); INSERT INTO things VALUES (1);")),
    "another schema version": lambda db: __import__("sqlite3").connect(db).execute("PRAGMA user_version = 7"),
    "a folder": lambda db: (db.unlink(), db.mkdir()),
}


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_a_damaged_store_is_one_line_naming_it(capsys, tmp_path, damage):
    store = finished_store(tmp_path / "S")
    for extra in ("results.sqlite-wal", "results.sqlite-shm"):
        (store / extra).unlink(missing_ok=True)
    STORE_DAMAGE[damage](store / "results.sqlite")
    code, out, err = run_cli(capsys, "results", "--results-dir", str(store))
    assert code == 2, (out, err)
    assert "results.sqlite" in one_clean_line(err)
    spec = tiny_spec_file(tmp_path)
    code, out, err = run_cli(capsys, "run", str(spec), "--results-dir", str(store))
    assert code == 2, (out, err)
    assert "results.sqlite" in one_clean_line(err)


def test_the_issue_reproduction_random_bytes_store(capsys, tmp_path):
    # head -c 4096 /dev/urandom > S/results.sqlite; mmsec results --results-dir S
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "results.sqlite").write_bytes(os.urandom(4096))
    code, _, err = run_cli(capsys, "results", "--results-dir", str(tmp_path / "S"))
    line = one_clean_line(err)
    assert code == 2 and "is not a readable mmsec results store" in line and "another --results-dir" in line


def test_results_dir_that_is_a_file_is_one_line(capsys, tmp_path):
    spec = tiny_spec_file(tmp_path)
    code, _, err = run_cli(capsys, "run", str(spec), "--results-dir", str(spec))
    assert code == 2 and "not a folder" in one_clean_line(err)


# -- permissions: a read-only store is readable; a folder that cannot be written is one line ----------------

def test_read_only_store_is_readable_and_not_writable(tmp_path):
    prefix = unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced here")
    store = finished_store(tmp_path / "S", value=0.996999979019165)
    spec = tiny_spec_file(tmp_path)
    (tmp_path / "locked").mkdir()
    try:
        for p in [store, *store.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        (tmp_path / "locked").chmod(0o555)
        proc = subprocess_cli("results", "--results-dir", str(store), prefix=prefix)
        assert proc.returncode == 0, proc.stderr
        assert "stored" in proc.stdout and "0.997" in proc.stdout and "Traceback" not in proc.stderr
        proc = subprocess_cli("results", "--results-dir", str(store), "--format", "json", prefix=prefix)
        assert proc.returncode == 0 and json.loads(proc.stdout)[0]["value"] == 0.997
        proc = subprocess_cli("run", str(spec), "--results-dir", str(store), prefix=prefix)
        assert proc.returncode == 2 and "cannot write the results store" in one_clean_line(proc.stderr)
        proc = subprocess_cli("run", str(spec), "--results-dir", str(tmp_path / "locked" / "new"), prefix=prefix)
        assert proc.returncode == 2 and "cannot create the results folder" in one_clean_line(proc.stderr)
        assert not (tmp_path / "locked" / "new").exists()
    finally:
        for p in [tmp_path / "locked", store, *store.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


# -- models: one line, exit 2, also under Ray ------------------------------------------------------------

def test_bad_model_under_ray_exits_2_with_its_message_once(capsys, tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")
    spec = quickstart_spec(n=4)
    spec.update(model=f"zoo:{tmp_path / 'model.pt'}", save_artifacts=False)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))  # (four cells: the message must still come once)
    code, out, err = run_cli(capsys, "run", str(path), "--backend", "ray", "--results-dir", str(tmp_path / "r"))
    assert code == 2, (out, err)
    assert "pickle" in one_clean_line(err) and err.count("refusing to load") == 1
    assert not (tmp_path / "r").exists()  # nothing claimed, no Ray started


def test_failed_cells_exit_1_and_each_is_named_once(capsys, tmp_path, monkeypatch):
    from mmsec.runs import execute

    monkeypatch.setattr(execute, "run_cell", lambda cell, *a, **k: {
        "status": "failed", "error": "RuntimeError: boom in the cell\n\nTraceback (most recent call last): ...",
        "wall_time_s": 0.1})
    spec = tiny_spec_file(tmp_path)
    code, out, err = run_cli(capsys, "run", str(spec), "--results-dir", str(tmp_path / "r"))
    assert code == 1
    assert err.count("boom in the cell") == 1 and "Traceback" not in err
    assert "1 of 1 cells failed" in err


# -- internal errors: one line, exit 1; MMSEC_DEBUG=1 shows the traceback ----------------------------------

def test_internal_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    from mmsec import registry

    def broken(*a, **k):
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr(registry, "kinds", broken)
    monkeypatch.delenv("MMSEC_DEBUG", raising=False)
    code, _, err = run_cli(capsys, "list")
    line = one_clean_line(err)
    assert code == 1 and "internal error: RuntimeError: a bug" in line and "MMSEC_DEBUG=1" in line
    monkeypatch.setenv("MMSEC_DEBUG", "1")
    code, _, err = run_cli(capsys, "list")
    assert code == 1 and "Traceback (most recent call last)" in err and "in broken" in err


def test_rich_markup_in_a_message_is_printed_as_is(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", str(tmp_path / "[/bold]x[red].yaml"))
    assert code == 2 and "[/bold]x[red].yaml" in one_clean_line(err)


def test_rich_markup_in_a_path_of_a_successful_command_is_printed_as_is(capsys, tmp_path):
    # (found by the slow fuzz run: `data export DIR --split '[/bold]'` ended in a MarkupError)
    code, out, err = run_cli(capsys, "data", "export", str(tmp_path / "[/bold]x"), "--n", "2")
    assert code == 0, err
    assert "[/bold]x" in out


def test_a_folder_given_as_spec_says_it_is_a_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", str(tmp_path))
    assert code == 2 and "is a folder; expected a spec file" in one_clean_line(err)


# -- fail-fast sizes at the CLI ----------------------------------------------------------------------------

def test_quickstart_with_a_billion_images_fails_at_once(capsys, tmp_path):
    t0 = time.process_time()
    code, _, err = run_cli(capsys, "quickstart", "--n", "1000000000", "--results-dir", str(tmp_path / "S"))
    assert time.process_time() - t0 < 5
    line = one_clean_line(err)
    assert code == 2 and "--n: 1,000,000,000 images" in line and "limit of 100,000" in line
    assert "MMSEC_NO_LIMITS=1" in line and not (tmp_path / "S").exists()


def test_run_with_a_billion_images_fails_before_claiming_a_cell(capsys, tmp_path):
    spec = tiny_spec_file(tmp_path, data={"name": "shapes", "split": "test", "n": 1_000_000_000, "image_size": 32})
    code, _, err = run_cli(capsys, "run", str(spec), "--results-dir", str(tmp_path / "S"))
    assert code == 2 and "data.n: 1,000,000,000 images is above the limit" in err and "Traceback" not in err
    assert not (tmp_path / "S").exists()


def test_data_export_sizes_fail_fast(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "export", str(tmp_path / "x"), "--n", "1000000000")
    assert code == 2 and "--n: 1,000,000,000 images" in one_clean_line(err)
    code, _, err = run_cli(capsys, "data", "export", str(tmp_path / "x"), "--n", "4", "--image-size", "10")
    assert code == 2 and "--image-size: 10 is too small for the shapes world" in one_clean_line(err)
    assert not (tmp_path / "x").exists()


# -- mmsec results: failed and running cells, a --spec that matches nothing ---------------------------------

def test_results_shows_failed_and_running_cells_with_their_error(capsys, tmp_path):
    cell = {"spec_name": "grid", "model": "zoo:shapes-clip-resnet", "seed": 0,
            "attack": {"name": "pgd", "params": {"eps": 4 / 255}}}
    with ResultsStore(tmp_path / "S") as store:
        failed = store.claim("c-failed", cell, "sh")
        store.fail(failed, "ValueError: the cell went wrong\n\nTraceback (most recent call last): ...", 0.5)
        store.claim("c-running", {**cell, "attack": {"name": "pgd", "params": {"eps": 8 / 255}}}, "sh")
    code, out, err = run_cli(capsys, "results", "--results-dir", str(tmp_path / "S"))
    assert code == 0, err
    assert "(no finished runs)" in out and "cells not finished (1 failed, 1 running)" in out
    assert "eps=4/255" in out and "failed (attempt 1): ValueError: the cell went wrong" in out
    assert "eps=8/255" in out and f"running (pid {os.getpid()}" in out and "Traceback" not in out
    code, out, err = run_cli(capsys, "results", "--results-dir", str(tmp_path / "S"), "--format", "json")
    assert code == 0 and json.loads(out) == [] and "ValueError: the cell went wrong" in err  # stdout stays JSON


def test_results_says_when_a_spec_filter_matches_nothing(capsys, tmp_path):
    finished_store(tmp_path / "S")
    code, _, err = run_cli(capsys, "results", "--results-dir", str(tmp_path / "S"), "--spec", "stord")
    line = one_clean_line(err)
    assert code == 2 and "--spec 'stord': no runs of that spec" in line and "specs there: stored" in line
    assert "Did you mean 'stored'" in line
    code, out, _ = run_cli(capsys, "results", "--results-dir", str(tmp_path / "S"), "--spec", "stored")
    assert code == 0 and "0.750" in out


def test_an_interrupted_cell_is_named_as_such(capsys, tmp_path):
    with ResultsStore(tmp_path / "S") as store:
        run_id = store.claim("c", {"spec_name": "g", "model": "m", "seed": 0,
                                   "attack": {"name": "pgd", "params": {"eps": 0.1}}}, "sh")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        store.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (int(dead), run_id))
    code, out, _ = run_cli(capsys, "results", "--results-dir", str(tmp_path / "S"))
    assert code == 0 and f"interrupted (pid {dead} is gone" in out


# -- a cached run says so ----------------------------------------------------------------------------------

def test_a_cached_run_says_cached_instead_of_a_time(capsys, tmp_path):
    spec = tiny_spec_file(tmp_path)
    code, out, err = run_cli(capsys, "run", str(spec), "--results-dir", str(tmp_path / "S"))
    assert code == 0, err
    header, row = [line for line in out.splitlines() if "time_s" in line or "8/255" in line][:2]
    assert row.split()[-1] != "cached" and float(row.split()[-1]) >= 0
    code, out, err = run_cli(capsys, "run", str(spec), "--results-dir", str(tmp_path / "S"))
    assert code == 0, err
    row = [line for line in out.splitlines() if "8/255" in line][0]
    assert row.split()[-1] == "cached" and "1 of 1 cells were already in the store" in out
    code, out, _ = run_cli(capsys, "results", "--results-dir", str(tmp_path / "S"))  # the stored time stays
    assert code == 0 and [line for line in out.splitlines() if "8/255" in line][0].split()[-1] != "cached"


# -- help without torch, list without cuts --------------------------------------------------------------------

def test_help_does_not_import_torch_and_takes_under_half_a_second_of_cpu():
    code = ("import resource, sys; from mmsec.cli import main; rc = main(['--help']); "
            "u = resource.getrusage(resource.RUSAGE_SELF); print(u.ru_utime + u.ru_stime, 'torch' in sys.modules)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    cpu, torch_loaded = proc.stdout.split()[-2:]
    assert torch_loaded == "False" and "Usage" in proc.stdout
    assert float(cpu) < 0.5, f"mmsec --help took {cpu} s of CPU"
    for sub in (["run", "--help"], ["results", "--help"], ["--quiet", "list", "--help"]):
        check = f"import sys; from mmsec.cli import main; main({sub!r}); print('torch' in sys.modules)"
        proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60, env=env)
        assert proc.stdout.split()[-1] == "False", (sub, proc.stdout, proc.stderr)


def test_threads_option_still_sets_torch_threads(capsys):
    before = torch.get_num_threads()
    try:
        assert run_cli(capsys, "--threads", "2", "list", "tasks")[0] == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        os.environ["OMP_NUM_THREADS"] = "1"


def test_list_prints_every_summary_whole(capsys):
    from mmsec import builtins, registry

    builtins.load()
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    for kind in registry.kinds():
        for e in registry.entries(kind.name):
            assert any(line.split() == [e.name, *e.summary.split()] for line in lines), (e.name, e.summary)


def test_list_on_a_narrow_terminal_wraps_without_cutting(capsys, monkeypatch):
    from rich.console import Console

    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buffer, width=50, force_terminal=True, color_system=None))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert run_cli(capsys, "list", "models")[0] == 0
    text = buffer.getvalue()
    assert "…" not in text
    assert "open_clip:ViT-B-32:/models/vit-b-32.safetensors" in "".join(line.strip() for line in text.splitlines())
