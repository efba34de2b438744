"""Score detections against reference positions (expert clicks or simulator truth).

Human labels miss atoms and are off by a pixel or two, so detections are
paired one-to-one with labels by the Hungarian algorithm, allowing only pairs
closer than a tolerance (6 px ≈ 0.18 nm on the ptnc-train images).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ._validate import as_points, check_positive

__all__ = ["match_points", "MatchResult", "pool"]


@dataclass(frozen=True)
class MatchResult:
    """Counts and scores of one matching; ``pairs`` (M, 2) indices (pred, truth)."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_error_px: float
    pairs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2), np.int64))
    tolerance_px: float = 6.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("pairs")
        return d


def _scores(tp: int, fp: int, fn: int):
    # Conventions for empty sets: nothing predicted and nothing there is perfect.
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def match_points(pred, truth, *, tolerance_px: float = 6.0) -> MatchResult:
    """Optimal one-to-one matching within ``tolerance_px`` (distance ≤ tolerance).

    Maximises the number of matched pairs, then minimises their total distance.

    Examples
    --------
    >>> r = match_points([[0, 0], [10, 10]], [[1, 0], [50, 50]], tolerance_px=3)
    >>> (r.tp, r.fp, r.fn)
    (1, 1, 1)
    """
    p, t = as_points(pred, name="pred"), as_points(truth, name="truth")
    check_positive(tolerance_px, name="tolerance_px")
    pairs = np.zeros((0, 2), np.int64)
    if len(p) and len(t):
        # Candidate pairs within tolerance (the structured output keeps exact zeros).
        cand = cKDTree(p).sparse_distance_matrix(cKDTree(t), tolerance_px, output_type="ndarray")
        if len(cand):
            rows, ri = np.unique(cand["i"], return_inverse=True)
            cols, ci = np.unique(cand["j"], return_inverse=True)
            big = 1e6 * (tolerance_px + 1)  # forbids a pair: any feasible match beats it
            cost = np.full((len(rows), len(cols)), big)
            cost[ri, ci] = cand["v"]
            a, b = linear_sum_assignment(cost)
            ok = cost[a, b] < big
            pairs = np.stack([rows[a[ok]], cols[b[ok]]], axis=1).astype(np.int64)
    tp = len(pairs)
    fp, fn = len(p) - tp, len(t) - tp
    err = float(np.mean(np.hypot(*(p[pairs[:, 0]] - t[pairs[:, 1]]).T))) if tp else float("nan")
    precision, recall, f1 = _scores(tp, fp, fn)
    return MatchResult(tp, fp, fn, precision, recall, f1, err, pairs, float(tolerance_px))


def pool(results) -> dict:
    """Pooled (micro-averaged) precision/recall/F1 over several images."""
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    precision, recall, f1 = _scores(tp, fp, fn)
    errs = [r.mean_error_px * r.tp for r in results if r.tp]
    mean_err = float(sum(errs) / tp) if tp else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "mean_error_px": mean_err}


def labelled_stems(image_dir, label_dir=None, stems=None):
    """``(image_dir, label_dir, stems)`` of a labelled image set: labels default to
    ``image_dir/../labels``; stems default to every ``label_dir/*.csv`` with an
    image of the same stem. Raises :class:`~fastsac.errors.FastsacInputError`
    naming the folder when there is none."""
    from pathlib import Path

    from .errors import FastsacInputError

    from .io import SUPPORTED_SUFFIXES

    image_dir = Path(image_dir)
    if label_dir is None:
        # `fastsac simulate` writes <stem>.csv beside <stem>.tif.
        label_dir = image_dir.parent / "labels"
        if not label_dir.is_dir() and any(image_dir.glob("*.csv")):
            label_dir = image_dir
    label_dir = Path(label_dir)
    if stems is None:
        stems = sorted(p.stem for p in label_dir.glob("*.csv")
                       if any(q.suffix.lower() in SUPPORTED_SUFFIXES
                              for q in image_dir.glob(f"{p.stem}.*")))
    if not stems:
        raise FastsacInputError(image_dir, f"no images with labels in {label_dir}")
    return image_dir, label_dir, list(stems)
