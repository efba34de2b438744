"""The command a user runs, end to end: ``fastsac analyze FRAME -o OUT`` (report included)
on a simulated frame, timed as a whole process with its peak RSS, and the same
command of an earlier revision in the same run as the baseline.

    PYTHONPATH=src python benchmarks/analyze_e2e.py --size 8192
    PYTHONPATH=src python benchmarks/analyze_e2e.py --size 4096 --baseline-rev cf68840

The frame is ``fastsac simulate -o DIR --size N --seed 5`` (cached under
``--work``). A baseline revision is checked out into a temporary git worktree and
run from source with this checkout's compiled ``_core`` (same C++ kernels), so
the comparison isolates the Python pipeline. Per-step seconds come from the
result's own ``summary.json``. Prints one JSON object per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, env) -> tuple[float, float, int]:
    """(wall s, peak RSS MiB, exit status) of one process, by GNU time when present
    (the children's rusage would also count earlier children such as the simulator)."""
    gnu_time = shutil.which("time") or "/usr/bin/time"
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        if os.path.exists(gnu_time):
            t0 = time.perf_counter()
            rc = subprocess.run([gnu_time, "-o", tf.name, "-f", "%e %M", *cmd], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            wall = time.perf_counter() - t0
            fields = Path(tf.name).read_text().split()
            return wall, float(fields[-1]) / 1024, rc
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return (time.perf_counter() - t0,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, rc)


def _frame(work: Path, size: int, env) -> Path:
    d = work / f"sim{size}"
    f = d / "synth_0005.tif"
    if not f.is_file():
        subprocess.run([sys.executable, "-m", "fastsac", "simulate", "-o", str(d), "--size", str(size),
                        "--seed", "5"], env=env, check=True, stdout=subprocess.DEVNULL)
    return f


def _source_tree(rev: str, tmp: Path) -> Path:
    wt = tmp / f"rev-{rev}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt), rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for so in (REPO / "src" / "fastsac").glob("_core*.so"):
        shutil.copy2(so, wt / "src" / "fastsac" / so.name)
    return wt / "src"


def measure(frame: Path, src: Path, out: Path, label: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    wall, rss, rc = _run([sys.executable, "-m", "fastsac", "analyze", str(frame), "-o", str(out)], env)
    res = {"label": label, "frame": frame.name, "wall_s": round(wall, 2), "peak_rss_mib": round(rss), "rc": rc}
    summ = out / frame.stem / "summary.json"
    if summ.is_file():
        s = json.loads(summ.read_text())
        res["n_atoms"] = s.get("n_atoms")
        res["timings_s"] = {k: round(v, 3) for k, v in (s.get("timings_s") or {}).items()
                            if isinstance(v, (int, float))}
        pc = s.get("pair_correlation") or {}
        res["pair_correlation"] = pc.get("pattern_test") or pc.get("note")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--baseline-rev", default=None, help="git revision to run as the baseline")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fastsac_e2e")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    frame = _frame(args.work, args.size, env)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        runs = []
        if args.baseline_rev:
            try:
                src = _source_tree(args.baseline_rev, tmp)
                runs.append(measure(frame, src, tmp / "out_base", f"baseline {args.baseline_rev}"))
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tmp / f"rev-{args.baseline_rev}")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        runs.append(measure(frame, REPO / "src", tmp / "out_now", "this checkout"))
    for r in runs:
        print(json.dumps(r))
    if len(runs) == 2 and runs[1]["wall_s"] > 0:
        print(json.dumps({"speedup": round(runs[0]["wall_s"] / runs[1]["wall_s"], 1),
                          "rss_ratio": round(runs[0]["peak_rss_mib"] / max(runs[1]["peak_rss_mib"], 1), 1)}))


if __name__ == "__main__":
    main()
