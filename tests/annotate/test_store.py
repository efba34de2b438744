"""Annotation store on SQLite and PostgreSQL: migrations, users, tokens, append-only versions."""

from __future__ import annotations

import multiprocessing as mp
import threading

import pytest

from fastsac.annotate import AnnotationStore
from fastsac.annotate.security import hash_token, verify_password
from fastsac.annotate.store import MIGRATIONS
from fastsac.cli import main


def test_migrations_are_versioned_and_idempotent(database):
    store = AnnotationStore.open(database)
    assert store.schema_version() == len(MIGRATIONS) == 2
    again = AnnotationStore.open(database)
    assert again.migrate() == 2
    with store.transaction(write=False) as cur:
        cur.execute("SELECT component, version FROM schema_version ORDER BY version")
        assert [tuple(r) for r in cur.fetchall()] == [("annotate", 1), ("annotate", 2)]


def test_partial_migration_is_completed(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    store = AnnotationStore.open(path, migrate=False)
    # Simulate a database created by a release that knew only step 1.
    with store.transaction() as cur:
        cur.execute("""CREATE TABLE schema_version (component TEXT NOT NULL, version INTEGER NOT NULL,
                       applied_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (component, version))""")
        for stmt in MIGRATIONS[0]["sqlite"]:
            cur.execute(stmt.replace("{pk}", "INTEGER PRIMARY KEY AUTOINCREMENT"), raw=True)
        cur.execute("INSERT INTO schema_version VALUES ('annotate', 1, 0)")
    assert store.schema_version() == 1
    assert store.migrate() == 2
    u = store.add_user("x")
    sid, _ = store.create_session(u)
    assert store.session(sid)[0] == u


def test_newer_schema_refused(tmp_path):
    path = str(tmp_path / "new.sqlite3")
    store = AnnotationStore.open(path)
    with store.transaction() as cur:
        cur.execute("INSERT INTO schema_version VALUES ('annotate', 99, 0)")
    with pytest.raises(RuntimeError, match="newer"):
        store.migrate()


def test_users_roles_tokens(database):
    store = AnnotationStore.open(database)
    admin = store.add_user("root", role="admin")
    ann = store.add_user("ann", role="annotator", password="correct horse")
    with pytest.raises(ValueError, match="exists"):
        store.add_user("ann")
    with pytest.raises(ValueError, match="role"):
        store.add_user("z", role="superuser")
    with pytest.raises(ValueError, match="without spaces"):
        store.add_user("a b")
    tok = store.create_token(ann)
    assert store.user_for_token(tok) == ann
    assert store.user_for_token(tok + "x") is None
    assert store.user_for_token("") is None and store.user_for_token(None) is None
    assert store.user_for_token(store.create_token(admin)).role == "admin"
    # Only the SHA-256 of a token is stored, never the token; passwords are argon2id.
    with store.transaction(write=False) as cur:
        cur.execute("SELECT token_hash FROM ann_tokens")
        hashes = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT password_hash FROM ann_users WHERE name = 'ann'")
        pw = cur.fetchone()[0]
    assert hash_token(tok) in hashes and tok not in hashes and all(len(h) == 64 for h in hashes)
    assert pw.startswith("$argon2id$") and verify_password(pw, "correct horse")
    assert store.check_password("ann", "correct horse") == ann
    assert store.check_password("ann", "wrong") is None
    assert store.check_password("root", "") is None  # no password set: no password login
    assert store.revoke_token(tok) and store.user_for_token(tok) is None


def test_login_rate_limit_state(database):
    store = AnnotationStore.open(database)
    for _ in range(4):
        store.record_login_failure("ann")
    assert store.login_allowed("ann", max_failures=5)
    store.record_login_failure("ann")
    assert not store.login_allowed("ann", max_failures=5)
    assert store.login_allowed("other", max_failures=5)
    assert store.login_allowed("ann", max_failures=5, window_s=0.0)  # outside the window
    store.clear_login_failures("ann")
    assert store.login_allowed("ann")


def test_assignment_to_k_annotators(database):
    store = AnnotationStore.open(database)
    users = [store.add_user(f"a{i}") for i in range(4)]
    store.add_user("boss", role="admin")
    got = store.assign_k("img1", 3)
    assert [u.name for u in got] == ["a0", "a1", "a2"]
    got = store.assign_k("img2", 3)
    assert "a3" in [u.name for u in got]  # the least-loaded annotator is picked first
    assert store.assign_k("img1", 2) == store.assigned_users("img1")  # never unassigns
    assert all(u.role == "annotator" for u in store.assigned_users("img2"))
    assert store.is_assigned("img1", users[0]) and not store.is_assigned("img1", users[3])
    assert store.assigned_images(users[0]) == ["img1", "img2"] or store.assigned_images(users[0]) == ["img1"]
    store.add_image("img3", mode="review")
    assert store.image_mode("img3") == "review" and store.image_mode("img1") == "blind"


def test_versions_are_append_only(database):
    store = AnnotationStore.open(database)
    a, b = store.add_user("a"), store.add_user("b")
    v1 = store.save_annotation("im", a, [[1, 2], [3, 4]])
    v2 = store.save_annotation("im", a, [[1, 2]])
    w1 = store.save_annotation("im", b, [])
    assert (v1.version, v2.version, w1.version) == (1, 2, 1)
    hist = store.annotation_versions("im")
    assert [(h.user_name, h.version, len(h.points)) for h in hist] == [("a", 1, 2), ("a", 2, 1), ("b", 1, 0)]
    assert store.latest_annotations("im")["a"].points == [[1.0, 2.0]]
    assert [h.version for h in store.annotation_versions("im", user=b)] == [1]
    # The database refuses to change or delete history, whatever the code does.
    for sql in ("UPDATE ann_annotations SET points = '[]'", "DELETE FROM ann_annotations"):
        with pytest.raises(Exception, match="append-only"):
            with store.transaction() as cur:
                cur.execute(sql)
    assert len(store.annotation_versions("im")) == 3
    for bad in ([[1]], [[1, float("nan")]], "x", [["a", 1]]):
        with pytest.raises(ValueError, match="points"):
            store.save_annotation("im", a, bad)


def test_concurrent_saves_from_threads_are_all_kept(database):
    store = AnnotationStore.open(database)
    users = [store.add_user(f"u{i}") for i in range(4)]
    barrier = threading.Barrier(8)
    errors = []

    def work(i):
        try:
            barrier.wait()
            for j in range(5):
                store.save_annotation("same", users[i % 4], [[i, j]])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    hist = store.annotation_versions("same")
    assert len(hist) == 40
    assert sorted((int(h.points[0][0]), int(h.points[0][1])) for h in hist) == \
        sorted((i, j) for i in range(8) for j in range(5))
    for u in users:  # per-user versions are 1..10 without gaps or duplicates
        assert [h.version for h in hist if h.user_id == u.id] == list(range(1, 11))


def _save_in_process(database, user_id, tag, n, start):
    store = AnnotationStore.open(database)
    start.wait()
    for j in range(n):
        store.save_annotation("shared", user_id, [[tag, j]])


def test_concurrent_saves_from_processes_are_all_kept(database):
    store = AnnotationStore.open(database)
    a, b = store.add_user("a"), store.add_user("b")
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_save_in_process, args=(database, u.id, k, 10, start))
             for k, u in enumerate((a, b, a))]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    hist = store.annotation_versions("shared")
    assert len(hist) == 30
    assert sorted(h.version for h in hist if h.user_name == "a") == list(range(1, 21))
    assert {(int(h.points[0][0]), int(h.points[0][1])) for h in hist} == {(k, j) for k in range(3) for j in range(10)}


