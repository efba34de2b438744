"""The README's promise about bad files, checked on a battery of ~40 malformed
and hostile inputs (issue 16): every bad input is one line on stderr naming the
file, the batch goes on, the good frame at the end is analysed, the exit status
is 2, and peak RSS stays under 2 GB whatever the headers claim."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .battery import build

SRC = str(Path(__file__).resolve().parents[2] / "src")
RSS_LIMIT_KB = 2 * 1024 * 1024  # 2 GB

# Runs a command and reports its exit status and the peak RSS of it and its children.
_RUNNER = """
import json, resource, subprocess, sys
r = subprocess.run(sys.argv[2:], capture_output=True, text=True)
json.dump({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
           "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss},
          open(sys.argv[1], "w"))
"""


def run_cli(args, tmp_path, *, timeout=900):
    """``python -m fastsac ARGS`` in a subprocess: (rc, stdout, stderr, peak RSS kB)."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")
    report = tmp_path / f"run_{len(list(tmp_path.glob('run_*.json')))}.json"
    subprocess.run([sys.executable, "-c", _RUNNER, str(report), sys.executable, "-m", "fastsac",
                    *map(str, args)], env=env, timeout=timeout, check=True)
    r = json.loads(report.read_text())
    return r["rc"], r["stdout"], r["stderr"], r["maxrss_kb"]


@pytest.fixture(scope="module")
def battery_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("battery")
    expect = build(tmp / "in")
    out = tmp / "out"
    files = sorted((tmp / "in").iterdir())
    rc, stdout, stderr, rss = run_cli(["analyze", *files, "-o", out, "--detector", "classical",
                                       "--no-overlay"], tmp)
    return expect, tmp, out, rc, stdout, stderr, rss


def test_every_bad_input_is_one_line_and_the_batch_completes(battery_run):
    expect, tmp, out, rc, stdout, stderr, rss = battery_run
    assert "Traceback" not in stderr, stderr
    assert rc == 2
    skipped = [ln for ln in stderr.splitlines() if ln.startswith("fastsac: skipped ")]
    for name, what in expect.items():
        mine = [ln for ln in skipped if name in ln]
        if what == "skip":
            assert len(mine) == 1, (name, mine)
        elif what == "ok":
            assert not mine, (name, mine)
    # Every stderr line is a one-line message of fastsac (skips, notes, warnings)
    # or a progress bar.
    for ln in stderr.splitlines():
        if "%|" in ln or not ln.strip():
            continue
        assert ln.startswith(("fastsac: ", "WARNING fastsac")), ln
    # the good frame after all the bad ones is analysed
    s = json.loads((out / "zz_good" / "summary.json").read_text())
    assert s["n_atoms"] == 10 and s["pixel_size_nm"] == pytest.approx(0.0293, rel=1e-4)
    assert (out / "report.html").exists()


def test_summary_lists_every_input_with_its_file(battery_run):
    expect, tmp, out, rc, *_ = battery_run
    rows = list(csv.DictReader((out / "summary.csv").open()))
    files = {Path(r["file"]).name for r in rows}
    assert files == set(expect)
    for r in rows:
        name = Path(r["file"]).name
        if expect[name] == "skip":
            assert r["status"].startswith("error: ")
        elif expect[name] == "ok":
            assert r["status"] == "ok", r
    # the 3-frame stack: one row and one folder per frame, never silently one frame
    stack = [r["image"] for r in rows if r["file"].endswith("b36_stack3.tif")]
    assert stack == ["b36_stack3_f000", "b36_stack3_f001", "b36_stack3_f002"]
    assert all((out / n / "atoms.csv").exists() for n in stack)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(stack) <= set(manifest["outputs"])


def test_absurd_calibrations_are_ignored_and_announced(battery_run):
    expect, tmp, out, rc, stdout, stderr, rss = battery_run
    for name in ("b25_1e-9nm_per_px", "b26_1e6nm_per_px", "b27_negative_resolution"):
        s = json.loads((out / name / "summary.json").read_text())
        # issue 13 item 7: the rejected calibration is replaced by one estimated from the atoms
        assert s["pixel_size_source"] == "estimated from atom size" and s["pixel_size_assumed_nm"] is None
        assert 0.0293 / 2 < s["pixel_size_nm"] < 0.0293 * 2
        assert s["n_atoms"] == 10  # the spots are still found at the estimated scale
        assert f"{name}.tif has no usable calibration" in stderr
    assert json.loads((out / "b25_1e-9nm_per_px" / "summary.json").read_text())[
        "calibration_rejected_nm"] == pytest.approx(1e-9)
    assert "outside the plausible" in stderr


def test_peak_memory_is_bounded_whatever_headers_claim(battery_run):
    *_, rss = battery_run
    assert 0 < rss <= RSS_LIMIT_KB, f"peak RSS {rss / 1024:.0f} MB"


def test_huge_image_points_to_montage(battery_run):
    expect, tmp, out, rc, stdout, stderr, rss = battery_run
    line = next(ln for ln in stderr.splitlines() if "b09_claims_100000sq" in ln)
    assert "100000×100000" in line and "fastsac montage" in line and "--max-pixels" in line
