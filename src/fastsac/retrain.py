"""Retrain the two-stage re-scorer on a consensus, weighting each atom by its probability.

A consensus (``fastsac consensus``) gives every clicked spot a probability of being a real
atom. Training on it with *soft targets* — a stage-1 candidate matched to a consensus group
has target ``p`` of that group, an unmatched candidate 0 — is logistic regression with
per-atom weights: a spot that all annotators clicked counts fully, a disputed one partly.

Before a retrained model may replace the current detector it is evaluated against the
consensus on images it did not train on (k-fold over images) and compared with the
current detector on the same images; :class:`RetrainReport` says whether it is better.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detectors.rescore import FEATURES, CandidateTable, RescoreModel
from .evaluate import match_points
from .training import fit_and_select

__all__ = ["consensus_targets", "fit_consensus_rescore", "retrain_on_consensus", "RetrainReport"]


def consensus_targets(table: CandidateTable, groups_xy, probability, *, tolerance_px: float = 6.0) -> np.ndarray:
    """(N,) soft targets of the candidates: the probability of the consensus group each is
    Hungarian-matched to (within ``tolerance_px``), 0 for unmatched candidates."""
    p = np.asarray(probability, np.float64).reshape(-1)
    g = np.asarray(groups_xy, np.float64).reshape(-1, 2)
    if len(p) != len(g):
        raise ValueError(f"probability has {len(p)} values for {len(g)} groups")
    y = np.zeros(len(table.xy))
    if len(table.xy) and len(g):
        r = match_points(table.xy, g, tolerance_px=tolerance_px)
        y[r.pairs[:, 0]] = p[r.pairs[:, 1]]
    return y


def fit_consensus_rescore(tables, targets, *, l2: float = 1.0, inner_folds: int = 5) -> RescoreModel:
    """Logistic re-scorer on soft targets; the probability threshold maximises the expected
    pooled F1 (targets as fractional true positives) of out-of-fold predictions."""
    if not tables:
        raise ValueError("no training images")
    # Expected number of atoms per image: the soft targets' sum.
    mean, scale, coef, b, thr, _ = fit_and_select(tables, targets, [float(t.sum()) for t in targets],
                                                  l2=l2, inner_folds=inner_folds)
    return RescoreModel(mean, scale, coef, b, thr, features=FEATURES)


@dataclass(frozen=True)
class RetrainReport:
    """Held-out comparison of a consensus-trained re-scorer with the current detector.

    Attributes
    ----------
    model : RescoreModel
        Trained on every image (what would be deployed).
    f1_new : float
        Pooled F1 against the consensus atoms of the k-fold held-out predictions.
    f1_baseline : float
        Pooled F1 of the current detector against the same consensus atoms.
    per_image : dict
        stem → {"new": {tp, fp, fn}, "baseline": {tp, fp, fn}}.
    better : bool
        ``f1_new > f1_baseline``: only then may the new model become the default.
    folds : int
    """

    model: RescoreModel
    f1_new: float
    f1_baseline: float
    per_image: dict = field(repr=False)
    better: bool = False
    folds: int = 4

    def as_dict(self) -> dict:
        return {"f1_new_heldout": self.f1_new, "f1_baseline": self.f1_baseline, "better": self.better,
                "folds": self.folds, "threshold": self.model.threshold, "per_image": self.per_image}


def _pooled_f1(rows) -> float:
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def retrain_on_consensus(data: dict, *, baseline_xy: dict, folds: int = 4, l2: float = 1.0,
                         tolerance_px: float = 6.0) -> RetrainReport:
    """Train on the consensus and compare, on held-out images, with the current detector.

    Parameters
    ----------
    data : dict stem → (CandidateTable, groups_xy (G, 2), probability (G,), keep (G,) bool)
        Candidates of each image and its consensus (every clicked spot, its probability and
        whether it is a consensus atom).
    baseline_xy : dict stem → (M, 2) array
        The current detector's detections on the same images.
    folds : int
        Images are split into this many folds (stems sorted, fold f = stems[f::folds]).
    """
    stems = sorted(data)
    if len(stems) < 2:
        raise ValueError("retraining needs at least 2 consensus images (held-out evaluation)")
    folds = max(2, min(int(folds), len(stems)))
    targets = {s: consensus_targets(data[s][0], data[s][1], data[s][2], tolerance_px=tolerance_px) for s in stems}
    per_image = {}
    for f in range(folds):
        test = stems[f::folds]
        train = [s for s in stems if s not in test]
        model = fit_consensus_rescore([data[s][0] for s in train], [targets[s] for s in train], l2=l2)
        for s in test:
            tab, gxy, _, keep = data[s]
            ref = np.asarray(gxy, np.float64).reshape(-1, 2)[np.asarray(keep, bool)]
            pred = tab.xy[model.probability(tab.features) >= model.threshold]
            r_new = match_points(pred, ref, tolerance_px=tolerance_px)
            r_base = match_points(baseline_xy[s], ref, tolerance_px=tolerance_px)
            per_image[s] = {"new": {"tp": r_new.tp, "fp": r_new.fp, "fn": r_new.fn},
                            "baseline": {"tp": r_base.tp, "fp": r_base.fp, "fn": r_base.fn}}
    f_new = _pooled_f1([v["new"] for v in per_image.values()])
    f_base = _pooled_f1([v["baseline"] for v in per_image.values()])
    final = fit_consensus_rescore([data[s][0] for s in stems], [targets[s] for s in stems], l2=l2)
    meta = {"trained_on": "consensus", "train_images": stems, "l2": l2, "tolerance_px": tolerance_px,
            "heldout_f1_vs_consensus": round(f_new, 4), "baseline_f1_vs_consensus": round(f_base, 4),
            "n_candidates": int(sum(len(data[s][0].xy) for s in stems)),
            "expected_atoms": round(float(sum(targets[s].sum() for s in stems)), 2)}
    final = RescoreModel(final.mean, final.scale, final.coef, final.intercept, final.threshold,
                         final.candidate_threshold, final.features, meta)
    return RetrainReport(final, f_new, f_base, per_image, bool(f_new > f_base), folds)
