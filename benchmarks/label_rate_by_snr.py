"""How often the expert labelled a spot, as a function of its classical SNR (ptnc-train).

Every stage-1 candidate (classical SNR maximum above 2.5, ``fastsac.detectors.rescore.candidate_features``,
the protocol of ``benchmarks/cv_rescore.py`` → docs/model.md §5) is marked labelled when it is
Hungarian-matched to an expert click within 6 px. The labelled fraction per SNR bin is written
with a logistic fit P(labelled | SNR) = 1 / (1 + exp(-(SNR - snr50) / width)) (maximum
likelihood over all candidates), which ``fastsac.synth.annotators`` uses as the expert's
click curve.

Usage::

    FASTSAC_SHARED=/work/shared PYTHONPATH=src python benchmarks/label_rate_by_snr.py \\
        --out docs/label_rate_by_snr.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from fastsac import io
from fastsac.evaluate import match_points
from fastsac.detectors.rescore import candidate_features

BINS = [2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, np.inf]


def fit_logistic(snr, labelled):
    """(snr50, width) of P = 1/(1+exp(-(snr-snr50)/width)) by maximum likelihood."""
    def nll(theta):
        s50, log_w = theta
        z = (snr - s50) / np.exp(log_w)
        return float(np.sum(np.logaddexp(0, -z) * labelled + np.logaddexp(0, z) * (1 - labelled)))
    r = minimize(nll, x0=[4.3, np.log(0.5)], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8})
    return float(r.x[0]), float(np.exp(r.x[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("FASTSAC_SHARED", "../shared"),
                                                   "data", "ptnc-train"))
    ap.add_argument("--tolerance-px", type=float, default=6.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    data = Path(args.data)
    stems = sorted(p.stem for p in (data / "labels").glob("*.csv"))
    snr, lab, n_labels, n_unmatched = [], [], 0, 0
    t0 = time.perf_counter()
    for stem in stems:
        m = io.read(data / "images" / f"{stem}.tif")
        truth = io.read_points(data / "labels" / f"{stem}.csv")
        tab = candidate_features(m.data, pixel_size_nm=m.pixel_size_nm)
        r = match_points(tab.xy, truth, tolerance_px=args.tolerance_px)
        y = np.zeros(len(tab.xy))
        y[r.pairs[:, 0]] = 1
        snr.append(tab.score)
        lab.append(y)
        n_labels += len(truth)
        n_unmatched += len(truth) - r.tp
    snr, lab = np.concatenate(snr), np.concatenate(lab)
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        k = (snr > lo) & (snr <= hi)
        rows.append({"snr": [lo, None if np.isinf(hi) else hi], "n": int(k.sum()),
                     "labelled": float(lab[k].mean()) if k.any() else None})
    s50, width = fit_logistic(snr, lab)
    report = {"images": stems, "candidates": int(len(snr)), "labels": n_labels,
              "labels_without_candidate": n_unmatched, "tolerance_px": args.tolerance_px,
              "bins": rows, "logistic": {"snr50": s50, "width": width},
              "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{len(snr)} candidates on {len(stems)} images, {n_labels} labels "
          f"({n_unmatched} without a candidate above SNR 2.5)")
    for row in rows:
        hi = row["snr"][1]
        fit = 1 / (1 + np.exp(-((row["snr"][0] + (hi if hi else 9.0)) / 2 - s50) / width))
        print(f"  SNR {row['snr'][0]:>4}-{hi if hi else 'inf':<4}  n {row['n']:>5}  labelled "
              f"{row['labelled'] if row['labelled'] is None else round(row['labelled'], 3)!s:>6}  "
              f"logistic at bin centre {fit:.3f}")
    print(f"logistic fit: snr50 = {s50:.3f}, width = {width:.3f}")
    if args.out:
        io.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
