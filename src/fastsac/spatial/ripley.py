"""Ripley's K/L and the pair correlation g(r) with envelopes, at any N.

Pair distances are counted by :func:`fastsac.spatial.pairs.pair_histogram`
straight into histograms (no pair list), the translation edge correction uses
the window's set covariance at the lags needed only
(:func:`~fastsac.spatial.pairs.set_covariance_table`, computed once per
window), and the null distribution comes from at most ``n_sim`` binomial
patterns of at most ``max_sim_points`` points: in the window itself when the
pattern is that small (an exact Monte Carlo test), else in a sub-window whose
deviations are rescaled to the full pattern's size. Memory is
O(N + n_sim · n_r), time O(N·k + n_sim · max_sim_points · k) with
k ≤ ``max_neighbors`` expected neighbours per point. See docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validate import as_points
from .pairs import pair_histogram, pair_histogram_backend, set_covariance_table
from .stats import Window

__all__ = ["PairCorrelation", "pair_correlation", "DEFAULT_MAX_SIM_POINTS", "DEFAULT_MAX_NEIGHBORS"]

#: Above this many points the envelopes come from a sub-window (rescaled).
DEFAULT_MAX_SIM_POINTS = 20000
#: r_max is capped where a point has this many expected neighbours (λπr² = k).
DEFAULT_MAX_NEIGHBORS = 100
#: Most radii kept in the compact summary block.
SUMMARY_MAX_R = 64

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
        window, reference = mean of the n_sim + 1 curves (exact rank test).
        ``"monte_carlo_subwindow"``: ``n_sim`` patterns of ``n_sim_points`` in
        ``subwindow_px``; their deviations from the CSR expectation are scaled
        by √(n_sim_points / n_points); reference = the CSR expectation
        (approximate test, see docs/statistics.md).
    n_sim_points : int
        Points per simulated pattern.
    subwindow_px : (x0, y0, width, height) or None
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

    @property
    def test_name(self) -> str:
        where = ("in the window" if self.method == METHOD_EXACT
                 else "in a sub-window, rescaled")
        return f"global MAD envelope test, translation edge correction, CSR simulated {where}"

    def as_dict(self, *, curves: bool = False) -> dict:
        """Flat keys as :meth:`PatternTest.as_dict` (``pattern_*``, ``L_p_value`` …)."""
        px = self.pixel_size_nm
        nm = (lambda v: _f(v * px) if px else None)
        d = {"pattern_n_points": self.n_points, "pattern_n_sim": self.n_sim, "pattern_seed": self.seed,
             "pattern_alpha": self.alpha, "pattern_test": self.test_name, "pattern_method": self.method,
             "pattern_n_sim_points": self.n_sim_points,
             "pattern_test_rmin_px": self.test_range_px[0], "pattern_test_rmax_px": self.test_range_px[1],
             "pattern_test_rmin_nm": nm(self.test_range_px[0]), "pattern_test_rmax_nm": nm(self.test_range_px[1]),
             "L_p_value": _f(self.L_p_value), "L_p_clustering": _f(self.L_p_clustering),
             "L_p_repulsion": _f(self.L_p_repulsion), "g_p_value": _f(self.g_p_value),
             "pattern_verdict": self.verdict, "g_bandwidth_px": self.bandwidth_px}
        if curves:
            for k in ("r_px", "L_minus_r_px", "L_mean", "L_lo", "L_hi", "L_global_lo", "L_global_hi",
                      "g", "g_mean", "g_lo", "g_hi", "g_global_lo", "g_global_hi"):
                d[f"curve_{k}"] = [_f(v) for v in getattr(self, k)]
        return d

    def summary_dict(self, *, max_r: int = SUMMARY_MAX_R) -> dict:
        """Compact JSON block for ``summary.json["pair_correlation"]``.

        Curves on at most ``max_r`` radii (every k-th), lengths in nm when
        calibrated (``length_unit``), values rounded to 5 significant digits.
        """
        px = self.pixel_size_nm
        s = px or 1.0
        step = max(1, math.ceil(len(self.r_px) / max_r))
        sl = slice(step - 1, None, step)

        def c(a, scale=1.0):
            return [None if not np.isfinite(v) else float(f"{v * scale:.5g}") for v in np.asarray(a)[sl]]

        return {
            "test": self.test_name, "method": self.method, "n_sim": self.n_sim,
            "n_sim_points": self.n_sim_points, "n_points": self.n_points, "alpha": self.alpha,
            "seed": self.seed, "length_unit": "nm" if px else "px",
            "r_max_rule": self.r_max_rule,
            "test_r_min": _f(self.test_range_px[0] * s), "test_r_max": _f(self.test_range_px[1] * s),
            "g_bandwidth": _f(self.bandwidth_px * s),
            "L_p_value": _f(self.L_p_value), "L_p_clustering": _f(self.L_p_clustering),
            "L_p_repulsion": _f(self.L_p_repulsion), "g_p_value": _f(self.g_p_value),
            "verdict": self.verdict,
            "r": c(self.r_px, s),
            "L_minus_r": c(self.L_minus_r_px, s), "L_minus_r_reference": c(self.L_mean, s),
            "L_minus_r_lo": c(self.L_lo, s), "L_minus_r_hi": c(self.L_hi, s),
            "L_minus_r_global_lo": c(self.L_global_lo, s), "L_minus_r_global_hi": c(self.L_global_hi, s),
            "g": c(self.g), "g_reference": c(self.g_mean), "g_lo": c(self.g_lo), "g_hi": c(self.g_hi),
            "g_global_lo": c(self.g_global_lo), "g_global_hi": c(self.g_global_hi),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


# --------------------------------------------------------------------------- estimator


@dataclass(frozen=True)
class _Estimator:
    """K and g on one window: radii, bins and the edge-correction table, built once."""

    win: Window
    r: np.ndarray
    h: float
    bin_width: float
    n_bins: int
    per_step: int  # bins per radius step: r[k] is the upper edge of bin (k+1)·per_step − 1
    table: np.ndarray | None
    kern: np.ndarray  # (n_r, n_bins) Epanechnikov weights at the bin centres, / h
    backend: str

    def __call__(self, pts: np.ndarray):
        """(K (n_r,) px², g (n_r,)) of the points (all inside the window)."""
        n = len(pts)
        if n < 2:
            return np.full(len(self.r), np.nan), np.full(len(self.r), np.nan)
        hk, hg, _ = pair_histogram(pts, bin_width=self.bin_width, n_bins=self.n_bins, area=self.win.area,
                                   rect_shape=self.win.shape if self.table is None else None,
                                   table=self.table, backend=self.backend)
        scale = 2.0 * self.win.area / (n * (n - 1))  # ordered pairs: ×2; λ² ≈ n(n−1)/|W|²
        cum = np.cumsum(hk)
        k = scale * cum[(np.arange(1, len(self.r) + 1) * self.per_step) - 1]
        return k, scale * (self.kern @ hg)

    @property
    def g_expected(self) -> np.ndarray:
        """E[ĝ(r)] under CSR: the kernel's mass on the bins (1 for r ≥ h)."""
        return self.kern.sum(1) * self.bin_width


