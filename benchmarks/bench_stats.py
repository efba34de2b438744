"""Cost of the statistics step against detection, per image size, new vs old.

Script (each step in its own process, so its peak RSS is its own)::

    PYTHONPATH=src python benchmarks/bench_stats.py --sizes 512 2048 8192 [--montage 32768] \
        [--out benchmarks/results/bench_stats.json]

For each size S: a synthetic S² frame (:func:`fastsac.bench.synthetic_image`,
2000 atoms/Mpx — ~134k atoms at 8192²) with a vacuum mask (a disc and a band,
~28 % of the frame):

``detect``     the default (classical) detector on the frame, CPU
``stats``      what ``analyze`` runs after detection:
               :func:`fastsac.spatial.stats.dispersion` (NN, clusters,
               Clark–Evans, Monte Carlo in the mask) and the pair-correlation
               test (:func:`fastsac.spatial.ripley.pair_correlation`, 99 patterns)
``stats_old``  the same dispersion, plus the previous
               ``pair_correlation_test`` (cKDTree pair lists, FFT set
               covariance) that the report recomputed; with ``n_sim`` reduced
               where 99 patterns would take minutes, its time extrapolated
               linearly to 99 patterns (marked ``extrapolated``); skipped
               above ``--old-max-atoms``.
``montage``    (``--montage S``) the pair-correlation test alone on a montage's
               point set (2000 atoms/Mpx, 16×-binned vacuum mask): the code
               :func:`fastsac.montage.montage_statistics` runs through
               ``dispersion``. Its detection is not run (minutes on 2 cores).

Ratios: stats / detect and old / new. The pytest-benchmark tests below time
the kernels on small inputs (``--benchmark-enable``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

PX_NM = 0.0293


def _vacuum(shape, f: int = 1) -> np.ndarray:
    """True = support: a vacuum disc and a band at the right edge (~28 %)."""
    h, w = (-(-s // f) for s in shape)
    yy, xx = np.ogrid[:h, :w]
    vac = (xx - 0.3 * w) ** 2 + (yy - 0.35 * h) ** 2 < (0.25 * min(h, w)) ** 2
    vac |= xx > 0.9 * w
    return ~vac


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step(step: str, size: int, tmp: str, n_sim_old: int) -> dict:
    from fastsac.spatial.stats import dispersion, pair_correlation_test

    xy_path = os.path.join(tmp, f"xy_{size}.npy")
    out: dict = {"step": step, "size": size}
    if step == "detect":
        from fastsac.bench import synthetic_image
        from fastsac.detectors import get_detector
        from fastsac.io import Micrograph

        img, _ = synthetic_image(size)
        mg = Micrograph.from_array(img, pixel_size_nm=PX_NM)
        det = get_detector("classical", device="cpu")
        det.detect(Micrograph.from_array(img[:256, :256].copy(), pixel_size_nm=PX_NM))  # warm-up
        rss0 = _rss_mb()
        t = time.perf_counter()
        found = det.detect(mg)
        out["time_s"] = time.perf_counter() - t
        np.save(xy_path, found.xy)
        out["n_atoms"] = len(found.xy)
        out["rss_before_mb"] = rss0
    elif step in ("stats", "stats_old"):
        xy = np.load(xy_path)
        mask = _vacuum((size, size))
        dispersion(xy[:50], image_shape=(size, size), pixel_size_nm=PX_NM)  # imports, warm-up
        rss0 = _rss_mb()
        t = time.perf_counter()
        s = dispersion(xy, image_shape=(size, size), pixel_size_nm=PX_NM, mask=mask)
        out["dispersion_s"] = time.perf_counter() - t
        xs = s.xy[s.in_support]
        if step == "stats":
            from fastsac.spatial.ripley import pair_correlation

            t = time.perf_counter()
            pc = pair_correlation(xs, image_shape=(size, size), mask=mask, pixel_size_nm=PX_NM)
            out["pair_correlation_s"] = time.perf_counter() - t
            out["pair_correlation_timings_s"] = pc.timings_s
            d = pc.as_dict()
            out["pair_correlation"] = {k: d[k] for k in ("pattern_method", "pattern_n_sim",
                                                         "pattern_n_reference_points", "pattern_r_max_rule",
                                                         "L_p_value", "g_p_value", "pattern_verdict")}
            out["time_s"] = out["dispersion_s"] + out["pair_correlation_s"]
        else:
            t = time.perf_counter()
            old = pair_correlation_test(xs, image_shape=(size, size), mask=mask, pixel_size_nm=PX_NM,
                                        n_sim=n_sim_old)
            t_old = time.perf_counter() - t
            out["old_n_sim"] = n_sim_old
            out["old_pair_correlation_s"] = t_old
            # The observed curve costs about one simulation: scale the time to 99 patterns.
            out["old_pair_correlation_99_s"] = t_old * 100 / (n_sim_old + 1)
            out["extrapolated"] = n_sim_old != 99
            out["old_L_p_value"] = old.L_p_value
            out["time_s"] = out["dispersion_s"] + out["old_pair_correlation_99_s"]
        out["rss_before_mb"] = rss0
        out["n_atoms"] = len(xy)
    elif step == "montage":
        from fastsac.spatial.ripley import pair_correlation

        f = 16
        rng = np.random.default_rng(0)
        n = int(2000 * size * size / 1e6)
        par = rng.uniform(0, size, (n // 20, 2))
        xy = np.concatenate([rng.uniform(-0.5, size - 0.5, (n // 2, 2)),
                             np.repeat(par, 10, 0) + rng.normal(0, 3, (len(par) * 10, 2))])
        xy = xy[(xy >= -0.5).all(1) & (xy < size - 0.5).all(1)]
        mb = _vacuum((size, size), f)
        rss0 = _rss_mb()
        t = time.perf_counter()
        pc = pair_correlation(xy, image_shape=(size, size), mask=mb, mask_bin_factor=f, pixel_size_nm=PX_NM)
        out["time_s"] = time.perf_counter() - t
        out["timings_s"] = pc.timings_s
        out["n_atoms"] = len(xy)
        out["n_in_support"] = pc.n_points
        d = pc.as_dict()
        out["pair_correlation"] = {k: d[k] for k in ("pattern_method", "pattern_n_reference_points",
                                                     "pattern_verdict", "L_p_value")}
        out["rss_before_mb"] = rss0
    out["peak_rss_mb"] = _rss_mb()
    return out


def _run(step, size, tmp, n_sim_old) -> dict:
    cmd = [sys.executable, __file__, "--step", step, "--size", str(size), "--tmp", tmp,
           "--n-sim-old", str(n_sim_old)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        return {"step": step, "size": size, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[512, 2048, 8192])
    ap.add_argument("--montage", type=int, default=None, help="montage edge (e.g. 32768): pair correlation only")
    ap.add_argument("--old-max-atoms", type=int, default=20000, help="skip the old implementation above this")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--tmp", default="/tmp/fastsac_bench_stats")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-sim-old", type=int, default=99, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.makedirs(args.tmp, exist_ok=True)
    if args.step:
        print(json.dumps(_step(args.step, args.size, args.tmp, args.n_sim_old)))
        return 0
    rows = []
    for size in args.sizes:
        det = _run("detect", size, args.tmp, 0)
        new = _run("stats", size, args.tmp, 0)
        row = {"size": size, "detect": det, "stats": new}
        n = det.get("n_atoms", 0)
        if n <= args.old_max_atoms:
            # 99 patterns where they take < ~1 min on 2 cores, else 9 (extrapolated).
            row["stats_old"] = _run("stats_old", size, args.tmp, 99 if n <= 2000 else 9)
        for k in ("stats", "stats_old"):
            if "time_s" in row.get(k, {}) and "time_s" in det:
                row[f"{k}_over_detect"] = row[k]["time_s"] / det["time_s"]
        if "time_s" in row.get("stats_old", {}) and "time_s" in new:
            row["old_over_new"] = row["stats_old"]["time_s"] / new["time_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.montage:
        m = _run("montage", args.montage, args.tmp, 0)
        big = [r for r in rows if "time_s" in r["detect"]]
        if big:  # detection scales with pixels
            ref = big[-1]
            m["detect_extrapolated_s"] = ref["detect"]["time_s"] * (args.montage / ref["size"]) ** 2
            m["over_detect_extrapolated"] = m["time_s"] / m["detect_extrapolated_s"]
        rows.append({"size": args.montage, "montage": m})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        from fastsac.io import write_json

        write_json(args.out, {"rows": rows, "cpu_count": os.cpu_count(),
                              "load_avg": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    return 0


# --------------------------------------------------------------------------- pytest-benchmark


def _pattern(n, size=2048, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, size, (n, 2))


@pytest.mark.parametrize("n", [100, 2000, 20000])
def test_dispersion(benchmark, n):
    from fastsac.spatial import neighbors
    from fastsac.spatial.stats import dispersion

    backends = sorted(set(neighbors._nn_kernel.available()) & set(neighbors._cluster_kernel.available()))
    xy = _pattern(n)
    ref = dispersion(xy, image_shape=(2048, 2048), pixel_size_nm=0.03, backend="numpy").as_dict()
    for b in backends:
        got = dispersion(xy, image_shape=(2048, 2048), pixel_size_nm=0.03, backend=b).as_dict()
        ref.pop("backend", None), got.pop("backend")
        assert ref == pytest.approx(got)
    benchmark(dispersion, xy, image_shape=(2048, 2048), pixel_size_nm=0.03)


@pytest.mark.parametrize("impl", ["old", "new"])
@pytest.mark.parametrize("n", [50, 500])
def test_pair_correlation(benchmark, n, impl):
    from fastsac.spatial.ripley import pair_correlation
    from fastsac.spatial.stats import pair_correlation_test

    xy = _pattern(n, 512)
    fn = pair_correlation if impl == "new" else pair_correlation_test
    a = pair_correlation(xy, image_shape=(512, 512), n_sim=19)
    b = pair_correlation_test(xy, image_shape=(512, 512), n_sim=19)
    np.testing.assert_allclose(a.L_minus_r_px, b.L_minus_r_px, atol=1e-8)
    benchmark.pedantic(fn, args=(xy,), kwargs={"image_shape": (512, 512), "n_sim": 99}, rounds=3, iterations=1)


if __name__ == "__main__":
    sys.exit(main())
