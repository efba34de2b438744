"""Consensus of several annotators' point labels, and how good each annotator is.

Human labels of single atoms disagree most where the evidence is weakest (docs/model.md
§5: between SNR 3.5 and 5 one expert clicked a quarter to two thirds of equally bright
spots). With several annotators per image the disagreement can be measured and a
consensus built that is better than any one of them and better than a majority vote:

1. :func:`group_points` pairs the clicks of the annotators of one image one-to-one
   (Hungarian matching within ``tolerance_px``, :func:`fastsac.evaluate.match_points`)
   into *point groups*: one group per distinct spot that anybody clicked, holding at most
   one click per annotator.
2. :func:`fit_annotator_model` runs a Dawid–Skene-style EM over the groups of all images:
   each group is a real atom (probability ``prior``) or a spurious one; annotator ``a``
   clicks a real atom with probability ``sensitivity[a]`` and a spurious group with
   probability ``false_click[a]``; clicks are independent given the group's class. EM
   estimates the annotator parameters jointly with each group's posterior probability
   of being a real atom. Votes may be fractional (a detector's calibrated probability
   takes part as one more voter) and missing (NaN: the annotator did not label that image).
3. :func:`build_consensus` puts both together for a set of images and keeps the groups
   whose probability reaches ``min_probability`` (or, with ``method="majority"``, whose
   agreement reaches ``min_agreement``).

Clicks missed by every annotator are invisible to any consensus: the sensitivities are
relative to the atoms at least one voter saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._validate import as_points, check_positive
from .evaluate import match_points
from .spatial.stats import DEFAULT_MULTIMER_CUTOFF_NM

__all__ = ["PointGroups", "AnnotatorModel", "ImageConsensus", "Consensus", "group_points",
           "fit_annotator_model", "group_probability", "build_consensus", "pairwise_f1",
           "annotator_summary", "expected_f1_threshold", "Interval", "bootstrap_f1",
           "point_statistics", "posterior_statistics", "annotator_bootstrap_statistics"]

# Probabilities are kept inside [_EPS, 1 - _EPS] so that log-odds stay finite.
_EPS = 1e-6


@dataclass(frozen=True)
class PointGroups:
    """Clicks of several voters on one image, grouped by spot.

    Attributes
    ----------
    xy : (G, 2) float64
        Group position [x, y] (px): mean of the human clicks in the group (the detector's
        position for a group only the detector found).
    members : (G, V) int64
        Index of each voter's point in the group into that voter's point array; -1 when
        the voter has no point in the group.
    votes : (G, V) float64
        1 where the voter clicked, 0 where it did not, NaN where the voter did not label
        this image at all; a soft voter (detector) contributes its probability instead of 1.
    tolerance_px : float
        Matching tolerance used.
    """

    xy: np.ndarray
    members: np.ndarray
    votes: np.ndarray
    tolerance_px: float

    def __len__(self) -> int:
        return len(self.xy)


def group_points(point_sets: Sequence[np.ndarray | None], *, tolerance_px: float = 3.0,
                 soft_votes: Sequence[np.ndarray | None] | None = None,
                 n_position_voters: int | None = None) -> PointGroups:
    """Group the clicks of several voters on one image into spots.

    Voters are merged one after another: each voter's points are Hungarian-matched
    (distance ≤ ``tolerance_px``) to the current group centres; matched points join their
    group (whose centre becomes the mean of its members), unmatched points open new
    groups. A group therefore never holds two points of the same voter.

    Parameters
    ----------
    point_sets : sequence of (N_v, 2) arrays or None
        Points [x, y] (px) of each voter; None for a voter who did not label this image.
    tolerance_px : float
        Largest distance between a click and a group centre to count as the same spot.
    soft_votes : sequence of (N_v,) arrays or None, optional
        Per voter, a vote weight in [0, 1] for each of its points (a detector's
        probability); None (or a None entry) means every point is a full vote of 1.
    n_position_voters : int, optional
        Only the first ``n_position_voters`` voters (the humans) set group positions;
        later voters (a detector) position a group only when no human clicked it.
        Default: all voters.

    Returns
    -------
    PointGroups

    Examples
    --------
    >>> g = group_points([[[10, 10], [50, 50]], [[11, 10]], None], tolerance_px=3)
    >>> g.members.tolist()
    [[0, 0, -1], [1, -1, -1]]
    >>> g.votes[:, 2].tolist()
    [nan, nan]
    """
    check_positive(tolerance_px, name="tolerance_px")
    n_voters = len(point_sets)
    if soft_votes is not None and len(soft_votes) != n_voters:
        raise ValueError(f"soft_votes must have one entry per voter ({n_voters}), got {len(soft_votes)}")
    n_pos = n_voters if n_position_voters is None else int(n_position_voters)
    sets = [None if s is None else as_points(s, name=f"point_sets[{v}]") for v, s in enumerate(point_sets)]
    weights = []
    for v, s in enumerate(sets):
        w = None if soft_votes is None else soft_votes[v]
        if s is None:
            weights.append(None)
            continue
        w = np.ones(len(s)) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
        if len(w) != len(s):
            raise ValueError(f"soft_votes[{v}] has {len(w)} values for {len(s)} points")
        if not np.all((w >= 0) & (w <= 1)):
            raise ValueError(f"soft_votes[{v}] must lie in [0, 1]")
        weights.append(w)

    members: list[list[int]] = []      # per group, per voter
    sums: list[np.ndarray] = []        # per group, sum of positioning members' xy
    counts: list[int] = []             # per group, number of positioning members
    fallback: list[np.ndarray] = []    # per group, the first member's xy
    for v, pts in enumerate(sets):
        if pts is None or not len(pts):
            continue
        positions = _centres(sums, counts, fallback)
        matched = np.full(len(pts), -1, np.int64)
        if len(positions):
            r = match_points(pts, positions, tolerance_px=tolerance_px)
            matched[r.pairs[:, 0]] = r.pairs[:, 1]
        for i, g in enumerate(matched):
            if g < 0:
                members.append([-1] * n_voters)
                sums.append(np.zeros(2))
                counts.append(0)
                fallback.append(pts[i].copy())
                g = len(members) - 1
            members[g][v] = i
            if v < n_pos:
                sums[g] = sums[g] + pts[i]
                counts[g] += 1
    mem = np.asarray(members, dtype=np.int64).reshape(-1, n_voters)
    votes = np.zeros(mem.shape)
    for v, pts in enumerate(sets):
        if pts is None:
            votes[:, v] = np.nan
            continue
        has = mem[:, v] >= 0
        votes[has, v] = weights[v][mem[has, v]]
    xy = _centres(sums, counts, fallback).reshape(-1, 2)
    return PointGroups(xy, mem, votes, float(tolerance_px))


def _centres(sums, counts, fallback) -> np.ndarray:
    if not sums:
        return np.zeros((0, 2))
    c = np.asarray(counts, dtype=np.float64)[:, None]
    s = np.asarray(sums)
    return np.where(c > 0, s / np.maximum(c, 1), np.asarray(fallback))


@dataclass(frozen=True)
class AnnotatorModel:
    """Dawid–Skene parameters fitted by :func:`fit_annotator_model`.

    Attributes
    ----------
    sensitivity : (V,) float64
        P(voter clicks a real atom), including atoms nobody clicked (estimated through the
        zero-truncated model, see :func:`fit_annotator_model`).
    false_click : (V,) float64
        The spurious class's click parameter (same model); its share of each voter's
        clicks is the interpretable number (:func:`annotator_summary`).
    prior : float
        Share of the observed groups that are real atoms.
    probability : (G,) float64
        Posterior probability that each group (in the order given) is a real atom.
    n_unseen : float
        Expected number of real atoms that no voter clicked.
    n_iter : int
    converged : bool
    log_likelihood : float
        Of the observed groups under the zero-truncated model.
    """

    sensitivity: np.ndarray
    false_click: np.ndarray
    prior: float
    probability: np.ndarray = field(repr=False)
    n_unseen: float = 0.0
    n_iter: int = 0
    converged: bool = True
    log_likelihood: float = float("nan")


def _check_votes(votes) -> np.ndarray:
    o = np.asarray(votes, dtype=np.float64)
    if o.ndim != 2:
        raise ValueError(f"votes must be a (G, V) array, got shape {o.shape}")
    seen = ~np.isnan(o)
    if np.any(o[seen] < 0) or np.any(o[seen] > 1):
        raise ValueError("votes must lie in [0, 1] (or NaN for a voter who did not label the image)")
    return o


def _class_loglik(oz, seen, rate):
    """(G,) log P(votes | class) under the zero-truncated product of Bernoullis, and
    (G,) log P(no voter clicks | class) for each group's set of present voters."""
    r = np.clip(rate, _EPS, 1 - _EPS)
    log_miss = seen * np.log1p(-r)
    # Fractional votes: o·log r + (1 − o)·log(1 − r), the soft-label Bernoulli term.
    ll = np.sum(seen * oz * np.log(r), axis=1) + np.sum((1 - oz) * log_miss, axis=1)
    log_z = log_miss.sum(axis=1)                     # log P(all zero)
    log_obs = np.log(-np.expm1(np.minimum(log_z, -1e-300)))   # log P(at least one click)
    return ll - log_obs, log_z