def _estimator(win: Window, r: np.ndarray, h: float, backend: str) -> _Estimator:
    step = float(r[1] - r[0]) if len(r) > 1 else float(r[0])
    per_step = max(1, math.ceil(step / (h / 16)))  # bins ≤ h/16 wide, radii on bin edges
    bw = step / per_step
    n_bins = math.ceil((float(r[-1]) + h) / bw - 1e-9)
    table = None
    if not win.is_rectangle:
        table = set_covariance_table(win.mask, image_shape=win.shape, bin_factor=win.bin_factor,
                                     lag=math.ceil(bw * n_bins) + 1, backend=backend)
    centres = (np.arange(n_bins) + 0.5) * bw
    t = (r[:, None] - centres[None, :]) / h
    kern = np.where(np.abs(t) < 1, 0.75 * (1 - t * t) / h, 0.0)
    return _Estimator(win, r, h, bw, n_bins, per_step, table, kern, pair_histogram_backend(backend))


# --------------------------------------------------------------------------- test


def _mad(allc: np.ndarray, ref: np.ndarray, sel: np.ndarray, alpha: float):
    """Global MAD test: row 0 observed, rows 1… simulated, deviations from ``ref``."""
    ok = sel & np.isfinite(allc).all(0)
    if not ok.any():
        nanv = np.full_like(ref, np.nan)
        return nanv, nanv, float("nan"), float("nan"), float("nan")
    dev = (allc - ref)[:, ok]
    t2 = np.abs(dev).max(1)
    tp = dev.max(1)
    tm = (-dev).max(1)
    m = len(allc) - 1
    p = (1 + np.count_nonzero(t2[1:] >= t2[0])) / (m + 1)
    pc = (1 + np.count_nonzero(tp[1:] >= tp[0])) / (m + 1)
    pr = (1 + np.count_nonzero(tm[1:] >= tm[0])) / (m + 1)
    k = max(1, int(math.floor(alpha * (m + 1))))
    crit = np.sort(t2[1:])[::-1][k - 1]
    return ref - crit, ref + crit, float(p), float(pc), float(pr)


