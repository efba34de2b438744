"""End-to-end latency of live analysis per frame (LiveSession.process).

Two ways to run it:

* pytest-benchmark (sizes × detector)::

      PYTHONPATH=src python -m pytest benchmarks/bench_live.py --benchmark-enable -q

* as a script, printing median latency per size and the stage that dominates::

      PYTHONPATH=src python benchmarks/bench_live.py [--sizes 1024 2048 4096] [--repeat 5]
          [--detector classical] [--threads 2] [--device cuda] [--mask-working-px 24]
          [--json out.json]

The latency is what a user waits for: array in → detections, neighbours,
clusters and per-frame statistics out (no file I/O; ``fastsac watch`` adds
reading the frame and, optionally, the overlay). Frames are simulated with
:mod:`fastsac.synth` when it is installed (else Gaussian spots on noise), with a
fixed seed. Timings are wall clock after one warm-up frame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

SIZES = (1024, 2048, 4096)


def make_frame(size: int, seed: int = 0) -> np.ndarray:
    try:
        from fastsac.synth import simulate

        image, _truth = simulate(size=size, seed=seed)
        return np.asarray(image, dtype=np.float32)
    except Exception:  # simulator absent or different API: a plain stand-in
        rng = np.random.default_rng(seed)
        img = rng.normal(400.0, 8.0, (size, size)).astype(np.float32)
        n = size * size // 6000
        xy = rng.uniform(4, size - 5, (n, 2))
        for x, y in xy:
            xi, yi = int(x), int(y)
            yy, xx = np.mgrid[yi - 6:yi + 7, xi - 6:xi + 7]
            img[yi - 6:yi + 7, xi - 6:xi + 7] += 60 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)
        return img


def measure(size: int, *, detector: str = "classical", repeat: int = 5,
            support_mask: bool = True, device: str = "cpu", mask_params: dict | None = None) -> dict:
    from fastsac.live import LiveSession

    frame = make_frame(size)
    s = LiveSession(detector=detector, pixel_size_nm=0.0293, support_mask=support_mask,
                    device=device, mask_params=mask_params)
    s.process(frame)  # warm-up: JIT, caches, thread pools
    lat, stages = [], []
    for _ in range(repeat):
        r = s.process(frame)
        lat.append(r.latency_s)
        stages.append({k: v for k, v in r.timings.items()
                       if k in ("score_map", "peaks", "refine", "neighbors_mask", "statistics")})
    med = {k: statistics.median(st[k] for st in stages) for k in stages[0]}
    other = statistics.median(lat) - sum(med.values())
    med["other"] = max(other, 0.0)
    return {"size": size, "device": device, "support_mask": support_mask,
            "mask_params": mask_params or {}, "median_s": statistics.median(lat), "min_s": min(lat),
            "n_atoms": len(r.detections), "stages_s": med,
            "dominant": max(med, key=med.get)}


# --------------------------------------------------------------------------- pytest-benchmark
try:
    import pytest

    @pytest.mark.parametrize("size", SIZES)
    def test_live_latency(benchmark, size):
        from fastsac.live import LiveSession

        frame = make_frame(size)
        s = LiveSession(detector="classical", pixel_size_nm=0.0293)
        ref = s.process(frame)
        r = benchmark(s.process, frame)
        assert len(r.detections) == len(ref.detections)  # parity before timing
except ImportError:  # pragma: no cover
    pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--detector", default="classical")
    ap.add_argument("--no-mask", action="store_true", help="skip the per-frame support mask")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for the C++ kernels (set before import)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "auto", "cuda"],
                    help="where the classical detector runs (cuda: torch + numba CUDA)")
    ap.add_argument("--mask-working-px", type=float, default=None,
                    help="support-mask working scale (default 6 px: 2x binning at 0.0293 nm/px)")
    ap.add_argument("--json", default=None, help="append the results to this JSON file")
    ap.add_argument("--noise-window", nargs="+", default=None, choices=["box", "gaussian"],
                    help="classical detector's local-noise window(s), each measured in this run "
                         "(default: the detector's default)")
    a = ap.parse_args(argv)
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    from fastsac._backend import core

    try:
        thr = core().openmp_threads()
    except Exception:
        thr = "n/a"
    mask_params = {} if a.mask_working_px is None else {"working_px": a.mask_working_px}
    print(f"fastsac live latency  detector={a.detector}  device={a.device}  "
          f"support mask={not a.no_mask} {mask_params or ''}  "
          f"cpu cores={os.cpu_count()}  omp threads={thr}  load={os.getloadavg()[0]:.1f}")
    print(f"{'size':>6} {'median s':>9} {'min s':>7} {'atoms':>6}  stages (median s)")
    results = []
    for size in a.sizes:
        for window in a.noise_window or [None]:
            det = a.detector
            if window is not None:
                from fastsac.detectors import ClassicalDetector

                det = ClassicalDetector(noise_window=window, device=a.device)
            t0 = time.perf_counter()
            m = measure(size, detector=det, repeat=a.repeat, support_mask=not a.no_mask,
                        device=a.device, mask_params=mask_params)
            m["noise_window"] = window
            results.append(m)
            st = "  ".join(f"{k}={v:.3f}" for k, v in m["stages_s"].items())
            label = f" [{window}]" if window else ""
            print(f"{size:>6} {m['median_s']:>9.3f} {m['min_s']:>7.3f} {m['n_atoms']:>6}  {st}  "
                  f"-> {m['dominant']} dominates  ({time.perf_counter() - t0:.0f} s){label}", flush=True)
    if a.json:
        import json

        old = json.load(open(a.json)) if os.path.exists(a.json) else []
        with open(a.json, "w") as fh:
            json.dump(old + results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
