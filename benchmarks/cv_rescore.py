"""Leave-images-out cross-validation of the two-stage re-scorer vs classical and SAC-CNN.

Protocol (honest: nothing from a held-out image is used to fit, select or threshold):

* split: leave-one-image-out over the 11 ptnc-train images (``--split loo``, default) or
  the 4 folds of ``cv_detector.py`` (``--split 4fold``: sorted stems ``[k::4]``);
* re-scorer (``fastsac.detectors.rescore``): logistic regression fitted on the training images'
  candidates; probability threshold chosen on *out-of-fold* predictions of the training
  images (5 groups), then applied to the held-out image(s);
* classical (``ClassicalDetector(background_nm=None)``): SNR threshold chosen on the
  training images (max pooled F1, grid 2.5–6.0 step 0.1);
* published SAC-CNN: its threshold 0.89, and the threshold chosen on the training images
  the same way (its weights may have seen these images: optimistic).

Everything is scored with Hungarian matching at 6 px and pooled over held-out images.
Per-image candidate features and SAC-CNN maps are computed once (~3 s per image).

Usage::

    FASTSAC_SHARED=/work/shared PYTHONPATH=src python benchmarks/cv_rescore.py --out docs/cv_rescore.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastsac import io
from fastsac.evaluate import match_points, pool
from fastsac.detectors.rescore import RescoreModel, candidate_features
from fastsac.training import train_rescore

log = logging.getLogger("cv_rescore")
CLASSICAL_GRID = np.round(np.arange(2.5, 6.001, 0.1), 2)
SAC_GRID = np.round(np.concatenate([np.arange(0.3, 0.9, 0.02), np.arange(0.9, 0.999, 0.005)]), 3)


def _best(grid, f1s):
    f1s = np.round(np.asarray(f1s), 12)
    return int(np.argmax(f1s))


def _f1(rows):
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def bootstrap(per_image, stems, n=2000, seed=0):
    """Paired bootstrap over held-out images of pooled F1(rescore) − F1(classical)."""
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n):
        pick = rng.choice(stems, len(stems))
        d.append(_f1([per_image[s]["rescore"] for s in pick]) - _f1([per_image[s]["classical"] for s in pick]))
    d = np.asarray(d)
    return {"mean": float(d.mean()), "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
            "p_positive": float((d > 0).mean()), "resamples": n}


def agreement(tables, truths, stems, thr=3.9):
    """Where the expert labels and the matched-filter evidence disagree."""
    from fastsac.training import rescore_targets
    bins = [2.5, 3.0, 3.5, 3.9, 4.5, 5.0, 6.0, 8.0, 1e9]
    sc = np.concatenate([tables[s][0].score for s in stems])
    y = np.concatenate([rescore_targets(tables[s][0], truths[s], 6.0) for s in stems])
    rate = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (sc > lo) & (sc <= hi)
        rate.append({"bin": [lo, hi if hi < 1e9 else "inf"], "n": int(m.sum()),
                     "rate": float(y[m].mean()) if m.any() else float("nan")})
    fp_s, fn_s = [], []
    for s in stems:
        tab = tables[s][0]
        k = tab.score > thr
        r = match_points(tab.xy[k], truths[s], tolerance_px=6)
        fp = np.ones(k.sum(), bool)
        fp[r.pairs[:, 0]] = False
        fp_s += list(tab.score[k][fp])
        fn = np.ones(len(truths[s]), bool)
        fn[r.pairs[:, 1]] = False
        for q in truths[s][fn]:
            d = np.hypot(*(tab.xy - q).T)
            fn_s.append(float(tab.score[d <= 6].max()) if (d <= 6).any() else 0.0)
    # Per-feature AUC (labelled vs unlabelled) among the ambiguous candidates.
    from scipy.stats import mannwhitneyu

    from fastsac.detectors.rescore import FEATURES
    X = np.concatenate([tables[s][0].features for s in stems])
    band = (sc > 3.3) & (sc < 4.6)
    auc = {}
    for j, name in enumerate(FEATURES):
        a, yy = X[band, j], y[band]
        u = mannwhitneyu(a[yy == 1], a[yy == 0]).statistic
        auc[name] = round(float(u / ((yy == 1).sum() * (yy == 0).sum())), 3)
    fb = [thr, 4.5, 5.0, 6.0, 1e9]
    nb = [0.0, 2.5, 3.0, 3.5, thr, 1e9]
    return {"label_rate_by_score": rate,
            "fp_by_score": {f"{a}-{b if b < 1e9 else 'inf'}": int(c) for a, b, c in
                            zip(fb[:-1], fb[1:], np.histogram(fp_s, fb)[0])},
            "fn_by_best_nearby_score": {f"{a}-{b if b < 1e9 else 'inf'}": int(c) for a, b, c in
                                        zip(nb[:-1], nb[1:], np.histogram(fn_s, nb)[0])},
            "auc_in_band_3.3_4.6": {"n": int(band.sum()), "labelled": int(y[band].sum()), "auc": auc},
            "note": "auc: 0.5 = no information, < 0.5 = lower values more often labelled; "
                    "fn_by_best_nearby_score 0.0-2.5: no stage-1 candidate within 6 px of the label"}


def learning_curve(tables, cl, truths, stems, args, sizes=(3, 5, 7, 10), draws=5, seed=0):
    """LOO pooled F1 when only n of the other images train (random draws): is more data the limit?"""
    rng = np.random.default_rng(seed)
    out = {}
    for n in sizes:
        f_r, f_c = [], []
        for _ in range(draws if n < len(stems) - 1 else 1):
            held_r, held_c = [], []
            for s in stems:
                others = [t for t in stems if t != s]
                train = sorted(rng.choice(others, n, replace=False)) if n < len(others) else others
                model = train_rescore(None, stems=train, tables=tables, l2=args.l2,
                                      candidate_threshold=args.candidate_threshold,
                                      inner_folds=min(5, n))
                tab = tables[s][0]
                p = model.probability(tab.features)
                held_r.append(match_points(tab.xy[p >= model.threshold], truths[s], tolerance_px=6))
                kc = _best(CLASSICAL_GRID, [pool([cl[t][i] for t in train])["f1"]
                                            for i in range(len(CLASSICAL_GRID))])
                held_c.append(cl[s][kc])
            f_r.append(pool(held_r)["f1"])
            f_c.append(pool(held_c)["f1"])
        out[str(n)] = {"rescore": float(np.mean(f_r)), "classical": float(np.mean(f_c)), "draws": len(f_r)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("FASTSAC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--data", type=Path, default=shared / "data" / "ptnc-train")
    ap.add_argument("--sac-cnn", type=Path, default=shared / "models" / "sac_cnn_ptnc.ckpt")
    ap.add_argument("--split", choices=("loo", "4fold", "both"), default="both")
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--candidate-threshold", type=float, default=2.5)
    ap.add_argument("--out", type=Path, default=Path("cv_rescore.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    stems = sorted(p.stem for p in (args.data / "labels").glob("*.csv"))
    t0 = time.perf_counter()
    tables, raw = {}, {}
    for s in stems:
        mic = io.read(args.data / "images" / f"{s}.tif")
        raw[s] = mic.data
        tables[s] = (candidate_features(mic.data, pixel_size_nm=mic.pixel_size_nm,
                                        candidate_threshold=args.candidate_threshold),
                     io.read_points(args.data / "labels" / f"{s}.csv"))
    log.info("features of %d images in %.1f s", len(stems), time.perf_counter() - t0)
    truths = {s: tables[s][1] for s in stems}
    # Classical = stage-1 candidates above an SNR threshold (same positions).
    cl = {s: [match_points(tables[s][0].xy[tables[s][0].score > t], truths[s], tolerance_px=6)
              for t in CLASSICAL_GRID] for s in stems}
    sac = None
    if args.sac_cnn.is_file():
        from fastsac.detectors.learned import load_detector
        det = load_detector(args.sac_cnn)
        maps = {s: det.score_map(raw[s]) for s in stems}
        sac = {s: [match_points(det.components(maps[s], float(t))[0], truths[s], tolerance_px=6)
                   for t in SAC_GRID] for s in stems}
        k089 = int(np.argmin(np.abs(SAC_GRID - 0.89)))
    splits = {"loo": [[s] for s in stems], "4fold": [stems[i::4] for i in range(4)]}
    report = {"protocol": __doc__.split("Usage")[0].strip(), "l2": args.l2,
              "candidate_threshold": args.candidate_threshold, "splits": {}}
    for name in (("loo", "4fold") if args.split == "both" else (args.split,)):
        per, held = {}, {"rescore": [], "classical": [], "sac_cnn_train_threshold": [], "sac_cnn_0.89": []}
        folds = []
        for test in splits[name]:
            train = [s for s in stems if s not in test]
            model = train_rescore(None, stems=train, tables=tables, l2=args.l2,
                                  candidate_threshold=args.candidate_threshold)
            kc = _best(CLASSICAL_GRID, [pool([cl[s][i] for s in train])["f1"] for i in range(len(CLASSICAL_GRID))])
            fold = {"test": test, "rescore_threshold": model.threshold,
                    "rescore_oof_f1": model.meta["out_of_fold_f1"],
                    "classical_threshold": float(CLASSICAL_GRID[kc])}
            if sac:
                ks = _best(SAC_GRID, [pool([sac[s][i] for s in train])["f1"] for i in range(len(SAC_GRID))])
                fold["sac_cnn_threshold"] = float(SAC_GRID[ks])
            folds.append(fold)
            for s in test:
                tab = tables[s][0]
                p = model.probability(tab.features)
                r = {"rescore": match_points(tab.xy[p >= model.threshold], truths[s], tolerance_px=6),
                     "classical": cl[s][kc]}
                if sac:
                    r["sac_cnn_train_threshold"] = sac[s][ks]
                    r["sac_cnn_0.89"] = sac[s][k089]
                for k, v in r.items():
                    held[k].append(v)
                per[s] = {k: {"tp": v.tp, "fp": v.fp, "fn": v.fn, "f1": round(v.f1, 4)} for k, v in r.items()}
        pooled = {k: pool(v) for k, v in held.items() if v}
        report["splits"][name] = {"pooled": pooled, "per_image": per, "folds": folds}
        print(f"\n== {name} (pooled over held-out images, 6 px) ==")
        for k, v in pooled.items():
            print(f"{k:>24}: P {v['precision']:.3f} R {v['recall']:.3f} F1 {v['f1']:.3f} "
                  f"(tp {v['tp']} fp {v['fp']} fn {v['fn']})")
        print("image  " + "  ".join(f"{k:>22}" for k in pooled))
        for s, d in per.items():
            print(f"{s:>5}  " + "  ".join(f"{d[k]['tp']:3d}/{d[k]['fp']:3d}/{d[k]['fn']:3d} F1 {d[k]['f1']:.3f}"
                                          for k in pooled))
    if "loo" in report["splits"]:
        report["paired_bootstrap_loo"] = bootstrap(report["splits"]["loo"]["per_image"], stems)
        b = report["paired_bootstrap_loo"]
        print(f"\npaired bootstrap over images (LOO), F1 rescore − classical: {b['mean']:+.3f} "
              f"[95 % {b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}], P(>0) = {b['p_positive']:.2f}")
        report["learning_curve_loo"] = learning_curve(tables, cl, truths, stems, args)
        for n, v in report["learning_curve_loo"].items():
            print(f"train on {n:>2} images: rescore F1 {v['rescore']:.3f}  classical F1 {v['classical']:.3f}")
    report["agreement"] = agreement(tables, truths, stems)
    print("\nP(labelled | classical SNR) of stage-1 candidates:")
    for row in report["agreement"]["label_rate_by_score"]:
        print(f"  SNR {row['bin'][0]:>4}–{row['bin'][1]:<5} n {row['n']:>4}  labelled {row['rate']:.2f}")
    print("AUC in SNR band 3.3–4.6:", report["agreement"]["auc_in_band_3.3_4.6"])
    print("classical @3.9: FP by SNR", report["agreement"]["fp_by_score"],
          "; FN by best candidate SNR within 6 px", report["agreement"]["fn_by_best_nearby_score"])
    full = train_rescore(None, stems=stems, tables=tables, l2=args.l2, candidate_threshold=args.candidate_threshold)
    report["all_images_model"] = full.to_dict()
    report["in_sample_all_images"] = pool([match_points(tables[s][0].xy[full.probability(tables[s][0].features)
                                                                        >= full.threshold], truths[s], tolerance_px=6)
                                           for s in stems])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    io.write_json(args.out, report)
    log.info("wrote %s (%.0f s)", args.out, report["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