def group_probability(votes, *, sensitivity, false_click, prior: float) -> np.ndarray:
    """Posterior P(real atom) of each group given the voters' parameters (the E step).

    Parameters
    ----------
    votes : (G, V) array
        Votes in [0, 1]; NaN = the voter did not label the image (ignored).
    sensitivity, false_click : (V,) arrays
    prior : float

    Returns
    -------
    (G,) float64
    """
    o = _check_votes(votes)
    s = np.asarray(sensitivity, np.float64)
    f = np.asarray(false_click, np.float64)
    if s.shape != (o.shape[1],) or f.shape != (o.shape[1],):
        raise ValueError(f"sensitivity and false_click need {o.shape[1]} values (one per voter)")
    seen = ~np.isnan(o)
    oz = np.where(seen, o, 0.0)
    pi = float(np.clip(prior, _EPS, 1 - _EPS))
    ll_real, _ = _class_loglik(oz, seen, s)
    ll_fake, _ = _class_loglik(oz, seen, f)
    logit = np.log(pi) - np.log1p(-pi) + ll_real - ll_fake
    # A group with no voter present carries no evidence: the prior.
    logit = np.where(seen.any(axis=1), logit, np.log(pi) - np.log1p(-pi))
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -700, 700)))


def fit_annotator_model(votes, *, max_iter: int = 2000, tol: float = 1e-7,
                        pseudo_count: float = 1.0, init=None, n_classes: int = 2) -> AnnotatorModel:
    """Dawid–Skene EM for "is this group a real atom", on groups somebody clicked.

    Each group is a real atom or spurious; given the class, voters click independently
    (voter ``a`` with probability ``sensitivity[a]`` or ``false_click[a]``). Only groups
    with at least one click are ever observed, so the likelihood of a group is the
    product of Bernoullis *conditioned on at least one click* (zero-truncated). Without
    the truncation the spurious class, which is mostly single clicks, absorbs real atoms
    that a good annotator missed and the sensitivities come out too high. EM handles the
    truncation by adding the expected number of unobserved all-miss groups of each class
    to the M step (for each set of voters present on an image).

    Parameters
    ----------
    votes : (G, V) array
        Votes in [0, 1] (1 = clicked, 0 = not, fractional = a soft voter's probability),
        NaN where the voter did not label the image the group is on. Groups of all images
        are pooled: one set of parameters per voter.
    max_iter, tol : int, float
        Stop when the largest change of a group probability falls below ``tol``.
    pseudo_count : float
        Smoothing of every rate (c pseudo-clicks and c pseudo-misses), so that a voter seen
        on few groups does not get a rate of 0 or 1.
    init : (G,) array, optional
        Initial group probabilities; default the agreement (mean vote over the voters who
        labelled the image), i.e. EM starts from the majority view, which also fixes the
        labelling of the classes (real atoms are the ones most voters click).
    n_classes : {2, 3}
        2: real / spurious (Dawid–Skene). 3: *easy* real atoms, *hard* real atoms and
        spurious groups, each class with its own click rates: real atoms differ in how
        visible they are, and with one sensitivity per annotator the faint real atoms that
        only a few annotators click look spurious (the simulated-annotator study,
        docs/annotation.md: +0.03 to +0.06 F1 over 2 classes). The class with the lowest
        mean click rate is the spurious one; ``sensitivity`` is then the mass-weighted
        mean of the two real classes' rates. Needs enough voters to be identifiable (≥ 5
        is what the study supports).

    Returns
    -------
    AnnotatorModel

    Examples
    --------
    >>> votes = [[1, 1, 1]] * 8 + [[1, 1, 0], [1, 0, 1], [0, 1, 1]] * 2 + [[1, 0, 0], [0, 1, 0], [0, 0, 1]] * 2
    >>> m = fit_annotator_model(votes)
    >>> m.probability[[0, 8, 14]].round(2).tolist()      # unanimous, two of three, one of three
    [0.84, 0.64, 0.37]
    """
    o = _check_votes(votes)
    n_groups, n_voters = o.shape
    seen = ~np.isnan(o)
    check_positive(pseudo_count, name="pseudo_count", allow_zero=True)
    if n_classes not in (2, 3):
        raise ValueError(f"n_classes must be 2 or 3, got {n_classes}")
    if n_groups == 0:
        return AnnotatorModel(np.full(n_voters, np.nan), np.full(n_voters, np.nan), float("nan"),
                              np.zeros(0), 0.0, 0, True, 0.0)
    oz = np.where(seen, o, 0.0)
    n_seen = seen.sum(axis=1)
    if init is None:
        q = np.divide(oz.sum(axis=1), n_seen, out=np.zeros(n_groups), where=n_seen > 0)
    else:
        q = np.clip(np.asarray(init, np.float64).reshape(-1), 0, 1)
        if len(q) != n_groups:
            raise ValueError(f"init must have one value per group ({n_groups}), got {len(q)}")
    # Responsibilities (G, C); the last class is the spurious one at the start.
    resp = np.stack([q, 1 - q], axis=1) if n_classes == 2 else \
        np.stack([q ** 2, 2 * q * (1 - q), (1 - q) ** 2], axis=1)
    resp = (resp + 1e-3) / (resp + 1e-3).sum(axis=1, keepdims=True)
    c = float(pseudo_count)
    patterns, pat_of = np.unique(seen, axis=0, return_inverse=True)
    pat_of = pat_of.reshape(-1)
    n_pat = len(patterns)
    rates = None
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        new_rates = []
        for k in range(n_classes):
            w = resp[:, k]
            if rates is None:
                n_zero = np.zeros(n_pat)      # first M step: no truncation correction yet
            else:
                # Expected number of unobserved all-miss groups of this class, per set of
                # voters present: the zero-truncation correction.
                _, log_z = _class_loglik(oz, seen, rates[k])
                z = np.exp(log_z)
                n_zero = np.bincount(pat_of, weights=w * z / np.maximum(1 - z, 1e-12), minlength=n_pat)
            clicks = np.sum(w[:, None] * seen * oz, axis=0)
            trials = np.sum(w[:, None] * seen, axis=0) + n_zero @ patterns
            new_rates.append((clicks + c) / (trials + 2 * c))
        rates = new_rates
        weights = (resp.sum(axis=0) + c) / (n_groups + n_classes * c)
        log_post = np.stack([np.log(weights[k]) + _class_loglik(oz, seen, rates[k])[0]
                             for k in range(n_classes)], axis=1)
        log_post -= log_post.max(axis=1, keepdims=True)
        new_resp = np.exp(log_post)
        new_resp /= new_resp.sum(axis=1, keepdims=True)
        delta = float(np.max(np.abs(new_resp - resp)))
        resp = new_resp
        if delta < tol:
            converged = True
            break
    spurious = int(np.argmin([np.mean(r) for r in rates]))
    real = [k for k in range(n_classes) if k != spurious]
    q = 1 - resp[:, spurious]
    mass = resp[:, real].sum(axis=0)
    s = np.average(np.stack([rates[k] for k in real]), axis=0, weights=np.maximum(mass, 1e-12))
    f = rates[spurious]
    prior = float(sum(weights[k] for k in real))
    ll_classes = np.stack([np.log(weights[k]) + _class_loglik(oz, seen, rates[k])[0] for k in range(n_classes)], axis=1)
    ll = float(np.sum(np.logaddexp.reduce(ll_classes, axis=1)))
    n_unseen = 0.0
    for k in real:
        _, log_z = _class_loglik(oz, seen, rates[k])
        z = np.exp(log_z)
        n_unseen += float(np.sum(resp[:, k] * z / np.maximum(1 - z, 1e-12)))
    return AnnotatorModel(s, f, prior, q, n_unseen, it, converged, ll)


