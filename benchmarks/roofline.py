"""Roofline of the CPU pipeline: every stage against the machine's measured peaks, in one run.

1. **Machine probes.** STREAM-like copy (16 B/element) and triad
   ``a = b + s·c`` (24 B/element) over float64 arrays of 128 MiB, by numpy
   (one thread) and by a C++ loop on all OpenMP threads
   (``fastsac._core.stream_seconds``); peak floating-point rate from
   independent AVX2 FMA chains on all threads (``fastsac._core.peak_flops``,
   float64 and float32 lanes).
2. **Stages**, timed on a simulated frame (``--size``, default 2048²; best of
   ``--repeat``): read/convert (uint16 TIFF → float32), the score map's filters
   (difference of Gaussians, the local-noise box cascade, the rest of the noise
   map), local maxima, NMS, centre of mass, Gaussian fit, nearest neighbours and
   clusters (on ``--points`` uniform points; mean cluster size 3), the support
   mask, the per-image statistics (``dispersion``), and the writers.

For each stage the script states a *model* of the compulsory memory traffic
(bytes that must cross the memory interface: inputs read once, outputs written
once, intermediates that do not fit in cache written and read back) and of the
arithmetic (flops, or compares where that is the work), per pixel or per
atom/point, and reports achieved GB/s and GFLOP/s, their fractions of the
measured peaks, and the roofline bound ``max(bytes / BW_triad, flops / peak)``
against the measured time (``bound/t``: 1 means at the roof).

Usage::

    PYTHONPATH=src python benchmarks/roofline.py [--size 2048] [--points 1000000] [--repeat 3]
        [--json benchmarks/results/roofline.json] [--md benchmarks/results/roofline.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def best(fn, repeat: int):
    t_best, out = np.inf, None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t0)
    return t_best, out


# --------------------------------------------------------------------------- machine
def probe_machine(core, repeat: int) -> dict:
    n = 1 << 24  # 128 MiB per float64 array
    out = {"threads": int(core.openmp_threads()), "cpus": os.cpu_count(),
           "cpu": platform.processor() or platform.machine()}
    t_copy = core.stream_seconds(0, n, max(3, repeat))
    t_triad = core.stream_seconds(1, n, max(3, repeat))
    out["cpp_copy_GBs"] = 16 * n / t_copy / 1e9
    out["cpp_triad_GBs"] = 24 * n / t_triad / 1e9
    a = np.ones(n)
    b = np.full(n, 2.0)
    c = np.full(n, 0.5)
    t, _ = best(lambda: np.copyto(b, a), max(3, repeat))
    out["numpy_copy_GBs"] = 16 * n / t / 1e9
    tmp = np.empty(n)

    def triad():
        np.multiply(c, 3.0, out=tmp)
        np.add(b, tmp, out=a)
    t, _ = best(triad, max(3, repeat))
    out["numpy_triad_GBs"] = 24 * n / t / 1e9  # STREAM's count; numpy moves 40 B/element
    del a, b, c, tmp
    iters = 20_000_000
    for single, key in ((False, "f64"), (True, "f32")):
        best_rate, isa = 0.0, ""
        for _ in range(max(3, repeat)):
            flops, sec, isa = core.peak_flops(iters, single)
            best_rate = max(best_rate, flops / sec)
        out[f"peak_GFLOPs_{key}"] = best_rate / 1e9
        out[f"peak_isa_{key}"] = isa
    out["load_average"] = os.getloadavg()[0]
    return out


# --------------------------------------------------------------------------- stages
def run_stages(size: int, n_points: int, repeat: int) -> tuple[list[dict], dict]:
    from fastsac import io, peaks, preprocess
    from fastsac.boxfilter import box_gaussian_filter, box_plan
    from fastsac.detectors import ClassicalDetector
    from fastsac.pipeline import analyze, write_result
    from fastsac.spatial import clusters, nearest_neighbors
    from fastsac.support import support_mask
    from fastsac.spatial.stats import dispersion
    from fastsac.synth import simulate

    img, truth = simulate(size=size, seed=1)
    px_nm = float(truth.params["pixel_size_nm"])
    lo, hi = float(img.min()), float(img.max())
    frame16 = np.rint((img - lo) / (hi - lo) * 60000).astype(np.uint16)  # a 16-bit detector frame
    det = ClassicalDetector()
    p = det.pixel_params(px_nm)
    tail = det._tail_params(px_nm)
    npx = float(size * size)
    rows: list[dict] = []

    def add(name, t, *, bytes_, flops, unit, n_units, model, kind="flops"):
        rows.append({"stage": name, "seconds": t, "bytes": float(bytes_), "flops": float(flops),
                     "unit": unit, "n_units": int(n_units), "model": model, "kind": kind})

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frame.tif"
        io.write_tiff(path, frame16, pixel_size_nm=px_nm)
        t, m = best(lambda: io.read(path), repeat)
        add("read/convert (uint16 TIFF → float32)", t, bytes_=6 * npx, flops=0, unit="px", n_units=npx,
            model="2 B read (page cache) + 4 B written per px; a widening, no flops", kind="bytes")
        raw = m.data

        def gauss_flops(sigma):
            r = int(4 * sigma + 0.5)
            return 2 * (1 + 3 * r)  # per px, both axes: x·w0, then (a + b)·w + acc per tap pair
        g_fl = gauss_flops(p["dog_sigma_px"]) + gauss_flops(p["surround_px"]) + 1
        t, dog = best(lambda: det.dog(raw, pixel_size_nm=px_nm), repeat)
        add("difference of Gaussians (σ 2 + 6 px, scipy-exact, float64 accumulate)", t,
            bytes_=44 * npx, flops=g_fl * npx, unit="px", n_units=npx,
            model=f"2 separable Gaussians: read 4 + write 4 B per pass (tmp does not fit in cache), "
                  f"subtract 12 B → 44 B/px; {g_fl} flops/px (3 per tap pair per axis)")
        cap = np.float32(np.percentile(np.abs(dog), 98))
        sq = np.minimum(dog * dog, cap * cap)
        plan = box_plan(p["noise_sigma_px"])
        box_fl = 3 + 2 * plan.passes * 9 + 1
        t, _ = best(lambda: box_gaussian_filter(sq, p["noise_sigma_px"], scale=float(cap * cap)), repeat)
        add(f"local-noise box cascade (σ {p['noise_sigma_px']:.0f} px, 3+3 extended boxes)", t,
            bytes_=40 * npx, flops=box_fl * npx, unit="px", n_units=npx,
            model="quantise 8 B, 3 vertical passes 8 B each (int32 in/out), horizontal passes in "
                  f"cache, dequantise 8 B → 40 B/px; {box_fl} flops/px (9 per pass per axis)")
        t_g, _ = best(lambda: preprocess.gaussian_filter(sq, p["noise_sigma_px"]), 1)
        r32 = int(4 * p["noise_sigma_px"] + 0.5)
        add(f"  (before: σ {p['noise_sigma_px']:.0f} px Gaussian, radius {r32})", t_g, bytes_=16 * npx,
            flops=gauss_flops(p["noise_sigma_px"]) * npx, unit="px", n_units=npx,
            model=f"16 B/px; {gauss_flops(p['noise_sigma_px'])} flops/px")
        var_stand_in = sq  # the box output's place in the chain (same size and dtype)

        def rest_of_noise_map():
            c = np.float32(np.percentile(np.abs(dog), 98))
            s2 = np.minimum(dog * dog, c * c)
            floor = (1e-3 * float(np.sqrt(np.mean(s2)))) ** 2
            return dog / np.sqrt(np.maximum(var_stand_in, floor))
        t, _ = best(rest_of_noise_map, repeat)
        add("rest of the noise map (98th percentile, clip, sqrt, divide)", t,
            bytes_=(8 + 8 + 8 + 12 + 8) * npx, flops=6 * npx, unit="px", n_units=npx,
            model="|d| + partition 8, d² clip 8, floor/sqrt 8, divide 12, RMS 8 → 44 B/px; ~6 flops/px")
        t, score = best(lambda: det.score_map(raw, pixel_size_nm=px_nm), repeat)
        add("score map total (DoG + noise map)", t, bytes_=(44 + 40 + 44) * npx,
            flops=(g_fl + box_fl + 6) * npx, unit="px", n_units=npx, model="the three rows above")
        t, cand = best(lambda: peaks.local_maxima(score, threshold=tail["threshold"], radius=1,
                                                  exclude_border=tail["exclude_border_px"]), repeat)
        add("local maxima (3×3, threshold)", t, bytes_=4 * npx, flops=2 * npx, unit="px", n_units=npx,
            model="read the score map once (4 B/px); ~2 compares/px (threshold first, 8 only above it)",
            kind="compares")
        nc = len(cand.xy)
        t, keep = best(lambda: peaks.nms(cand.xy, cand.values, radius=tail["min_distance_px"]), repeat)
        add("NMS (cell grid, greedy by score)", t, bytes_=64 * nc, flops=40 * nc, unit="candidate",
            n_units=nc, model="sort by score + grid: ~64 B and ~40 flops per candidate", kind="flops")
        xy0 = cand.xy[keep].astype(np.float64)
        na = len(xy0)
        com_r = max(2, int(round(tail["sigma_px"] * 1.5)))
        win = (2 * com_r + 1) ** 2
        t, xy_com = best(lambda: peaks.refine_com(raw, xy0, radius=com_r, iterations=2), repeat)
        add(f"centre of mass (r {com_r}, 2 iterations)", t, bytes_=2 * (2 * com_r + 1) * 64 * na,
            flops=2 * 4 * win * na, unit="atom", n_units=na,
            model=f"{2 * com_r + 1} cache lines per window row set, 2 iterations; 4 flops × {win} px × 2")
        fr = tail["fit_radius_px"]
        fwin = (2 * fr + 1) ** 2
        t, _ = best(lambda: peaks.refine_gaussian(raw, xy_com, radius=fr, sigma=tail["sigma_px"]), repeat)
        lm_iter = 8
        add(f"Gaussian fit (LM, {2 * fr + 1}×{2 * fr + 1} window)", t, bytes_=(2 * fr + 1) * 64 * na,
            flops=lm_iter * fwin * 60 * na, unit="atom", n_units=na,
            model=f"{2 * fr + 1} cache lines per atom; ≈{lm_iter} LM iterations × {fwin} px × ~60 flops "
                  "(model + exp + 5-parameter Jacobian + normal equations)")

        rng = np.random.default_rng(3)
        pts = rng.random((n_points, 2)) * np.sqrt(n_points)
        t, _ = best(lambda: nearest_neighbors(pts), repeat)
        add("nearest neighbours (cell grid)", t, bytes_=96 * n_points, flops=60 * n_points, unit="point",
            n_units=n_points, model="read 16 + bucket (two-level counting sort) 48 + results 16 + "
                                    "permute back 16 B; ~9 cells × ~2 points × 3 flops + sqrt")
        t, _ = best(lambda: clusters(pts, cutoff=0.78), repeat)
        add("clusters (cutoff 0.78, mean size 3; row bands + union-find)", t, bytes_=176 * n_points,
            flops=25 * n_points, unit="point", n_units=n_points,
            model="read xy 3× 48, records 24 W + 24 R, sorted 20 W + union-find 16, labels: owner 8 + "
                  "packed scatter 64 (one random line) → ~176 B/point (+ the random line); ~4.5 "
                  "candidate pairs × 4 flops + unions", kind="bytes")

        t, mres = best(lambda: support_mask(raw, pixel_size_nm=px_nm), repeat)
        add("support mask (2× binned, Gaussians σ 6/2/1.5 px on the binned frame)", t, bytes_=70 * npx,
            flops=80 * npx, unit="px", n_units=npx,
            model="bin 4 B/px + expand 1 B/px + ~30 passes × 8 B over the ¼-size binned frame; "
                  "~300 flops per binned px (Gaussian taps) → ~80 per full px")

        res = analyze(m, detector=det, support_mask=True)
        xy_px = res.detections.xy
        t, _ = best(lambda: dispersion(xy_px, image_shape=raw.shape, pixel_size_nm=px_nm,
                                       mask=res.support), repeat)
        n_at = len(xy_px)
        add("statistics (dispersion: NN, multimers, clusters, Clark–Evans with 199 simulations)", t,
            bytes_=200 * 200 * n_at, flops=200 * 80 * n_at, unit="atom", n_units=n_at,
            model="199 simulated patterns + the data: ~200 × (NN ~80 flops, ~200 B) per atom")
        outdir = Path(tmp) / "out"

        def write():
            return write_result(res, outdir, overlay=False)
        write()  # warm-up: imports
        t, _ = best(write, repeat)
        written = sum(f.stat().st_size for f in outdir.rglob("*") if f.is_file())
        add("writers (atoms.csv + summary.json, atomic)", t, bytes_=written, flops=0, unit="atom",
            n_units=n_at, model=f"{written / 1e3:.0f} kB written; text formatting, not bandwidth",
            kind="bytes")
    info = {"size": size, "points": n_points, "atoms": n_at, "candidates": nc,
            "pixel_size_nm": px_nm}
    return rows, info


def finish(rows: list[dict], machine: dict) -> None:
    bw = machine["cpp_triad_GBs"] * 1e9
    peak = machine["peak_GFLOPs_f64"] * 1e9
    for r in rows:
        t = r["seconds"]
        r["GBs"] = r["bytes"] / t / 1e9
        r["GFLOPs"] = r["flops"] / t / 1e9
        r["bw_fraction"] = r["bytes"] / t / bw
        r["flop_fraction"] = r["flops"] / t / peak
        t_mem, t_fl = r["bytes"] / bw, r["flops"] / peak
        r["bound"] = "memory" if t_mem >= t_fl else "compute"
        r["bound_over_t"] = max(t_mem, t_fl) / t
        r["per_unit_ns"] = t / max(r["n_units"], 1) * 1e9


def markdown(rows, machine, info) -> str:
    lines = [f"machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['threads']} OpenMP threads, "
             f"load average {machine['load_average']:.1f}",
             f"STREAM (C++, all threads): copy {machine['cpp_copy_GBs']:.1f} GB/s, triad "
             f"{machine['cpp_triad_GBs']:.1f} GB/s; numpy (1 thread): copy {machine['numpy_copy_GBs']:.1f}, "
             f"triad {machine['numpy_triad_GBs']:.1f} GB/s",
             f"peak FMA ({machine['peak_isa_f64']}): {machine['peak_GFLOPs_f64']:.1f} GFLOP/s float64, "
             f"{machine['peak_GFLOPs_f32']:.1f} GFLOP/s float32",
             f"frame {info['size']}², {info['candidates']} candidates, {info['atoms']} atoms; "
             f"{info['points']:.0e} points for NN/clusters", "",
             "| stage | time s | per unit | bytes/unit | flops/unit | GB/s | % BW | GFLOP/s | % peak | "
             "limit | bound/t |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        n = max(r["n_units"], 1)
        lines.append(f"| {r['stage']} | {r['seconds']:.4f} | {r['per_unit_ns']:.1f} ns/{r['unit']} | "
                     f"{r['bytes'] / n:.0f} | {r['flops'] / n:.0f} | {r['GBs']:.2f} | "
                     f"{100 * r['bw_fraction']:.0f} | {r['GFLOPs']:.2f} | {100 * r['flop_fraction']:.1f} | "
                     f"{r['bound']} | {r['bound_over_t']:.2f} |")
    lines += ["", "models:"] + [f"* {r['stage']}: {r['model']}" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    a = ap.parse_args(argv)
    from fastsac._backend import _core

    core = _core()
    if core is None or not hasattr(core, "peak_flops"):
        raise SystemExit("fastsac._core is not built (python setup.py build_ext --inplace)")
    machine = probe_machine(core, a.repeat)
    rows, info = run_stages(a.size, a.points, a.repeat)
    machine["load_average_end"] = os.getloadavg()[0]
    finish(rows, machine)
    md = markdown(rows, machine, info)
    print(md)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine, "info": info, "stages": rows}, indent=1))
    if a.md:
        Path(a.md).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
