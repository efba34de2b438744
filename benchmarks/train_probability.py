"""Train and validate the calibrated detection probability (``fastsac.confidence``).

Two calibrations of the same four features (``fastsac.confidence.FEATURES``)
of the default classical detector's atoms:

* **simulated truth** → ``probability``: ``fastsac.synth`` frames (512²,
  ptnc-train-like) across dose 1e4–3.2e5 e/Å², random and clustered patterns,
  10 % dimers; a detection is real when the Hungarian matching (6 px) pairs it
  with a true atom. Out-of-fold by frame (5 folds) for the metrics.
* **expert labels** → ``probability_expert``: the 11 ptnc-train frames, matched
  to the labels (6 px); leave-one-image-out for the metrics.

Both models are then fitted on all their data and written to
``src/fastsac/weights/fastsac_probability_v1.json``. Metrics (Brier score,
reliability per bin, per-image expected counts) go to ``--json`` and the
reliability diagram to ``--png``.

Usage:
    FASTSAC_SHARED=/work/shared PYTHONPATH=src python benchmarks/train_probability.py \\
        --out src/fastsac/weights/fastsac_probability_v1.json \\
        --json docs/confidence.json --png docs/confidence_reliability.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from fastsac import read, read_points
from fastsac.confidence import (FEATURES, ProbabilityModel, expected_count, features,
                                fit_logistic)
from fastsac.detectors import ClassicalDetector
from fastsac.evaluate import match_points
from fastsac.synth import simulate

SIM_DOSES = (1e4, 2e4, 4e4, 8e4, 1.6e5, 3.2e5)
SIM_PATTERNS = ("random", "clustered")
ATOM_SIGMA_NM = 0.095  # the atom size of the close-pair stage (fastsac.close_pairs)
BINS = np.linspace(0, 1, 11)


def detections_with_truth(img, px, truth_xy, det):
    d = det.detect(img, pixel_size_nm=px)
    r = match_points(d.xy, truth_xy, tolerance_px=6.0)
    y = np.zeros(len(d))
    y[r.pairs[:, 0]] = 1.0
    X = features(d.score, d.amplitude, d.sigma_px, d.residual, atom_sigma_px=ATOM_SIGMA_NM / px)
    return X, y, len(truth_xy)


def fill_failed(X, mean):
    """Failed fits get the training means of the fit features (as at inference)."""
    X = X.copy()
    bad = X[:, 3] > 0
    X[bad, 1] = mean[1]
    X[bad, 2] = mean[2]
    return X


def fill_values(X):
    ok = X[:, 3] == 0
    return np.array([0.0, X[ok, 1].mean(), X[ok, 2].mean(), 0.0])


def brier(p, y):
    return float(np.mean((p - y) ** 2))


def reliability(p, y):
    idx = np.clip(np.digitize(p, BINS) - 1, 0, len(BINS) - 2)
    out = []
    for b in range(len(BINS) - 1):
        m = idx == b
        if m.any():
            out.append({"bin": [float(BINS[b]), float(BINS[b + 1])], "n": int(m.sum()),
                        "mean_predicted": float(p[m].mean()), "observed": float(y[m].mean())})
    return out


def oof(groups, X, y, target):
    """Out-of-fold predictions with folds = the distinct values of ``groups``."""
    p = np.zeros(len(y))
    for g in np.unique(groups):
        tr = groups != g
        f = fill_values(X[tr])
        m = fit_logistic(fill_failed(X[tr], f), y[tr], target=target)
        p[~tr] = m.predict(fill_failed(X[~tr], f))
    return p


def score_only(groups, X, y):
    p = np.zeros(len(y))
    for g in np.unique(groups):
        tr = groups != g
        m = fit_logistic(X[tr][:, :1], y[tr])
        p[~tr] = m.predict(X[~tr][:, :1])
    return p


def widen(m: ProbabilityModel, n: int) -> ProbabilityModel:
    """A score-only model as an n-feature model (zero weights on the others)."""
    mean, scale, coef = np.zeros(n), np.ones(n), np.zeros(n)
    mean[0], scale[0], coef[0] = m.mean[0], m.scale[0], m.coef[0]
    return ProbabilityModel(mean, scale, coef, m.intercept, m.target)


def choose(groups, X, y, target):
    """All four features or the score alone, whichever has the lower
    out-of-fold Brier score; returns (oof predictions, model on all data, name)."""
    p_all = oof(groups, X, y, target)
    p_one = score_only(groups, X, y)
    f = fill_values(X)
    if brier(p_one, y) < brier(p_all, y):
        return p_one, widen(fit_logistic(X[:, :1], y, target=target), X.shape[1]), "score only"
    return p_all, fit_logistic(fill_failed(X, f), y, target=target), "all features"


def metrics(p, y, X):
    base = np.full(len(y), y.mean())
    naive = norm.cdf(X[:, 0])
    return {"n": int(len(y)), "positives": int(y.sum()), "brier": brier(p, y),
            "brier_base_rate": brier(base, y), "brier_snr_as_gaussian_confidence": brier(naive, y),
            "reliability": reliability(p, y)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("FASTSAC_SHARED", "/work/shared"))
    ap.add_argument("--out", default=None, help="calibration JSON to write")
    ap.add_argument("--json", default=None, help="metrics JSON")
    ap.add_argument("--png", default=None, help="reliability diagram")
    ap.add_argument("--sim-seeds", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    t0 = time.perf_counter()
    det = ClassicalDetector()

    # --- real frames, expert labels
    root = Path(args.shared) / "data" / "ptnc-train"
    stems = sorted(p.stem for p in (root / "images").glob("*.tif"))
    Xr, yr, gr, n_labels = [], [], [], {}
    for i, s in enumerate(stems):
        m = read(root / "images" / f"{s}.tif")
        lab = read_points(root / "labels" / f"{s}.csv")
        X, y, nl = detections_with_truth(m.data, m.pixel_size_nm, lab, det)
        Xr.append(X)
        yr.append(y)
        gr.append(np.full(len(y), i))
        n_labels[s] = nl
    Xr, yr, gr = np.concatenate(Xr), np.concatenate(yr), np.concatenate(gr)

    # --- simulated frames, exact truth
    Xs, ys, gs = [], [], []
    k = 0
    for dose in SIM_DOSES:
        for pat in SIM_PATTERNS:
            for seed in range(args.sim_seeds):
                img, truth = simulate(size=args.size, dose=dose, pattern=pat, dimer_fraction=0.1,
                                      seed=1000 + k)
                X, y, _ = detections_with_truth(img.astype(np.float32), truth.params["pixel_size_nm"],
                                                truth.xy, det)
                Xs.append(X)
                ys.append(y)
                gs.append(np.full(len(y), k % 5))
                k += 1
    Xs, ys, gs = np.concatenate(Xs), np.concatenate(ys), np.concatenate(gs)
    print(f"real: {len(yr)} detections ({int(yr.sum())} labelled); sim: {len(ys)} detections "
          f"({int(ys.sum())} true), {k} frames; {time.perf_counter() - t0:.0f} s", flush=True)

    p_real, m_expert, which_expert = choose(gr, Xr, yr, "expert labels")
    p_sim, m_sim, which_sim = choose(gs, Xs, ys, "simulated truth")
    fr, fs = fill_values(Xr), fill_values(Xs)
    print(f"features: probability ← {which_sim}; probability_expert ← {which_expert}")
    # The simulated-truth model applied to the real frames (trained without them).
    p_sim_on_real = m_sim.predict(fill_failed(Xr, fs))
    res = {
        "features": list(FEATURES),
        "expert_labels_loo": metrics(p_real, yr, Xr) | {
            "brier_score_only_platt_loo": brier(score_only(gr, Xr, yr), yr),
            "brier_all_features_loo": brier(oof(gr, Xr, yr, ""), yr)},
        "simulated_truth_oof": metrics(p_sim, ys, Xs) | {
            "brier_score_only_platt_oof": brier(score_only(gs, Xs, ys), ys),
            "brier_all_features_oof": brier(oof(gs, Xs, ys, ""), ys)},
        "simulated_model_on_expert_labels": metrics(p_sim_on_real, yr, Xr),
        "per_image": {},
        "models": {"probability": m_sim.as_dict(), "probability_expert": m_expert.as_dict()},
        "feature_choice": {"probability": which_sim, "probability_expert": which_expert},
    }
    for i, s in enumerate(stems):
        m = gr == i
        res["per_image"][s] = {
            "detected": int(m.sum()), "labels": n_labels[s], "matched": int(yr[m].sum()),
            "expected_marked_by_expert_loo": expected_count(p_real[m]),
            "expected_real_sim_model": expected_count(p_sim_on_real[m])}
    for key in ("expert_labels_loo", "simulated_truth_oof", "simulated_model_on_expert_labels"):
        r = res[key]
        print(f"{key}: Brier {r['brier']:.4f} (base rate {r['brier_base_rate']:.4f}, "
              f"SNR as Gaussian confidence {r['brier_snr_as_gaussian_confidence']:.4f})")
    print("per image: detected, labels, matched, expected marked (LOO) [95%], expected real (sim)")
    for s, d in res["per_image"].items():
        e, q = d["expected_marked_by_expert_loo"], d["expected_real_sim_model"]
        print(f"  {s}: {d['detected']:3d} {d['labels']:3d} {d['matched']:3d} "
              f"{e['expected']:6.1f} {e['interval']}  {q['expected']:6.1f} {q['interval']}")
    if args.out:
        cal = {"format": "fastsac-probability", "version": 1, "atom_sigma_nm": ATOM_SIGMA_NM,
               "features": list(FEATURES),
               "models": {"classical": {"probability": m_sim.as_dict(),
                                        "probability_expert": m_expert.as_dict()}},
               "fill": {"classical": fs.tolist()},
               "meta": {"trained_by": "benchmarks/train_probability.py",
                        "real": f"ptnc-train, {len(stems)} frames, {len(yr)} detections",
                        "simulated": f"{k} frames, doses {list(SIM_DOSES)}, patterns "
                                     f"{list(SIM_PATTERNS)}, {len(ys)} detections"}}
        # The expert model's failed-fit fill comes from the real frames.
        cal["fill_expert"] = {"classical": fr.tolist()}
        Path(args.out).write_text(json.dumps(cal, indent=1) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 4), dpi=110)
        panels = [("expert labels, LOO (probability_expert)", res["expert_labels_loo"]),
                  ("simulated truth, 5-fold (probability)", res["simulated_truth_oof"]),
                  ("sim-calibrated model vs expert labels", res["simulated_model_on_expert_labels"])]
        for ax, (title, r) in zip(axes, panels):
            rel = r["reliability"]
            x = [b["mean_predicted"] for b in rel]
            yv = [b["observed"] for b in rel]
            ax.plot([0, 1], [0, 1], "k:", lw=1)
            ax.plot(x, yv, "o-", color="C0")
            for b in rel:
                ax.annotate(str(b["n"]), (b["mean_predicted"], b["observed"]), fontsize=7,
                            xytext=(3, -9), textcoords="offset points")
            ax.set_title(f"{title}\nBrier {r['brier']:.3f} (base rate {r['brier_base_rate']:.3f})",
                         fontsize=9)
            ax.set_xlabel("predicted probability")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        axes[0].set_ylabel("observed frequency")
        fig.tight_layout()
        fig.savefig(args.png)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