@dataclass(frozen=True)
class ImageConsensus:
    """Consensus of one image.

    Attributes
    ----------
    groups : PointGroups
        Every spot any voter clicked.
    agreement : (G,) float64
        Fraction of the human annotators who labelled this image that clicked the group.
    n_annotators : int
        Human annotators who labelled this image.
    probability : (G,) float64
        Posterior probability that the group is a real atom.
    keep : (G,) bool
        Groups in the consensus.
    present : (V,) bool
        Which voters labelled this image.
    """

    groups: PointGroups
    agreement: np.ndarray
    n_annotators: int
    probability: np.ndarray
    keep: np.ndarray
    present: np.ndarray

    @property
    def xy(self) -> np.ndarray:
        """(K, 2) positions of the consensus atoms."""
        return self.groups.xy[self.keep]


@dataclass(frozen=True)
class Consensus:
    """Result of :func:`build_consensus`.

    Attributes
    ----------
    images : dict of str → ImageConsensus
    model : AnnotatorModel
        Fitted over the groups of all images; voters in ``annotators`` order, then
        ``"detector"`` when detections were given.
    annotators : tuple of str
    method : str
        ``"em"`` or ``"majority"`` (``"auto"`` resolved).
    n_classes : int
        Latent classes of the EM.
    min_probability, min_agreement, tolerance_px : float
    """

    images: dict
    model: AnnotatorModel
    annotators: tuple
    method: str
    min_probability: float
    min_agreement: float
    tolerance_px: float
    n_classes: int = 2

    @property
    def voters(self) -> tuple:
        n = len(self.model.sensitivity)
        return self.annotators + (("detector",) if n > len(self.annotators) else ())


