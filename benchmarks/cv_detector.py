"""Leave-images-out cross-validation of fastsac's heatmap detector vs the published SAC-CNN.

Protocol (the honest number for the model card): the 11 real ptnc-train
images are split into 4 folds (sorted stems, fold k = stems[k::4], i.e.
3/3/3/2 images held out). For each fold the heatmap U-Net is trained from
scratch on the other images only and its threshold is chosen on those
training images (max pooled F1 at 6 px); the held-out images are then
scored at that threshold. Scores are pooled over all held-out images.

The published SAC-CNN cannot be re-trained here; it is scored on the same
held-out images (a) at its published threshold 0.89 and (b) with the threshold
chosen on the training folds the same way. Note that the published weights
were trained on these kinds of images (possibly these very ones), so its
numbers are, if anything, optimistic.

Usage::

    PYTHONPATH=src python benchmarks/cv_detector.py --out cv.json [--steps N] [--device cpu]

Takes ~4 × the training time (``fastsac train``) plus a minute of inference.
Folds can run in parallel processes and be merged::

    for k in 0 1 2 3; do python benchmarks/cv_detector.py --fold $k --out cv_$k.json & done; wait
    python benchmarks/cv_detector.py --merge cv_0.json cv_1.json cv_2.json cv_3.json --out cv.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from fastsac import io
from fastsac.evaluate import match_points, pool
from fastsac.detectors.learned import HeatmapDetector, SacCnnDetector, load_detector, sac_cnn_preprocess
from fastsac.training import TrainConfig, detect_prepared, load_training_images, train

log = logging.getLogger("cv_detector")
GRID = np.round(np.arange(0.1, 0.91, 0.02), 2)
SAC_GRID = np.round(np.concatenate([np.arange(0.3, 0.9, 0.02), np.arange(0.9, 0.999, 0.005)]), 3)


def folds_of(stems, k=4):
    return [stems[i::k] for i in range(k)]


def sac_detections(det: SacCnnDetector, images, cache_dir):
    """Probability maps of every image (cached), for threshold sweeps."""
    maps = {}
    for stem, raw in images.items():
        q = Path(cache_dir) / f"{stem}_sacprob.npy" if cache_dir else None
        if q is not None and q.is_file():
            maps[stem] = np.load(q)
            continue
        p = Path(cache_dir) / f"{stem}_sacnorm.npy" if cache_dir else None
        if p is not None and p.is_file():
            norm = np.load(p)
        else:
            norm = sac_cnn_preprocess(raw)
            if p is not None:
                np.save(p, norm)
        maps[stem] = det.probability_map(norm)
        if q is not None:
            np.save(q, maps[stem])
    return maps


def sac_scores(det, maps, truths, stems, thr):
    res = []
    for s in stems:
        xy, _, _ = det.components(maps[s], thr)
        res.append(match_points(xy, truths[s], tolerance_px=6))
    return res


def _pool_counts(rows):
    from fastsac.evaluate import MatchResult
    return pool([MatchResult(tp, fp, fn, 0, 0, 0, float("nan")) for tp, fp, fn in rows])


def merge(paths, out) -> int:
    folds = []
    for p in paths:
        folds += json.loads(Path(p).read_text())["folds"]
    first = json.loads(Path(paths[0]).read_text())
    report = {k: first[k] for k in ("protocol", "config", "device")} | {"folds": folds}
    report["cv_pooled"] = {}
    for key, name in (("heatmap", "heatmap"), ("sac_cnn", "sac_cnn_threshold_from_train_folds"),
                      ("sac_cnn_0.89", "sac_cnn_published_0.89")):
        rows = [c for f in folds for c in f["held_out_counts"].get(key, [])]
        if rows:
            report["cv_pooled"][name] = _pool_counts(rows)
    io.write_json(out, report)
    print(json.dumps(report["cv_pooled"], indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("FASTSAC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--data", type=Path, default=shared / "data" / "ptnc-train")
    ap.add_argument("--sac-cnn", type=Path, default=shared / "models" / "sac_cnn_ptnc.ckpt")
    ap.add_argument("--out", type=Path, default=Path("cv_detector.json"))
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--widths", type=str, default=",".join(map(str, TrainConfig.widths)))
    ap.add_argument("--config", type=str, default="{}", help="JSON overrides of TrainConfig fields")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--fold", type=int, default=None, help="run only this fold (0-based)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="merge per-fold JSON files")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    stems = sorted(p.stem for p in (args.data / "labels").glob("*.csv"))
    truths = {s: io.read_points(args.data / "labels" / f"{s}.csv") for s in stems}
    cfg = replace(TrainConfig(steps=args.steps, seed=args.seed,
                              widths=tuple(int(w) for w in args.widths.split(","))),
                  **{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.config).items()})
    data = load_training_images(args.data / "images", args.data / "labels", stems,
                                 working_pixel_nm=0.0293, backend="auto", cache_dir=args.cache_dir,
                                 noise_sigma_nm=cfg.noise_sigma_nm, background_nm=cfg.background_nm)
    by_stem = {d["stem"]: d for d in data}
    report = {"protocol": "leave-images-out CV, folds = sorted stems [k::4], threshold chosen on training "
                          "images (max pooled F1 at 6 px), pooled over held-out images",
              "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
              "folds": [], "device": args.device}
    t0 = time.perf_counter()
    sac = load_detector(args.sac_cnn) if args.sac_cnn.is_file() else None
    sac_maps = sac_detections(sac, {s: by_stem[s]["raw"] for s in stems}, args.cache_dir) if sac else {}
    held_heat, held_sac, held_sac089 = [], [], []
    for k, test in enumerate(folds_of(stems, args.folds)):
        if args.fold is not None and k != args.fold:
            continue
        tr = [s for s in stems if s not in test]
        t1 = time.perf_counter()
        res = train(args.data / "images", args.data / "labels", stems=tr, config=cfg, progress=False,
                    cache_dir=args.cache_dir, device=args.device)
        det = HeatmapDetector(res.model, threshold=0.05, min_distance_nm=cfg.min_distance_nm,
                              noise_sigma_nm=cfg.noise_sigma_nm, background_nm=cfg.background_nm)
        dets = {s: detect_prepared(det, by_stem[s]) for s in test}
        per = {s: match_points(dets[s].xy[dets[s].score >= res.threshold], truths[s], tolerance_px=6)
               for s in test}
        held_heat += per.values()
        fold = {"test": test, "train": tr, "heatmap": {"threshold": res.threshold, "train_f1": res.train_f1,
                                                       "train_seconds": res.seconds,
                                                       "test": pool(per.values()),
                                                       "per_image": {s: r.as_dict() for s, r in per.items()}}}
        if sac:
            sweep = []
            for thr in SAC_GRID:
                sweep.append((pool(sac_scores(sac, sac_maps, truths, tr, thr))["f1"], float(thr)))
            best_f1, best_thr = max(sweep)
            r_sel = sac_scores(sac, sac_maps, truths, test, best_thr)
            r_pub = sac_scores(sac, sac_maps, truths, test, 0.89)
            held_sac += r_sel
            held_sac089 += r_pub
            fold["sac_cnn"] = {"threshold": best_thr, "train_f1": best_f1, "test": pool(r_sel),
                               "test_at_0.89": pool(r_pub)}
        fold["held_out_counts"] = {"heatmap": [[r.tp, r.fp, r.fn] for r in per.values()]}
        if sac:
            fold["held_out_counts"]["sac_cnn"] = [[r.tp, r.fp, r.fn] for r in r_sel]
            fold["held_out_counts"]["sac_cnn_0.89"] = [[r.tp, r.fp, r.fn] for r in r_pub]
        report["folds"].append(fold)
        log.info("fold %d: heatmap F1 %.3f (thr %.2f, %.0fs)%s", k, fold["heatmap"]["test"]["f1"], res.threshold,
                 time.perf_counter() - t1,
                 f"; SAC-CNN F1 {fold['sac_cnn']['test']['f1']:.3f}" if sac else "")
    report["cv_pooled"] = {"heatmap": pool(held_heat)}
    if sac:
        report["cv_pooled"]["sac_cnn_threshold_from_train_folds"] = pool(held_sac)
        report["cv_pooled"]["sac_cnn_published_0.89"] = pool(held_sac089)
    report["seconds"] = time.perf_counter() - t0
    io.write_json(args.out, report)
    print(json.dumps(report["cv_pooled"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
