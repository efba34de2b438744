#!/usr/bin/env python3
"""Fetch a few small real DM3/DM4/EMD/SER files (rosettasciio's test data) into a
cache folder outside the repository, for tests/io/test_rsciio_files.py.

rosettasciio is GPL-3.0 and fastsac is MIT, so its files are never committed
here. The pinned sdist is fetched with pip (its registry.txt lists every test
file with its SHA-256); the files themselves are not in the sdist, so they are
downloaded from rosettasciio's repository at the same tag (or from
$FASTSAC_RSCIIO_BASE_URL / $POOCH_BASE_URL) and checked against the registry.

Usage: fetch_rsciio_testfiles.py DEST  (prints DEST/data when files are there;
exits 0 without printing when they cannot be fetched, so the tests skip).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "0.15.0"
FILES = [
    "digitalmicrograph/2D/test-2.dm3",
    "digitalmicrograph/2D/test-2.dm4",
    "digitalmicrograph/2D/test-10.dm3",
    "tia/new/128x128_TEM_acquire-sum1_1.ser",
    "tia/new/128x128-TEM_search_1.ser",
    "emd/example_axis_len_1.emd",
]


def main(dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    data = dest / "data"
    sdist = dest / f"rosettasciio-{VERSION}.tar.gz"
    if not sdist.exists():
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--no-binary", "rosettasciio", f"rosettasciio=={VERSION}",
                            "-d", str(dest)], capture_output=True, text=True)
        if r.returncode != 0 or not sdist.exists():
            print(f"rosettasciio sdist not fetched: {r.stderr.strip()[-300:]}", file=sys.stderr)
            return 0
    with tarfile.open(sdist) as tar:
        member = tar.getmember(f"rosettasciio-{VERSION}/rsciio/tests/registry.txt")
        text = tar.extractfile(member).read().decode()
    registry = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            registry[parts[0].strip("'")] = parts[1]
    base = os.environ.get("FASTSAC_RSCIIO_BASE_URL") or os.environ.get(
        "POOCH_BASE_URL", f"https://github.com/hyperspy/rosettasciio/raw/v{VERSION}/rsciio/tests/data/")
    got = 0
    for rel in FILES:
        target = data / rel
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == registry.get(rel):
            got += 1
            continue
        try:
            with urllib.request.urlopen(base.rstrip("/") + "/" + rel, timeout=20) as resp:
                blob = resp.read()
        except OSError as exc:
            print(f"{rel}: not fetched ({exc}); not trying the others", file=sys.stderr)
            break
        if hashlib.sha256(blob).hexdigest() != registry.get(rel):
            print(f"{rel}: SHA-256 does not match rosettasciio's registry; dropped", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(blob)
        os.replace(tmp, target)
        got += 1
    if got:
        print(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else
                       Path.home() / ".cache" / "fastsac-testfiles")))