def build_consensus(labels: Mapping[str, Sequence[np.ndarray | None]], *,
                    annotators: Sequence[str] | None = None, tolerance_px: float = 3.0,
                    method: str = "auto", min_probability: float = 0.5, min_agreement: float = 0.5,
                    detections: Mapping[str, tuple[np.ndarray, np.ndarray | None]] | None = None,
                    n_classes: int | str = "auto") -> Consensus:
    """Consensus points of several images labelled by several annotators.

    Parameters
    ----------
    labels : mapping image name → sequence of (N, 2) arrays or None
        For each image, one point array [x, y] (px) per annotator, in the same annotator
        order for every image; None where the annotator did not label the image.
    annotators : sequence of str, optional
        Annotator names (default ``a0, a1, ...``).
    tolerance_px : float
        Grouping tolerance (:func:`group_points`).
    method : {"auto", "em", "majority"}
        ``"em"`` keeps groups with probability ≥ ``min_probability``; ``"majority"`` keeps
        groups with agreement ≥ ``min_agreement``; ``"auto"``: EM with 5 or more
        annotators, majority vote with fewer (where the simulated-annotator study in
        docs/annotation.md finds majority vote closer to the truth). All report both numbers.
    n_classes : {"auto", 2, 3}
        Latent classes of :func:`fit_annotator_model`; auto: 3 with 5 or more voters, else 2.
    detections : mapping image name → (xy, probability or None), optional
        A detector as one more (soft) voter: its calibrated probability per detection is
        its vote; None = hard votes of 1. Images without an entry: the detector abstains.

    Returns
    -------
    Consensus
    """
    if method not in ("auto", "em", "majority"):
        raise ValueError(f"method must be 'auto', 'em' or 'majority', got {method!r}")
    for name, val in (("min_probability", min_probability), ("min_agreement", min_agreement)):
        if not 0 <= val <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {val}")
    names = list(labels)
    n_ann = max((len(labels[k]) for k in names), default=0)
    if any(len(labels[k]) != n_ann for k in names):
        raise ValueError("every image needs one entry per annotator (None where not labelled)")
    ann = tuple(annotators) if annotators is not None else tuple(f"a{i}" for i in range(n_ann))
    if len(ann) != n_ann:
        raise ValueError(f"{len(ann)} annotator names for {n_ann} annotators")
    use_det = detections is not None
    groups, agreement, n_present, presence = {}, {}, {}, {}
    for name in names:
        sets = list(labels[name])
        soft: list = [None] * n_ann
        if use_det:
            det = detections.get(name)
            sets.append(None if det is None else det[0])
            soft.append(None if det is None else det[1])
        g = group_points(sets, tolerance_px=tolerance_px, soft_votes=soft, n_position_voters=n_ann)
        human = g.votes[:, :n_ann]
        present = int(sum(s is not None for s in labels[name]))
        clicked = np.nansum(human > 0, axis=1) if present else np.zeros(len(g))
        groups[name] = g
        n_present[name] = present
        presence[name] = np.array([x is not None for x in sets], bool)
        agreement[name] = clicked / present if present else np.zeros(len(g))
    n_voters = n_ann + int(use_det)
    if method == "auto":
        method = "em" if n_ann >= 5 else "majority"
    if n_classes == "auto":
        n_classes = 3 if n_voters >= 5 else 2
    all_votes = np.concatenate([groups[k].votes for k in names], axis=0) if names else np.zeros((0, n_voters))
    model = fit_annotator_model(all_votes.reshape(-1, n_voters), n_classes=int(n_classes))
    images, start = {}, 0
    for name in names:
        g = groups[name]
        p = model.probability[start:start + len(g)]
        start += len(g)
        keep = p >= min_probability if method == "em" else agreement[name] >= min_agreement - 1e-12
        images[name] = ImageConsensus(g, agreement[name], n_present[name], p, keep, presence[name])
    return Consensus(images, model, ann, method, float(min_probability), float(min_agreement),
                     float(tolerance_px), int(n_classes))


