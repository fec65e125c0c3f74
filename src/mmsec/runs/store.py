"""The results store: one SQLite file per results folder, append-only for finished cells.

Layout of ``<results_dir>``::

    results.sqlite                          runs, metrics, artifacts (WAL journal)
    artifacts/<spec>/<cell_hash[:16]>/...   PNG example grids, adversarial tensors (safetensors)
    .staging/                               artifact files still being written

Life of a cell: :meth:`ResultsStore.claim` inserts (or re-opens) its ``runs`` row with status
``running`` and commits; the cell is computed; :meth:`ResultsStore.finish` moves its staged
artifact files into place with ``os.replace`` and then, in ONE transaction, inserts every
metric row and artifact row and sets status ``done``. A process killed at any point therefore
leaves either a ``done`` cell with all its rows or a ``running`` / ``failed`` cell with none,
which the runner re-runs.

Nothing finished is ever changed: SQLite triggers reject any UPDATE or DELETE of metric and
artifact rows and of ``done`` runs, and metric/artifact rows can only be added to a run that is
still ``running`` (i.e. inside the transaction that finishes it).

Schema (``PRAGMA user_version = 2``; a version-1 store gains ``runs.heartbeat_at`` when opened)::

    runs(run_id PK, spec_name, spec_hash, cell_hash UNIQUE, cell_json, model, attack, seed,
         status [running|done|failed], error, attempts, host, pid, attack_params_json,
         n_samples, mmsec_version, torch_version, started_at, finished_at, wall_time_s, heartbeat_at)
    metrics(run_id, name, value, metric_version, threat_model, definition, higher_is_better,
            spec_hash, seed, mmsec_version, torch_version, wall_time_s)   PK (run_id, name)
    artifacts(run_id, kind, path [relative to results_dir], sha256, bytes) PK (run_id, kind)
    failures(run_id, attempt, error, host, pid, failed_at, wall_time_s)   PK (run_id, attempt)

``runs.error`` holds the latest failure of a cell not yet done (cleared when a retry succeeds);
``failures`` keeps every failed attempt.

Times are UTC ISO-8601; ``wall_time_s`` is the cell's compute time measured where it ran. A metric
computed in float32 is stored as the shortest decimal of that float32 (0.997, not 0.996999979019165:
:func:`clean_value`).

Readers use :func:`open_for_reading`: read-only, so a store in a read-only folder (an archive, another
user's results) can be read; a damaged file or another program's database is one :class:`StoreError`
line naming the file, never an sqlite3 traceback.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.checkpoint import sha256_file
from ..version import __version__

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 2
LEASE_SECONDS = 120  # a running cell whose holder has not beaten its heart for this long is taken over
HEARTBEAT_SECONDS = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id             INTEGER PRIMARY KEY AUTOINCREMENT,
    spec_name          TEXT NOT NULL,
    spec_hash          TEXT NOT NULL,
    cell_hash          TEXT NOT NULL UNIQUE,
    cell_json          TEXT NOT NULL,
    model              TEXT NOT NULL,
    attack             TEXT NOT NULL,
    seed               INTEGER NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    error              TEXT,
    attempts           INTEGER NOT NULL DEFAULT 1,
    host               TEXT,
    pid                INTEGER,
    attack_params_json TEXT,
    n_samples          INTEGER,
    mmsec_version      TEXT NOT NULL,
    torch_version      TEXT NOT NULL,
    started_at         TEXT NOT NULL,
    finished_at        TEXT,
    wall_time_s        REAL,
    heartbeat_at       TEXT
);
CREATE INDEX IF NOT EXISTS runs_spec ON runs (spec_name, status);
CREATE TABLE IF NOT EXISTS metrics (
    run_id           INTEGER NOT NULL REFERENCES runs (run_id),
    name             TEXT NOT NULL,
    value            REAL NOT NULL,
    metric_version   INTEGER NOT NULL,
    threat_model     TEXT NOT NULL,
    definition       TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    spec_hash        TEXT NOT NULL,
    seed             INTEGER NOT NULL,
    mmsec_version    TEXT NOT NULL,
    torch_version    TEXT NOT NULL,
    wall_time_s      REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    kind   TEXT NOT NULL,
    path   TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (run_id, kind)
);
CREATE TABLE IF NOT EXISTS failures (
    run_id      INTEGER NOT NULL REFERENCES runs (run_id),
    attempt     INTEGER NOT NULL,
    error       TEXT NOT NULL,
    host        TEXT,
    pid         INTEGER,
    failed_at   TEXT NOT NULL,
    wall_time_s REAL,
    PRIMARY KEY (run_id, attempt)
);
CREATE TRIGGER IF NOT EXISTS failures_no_update BEFORE UPDATE ON failures
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: failure rows cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS failures_no_delete BEFORE DELETE ON failures
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: failure rows cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS runs_done_no_update BEFORE UPDATE ON runs WHEN OLD.status = 'done'
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: a done run cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS runs_done_no_delete BEFORE DELETE ON runs WHEN OLD.status = 'done'
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: a done run cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS metrics_no_update BEFORE UPDATE ON metrics
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: metric rows cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS metrics_no_delete BEFORE DELETE ON metrics
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: metric rows cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS metrics_only_running BEFORE INSERT ON metrics
WHEN (SELECT status FROM runs WHERE run_id = NEW.run_id) IS NOT 'running'
BEGIN SELECT RAISE(ABORT, 'metric rows can only be added while their run is being finished'); END;
CREATE TRIGGER IF NOT EXISTS artifacts_no_update BEFORE UPDATE ON artifacts
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: artifact rows cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS artifacts_no_delete BEFORE DELETE ON artifacts
BEGIN SELECT RAISE(ABORT, 'mmsec results are append-only: artifact rows cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS artifacts_only_running BEFORE INSERT ON artifacts
WHEN (SELECT status FROM runs WHERE run_id = NEW.run_id) IS NOT 'running'
BEGIN SELECT RAISE(ABORT, 'artifact rows can only be added while their run is being finished'); END;
"""


class StoreError(RuntimeError):
    """The results store is unusable (wrong schema version, corrupt file, ...)."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held_elsewhere(host: str | None, pid: int | None, heartbeat_at: str | None) -> bool:
    """Whether a running cell's holder (host, pid, last heartbeat) is another live process."""
    if host == socket.gethostname():
        return pid is not None and pid != os.getpid() and _pid_alive(pid)
    if not heartbeat_at:
        return False
    age = (datetime.now(timezone.utc) - datetime.fromisoformat(heartbeat_at)).total_seconds()
    return age < LEASE_SECONDS


class Heartbeat:
    """A background thread renewing this process's hold on the cells it runs (its own SQLite connection)."""

    def __init__(self, db_path: str | Path, every: float = HEARTBEAT_SECONDS):
        import threading

        self.db_path, self.every = Path(db_path), every
        self.run_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mmsec-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def hold(self, run_id: int) -> None:
        with self._lock:
            self.run_ids.add(run_id)

    def release(self, run_id: int) -> None:
        with self._lock:
            self.run_ids.discard(run_id)

    def _loop(self) -> None:
        conn = None
        while not self._stop.wait(self.every):
            with self._lock:
                ids = sorted(self.run_ids)
            if not ids:
                continue
            try:
                conn = conn or connect(self.db_path)
                marks = ",".join("?" * len(ids))
                conn.execute(f"UPDATE runs SET heartbeat_at = ? WHERE status = 'running' AND host = ? AND pid = ? "
                             f"AND run_id IN ({marks})", (utc_now(), socket.gethostname(), os.getpid(), *ids))
            except sqlite3.Error:  # a busy or vanished store: try again at the next beat
                conn = None
        if conn is not None:
            conn.close()


def connect(db_path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) returning rows as ``sqlite3.Row``.

    ``readonly`` opens the file read-only; a store in a folder this process cannot write (where SQLite
    cannot make the WAL's shared-memory file) is then opened as immutable, so it can still be read.
    """
    if readonly:
        conn = _connect_readonly(Path(db_path))
    else:
        conn = sqlite3.connect(str(db_path), timeout=60, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 60000")
    return conn


def _connect_readonly(db: Path) -> sqlite3.Connection:
    uri = db.resolve().as_uri()  # (percent-encoded: a '?' or '#' in the path stays part of the path)
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        if os.access(db.parent, os.W_OK) and os.access(db, os.W_OK):
            raise  # (not a permissions problem: report it)
    # A read-only folder: nobody can be writing the store, so reading it as immutable is safe.
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=60, isolation_level=None)


def describe_error(db: Path, e: BaseException, writing: bool) -> str:
    """One line saying what is wrong with the store file ``db`` and what to do."""
    text = "".join(c if c.isprintable() else "?" for c in " ".join(str(e).split()))  # (may quote damaged bytes)
    text = (text[:160] + "...") if len(text) > 160 else (text or type(e).__name__)
    if isinstance(e, PermissionError) or any(w in text.lower() for w in ("readonly", "read-only", "unable to open",
                                                                          "permission")):
        if writing:
            return (f"cannot write the results store {db} ({text}): running needs a results folder this user can "
                    "write; choose another --results-dir (`mmsec results` can still read this one)")
        return f"cannot open the results store {db} ({text}): check that this user may read it"
    return (f"{db} is not a readable mmsec results store ({text}): it is damaged or another kind of file. Move it "
            "away (the results in it cannot be read) or use another --results-dir")


def open_for_reading(results_dir: str | Path) -> sqlite3.Connection:
    """A read-only connection to the store of ``results_dir`` (works on a read-only folder too).

    Raises FileNotFoundError when there is no store, :class:`StoreError` (one line) when the file is
    not a readable mmsec store (corrupt, truncated, another program's database, another schema version).
    """
    db = Path(results_dir) / DB_NAME
    if not db.is_file():
        raise FileNotFoundError(f"no results store in {results_dir} (expected {db}); run `mmsec quickstart` or "
                                "`mmsec run SPEC` first")
    conn = None
    try:
        conn = connect(db, readonly=True)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if not {"runs", "metrics", "artifacts"} <= tables:
            raise StoreError(f"{db} is an SQLite file but not an mmsec results store (it has no runs, metrics and "
                             "artifacts tables); use another --results-dir")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{db} has schema version {version}; this mmsec reads version {SCHEMA_VERSION}. Use a "
                             "matching mmsec.")
        conn.execute("SELECT count(*) FROM runs").fetchone()  # (a damaged page shows here)
    except sqlite3.DatabaseError as e:
        if conn is not None:
            conn.close()
        raise StoreError(describe_error(db, e, writing=False)) from e
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


@contextmanager
def reading(results_dir: str | Path) -> Iterator[sqlite3.Connection]:
    """:func:`open_for_reading` as a context: closed at the end; an SQLite error while reading (a damaged page,
    undecodable text) becomes one :class:`StoreError` line naming the file."""
    conn = open_for_reading(results_dir)
    try:
        yield conn
    except sqlite3.DatabaseError as e:
        raise StoreError(describe_error(Path(results_dir) / DB_NAME, e, writing=False)) from e
    finally:
        conn.close()


def clean_value(value: float) -> float:
    """``value`` without float32 noise: a number that is exactly a float32 (a metric computed in float32) is
    stored as the shortest decimal that reads back as that float32 (0.996999979019165 -> 0.997); any other
    number, e.g. one computed in float64, is kept as it is, so no real precision is rounded away. Anything
    that is not a float (an int, None) is returned unchanged."""
    if not isinstance(value, float):
        return value
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return value
    if single != value or not math.isfinite(value):
        return value
    return float(str(np.float32(value)))


def points(before: float, after: float) -> float:
    """``before - after`` in percentage points, from the two values as stored (:func:`clean_value`), rounded
    to 1e-6 points: 0.919 (a float32) from 1.0 is 8.1, not 8.09999704."""
    return round(100 * (clean_value(float(before)) - clean_value(float(after))), 6)


class ResultsStore:
    """The SQLite results store of one results folder (created on first use).

    Only one process should write to a store at a time (the runner's driver); readers may come
    and go while it writes (WAL).
    """

    def __init__(self, results_dir: str | Path):
        self.results_dir = Path(results_dir)
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise StoreError(f"results folder {self.results_dir} is not a folder ({e.strerror}); pass a folder as "
                             "--results-dir") from e
        except OSError as e:
            raise StoreError(f"cannot create the results folder {self.results_dir} ({e.strerror or e}); choose a "
                             "folder this user can write as --results-dir") from e
        self.path = self.results_dir / DB_NAME
        self.conn = None  # type: ignore[assignment]
        try:
            self.conn = connect(self.path)
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and tables - {"runs", "metrics", "artifacts", "failures", "sqlite_sequence"}:
                raise StoreError(f"{self.path} is an SQLite file but not an mmsec results store (it has tables "
                                 f"{sorted(tables)[:5]}); mmsec writes nothing into it: use another --results-dir")
            if version not in (0, 1, SCHEMA_VERSION):
                raise StoreError(f"{self.path} has schema version {version}; this mmsec reads versions 1 and "
                                 f"{SCHEMA_VERSION}. Use a new results folder or a matching mmsec.")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            with self.transaction():
                if version == 1:  # version 2 added the holder's heartbeat
                    self.conn.execute("ALTER TABLE runs ADD COLUMN heartbeat_at TEXT")
                for statement in _statements(_SCHEMA):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.conn.execute("SELECT count(*) FROM runs").fetchone()  # (a damaged page shows here)
        except sqlite3.DatabaseError as e:
            if self.conn is not None:
                self.conn.close()
            raise StoreError(describe_error(self.path, e, writing=True)) from e
        except BaseException:
            if self.conn is not None:
                self.conn.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @property
    def staging_dir(self) -> Path:
        return self.results_dir / ".staging"

    # -- reads -------------------------------------------------------------------------------
    def get_run(self, cell_hash: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM runs WHERE cell_hash = ?", (cell_hash,)).fetchone()
        return dict(row) if row else None

    def runs(self, spec_name: str | None = None, status: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM runs WHERE 1 = 1", []
        if spec_name is not None:
            sql, args = sql + " AND spec_name = ?", [*args, spec_name]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY run_id", args)]

    def metrics(self, run_id: int) -> dict[str, float]:
        rows = self.conn.execute("SELECT name, value FROM metrics WHERE run_id = ? ORDER BY rowid", (run_id,))
        return {r["name"]: r["value"] for r in rows}

    def metric_rows(self, run_id: int | None = None) -> list[dict]:
        if run_id is None:
            return [dict(r) for r in self.conn.execute("SELECT * FROM metrics ORDER BY run_id, rowid")]
        return [dict(r) for r in self.conn.execute("SELECT * FROM metrics WHERE run_id = ? ORDER BY rowid",
                                                   (run_id,))]

    def artifacts(self, run_id: int | None = None) -> list[dict]:
        if run_id is None:
            return [dict(r) for r in self.conn.execute("SELECT * FROM artifacts ORDER BY run_id, rowid")]
        return [dict(r) for r in self.conn.execute("SELECT * FROM artifacts WHERE run_id = ? ORDER BY rowid",
                                                   (run_id,))]

    def held_elsewhere(self, run: dict) -> bool:
        """True when ``run`` is ``running`` in another live process: on this host, a live pid; on another
        host, a heartbeat within :data:`LEASE_SECONDS` (the holder's runner beats every
        :data:`HEARTBEAT_SECONDS` while it holds the cell)."""
        return run["status"] == "running" and _held_elsewhere(run["host"], run["pid"], run.get("heartbeat_at"))

    def clean_staging(self) -> int:
        """Remove staged artifact folders left by dead processes of this host; return how many.

        Staged files were never published (no row points at them), so this loses no result.
        Folders are named ``<host>-<pid>-<random>`` by the writer.
        """
        removed = 0
        if not self.staging_dir.is_dir():
            return 0
        host = socket.gethostname()
        for folder in self.staging_dir.iterdir():
            owner, _, rest = folder.name.rpartition("-")[0].rpartition("-")
            if not folder.is_dir() or owner != host or not rest.isdigit() or _pid_alive(int(rest)):
                continue
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
            removed += 1
        return removed

    # -- writes ------------------------------------------------------------------------------
    def claim(self, cell_hash: str, cell: dict, spec_hash: str) -> int | None:
        """Mark a cell ``running`` (new row, or a retry of a failed one or of one whose holder died); return
        its run_id.

        Returns None when the cell is already ``done`` or is held by another live process (see
        :meth:`held_elsewhere`): a live holder's cell is never taken over. The check and the write are one
        ``BEGIN IMMEDIATE`` transaction, so two processes cannot both claim a cell.
        """
        now = utc_now()
        with self.transaction() as c:
            row = c.execute("SELECT run_id, status, host, pid, heartbeat_at FROM runs WHERE cell_hash = ?",
                            (cell_hash,)).fetchone()
            if row is not None and row["status"] == "done":
                return None
            if row is not None and row["status"] == "running" and _held_elsewhere(row["host"], row["pid"],
                                                                                  row["heartbeat_at"]):
                return None
            if row is None:
                cur = c.execute(
                    "INSERT INTO runs (spec_name, spec_hash, cell_hash, cell_json, model, attack, seed, status, "
                    "host, pid, mmsec_version, torch_version, started_at, heartbeat_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                    (cell["spec_name"], spec_hash, cell_hash, json.dumps(cell, sort_keys=True), cell["model"],
                     cell["attack"]["name"], int(cell["seed"]), socket.gethostname(), os.getpid(), __version__,
                     torch.__version__, now, now))
                return int(cur.lastrowid)
            c.execute("UPDATE runs SET status = 'running', attempts = attempts + 1, spec_hash = ?, host = ?, "
                      "pid = ?, started_at = ?, finished_at = NULL, heartbeat_at = ? WHERE run_id = ?",
                      (spec_hash, socket.gethostname(), os.getpid(), now, now, row["run_id"]))
            return int(row["run_id"])

    def holds(self, run_id: int) -> bool:
        """Whether this process still holds ``run_id`` (running, claimed by this host and pid)."""
        row = self.conn.execute("SELECT status, host, pid FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return (row is not None and row["status"] == "running" and row["host"] == socket.gethostname()
                and row["pid"] == os.getpid())

    def fail(self, run_id: int, error: str, wall_time_s: float | None = None) -> None:
        """Mark a running cell ``failed``; the error is also appended to ``failures`` (kept forever)."""
        now = utc_now()
        with self.transaction() as c:
            run = c.execute("SELECT attempts, host, pid FROM runs WHERE run_id = ? AND status = 'running'",
                            (run_id,)).fetchone()
            if run is None:
                raise StoreError(f"run {run_id} is not running; cannot mark it failed")
            c.execute("INSERT INTO failures (run_id, attempt, error, host, pid, failed_at, wall_time_s) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", (run_id, run["attempts"], error, run["host"], run["pid"], now,
                                                       wall_time_s))
            c.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ?, wall_time_s = ? "
                      "WHERE run_id = ?", (error, now, wall_time_s, run_id))

    def failures(self, run_id: int | None = None) -> list[dict]:
        sql = "SELECT * FROM failures" + (" WHERE run_id = ?" if run_id is not None else "")
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY run_id, attempt",
                                                   () if run_id is None else (run_id,))]

    def finish(self, run_id: int, result: dict) -> None:
        """Publish a computed cell: artifacts moved into place, then one transaction for all rows.

        ``result`` is :func:`mmsec.runs.execute.execute_cell`'s dict.
        """
        run = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if run is None or run["status"] != "running":
            raise StoreError(f"run {run_id} is not running (status {run['status'] if run else 'missing'}); "
                             "claim it before finishing it")
        placed = []
        for art in result.get("artifacts", []):
            rel = Path("artifacts") / run["spec_name"] / run["cell_hash"][:16] / art["filename"]
            final = self.results_dir / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(art["tmp_path"], final)  # atomic; only ever replaces an orphan of a killed attempt
            sha = sha256_file(final)
            if sha != art["sha256"]:
                raise StoreError(f"artifact {final} changed between writing and publishing "
                                 f"(sha256 {art['sha256']} -> {sha})")
            placed.append((art["kind"], rel.as_posix(), sha, final.stat().st_size))
        for art in result.get("artifacts", []):  # remove the now-empty staging folder
            try:
                Path(art["tmp_path"]).parent.rmdir()
            except OSError:
                pass
        wall = float(result["wall_time_s"])
        mv, tv = result.get("mmsec_version", __version__), result.get("torch_version", torch.__version__)
        with self.transaction() as c:
            for m in result["metrics"]:
                c.execute("INSERT INTO metrics (run_id, name, value, metric_version, threat_model, definition, "
                          "higher_is_better, spec_hash, seed, mmsec_version, torch_version, wall_time_s) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (run_id, m["name"], clean_value(m["value"]), m["metric_version"], m["threat_model"],
                           m["definition"],
                           int(m["higher_is_better"]), run["spec_hash"], run["seed"], mv, tv, wall))
            for kind, rel, sha, size in placed:
                c.execute("INSERT INTO artifacts (run_id, kind, path, sha256, bytes) VALUES (?, ?, ?, ?, ?)",
                          (run_id, kind, rel, sha, size))
            c.execute("UPDATE runs SET status = 'done', error = NULL, finished_at = ?, wall_time_s = ?, "
                      "mmsec_version = ?, torch_version = ?, attack_params_json = ?, n_samples = ? "
                      "WHERE run_id = ?",
                      (utc_now(), wall, mv, tv, json.dumps(result.get("attack_params"), sort_keys=True),
                       result.get("n_samples"), run_id))


def _statements(script: str) -> list[str]:
    """Split the schema script into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            out.append(text)
            buf = []
    return out


__all__ = ["DB_NAME", "HEARTBEAT_SECONDS", "LEASE_SECONDS", "Heartbeat", "ResultsStore", "StoreError", "clean_value",
           "connect", "describe_error", "open_for_reading", "reading", "utc_now"]
