"""Close pairs: one atom or two? A model comparison on the raw pixels.

Two detections closer than about two atom widths may be two atoms (a dimer)
or one atom whose noisy, slightly elongated image produced two maxima of the
score map. On the labelled ptnc-train frames most detected pairs 5–7 px
(0.15–0.2 nm) apart are the second kind: the experts clicked once (their
multimer share is 0.4 %, the raw detections' 3.5 %). Which one it is cannot be
read off the two scores; it is a question about the pixels.

For every pair of detections closer than ``max_separation_px`` this stage
fits, on the raw pixels of a square window around the pair's midpoint, each on
a tilted background plane ``b + bx·x + by·y``:

* **one atom**: ``A·G(x − p; sᵤ, sᵥ, θ)``, an elliptical Gaussian with free
  axes in [0.5, 2.5] × ``atom_sigma_px`` (9 parameters with the plane): a
  single atom smeared by scan distortion, drift or a noisy support bump may
  be elongated, and
* **two atoms**: ``A₁·G(x − p₁; s) + A₂·G(x − p₂; s)``, round, with one shared
  width ``s`` restricted to the atom size from the calibration
  (``atom_sigma_px`` × [0.8, 1.25]; 10 parameters),

by least squares, and compares them with the Bayesian information criterion
under Gaussian pixel noise of unknown variance measured in the same window
(profile likelihood, ``BIC = n·ln(RSS/n) + k·ln n``). Real noise is correlated
(scan-line jitter, support texture the size of an atom), so ``n`` is the
*effective* number of independent pixels, ``n·(1−ρx)/(1+ρx)·(1−ρy)/(1+ρy)``
with the lag-1 autocorrelations ρ of the two-atom fit's residuals — the
measured noise model of the window. ``ΔBIC = BIC₁ − BIC₂`` (> 0 favours two
atoms) gives the posterior probability of two atoms

    p_two = 1 / (1 + exp(−(slope·ΔBIC/2 + prior_log_odds + separation_prior(d))))

with ``slope`` 1 and ``prior_log_odds`` 0 (no constant is tuned), and a
geometric prior (:func:`separation_prior`): two metal atoms are never closer
than their bond length (Pt 0.277 nm) and appear closer only in projection, so
a pair 0.13 nm apart starts at prior odds 1:8 and one ≥ 0.277 nm apart at
e²:1. A pair with ``p_two < 0.5`` is merged into one atom: the stronger
detection survives, moved to the one-atom fit's centre, with that fit's
amplitude, (geometric-mean) width, background, intensity and residual.

Pairs are examined closest first; a merged survivor is re-examined against its
remaining close neighbours (chains and triples are resolved pairwise).

**The split move** (the other direction): the detector's DoG maxima and its
0.176 nm NMS give a dimer closer than ≈ 0.25 nm *one* detection, which no
pair decision can see. So every detection left without a pair decision gets
a cheap shape test, :func:`spot_elongation`: the separation that the second
moments of its spot imply and how many standard errors of the window's noise
that elongation is. Only spots with an implied separation ≥
``split_min_elongation_px`` (0.10 nm) *and* an elongation ≥
``split_min_elongation_z`` (4) standard errors get the fits
(:func:`decide_split`): the same one-atom and two-atom models, BIC, effective
pixel count and separation prior as a pair, on a ``3σ`` window around the
detection, with the pixels within 2.5σ of every other detection left out. The
prior is capped at 0 (a second atom hidden in one spot is closer than the
detector resolves; long separations earn no bonus) and ``split_prior_log_odds``
(default 0) is added. A spot with ``p_two ≥ 0.5`` whose two-atom fit keeps the
second atom in the spot (separation ≤ ``max_separation_px``, detection within
0.4·d of the midpoint, neither atom under a quarter of the other's amplitude)
becomes two atoms: the brighter at the detection's row, the other right after
it, both with the two-atom fit's amplitude, width, background, intensity and
residual. ``split_probability`` is ``p_two`` of the split decision for the
spots that were fitted (both kinds of decision report it).

**Solvers.** The fits run either as a batched bounded Levenberg–Marquardt in
numpy (``solver="lm"``, the default: all pairs of a merge round and all spots
of the split move at once, each window laid out on a padded grid of a size
fixed by the stage's parameters, with zero weight outside it) or one
``scipy.optimize.least_squares(method="trf")`` at a time (``solver="scipy"``,
the reference). Both use the same models, bounds, starts and early exit;
every window keeps its own damping and stopping rule, so its result does not
depend on what else is in the batch. ``benchmarks/close_pairs_solvers.py``
compares their decisions (docs/confidence.md).

Exactness across tiling: the stage runs after the global non-maximum
suppression, on the final detection table, and reads its windows from the
whole image (or the tiled source) directly — so it does not depend on tiles or
halos, and every path (frame, tiled, montage, live) gives the same result.
The windows are ``⌈d/2 + 2.5·atom_sigma_px⌉`` px around the midpoint; the
split move's windows are ``⌈3·atom_sigma_px⌉`` px around the detection and its
masks reach ``2.5·atom_sigma_px`` further (its reach is local and bounded; it
reads the same whole image in every path, so no halo is involved either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass, replace

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

from ._validate import as_points, check_positive

__all__ = ["PairDecisions", "resolve_pairs", "apply_pair_decisions", "decide_pair", "decide_split",
           "spot_elongation", "separation_prior", "effective_pixels", "PAIR_DEFAULTS", "SOLVERS"]

#: Defaults of the stage (physical lengths in nm; converted with the calibration).
#: ``atom_sigma_nm``: the median fitted width of ptnc-train atoms (3.2 px at
#: 0.0293 nm/px; the simulator's default probe gives 0.106 nm). ``bond_nm``: Pt–Pt.
#: No value here was tuned on ptnc-train (docs/confidence.md shows the
#: sensitivity: ``benchmarks/close_pairs.py --real --prior-log-odds``).
PAIR_DEFAULTS = {"max_separation_nm": 0.30, "atom_sigma_nm": 0.095, "slope": 1.0,
                 "prior_log_odds": 0.0, "bond_nm": 0.277, "split_min_elongation_nm": 0.10,
                 "split_min_elongation_z": 4.0,
                 "split_prior_log_odds": 0.0}


def separation_prior(d_px: float, bond_px: float | None) -> float:
    """Prior log-odds of two atoms at projected separation ``d_px``: two metal
    atoms cannot be closer than their bond length ``bond_px``; they appear
    closer only in projection, ``d = b·sin θ``. For a bond direction uniform on
    the hemisphere above the support, ``P(d_proj ≤ d) = 1 − √(1 − (d/b)²)``;
    its log-odds (clipped to [−4, 2]) is the prior. Flat-lying dimers are more
    likely than steep ones, so this is generous to "two" at short ``d``."""
    if bond_px is None or not bond_px > 0:
        return 0.0
    r = min(d_px / bond_px, 1.0)
    p = 1.0 - math.sqrt(max(1.0 - r * r, 0.0))
    if p <= 0.0:
        return -4.0
    if p >= 1.0:
        return 2.0
    return min(max(math.log(p / (1.0 - p)), -4.0), 2.0)

#: Largest width of the one-atom model's ellipse axes, in atom sigmas.
_MAX_WIDTH = 2.5

#: Detection columns replaced by the one-atom fit when a pair is merged.
_FIT_COLUMNS = ("amplitude", "sigma_px", "background", "intensity", "residual")


@dataclass(frozen=True)
class PairDecisions:
    """Decisions of :func:`resolve_pairs` on N detections and P examined pairs.

    Attributes
    ----------
    keep : (N,) bool
        False for detections merged into a stronger partner.
    xy : (N, 2) float64
        Positions after merging (survivors of a merge at the one-atom fit's centre).
    split_probability : (N,) float64
        Probability that the detection and its closest examined partner are two
        atoms (the last decision that involved it); NaN when it had no partner
        within ``max_separation_px``.
    one_atom_fit : (N, 5) float64
        For merged survivors: amplitude, sigma_px, background, intensity,
        residual of the one-atom fit; NaN elsewhere.
    pairs : (P, 2) int64
        Examined pairs (i, j), in the order they were decided.
    separation_px, delta_bic, p_two : (P,) float64
    merged : (P,) bool
    params : dict
        Resolved parameters.
    split_fit : (N, 5) float64
        For detections split in two by the split move: amplitude, sigma_px,
        background, intensity, residual of the first atom of the two-atom fit
        (its position is in ``xy``); NaN elsewhere.
    added_parent, added_xy, added_fit, added_split_probability : (K,), (K, 2), (K, 5), (K,)
        The K atoms the split move added: the detection each was split from,
        position, fit columns (as ``split_fit``) and ``p_two``.
    split_tests : dict of (T,) arrays
        The detections the split move fitted (``i``), their ``elongation_px``
        and ``elongation_z`` (:func:`spot_elongation`), ``delta_bic``, ``p_two``, ``separation_px`` of
        the two-atom fit and ``split``.
    """

    keep: np.ndarray
    xy: np.ndarray
    split_probability: np.ndarray
    one_atom_fit: np.ndarray
    pairs: np.ndarray
    separation_px: np.ndarray
    delta_bic: np.ndarray
    p_two: np.ndarray
    merged: np.ndarray
    params: dict = field(default_factory=dict)
    split_fit: np.ndarray | None = None
    added_parent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    added_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    added_fit: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    added_split_probability: np.ndarray = field(default_factory=lambda: np.zeros(0))
    split_tests: dict = field(default_factory=dict)

    def table(self) -> dict[str, np.ndarray]:
        """The examined pairs as columns (i, j, separation_px, delta_bic, p_two, merged)."""
        return {"i": self.pairs[:, 0], "j": self.pairs[:, 1], "separation_px": self.separation_px,
                "delta_bic": self.delta_bic, "p_two": self.p_two, "merged": self.merged}

    def source(self) -> np.ndarray:
        """(M,) int64: for each row of the table after the stage, the input row it
        comes from — kept detections in input order, each followed by the atoms
        split off it (so per-row data such as a montage's tile owner follows with
        ``owner[decisions.source()]``)."""
        order, pos = self._rows()
        return order[pos]

    def _rows(self):
        """(order, pos): the kept input rows followed by the added atoms' parents,
        and the permutation that puts each added atom right after its parent
        (``pos[r] ≥ keep.sum()`` marks output row r as added atom
        ``pos[r] − keep.sum()``)."""
        kept = np.flatnonzero(self.keep)
        order = np.concatenate([kept, self.added_parent]).astype(np.int64)
        tie = np.concatenate([np.zeros(len(kept), np.int64),
                              np.ones(len(self.added_parent), np.int64)])
        return order, np.lexsort((np.arange(len(order)), tie, order))


def _window(image, cx: float, cy: float, half: int):
    """Finite pixels of the square ``half`` px around (cx, cy) as float64
    coordinates and values (rows/cols clipped to the image)."""
    h, w = image.shape[:2]
    xi, yi = int(math.floor(cx + 0.5)), int(math.floor(cy + 0.5))
    y0, y1 = max(yi - half, 0), min(yi + half + 1, h)
    x0, x1 = max(xi - half, 0), min(xi + half + 1, w)
    if y1 <= y0 or x1 <= x0:
        return np.zeros(0), np.zeros(0), np.zeros(0), (0, 0, 0, 0)
    v = np.asarray(image[y0:y1, x0:x1], dtype=np.float32).astype(np.float64)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    ok = np.isfinite(v)
    return (xx[ok].astype(np.float64), yy[ok].astype(np.float64), v[ok], (x0, x1, y0, y1))


def _gauss(xx, yy, x, y, s):
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2.0 * s * s))


def _fit_setup(xx, yy, v, p1, p2, w1, w2, sigma, lims):
    """Everything the fits of one window need before they start, shared by both
    solvers: the plane's centre, the bounds of both models and the one-atom
    start (x, y, A, sᵤ, b, bx, by, sᵥ, θ)."""
    x0, x1, y0, y1 = lims
    lo_b, hi_b = float(v.min()), float(v.max())
    span = max(hi_b - lo_b, 1e-12)
    b0 = float(np.percentile(v, 20))
    amp0 = max(float(np.percentile(v, 98)) - b0, 1e-3 * span)
    xlo, xhi, ylo, yhi = x0 - 0.5, x1 - 0.5, y0 - 0.5, y1 - 0.5
    c = (w1 * p1 + w2 * p2) / (w1 + w2)
    slope_max = 4.0 * span / max(x1 - x0, y1 - y0, 1)
    ang = math.atan2(float(p2[1] - p1[1]), float(p2[0] - p1[0]))
    lb1 = np.array([xlo, ylo, 0.0, 0.5 * sigma, lo_b - span, -slope_max, -slope_max, 0.5 * sigma,
                    -2 * math.pi])
    ub1 = np.array([xhi, yhi, 4.0 * span, _MAX_WIDTH * sigma, hi_b + span, slope_max, slope_max,
                    _MAX_WIDTH * sigma, 2 * math.pi])
    q1 = np.clip([c[0], c[1], amp0, 1.3 * sigma, b0, 0.0, 0.0, sigma, ang], lb1 + 1e-9, ub1 - 1e-9)
    lb2 = np.array([xlo, ylo, 0.0, xlo, ylo, 0.0, lo_b - span, 0.8 * sigma, -slope_max, -slope_max])
    ub2 = np.array([xhi, yhi, 4.0 * span, xhi, yhi, 4.0 * span, hi_b + span, 1.25 * sigma, slope_max,
                    slope_max])
    return {"mx": float(xx.mean()), "my": float(yy.mean()), "span": span, "lb1": lb1, "ub1": ub1,
            "q1": q1, "lb2": lb2, "ub2": ub2}


def _two_atom_starts(a1, p1, p2, setup, sigma, *, one_start):
    """Start vectors of the two-atom fit from the one-atom fit ``a1``: the
    detections, the one-atom fit split by ± half the detections' separation,
    and the one-atom fit split along its long axis (with ``one_start``: only
    that, or the detections when the ellipse is nearly round)."""
    starts = [(p1, p2)]
    # Second start: the one-atom fit split by ± half the detections' separation.
    half = 0.5 * (p2 - p1)
    starts.append((a1[:2] - half, a1[:2] + half))
    # Third: split along the ellipse's long axis by what its elongation implies
    # for two round atoms (σ_long² ≈ σ² + D²/4); detections of a dimer sit
    # closer together than its atoms.
    s_long, s_short = (a1[3], a1[7]) if a1[3] >= a1[7] else (a1[7], a1[3])
    th = a1[8] if a1[3] >= a1[7] else a1[8] + 0.5 * math.pi
    dd = math.sqrt(max(s_long * s_long - s_short * s_short, 0.0))
    if dd > 0.5:
        off = dd * np.array([math.cos(th), math.sin(th)])
        starts.append((a1[:2] - off, a1[:2] + off))
        if one_start:
            starts = starts[-1:]
    elif one_start:
        starts = starts[:1]
    amp = 0.5 * a1[2] + 1e-3 * setup["span"]
    return [np.clip([s1[0], s1[1], amp, s2[0], s2[1], amp, a1[4], sigma, a1[5], a1[6]],
                    setup["lb2"] + 1e-9, setup["ub2"] - 1e-9) for s1, s2 in starts]


def _fit_pair(xx, yy, v, p1, p2, w1, w2, sigma, lims, *, one_start=False):
    """Least-squares fits of the one- and two-atom models, each on a tilted
    background plane ``b + bx·(x − x̄) + by·(y − ȳ)`` (support thickness varies
    over a window), with scipy's bounded trust-region solver: the reference of
    :func:`_fit_pairs_lm`. Returns (rss1, params1 (x, y, A, s, b, bx, by),
    min(rss2, rss1), two-atom residuals, two-atom params).
    The two-atom model is started from the detections and from the one-atom
    fit split along its own elongation; the better optimum counts. With
    ``one_start`` (the split move) only the elongation start runs, or the
    given one when the ellipse is nearly round."""
    setup = _fit_setup(xx, yy, v, p1, p2, w1, w2, sigma, lims)
    dx, dy = xx - setup["mx"], yy - setup["my"]

    def g1(q):
        # elliptical: widths q[3], q[7] along angle q[8]
        ct, st = math.cos(q[8]), math.sin(q[8])
        u = (xx - q[0]) * ct + (yy - q[1]) * st
        w = -(xx - q[0]) * st + (yy - q[1]) * ct
        return np.exp(-0.5 * (u * u / (q[3] * q[3]) + w * w / (q[7] * q[7])))

    def r1(q):
        return q[4] + q[5] * dx + q[6] * dy + q[2] * g1(q) - v

    def j1(q):
        ct, st = math.cos(q[8]), math.sin(q[8])
        ex, ey = xx - q[0], yy - q[1]
        u, w = ex * ct + ey * st, -ex * st + ey * ct
        su2, sv2 = q[3] * q[3], q[7] * q[7]
        g = np.exp(-0.5 * (u * u / su2 + w * w / sv2))
        ag = q[2] * g
        return np.column_stack([ag * (u * ct / su2 - w * st / sv2), ag * (u * st / su2 + w * ct / sv2),
                                g, ag * u * u / (su2 * q[3]), np.ones_like(g), dx, dy,
                                ag * w * w / (sv2 * q[7]), ag * u * w * (1.0 / sv2 - 1.0 / su2)])

    f1 = least_squares(r1, setup["q1"], jac=j1, bounds=(setup["lb1"], setup["ub1"]), method="trf",
                       x_scale="jac", max_nfev=400)

    def r2(q):
        return (q[6] + q[8] * dx + q[9] * dy + q[2] * _gauss(xx, yy, q[0], q[1], q[7])
                + q[5] * _gauss(xx, yy, q[3], q[4], q[7]) - v)

    def j2(q):
        s, s2 = q[7], q[7] * q[7]
        ga = _gauss(xx, yy, q[0], q[1], s)
        gb = _gauss(xx, yy, q[3], q[4], s)
        exa, eya, exb, eyb = xx - q[0], yy - q[1], xx - q[3], yy - q[4]
        aa, ab = q[2] * ga, q[5] * gb
        ds = (aa * (exa * exa + eya * eya) + ab * (exb * exb + eyb * eyb)) / (s2 * s)
        return np.column_stack([aa * exa / s2, aa * eya / s2, ga, ab * exb / s2, ab * eyb / s2, gb,
                                np.ones_like(ga), ds, dx, dy])

    a1 = f1.x
    rss1 = float(f1.fun @ f1.fun)
    rss2, res2, q2_best = np.inf, None, None
    for q2 in _two_atom_starts(a1, p1, p2, setup, sigma, one_start=one_start):
        if rss2 < 0.8 * rss1:
            # Already clearly better than one atom: another optimum could only
            # strengthen "two"; skip the remaining starts (they cost the time).
            break
        f2 = least_squares(r2, q2, jac=j2, bounds=(setup["lb2"], setup["ub2"]), method="trf",
                           x_scale="jac", max_nfev=300)
        if float(f2.fun @ f2.fun) < rss2:
            rss2, res2, q2_best = float(f2.fun @ f2.fun), f2.fun, f2.x
    # The two-atom model nests "one atom of the calibrated size"; never let a
    # worse local optimum of the larger model count as evidence against it.
    return rss1, _one_atom_params(a1), min(rss2, rss1), res2, q2_best


def _one_atom_params(q):
    """(x, y, A, s, b, bx, by) of a one-atom fit, s the equivalent round width."""
    return np.array([q[0], q[1], q[2], math.sqrt(q[3] * q[7]), q[4], q[5], q[6]])


def _one_atom_model(q, xx, yy, dx, dy, v, m, *, jac):
    """Masked residuals (B, n) of the elliptical one-atom model for B windows
    (pixels with ``m`` 0 count nothing) and, with ``jac``, their Jacobian (B, 9, n)."""
    ct, st = np.cos(q[:, 8:9]), np.sin(q[:, 8:9])
    ex, ey = xx - q[:, 0:1], yy - q[:, 1:2]
    u, w = ex * ct + ey * st, -ex * st + ey * ct
    su2, sv2 = q[:, 3:4] * q[:, 3:4], q[:, 7:8] * q[:, 7:8]
    g = np.exp(-0.5 * (u * u / su2 + w * w / sv2))
    ag = q[:, 2:3] * g
    r = (q[:, 4:5] + q[:, 5:6] * dx + q[:, 6:7] * dy + ag - v) * m
    if not jac:
        return r, None
    agm, um, wm = ag * m, u / su2, w / sv2
    jmat = np.empty((len(q), 9, xx.shape[1]))
    jmat[:, 0] = agm * (um * ct - wm * st)
    jmat[:, 1] = agm * (um * st + wm * ct)
    jmat[:, 2] = g * m
    jmat[:, 3] = agm * u * um / q[:, 3:4]
    jmat[:, 4] = m
    jmat[:, 5] = dx * m
    jmat[:, 6] = dy * m
    jmat[:, 7] = agm * w * wm / q[:, 7:8]
    jmat[:, 8] = agm * u * w * (1.0 / sv2 - 1.0 / su2)
    return r, jmat


def _two_atom_model(q, xx, yy, dx, dy, v, m, *, jac):
    """As :func:`_one_atom_model` for two round atoms of one width (B, 10, n)."""
    s2 = q[:, 7:8] * q[:, 7:8]
    exa, eya, exb, eyb = xx - q[:, 0:1], yy - q[:, 1:2], xx - q[:, 3:4], yy - q[:, 4:5]
    ra, rb = exa * exa + eya * eya, exb * exb + eyb * eyb
    ga, gb = np.exp(-ra / (2.0 * s2)), np.exp(-rb / (2.0 * s2))
    aa, ab = q[:, 2:3] * ga, q[:, 5:6] * gb
    r = (q[:, 6:7] + q[:, 8:9] * dx + q[:, 9:10] * dy + aa + ab - v) * m
    if not jac:
        return r, None
    aam, abm = aa * (m / s2), ab * (m / s2)
    jmat = np.empty((len(q), 10, xx.shape[1]))
    jmat[:, 0] = aam * exa
    jmat[:, 1] = aam * eya
    jmat[:, 2] = ga * m
    jmat[:, 3] = abm * exb
    jmat[:, 4] = abm * eyb
    jmat[:, 5] = gb * m
    jmat[:, 6] = m
    jmat[:, 7] = (aam * ra + abm * rb) / q[:, 7:8]
    jmat[:, 8] = dx * m
    jmat[:, 9] = dy * m
    return r, jmat


#: Iteration cap of the fast solver (each iteration evaluates the model once
#: more; the reference's evaluation caps are 400 and 300).
_LM_MAX_ITER = 300


def _bounded_lm(model, q0, lb, ub, data, *, max_iter=_LM_MAX_ITER):
    """Bounded Levenberg–Marquardt on B independent least-squares problems at
    once: ``model(q, *data, jac=…)`` gives masked residuals (B, n) and the
    Jacobian (B, p, n); ``q0``, ``lb``, ``ub`` are (B, p), ``data`` a tuple of
    (B, n) arrays. Every row keeps its own damping, step and stopping rule, and
    every reduction runs along that row only, so a row's result does not
    depend on the other rows (tiled, montage and whole-frame runs batch
    different windows together and must agree exactly).

    Steps solve ``(JᵀJ + λ·D) δ = −Jᵀr`` with Marquardt's scaling D (the running
    maximum of diag JᵀJ, as scipy's ``x_scale="jac"``); a parameter at a bound
    whose gradient pushes outward is held (active set); a coordinate that would
    leave the box stops at 99 % of its way to the bound (iterates stay strictly
    feasible, as in scipy's trf). A step is kept when it lowers the cost; λ follows
    Nielsen's rule (× max(1/3, 1 − (2ρ − 1)³) after a kept step with gain ratio
    ρ, × 2, 4, 8, … after rejected ones). A row stops when a kept step lowers
    its cost by less than 1e-10 of it (scipy's ``ftol`` is 1e-8) or moves no
    parameter by more than 1e-10 of its size, when λ exceeds 1e12 (no descent
    left), or after ``max_iter`` iterations.

    Returns (q (B, p), residuals (B, n)).
    """
    q_out = q0.astype(np.float64, copy=True)
    nb, npar = q_out.shape
    if nb == 0:
        return q_out, np.zeros((0, data[0].shape[1]))
    r_out = np.zeros(data[0].shape)
    # The rows still running, compacted whenever some stop (no per-step gathers).
    ids = np.arange(nb)
    q, lb, ub, data = q_out.copy(), lb.astype(np.float64), ub.astype(np.float64), tuple(data)
    r, jmat = model(q, *data, jac=True)
    cost = (r * r).sum(axis=1)
    lam = np.full(nb, 1e-3)
    nu = np.full(nb, 2.0)
    scale = np.zeros((nb, npar))
    eye = np.eye(npar)
    for _ in range(max_iter):
        grad = (jmat * r[:, None, :]).sum(axis=2)
        hess = np.matmul(jmat, jmat.transpose(0, 2, 1))
        scale = np.maximum(scale, np.diagonal(hess, axis1=1, axis2=2))
        dscale = np.maximum(scale, 1e-12 * scale.max(axis=1, keepdims=True) + 1e-300)
        held = ((q <= lb) & (grad > 0)) | ((q >= ub) & (grad < 0))
        free = ~held
        a = hess * (free[:, :, None] & free[:, None, :]) + eye * (
            lam[:, None] * dscale * free + held)[:, None, :]
        step = -np.linalg.solve(a, (grad * free)[:, :, None])[:, :, 0]
        # Strictly feasible iterates (as scipy's trf): a step that would leave the
        # box goes 99 % of the way to the bound. A parameter exactly at a bound
        # could be stuck there (an amplitude of 0 zeroes its position's
        # derivatives).
        qn = q + step
        qn = np.where(qn < lb, lb + 0.01 * (q - lb), np.where(qn > ub, ub - 0.01 * (ub - q), qn))
        # the Jacobian comes with the trial (most steps are kept: one call, not two)
        rn, jn = model(qn, *data, jac=True)
        cn = (rn * rn).sum(axis=1)
        better = cn < cost
        small = (cost - cn <= 1e-10 * cost) | (np.abs(qn - q) <= 1e-10 * (np.abs(q) + 1e-10)).all(axis=1)
        # gain ratio: the actual decrease over the linear model's
        dq = qn - q
        pred = -(2.0 * (grad * dq).sum(axis=1)
                 + (dq * np.matmul(hess, dq[:, :, None])[:, :, 0]).sum(axis=1))
        rho = np.divide(cost - cn, pred, out=np.zeros(len(q)), where=pred > 0)
        q[better], r[better], cost[better], jmat[better] = (qn[better], rn[better], cn[better],
                                                          jn[better])
        gain = np.maximum(1.0 / 3.0, 1.0 - (2.0 * np.clip(rho, -1.0, 2.0) - 1.0) ** 3)
        lam = np.where(better, np.maximum(lam * gain, 1e-15), lam * nu)
        nu = np.where(better, 2.0, 2.0 * nu)
        stop = (better & small) | (~better & (lam > 1e12))
        if stop.any():
            q_out[ids[stop]], r_out[ids[stop]] = q[stop], r[stop]
            go = ~stop
            if not go.any():
                return q_out, r_out
            ids, q, lb, ub, r, jmat, cost, lam, nu, scale = (
                x[go] for x in (ids, q, lb, ub, r, jmat, cost, lam, nu, scale))
            data = tuple(d[go] for d in data)
    q_out[ids], r_out[ids] = q, r
    return q_out, r_out


def _fit_pairs_lm(wins, p1s, p2s, w1s, w2s, sigma, *, one_start=False):
    """:func:`_fit_pair` on B windows at once with :func:`_bounded_lm` (the
    fast solver): same models, bounds, starts and early exit, per-window
    results independent of the batch. ``wins`` is (xx, yy, v, m, lims): (B, n)
    padded pixel coordinates, values and 0/1 mask, and B window limits. Returns
    a list of B tuples as :func:`_fit_pair`."""
    xx, yy, v, m, lims = wins
    nb = len(v)
    if nb == 0:
        return []
    setups = []
    for b in range(nb):
        ok = m[b] > 0
        setups.append(_fit_setup(xx[b, ok], yy[b, ok], v[b, ok], p1s[b], p2s[b], w1s[b], w2s[b],
                                 sigma, lims[b]))
    dx = xx - np.array([s["mx"] for s in setups])[:, None]
    dy = yy - np.array([s["my"] for s in setups])[:, None]
    data = (xx, yy, dx, dy, v, m)
    q1, _ = _bounded_lm(_one_atom_model, np.array([s["q1"] for s in setups]),
                        np.array([s["lb1"] for s in setups]), np.array([s["ub1"] for s in setups]),
                        data)
    r1, _ = _one_atom_model(q1, *data, jac=False)
    rss1 = (r1 * r1).sum(axis=1)
    starts = [_two_atom_starts(q1[b], p1s[b], p2s[b], setups[b], sigma, one_start=one_start)
              for b in range(nb)]
    rss2 = np.full(nb, np.inf)
    res2 = np.zeros_like(v)
    q2 = np.full((nb, 10), np.nan)
    lb2 = np.array([s["lb2"] for s in setups])
    ub2 = np.array([s["ub2"] for s in setups])
    for k in range(max(len(s) for s in starts)):
        # Skip the remaining starts of a window once "two" is clearly better.
        rows = np.array([b for b in range(nb) if len(starts[b]) > k
                         and not rss2[b] < 0.8 * rss1[b]], np.int64)
        if not len(rows):
            break
        qk, rk = _bounded_lm(_two_atom_model, np.array([starts[b][k] for b in rows]), lb2[rows],
                             ub2[rows], tuple(d[rows] for d in data))
        ck = (rk * rk).sum(axis=1)
        better = ck < rss2[rows]
        sel = rows[better]
        rss2[sel], res2[sel], q2[sel] = ck[better], rk[better], qk[better]
    out = []
    for b in range(nb):
        ok = m[b] > 0
        out.append((float(rss1[b]), _one_atom_params(q1[b]), float(min(rss2[b], rss1[b])),
                    res2[b, ok], q2[b]))
    return out


def effective_pixels(resid, xx, yy, lims) -> float:
    """Number of independent pixels in the window under the measured noise:
    the two-atom fit's residuals, laid out on the window grid, have lag-1
    autocorrelations ρx, ρy (scan-line jitter and support texture make real
    noise correlated); an AR(1) field of n pixels carries the information of
    ``n·(1−ρx)/(1+ρx)·(1−ρy)/(1+ρy)`` independent ones."""
    x0, x1, y0, y1 = lims
    grid = np.zeros((y1 - y0, x1 - x0))
    have = np.zeros_like(grid, bool)
    r, c = (yy - y0).astype(np.int64), (xx - x0).astype(np.int64)
    grid[r, c] = resid - resid.mean()
    have[r, c] = True
    n = len(resid)
    factor = 1.0
    for a, b, ha, hb in ((grid[:, 1:], grid[:, :-1], have[:, 1:], have[:, :-1]),
                         (grid[1:, :], grid[:-1, :], have[1:, :], have[:-1, :])):
        m = ha & hb
        den = float(np.sqrt((a[m] ** 2).sum() * (b[m] ** 2).sum()))
        rho = float((a[m] * b[m]).sum()) / den if den > 0 else 0.0
        rho = min(max(rho, 0.0), 0.95)  # anti-correlation would add information: ignore it
        factor *= (1.0 - rho) / (1.0 + rho)
    return max(n * factor, 8.0)


#: The solvers of the fits: "lm", the batched bounded Levenberg–Marquardt in
#: numpy (:func:`_bounded_lm`, the default), and "scipy", one
#: ``scipy.optimize.least_squares(method="trf")`` per fit (the reference).
SOLVERS = ("lm", "scipy")


def _check_solver(solver) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS} ('lm': the fast batched solver, "
                         f"'scipy': the reference), got {solver!r}")
    return solver


def _fit_windows(wins, p1s, p2s, w1s, w2s, sigma, pad, *, one_start, solver):
    """The fits of :func:`_fit_pair` for a list of windows ``wins`` = [(xx, yy,
    v, lims)] of finite pixels, by ``solver``. The fast solver lays each window
    out on a (2·pad + 1)² grid around its centre pixel (``pad`` ≥ the window's
    half width, fixed by the stage's parameters so every path pads alike),
    with weight 0 for pixels outside it, clipped, non-finite or left out."""
    if solver == "scipy":
        return [_fit_pair(xx, yy, v, p1, p2, w1, w2, sigma, lims, one_start=one_start)
                for (xx, yy, v, lims), p1, p2, w1, w2 in zip(wins, p1s, p2s, w1s, w2s)]
    side = 2 * pad + 1
    nb = len(wins)
    gx, gy = np.zeros((nb, side * side)), np.zeros((nb, side * side))
    gv, gm = np.zeros((nb, side * side)), np.zeros((nb, side * side))
    off = np.arange(-pad, pad + 1, dtype=np.float64)
    for b, (xx, yy, v, lims) in enumerate(wins):
        x0, x1, y0, y1 = lims
        # a centre pixel from which the (possibly edge-clipped) window reaches ≤ pad
        cx, cy = (x0 + x1 - 1) // 2, (y0 + y1 - 1) // 2
        gx[b] = np.tile(cx + off, side)
        gy[b] = np.repeat(cy + off, side)
        at = ((yy - (cy - pad)) * side + (xx - (cx - pad))).astype(np.int64)
        gv[b, at] = v
        gm[b, at] = 1.0
    return _fit_pairs_lm((gx, gy, gv, gm, [w[3] for w in wins]), p1s, p2s, w1s, w2s, sigma,
                         one_start=one_start)


def _decide_pairs(image, p1s, p2s, w1s, w2s, *, atom_sigma_px, slope, prior_log_odds, bond_px,
                  pad, solver):
    """:func:`decide_pair` for lists of pairs, the fits batched (``pad``: see
    :func:`_fit_windows`; at least the largest window's half width)."""
    nan = (float("nan"), float("nan"), np.full(6, np.nan))
    out = [nan] * len(p1s)
    todo, wins, ds = [], [], []
    for b, (p1, p2) in enumerate(zip(p1s, p2s)):
        d = float(np.hypot(*(p1 - p2)))
        half = int(math.ceil(d / 2 + 2.5 * atom_sigma_px))
        mid = 0.5 * (p1 + p2)
        xx, yy, v, lims = _window(image, mid[0], mid[1], half)
        if len(v) < 20 or not np.ptp(v) > 0:
            continue
        todo.append(b)
        wins.append((xx, yy, v, lims))
        ds.append(d)
    fits = _fit_windows(wins, [p1s[b] for b in todo], [p2s[b] for b in todo],
                        [max(w1s[b], 1e-6) for b in todo], [max(w2s[b], 1e-6) for b in todo],
                        atom_sigma_px, pad, one_start=False, solver=solver)
    for b, (xx, yy, v, lims), d, (rss1, q1, rss2, res2, _) in zip(todo, wins, ds, fits):
        n_eff = effective_pixels(res2, xx, yy, lims)
        tiny = 1e-300
        dbic = n_eff * math.log(max(rss1, tiny) / max(rss2, tiny)) - 1 * math.log(n_eff)
        z = slope * dbic / 2.0 + prior_log_odds + separation_prior(d, bond_px)
        p_two = 1.0 / (1.0 + math.exp(-min(max(z, -700.0), 700.0)))
        out[b] = (dbic, p_two, np.append(np.asarray(q1[:5], np.float64), math.sqrt(rss1 / len(v))))
    return out


def decide_pair(image, p1, p2, *, w1: float = 1.0, w2: float = 1.0, atom_sigma_px: float,
                slope: float = 1.0, prior_log_odds: float = 0.0, bond_px: float | None = None,
                solver: str = "lm"):
    """One decision: (delta_bic, p_two, one-atom fit (x, y, A, s, b, rms)) for the
    detections at ``p1`` and ``p2`` ([x, y] px); ``w1``/``w2`` weight the
    one-atom fit's start. NaN when the window holds too few pixels.
    ``solver``: "lm" (fast) or "scipy" (the reference), see :data:`SOLVERS`."""
    p1, p2 = np.asarray(p1, np.float64), np.asarray(p2, np.float64)
    d = float(np.hypot(*(p1 - p2)))
    return _decide_pairs(image, [p1], [p2], [w1], [w2], atom_sigma_px=atom_sigma_px, slope=slope,
                         prior_log_odds=prior_log_odds, bond_px=bond_px,
                         pad=int(math.ceil(d / 2 + 2.5 * atom_sigma_px)),
                         solver=_check_solver(solver))[0]


def spot_elongation(image, xy, *, atom_sigma_px: float, exclude=None):
    """The cheap shape test of the split move. For each point, the second
    moments of the background-free pixels (plane fitted on the window's rim,
    beyond 2σ) under a Gaussian weight of the atom's width σ (which keeps the
    rim's support texture out). Two round atoms of width σ at separation d
    give, under that weight, two spots of variance σ²/2 at ±d/4: the moment
    matrix's eigenvalue gap is ``λ₁ − λ₂ = d²/16``, so ``4·√(λ₁ − λ₂)`` is the
    separation the spot implies (≈ 0 for one round atom).

    Noise makes every spot look somewhat elongated; the gap's standard error
    under the rim's pixel noise (first-order propagation through the moments)
    says how much. Returns (separation_px, z): the implied separation (N,) and
    the gap over its standard error (N,); NaN where the window leaves the
    image or holds non-finite pixels. Points are processed in blocks of the
    image (one read of each block, arrays of bounded size: montages with
    millions of atoms stream through).

    ``exclude`` ((M, 2) [x, y] px): pixels within 2.5σ of these points (the
    other detections) are left out; a point of ``exclude`` at exactly a
    point's own position is that point, not a neighbour.
    """
    pts = as_points(xy).astype(np.float64)
    sigma = float(atom_sigma_px)
    half = math.ceil(2.5 * sigma)
    h, w = image.shape[:2]
    sep = np.full(len(pts), np.nan)
    zval = np.full(len(pts), np.nan)
    xi = np.floor(pts[:, 0] + 0.5).astype(np.int64)
    yi = np.floor(pts[:, 1] + 0.5).astype(np.int64)
    inside = np.flatnonzero((xi - half >= 0) & (yi - half >= 0) & (xi + half < w)
                            & (yi + half < h))
    if not len(inside):
        return sep, zval
    ex = (np.zeros((0, 2)) if exclude is None
          else np.asarray(exclude, np.float64).reshape(-1, 2))
    tree = cKDTree(ex) if len(ex) else None
    block = _ELONGATION_BLOCK_PX
    key = (yi[inside] // block) * (w // block + 1) + xi[inside] // block
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for grp in np.split(inside[order], bounds):
        y0, y1 = int(yi[grp].min()) - half, int(yi[grp].max()) + half + 1
        x0, x1 = int(xi[grp].min()) - half, int(xi[grp].max()) + half + 1
        region = np.asarray(image[y0:y1, x0:x1], dtype=np.float32)
        off = np.arange(-half, half + 1)
        v = region[(yi[grp, None] - y0 + off)[:, :, None], (xi[grp, None] - x0 + off)[:, None, :]]
        ok = np.isfinite(v).all(axis=(1, 2))
        grp, v = grp[ok], v[ok].astype(np.float64)
        if not len(grp):
            continue
        dx = np.broadcast_to(off[None, None, :] + (xi[grp] - pts[grp, 0])[:, None, None], v.shape)
        dy = np.broadcast_to(off[None, :, None] + (yi[grp] - pts[grp, 1])[:, None, None], v.shape)
        use = np.ones(v.shape, bool)
        if tree is not None:
            near = tree.query_ball_point(pts[grp], (half + 2.5 * sigma) * math.sqrt(2))
            for m, js in enumerate(near):
                for jj in js:
                    ddx, ddy = ex[jj, 0] - pts[grp[m], 0], ex[jj, 1] - pts[grp[m], 1]
                    if ddx == 0.0 and ddy == 0.0:
                        continue  # the point itself
                    use[m] &= (dx[m] - ddx) ** 2 + (dy[m] - ddy) ** 2 > (2.5 * sigma) ** 2
        good, s_, z_ = _moment_elongation(v, dx, dy, use, sigma)
        sep[grp[good]] = s_[good]
        zval[grp[good]] = z_[good]
    return sep, zval


#: Side of the image blocks :func:`spot_elongation` reads at once, px.
_ELONGATION_BLOCK_PX = 256


def _moment_elongation(v, dx, dy, use, sigma):
    """:func:`spot_elongation` on a stack of (M, k, k) windows ``v`` with pixel
    offsets ``dx``, ``dy`` from each point and the pixels to ``use``. Returns
    (good, implied separation, z) as (M,) arrays."""
    r2 = dx * dx + dy * dy
    rim = use & (r2 > 4.0 * sigma * sigma)
    # Plane b + bx·dx + by·dy on each rim: batched normal equations.
    basis = np.stack([np.ones_like(dx), dx, dy], axis=-1) * rim[..., None]  # (M, k, k, 3)
    normal = np.einsum("mijp,mijq->mpq", basis, basis)
    rhs = np.einsum("mijp,mij->mp", basis, v)
    n_rim = rim.sum(axis=(1, 2))
    good = (n_rim >= 8) & (np.abs(np.linalg.det(normal)) > 1e-9)
    normal[~good] = np.eye(3)
    coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
    plane = coef[:, 0, None, None] + coef[:, 1, None, None] * dx + coef[:, 2, None, None] * dy
    resid = (v - plane) * rim
    noise = np.sqrt((resid * resid).sum(axis=(1, 2)) / np.maximum(n_rim - 3, 1))
    g = np.exp(-r2 / (2 * sigma * sigma)) * use
    wgt = (v - plane) * g
    tot = wgt.sum(axis=(1, 2))
    good &= tot > 0
    tot = np.where(good, tot, 1.0)
    mx = (wgt * dx).sum(axis=(1, 2)) / tot
    my = (wgt * dy).sum(axis=(1, 2)) / tot
    ex_, ey_ = dx - mx[:, None, None], dy - my[:, None, None]
    half_diff = 0.5 * (wgt * (ex_ * ex_ - ey_ * ey_)).sum(axis=(1, 2)) / tot
    cxy = (wgt * ex_ * ey_).sum(axis=(1, 2)) / tot
    rad = np.hypot(half_diff, cxy)
    gap = 2.0 * rad  # λ₁ − λ₂
    # d gap / d v_i (the centroid's own shift is second order)
    safe = np.where(rad > 0, rad, 1.0)
    da = (0.5 * (ex_ * ex_ - ey_ * ey_) - half_diff[:, None, None]) * g / tot[:, None, None]
    dc = (ex_ * ey_ - cxy[:, None, None]) * g / tot[:, None, None]
    dgap = 2.0 * (half_diff[:, None, None] * da + cxy[:, None, None] * dc) / safe[:, None, None]
    se = noise * np.sqrt((dgap * dgap).sum(axis=(1, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(rad > 0, np.where(se > 0, gap / se, np.inf), 0.0)
    return good, 4.0 * np.sqrt(gap), z


def _decide_splits(image, ps, excludes, *, atom_sigma_px, slope, prior_log_odds, bond_px,
                   solver):
    """:func:`decide_split` for a list of detections ``ps`` with their
    ``excludes``, the fits batched."""
    sigma = float(atom_sigma_px)
    half = math.ceil(3.0 * sigma)
    nan = (float("nan"), float("nan"), np.full(9, np.nan))
    out = [nan] * len(ps)
    todo, wins, p1s, p2s = [], [], [], []
    for b, (p, exclude) in enumerate(zip(ps, excludes)):
        xx, yy, v, lims = _window(image, p[0], p[1], half)
        if exclude is not None and len(exclude) and len(v):
            ex = np.asarray(exclude, np.float64)
            ex = ex[np.hypot(ex[:, 0] - p[0], ex[:, 1] - p[1]) < half * math.sqrt(2) + 2.5 * sigma]
            keep = np.ones(len(v), bool)
            for x, y in ex:
                keep &= (xx - x) ** 2 + (yy - y) ** 2 > (2.5 * sigma) ** 2
            xx, yy, v = xx[keep], yy[keep], v[keep]
        if len(v) < 20 or not np.ptp(v) > 0:
            continue
        # Start the two atoms ±σ/2 around p along the spot's principal axis; the
        # fit's own elongation-based start (in _fit_pair) refines the separation.
        g = v - np.percentile(v, 20)
        wgt = np.clip(g, 0, None) * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2)
                                           / (2 * sigma * sigma))
        tot = wgt.sum()
        ang = 0.0
        if tot > 0:
            mx, my = (wgt * xx).sum() / tot, (wgt * yy).sum() / tot
            cxx = (wgt * (xx - mx) ** 2).sum() / tot
            cyy = (wgt * (yy - my) ** 2).sum() / tot
            cxy = (wgt * (xx - mx) * (yy - my)).sum() / tot
            ang = 0.5 * math.atan2(2 * cxy, cxx - cyy)
        off = 0.5 * sigma * np.array([math.cos(ang), math.sin(ang)])
        todo.append(b)
        wins.append((xx, yy, v, lims))
        p1s.append(p - off)
        p2s.append(p + off)
    fits = _fit_windows(wins, p1s, p2s, [1.0] * len(todo), [1.0] * len(todo), sigma, half,
                        one_start=True, solver=solver)
    for b, (xx, yy, v, lims), (rss1, _, rss2, res2, q2) in zip(todo, wins, fits):
        if q2 is None or not np.isfinite(q2).all():
            continue
        n_eff = effective_pixels(res2, xx, yy, lims)
        tiny = 1e-300
        dbic = n_eff * math.log(max(rss1, tiny) / max(rss2, tiny)) - 1 * math.log(n_eff)
        d = float(math.hypot(q2[3] - q2[0], q2[4] - q2[1]))
        # A second atom hidden in one spot sits closer than the detector resolves:
        # the projection prior may count against short separations but gives no
        # bonus for long ones (those the detector would have seen as two maxima).
        z = slope * dbic / 2.0 + prior_log_odds + min(separation_prior(d, bond_px), 0.0)
        p_two = 1.0 / (1.0 + math.exp(-min(max(z, -700.0), 700.0)))
        mx, my = float(xx.mean()), float(yy.mean())
        fit = [q2[0], q2[1], q2[2], q2[3], q2[4], q2[5], q2[7], q2[6], math.sqrt(rss2 / len(v))]
        # the plane at each atom is its background; report the plane at the midpoint
        fit[7] = (q2[6] + q2[8] * (0.5 * (q2[0] + q2[3]) - mx)
                  + q2[9] * (0.5 * (q2[1] + q2[4]) - my))
        out[b] = (dbic, p_two, np.asarray(fit, np.float64))
    return out


def decide_split(image, p, *, atom_sigma_px: float, exclude=None, slope: float = 1.0,
                 prior_log_odds: float = 0.0, bond_px: float | None = None, solver: str = "lm"):
    """The split move for one detection at ``p`` ([x, y] px): is its spot one
    atom or two? The same models, criterion and noise model as
    :func:`decide_pair` (one elliptical Gaussian against two round Gaussians of
    the calibrated size, BIC with the effective pixel count, the separation
    prior at the two-atom fit's separation), on the window of ``3σ`` px around
    ``p``; the two-atom fit starts from the spot split along its long axis.
    Pixels within 2.5σ of the points in ``exclude`` (the other detections)
    are left out, so a neighbour cannot pose as the second atom.
    ``solver``: "lm" (fast) or "scipy" (the reference), see :data:`SOLVERS`.

    Returns (delta_bic, p_two, two-atom fit (x1, y1, A1, x2, y2, A2, s, b,
    rms)); NaN when the window holds too few pixels.
    """
    return _decide_splits(image, [np.asarray(p, np.float64)], [exclude],
                          atom_sigma_px=atom_sigma_px, slope=slope, prior_log_odds=prior_log_odds,
                          bond_px=bond_px, solver=_check_solver(solver))[0]


def resolve_pairs(image, xy, *, score, max_separation_px: float, atom_sigma_px: float,
                  slope: float = PAIR_DEFAULTS["slope"],
                  prior_log_odds: float = PAIR_DEFAULTS["prior_log_odds"],
                  bond_px: float | None = None, split_min_elongation_px: float | None = None,
                  split_min_elongation_z: float = PAIR_DEFAULTS["split_min_elongation_z"],
                  split_prior_log_odds: float = PAIR_DEFAULTS["split_prior_log_odds"],
                  solver: str = "lm") -> PairDecisions:
    """Decide, for every pair of detections closer than ``max_separation_px``,
    whether it is one atom or two (see the module docstring).

    Parameters
    ----------
    image : (H, W) array-like
        Raw image (numpy array, memmap or Zarr array; only small windows
        around close pairs are read, as float32 then float64).
    xy : (N, 2) array
        Detections [x, y] px.
    score : (N,) array
        Detection scores (the stronger detection of a merged pair survives).
    max_separation_px : float
        Pairs at most this far apart are examined.
    atom_sigma_px : float
        Gaussian sigma of one atom's image, px (from the calibration).
    slope, prior_log_odds : float
        Calibration of ``p_two`` from ΔBIC.
    bond_px : float, optional
        Bond length of the metal, px: adds :func:`separation_prior` (None: no
        separation prior).
    split_min_elongation_px : float, optional
        The split move (module docstring): detections without a close partner
        whose :func:`spot_elongation` is at least this get the two-atom fit.
        None: no split move.
    split_min_elongation_z : float
        ... and whose elongation is at least this many standard errors of its
        noise (a noisy spot cannot carry the evidence for two atoms: it is
        spared the fit).
    split_prior_log_odds : float
        Prior log-odds that a single detection hides a second atom, added to
        the split move's decisions (negative: stronger evidence needed).
    solver : {"lm", "scipy"}
        The least-squares solver of the fits (:data:`SOLVERS`): "lm", a
        batched bounded Levenberg–Marquardt in numpy (all pairs of a round and
        all spots of the split move at once), or "scipy", one
        ``least_squares(method="trf")`` per fit, the reference. Both give the
        same decisions on the benchmark sets (docs/confidence.md).

    Returns
    -------
    PairDecisions

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:40, 0:40]
    >>> img = 10 + 100 * np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / (2 * 3.0 ** 2))
    >>> img = img + np.random.default_rng(0).normal(0, 2, img.shape)
    >>> r = resolve_pairs(img, [[19.0, 20.0], [22.0, 20.0]], score=[5.0, 4.0],
    ...                   max_separation_px=8, atom_sigma_px=3.0)
    >>> r.keep.tolist(), bool(r.split_probability[0] < 0.5)
    ([True, False], True)
    """
    pts = as_points(xy).astype(np.float64)
    n = len(pts)
    sc = np.ascontiguousarray(score, dtype=np.float64).reshape(-1)
    if len(sc) != n:
        raise ValueError(f"score has {len(sc)} entries but xy has {n} points")
    check_positive(max_separation_px, name="max_separation_px", allow_zero=True)
    check_positive(atom_sigma_px, name="atom_sigma_px")
    _check_solver(solver)
    if getattr(image, "ndim", len(getattr(image, "shape", ()))) != 2:
        raise ValueError(f"image must be 2-D, got shape {getattr(image, 'shape', None)}")
    params = {"max_separation_px": float(max_separation_px), "atom_sigma_px": float(atom_sigma_px),
              "slope": float(slope), "prior_log_odds": float(prior_log_odds),
              "bond_px": None if bond_px is None else float(bond_px),
              "split_min_elongation_px": None if split_min_elongation_px is None
              else float(split_min_elongation_px),
              "split_min_elongation_z": float(split_min_elongation_z),
              "split_prior_log_odds": float(split_prior_log_odds), "solver": solver}
    keep = np.ones(n, bool)
    out_xy = pts.copy()
    split = np.full(n, np.nan)
    one = np.full((n, 5), np.nan)
    rec_pairs, rec_d, rec_bic, rec_p, rec_m = [], [], [], [], []
    if not np.isfinite(pts).all():
        return _decisions(keep, out_xy, split, one, rec_pairs, rec_d, rec_bic, rec_p, rec_m, params)
    if n >= 2 and max_separation_px > 0:
        _merge_pairs(image, out_xy, keep, split, one, sc, (rec_pairs, rec_d, rec_bic, rec_p, rec_m),
                     max_separation_px=max_separation_px, atom_sigma_px=atom_sigma_px, slope=slope,
                     prior_log_odds=prior_log_odds, bond_px=bond_px, solver=solver)
    if split_min_elongation_px is None or n == 0:
        return _decisions(keep, out_xy, split, one, rec_pairs, rec_d, rec_bic, rec_p, rec_m, params)
    extra = _split_move(image, out_xy, keep, split, max_separation_px=max_separation_px,
                        atom_sigma_px=atom_sigma_px, slope=slope,
                        prior_log_odds=prior_log_odds + split_prior_log_odds, bond_px=bond_px,
                        min_elongation_px=split_min_elongation_px,
                        min_elongation_z=split_min_elongation_z, solver=solver)
    return replace(_decisions(keep, out_xy, split, one, rec_pairs, rec_d, rec_bic, rec_p, rec_m,
                              params), **extra)


def _merge_pairs(image, out_xy, keep, split, one, sc, records, *, max_separation_px,
                 atom_sigma_px, slope, prior_log_odds, bond_px, solver) -> None:
    """The merge step (module docstring): decides close pairs closest first,
    updating ``out_xy``, ``keep``, ``split``, ``one`` and the record lists in
    place."""
    rec_pairs, rec_d, rec_bic, rec_p, rec_m = records
    n = len(out_xy)
    examined: set[tuple[int, int]] = set()
    # Ties in score go to the lower index (as NMS), so the result does not
    # depend on anything but the table.
    rank = np.empty(n, np.int64)
    rank[np.lexsort((np.arange(n), -np.nan_to_num(sc, nan=-np.inf)))] = np.arange(n)
    pad = int(math.ceil(max_separation_px / 2 + 2.5 * atom_sigma_px))
    cache: dict = {}
    while True:
        alive = np.flatnonzero(keep)
        tree = cKDTree(out_xy[alive])
        cand = tree.query_pairs(float(max_separation_px), output_type="ndarray")
        if not len(cand):
            break
        ij = np.sort(alive[cand], axis=1)
        dist = np.hypot(*(out_xy[ij[:, 0]] - out_xy[ij[:, 1]]).T)
        order = np.lexsort((ij[:, 1], ij[:, 0], dist))
        todo = [(int(ij[k, 0]), int(ij[k, 1]), float(dist[k])) for k in order
                if (int(ij[k, 0]), int(ij[k, 1])) not in examined]
        if not todo:
            break
        # All pairs of this round are fitted at once. Until the first merge of
        # the round nothing moves, so these are the fits the pairwise order
        # needs; after it, the pairs whose detections did not move find their
        # fits in ``cache`` in the next round (a fit depends only on its key).
        keys = []
        for i, j, d in todo:
            strong, weak = (i, j) if rank[i] < rank[j] else (j, i)
            keys.append((strong, weak, *_quantize(out_xy[strong]), *_quantize(out_xy[weak]),
                         max(sc[strong], 1e-6), max(sc[weak], 1e-6)))
        new = list(dict.fromkeys(k for k in keys if k not in cache))
        fits = _decide_pairs(image, [np.array(k[2:4]) for k in new], [np.array(k[4:6]) for k in new],
                             [k[6] for k in new], [k[7] for k in new],
                             atom_sigma_px=atom_sigma_px, slope=slope,
                             prior_log_odds=prior_log_odds, bond_px=bond_px, pad=pad,
                             solver=solver)
        cache.update(zip(new, fits))
        changed = False
        for (i, j, d), key in zip(todo, keys):
            if not (keep[i] and keep[j]):
                continue
            examined.add((i, j))
            strong, weak = key[:2]
            dbic, p_two, q1 = cache[key]
            merge = bool(np.isfinite(p_two) and p_two < 0.5)
            rec_pairs.append((i, j))
            rec_d.append(d)
            rec_bic.append(dbic)
            rec_p.append(p_two)
            rec_m.append(merge)
            split[[i, j]] = p_two
            if merge:
                keep[weak] = False
                out_xy[strong] = q1[:2]
                s = q1[3]
                one[strong] = (q1[2], s, q1[4], 2 * np.pi * q1[2] * s * s, q1[5])
                changed = True
                break  # the survivor moved: recompute the close pairs
        if not changed:
            break


def _split_move(image, out_xy, keep, split, *, max_separation_px, atom_sigma_px, slope,
                prior_log_odds, bond_px, min_elongation_px, min_elongation_z, solver) -> dict:
    """The split move on the detections left after merging (module docstring).
    Updates ``out_xy`` and ``split`` in place for the split detections and
    returns the PairDecisions fields of the split move."""
    n = len(out_xy)
    sigma = float(atom_sigma_px)
    split_fit = np.full((n, 5), np.nan)
    alive = np.flatnonzero(keep)
    # Detections with a pair decision were already judged one or two.
    cand = alive[np.isnan(split[alive])]
    tests = {k: [] for k in ("i", "elongation_px", "elongation_z", "delta_bic", "p_two",
                             "separation_px", "inside", "split")}
    add_parent, add_xy, add_fit, add_p = [], [], [], []
    if len(cand):
        # Snapped like the pair fits' starts, so tiled and whole tables agree.
        elong, zval = spot_elongation(image, _quantize(out_xy[cand]), atom_sigma_px=sigma,
                                      exclude=_quantize(out_xy[alive]))
        fit_these = np.flatnonzero((elong >= float(min_elongation_px))
                                   & (zval >= float(min_elongation_z)))
        # Neighbours that can reach into a fitted window (3σ half-width, masked
        # 2.5σ around each neighbour): their pixels are left out.
        reach = 3.0 * sigma * math.sqrt(2.0) + 2.5 * sigma + 1.0
        near = cKDTree(out_xy[alive]).query_ball_point(out_xy[cand[fit_these]], reach)
        others = [alive[[j for j in nb if alive[j] != int(cand[k])]]
                  for k, nb in zip(fit_these, near)]
        first_ex = [_quantize(out_xy[o]) for o in others]
        batch = _decide_splits(image, [_quantize(out_xy[cand[k]]) for k in fit_these], first_ex,
                               atom_sigma_px=sigma, slope=slope, prior_log_odds=prior_log_odds,
                               bond_px=bond_px, solver=solver)
        for k, oth, ex0, res in zip(fit_these, others, first_ex, batch):
            i = int(cand[k])
            ex = _quantize(out_xy[oth])
            # A neighbour split earlier in this loop moved: the batch's fit left
            # out the wrong pixels, so this spot is fitted again.
            dbic, p_two, fit = res if np.array_equal(ex, ex0) else _decide_splits(
                image, [_quantize(out_xy[i])], [ex], atom_sigma_px=sigma, slope=slope,
                prior_log_odds=prior_log_odds, bond_px=bond_px, solver=solver)[0]
            d = float(math.hypot(fit[3] - fit[0], fit[4] - fit[1]))
            inside = _second_atom_inside(out_xy[i], fit, d, max_separation_px)
            do = bool(np.isfinite(p_two) and p_two >= 0.5 and inside)
            for key, val in zip(tests, (i, elong[k], zval[k], dbic, p_two, d, inside, do)):
                tests[key].append(val)
            if not inside:
                continue  # the two-atom fit found no second atom within the spot
            split[i] = p_two
            if do:
                first, second = (0, 3) if fit[2] >= fit[5] else (3, 0)
                s_, b_, rms = fit[6], fit[7], fit[8]
                out_xy[i] = fit[first:first + 2]
                a1, a2 = fit[first + 2], fit[second + 2]
                split_fit[i] = (a1, s_, b_, 2 * np.pi * a1 * s_ * s_, rms)
                add_parent.append(i)
                add_xy.append(fit[second:second + 2])
                add_fit.append((a2, s_, b_, 2 * np.pi * a2 * s_ * s_, rms))
                add_p.append(p_two)
    return {"split_fit": split_fit, "added_parent": np.asarray(add_parent, np.int64),
            "added_xy": np.asarray(add_xy, np.float64).reshape(-1, 2),
            "added_fit": np.asarray(add_fit, np.float64).reshape(-1, 5),
            "added_split_probability": np.asarray(add_p, np.float64),
            "split_tests": {"i": np.asarray(tests["i"], np.int64),
                            "elongation_px": np.asarray(tests["elongation_px"], np.float64),
                            "elongation_z": np.asarray(tests["elongation_z"], np.float64),
                            "delta_bic": np.asarray(tests["delta_bic"], np.float64),
                            "p_two": np.asarray(tests["p_two"], np.float64),
                            "separation_px": np.asarray(tests["separation_px"], np.float64),
                            "inside": np.asarray(tests["inside"], bool),
                            "split": np.asarray(tests["split"], bool)}}


def _second_atom_inside(p, fit, d, max_separation_px) -> bool:
    """Whether the two-atom fit describes a second atom hidden *in this spot*:
    both atoms within ``max_separation_px`` of each other, the detection between
    them (its offset from their midpoint at most 0.4·d — a texture bump beside
    one atom gives ≈ 0.5·d), and neither atom less than a quarter as bright as
    the other (Pt–Pt or Pt–Pd; a much fainter "atom" is support texture)."""
    if not np.isfinite(fit).all() or not 0.0 < d <= max_separation_px:
        return False
    mid = 0.5 * (fit[0:2] + fit[3:5])
    a_lo, a_hi = sorted((fit[2], fit[5]))
    return bool(math.hypot(*(mid - p)) <= 0.4 * d and a_hi > 0 and a_lo >= 0.25 * a_hi)


def _quantize(p):
    """Start positions on a 2⁻²⁰ px grid: tiled engines refine in window
    coordinates and add the origin, so their positions differ from the whole
    image's by ~1e-12 px, which an iterative fit would carry into its result.
    On the grid both start from the same numbers and give identical fits."""
    return np.round(np.asarray(p, np.float64) * 1048576.0) / 1048576.0


def _decisions(keep, xy, split, one, pairs, d, bic, p, m, params) -> PairDecisions:
    return PairDecisions(keep, xy, split, one, np.asarray(pairs, np.int64).reshape(-1, 2),
                         np.asarray(d, np.float64), np.asarray(bic, np.float64),
                         np.asarray(p, np.float64), np.asarray(m, bool), params)


def apply_pair_decisions(detections, decisions: PairDecisions):
    """Detections after the stage: merged detections removed (survivors moved to
    their one-atom fit), split detections replaced by the two atoms of their
    two-atom fit (the second right after the first), with a
    ``split_probability`` column.

    ``detections`` is a dict of columns (as :func:`fastsac.detect.postprocess_scores`
    returns) or a dataclass with an ``xy`` field (``Detections``,
    ``TiledDetections``); every per-atom array (first dimension N) is taken
    row by row through :meth:`PairDecisions.source` (an atom split off a
    detection inherits its score and fit status), other entries are kept.
    Returns the same kind.
    """
    if is_dataclass(detections):
        cols = {f.name: getattr(detections, f.name) for f in fields(detections)}
    else:
        cols = dict(detections)
    n = len(cols["xy"])
    order, pos = decisions._rows()
    src = order[pos]
    n_add = len(decisions.added_parent)
    # Rows of the output that are added atoms, and which added atom each is.
    kept = int(decisions.keep.sum())
    is_added = pos >= kept
    added_row = pos[is_added] - kept
    split_fit = (decisions.split_fit if decisions.split_fit is not None
                 else np.full((n, 5), np.nan))
    refit = np.isfinite(decisions.one_atom_fit[:, 0]) | np.isfinite(split_fit[:, 0])
    fit_new = np.where(np.isfinite(decisions.one_atom_fit[:, :1]), decisions.one_atom_fit,
                       split_fit)
    new = {}
    for name, v in cols.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n and name != "split_probability":
            if name == "xy":
                v = decisions.xy.astype(v.dtype, copy=True)
            elif name in _FIT_COLUMNS and refit.any():
                c = _FIT_COLUMNS.index(name)
                v = v.astype(np.float64)
                v[refit] = fit_new[refit, c]
            elif name.endswith("_err") or name.endswith("_err_px"):
                # The standard errors belong to the old round fit, not to the
                # merged one-atom or the split two-atom fit: unknown for those.
                v = v.astype(np.float64)
                v[refit] = np.nan
            else:
                v = v.copy()
            v = v[src]
            if n_add:
                if name == "xy":
                    v[is_added] = decisions.added_xy[added_row]
                elif name in _FIT_COLUMNS:
                    v[is_added] = decisions.added_fit[added_row, _FIT_COLUMNS.index(name)]
            new[name] = v
    sp = decisions.split_probability[src]
    if n_add:
        sp[is_added] = decisions.added_split_probability[added_row]
    new["split_probability"] = sp
    if is_dataclass(detections):
        return replace(detections, **new)
    return cols | new