def pairwise_f1(labels: Mapping[str, Sequence[np.ndarray | None]], *,
                tolerance_px: float = 3.0) -> np.ndarray:
    """(A, A) pooled F1 between every two annotators over the images both labelled.

    F1 is symmetric in the two point sets. NaN where two annotators share no image.
    """
    names = list(labels)
    n = max((len(labels[k]) for k in names), default=0)
    tp = np.zeros((n, n))
    tot = np.zeros((n, n))
    shared = np.zeros((n, n), bool)
    for name in names:
        sets = labels[name]
        for i in range(n):
            for j in range(i, n):
                a, b = sets[i], sets[j]
                if a is None or b is None:
                    continue
                a, b = as_points(a), as_points(b)
                m = match_points(a, b, tolerance_px=tolerance_px).tp if len(a) and len(b) else 0
                tp[i, j] += m
                tot[i, j] += len(a) + len(b)
                shared[i, j] = True
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tot > 0, 2 * tp / np.where(tot > 0, tot, 1), 1.0)
    f1 = np.where(shared, f1, np.nan)
    upper = np.triu(f1)
    return np.where(np.triu(np.ones((n, n), bool)), upper, upper.T)


def annotator_summary(result: Consensus) -> dict:
    """Per voter: fitted rates and what they mean in clicks, from a :class:`Consensus`.

    ``sensitivity``: P(click | real atom); ``false_click_rate``: expected share of the
    voter's clicks that are not real atoms (Σ clicks·(1 − p) / Σ clicks);
    ``false_clicks_per_image``: their expected number per labelled image;
    ``p_click_given_spurious``: the model's raw false-click parameter.
    """
    votes = np.concatenate([im.groups.votes for im in result.images.values()], axis=0) \
        if result.images else np.zeros((0, len(result.voters)))
    p = result.model.probability
    out = {}
    for v, name in enumerate(result.voters):
        seen = ~np.isnan(votes[:, v])
        o = np.where(seen, votes[:, v], 0.0)
        clicks = float(o.sum())
        false = float(np.sum(o * (1 - p)))
        n_img = sum(1 for im in result.images.values() if im.present[v])
        out[name] = {
            "sensitivity": float(result.model.sensitivity[v]),
            "false_click_rate": false / clicks if clicks else float("nan"),
            "false_clicks_per_image": false / n_img if n_img else float("nan"),
            "p_click_given_spurious": float(result.model.false_click[v]),
            "clicks": int(round(clicks)) if v < len(result.annotators) else round(clicks, 3),
            "images": n_img,
        }
    return out


