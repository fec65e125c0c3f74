"""The runner end to end on 32 images: metrics stored, re-run is a no-op, failures recorded,
an interrupted grid (SIGKILL) resumes with earlier rows untouched."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from runs_helpers import tiny_spec

from mmsec.runs import ResultsStore, expand, format_results, query, run_spec
from mmsec.runs import context as context_mod
from mmsec.runs import execute as execute_mod


def _snapshot(results_dir: Path) -> dict:
    """Every stored row and the bytes of every artifact, keyed for comparison."""
    with ResultsStore(results_dir) as store:
        runs = {r["cell_hash"]: r for r in store.runs()}
        metrics = store.metric_rows()
        arts = store.artifacts()
    files = {a["path"]: hashlib.sha256((results_dir / a["path"]).read_bytes()).hexdigest() for a in arts}
    return {"runs": runs, "metrics": metrics, "artifacts": arts, "files": files}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2-cell grid (eps 2/255, 8/255) run once, sequentially."""
    results = tmp_path_factory.mktemp("results")
    t0 = time.perf_counter()
    summaries = run_spec(tiny_spec(), results, quiet=True)
    return results, summaries, time.perf_counter() - t0


def test_run_stores_metrics_and_artifacts(finished):
    results, summaries, _ = finished
    assert [s["status"] for s in summaries] == ["done", "done"]
    assert [s["label"] for s in summaries] == ["eps=2/255", "eps=8/255"]
    snap = _snapshot(results)
    assert len(snap["runs"]) == 2 and all(r["status"] == "done" for r in snap["runs"].values())
    names = {m["name"] for m in snap["metrics"]}
    assert names == {"clean_accuracy", "robust_accuracy", "noise_accuracy", "attack_success_rate",
                     "mean_perturbation_linf"}
    for m in snap["metrics"]:
        assert m["definition"] and m["threat_model"] and m["spec_hash"] and m["torch_version"]
    assert {a["kind"] for a in snap["artifacts"]} == {"examples_png", "adv_batch_safetensors"}
    for a in snap["artifacts"]:
        assert snap["files"][a["path"]] == a["sha256"]
    assert not any((results / ".staging").iterdir())  # staged files were all moved into place


def test_attack_beats_noise_baseline(finished):
    """Effect check with a margin: PGD at 8/255 takes accuracy far below noise of the same budget."""
    _, summaries, _ = finished
    strong = summaries[1]["metrics"]
    assert strong["clean_accuracy"] >= 0.9
    assert strong["noise_accuracy"] >= 0.8
    assert strong["robust_accuracy"] <= strong["noise_accuracy"] - 0.5
    assert strong["attack_success_rate"] >= 0.5
    assert strong["mean_perturbation_linf"] <= 8 / 255 + 1e-6
    assert summaries[0]["metrics"]["robust_accuracy"] >= strong["robust_accuracy"]


