"""The annotation database: users, tokens, assignments and append-only annotation versions.

Two backends behind one small interface:

* **SQLite** (default): a file in the data folder, nothing to install or run; WAL mode so
  that readers do not block the writer, a busy timeout so that concurrent writers queue.
* **PostgreSQL** (``postgresql://...``, psycopg 3): a shared server for a multi-user
  deployment.

The schema is versioned: :data:`MIGRATIONS` is a numbered list of steps, and the table
``schema_version`` records which steps of which component have been applied (the web app
may keep its own component's versions in the same table). :meth:`AnnotationStore.open`
applies the missing steps in one transaction each.

Annotations are append-only: every save inserts a new row, nothing is ever updated or
deleted, and the database itself refuses UPDATE and DELETE on the table (triggers), so
that no code path can lose an annotator's work. Versions are ordered by their row id,
which both backends hand out atomically: two annotators (or two tabs of one) saving at
the same moment both get a row.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .security import hash_password, hash_token, new_token, verify_password

__all__ = ["AnnotationStore", "User", "AnnotationVersion", "ROLES", "MIGRATIONS", "COMPONENT",
           "default_database_path"]

ROLES = ("admin", "annotator", "viewer")
COMPONENT = "annotate"
DEFAULT_DB_NAME = "annotations.sqlite3"

# Each step is (sqlite statements, postgresql statements). {pk} is the dialect's
# auto-increment primary key. Steps are never edited once released: add a new one.
_PK = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}

_STEP1 = [
    """CREATE TABLE ann_users (
        id {pk},
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'viewer')),
        password_hash TEXT,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE ann_tokens (
        id {pk},
        user_id BIGINT NOT NULL REFERENCES ann_users(id),
        token_hash TEXT NOT NULL UNIQUE,
        label TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION)""",
    """CREATE TABLE ann_images (
        image_id TEXT PRIMARY KEY,
        mode TEXT NOT NULL DEFAULT 'blind' CHECK (mode IN ('blind', 'review')),
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE ann_assignments (
        image_id TEXT NOT NULL REFERENCES ann_images(image_id),
        user_id BIGINT NOT NULL REFERENCES ann_users(id),
        assigned_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (image_id, user_id))""",
    """CREATE TABLE ann_annotations (
        id {pk},
        image_id TEXT NOT NULL,
        user_id BIGINT NOT NULL REFERENCES ann_users(id),
        points TEXT NOT NULL,
        n_points INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX ann_annotations_image ON ann_annotations (image_id, user_id, id)",
    """CREATE TABLE ann_login_failures (
        id {pk},
        key TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX ann_login_failures_key ON ann_login_failures (key, at)",
]
_APPEND_ONLY_SQLITE = [
    """CREATE TRIGGER ann_annotations_no_update BEFORE UPDATE ON ann_annotations
       BEGIN SELECT RAISE(ABORT, 'ann_annotations is append-only'); END""",
    """CREATE TRIGGER ann_annotations_no_delete BEFORE DELETE ON ann_annotations
       BEGIN SELECT RAISE(ABORT, 'ann_annotations is append-only'); END""",
]
_APPEND_ONLY_PG = [
    """CREATE FUNCTION ann_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
    """CREATE TRIGGER ann_annotations_no_change BEFORE UPDATE OR DELETE ON ann_annotations
       FOR EACH ROW EXECUTE FUNCTION ann_append_only()""",
    """CREATE TRIGGER ann_annotations_no_truncate BEFORE TRUNCATE ON ann_annotations
       FOR EACH STATEMENT EXECUTE FUNCTION ann_append_only()""",
]
# Step 2: browser sessions (cookie value and CSRF token stored hashed / random).
_STEP2 = [
    """CREATE TABLE ann_sessions (
        session_hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES ann_users(id),
        csrf_token TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL)""",
]

#: Numbered migration steps: MIGRATIONS[i] brings the schema from version i to i + 1.
MIGRATIONS: list[dict[str, list[str]]] = [
    {"sqlite": _STEP1 + _APPEND_ONLY_SQLITE, "postgresql": _STEP1 + _APPEND_ONLY_PG},
    {"sqlite": _STEP2, "postgresql": _STEP2},
]


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "role": self.role}


@dataclass(frozen=True)
class AnnotationVersion:
    """One saved annotation: ``points`` (N, 2) list of [x, y] px."""

    id: int
    image_id: str
    user_id: int
    user_name: str
    version: int
    points: list
    created_at: float

    def as_dict(self) -> dict:
        return {"id": self.id, "image_id": self.image_id, "user": self.user_name, "user_id": self.user_id,
                "version": self.version, "n_points": len(self.points), "points": self.points,
                "created_at": self.created_at}


