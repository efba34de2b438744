"""The app's embedded store: batches, images and comparisons in one SQLite file.

Everything the server remembers between requests (and restarts) lives here;
the analysis results themselves are plain files under ``DATA/images/<id>/``
written by :func:`fastsac.pipeline.write_result`. Values that are not scalars
(analysis parameters, the summary) are stored as JSON text — never pickled.

The schema is versioned with SQLite's ``PRAGMA user_version``: :data:`MIGRATIONS`
holds one SQL script per version, applied in order inside one transaction each,
so an older ``DATA/fastsac.sqlite3`` is upgraded in place when the app starts.
A later feature (e.g. annotation with users and roles) appends its own scripts
to :data:`MIGRATIONS`; it never edits a released one.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["Store", "MIGRATIONS", "TERMINAL", "new_id"]

#: Job states of an image (and of batch reports and comparisons).
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
TERMINAL = (DONE, FAILED)

#: Schema migrations: entry k brings the database from version k to k + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created REAL NOT NULL,
        report_status TEXT,              -- NULL until a batch report was asked for
        report_error TEXT,
        report_key TEXT                  -- the image states the report was made from
    );
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        batch_id TEXT REFERENCES batches(id),
        name TEXT NOT NULL,              -- sanitised upload name (display and result folder)
        filename TEXT NOT NULL,          -- stored upload, relative to the image folder
        status TEXT NOT NULL,
        error TEXT,
        params TEXT NOT NULL,            -- JSON: detector, multimer_cutoff_nm, pixel_size_nm
        pixel_size_nm REAL,
        pixel_size_source TEXT,
        height INTEGER,
        width INTEGER,
        n_atoms INTEGER,
        summary TEXT,                    -- JSON: the result's summary.json
        created REAL NOT NULL,
        started REAL,
        finished REAL
    );
    CREATE INDEX images_batch ON images(batch_id, created);
    CREATE TABLE comparisons (
        id TEXT PRIMARY KEY,
        batch_a TEXT NOT NULL REFERENCES batches(id),
        batch_b TEXT NOT NULL REFERENCES batches(id),
        status TEXT NOT NULL,
        error TEXT,
        result TEXT,                     -- JSON: SampleComparison.as_dict()
        created REAL NOT NULL,
        finished REAL
    );
    """,
    # 2: the plots and report of an image are rendered after its result (time to first result)
    """
    ALTER TABLE images ADD COLUMN extras_status TEXT;
    ALTER TABLE images ADD COLUMN extras_error TEXT
    """,
]


def new_id() -> str:
    """An unguessable 16-hex-digit id (ids appear in URLs)."""
    return secrets.token_hex(8)


def _row(cur: sqlite3.Cursor, row: tuple) -> dict:
    d = {c[0]: v for c, v in zip(cur.description, row)}
    for k in ("params", "summary", "result"):
        if isinstance(d.get(k), str):
            d[k] = json.loads(d[k])
    return d


