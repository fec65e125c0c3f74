"""The SQLite store: round trip, one transaction per cell, append-only finished results."""

import hashlib
import sqlite3

import pytest

from mmsec.runs import ResultsStore, StoreError

CELL = {"spec_name": "s", "model": "zoo:m", "seed": 3, "attack": {"name": "pgd", "params": {"eps": 0.1}}}


def _metric(name, value):
    return {"name": name, "value": value, "metric_version": 1, "threat_model": "white-box pgd, untargeted",
            "definition": f"definition of {name}", "higher_is_better": True}


def _result(tmp_path, metrics, with_artifact=True):
    arts = []
    if with_artifact:
        staged = tmp_path / "staging" / "cell-x"
        staged.mkdir(parents=True, exist_ok=True)
        f = staged / "examples.png"
        f.write_bytes(b"png bytes")
        arts.append({"kind": "examples_png", "filename": "examples.png", "tmp_path": str(f),
                     "sha256": hashlib.sha256(b"png bytes").hexdigest(), "bytes": 9})
    return {"status": "done", "metrics": metrics, "artifacts": arts, "wall_time_s": 1.5,
            "mmsec_version": "9.9", "torch_version": "2.x", "attack_params": {"eps": 0.1}, "n_samples": 32}


def test_schema_and_wal(tmp_path):
    with ResultsStore(tmp_path / "res") as store:
        mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert mode == "wal"
    assert {"runs", "metrics", "artifacts"} <= tables
    assert (tmp_path / "res" / "results.sqlite").is_file()


def test_round_trip(tmp_path):
    res = tmp_path / "res"
    with ResultsStore(res) as store:
        run_id = store.claim("h1", CELL, "spec-hash")
        assert store.get_run("h1")["status"] == "running"
        store.finish(run_id, _result(tmp_path, [_metric("clean_accuracy", 0.75), _metric("robust_accuracy", 0.25)]))
    with ResultsStore(res) as store:  # reopen: everything persisted
        run = store.get_run("h1")
        assert run["status"] == "done" and run["wall_time_s"] == 1.5 and run["seed"] == 3
        assert run["model"] == "zoo:m" and run["attack"] == "pgd" and run["mmsec_version"] == "9.9"
        assert store.metrics(run_id) == {"clean_accuracy": 0.75, "robust_accuracy": 0.25}
        row = store.metric_rows(run_id)[0]
        assert row["spec_hash"] == "spec-hash" and row["seed"] == 3 and row["definition"] == "definition of clean_accuracy"
        assert row["threat_model"] == "white-box pgd, untargeted" and row["metric_version"] == 1
        assert row["torch_version"] == "2.x" and row["wall_time_s"] == 1.5
        (art,) = store.artifacts(run_id)
        assert not art["path"].startswith("/") and (res / art["path"]).read_bytes() == b"png bytes"
        assert store.claim("h1", CELL, "spec-hash") is None  # done cells are never claimed again


def test_failed_finish_commits_nothing(tmp_path):
    with ResultsStore(tmp_path / "res") as store:
        run_id = store.claim("h1", CELL, "sh")
        # the second metric violates NOT NULL after the first row is inserted: the whole cell rolls back
        with pytest.raises(sqlite3.IntegrityError):
            store.finish(run_id, _result(tmp_path, [_metric("clean_accuracy", 0.5), _metric("robust_accuracy", None)]))
        assert store.get_run("h1")["status"] == "running"
        assert store.metric_rows() == [] and store.artifacts() == []
        # a retry succeeds and the cell is complete
        store.finish(run_id, _result(tmp_path, [_metric("clean_accuracy", 0.5)]))
        assert store.get_run("h1")["status"] == "done" and len(store.artifacts()) == 1


def test_finished_results_are_append_only(tmp_path):
    with ResultsStore(tmp_path / "res") as store:
        run_id = store.claim("h1", CELL, "sh")
        store.finish(run_id, _result(tmp_path, [_metric("clean_accuracy", 0.5)], with_artifact=False))
        for sql in ("UPDATE metrics SET value = 1", "DELETE FROM metrics", "UPDATE runs SET status = 'failed'",
                    "DELETE FROM runs"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                store.conn.execute(sql)
        with pytest.raises(sqlite3.IntegrityError, match="only be added"):
            store.conn.execute("INSERT INTO metrics VALUES (?, 'x', 1, 1, 't', 'd', 1, 'sh', 0, 'v', 't', 1)",
                               (run_id,))
        with pytest.raises(StoreError):
            store.finish(run_id, _result(tmp_path, [_metric("other", 0.1)], with_artifact=False))
        assert store.metrics(run_id) == {"clean_accuracy": 0.5}


def test_failed_and_running_cells_are_reclaimed(tmp_path):
    with ResultsStore(tmp_path / "res") as store:
        run_id = store.claim("h1", CELL, "sh")
        store.fail(run_id, "RuntimeError: boom", 0.1)
        assert store.get_run("h1")["status"] == "failed" and "boom" in store.get_run("h1")["error"]
        assert [f["error"] for f in store.failures(run_id)] == ["RuntimeError: boom"]
        with pytest.raises(StoreError):
            store.fail(run_id, "not running any more")
        assert store.claim("h1", CELL, "sh") == run_id
        run = store.get_run("h1")
        assert run["status"] == "running" and run["attempts"] == 2
        assert not store.held_elsewhere(run)  # our own process
        assert store.claim("h1", CELL, "sh") == run_id  # a 'running' cell (e.g. of a killed process) is re-run


def test_a_version_1_store_gains_the_heartbeat_and_keeps_its_rows(tmp_path):
    import sqlite3

    with ResultsStore(tmp_path) as store:
        run_id = store.claim("h1", {"spec_name": "s", "model": "m", "attack": {"name": "a"}, "seed": 0}, "spec")
        store.fail(run_id, "boom")
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    conn.execute("ALTER TABLE runs DROP COLUMN heartbeat_at")  # what an mmsec of schema 1 wrote
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with ResultsStore(tmp_path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 2
        run = store.get_run("h1")
        assert run["status"] == "failed" and "heartbeat_at" in run


def test_a_dead_holders_cell_is_taken_over_and_a_live_ones_is_not(tmp_path):
    import subprocess
    import sys

    cell = {"spec_name": "s", "model": "m", "attack": {"name": "a"}, "seed": 0}
    with ResultsStore(tmp_path) as store:
        run_id = store.claim("h1", cell, "spec")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        store.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (int(dead), run_id))  # its holder died
        assert not store.held_elsewhere(store.get_run("h1"))
        assert store.claim("h1", cell, "spec") == run_id  # taken over: a retry
        live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            store.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (live.pid, run_id))
            assert store.held_elsewhere(store.get_run("h1"))
            assert store.claim("h1", cell, "spec") is None  # a live holder's cell is left alone
        finally:
            live.kill()