def expected_f1_threshold(probability) -> float:
    """Probability cutoff that maximises the expected F1 of the kept groups.

    With calibrated group probabilities ``p``, keeping the k most probable groups has
    expected F1 ≈ 2·Σ_top-k p / (k + Σ_all p) (ratio of expectations). F1 rewards recall
    more than accuracy does, so the best cutoff is below 0.5 (about half the attainable
    F1). Returns the smallest probability kept; 1.0 when nothing should be kept.

    Examples
    --------
    >>> expected_f1_threshold([0.99, 0.9, 0.45, 0.4, 0.05])
    0.45
    """
    p = np.sort(np.asarray(probability, dtype=np.float64).reshape(-1))[::-1]
    if not len(p) or p[0] <= 0:
        return 1.0
    top = np.cumsum(p)
    f1 = 2 * top / (np.arange(1, len(p) + 1) + p.sum())
    return float(p[int(np.argmax(f1))])


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile interval from resamples."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "n_resamples": self.n_resamples}


def _interval(estimate: float, samples, level: float) -> Interval:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return Interval(float(estimate), float("nan"), float("nan"), level, 0)
    a = (1 - level) / 2 * 100
    return Interval(float(estimate), float(np.percentile(s, a)), float(np.percentile(s, 100 - a)),
                    level, int(len(s)))