def test_sessions(database):
    store = AnnotationStore.open(database)
    u = store.add_user("s")
    sid, csrf = store.create_session(u)
    got = store.session(sid)
    assert got == (u, csrf)
    assert store.session("nope") is None
    expired, _ = store.create_session(u, ttl_s=-1)
    assert store.session(expired) is None
    store.end_session(sid)
    assert store.session(sid) is None
    with store.transaction(write=False) as cur:
        cur.execute("SELECT session_hash FROM ann_sessions")
        assert sid not in [r[0] for r in cur.fetchall()]


def test_cli_users(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["users", "add", "alice", "--data", str(data), "--role", "admin"]) == 0
    token = capsys.readouterr().out.strip()
    store = AnnotationStore.open(data_dir=data)
    assert store.user_for_token(token).name == "alice"
    assert main(["users", "add", "alice", "--data", str(data)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["users", "token", "alice", "--data", str(data)]) == 0
    t2 = capsys.readouterr().out.strip()
    assert t2 != token and store.user_for_token(t2).role == "admin"
    assert main(["users", "list", "--data", str(data)]) == 0
    assert "alice\tadmin" in capsys.readouterr().out
    assert main(["users", "add", "bob"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["users", "add", "bob", "--database", "postgresql://nobody@/nodb?host=/nonexistent&port=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open the database" in err


def test_cli_users_postgres(postgres_server, capsys):
    _, make_db = postgres_server
    url = make_db()
    assert main(["users", "add", "carol", "--database", url, "--role", "viewer"]) == 0
    token = capsys.readouterr().out.strip()
    assert AnnotationStore.open(url).user_for_token(token).role == "viewer"