class Store:
    """Thread-safe access to ``DATA/fastsac.sqlite3`` (one connection, one lock).

    Request handlers and job callbacks (executor threads) share it; every call
    is one short statement or transaction, so a single lock is enough.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = _row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    # ------------------------------------------------------------------ schema
    @property
    def version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()["user_version"]

    def migrate(self) -> int:
        """Apply the migrations this database has not seen yet; returns the version."""
        with self._lock:
            v = self._db.execute("PRAGMA user_version").fetchone()["user_version"]
            if v > len(MIGRATIONS):
                raise RuntimeError(f"{self.path}: schema version {v} is newer than this fastsac "
                                   f"({len(MIGRATIONS)}); upgrade fastsac")
            for k in range(v, len(MIGRATIONS)):
                self._db.execute("BEGIN")
                try:
                    for stmt in MIGRATIONS[k].split(";"):
                        if stmt.strip():
                            self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version = {k + 1}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            return len(MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args=()) -> dict | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args=()) -> list[dict]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _exec(self, sql: str, args=()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # ------------------------------------------------------------------ batches
    def create_batch(self, name: str) -> str:
        bid = new_id()
        self._exec("INSERT INTO batches (id, name, created) VALUES (?, ?, ?)", (bid, name, time.time()))
        return bid

    def get_batch(self, bid: str) -> dict | None:
        return self._one("SELECT * FROM batches WHERE id = ?", (bid,))

    def list_batches(self) -> list[dict]:
        return self._all("SELECT b.*, (SELECT COUNT(*) FROM images i WHERE i.batch_id = b.id) AS n_images "
                         "FROM batches b ORDER BY created DESC")

    def set_batch_report(self, bid: str, status: str | None, *, error: str | None = None,
                         key: str | None = None) -> None:
        self._exec("UPDATE batches SET report_status = ?, report_error = ?, report_key = COALESCE(?, report_key) "
                   "WHERE id = ?", (status, error, key, bid))

    # ------------------------------------------------------------------ images
    def add_image(self, *, name: str, filename: str, params: dict, batch_id: str | None,
                  pixel_size_nm: float | None, pixel_size_source: str, shape, image_id: str) -> str:
        self._exec("INSERT INTO images (id, batch_id, name, filename, status, params, pixel_size_nm, "
                   "pixel_size_source, height, width, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (image_id, batch_id, name, filename, QUEUED, json.dumps(params), pixel_size_nm,
                    pixel_size_source, int(shape[0]), int(shape[1]), time.time()))
        return image_id

    def get_image(self, iid: str) -> dict | None:
        return self._one("SELECT * FROM images WHERE id = ?", (iid,))

    def list_images(self, batch_id: str | None = None, *, limit: int = 1000) -> list[dict]:
        if batch_id is None:
            return self._all("SELECT * FROM images ORDER BY created DESC LIMIT ?", (limit,))
        return self._all("SELECT * FROM images WHERE batch_id = ? ORDER BY created", (batch_id,))

    def unfinished_images(self) -> list[dict]:
        return self._all("SELECT * FROM images WHERE status IN (?, ?) ORDER BY created", (QUEUED, RUNNING))

    def queue_image(self, iid: str, params: dict) -> None:
        self._exec("UPDATE images SET status = ?, params = ?, error = NULL, n_atoms = NULL, summary = NULL, "
                   "started = NULL, finished = NULL, extras_status = NULL, extras_error = NULL WHERE id = ?",
                   (QUEUED, json.dumps(params), iid))

    def set_extras(self, iid: str, status: str, *, error: str | None = None) -> None:
        self._exec("UPDATE images SET extras_status = ?, extras_error = ? WHERE id = ?", (status, error, iid))

    def unfinished_extras(self) -> list[dict]:
        return self._all("SELECT * FROM images WHERE status = ? AND extras_status IN (?, ?)",
                         (DONE, QUEUED, RUNNING))

    def mark_running(self, iid: str) -> None:
        self._exec("UPDATE images SET status = ?, started = ? WHERE id = ? AND status = ?",
                   (RUNNING, time.time(), iid, QUEUED))

    def finish_image(self, iid: str, *, error: str | None = None, summary: dict | None = None) -> None:
        if error is not None:
            self._exec("UPDATE images SET status = ?, error = ?, finished = ? WHERE id = ?",
                       (FAILED, error, time.time(), iid))
            return
        s = summary or {}
        self._exec("UPDATE images SET status = ?, error = NULL, summary = ?, n_atoms = ?, pixel_size_nm = ?, "
                   "pixel_size_source = ?, finished = ? WHERE id = ?",
                   (DONE, json.dumps(s), s.get("n_atoms"), s.get("pixel_size_nm"),
                    s.get("pixel_size_source"), time.time(), iid))

    # ------------------------------------------------------------------ comparisons
    def add_comparison(self, a: str, b: str) -> str:
        cid = new_id()
        self._exec("INSERT INTO comparisons (id, batch_a, batch_b, status, created) VALUES (?,?,?,?,?)",
                   (cid, a, b, QUEUED, time.time()))
        return cid

    def get_comparison(self, cid: str) -> dict | None:
        return self._one("SELECT * FROM comparisons WHERE id = ?", (cid,))

    def finish_comparison(self, cid: str, *, error: str | None = None, result: dict | None = None) -> None:
        self._exec("UPDATE comparisons SET status = ?, error = ?, result = ?, finished = ? WHERE id = ?",
                   (FAILED if error else DONE, error, None if error else json.dumps(result), time.time(), cid))
