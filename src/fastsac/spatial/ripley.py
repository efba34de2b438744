"""Ripley's K/L and the pair correlation g(r) with envelopes, at any N.

Pair distances are counted by :func:`fastsac.spatial.pairs.pair_histogram`
straight into histograms (no pair list), the translation edge correction uses
the window's set covariance at the lags needed only
(:func:`~fastsac.spatial.pairs.set_covariance_table`, computed once per
window), and the null distribution comes from at most ``n_sim`` binomial
patterns of at most ``max_sim_points`` points: in the window itself when the
pattern is that small, else the test statistic uses only the reference points
of a sub-window (partners anywhere: a guard-area estimator with the exact
cross-covariance edge correction), so only that sub-window and its guard band
are simulated. Both are exact Monte Carlo tests. Memory is O(N + n_sim · n_r),
time O(N·k + n_sim · max_sim_points · k) with k ≤ ``max_neighbors`` expected
neighbours per point. See docs/statistics.md.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .._validate import as_points
from .pairs import pair_histogram, pair_histogram_backend, set_covariance_table, weight_table
from .window import Window

__all__ = ["PairCorrelation", "pair_correlation", "mad_test", "DEFAULT_MAX_SIM_POINTS", "DEFAULT_MAX_NEIGHBORS"]

#: Bounds of the automatic ``max_sim_points``: above it the test uses the
#: reference points of a sub-window.
MIN_SIM_POINTS, DEFAULT_MAX_SIM_POINTS = 1000, 10000
#: Simulated neighbour pairs per image pixel allowed by the automatic
#: ``max_sim_points``: a pair costs ~20 ns and detection ~100 ns per pixel on
#: two cores, so the simulations cost at most about a fifth of the detection
#: (the rest of the statistics step, Clark–Evans' simulations, costs as much).
SIM_PAIRS_PER_PIXEL = 1.0
#: r_max is capped where a point has this many expected neighbours (λπr² = k).
DEFAULT_MAX_NEIGHBORS = 100

METHOD_EXACT = "monte_carlo"
METHOD_SUBWINDOW = "monte_carlo_subwindow"


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class PairCorrelation:
    """Ripley's L and g(r) with envelopes and the global MAD test (lengths in px).

    The attributes of :class:`fastsac.spatial.stats.PatternTest` (``r_px``,
    ``L_minus_r_px``, ``L_mean``, ``L_lo``, ``L_hi``, ``L_global_lo``,
    ``L_global_hi``, ``g``, ``g_mean``, ``g_lo``, ``g_hi``, ``g_global_lo``,
    ``g_global_hi``, p-values, ``verdict`` …) plus:

    method : str
        ``"monte_carlo"``: ``n_sim`` patterns of all ``n_points`` in the
        window; every point is a reference point.
        ``"monte_carlo_subwindow"``: the observed and simulated curves use the
        reference points in ``subwindow_px`` only (their partners anywhere in
        the window, edge correction by the cross covariance), so each
        simulation places only the points of the sub-window and its guard
        band (a binomial number). Either way the reference is the mean of the
        n_sim + 1 curves and the rank test is exact.
    n_sim_points : int
        Reference points of the observed pattern used by the test.
    subwindow_px : (x0, y0, width, height) or None
        The reference sub-window (None: the whole window).
    L_minus_r_all_px, g_all : (M,)
        The curves from all points as reference points (equal to
        ``L_minus_r_px``, ``g`` without a sub-window; more precise with one,
        and compared with the same envelopes).
    r_max_rule : str
        ``"quarter_side"``, ``"max_neighbors"`` (λπr² = max_neighbors) or ``"given"``.
    timings_s : dict
    """

    r_px: np.ndarray
    L_minus_r_px: np.ndarray
    L_mean: np.ndarray
    L_lo: np.ndarray
    L_hi: np.ndarray
    L_global_lo: np.ndarray
    L_global_hi: np.ndarray
    g: np.ndarray
    g_mean: np.ndarray
    g_lo: np.ndarray
    g_hi: np.ndarray
    g_global_lo: np.ndarray
    g_global_hi: np.ndarray
    L_p_value: float
    L_p_clustering: float
    L_p_repulsion: float
    g_p_value: float
    verdict: str
    n_points: int
    n_sim: int
    seed: int
    alpha: float
    bandwidth_px: float
    test_range_px: tuple
    pixel_size_nm: float | None
    method: str
    n_sim_points: int
    subwindow_px: tuple | None
    r_max_rule: str
    backend: str
    timings_s: dict
    L_minus_r_all_px: np.ndarray
    g_all: np.ndarray

    @property
    def test_name(self) -> str:
        if self.method == METHOD_EXACT:
            return "global MAD envelope test (CSR), translation edge correction"
        return ("global MAD envelope test (CSR) on the reference points of a sub-window, "
                "translation (cross-covariance) edge correction")

    def as_dict(self, *, curves: bool = False) -> dict:
        """Flat JSON-ready keys, those of :meth:`PatternTest.as_dict` (``pattern_*``,
        ``L_p_value`` …) plus ``pattern_method``, ``pattern_n_reference_points``,
        ``pattern_subwindow_px``, ``pattern_r_max_rule``, ``pixel_size_nm``.

        ``curves=True`` (what ``summary.json["pair_correlation"]`` holds) adds
        the curves on the ``n_r`` radii (≤ 64 by default 48; 6 significant
        digits): ``curve_r_px``, ``curve_L_minus_r_px``, ``curve_g`` with their
        ``_mean`` (reference), ``_lo``, ``_hi`` (pointwise) and ``_global_lo``,
        ``_global_hi`` (global envelope), ``curve_L_minus_r_all_px`` and
        ``curve_g_all`` (all points as reference points), and in nm when
        calibrated ``curve_r_nm``, ``curve_L_minus_r_nm``,
        ``curve_L_global_lo_nm``, ``curve_L_global_hi_nm`` (else None).
        """
        px = self.pixel_size_nm
        nm = (lambda v: _f(v * px) if px else None)
        d = {"pattern_n_points": self.n_points, "pattern_n_sim": self.n_sim, "pattern_seed": self.seed,
             "pattern_alpha": self.alpha, "pattern_test": self.test_name, "pattern_method": self.method,
             "pattern_n_reference_points": self.n_sim_points,
             "pattern_subwindow_px": None if self.subwindow_px is None else list(self.subwindow_px),
             "pattern_r_max_rule": self.r_max_rule,
             "pattern_test_rmin_px": self.test_range_px[0], "pattern_test_rmax_px": self.test_range_px[1],
             "pattern_test_rmin_nm": nm(self.test_range_px[0]), "pattern_test_rmax_nm": nm(self.test_range_px[1]),
             "L_p_value": _f(self.L_p_value), "L_p_clustering": _f(self.L_p_clustering),
             "L_p_repulsion": _f(self.L_p_repulsion), "g_p_value": _f(self.g_p_value),
             "pattern_verdict": self.verdict, "g_bandwidth_px": self.bandwidth_px,
             "g_bandwidth_nm": nm(self.bandwidth_px), "pixel_size_nm": px}
        if curves:
            def c(a, scale=1.0):
                return [None if not np.isfinite(v) else float(f"{v * scale:.6g}") for v in np.asarray(a)]

            for k in ("r_px", "L_minus_r_px", "L_mean", "L_lo", "L_hi", "L_global_lo", "L_global_hi",
                      "g", "g_mean", "g_lo", "g_hi", "g_global_lo", "g_global_hi", "L_minus_r_all_px", "g_all"):
                d[f"curve_{k}"] = c(getattr(self, k))
            for k, name in (("r_px", "r_nm"), ("L_minus_r_px", "L_minus_r_nm"),
                            ("L_global_lo", "L_global_lo_nm"), ("L_global_hi", "L_global_hi_nm")):
                d[f"curve_{name}"] = c(getattr(self, k), px) if px else None
        return d


# --------------------------------------------------------------------------- estimator


@dataclass(frozen=True)
class _Radii:
    """Radii, bins (radii on bin edges, bins ≤ h/16) and the g kernel."""

    r: np.ndarray
    h: float
    bin_width: float
    n_bins: int
    per_step: int
    kern: np.ndarray  # (n_r, n_bins) Epanechnikov weights at the bin centres, / h

    @property
    def reach(self) -> float:
        return self.bin_width * self.n_bins

    def curves(self, hk: np.ndarray, hg: np.ndarray, scale: float):
        """(K (n_r,) px², g (n_r,)) from the ordered-pair histograms."""
        k = scale * np.cumsum(hk)[np.arange(1, len(self.r) + 1) * self.per_step - 1]
        return k, scale * (self.kern @ hg)


def _radii(r: np.ndarray, h: float) -> _Radii:
    step = float(r[1] - r[0])
    per_step = max(1, math.ceil(step / (h / 16)))
    bw = step / per_step
    n_bins = math.ceil((float(r[-1]) + h) / bw - 1e-9)
    centres = (np.arange(n_bins) + 0.5) * bw
    t = (r[:, None] - centres[None, :]) / h
    kern = np.where(np.abs(t) < 1, 0.75 * (1 - t * t) / h, 0.0)
    return _Radii(r, h, bw, n_bins, per_step, kern)


@dataclass(frozen=True)
class _Estimator:
    """K and g from the points in the window B = ``crop`` (W itself, or W ∩ a
    sub-window A and its guard band) with the reference points restricted to
    A = ``ref_box`` (None: all of B):
    ``K̂(r) = |A| |B| / (n_A (n_B − 1)) Σ_{i ∈ A, j ≠ i, d_ij ≤ r} 1 / γ_AB(x_j − x_i)``,
    ``γ_AB(u) = |A ∩ (B − u)|``: for A = B Ohser–Stoyan's translation
    estimator (unbiased under CSR); for A ⊂ B a ratio estimator (n_A in the
    denominator: the binomial split of the points between A and the guard
    band would otherwise widen the envelopes ∝ r). The table is built once."""

    radii: _Radii
    crop: Window           # B, in crop coordinates
    origin: tuple          # (x0, y0) of the crop in the image
    ref_box: tuple | None  # (x0, y0, x1, y1) pixel columns/rows in crop coordinates
    table: np.ndarray | None  # float32 weights |B|/γ_AB
    backend: str
    ref_area: float = 0.0  # |A| with a sub-window

    def __call__(self, pts: np.ndarray):
        """Curves of the points ``pts`` (all in the crop, crop coordinates)."""
        nr = len(self.radii.r)
        n = len(pts)
        if n < 2:
            return np.full(nr, np.nan), np.full(nr, np.nan)
        ref, n_ref, area_ref = None, n, self.crop.area
        if self.ref_box is not None:
            x0, y0, x1, y1 = self.ref_box
            ix, iy = np.floor(pts[:, 0] + 0.5), np.floor(pts[:, 1] + 0.5)
            ref = (ix >= x0) & (ix < x1) & (iy >= y0) & (iy < y1)
            n_ref = int(np.count_nonzero(ref))
            area_ref = self.ref_area
            if n_ref == 0:
                return np.full(nr, np.nan), np.full(nr, np.nan)
        area = self.crop.area
        hk, hg = pair_histogram(pts, bin_width=self.radii.bin_width, n_bins=self.radii.n_bins, area=area,
                                rect_shape=self.crop.shape if self.table is None else None, table=self.table,
                                ref=ref, backend=self.backend)
        return self.radii.curves(hk, hg, area_ref / (n_ref * (n - 1)))


def _full_estimator(win: Window, radii: _Radii, backend: str) -> _Estimator:
    table = None
    if not win.is_rectangle:
        gamma = set_covariance_table(win.mask, image_shape=win.shape, bin_factor=win.bin_factor,
                                     lag=math.ceil(radii.reach) + 1, backend=backend)
        table = weight_table(gamma, area=win.area)
    return _Estimator(radii, win, (0, 0), None, table, backend)


def _sub_estimator(win: Window, radii: _Radii, target_area: float, backend: str):
    """Estimator with the reference points in a square sub-window of about
    ``target_area`` px² of support (the best supported of a 5×5 grid of
    positions; aligned to the mask's blocks) and a guard band of the reach;
    None when the sub-window would cover the image."""
    h, w = win.shape
    f = win.bin_factor
    side = math.sqrt(target_area)  # at most ~max_sim_points reference points
    sh, sw = min(h, max(f, round(side / f) * f)), min(w, max(f, round(side / f) * f))
    if sh >= h and sw >= w:
        return None
    m = win.mask
    best = None
    for y0 in np.unique(np.linspace(0, h - sh, 5).astype(int) // f * f):
        for x0 in np.unique(np.linspace(0, w - sw, 5).astype(int) // f * f):
            score = (sh * sw if m is None else
                     np.count_nonzero(m[y0 // f:-(-(y0 + sh) // f), x0 // f:-(-(x0 + sw) // f)]))
            if best is None or score > best[0]:
                best = (score, int(y0), int(x0))
    _, by0, bx0 = best
    guard = -(-(math.ceil(radii.reach) + 1) // f) * f
    cy0, cx0 = max(0, by0 - guard), max(0, bx0 - guard)
    cy1, cx1 = min(h, by0 + sh + guard), min(w, bx0 + sw + guard)
    ch, cw = cy1 - cy0, cx1 - cx0
    hb, wb = -(-ch // f), -(-cw // f)
    crop_mask = (np.ones((hb, wb), bool) if m is None
                 else m[cy0 // f:cy0 // f + hb, cx0 // f:cx0 // f + wb])
    ref_mask = np.zeros_like(crop_mask)
    ry0, rx0 = (by0 - cy0) // f, (bx0 - cx0) // f
    ref_mask[ry0:ry0 + -(-sh // f), rx0:rx0 + -(-sw // f)] = crop_mask[ry0:ry0 + -(-sh // f),
                                                                       rx0:rx0 + -(-sw // f)]
    if not ref_mask.any():
        return None
    lag = math.ceil(radii.reach) + 1
    gamma = set_covariance_table(ref_mask, other=crop_mask, image_shape=(ch, cw), bin_factor=f, lag=lag,
                                 backend=backend)
    crop = Window((ch, cw), mask=crop_mask, bin_factor=f)
    table = weight_table(gamma, area=crop.area)
    ref_box = (bx0 - cx0, by0 - cy0, bx0 - cx0 + sw, by0 - cy0 + sh)
    return (_Estimator(radii, crop, (cx0, cy0), ref_box, table, backend, float(gamma[lag, lag])),
            (bx0, by0, int(sw), int(sh)))


# --------------------------------------------------------------------------- test


def mad_test(obs: np.ndarray, sims: np.ndarray, sel: np.ndarray, alpha: float):
    """Global MAD test with the reference = mean of all n_sim + 1 curves
    (exchangeable, so the rank p-value is exact)."""
    allc = np.vstack([obs[None], sims])
    ok = sel & np.isfinite(allc).all(0)
    ref = allc.mean(0)
    if not ok.any():
        nanv = np.full_like(obs, np.nan)
        return ref, nanv, nanv, float("nan"), float("nan"), float("nan")
    dev = (allc - ref)[:, ok]
    t2 = np.abs(dev).max(1)
    tp = dev.max(1)
    tm = (-dev).max(1)
    m = len(sims)
    p = (1 + np.count_nonzero(t2[1:] >= t2[0])) / (m + 1)
    pc = (1 + np.count_nonzero(tp[1:] >= tp[0])) / (m + 1)
    pr = (1 + np.count_nonzero(tm[1:] >= tm[0])) / (m + 1)
    k = max(1, int(math.floor(alpha * (m + 1))))
    crit = np.sort(t2[1:])[::-1][k - 1]
    return ref, ref - crit, ref + crit, float(p), float(pc), float(pr)


def pair_correlation(xy, *, image_shape=None, mask=None, mask_bin_factor: int = 1,
                     pixel_size_nm: float | None = None, r_max_px: float | None = None, n_r: int = 48,
                     test_rmin_px: float | None = None, bandwidth_px: float | None = None,
                     n_sim: int = 99, alpha: float = 0.05, seed: int = 0,
                     max_sim_points: int | None = None,
                     max_neighbors: float = DEFAULT_MAX_NEIGHBORS, backend: str = "auto",
                     window: Window | None = None) -> PairCorrelation:
    """Ripley's L and g(r) with envelopes and a global MAD test, bounded in N.

    Parameters
    ----------
    xy : (N, 2) array
        Positions, px; points outside the window are dropped.
    image_shape : (H, W)
    mask : bool array, optional
        Support mask (full resolution, or ``mask_bin_factor``-binned as in
        :class:`~fastsac.spatial.stats.Window`).
    r_max_px : float, optional
        Largest radius. Default: a quarter of the shorter side, capped where a
        point has ``max_neighbors`` expected neighbours (λπr² = max_neighbors).
    n_r : int
        Radii ``r_max/n_r … r_max``.
    test_rmin_px, bandwidth_px, n_sim, alpha, seed
        As :func:`fastsac.spatial.stats.pair_correlation_test` (bandwidth
        default 0.15/√λ, test from the bandwidth up).
    max_sim_points : int, optional
        With more points the test uses the reference points of a sub-window
        holding about this many (see :class:`PairCorrelation`). Default:
        H·W / (n_sim · max_neighbors) simulated neighbour pairs, i.e. the
        simulations cost at most about a fifth of detecting the frame,
        clipped to [1000, 10 000].
    backend : str
        Pair-histogram and set-covariance kernels (``cpp`` or ``numpy``).
    window : Window, optional
        The window, instead of ``image_shape``/``mask``/``mask_bin_factor``
        (reuses its cached runs).

    Returns
    -------
    PairCorrelation

    Raises
    ------
    ValueError
        ``n_sim < 1``, ``alpha`` outside (0, 1), ``n_r < 2`` or bad window arguments.

    References
    ----------
    Ripley (1977) J. R. Stat. Soc. B 39:172. Ohser & Stoyan (1981) Biom. J.
    23:523. Myllymäki et al. (2017) J. R. Stat. Soc. B 79:381.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> t = pair_correlation(rng.uniform(0, 256, (200, 2)), image_shape=(256, 256), n_sim=19)
    >>> t.method, t.verdict
    ('monte_carlo', 'random')
    """
    t0 = time.perf_counter()
    if window is not None:
        win = window
    else:
        if image_shape is None:
            if mask is None:
                raise ValueError("image_shape is required (the (H, W) of the image the points come from)")
            image_shape = np.shape(mask)
        win = Window(image_shape, mask=mask, bin_factor=mask_bin_factor)
    pts = as_points(xy)
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions; drop them first")
    pts = np.ascontiguousarray(pts[win.contains(pts)])
    n = len(pts)
    n_sim = int(n_sim)
    if n_sim < 1:
        raise ValueError(f"n_sim must be ≥ 1, got {n_sim}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if int(n_r) < 2:
        raise ValueError(f"n_r must be ≥ 2, got {n_r}")
    backend = pair_histogram_backend(backend)
    lam = max(n, 1) / win.area
    if r_max_px is not None:
        r_max, rule = float(r_max_px), "given"
    else:
        r_max, rule = 0.25 * min(win.shape), "quarter_side"
        cap = math.sqrt(max_neighbors / (math.pi * lam))
        if cap < r_max:
            r_max, rule = cap, "max_neighbors"
    if not (r_max > 0 and math.isfinite(r_max)):
        raise ValueError(f"r_max_px must be > 0, got {r_max_px}")
    h = bandwidth_px or 0.15 / math.sqrt(lam)
    h = min(h, r_max / 4)
    r = np.linspace(r_max / n_r, r_max, int(n_r))
    rmin = h if test_rmin_px is None else float(test_rmin_px)
    sel = r >= rmin
    radii = _radii(r, h)
    full = _full_estimator(win, radii, backend)
    if max_sim_points is None:
        budget = SIM_PAIRS_PER_PIXEL * win.shape[0] * win.shape[1] / (n_sim * max_neighbors)
        max_sim_points = int(min(DEFAULT_MAX_SIM_POINTS, max(MIN_SIM_POINTS, budget)))
    max_sim_points = int(max_sim_points)
    if max_sim_points < 3:
        raise ValueError(f"max_sim_points must be ≥ 3, got {max_sim_points}")
    sub = _sub_estimator(win, radii, max_sim_points / lam, backend) if n > max_sim_points else None
    t1 = time.perf_counter()
    k_all, g_all = full(pts)
    if sub is None:
        method, est, box, k_obs, g_obs, n_ref = METHOD_EXACT, full, None, k_all, g_all, n
    else:
        method = METHOD_SUBWINDOW
        est, box = sub
        o = np.array(est.origin, np.float64)
        inside = est.crop.contains(pts - o)
        k_obs, g_obs = est(np.ascontiguousarray(pts[inside] - o))
        x0, y0, x1, y1 = est.ref_box
        q = np.floor(pts[inside] - o + 0.5)
        n_ref = int(np.count_nonzero((q[:, 0] >= x0) & (q[:, 0] < x1) & (q[:, 1] >= y0) & (q[:, 1] < y1)))
    t2 = time.perf_counter()
    rng = np.random.default_rng(seed)
    p_crop = est.crop.area / win.area
    ks, gs = np.empty((n_sim, len(r))), np.empty((n_sim, len(r)))
    # Patterns are drawn in order from one generator (reproducible), the
    # curves computed on all cores (the kernel releases the GIL) a batch at a time.
    n_workers = max(1, min(os.cpu_count() or 1, 8))
    with ThreadPoolExecutor(n_workers) as pool:
        for start in range(0, n_sim, 4 * n_workers):
            batch = []
            for _ in range(start, min(n_sim, start + 4 * n_workers)):
                # The points of a binomial pattern of n in W that fall in the
                # crop: a binomial number, uniform there (all n without a sub-window).
                k = n if sub is None else int(rng.binomial(n, p_crop))
                batch.append(est.crop.sample(k, rng))
            for i, (kc, gc) in enumerate(pool.map(est, batch), start):
                ks[i], gs[i] = kc, gc
    t3 = time.perf_counter()
    with np.errstate(invalid="ignore"):
        l_obs, l_all = (np.sqrt(np.maximum(k_, 0) / np.pi) - r for k_ in (k_obs, k_all))
        ls = np.sqrt(np.maximum(ks, 0) / np.pi) - r
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    L_ref, L_glo, L_ghi, pL, pc, pr = mad_test(l_obs, ls, sel, alpha)
    g_ref, g_glo, g_ghi, pg, _, _ = mad_test(g_obs, gs, sel, alpha)
    verdict = "random"
    if np.isfinite(pL) and pL <= alpha:
        verdict = "clustering" if pc <= pr else "repulsion"
    with np.errstate(all="ignore"):
        L_lo, L_hi = np.quantile(ls, lo_q, axis=0), np.quantile(ls, hi_q, axis=0)
        g_lo, g_hi = np.quantile(gs, lo_q, axis=0), np.quantile(gs, hi_q, axis=0)
    timings = {"setup": t1 - t0, "observed": t2 - t1, "simulations": t3 - t2,
               "total": time.perf_counter() - t0}
    return PairCorrelation(r, l_obs, L_ref, L_lo, L_hi, L_glo, L_ghi, g_obs, g_ref, g_lo, g_hi, g_glo, g_ghi,
                           pL, pc, pr, pg, verdict, n, n_sim, int(seed), float(alpha), float(h),
                           (float(rmin), float(r_max)), pixel_size_nm, method, n_ref, box, rule,
                           backend, timings, l_all, g_all)
