"""Close pairs on simulated truth: how close can a dimer be and still be called a
dimer, and how often is a single atom split in two?

Frames of the simulator (``fastsac.synth``, ptnc-train-like support, noise,
scan jitter and drift) are rendered with a grid of *units* placed by hand:
single Pt atoms and Pt dimers at a chosen projected separation (random
orientation), units 1.5 nm apart, across dose. The default classical detector
runs with and without the close-pair stage (:mod:`fastsac.close_pairs`); each unit
is scored by the number of detections within ``sep/2 + 4 px`` of its centre:
a single atom is *split* when ≥ 2 detections remain, a dimer is *resolved*
when exactly 2 remain.

``--real`` also runs the 11 labelled ptnc-train frames: per image and pooled,
F1 and the multimer share (atoms with NN < 0.23 nm) for the three ways, against
the experts' (0.4 %), and the expected atom counts of the calibrated
probabilities. ``--prior-log-odds`` overrides the stage's prior
(the trade-off table in docs/confidence.md).

The stage runs three ways: off (raw detections), "merge" (the stage before
the split move: pairs merged only) and "on" (merge and split, the default);
tables compare merge → on. ``--split-prior-log-odds`` and ``--split-min-z``
override the split move's prior and elongation screen (trade-off table).

Usage:
    FASTSAC_SHARED=/work/shared PYTHONPATH=src python benchmarks/close_pairs.py \
        --real [--frames 2] [--json OUT] [--md OUT] [--split-prior-log-odds L] [--split-min-z Z]
        [--solver lm|scipy]
    PYTHONPATH=src python benchmarks/close_pairs.py --cost 2048    # the stage's time, both solvers
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from fastsac.detectors import ClassicalDetector
from fastsac.close_pairs import apply_pair_decisions, resolve_pairs, spot_elongation
from fastsac.synth import SimulationParams
from fastsac.synth.patterns import AtomSet
from fastsac.synth.render import Field, to_dtype

SEPARATIONS_NM = (0.08, 0.10, 0.12, 0.15, 0.18, 0.21, 0.25, 0.30)
DOSES = (1e4, 4e4, 1.6e5)
SOLVERS = ("lm", "scipy")  # the stage's fast solver (default) and its reference
STAGE_SOLVER = ["lm"]  # the solver of the tables (--solver)


def render_units(p: SimulationParams, units: list[tuple[float, float, float, float]],
                 seed: int):
    """Render a frame whose atoms are exactly ``units`` = (cx, cy, sep_px, angle):
    sep 0 is a single atom, otherwise a dimer. Returns (image float32, truth xy
    (image coordinates) per unit as a list of arrays)."""
    fld = Field(p.replace(loading_per_nm2=0.0, seed=seed))
    xy, unit = [], []
    for u, (cx, cy, sep, ang) in enumerate(units):
        if sep <= 0:
            xy.append((cx, cy))
            unit.append(u)
        else:
            dx, dy = 0.5 * sep * np.cos(ang), 0.5 * sep * np.sin(ang)
            xy += [(cx - dx, cy - dy), (cx + dx, cy + dy)]
            unit += [u, u]
    xy = np.asarray(xy, np.float64)
    n = len(xy)
    rng = np.random.default_rng([seed, 7])
    unit = np.asarray(unit, np.int64)
    sizes = np.bincount(unit)[unit]
    fld.atoms = AtomSet(xy, np.array(["Pt"] * n), unit, sizes, np.full(n, -1, np.int64))
    sigma0 = p.probe_fwhm_nm / p.pixel_size_nm / (2 * np.sqrt(2 * np.log(2)))
    fld.sigma_px = sigma0 * np.exp(p.atom_blur_cv * rng.standard_normal(n))
    inten = np.exp(p.atom_intensity_cv * rng.standard_normal(n) - 0.5 * p.atom_intensity_cv ** 2)
    fld.atom_electrons = p.dose * p.cross_section_A2 * inten
    fld.atom_peak = fld.atom_electrons / (2 * np.pi * fld.sigma_px ** 2)
    dx, dy = p.drift_px
    r_img = xy[:, 1] / (1.0 - dy / fld.height)
    fld.xy_image = np.column_stack([xy[:, 0] + dx * r_img / fld.height, r_img])
    img = to_dtype(fld.render(rng=np.random.default_rng([seed, 1])), p.dtype).astype(np.float32)
    return img, [fld.xy_image[unit == u] for u in range(len(units))]


def unit_grid(size: int, px: float, spacing_nm: float, sep_nm: float, rng):
    """Unit centres on a jittered grid; every other unit is a single atom."""
    step = spacing_nm / px
    c = np.arange(step / 2 + 8, size - 8, step)
    units = []
    for k, (y, x) in enumerate((y, x) for y in c for x in c):
        sep = sep_nm / px if k % 2 else 0.0
        units.append((x + rng.uniform(-2, 2), y + rng.uniform(-2, 2), sep,
                      rng.uniform(0, np.pi)))
    return units


def score_units(xy_det, units, truth):
    """Per unit: the number of detections within sep/2 + 4 px of its centre."""
    out = []
    for (cx, cy, sep, _), t in zip(units, truth):
        c = t.mean(axis=0)
        r = sep / 2 + 4.0
        out.append(int((np.hypot(*(xy_det - c).T) <= r).sum()) if len(xy_det) else 0)
    return np.asarray(out)


def stage_params(px, *, slope=None, prior_log_odds=None, split_prior_log_odds=None,
                 split_min_z=None):
    """The stage's keyword arguments at ``px`` with the overrides given: (merge
    only, i.e. the stage before the split move; merge and split)."""
    pair_kw = ClassicalDetector().pair_params(px) | {"solver": STAGE_SOLVER[0]}
    if slope is not None:
        pair_kw["slope"] = slope
    if prior_log_odds is not None:
        pair_kw["prior_log_odds"] = prior_log_odds
    if split_prior_log_odds is not None:
        pair_kw["split_prior_log_odds"] = split_prior_log_odds
    if split_min_z is not None:
        pair_kw["split_min_elongation_z"] = split_min_z
    return pair_kw | {"split_min_elongation_px": None}, pair_kw


def run(frames: int, size: int, doses, seps, *, slope=None, prior_log_odds=None,
        split_prior_log_odds=None, split_min_z=None):
    """Confusion counts per (dose, separation) without the stage ("off"), with
    merging only ("merge": the stage before the split move) and with merging and
    splitting ("on"), the examined pairs (dose, separation, ΔBIC, truth: 1 =
    dimer) and the split move's tests (dose, separation, elongation, ΔBIC,
    p_two, split, truth)."""
    p0 = SimulationParams(size=size, vacuum="none")
    px = p0.pixel_size_nm
    det = ClassicalDetector(resolve_pairs=False)
    merge_kw, pair_kw = stage_params(px, slope=slope, prior_log_odds=prior_log_odds,
                                     split_prior_log_odds=split_prior_log_odds,
                                     split_min_z=split_min_z)
    rows, calib, split_calib = [], [], []
    stage_seconds = {"merge": 0.0, "on": 0.0}
    for dose in doses:
        for sep in seps:
            counts = {k: {"single": [], "dimer": []} for k in ("off", "merge", "on")}
            for f in range(frames):
                seed = int(1000 * f + 10 * seps.index(sep) + 100000 * doses.index(dose))
                rng = np.random.default_rng(seed)
                units = unit_grid(size, px, 1.5, sep, rng)
                img, truth = render_units(p0.replace(dose=dose), units, seed)
                kind = np.array(["dimer" if u[2] > 0 else "single" for u in units])
                off = det.detect(img, pixel_size_nm=px)
                t0 = time.perf_counter()
                merge = apply_pair_decisions(off, resolve_pairs(img, off.xy, score=off.score,
                                                                **merge_kw))
                t1 = time.perf_counter()
                dec = resolve_pairs(img, off.xy, score=off.score, **pair_kw)
                on = apply_pair_decisions(off, dec)
                stage_seconds["merge"] += t1 - t0
                stage_seconds["on"] += time.perf_counter() - t1
                for key, d in (("off", off), ("merge", merge), ("on", on)):
                    n = score_units(d.xy, units, truth)
                    counts[key]["single"] += list(n[kind == "single"])
                    counts[key]["dimer"] += list(n[kind == "dimer"])
                centres = np.array([t.mean(axis=0) for t in truth])
                for (i, j), dbic in zip(dec.pairs, dec.delta_bic):
                    mid = 0.5 * (off.xy[i] + off.xy[j])
                    u = int(np.argmin(np.hypot(*(centres - mid).T)))
                    calib.append((dose, sep, float(dbic), int(kind[u] == "dimer")))
                st = dec.split_tests
                for i, el, dbic, pt, do in zip(st["i"], st["elongation_px"], st["delta_bic"],
                                               st["p_two"], st["split"]):
                    u = int(np.argmin(np.hypot(*(centres - off.xy[i]).T)))
                    split_calib.append((dose, sep, float(el), float(dbic), float(pt), bool(do),
                                        int(kind[u] == "dimer")))
            row = {"dose": dose, "separation_nm": sep}
            for key in ("off", "merge", "on"):
                s = np.asarray(counts[key]["single"])
                dm = np.asarray(counts[key]["dimer"])
                row[key] = {"singles": len(s), "single_missed": float(np.mean(s == 0)),
                            "single_split": float(np.mean(s >= 2)),
                            "dimers": len(dm), "dimer_resolved": float(np.mean(dm == 2)),
                            "dimer_as_one": float(np.mean(dm == 1)),
                            "dimer_missed": float(np.mean(dm == 0))}
            rows.append(row)
            print(f"dose {dose:8.0f} sep {sep:.2f} nm | " + " | ".join(
                f"{k}: split {row[k]['single_split']:.2f} resolved {row[k]['dimer_resolved']:.2f}"
                f" as-one {row[k]['dimer_as_one']:.2f}" for k in ("off", "merge", "on")),
                flush=True)
    return rows, calib, split_calib, stage_seconds


def real_frames(shared: str, prior_log_odds=None, split_prior_log_odds=None, split_min_z=None):
    """ptnc-train: per image, detections with the stage off and on, against the
    expert labels (6 px): counts, F1, multimer share (NN < 0.23 nm) and the
    expected atom counts of the calibrated probabilities."""
    from fastsac import read, read_points
    from fastsac.confidence import atom_probability, expected_count
    from fastsac.evaluate import match_points, pool
    from scipy.spatial import cKDTree

    root = Path(shared) / "data" / "ptnc-train"
    det = ClassicalDetector(resolve_pairs=False)

    def multimer(xy, px):
        if len(xy) < 2:
            return 0
        d, _ = cKDTree(xy).query(xy, k=2)
        return int((d[:, 1] * px < 0.23).sum())

    per, pooled = {}, {"off": [], "merge": [], "on": []}
    tot = {"labels": 0, "labels_multimer": 0, "off": [0, 0], "merge": [0, 0], "on": [0, 0]}
    for path in sorted((root / "images").glob("*.tif")):
        m = read(path)
        px = m.pixel_size_nm
        lab = read_points(root / "labels" / f"{path.stem}.csv")
        t_det = time.perf_counter()
        off = det.detect(m)
        t_det = time.perf_counter() - t_det
        merge_kw, kw = stage_params(px, prior_log_odds=prior_log_odds,
                                    split_prior_log_odds=split_prior_log_odds,
                                    split_min_z=split_min_z)
        t0 = time.perf_counter()
        merge = apply_pair_decisions(off, resolve_pairs(m.data, off.xy, score=off.score,
                                                        **merge_kw))
        t1 = time.perf_counter()
        dec = resolve_pairs(m.data, off.xy, score=off.score, **kw)
        on = apply_pair_decisions(off, dec)
        row = {"labels": len(lab), "labels_multimer": multimer(lab, px),
               "merge_seconds": t1 - t0, "pairs_seconds": time.perf_counter() - t1,
               "detect_seconds": t_det}
        for key, d in (("off", off), ("merge", merge), ("on", on)):
            r = match_points(d.xy, lab)
            pooled[key].append(r)
            mm = multimer(d.xy, px)
            row[key] = {"detected": len(d), "tp": r.tp, "f1": r.f1, "multimer_atoms": mm}
            tot[key][0] += len(d)
            tot[key][1] += mm
        pr = atom_probability(on, pixel_size_nm=px)
        row["expected_real"] = expected_count(pr.probability)
        row["expected_marked"] = expected_count(pr.probability_expert)
        row["pairs_examined"] = int(len(dec.pairs))
        row["pairs_merged"] = int(dec.merged.sum())
        row["split_tested"] = len(dec.split_tests["i"])
        row["split"] = int(dec.split_tests["split"].sum())
        row["split_p_two"] = [float(x) for x in dec.split_tests["p_two"]]
        tot["labels"] += len(lab)
        tot["labels_multimer"] += row["labels_multimer"]
        per[path.stem] = row
    summary = {"labels_multimer_share": tot["labels_multimer"] / tot["labels"],
               "pairs_seconds_total": sum(r["pairs_seconds"] for r in per.values()),
               "merge_seconds_total": sum(r["merge_seconds"] for r in per.values()),
               "split_tested_total": sum(r["split_tested"] for r in per.values()),
               "split_total": sum(r["split"] for r in per.values()),
               "pairs_examined_total": sum(r["pairs_examined"] for r in per.values()),
               "detect_seconds_total": sum(r["detect_seconds"] for r in per.values())}
    for key in ("off", "merge", "on"):
        summary[key] = pool(pooled[key]) | {"detected": tot[key][0],
                                            "multimer_share": tot[key][1] / tot[key][0]}
    return per, summary


def print_real(per, summary):
    print("image | labels | detected off/merge/on | tp off/merge/on | F1 off/merge/on | multimer "
          "atoms experts/off/merge/on | split tested/split | expected real (probability) [95%]")
    for s, r in per.items():
        e = r["expected_real"]
        print(f"{s} | {r['labels']} | " + " | ".join(
            "/".join(f"{r[k][c]:.3f}" if c == "f1" else str(r[k][c]) for k in ("off", "merge", "on"))
            for c in ("detected", "tp", "f1")) +
            f" | {r['labels_multimer']}/{r['off']['multimer_atoms']}/{r['merge']['multimer_atoms']}/"
            f"{r['on']['multimer_atoms']} | {r['split_tested']}/{r['split']} | "
            f"{e['expected']:.1f} {e['interval']}")
    o, m, n = summary["off"], summary["merge"], summary["on"]
    print(f"pooled: F1 off {o['f1']:.3f} merge {m['f1']:.3f} on {n['f1']:.3f}; multimer share "
          f"experts {summary['labels_multimer_share']:.2%}, off {o['multimer_share']:.2%}, merge "
          f"{m['multimer_share']:.2%}, on {n['multimer_share']:.2%}; split {summary['split_total']}"
          f" of {summary['split_tested_total']} tested; stage {summary['pairs_seconds_total']:.2f} s"
          f" (merge only {summary['merge_seconds_total']:.2f} s) on {len(per)} frames (detection "
          f"without it {summary['detect_seconds_total']:.2f} s)")


def markdown(rows, doses, seps) -> str:
    """Before (merge only) → after (merge and split): singles split, dimers
    resolved; then dimers called one atom, after."""
    lines = ["| dose (e/Å²) | singles split | singles missed | " +
             " | ".join(f"dimer {s:.2f} nm resolved" for s in seps) + " |",
             "|---|---|---|" + "---|" * len(seps)]
    for dose in doses:
        rr = [r for r in rows if r["dose"] == dose]
        so = np.mean([r["merge"]["single_split"] for r in rr])
        sn = np.mean([r["on"]["single_split"] for r in rr])
        miss = np.mean([r["on"]["single_missed"] for r in rr])
        cells = [f"{so:.1%} → {sn:.1%}", f"{miss:.0%}"]
        for s in seps:
            r = next(r for r in rr if r["separation_nm"] == s)
            cells.append(f"{r['merge']['dimer_resolved']:.0%} → {r['on']['dimer_resolved']:.0%}")
        lines.append(f"| {dose:.2g} | " + " | ".join(cells) + " |")
    lines += ["", "| dose (e/Å²) | " + " | ".join(f"{s:.2f} nm" for s in seps) + " |",
              "|---|" + "---|" * len(seps)]
    for dose in doses:
        rr = [r for r in rows if r["dose"] == dose]
        lines.append(f"| {dose:.2g} | " + " | ".join(
            f"{next(r for r in rr if r['separation_nm'] == s)['on']['dimer_as_one']:.0%}"
            for s in seps) + " |")
    return "\n".join(lines) + "\n"


def stage_cost(size: int, repeat: int = 5) -> dict:
    """Seconds of the close-pair stage on the live benchmark's simulated frame
    (``benchmarks/bench_live.py``'s ``make_frame``, 0.0293 nm/px) after the
    detector: merge only and merge + split, each with the fast solver (``lm``,
    the default) and the reference (``scipy``) back to back, best and median of
    ``repeat``; and whether both solvers give the same decisions."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_live import make_frame

    frame = make_frame(size)
    off = ClassicalDetector(resolve_pairs=False).detect(frame, pixel_size_nm=0.0293)
    merge_kw, kw = stage_params(0.0293)
    times: dict = {f"{name} {sv}": [] for name in ("merge", "merge+split") for sv in SOLVERS}
    decs = {}
    for _ in range(repeat):
        for name, k in (("merge", merge_kw), ("merge+split", kw)):
            for sv in SOLVERS:
                t0 = time.perf_counter()
                decs[sv] = resolve_pairs(frame, off.xy, score=off.score, **(k | {"solver": sv}))
                times[f"{name} {sv}"].append(time.perf_counter() - t0)
    # the split move's shape test alone (the same call as in the stage, on all detections)
    shape = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        spot_elongation(frame, off.xy, atom_sigma_px=kw["atom_sigma_px"], exclude=off.xy)
        shape.append(time.perf_counter() - t0)
    times["shape test"] = shape
    dec, ref = decs["lm"], decs["scipy"]
    same = bool(np.array_equal(dec.keep, ref.keep) and np.array_equal(dec.merged, ref.merged)
                and np.array_equal(dec.split_tests["split"], ref.split_tests["split"]))
    out = {"size": size, "detections": len(off.xy), "fitted": len(dec.split_tests["i"]),
           "split": int(dec.split_tests["split"].sum()), "pairs": len(dec.pairs),
           "same_decisions": same,
           "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None}
    for name, t in times.items():
        out[name] = {"best_s": min(t), "median_s": float(np.median(t))}
    print(f"{size}²: {out['detections']} detections, {out['pairs']} pairs examined, "
          f"{out['fitted']} spots fitted, {out['split']} split; same decisions with both "
          f"solvers: {same} (best of {repeat}; load {out['load_average']})")
    for name in ("merge", "merge+split"):
        print(f"  stage {name:11s}: lm {out[name + ' lm']['best_s']:.3f} s, scipy "
              f"{out[name + ' scipy']['best_s']:.3f} s")
    print(f"  of which the split move's shape test (spot_elongation): "
          f"{out['shape test']['best_s']:.3f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    ap.add_argument("--doses", type=float, nargs="*", default=list(DOSES))
    ap.add_argument("--seps", type=float, nargs="*", default=list(SEPARATIONS_NM))
    ap.add_argument("--slope", type=float, default=None)
    ap.add_argument("--prior-log-odds", type=float, default=None)
    ap.add_argument("--split-prior-log-odds", type=float, default=None,
                    help="override the split move's prior log-odds (trade-off table)")
    ap.add_argument("--split-min-z", type=float, default=None,
                    help="override the split move's elongation screen (standard errors)")
    ap.add_argument("--solver", choices=SOLVERS, default="lm",
                    help="the stage's least-squares solver (scipy: the reference)")
    ap.add_argument("--real", action="store_true", help="also run on ptnc-train (labels)")
    ap.add_argument("--shared", default=os.environ.get("FASTSAC_SHARED", "/work/shared"))
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--cost", type=int, default=None, metavar="SIZE",
                    help="only time the stage (merge vs merge + split) on the live benchmark's "
                         "SIZE² frame")
    args = ap.parse_args()
    STAGE_SOLVER[0] = args.solver
    if args.cost:
        res = stage_cost(args.cost)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return
    t0 = time.perf_counter()
    out = {"frames": args.frames, "size": args.size}
    if args.real:
        per, summ = real_frames(args.shared, args.prior_log_odds, args.split_prior_log_odds,
                                args.split_min_z)
        print_real(per, summ)
        out["real"] = {"per_image": per, "pooled": summ}
    if args.skip_sim:
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        return
    rows, calib, split_calib, stage_seconds = run(
        args.frames, args.size, list(args.doses), list(args.seps), slope=args.slope,
        prior_log_odds=args.prior_log_odds, split_prior_log_odds=args.split_prior_log_odds,
        split_min_z=args.split_min_z)
    md = markdown(rows, list(args.doses), list(args.seps))
    print(md)
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        out |= {"rows": rows, "pairs": calib, "split_tests": split_calib,
                "stage_seconds": stage_seconds}
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.md:
        Path(args.md).write_text(md)


if __name__ == "__main__":
    main()
