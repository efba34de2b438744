"""A throwaway PostgreSQL server for the annotation-store tests.

Started once per session from Debian's ``postgresql`` binaries (``initdb`` + ``pg_ctl``)
in a temporary folder, listening only on a unix socket in that folder (no TCP port), with
trust authentication; stopped and deleted at the end. initdb refuses to run as root, so as
root the cluster is created and run as the ``postgres`` system user (``runuser``). Tests
that need it are skipped with the reason when the binaries are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """``(admin_url, make_db)``: a running throwaway cluster and a factory of fresh databases."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'psycopg[binary]')")
    root = Path(tempfile.mkdtemp(prefix="fastsac-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root and there is no 'postgres' user for initdb")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o700)
        runuser = shutil.which("runuser")
        prefix = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
    data, sock = root / "data", root
    port = _free_port()  # only names the socket file (.s.PGSQL.<port>); TCP is off

    def run(cmd):
        full = prefix + cmd if prefix[:1] != ["su"] else prefix + [" ".join(cmd)]
        return subprocess.run(full, capture_output=True, text=True, timeout=120)

    r = run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8", "--locale=C"])
    if r.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    opts = f"-p {port} -k {sock} -c listen_addresses='' -c fsync=off -c max_connections=50"
    r = run([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
             "-t", "60", "start"])
    if r.returncode:
        log = (root / "log").read_text() if (root / "log").exists() else r.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {log[-500:]}")
    admin_url = f"postgresql://postgres@/postgres?host={sock}&port={port}"

    def make_db() -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(admin_url, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@/{name}?host={sock}&port={port}"

    try:
        yield admin_url, make_db
    finally:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A fresh empty database URL on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "annotations.sqlite3")
    _, make_db = request.getfixturevalue("postgres_server")
    return make_db()