def _subwindow(win: Window, n_target_area: float) -> tuple[Window, tuple]:
    """A square crop of the window with about ``n_target_area`` px² of support
    (the most supported of a 5×5 grid of positions), aligned to the mask's blocks."""
    h, w = win.shape
    f = win.bin_factor
    frac = win.area / (h * w)
    side = math.sqrt(n_target_area / max(frac, 1e-9))
    sh, sw = min(h, max(f, round(side / f) * f)), min(w, max(f, round(side / f) * f))
    if win.mask is None:
        y0, x0 = (h - sh) // 2 // f * f, (w - sw) // 2 // f * f
        return Window((sh, sw)), (x0, y0, sw, sh)
    m = win.mask
    best = None
    for y0 in np.unique(np.linspace(0, h - sh, 5).astype(int) // f * f):
        for x0 in np.unique(np.linspace(0, w - sw, 5).astype(int) // f * f):
            sub = m[y0 // f:-(-(y0 + sh) // f), x0 // f:-(-(x0 + sw) // f)]
            score = np.count_nonzero(sub)
            if best is None or score > best[0]:
                best = (score, y0, x0, sub)
    _, y0, x0, sub = best
    return Window((sh, sw), mask=sub, bin_factor=f), (int(x0), int(y0), int(sw), int(sh))


def pair_correlation(xy, *, image_shape=None, mask=None, mask_bin_factor: int = 1,
                     pixel_size_nm: float | None = None, r_max_px: float | None = None, n_r: int = 48,
                     test_rmin_px: float | None = None, bandwidth_px: float | None = None,
                     n_sim: int = 99, alpha: float = 0.05, seed: int = 0,
                     max_sim_points: int = DEFAULT_MAX_SIM_POINTS,
                     max_neighbors: float = DEFAULT_MAX_NEIGHBORS, backend: str = "auto") -> PairCorrelation:
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
    max_sim_points : int
        Patterns of more points are simulated in a sub-window holding about
        this many points, and their deviations rescaled.
    backend : str
        Pair-histogram and set-covariance kernels (``cpp`` or ``numpy``).

    Returns
    -------
    PairCorrelation

    Raises
    ------
    ValueError
        ``n_sim < 1``, ``alpha`` outside (0, 1) or bad window arguments.

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
    import time

    t0 = time.perf_counter()
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
    est = _estimator(win, r, h, backend)
    t1 = time.perf_counter()
    k_obs, g_obs = est(pts)
    t2 = time.perf_counter()
    rng = np.random.default_rng(seed)
    max_sim_points = int(max_sim_points)
    if n <= max_sim_points:
        method, n_s, sub_box, sim_est = METHOD_EXACT, n, None, est
        sim_win = win
    else:
        method = METHOD_SUBWINDOW
        sim_win, sub_box = _subwindow(win, max_sim_points / lam)
        n_s = max(3, round(lam * sim_win.area))
        sim_est = _estimator(sim_win, r, h, backend)
    ks, gs = np.empty((n_sim, len(r))), np.empty((n_sim, len(r)))
    for i in range(n_sim):
        ks[i], gs[i] = sim_est(sim_win.sample(n_s, rng))
    t3 = time.perf_counter()
    with np.errstate(invalid="ignore"):
        l_obs = np.sqrt(np.maximum(k_obs, 0) / np.pi) - r
        ls = np.sqrt(np.maximum(ks, 0) / np.pi) - r
    if method == METHOD_EXACT:
        L_ref = np.vstack([l_obs[None], ls]).mean(0)
        g_ref = np.vstack([g_obs[None], gs]).mean(0)
    else:
        # CSR expectations of the estimators (unbiased translation correction):
        # K = πr² → L − r = 0 (up to the O(1/(λ n r)) bias of the square root),
        # g = the kernel's mass on the bins. Simulated deviations shrink as
        # 1/√n at fixed λ (Var K̂ ≈ 2πr²/(λ n) plus boundary terms, relatively
        # larger in the smaller window: conservative).
        L_ref, g_ref = np.zeros(len(r)), est.g_expected
        s = math.sqrt(n_s / n)
        ls = L_ref + s * ls
        gs = g_ref + s * (gs - sim_est.g_expected)
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    L_glo, L_ghi, pL, pc, pr = _mad(np.vstack([l_obs[None], ls]), L_ref, sel, alpha)
    g_glo, g_ghi, pg, _, _ = _mad(np.vstack([g_obs[None], gs]), g_ref, sel, alpha)
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
                           (float(rmin), float(r_max)), pixel_size_nm, method, int(n_s), sub_box, rule,
                           est.backend, timings)