def default_database_path(data_dir: str | os.PathLike) -> Path:
    """The SQLite file of a data folder."""
    return Path(data_dir) / DEFAULT_DB_NAME


def _check_points(points) -> list:
    """Validated [[x, y], ...] of finite floats; ValueError naming the problem."""
    if not isinstance(points, (list, tuple)):
        raise ValueError("points must be a list of [x, y] pairs")
    out = []
    for i, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ValueError(f"points[{i}] must be an [x, y] pair")
        try:
            x, y = float(p[0]), float(p[1])
        except (TypeError, ValueError):
            raise ValueError(f"points[{i}] must hold two numbers") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"points[{i}] is not finite")
        out.append([x, y])
    return out


class AnnotationStore:
    """Users, tokens, assignments and annotation versions in SQLite or PostgreSQL.

    Open with :meth:`open`; every method opens its own short transaction, so one store is
    safe to share between threads (and processes open their own).
    """

    def __init__(self, url: str, dialect: str):
        self.url = url
        self.dialect = dialect
        self._local = threading.local()

    # -- connection ----------------------------------------------------------------------
    @classmethod
    def open(cls, database: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None,
             migrate: bool = True) -> AnnotationStore:
        """Open (and by default migrate) the database.

        ``database``: a ``postgresql://`` URL, a SQLite file path, or None for
        ``data_dir/annotations.sqlite3``.
        """
        if database is None:
            if data_dir is None:
                raise ValueError("give database (a postgresql:// URL or SQLite path) or data_dir")
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            database = default_database_path(data_dir)
        text = str(database)
        if text.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg  # noqa: F401
            except ImportError as exc:  # pragma: no cover - psycopg is a dependency
                raise RuntimeError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from exc
            store = cls(text, "postgresql")
        else:
            if text.startswith("sqlite:///"):
                text = text[len("sqlite:///"):]
            Path(text).parent.mkdir(parents=True, exist_ok=True)
            store = cls(text, "sqlite")
        if migrate:
            store.migrate()
        return store

    def _connect(self):
        if self.dialect == "sqlite":
            con = sqlite3.connect(self.url, timeout=30.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=30000")
            return con
        import psycopg

        return psycopg.connect(self.url, autocommit=False)

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[_Cursor]:
        """A cursor inside one transaction (committed on success, rolled back on error)."""
        con = self._connect()
        try:
            if self.dialect == "sqlite":
                # IMMEDIATE takes the write lock up front: concurrent writers queue on the
                # busy timeout instead of failing with "database is locked" mid-transaction.
                con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            cur = _Cursor(con.cursor(), self.dialect)
            try:
                yield cur
            except BaseException:
                con.rollback()
                raise
            con.commit()
        finally:
            con.close()

    # -- schema --------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.transaction(write=False) as cur:
            if not cur.table_exists("schema_version"):
                return 0
            cur.execute("SELECT MAX(version) FROM schema_version WHERE component = ?", (COMPONENT,))
            row = cur.fetchone()
            return int(row[0] or 0)

    def migrate(self) -> int:
        """Apply the missing migration steps; returns the schema version."""
        with self.transaction() as cur:
            if self.dialect == "postgresql":
                # One migrator at a time across processes (released at commit).
                cur.execute("SELECT pg_advisory_xact_lock(815150)")
            cur.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                               component TEXT NOT NULL, version INTEGER NOT NULL,
                               applied_at DOUBLE PRECISION NOT NULL,
                               PRIMARY KEY (component, version))""")
        while True:
            with self.transaction() as cur:
                if self.dialect == "postgresql":
                    cur.execute("SELECT pg_advisory_xact_lock(815150)")
                cur.execute("SELECT MAX(version) FROM schema_version WHERE component = ?", (COMPONENT,))
                current = int(cur.fetchone()[0] or 0)
                if current > len(MIGRATIONS):
                    raise RuntimeError(f"database schema version {current} is newer than this fastsac "
                                       f"knows ({len(MIGRATIONS)}): upgrade fastsac")
                if current == len(MIGRATIONS):
                    return current
                for stmt in MIGRATIONS[current][self.dialect]:
                    cur.execute(stmt.replace("{pk}", _PK[self.dialect]), raw=True)
                cur.execute("INSERT INTO schema_version (component, version, applied_at) VALUES (?, ?, ?)",
                            (COMPONENT, current + 1, time.time()))

    # -- users and tokens ----------------------------------------------------------------
    def add_user(self, name: str, *, role: str = "annotator", password: str | None = None) -> User:
        name = str(name).strip()
        if not name or len(name) > 64 or any(c.isspace() for c in name):
            raise ValueError(f"user name must be 1-64 characters without spaces, got {name!r}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        pw = hash_password(password) if password else None
        with self.transaction() as cur:
            cur.execute("SELECT id FROM ann_users WHERE name = ?", (name,))
            if cur.fetchone():
                raise ValueError(f"user {name!r} exists already")
            uid = cur.insert("INSERT INTO ann_users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                             (name, role, pw, time.time()))
        return User(uid, name, role)

    def get_user(self, name: str) -> User | None:
        with self.transaction(write=False) as cur:
            cur.execute("SELECT id, name, role FROM ann_users WHERE name = ?", (name,))
            row = cur.fetchone()
        return User(int(row[0]), row[1], row[2]) if row else None

    def users(self) -> list[User]:
        with self.transaction(write=False) as cur:
            cur.execute("SELECT id, name, role FROM ann_users ORDER BY id")
            return [User(int(r[0]), r[1], r[2]) for r in cur.fetchall()]

    def create_token(self, user: User | int, *, label: str | None = None) -> str:
        """A new API token for the user; only its hash is stored, so show it now."""
        uid = user.id if isinstance(user, User) else int(user)
        token = new_token()
        with self.transaction() as cur:
            cur.insert("INSERT INTO ann_tokens (user_id, token_hash, label, created_at) VALUES (?, ?, ?, ?)",
                       (uid, hash_token(token), label, time.time()))
        return token

    def user_for_token(self, token: str | None) -> User | None:
        """The user of a valid (not revoked) token, else None."""
        if not token or not isinstance(token, str) or len(token) > 256:
            return None
        with self.transaction(write=False) as cur:
            cur.execute("""SELECT u.id, u.name, u.role FROM ann_tokens t JOIN ann_users u ON u.id = t.user_id
                           WHERE t.token_hash = ? AND t.revoked_at IS NULL""", (hash_token(token),))
            row = cur.fetchone()
        return User(int(row[0]), row[1], row[2]) if row else None

    def revoke_token(self, token: str) -> bool:
        with self.transaction() as cur:
            cur.execute("UPDATE ann_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
                        (time.time(), hash_token(token)))
            return cur.rowcount > 0

    def set_password(self, user: User | int, password: str) -> None:
        uid = user.id if isinstance(user, User) else int(user)
        with self.transaction() as cur:
            cur.execute("UPDATE ann_users SET password_hash = ? WHERE id = ?", (hash_password(password), uid))

    def check_password(self, name: str, password: str) -> User | None:
        """The user when ``password`` is right, else None (argon2 verify)."""
        with self.transaction(write=False) as cur:
            cur.execute("SELECT id, name, role, password_hash FROM ann_users WHERE name = ?", (name,))
            row = cur.fetchone()
        if not row or not verify_password(row[3], password):
            return None
        return User(int(row[0]), row[1], row[2])

    # -- login rate limiting --------------------------------------------------------------
    def login_failures(self, key: str, *, window_s: float = 300.0) -> int:
        with self.transaction(write=False) as cur:
            cur.execute("SELECT COUNT(*) FROM ann_login_failures WHERE key = ? AND at > ?",
                        (key, time.time() - window_s))
            return int(cur.fetchone()[0])

    def login_allowed(self, key: str, *, max_failures: int = 5, window_s: float = 300.0) -> bool:
        """False while ``key`` (a user name or client address) has ``max_failures`` failed
        logins within the last ``window_s`` seconds."""
        return self.login_failures(key, window_s=window_s) < max_failures

    def record_login_failure(self, key: str, *, keep_s: float = 86400.0) -> None:
        now = time.time()
        with self.transaction() as cur:
            cur.insert("INSERT INTO ann_login_failures (key, at) VALUES (?, ?)", (key, now))
            cur.execute("DELETE FROM ann_login_failures WHERE at < ?", (now - keep_s,))

    def clear_login_failures(self, key: str) -> None:
        with self.transaction() as cur:
            cur.execute("DELETE FROM ann_login_failures WHERE key = ?", (key,))

    # -- sessions (browser) ---------------------------------------------------------------
    def create_session(self, user: User, *, ttl_s: float = 12 * 3600.0) -> tuple[str, str]:
        """(session id, CSRF token) of a new browser session; the id is stored hashed."""
        import secrets

        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()
        with self.transaction() as cur:
            cur.execute("""INSERT INTO ann_sessions (session_hash, user_id, csrf_token, created_at, expires_at)
                           VALUES (?, ?, ?, ?, ?)""", (hash_token(sid), user.id, csrf, now, now + ttl_s))
        return sid, csrf

    def session(self, sid: str | None) -> tuple[User, str] | None:
        """(user, CSRF token) of a live session, else None."""
        if not sid or len(sid) > 256:
            return None
        with self.transaction(write=False) as cur:
            cur.execute("""SELECT u.id, u.name, u.role, s.csrf_token FROM ann_sessions s
                           JOIN ann_users u ON u.id = s.user_id
                           WHERE s.session_hash = ? AND s.expires_at > ?""", (hash_token(sid), time.time()))
            row = cur.fetchone()
        return (User(int(row[0]), row[1], row[2]), row[3]) if row else None

    def end_session(self, sid: str) -> None:
        with self.transaction() as cur:
            cur.execute("DELETE FROM ann_sessions WHERE session_hash = ?", (hash_token(sid),))

    # -- images and assignments -----------------------------------------------------------
    def add_image(self, image_id: str, *, mode: str = "blind") -> None:
        """Register an image for annotation (idempotent; the mode of a known image is kept)."""
        if mode not in ("blind", "review"):
            raise ValueError(f"mode must be 'blind' or 'review', got {mode!r}")
        with self.transaction() as cur:
            cur.execute("SELECT 1 FROM ann_images WHERE image_id = ?", (str(image_id),))
            if not cur.fetchone():
                cur.execute("INSERT INTO ann_images (image_id, mode, created_at) VALUES (?, ?, ?)",
                            (str(image_id), mode, time.time()))

    def image_mode(self, image_id: str) -> str | None:
        with self.transaction(write=False) as cur:
            cur.execute("SELECT mode FROM ann_images WHERE image_id = ?", (str(image_id),))
            row = cur.fetchone()
        return row[0] if row else None

    def images(self) -> list[str]:
        with self.transaction(write=False) as cur:
            cur.execute("SELECT image_id FROM ann_images ORDER BY created_at, image_id")
            return [r[0] for r in cur.fetchall()]

    def assign(self, image_id: str, users: Sequence[User | int]) -> None:
        """Assign the image to these users (already assigned ones are kept)."""
        self.add_image(image_id)
        now = time.time()
        with self.transaction() as cur:
            for u in users:
                uid = u.id if isinstance(u, User) else int(u)
                cur.execute("SELECT 1 FROM ann_assignments WHERE image_id = ? AND user_id = ?", (str(image_id), uid))
                if not cur.fetchone():
                    cur.execute("INSERT INTO ann_assignments (image_id, user_id, assigned_at) VALUES (?, ?, ?)",
                                (str(image_id), uid, now))

    def assign_k(self, image_id: str, k: int) -> list[User]:
        """Assign the image to ``k`` annotators in total, adding those with the fewest
        assignments so far (ties by id); returns everyone assigned."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.add_image(image_id)
        with self.transaction() as cur:
            cur.execute("""SELECT u.id, u.name, u.role, COUNT(a.image_id) AS n FROM ann_users u
                           LEFT JOIN ann_assignments a ON a.user_id = u.id
                           WHERE u.role = 'annotator' GROUP BY u.id, u.name, u.role ORDER BY n, u.id""")
            candidates = [User(int(r[0]), r[1], r[2]) for r in cur.fetchall()]
            cur.execute("SELECT user_id FROM ann_assignments WHERE image_id = ?", (str(image_id),))
            have = {int(r[0]) for r in cur.fetchall()}
            need = max(0, k - len(have))
            add = [u for u in candidates if u.id not in have][:need]
            now = time.time()
            for u in add:
                cur.execute("INSERT INTO ann_assignments (image_id, user_id, assigned_at) VALUES (?, ?, ?)",
                            (str(image_id), u.id, now))
        return self.assigned_users(image_id)

    def assigned_users(self, image_id: str) -> list[User]:
        with self.transaction(write=False) as cur:
            cur.execute("""SELECT u.id, u.name, u.role FROM ann_assignments a JOIN ann_users u ON u.id = a.user_id
                           WHERE a.image_id = ? ORDER BY u.id""", (str(image_id),))
            return [User(int(r[0]), r[1], r[2]) for r in cur.fetchall()]

    def assigned_images(self, user: User | int) -> list[str]:
        uid = user.id if isinstance(user, User) else int(user)
        with self.transaction(write=False) as cur:
            cur.execute("SELECT image_id FROM ann_assignments WHERE user_id = ? ORDER BY assigned_at, image_id",
                        (uid,))
            return [r[0] for r in cur.fetchall()]

    def is_assigned(self, image_id: str, user: User | int) -> bool:
        uid = user.id if isinstance(user, User) else int(user)
        with self.transaction(write=False) as cur:
            cur.execute("SELECT 1 FROM ann_assignments WHERE image_id = ? AND user_id = ?", (str(image_id), uid))
            return cur.fetchone() is not None

    # -- annotations ----------------------------------------------------------------------
    def save_annotation(self, image_id: str, user: User | int, points) -> AnnotationVersion:
        """Append a new version of the user's points for the image (never overwrites)."""
        uid = user.id if isinstance(user, User) else int(user)
        pts = _check_points(points)
        now = time.time()
        with self.transaction() as cur:
            row_id = cur.insert("""INSERT INTO ann_annotations (image_id, user_id, points, n_points, created_at)
                                   VALUES (?, ?, ?, ?, ?)""",
                                (str(image_id), uid, json.dumps(pts), len(pts), now))
            cur.execute("SELECT COUNT(*) FROM ann_annotations WHERE image_id = ? AND user_id = ? AND id <= ?",
                        (str(image_id), uid, row_id))
            version = int(cur.fetchone()[0])
            cur.execute("SELECT name FROM ann_users WHERE id = ?", (uid,))
            name = cur.fetchone()[0]
        return AnnotationVersion(row_id, str(image_id), uid, name, version, pts, now)

    def annotation_versions(self, image_id: str, *, user: User | int | None = None) -> list[AnnotationVersion]:
        """Every saved version, oldest first (per user numbered 1, 2, ...)."""
        sql = """SELECT a.id, a.image_id, a.user_id, u.name, a.points, a.created_at FROM ann_annotations a
                 JOIN ann_users u ON u.id = a.user_id WHERE a.image_id = ?"""
        args: tuple = (str(image_id),)
        if user is not None:
            sql += " AND a.user_id = ?"
            args += (user.id if isinstance(user, User) else int(user),)
        with self.transaction(write=False) as cur:
            cur.execute(sql + " ORDER BY a.id", args)
            rows = cur.fetchall()
        count: dict[int, int] = {}
        out = []
        for r in rows:
            uid = int(r[2])
            count[uid] = count.get(uid, 0) + 1
            out.append(AnnotationVersion(int(r[0]), r[1], uid, r[3], count[uid], json.loads(r[4]), float(r[5])))
        return out

    def latest_annotations(self, image_id: str) -> dict[str, AnnotationVersion]:
        """The newest version of each user who annotated the image, by user name."""
        latest: dict[str, AnnotationVersion] = {}
        for v in self.annotation_versions(image_id):
            latest[v.user_name] = v
        return latest

    def annotated_images(self) -> list[str]:
        with self.transaction(write=False) as cur:
            cur.execute("SELECT DISTINCT image_id FROM ann_annotations ORDER BY image_id")
            return [r[0] for r in cur.fetchall()]


class _Cursor:
    """A DB-API cursor speaking one placeholder style (``?``) on both backends."""

    def __init__(self, cur, dialect: str):
        self._cur = cur
        self.dialect = dialect

    def execute(self, sql: str, params: tuple = (), *, raw: bool = False):
        if self.dialect == "postgresql" and not raw:
            sql = sql.replace("?", "%s")
        if raw:
            self._cur.execute(sql)
        else:
            self._cur.execute(sql, params)
        return self

    def insert(self, sql: str, params: tuple) -> int:
        """Run an INSERT and return the new row's id."""
        if self.dialect == "postgresql":
            self._cur.execute(sql.replace("?", "%s") + " RETURNING id", params)
            return int(self._cur.fetchone()[0])
        self._cur.execute(sql, params)
        return int(self._cur.lastrowid)

    def table_exists(self, name: str) -> bool:
        if self.dialect == "postgresql":
            self._cur.execute("SELECT to_regclass(%s)", (name,))
            return self._cur.fetchone()[0] is not None
        self._cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return self._cur.fetchone() is not None

    def fetchone(self):
        return self._cur.fetchone()

    def fetchall(self):
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount
