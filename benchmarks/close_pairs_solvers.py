"""The close-pair stage's two solvers side by side: the fast batched
Levenberg–Marquardt (``solver="lm"``, the default) against the reference
``scipy.optimize.least_squares`` (``solver="scipy"``), on the candidates of
the simulated benchmark frames (``benchmarks/close_pairs.py``: single atoms and
dimers at 0.08–0.30 nm across dose) and of the 11 labelled ptnc-train frames.

Candidates are taken from the raw detections (the stage off): every pair closer
than ``max_separation_px`` (:func:`fastsac.close_pairs.decide_pair`) and every
spot that passes the split move's elongation screen
(:func:`fastsac.close_pairs.decide_split`). Each is decided by both solvers;
the script reports how often the decisions (merge: ``p_two < 0.5``; split:
``p_two ≥ 0.5``) agree, the largest |ΔBIC| difference, and how often the fast
fit's RMS residual (one-atom fit for pairs, two-atom fit for spots) exceeds the
reference RSS·(1 + 1e-6). Then the whole stage
(:func:`fastsac.close_pairs.resolve_pairs`) runs with both solvers on each frame:
frames whose output tables differ are counted.

Usage:
    FASTSAC_SHARED=/work/shared PYTHONPATH=src python benchmarks/close_pairs_solvers.py \
        [--frames 1] [--size 384] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from close_pairs import DOSES, SEPARATIONS_NM, render_units, stage_params, unit_grid
from scipy.spatial import cKDTree

from fastsac.close_pairs import (
    decide_pair,
    decide_split,
    resolve_pairs,
    spot_elongation,
)
from fastsac.detectors import ClassicalDetector
from fastsac.synth import SimulationParams

SOLVERS = ("scipy", "lm")


def candidates(img, xy, score, kw):
    """Decisions of both solvers on the frame's pair and split candidates:
    a list of dicts (kind, decision per solver, ΔBIC per solver, RMS per solver)."""
    sigma, rows = kw["atom_sigma_px"], []
    common = {"atom_sigma_px": sigma, "slope": kw["slope"], "prior_log_odds": kw["prior_log_odds"],
              "bond_px": kw["bond_px"]}
    paired = set()
    for i, j in cKDTree(xy).query_pairs(kw["max_separation_px"]) if len(xy) > 1 else ():
        paired |= {i, j}
        s, w = (i, j) if score[i] >= score[j] else (j, i)
        res = {sv: decide_pair(img, xy[s], xy[w], w1=max(score[s], 1e-6), w2=max(score[w], 1e-6),
                               solver=sv, **common) for sv in SOLVERS}
        rows.append({"kind": "pair", **{f"merge_{sv}": bool(res[sv][1] < 0.5) for sv in SOLVERS},
                     **{f"dbic_{sv}": float(res[sv][0]) for sv in SOLVERS},
                     **{f"rms_{sv}": float(res[sv][2][5]) for sv in SOLVERS}})
    single = np.array([k for k in range(len(xy)) if k not in paired], np.int64)
    if len(single):
        el, z = spot_elongation(img, xy[single], atom_sigma_px=sigma, exclude=xy)
        fit = single[(el >= kw["split_min_elongation_px"]) & (z >= kw["split_min_elongation_z"])]
        for i in fit:
            others = np.delete(xy, i, axis=0)
            res = {sv: decide_split(img, xy[i], exclude=others, solver=sv,
                                    **(common | {"prior_log_odds": kw["prior_log_odds"]
                                                + kw["split_prior_log_odds"]}))
                   for sv in SOLVERS}
            rows.append({"kind": "split", **{f"split_{sv}": bool(res[sv][1] >= 0.5)
                                             for sv in SOLVERS},
                         **{f"dbic_{sv}": float(res[sv][0]) for sv in SOLVERS},
                         **{f"rms_{sv}": float(res[sv][2][8]) for sv in SOLVERS}})
    return rows


def same_stage(img, off, kw):
    """Whether the whole stage gives the same table with both solvers, and its
    seconds per solver."""
    out, secs = {}, {}
    for sv in SOLVERS:
        t0 = time.perf_counter()
        out[sv] = resolve_pairs(img, off.xy, score=off.score, **(kw | {"solver": sv}))
        secs[sv] = time.perf_counter() - t0
    a, b = out["scipy"], out["lm"]
    same = (np.array_equal(a.keep, b.keep) and np.array_equal(a.merged, b.merged)
            and np.array_equal(a.split_tests["split"], b.split_tests["split"])
            and np.allclose(a.xy, b.xy, atol=1e-3, equal_nan=True))
    return same, secs


def frames(shared: str, n_sim: int, size: int):
    """(name, image, pixel size nm) of the simulated benchmark frames and ptnc-train."""
    p0 = SimulationParams(size=size, vacuum="none")
    for dose in DOSES:
        for sep in SEPARATIONS_NM:
            for f in range(n_sim):
                seed = int(1000 * f + 10 * SEPARATIONS_NM.index(sep) + 100000 * DOSES.index(dose))
                units = unit_grid(size, p0.pixel_size_nm, 1.5, sep, np.random.default_rng(seed))
                img, _ = render_units(p0.replace(dose=dose), units, seed)
                yield f"sim dose {dose:g} sep {sep}", "simulated", img, p0.pixel_size_nm
    from fastsac import read

    for path in sorted((Path(shared) / "data" / "ptnc-train" / "images").glob("*.tif")):
        m = read(path)
        yield path.stem, "ptnc-train", np.asarray(m.data, np.float32), m.pixel_size_nm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1, help="simulated frames per (dose, separation)")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--shared", default=os.environ.get("FASTSAC_SHARED", "/work/shared"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    det = ClassicalDetector(resolve_pairs=False)
    rows, stage = [], []
    for name, group, img, px in frames(args.shared, args.frames, args.size):
        off = det.detect(img, pixel_size_nm=px)
        kw = stage_params(px)[1]
        for r in candidates(img, off.xy, off.score, kw):
            rows.append(r | {"set": group})
        same, secs = same_stage(img, off, kw)
        stage.append({"frame": name, "set": group, "same": same, "seconds": secs})
    out = {}
    for group in ("simulated", "ptnc-train"):
        rr = [r for r in rows if r["set"] == group]
        st = [s for s in stage if s["set"] == group]
        res = {"frames": len(st), "frames_same_stage_output": sum(s["same"] for s in st),
               "stage_seconds": {sv: sum(s["seconds"][sv] for s in st) for sv in SOLVERS}}
        for kind, key in (("pair", "merge"), ("split", "split")):
            k = [r for r in rr if r["kind"] == kind]
            agree = sum(r[f"{key}_scipy"] == r[f"{key}_lm"] for r in k)
            finite = [r for r in k if math.isfinite(r["rms_scipy"]) and math.isfinite(r["rms_lm"])]
            worse = sum(r["rms_lm"] ** 2 > r["rms_scipy"] ** 2 * (1 + 1e-6) for r in finite)
            ddb = [abs(r["dbic_scipy"] - r["dbic_lm"]) for r in finite]
            res[kind] = {"candidates": len(k), "agree": agree, "rss_worse_1e-6": worse,
                         "max_abs_delta_bic_diff": max(ddb, default=0.0)}
        out[group] = res
        print(f"{group}: {res['frames']} frames, stage output identical on "
              f"{res['frames_same_stage_output']}; stage seconds scipy "
              f"{res['stage_seconds']['scipy']:.2f} lm {res['stage_seconds']['lm']:.2f}")
        for kind in ("pair", "split"):
            c = res[kind]
            print(f"  {kind}: {c['agree']}/{c['candidates']} decisions agree, fast RSS worse than "
                  f"reference·(1+1e-6) on {c['rss_worse_1e-6']}, max |ΔBIC diff| "
                  f"{c['max_abs_delta_bic_diff']:.2g}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