def test_rerun_is_a_noop(finished, monkeypatch):
    results, summaries, _ = finished
    before = _snapshot(results)

    def boom(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(execute_mod, "execute_cell", boom)
    monkeypatch.setattr(context_mod.CellContext, "load_model", boom)
    t0 = time.perf_counter()
    again = run_spec(tiny_spec(), results, quiet=True)
    assert time.perf_counter() - t0 < 5
    assert [s["status"] for s in again] == ["cached", "cached"]
    assert [s["metrics"] for s in again] == [s["metrics"] for s in summaries]
    assert _snapshot(results) == before


def test_results_query_and_formats(finished):
    results, _, _ = finished
    rows = query(results, "tiny")
    assert len(rows) == 2 * 5
    assert {"metric", "value", "definition", "threat_model", "metric_version", "spec_hash", "seed",
            "mmsec_version", "torch_version", "wall_time_s", "params"} <= set(rows[0])
    assert query(results, "no-such-spec") == []
    table = format_results(rows)
    lines = table.splitlines()
    assert lines[0] == "spec tiny | model zoo:shapes-clip-resnet | attack pgd"  # constant context as a title
    assert "robust_accuracy" in lines[1] and lines[1].startswith("eps")
    assert any("2/255" in line for line in lines) and any("8/255" in line for line in lines)
    parsed = list(csv.DictReader(io.StringIO(format_results(rows, "csv"))))
    assert len(parsed) == 2 and float(parsed[1]["eps"]) == pytest.approx(8 / 255)
    assert float(parsed[0]["robust_accuracy"]) >= float(parsed[1]["robust_accuracy"])
    long = json.loads(format_results(rows, "json"))
    assert len(long) == 10 and long[0]["definition"]
    with pytest.raises(FileNotFoundError, match="no results store"):
        query(results / "nowhere")


def test_failed_cell_is_recorded_and_the_grid_continues(tmp_path, monkeypatch):
    real = execute_mod.execute_cell

    def flaky(cell, staging_dir=None, results_dir=None):
        if cell["attack"]["params"]["eps"] == 2 / 255:
            raise RuntimeError("simulated failure")
        return real(cell, staging_dir, results_dir)

    spec = tiny_spec(name="flaky", attack={"name": "pgd", "params": {"eps": ["2/255", "4/255"], "steps": 1}},
                     save_artifacts=False)
    monkeypatch.setattr(execute_mod, "execute_cell", flaky)
    first = run_spec(spec, tmp_path, quiet=True)
    assert [s["status"] for s in first] == ["failed", "done"]
    assert first[0]["error"] == "RuntimeError: simulated failure"
    with ResultsStore(tmp_path) as store:
        failed = store.get_run(first[0]["cell_hash"])
        assert failed["status"] == "failed" and "Traceback" in failed["error"]
        assert store.metric_rows(failed["run_id"]) == []
    monkeypatch.setattr(execute_mod, "execute_cell", real)
    second = run_spec(spec, tmp_path, quiet=True)
    assert [s["status"] for s in second] == ["done", "cached"]
    assert second[1]["metrics"] == first[1]["metrics"]
    with ResultsStore(tmp_path) as store:  # the failed attempt stays on record
        (failure,) = store.failures()
        assert failure["attempt"] == 1 and "simulated failure" in failure["error"]
        assert store.get_run(first[0]["cell_hash"])["status"] == "done"


CHILD = """
import os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import torch
torch.set_num_threads(1)
import mmsec.runs.execute as ex

real, calls = ex.execute_cell, []

def slow_after_first(cell, staging_dir=None, results_dir=None):
    out = real(cell, staging_dir, results_dir)   # artifacts staged, nothing committed yet
    calls.append(1)
    if len(calls) >= 2:
        time.sleep(600)             # the test SIGKILLs us here: cell 2 computed, never committed
    return out

ex.execute_cell = slow_after_first
from mmsec.runs import run_spec
run_spec(sys.argv[1], sys.argv[2], quiet=True)
"""


def test_interrupted_grid_resumes(tmp_path):
    spec = tiny_spec(name="resume", attack={"name": "pgd", "params": {
        "eps": ["1/255", "2/255", "4/255", "8/255"], "alpha": "eps/4", "steps": 2}})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1", MMSEC_QUIET="1")
    proc = subprocess.Popen([sys.executable, str(script), str(spec_path), str(results)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never finished its first cell"
            staging = results / ".staging"
            db = results / "results.sqlite"
            if db.is_file() and staging.is_dir() and any(p.iterdir() for p in staging.iterdir()):
                with ResultsStore(results) as store:
                    if len(store.runs(status="done")) == 1 and len(store.runs(status="running")) == 1:
                        break
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL: no cleanup handlers run
        proc.wait()

    # Only complete cells: 1 done with every metric and artifact; 1 running with nothing.
    cells = expand(spec)
    with ResultsStore(results) as store:
        done = store.runs(status="done")
        running = store.runs(status="running")
        assert len(done) == 1 and len(running) == 1 and len(store.runs()) == 2
        assert done[0]["cell_hash"] == cells[0].cell_hash and running[0]["cell_hash"] == cells[1].cell_hash
        assert len(store.metric_rows(done[0]["run_id"])) == 5 and len(store.artifacts(done[0]["run_id"])) == 2
        assert store.metric_rows(running[0]["run_id"]) == [] and store.artifacts(running[0]["run_id"]) == []
    before = _snapshot(results)
    first_hash = cells[0].cell_hash

    summaries = run_spec(spec_path, results, quiet=True)
    assert [s["status"] for s in summaries] == ["cached", "done", "done", "done"]
    after = _snapshot(results)
    assert all(r["status"] == "done" for r in after["runs"].values()) and len(after["runs"]) == 4
    assert after["runs"][first_hash] == before["runs"][first_hash]
    first_id = before["runs"][first_hash]["run_id"]
    assert [m for m in after["metrics"] if m["run_id"] == first_id] == before["metrics"]
    assert {p: h for p, h in after["files"].items() if p in before["files"]} == before["files"]
    assert after["runs"][cells[1].cell_hash]["attempts"] == 2
    assert not any((results / ".staging").iterdir())  # the killed process's staged files were cleaned up


def test_changed_weights_under_the_same_name_are_a_new_cell(tmp_path):
    """A cell's identity holds the content hash of the weights it reads: re-saved weights never return the old
    result (the issue's reproduction: other weights saved under the same name)."""
    import shutil

    from mmsec.zoo import CHECKPOINTS

    ckpt = tmp_path / "ckpt" / "mine.safetensors"
    ckpt.parent.mkdir()

    def save(zoo_name: str) -> None:
        shutil.copy(CHECKPOINTS / f"{zoo_name}.safetensors", ckpt)
        shutil.copy(CHECKPOINTS / f"{zoo_name}.json", ckpt.with_suffix(".json"))

    spec = tiny_spec(name="same-name", model=f"zoo:{ckpt}", attack={"name": "fgsm", "params": {"eps": "4/255"}},
                     save_artifacts=False)
    save("shapes-clip-resnet")
    (first,) = run_spec(spec, tmp_path / "results", quiet=True)
    assert run_spec(spec, tmp_path / "results", quiet=True)[0]["status"] == "cached"
    save("shapes-clip-vit")  # other weights, same name
    (second,) = run_spec(spec, tmp_path / "results", quiet=True)
    assert second["status"] == "done" and second["cell_hash"] != first["cell_hash"]
    assert second["metrics"] != first["metrics"]
    cells = {c.cell_hash: c.config for c in expand(spec)}
    assert set(cells) == {second["cell_hash"]} and "model" in cells[second["cell_hash"]]["inputs"]


RACER = """
import os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import torch
torch.set_num_threads(1)
import mmsec.runs.execute as ex

real = ex.execute_cell

def logged(cell, staging_dir=None, results_dir=None):
    with open(sys.argv[3], "a") as f:
        f.write(f"{os.getpid()} {cell['attack']['params']['eps']}\\n")
    time.sleep(float(sys.argv[4]))  # a slow cell, so the two runners overlap
    return real(cell, staging_dir, results_dir)

ex.execute_cell = logged
from mmsec.cli import main
sys.exit(main(["--quiet", "run", sys.argv[1], "--results-dir", sys.argv[2]]))
"""


def test_two_runners_on_one_spec_never_compute_a_cell_twice(tmp_path):
    """The second runner leaves the cell the first is computing alone (a live holder is never taken over),
    takes the cells nobody holds, and neither dies or prints a traceback."""
    spec = tiny_spec(name="race", attack={"name": "fgsm", "params": {"eps": ["1/255", "2/255", "4/255", "8/255"]}},
                     save_artifacts=False)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    log = tmp_path / "computed.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", MMSEC_QUIET="1")
    first = subprocess.Popen([sys.executable, str(script), str(spec_path), str(tmp_path / "results"), str(log), "4"],
                             env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (log.is_file() and log.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)  # until the first runner holds its first cell
    second = subprocess.run([sys.executable, str(script), str(spec_path), str(tmp_path / "results"), str(log), "0"],
                            env=env, capture_output=True, text=True, timeout=300)
    first_err = first.communicate(timeout=300)[1]
    assert first.returncode == 0 and second.returncode == 0, (first_err, second.stderr)
    assert "Traceback" not in first_err and "Traceback" not in second.stderr
    computed = [line.split() for line in log.read_text().splitlines()]
    eps = [e for _, e in computed]
    assert sorted(eps) == sorted(set(eps)) and len(eps) == 4, computed  # every cell once, none twice
    assert len({pid for pid, _ in computed}) == 2  # both runners did work
    assert "is being computed by another process" in second.stderr  # the first runner's live cell was left alone
    with ResultsStore(tmp_path / "results") as store:
        runs = store.runs("race")
        assert [r["status"] for r in runs] == ["done"] * 4 and all(r["attempts"] == 1 for r in runs)