def bootstrap_f1(tp, fp, fn, *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Pooled F1 over images with a bootstrap interval (images resampled with replacement).

    Parameters
    ----------
    tp, fp, fn : (I,) int arrays
        Per-image counts of one matching.

    Examples
    --------
    >>> iv = bootstrap_f1([10, 8, 9], [1, 3, 0], [2, 1, 4], n_resamples=500)
    >>> round(iv.estimate, 3), iv.low <= iv.estimate <= iv.high
    (0.831, True)
    """
    tp, fp, fn = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (tp, fp, fn))
    if not (len(tp) == len(fp) == len(fn)):
        raise ValueError("tp, fp and fn need one count per image")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")

    def f1(t, p, n):
        d = 2 * t + p + n
        return np.where(d > 0, 2 * t / np.where(d > 0, d, 1), 1.0)

    est = float(f1(tp.sum(), fp.sum(), fn.sum()))
    if not len(tp):
        return Interval(est, float("nan"), float("nan"), level, 0)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(tp), (int(n_resamples), len(tp)))
    return _interval(est, f1(tp[pick].sum(1), fp[pick].sum(1), fn[pick].sum(1)), level)


def point_statistics(point_sets, *, areas_nm2, pixel_sizes_nm, multimer_cutoff_nm: float = DEFAULT_MULTIMER_CUTOFF_NM) -> dict:
    """Pooled density (atoms per nm²) and multimer share (NN < cutoff) of point sets.

    Parameters
    ----------
    point_sets : sequence of (N_i, 2) arrays, px
    areas_nm2 : sequence of float
        Area each set was counted on.
    pixel_sizes_nm : sequence of float
    """
    n = m = 0
    area = float(np.sum(areas_nm2))
    for xy, px in zip(point_sets, pixel_sizes_nm):
        xy = as_points(xy)
        n += len(xy)
        m += int(np.sum(_nn_px(xy) < multimer_cutoff_nm / px))
    return {"n_atoms": n, "density_per_nm2": n / area if area > 0 else float("nan"),
            "multimer_share": m / n if n else float("nan")}


def _nn_px(xy: np.ndarray) -> np.ndarray:
    if len(xy) < 2:
        return np.full(len(xy), np.inf)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    return d[:, 1]


def posterior_statistics(groups: Mapping[str, tuple], *, areas_nm2: Mapping[str, float],
                         pixel_sizes_nm: Mapping[str, float], multimer_cutoff_nm: float = DEFAULT_MULTIMER_CUTOFF_NM,
                         n_samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Density and multimer share of a consensus with intervals from its posterior.

    Parameters
    ----------
    groups : mapping image name → (xy (G, 2), probability (G,), keep (G,) bool)
        Every clicked spot of the image (:attr:`ImageConsensus.groups`), its probability and
        whether it is in the consensus.

    Each sample keeps every group independently with its probability, so the interval says
    how much the statistics depend on which of the disputed spots are atoms. The estimate
    is that of the consensus itself (the kept groups).
    """
    names = [k for k in groups if k in areas_nm2]
    data = [(as_points(groups[k][0]), np.asarray(groups[k][1], np.float64).reshape(-1),
             np.asarray(groups[k][2], bool).reshape(-1)) for k in names]
    areas = [areas_nm2[k] for k in names]
    pxs = [pixel_sizes_nm[k] for k in names]
    est = point_statistics([xy[keep] for xy, _, keep in data], areas_nm2=areas, pixel_sizes_nm=pxs,
                           multimer_cutoff_nm=multimer_cutoff_nm)
    rng = np.random.default_rng(seed)
    dens, mult = [], []
    for _ in range(int(n_samples)):
        sets = [xy[rng.random(len(xy)) < p] for xy, p, _ in data]
        s = point_statistics(sets, areas_nm2=areas, pixel_sizes_nm=pxs, multimer_cutoff_nm=multimer_cutoff_nm)
        dens.append(s["density_per_nm2"])
        mult.append(s["multimer_share"])
    return {"n_atoms": est["n_atoms"],
            "expected_n_atoms": float(sum(p.sum() for _, p, _ in data)),
            "density_per_nm2": _interval(est["density_per_nm2"], dens, level).as_dict(),
            "multimer_share": _interval(est["multimer_share"], mult, level).as_dict()}


def annotator_bootstrap_statistics(labels: Mapping[str, Sequence[np.ndarray | None]], *,
                                   areas_nm2: Mapping[str, float], pixel_sizes_nm: Mapping[str, float],
                                   multimer_cutoff_nm: float = DEFAULT_MULTIMER_CUTOFF_NM, n_resamples: int = 200,
                                   seed: int = 0, level: float = 0.95, **consensus_kw) -> dict:
    """Density and multimer share of the consensus with intervals from resampling annotators.

    Each resample draws as many annotators as there are, with replacement, and rebuilds the
    consensus (:func:`build_consensus` with ``consensus_kw``): how much the statistics would
    change with another panel of equally skilled annotators.
    """
    names = [k for k in labels if k in areas_nm2]
    n_ann = max((len(labels[k]) for k in names), default=0)
    areas = [areas_nm2[k] for k in names]
    pxs = [pixel_sizes_nm[k] for k in names]
    sub = {k: labels[k] for k in names}
    full = build_consensus(sub, **consensus_kw)
    est = point_statistics([full.images[k].xy for k in names], areas_nm2=areas, pixel_sizes_nm=pxs,
                           multimer_cutoff_nm=multimer_cutoff_nm)
    rng = np.random.default_rng(seed)
    dens, mult = [], []
    for _ in range(int(n_resamples)):
        pick = rng.integers(0, n_ann, n_ann)
        c = build_consensus({k: [labels[k][a] for a in pick] for k in names}, **consensus_kw)
        s = point_statistics([c.images[k].xy for k in names], areas_nm2=areas, pixel_sizes_nm=pxs,
                             multimer_cutoff_nm=multimer_cutoff_nm)
        dens.append(s["density_per_nm2"])
        mult.append(s["multimer_share"])
    return {"n_atoms": est["n_atoms"],
            "density_per_nm2": _interval(est["density_per_nm2"], dens, level).as_dict(),
            "multimer_share": _interval(est["multimer_share"], mult, level).as_dict()}
