"""Per-frame cost of ``fastsac watch`` as a session grows.

A live session at the microscope runs for hundreds to thousands of frames;
what ``watch`` does per frame besides the analysis (appending the running
tables, the running statistics, the dashboard) must not grow with the number
of frames already seen. This runs :func:`fastsac.live.watch` over ``--frames``
copies (hard links) of one simulated frame, without the overlay unless
``--overlay``, and prints
the median wall time per frame over the first and the last 10 % of frames,
split into analysis (``LiveSession.process`` latency) and bookkeeping (the
rest of the loop).

    PYTHONPATH=src python benchmarks/bench_watch.py [--frames 2000] [--size 512] [--atoms-per-frame 300] [--overlay]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--atoms-per-frame", type=int, default=300,
                    help="Pt loading of the simulated frame is raised to give about this many atoms")
    ap.add_argument("--overlay", action="store_true", help="draw the overlay too (background thread)")
    ap.add_argument("--sync-overlay", action="store_true",
                    help="baseline: draw the overlay in the loop, as before the background renderer")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    import fastsac.live
    from fastsac.io import write_tiff
    from fastsac.live import watch

    if a.sync_overlay:
        a.overlay = True

        class Inline:  # the renderer's interface, drawing in the calling thread
            def __init__(self, fn):
                self.fn = fn

            def submit(self, *args, **kwargs):
                self.fn(*args, **kwargs)

            def close(self):
                pass

        fastsac.live._LatestOnly = Inline
    from fastsac.synth import simulate

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        area_nm2 = (a.size * 0.0293) ** 2
        img, truth = simulate(size=a.size, seed=3, vacuum="none",
                              loading_per_nm2=a.atoms_per_frame / area_nm2)
        first = src / "frame_00000.tif"
        write_tiff(first, np.asarray(img, np.float32), pixel_size_nm=0.0293)
        for i in range(1, a.frames):
            os.link(first, src / f"frame_{i:05d}.tif")
        old = time.time() - 60  # settled long ago: no waiting for "complete" files
        for p in src.iterdir():
            os.utime(p, (old, old))
        stamps, latencies = [], []

        def on_frame(r):
            stamps.append(time.perf_counter())
            latencies.append(r.latency_s)

        t0 = time.perf_counter()
        rep = watch(src, out, detector="classical", once=True, poll_s=0.0, settle_s=0.0,
                    overlay=a.overlay, on_frame=on_frame)
        total = time.perf_counter() - t0
        assert len(rep.processed) == a.frames, (len(rep.processed), rep.bad)
        wall = np.diff(np.concatenate([[t0], stamps]))
        lat = np.asarray(latencies)
        book = wall - lat
        k = max(1, a.frames // 10)
        atoms_csv = (out / "atoms.csv").stat().st_size
        res = {"frames": a.frames, "size": a.size,
               "overlay": "inline" if a.sync_overlay else ("background" if a.overlay else "none"), "atoms_per_frame": int(len(truth)),
               "total_s": total, "atoms_csv_mb": atoms_csv / 1e6,
               "first10pct": {"wall_ms": 1e3 * float(np.median(wall[:k])),
                              "analysis_ms": 1e3 * float(np.median(lat[:k])),
                              "bookkeeping_ms": 1e3 * float(np.median(book[:k]))},
               "last10pct": {"wall_ms": 1e3 * float(np.median(wall[-k:])),
                             "analysis_ms": 1e3 * float(np.median(lat[-k:])),
                             "bookkeeping_ms": 1e3 * float(np.median(book[-k:]))}}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
