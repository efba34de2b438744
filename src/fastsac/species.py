"""Atomic species from HAADF intensities: Gaussian mixtures over per-atom
integrated intensity (and optionally amplitude).

HAADF (Z-contrast) intensity of a single atom grows roughly as Z^1.7, so in a
bimetallic single-atom catalyst the heavier element gives the brighter spots.
The mixture is fitted by EM (numpy; no scikit-learn needed), the number of
species is given or chosen by BIC, and species are ordered by brightness:
species 0 is the dimmest (lightest), the last the brightest (heaviest).

:func:`assign_species` is what ``fastsac analyze`` runs: a mixture over the
per-atom intensities *with their standard errors*, whose component means are
tied by the Z^1.7 ratios of the named elements (or, without elements, free
and their number chosen by BIC with guards against splitting one species),
and which says "not separable" when the named elements' contrast is below
the data's spread. :func:`photometry` measures the intensities it needs when
the fit gives none with errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Z", "expected_intensity_ratio", "GaussianMixture", "fit_gmm", "SpeciesResult",
           "classify_species", "HAADF_EXPONENT", "Photometry", "photometry", "SpeciesAssignment",
           "assign_species", "MIN_SEPARABLE_ACCURACY", "species_of_atoms", "atomic_number",
           "check_elements", "photometry_sigma_px", "photometry_radius_px", "photometry_feature",
           "MIN_DETECTABLE_SNR", "support_noise", "support_grid", "support_noise_of",
           "wants_lightest_snr", "with_lightest_snr", "MAX_FIT_ATOMS"]

#: Atomic numbers of metals common in single-atom catalysts (and a few supports).
Z = {
    "C": 6, "N": 7, "O": 8, "Al": 13, "Si": 14, "S": 16, "Ti": 22, "V": 23, "Cr": 24, "Mn": 25,
    "Fe": 26, "Co": 27, "Ni": 28, "Cu": 29, "Zn": 30, "Ga": 31, "Ge": 32, "Zr": 40, "Nb": 41,
    "Mo": 42, "Ru": 44, "Rh": 45, "Pd": 46, "Ag": 47, "Cd": 48, "In": 49, "Sn": 50, "Sb": 51,
    "La": 57, "Ce": 58, "Hf": 72, "Ta": 73, "W": 74, "Re": 75, "Os": 76, "Ir": 77, "Pt": 78,
    "Au": 79, "Hg": 80, "Pb": 82, "Bi": 83,
}
#: Exponent n of the HAADF Z-contrast law I ∝ Z^n (1.6–2 depending on the inner detector angle).
HAADF_EXPONENT = 1.7


def _z(element) -> int:
    if isinstance(element, (int, np.integer)):
        return int(element)
    key = str(element).strip().capitalize()
    if key not in Z:
        raise ValueError(f"unknown element {element!r}; known: {', '.join(sorted(Z, key=Z.get))} "
                         "(or pass the atomic number)")
    return Z[key]


def atomic_number(element) -> int:
    """Atomic number of an element symbol (case-insensitive) or of an int; ValueError names the known ones.

    >>> atomic_number("pd")
    46
    """
    return _z(element)


def check_elements(elements, *, name: str = "elements") -> list | None:
    """``elements`` as a list of distinct, known element symbols (or None).

    Raises TypeError for a bare string and ValueError (naming the bad symbol and
    the known ones, or the repeated element) otherwise; run before any work.
    """
    if elements is None:
        return None
    if isinstance(elements, str):
        raise TypeError(f"{name} must be a sequence of symbols such as ['Pt', 'Pd'], "
                        f"got the string {elements!r}")
    elements = list(elements)
    if not elements:
        raise ValueError(f"{name} must name at least one element, e.g. ['Pt', 'Pd']")
    zs = [atomic_number(e) for e in elements]
    if len(set(zs)) != len(zs):
        raise ValueError(f"name each element once, got {' '.join(map(str, elements))}")
    return elements


def expected_intensity_ratio(heavy, light, *, exponent: float = HAADF_EXPONENT) -> float:
    """Expected HAADF intensity ratio I_heavy / I_light = (Z_heavy / Z_light)^exponent.

    >>> round(expected_intensity_ratio("Pt", "Ni"), 2)
    5.71
    """
    return (_z(heavy) / _z(light)) ** float(exponent)


# --------------------------------------------------------------------------- EM


@dataclass(frozen=True)
class GaussianMixture:
    """A fitted Gaussian mixture in D dimensions (full covariances).

    Attributes
    ----------
    weights : (K,)  means : (K, D)  covariances : (K, D, D)
    log_likelihood : float
        Total log-likelihood of the fitted data.
    n_samples : int
    converged : bool
    n_iter : int
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    log_likelihood: float
    n_samples: int
    converged: bool
    n_iter: int

    @property
    def n_components(self) -> int:
        return len(self.weights)

    @property
    def n_parameters(self) -> int:
        k, d = self.means.shape
        return (k - 1) + k * d + k * d * (d + 1) // 2

    @property
    def bic(self) -> float:
        """Bayesian information criterion (lower is better)."""
        return -2 * self.log_likelihood + self.n_parameters * math.log(max(self.n_samples, 1))

    def _log_joint(self, x: np.ndarray) -> np.ndarray:
        """(N, K) log(weight_k · N(x | mean_k, cov_k))."""
        n, d = x.shape
        out = np.empty((n, self.n_components))
        for k in range(self.n_components):
            c = np.linalg.cholesky(self.covariances[k])
            sol = np.linalg.solve(c, (x - self.means[k]).T)
            out[:, k] = (np.log(self.weights[k]) - 0.5 * (sol * sol).sum(0)
                         - np.log(np.diag(c)).sum() - 0.5 * d * math.log(2 * math.pi))
        return out

    def predict_proba(self, x) -> np.ndarray:
        """(N, K) posterior probability of each component."""
        lj = self._log_joint(_as_2d(x))
        lj -= lj.max(1, keepdims=True)
        p = np.exp(lj)
        return p / p.sum(1, keepdims=True)


def _as_2d(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def _em(x: np.ndarray, resp: np.ndarray, *, max_iter: int, tol: float, reg: np.ndarray):
    n, d = x.shape
    ll_old = -np.inf
    gm = None
    for it in range(1, max_iter + 1):
        nk = resp.sum(0) + 1e-12
        w = nk / n
        mu = (resp.T @ x) / nk[:, None]
        cov = np.empty((len(nk), d, d))
        for k in range(len(nk)):
            dx = x - mu[k]
            cov[k] = (resp[:, k, None] * dx).T @ dx / nk[k] + reg
        gm = GaussianMixture(w, mu, cov, -np.inf, n, False, it)
        lj = gm._log_joint(x)
        m = lj.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(lj - m).sum(1))
        ll = float(lse.sum())
        resp = np.exp(lj - lse[:, None])
        if abs(ll - ll_old) <= tol * max(1.0, abs(ll)):
            return GaussianMixture(w, mu, cov, ll, n, True, it)
        ll_old = ll
    return GaussianMixture(gm.weights, gm.means, gm.covariances, ll_old, n, False, max_iter)


def fit_gmm(x, *, n_components: int, n_init: int = 5, max_iter: int = 500, tol: float = 1e-8,
            seed: int = 0) -> GaussianMixture:
    """Fit a Gaussian mixture by EM (best of ``n_init`` starts).

    Parameters
    ----------
    x : (N,) or (N, D) array
        Samples (no NaN).
    n_components : int
    n_init : int
        Starts: the first splits the data at quantiles of the first feature,
        the others pick random centres (k-means++ style).
    seed : int

    Returns
    -------
    GaussianMixture, components ordered by the mean of the first feature.
    """
    x = _as_2d(x)
    n, d = x.shape
    k = int(n_components)
    if k < 1:
        raise ValueError(f"n_components must be ≥ 1, got {n_components}")
    if n < k:
        raise ValueError(f"need at least n_components={k} samples, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf; drop those atoms first")
    var = x.var(0)
    # Regularisation keeps a component from collapsing onto a single sample.
    reg = np.diag(np.maximum(var, 1e-300) * 1e-6)
    rng = np.random.default_rng(seed)
    best = None
    for i in range(max(1, int(n_init))):
        if i == 0:
            ranks = np.argsort(np.argsort(x[:, 0], kind="stable"), kind="stable")
            lab = np.minimum(ranks * k // n, k - 1)
        else:
            centres = [x[rng.integers(n)]]
            for _ in range(1, k):
                d2 = np.min([((x - c) ** 2 / np.maximum(var, 1e-300)).sum(1) for c in centres], 0)
                centres.append(x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)])
            lab = np.argmin([((x - c) ** 2 / np.maximum(var, 1e-300)).sum(1) for c in centres], 0)
        resp = np.eye(k)[lab]
        gm = _em(x, resp, max_iter=max_iter, tol=tol, reg=reg)
        if best is None or gm.log_likelihood > best.log_likelihood:
            best = gm
    order = np.argsort(best.means[:, 0], kind="stable")
    return GaussianMixture(best.weights[order], best.means[order], best.covariances[order],
                           best.log_likelihood, n, best.converged, best.n_iter)


# --------------------------------------------------------------------------- species


@dataclass(frozen=True)
class SpeciesResult:
    """Species assignment of atoms from their HAADF intensities.

    Attributes
    ----------
    labels : (N,) int64
        Species per atom, 0 = dimmest … K−1 = brightest; −1 where the atom's
        features are NaN (failed Gaussian fit).
    confidence : (N,) float64
        Posterior probability of the assigned species (NaN for label −1).
    posterior : (N, K) float64
    n_species : int
    elements : list of str or None
        Element of each species (dimmest first) when given.
    model : GaussianMixture
    bic : dict
        BIC per number of components tried.
    features : list of str
    species_stats : list of dict
        Per species: n_atoms, fraction, weight, mean/sd of intensity (and amplitude).
    intensity_ratio : float
        Mean intensity of the brightest species / of the dimmest (NaN for K=1).
    expected_ratio : float or None
        (Z_heaviest / Z_lightest)^exponent when elements are given.
    """

    labels: np.ndarray
    confidence: np.ndarray
    posterior: np.ndarray
    n_species: int
    elements: list | None
    model: GaussianMixture
    bic: dict
    features: list
    species_stats: list
    intensity_ratio: float
    expected_ratio: float | None
    exponent: float = HAADF_EXPONENT
    params: dict = field(default_factory=dict)

    def names(self) -> list:
        """Name of each species: its element or ``species_<k>``."""
        return list(self.elements) if self.elements else [f"species_{k}" for k in range(self.n_species)]

    def as_dict(self) -> dict:
        f = (lambda v: None if v is None or not np.isfinite(v) else float(v))
        return {"n_species": self.n_species, "species_names": self.names(), "species_features": self.features,
                "species_bic": {str(k): f(v) for k, v in self.bic.items()},
                "species_stats": self.species_stats,
                "intensity_ratio_brightest_to_dimmest": f(self.intensity_ratio),
                "expected_intensity_ratio": f(self.expected_ratio), "haadf_exponent": self.exponent,
                "n_unassigned": int(np.count_nonzero(self.labels < 0)),
                "mean_confidence": f(np.nanmean(self.confidence)) if np.isfinite(self.confidence).any() else None}


def classify_species(intensity, *, amplitude=None, n_species: int | None = None, max_species: int = 3,
                     elements: Sequence | None = None, exponent: float = HAADF_EXPONENT,
                     n_init: int = 5, seed: int = 0) -> SpeciesResult:
    """Assign atoms to species by a Gaussian mixture over their intensities.

    Parameters
    ----------
    intensity : (N,) array
        Integrated intensity per atom (``Detections.intensity``, counts·px²).
    amplitude : (N,) array, optional
        Peak amplitude per atom (``Detections.amplitude``); when given the
        mixture is 2-D over (intensity, amplitude).
    n_species : int, optional
        Number of species; default: ``len(elements)`` if given, else the
        number in 1 … ``max_species`` with the lowest BIC.
    elements : sequence of str or int, optional
        Elements present, in any order, e.g. ``["Pt", "Ni"]``; sorted by Z so
        that the heaviest is assigned to the brightest species.
    exponent : float
        Z-contrast exponent of the expected ratio.
    n_init, seed : int
        EM restarts and their seed.

    Returns
    -------
    SpeciesResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> i = np.concatenate([rng.normal(1, 0.15, 200), rng.normal(3.07, 0.4, 100)])
    >>> r = classify_species(i, elements=["Pt", "Ni"])
    >>> [s["n_atoms"] for s in r.species_stats], r.elements
    ([200, 100], ['Ni', 'Pt'])
    """
    inten = np.asarray(intensity, dtype=np.float64).ravel()
    feats = [inten]
    names = ["intensity"]
    if amplitude is not None:
        amp = np.asarray(amplitude, dtype=np.float64).ravel()
        if amp.shape != inten.shape:
            raise ValueError(f"amplitude must have the shape of intensity {inten.shape}, got {amp.shape}")
        feats.append(amp)
        names.append("amplitude")
    x = np.column_stack(feats)
    ok = np.isfinite(x).all(1)
    els = None
    if elements is not None:
        els = sorted((str(e) if not isinstance(e, (int, np.integer)) else int(e) for e in elements), key=_z)
        els = [str(e) for e in els]
        if n_species is not None and n_species != len(els):
            raise ValueError(f"n_species={n_species} but {len(els)} elements given; drop one of them")
        n_species = len(els)
    n_ok = int(ok.sum())
    # Features are standardised for EM (intensity and amplitude differ by orders of magnitude).
    mu = x[ok].mean(0) if n_ok else np.zeros(x.shape[1])
    sd = x[ok].std(0) if n_ok else np.ones(x.shape[1])
    sd = np.where(sd > 0, sd, 1.0)
    xs = (x[ok] - mu) / sd
    bic = {}
    if n_species is None:
        max_species = int(max_species)
        if max_species < 1:
            raise ValueError(f"max_species must be ≥ 1, got {max_species}")
        models = {}
        for k in range(1, min(max_species, max(n_ok, 1)) + 1):
            if n_ok < 2 * k:
                break
            models[k] = fit_gmm(xs, n_components=k, n_init=n_init, seed=seed)
            bic[k] = models[k].bic
        if not models:
            raise ValueError(f"too few atoms with finite intensity ({n_ok}) to fit a mixture")
        n_species = min(bic, key=bic.get)
        gm = models[n_species]
    else:
        n_species = int(n_species)
        if n_ok < n_species:
            raise ValueError(f"{n_ok} atoms with finite intensity cannot make {n_species} species")
        gm = fit_gmm(xs, n_components=n_species, n_init=n_init, seed=seed)
        bic[n_species] = gm.bic
    post = np.full((len(x), n_species), np.nan)
    post[ok] = gm.predict_proba(xs)
    labels = np.full(len(x), -1, np.int64)
    labels[ok] = np.argmax(post[ok], 1)
    conf = np.full(len(x), np.nan)
    conf[ok] = post[ok].max(1)
    stats = []
    for k in range(n_species):
        sel = labels == k
        s = {"species": k, "name": els[k] if els else f"species_{k}", "n_atoms": int(sel.sum()),
             "fraction": float(sel.sum() / max(n_ok, 1)), "weight": float(gm.weights[k]),
             "intensity_mean": float(inten[sel].mean()) if sel.any() else None,
             "intensity_sd": float(inten[sel].std(ddof=1)) if sel.sum() > 1 else None,
             "model_intensity_mean": float(gm.means[k, 0] * sd[0] + mu[0]),
             "model_intensity_sd": float(math.sqrt(gm.covariances[k, 0, 0]) * sd[0]),
             "mean_confidence": float(conf[sel].mean()) if sel.any() else None}
        if amplitude is not None:
            s["amplitude_mean"] = float(x[sel, 1].mean()) if sel.any() else None
        if els:
            s["Z"] = _z(els[k])
        stats.append(s)
    lo, hi = stats[0]["model_intensity_mean"], stats[-1]["model_intensity_mean"]
    ratio = hi / lo if n_species > 1 and lo > 0 else float("nan")
    expected = expected_intensity_ratio(els[-1], els[0], exponent=exponent) if els and len(els) > 1 else None
    return SpeciesResult(labels, conf, post, n_species, els, gm, bic, names, stats, float(ratio), expected,
                         float(exponent), {"n_init": n_init, "seed": seed, "max_species": max_species,
                          "feature_mean": mu.tolist(), "feature_sd": sd.tolist()})


# --------------------------------------------------------------------------- photometry


@dataclass(frozen=True)
class Photometry:
    """Fixed-shape intensities of atoms.

    Attributes
    ----------
    intensity, intensity_err : (N,) float64
        Integrated intensity 2πσ²A above the local background and its
        standard error (counts·px²; NaN where the window had < 4 pixels).
    amplitude, background : (N,) float64
    sigma_px, radius_px : float
        Gaussian σ and window radius used.
    """

    intensity: np.ndarray
    intensity_err: np.ndarray
    amplitude: np.ndarray
    background: np.ndarray
    sigma_px: float
    radius_px: int


def photometry_sigma_px(pixel_size_nm: float | None) -> float:
    """σ (px) of the species stage's fixed-shape photometry at this pixel size:
    the apparent atom size (:data:`fastsac.scale.REFERENCE_SCALE_PX` at
    :data:`~fastsac.scale.REFERENCE_PIXEL_SIZE_NM`; uncalibrated images use the
    reference pixel size). Frames and montages measure with this one σ."""
    from .scale import REFERENCE_PIXEL_SIZE_NM, REFERENCE_SCALE_PX

    return REFERENCE_SCALE_PX * REFERENCE_PIXEL_SIZE_NM / (pixel_size_nm or REFERENCE_PIXEL_SIZE_NM)


def photometry_radius_px(sigma_px: float) -> int:
    """Default disc radius of :func:`photometry` for atoms of σ ``sigma_px``: ⌈2.5σ⌉."""
    return int(math.ceil(2.5 * float(sigma_px)))


def photometry_feature(sigma_px: float, radius_px: int) -> str:
    """``SpeciesAssignment.feature`` of species measured by :func:`photometry`."""
    return f"fixed-shape photometry (sigma {sigma_px:.3g} px, radius {radius_px} px)"


def photometry(image, xy, *, sigma_px: float, radius_px: int | None = None,
               chunk: int = 4096) -> Photometry:
    """Intensity of each atom by a fixed-shape least-squares fit.

    At each position a Gaussian of known ``sigma_px`` plus a constant
    background is fitted to the pixels of a disc (linear least squares: only
    the amplitude and the background are free, so it never fails and its
    error is the classical one, residual variance × (XᵀX)⁻¹). With the
    shape known this is the minimum-variance linear estimate of the
    integrated intensity, the quantity that scales as Z^1.7.

    Parameters
    ----------
    image : (H, W) array
    xy : (N, 2) array
        Positions [x, y] px (pixel centres at integers).
    sigma_px : float
        Gaussian σ of an atom's image, px.
    radius_px : int, optional
        Disc radius; default ceil(2.5 σ).

    Returns
    -------
    Photometry

    Examples
    --------
    >>> yy, xx = np.mgrid[0:40, 0:40]
    >>> img = 10 + 5 * np.exp(-((xx - 20.3) ** 2 + (yy - 19.6) ** 2) / (2 * 2.0 ** 2))
    >>> p = photometry(img, [[20.3, 19.6]], sigma_px=2.0)
    >>> round(float(p.intensity[0] / (2 * np.pi * 4 * 5)), 6), round(float(p.background[0]), 6)
    (1.0, 10.0)
    """
    from ._validate import as_float, as_points, check_image, check_positive

    img = as_float(check_image(image, name="image", allow_nan=True))
    pts = as_points(xy, name="xy")
    s = check_positive(sigma_px, name="sigma_px")
    r = photometry_radius_px(s) if radius_px is None else int(radius_px)
    if r < 1:
        raise ValueError(f"radius_px must be ≥ 1, got {radius_px}")
    h, w = img.shape
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    disc = (oy**2 + ox**2) <= r * r
    oy, ox = oy[disc], ox[disc]
    n = len(pts)
    out = {k: np.full(n, np.nan) for k in ("i", "e", "a", "b")}
    for c0 in range(0, n, max(1, int(chunk))):
        p = pts[c0:c0 + chunk]
        cx = np.floor(p[:, 0] + 0.5).astype(np.int64)
        cy = np.floor(p[:, 1] + 0.5).astype(np.int64)
        px_ = cx[:, None] + ox[None, :]
        py_ = cy[:, None] + oy[None, :]
        inside = (px_ >= 0) & (px_ < w) & (py_ >= 0) & (py_ < h)
        v = img[np.clip(py_, 0, h - 1), np.clip(px_, 0, w - 1)].astype(np.float64)
        wt = (inside & np.isfinite(v)).astype(np.float64)
        v = np.where(wt > 0, v, 0.0)
        g = np.exp(-((px_ - p[:, :1]) ** 2 + (py_ - p[:, 1:]) ** 2) / (2 * s * s)) * wt
        sgg, sg1, s11 = (g * g).sum(1), g.sum(1), wt.sum(1)
        sgv, s1v = (g * v).sum(1), (wt * v).sum(1)
        det = sgg * s11 - sg1 * sg1
        ok = (s11 >= 4) & (det > 1e-12 * np.maximum(sgg * s11, 1e-300))
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (s11 * sgv - sg1 * s1v) / det
            b = (sgg * s1v - sg1 * sgv) / det
            res = (v - a[:, None] * g - b[:, None] * wt) * wt
            s2 = (res * res).sum(1) / np.maximum(s11 - 2, 1)
            var_a = s2 * s11 / det
        norm = 2 * math.pi * s * s
        sl = slice(c0, c0 + len(p))
        out["a"][sl] = np.where(ok, a, np.nan)
        out["b"][sl] = np.where(ok, b, np.nan)
        out["i"][sl] = np.where(ok, norm * a, np.nan)
        out["e"][sl] = np.where(ok, norm * np.sqrt(np.maximum(var_a, 0)), np.nan)
    return Photometry(out["i"], out["e"], out["a"], out["b"], float(s), r)


# --------------------------------------------------------------------------- species assignment

#: Named elements whose Bayes per-atom accuracy (equal amounts, the data's
#: widths) is below this are reported as not separable instead of guessed.
MIN_SEPARABLE_ACCURACY = 0.9

#: The lightest named element is flagged as not detectable when its expected
#: intensity is below this many standard deviations of the photometry of bare
#: support (:func:`support_noise`): on simulated frames the classical detector
#: finds 9 % of the Pd atoms at 2.6 (Pt+Pd, 4e4 e/Å²) and 85 % of the Ir atoms
#: at 5.8 (Pt+Ir) (benchmarks/species_accuracy.py; docs/species.md).
MIN_DETECTABLE_SNR = 4.0

#: :func:`assign_species` fits the mixture on at most this many atoms (a seeded
#: random subset) and then labels every atom: the fit's cost stops growing with
#: the number of atoms (10⁶ atoms of a montage), while its handful of
#: parameters are already pinned far below their spread at this size
#: (labels of 2·10⁵ synthetic atoms agree with the full fit to ≥ 99.9 %,
#: tests/species/test_assign.py; cost in docs/montage.md).
MAX_FIT_ATOMS = 20_000


def support_grid(shape, xy, *, sigma_px: float, max_positions: int = 4000) -> np.ndarray:
    """Positions of bare support where :func:`support_noise` measures: a square
    grid over an image of ``shape``, kept at least two photometry radii from
    every atom in ``xy``.

    The grid depends only on the image's shape and the atoms, so a montage
    computes it once over its global shape and measures its points tile by
    tile (:func:`fastsac.montage.montage_species`) exactly as a frame does.

    Parameters
    ----------
    shape : (int, int)
        Image shape (H, W), px.
    xy : (N, 2) array
        Atom positions [x, y] px.
    sigma_px : float
        Photometry σ (the atom image's size), px.
    max_positions : int
        Grid step chosen so that at most about this many positions are kept
        (memory and time stay bounded for any image size).

    Returns
    -------
    (M, 2) float64 array of integer positions [x, y] px, M ≤ ~``max_positions``.

    Examples
    --------
    >>> support_grid((100, 100), np.zeros((0, 2)), sigma_px=2.0, max_positions=16).shape
    (16, 2)
    """
    from scipy.spatial import cKDTree

    h, w = (int(v) for v in shape)
    r = photometry_radius_px(sigma_px)
    step = max(2 * r, int(math.ceil(math.sqrt(h * w / max(int(max_positions), 1)))))
    gy, gx = np.mgrid[r:h - r:step, r:w - r:step]
    grid = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(pts) and len(grid):
        dist, _ = cKDTree(pts).query(grid)
        grid = grid[dist > 2 * r]
    return grid


def support_noise_of(grid_intensity, grid_background, *, atom_background) -> float:
    """The robust statistic of :func:`support_noise` from photometry already
    measured: 1.4826 × MAD of the grid's intensities, keeping positions whose
    background is at least the 5th percentile of the atoms' backgrounds
    (vacuum is flatter and would make the support look quieter). NaN with
    fewer than 30 positions.

    Parameters
    ----------
    grid_intensity, grid_background : (M,) array
        :func:`photometry` intensity and background at :func:`support_grid`.
    atom_background : (N,) array
        :func:`photometry` background of the atoms (same σ and radius).

    Returns
    -------
    float, counts·px².
    """
    inten = np.asarray(grid_intensity, np.float64).ravel()
    bg = np.asarray(grid_background, np.float64).ravel()
    ok = np.isfinite(inten)
    bg_atoms = np.asarray(atom_background, np.float64).ravel()
    bg_atoms = bg_atoms[np.isfinite(bg_atoms)]
    if len(bg_atoms):
        ok &= bg >= np.quantile(bg_atoms, 0.05)
    v = inten[ok]
    if len(v) < 30:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def support_noise(image, xy, *, sigma_px: float, max_positions: int = 4000) -> float:
    """Standard deviation of the fixed-shape :func:`photometry` intensity on bare
    support: what an atom's intensity must stand out from to be found.

    :func:`photometry` at the positions of :func:`support_grid`, reduced by
    :func:`support_noise_of` (robust: 1.4826 × MAD over positions whose
    background is at least the 5th percentile of the atoms' backgrounds).
    NaN with fewer than 30 positions.

    Parameters
    ----------
    image : (H, W) array
    xy : (N, 2) array
        Atom positions [x, y] px (excluded with their surroundings).
    sigma_px : float
        Photometry σ (the atom image's size), px.
    max_positions : int
        Grid step chosen so that at most about this many positions are measured.

    Returns
    -------
    float, counts·px² (the unit of :attr:`Photometry.intensity`).
    """
    img = np.asarray(image)
    grid = support_grid(img.shape, xy, sigma_px=sigma_px, max_positions=max_positions)
    if len(grid) < 30:
        return float("nan")
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    ph = photometry(img, grid, sigma_px=sigma_px)
    bg_atoms = photometry(img, pts, sigma_px=sigma_px).background if len(pts) else np.zeros(0)
    return support_noise_of(ph.intensity, ph.background, atom_background=bg_atoms)


def _norm_cdf(x):
    from scipy.special import ndtr

    return ndtr(np.asarray(x, float))


@dataclass(frozen=True)
class _Mixture:
    means: np.ndarray       # (K,) scaled units, ascending
    rel_width: float        # c: intrinsic relative spread of one species
    abs_width: float        # s0: extra additive spread (scaled units)
    weights: np.ndarray     # (K,)
    nll: float
    n_params: int

    def variances(self, e2: np.ndarray) -> np.ndarray:
        return (self.rel_width * self.means[None, :]) ** 2 + self.abs_width**2 + e2[:, None]

    def log_joint(self, x, e2):
        v = self.variances(e2)
        return (np.log(self.weights)[None, :] - 0.5 * np.log(2 * math.pi * v)
                - 0.5 * (x[:, None] - self.means[None, :]) ** 2 / v)

    def posterior(self, x, e2):
        lj = self.log_joint(x, e2)
        lj -= lj.max(1, keepdims=True)
        p = np.exp(lj)
        return p / p.sum(1, keepdims=True)


def _fit_mixture(x: np.ndarray, e2: np.ndarray, k: int, log_zr: np.ndarray | None,
                 starts: list, exponent_range: tuple = (HAADF_EXPONENT, HAADF_EXPONENT),
                 max_rel_width: float = 3.0) -> _Mixture:
    """Maximum likelihood over (means, c, s0, weights) by L-BFGS-B from several starts.

    ``log_zr`` (K,) = log(Z_k / Z_0), ascending, ties the means:
    m_k = m_0 (Z_k/Z_0)^n with the exponent n fitted within ``exponent_range``;
    c is bounded by ``max_rel_width``."""
    from scipy.optimize import minimize

    tied = log_zr is not None
    n_lo, n_hi = (float(v) for v in exponent_range)

    def unpack(t):
        if tied:
            means = math.exp(t[0]) * np.exp(t[1] * log_zr)
            j = 2
        else:
            means = np.exp(t[0] + np.concatenate([[0.0], np.cumsum(np.exp(t[1:k]))]))
            j = k
        c, s0 = math.exp(t[j]), math.exp(t[j + 1])
        logits = np.concatenate([[0.0], t[j + 2:]])
        wts = np.exp(logits - logits.max())
        return means, c, s0, wts / wts.sum()

    def nll(t):
        means, c, s0, wts = unpack(t)
        v = (c * means[None, :]) ** 2 + s0 * s0 + e2[:, None]
        lj = np.log(wts)[None, :] - 0.5 * np.log(2 * math.pi * v) - 0.5 * (x[:, None] - means) ** 2 / v
        m = lj.max(1)
        return -float((m + np.log(np.exp(lj - m[:, None]).sum(1))).sum())

    best = None
    for means0, c0 in starts:
        means0 = np.sort(np.maximum(np.asarray(means0, float), 1e-3))
        if tied:
            t0 = [math.log(means0[0]), 0.5 * (n_lo + n_hi)]
            head = [(-12.0, 12.0), (n_lo, n_hi)]
        else:
            t0 = [math.log(means0[0])] + [math.log(max(math.log(means0[i + 1] / means0[i]), 1e-3))
                                          for i in range(k - 1)]
            head = [(-12.0, 12.0)] + [(-8.0, 3.0)] * (k - 1)
        c_hi = max(float(max_rel_width), 0.006)
        t0 += [math.log(min(c0, 0.9 * c_hi)), math.log(0.05)] + [0.0] * (k - 1)
        bounds = head + [(math.log(0.005), math.log(c_hi)), (math.log(1e-4), math.log(10.0))] + \
            [(-9.0, 9.0)] * (k - 1)
        r = minimize(nll, np.array(t0), method="L-BFGS-B", bounds=bounds)
        if best is None or r.fun < best[1]:
            best = (r.x, float(r.fun))
    means, c, s0, wts = unpack(best[0])
    n_params = ((2 if n_hi > n_lo else 1) if tied else k) + 2 + (k - 1)
    mix = _Mixture(means, c, s0, wts, best[1], n_params)
    return mix, (float(best[0][1]) if tied else float("nan"))


def _separability(mix: _Mixture, e2_typ: float) -> tuple[np.ndarray, np.ndarray]:
    """d' and Bayes accuracy (equal amounts) of each adjacent pair of components."""
    v = (mix.rel_width * mix.means) ** 2 + mix.abs_width**2 + e2_typ
    dp = np.diff(mix.means) / np.sqrt(0.5 * (v[1:] + v[:-1]))
    return dp, _norm_cdf(dp / 2)


def _max_dip(mix: _Mixture, e2_typ: float) -> float:
    """Largest valley/peak ratio of the mixture density between neighbouring means
    (1: no valley, the classes form one mode)."""
    sd = np.sqrt((mix.rel_width * mix.means) ** 2 + mix.abs_width**2 + e2_typ)

    def dens(t):
        return (mix.weights / sd * np.exp(-0.5 * ((t[:, None] - mix.means) / sd) ** 2)).sum(1)

    worst = 0.0
    for k in range(len(mix.means) - 1):
        t = np.linspace(mix.means[k], mix.means[k + 1], 201)
        d = dens(t)
        worst = max(worst, float(d.min() / min(d[0], d[-1])))
    return worst


@dataclass(frozen=True)
class SpeciesAssignment:
    """Species (or intensity classes) of atoms from their intensities.

    Attributes
    ----------
    labels : (N,) int64
        Class per atom, 0 = dimmest; −1 without a finite intensity or when the
        classes are not separable.
    species : (N,) object
        Class name per atom (an element, ``"Pt/Ir"`` when not separable, or
        ``"x1.00"``, ``"x2.45"`` … = intensity relative to the dimmest class
        without elements); ``""`` for atoms without intensity.
    probability : (N,) float64
        Posterior probability of the assigned class (NaN where unassigned).
    posterior : (N, K) float64
    names : list of str
        Class names, dimmest first.
    status : str
        ``"ok"``, ``"not separable"``, ``"one intensity class"`` or ``"too few atoms"``.
    mode : str
        ``"elements"`` or ``"intensity classes"``.
    lightest_snr : float
        Expected intensity of the lightest named element over the support
        noise (:func:`support_noise`); NaN unless :func:`species_of_atoms` ran
        with two or more elements. Below :data:`MIN_DETECTABLE_SNR` its atoms
        are mostly missing from the detections.
    n_fit_atoms : int
        Atoms the mixture's parameters were fitted on: every atom with an
        intensity, or a seeded draw of ``max_fit_atoms`` of them above that cap.
    """

    labels: np.ndarray
    species: np.ndarray
    probability: np.ndarray
    posterior: np.ndarray
    names: list
    status: str
    mode: str
    elements: list | None
    means: np.ndarray
    weights: np.ndarray
    rel_width: float
    abs_width: float
    dprime: np.ndarray
    pair_accuracy: np.ndarray
    bic: dict
    errors_known: bool
    note: str = ""
    exponent: float = HAADF_EXPONENT
    feature: str = "intensity"
    lightest_snr: float = float("nan")
    n_fit_atoms: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.names)

    def counts(self) -> dict:
        """Atoms per assigned class name (unassigned atoms not counted)."""
        vals, cnt = np.unique(self.species[self.species != ""].astype(str), return_counts=True)
        return {str(v): int(c) for v, c in zip(vals, cnt)}

    def as_dict(self) -> dict:
        """JSON-ready summary (``summary.json`` key ``species``)."""
        f = (lambda v: None if v is None or not np.isfinite(v) else float(v))
        counts = self.counts()
        n_lab = int(np.count_nonzero(self.labels >= 0))
        ok = self.status == "ok"
        d = {"status": self.status, "mode": self.mode, "elements": self.elements,
             "names": list(self.names) if ok else sorted(counts), "n_classes": self.n_classes if ok else 1,
             "counts": counts,
             "fractions": ({k: counts.get(k, 0) / n_lab for k in self.names} if ok and n_lab else None),
             "expected_fractions": ({k: f(np.nanmean(self.posterior[self.labels >= 0, i]))
                                     for i, k in enumerate(self.names)} if ok and n_lab else None),
             "n_unassigned_no_intensity": int(np.count_nonzero(self.species == "")),
             "class_intensity_means": [f(v) for v in self.means],
             "intensity_ratios_to_dimmest": [f(v / self.means[0]) for v in self.means] if len(self.means) else [],
             "mixture_weights": [f(v) for v in self.weights],
             "relative_width": f(self.rel_width), "absolute_width": f(self.abs_width),
             "separation_dprime": [f(v) for v in self.dprime],
             "pairwise_accuracy_equal_amounts": [f(v) for v in self.pair_accuracy],
             "expected_accuracy": (f(np.nanmean(self.probability)) if ok and np.isfinite(self.probability).any()
                                   else None),
             "n_fit_atoms": int(self.n_fit_atoms),
             "min_separable_accuracy": MIN_SEPARABLE_ACCURACY, "intensity_errors_known": self.errors_known,
             "feature": self.feature,
             "fitted_haadf_exponent": f(self.exponent), "bic": {str(k): f(v) for k, v in self.bic.items()},
             "note": self.note,
             "lightest_element_snr": f(self.lightest_snr),
             "lightest_element_detectable": (None if not np.isfinite(self.lightest_snr)
                                             else bool(self.lightest_snr >= MIN_DETECTABLE_SNR)),
             "min_detectable_snr": MIN_DETECTABLE_SNR}
        if d["lightest_element_detectable"] is False:
            light = self.elements[0] if self.elements else "the lightest element"
            d["warning"] = (f"{light} atoms are expected at {self.lightest_snr:.1f}× the support's intensity "
                            f"noise (below {MIN_DETECTABLE_SNR:g}): most of them cannot be told from the "
                            f"support and are missing from the detections, so the {light} fraction is "
                            "underestimated")
        return d


def assign_species(intensity, *, intensity_err=None, elements: Sequence | None = None,
                   exponent: float = HAADF_EXPONENT, exponent_range: tuple | None = (1.4, 2.2),
                   max_classes: int = 3,
                   min_accuracy: float = MIN_SEPARABLE_ACCURACY, min_bic_gain: float = 10.0,
                   min_class_ratio: float = 1.25, min_weight: float = 0.05,
                   max_dip: float = 0.8, max_rel_width: float = 0.1,
                   max_fit_atoms: int | None = MAX_FIT_ATOMS) -> SpeciesAssignment:
    """Assign each atom a species from its intensity and the intensity's error.

    Model: atom i of species k has intensity ~ N(m_k, (c·m_k)² + s0² + e_i²)
    where e_i is its measurement error (``intensity_err``; 0 when unknown,
    then s0 absorbs it), c the intrinsic relative spread of one species
    (shared) and s0 an additive spread. With ``elements`` the means are tied
    by the HAADF contrast law, m_k = m_0·(Z_k/Z_0)^exponent, so only m_0, c,
    s0 and the mixing weights are fitted; without, the means are free and
    their number (1 … ``max_classes``) is chosen by BIC, a class being added
    only if the BIC falls by ``min_bic_gain``, every class holds
    ``min_weight`` of the atoms, neighbouring classes differ by
    ``min_class_ratio`` in intensity, are separable (below) and the fitted
    density dips between them to at most ``max_dip`` of the lower peak (a
    skewed single species has no dip): a pure frame gives one class.

    Separability: for neighbouring classes, d' = Δm / √(mean variance) at the
    median error; the Bayes accuracy for equal amounts is Φ(d'/2). Named
    elements below ``min_accuracy`` are reported ``"not separable"`` (e.g.
    Pt and Ir, Z 78 vs 77: ratio 1.02) and no atom is labelled with one of
    them.

    Parameters
    ----------
    intensity : (N,) array
        Integrated intensity per atom (background-free, any linear unit).
    intensity_err : (N,) array, optional
        Its standard error (NaN or missing: unknown).
    elements : sequence of str or int, optional
        Elements present, e.g. ``["Pt", "Pd"]`` (any order).
    exponent : float
        Z-contrast exponent used when ``exponent_range`` is None.
    exponent_range : (float, float) or None
        With named elements the exponent is fitted within this range (the
        effective contrast of an atom on a support depends on the detector's
        inner angle, 1.6–2, and the intensities of light atoms measured over
        a textured support come out relatively low); None fixes it at
        ``exponent``.
    max_fit_atoms : int or None
        Fit the mixture (and choose the number of classes) on at most this
        many atoms with an intensity, drawn by a seeded RNG (the same atoms
        always give the same draw), then compute every atom's posterior.
        None fits all atoms. Frames below the cap are fitted on every atom.
    max_rel_width : float
        Upper bound of c with named elements: one element's own spread (probe,
        height, defocus) is a few per cent; more spread is the support (s0) or
        the measurement (e_i). Left free, c absorbed the support's heavy tails
        into the brightest class and moved the boundary towards the lighter
        one (Pt+Pd at 4e4 e/Å², true positions: 92.3 % free, 94.4 % bounded;
        docs/species.md). Without elements c is free.

    Returns
    -------
    SpeciesAssignment

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> i = np.concatenate([rng.normal(1, 0.12, 150), rng.normal(2.45, 0.25, 100)])
    >>> r = assign_species(i, intensity_err=np.full(250, 0.05), elements=["Pt", "Pd"])
    >>> r.status, r.counts()
    ('ok', {'Pd': 150, 'Pt': 100})
    >>> assign_species(rng.normal(1, 0.1, 200)).names
    ['x1.00']
    """
    x_all = np.asarray(intensity, dtype=np.float64).ravel()
    n = len(x_all)
    if max_fit_atoms is not None:
        if isinstance(max_fit_atoms, bool) or not isinstance(max_fit_atoms, (int, np.integer)):
            raise TypeError(f"max_fit_atoms must be an int or None, got {type(max_fit_atoms).__name__}")
        if max_fit_atoms < 100:
            raise ValueError(f"max_fit_atoms must be ≥ 100 (or None: fit every atom), got {max_fit_atoms}")
        max_fit_atoms = int(max_fit_atoms)
    if intensity_err is None:
        e_all = np.full(n, np.nan)
    else:
        e_all = np.asarray(intensity_err, dtype=np.float64).ravel()
        if e_all.shape != x_all.shape:
            raise ValueError(f"intensity_err must have the shape of intensity {x_all.shape}, got {e_all.shape}")
    errors_known = bool(np.isfinite(e_all).any())
    ok = np.isfinite(x_all)
    els = None
    log_zr = None
    n_range = (float(exponent), float(exponent))
    if elements is not None:
        if len(elements) < 1:
            raise ValueError("elements must name at least one element, e.g. ['Pt', 'Pd']")
        els = [str(e) for e in sorted(elements, key=_z)]
        zs = [_z(e) for e in els]
        if len(set(zs)) != len(zs):
            raise ValueError(f"elements must be different, got {list(elements)!r}")
        log_zr = np.log(np.array(zs, float) / zs[0])
        n_range = (float(exponent), float(exponent)) if exponent_range is None else \
            tuple(float(v) for v in exponent_range)
        if not 0 < n_range[0] <= n_range[1]:
            raise ValueError(f"exponent_range must be (low, high) with 0 < low ≤ high, got {exponent_range!r}")
    mode = "elements" if els else "intensity classes"
    fitted = {"exponent": float(exponent) if els else float("nan")}
    x = x_all[ok]
    e = e_all[ok]
    e = np.where(np.isfinite(e), e, 0.0)
    nok = len(x)

    def result(labels, post, names, status, mix, dp, acc, bic, note=""):
        species = np.full(n, "", dtype=object)
        prob = np.full(n, np.nan)
        if status == "ok":
            lab_ok = labels >= 0
            species[lab_ok] = np.array(names, dtype=object)[labels[lab_ok]]
            prob[lab_ok] = post[lab_ok, :].max(1)
        else:
            joint = "/".join(reversed(names)) if names else "unassigned"
            species[ok] = joint
            labels = np.where(ok, -1, -1)
        means = mix.means * scale if mix is not None else np.zeros(0)
        return SpeciesAssignment(labels, species, prob, post, list(names), status, mode, els,
                                 means, mix.weights if mix is not None else np.zeros(0),
                                 mix.rel_width if mix is not None else float("nan"),
                                 mix.abs_width * scale if mix is not None else float("nan"),
                                 dp, acc, bic, errors_known, note, float(fitted["exponent"]),
                                 n_fit_atoms=0 if mix is None else min(nok, max_fit_atoms or nok))

    labels = np.full(n, -1, np.int64)
    k_named = len(els) if els else 0
    scale = float(np.median(np.abs(x))) if nok else 1.0
    scale = scale if scale > 0 else 1.0
    if nok < max(8, 3 * max(k_named, 1)):
        names = els or []
        return result(labels, np.full((n, max(k_named, 1)), np.nan), names, "too few atoms", None,
                      np.zeros(0), np.zeros(0), {}, f"{nok} atoms with an intensity; need ≥ 8")
    xs, e2 = x / scale, (e / scale) ** 2
    # The mixture's few parameters are fitted on at most max_fit_atoms atoms (a seeded
    # draw: the same atoms give the same draw, in a frame or a montage); posteriors
    # are then computed for every atom. Below the cap every atom is fitted.
    if max_fit_atoms is not None and nok > max_fit_atoms:
        pick = np.sort(np.random.default_rng(0).choice(nok, max_fit_atoms, replace=False))
        xf, e2f = xs[pick], e2[pick]
    else:
        xf, e2f = xs, e2
    nfit = len(xf)
    e2_typ = float(np.median(e2f))
    qs = np.quantile(xf, [0.1, 0.25, 0.5, 0.75, 0.9])

    def finish(mix, names, status, bic, note=""):
        post = np.full((n, len(mix.means)), np.nan)
        post[ok] = mix.posterior(xs, e2)
        lab = labels.copy()
        lab[ok] = np.argmax(post[ok], 1)
        dp, acc = _separability(mix, e2_typ)
        return result(lab, post, names, status, mix, dp, acc, bic, note)

    if els:
        k = len(els)
        if k == 1:
            mix, _ = _fit_mixture(xf, e2f, 1, None, [([qs[2]], 0.2)])
            return finish(mix, els, "ok", {1: 2 * mix.nll + mix.n_params * math.log(nfit)})
        r_mid = np.exp(np.mean(n_range) * log_zr)
        starts = [(q / r_mid[j] * r_mid, 0.15) for j in range(k) for q in qs[1:4]]
        mix, fitted_n = _fit_mixture(xf, e2f, k, log_zr, starts, n_range, max_rel_width)
        fitted["exponent"] = fitted_n
        bic = {k: 2 * mix.nll + mix.n_params * math.log(nfit)}
        dp, acc = _separability(mix, e2_typ)
        ratios = mix.means[1:] / mix.means[:-1]
        empty = mix.weights.min() < max(min_weight, 2.0 / nfit)
        one, _ = _fit_mixture(xf, e2f, 1, None, [([qs[2]], 0.2)])
        bic1 = 2 * one.nll + one.n_params * math.log(nfit)
        # A nearly empty component means one class, not an inseparable pair, unless the
        # named elements' contrast is too small to be seen at all (Pt/Ir: ×1.02).
        if (acc < min_accuracy).any() and not (empty and ratios.min() >= min_class_ratio):
            worst = int(np.argmin(acc))
            hi_r = math.exp(n_range[1] * (log_zr[worst + 1] - log_zr[worst]))
            note = (f"{els[worst + 1]}/{els[worst]}: intensity ratio {mix.means[worst + 1] / mix.means[worst]:.3f} "
                    f"(Z^{fitted_n:.2f}; at most {hi_r:.3f} for exponents up to {n_range[1]:g}) against a "
                    f"relative spread of {mix.rel_width:.2f} per species: d' = {dp[worst]:.2f}, at best "
                    f"{acc[worst]:.0%} of atoms right with equal amounts")
            return result(labels, np.full((n, k), np.nan), els, "not separable", mix, dp, acc, bic, note)
        bic[1] = bic1
        # The elements are asserted present, so two classes need no BIC gain; one class
        # is reported when a component is nearly empty or one class is clearly better.
        if empty or bic1 < bic[k] - min_bic_gain:
            note = ("the intensities form one class: from intensity ratios alone it cannot be told "
                    f"which of {', '.join(els)} it is")
            return result(labels, np.full((n, k), np.nan), els, "one intensity class", one,
                          np.zeros(0), np.zeros(0), bic, note)
        return finish(mix, els, "ok", bic)

    # Without elements: the number of classes from the data, guarded against splitting one species.
    max_classes = int(max_classes)
    if max_classes < 1:
        raise ValueError(f"max_classes must be ≥ 1, got {max_classes}")
    best, _ = _fit_mixture(xf, e2f, 1, None, [([qs[2]], 0.2)])
    bic = {1: 2 * best.nll + best.n_params * math.log(nfit)}
    rejected = ""
    for k in range(2, max_classes + 1):
        if nfit < 8 * k:
            break
        starts = [(np.quantile(xf, (np.arange(k) + 0.5) / k), 0.15),
                  (np.quantile(xf, np.linspace(0.05, 0.95, k)), 0.1),
                  (np.quantile(xf, [0.5] + list(np.linspace(0.8, 0.97, k - 1))), 0.1)]
        mix, _ = _fit_mixture(xf, e2f, k, None, starts)
        bic[k] = 2 * mix.nll + mix.n_params * math.log(nfit)
        dp, acc = _separability(mix, e2_typ)
        why = []
        if bic[k] > bic[len(best.means)] - min_bic_gain:
            why.append("BIC gain below %g" % min_bic_gain)
        if mix.weights.min() < max(min_weight, 3.0 / nfit):
            why.append(f"a class holds {mix.weights.min():.1%} of atoms")
        if (mix.means[1:] / mix.means[:-1]).min() < min_class_ratio or mix.means[0] <= 0:
            why.append("neighbouring classes closer than ×%g" % min_class_ratio)
        if (acc < min_accuracy).any():
            why.append("classes overlap (accuracy %.0f%%)" % (100 * acc.min()))
        dip = _max_dip(mix, e2_typ)
        if dip > max_dip:
            why.append(f"no dip in the intensity density between classes (valley/peak {dip:.2f})")
        if why:
            rejected = f"{k} classes rejected: " + "; ".join(why)
            break
        best = mix
    names = [f"x{m / best.means[0]:.2f}" for m in best.means]
    return finish(best, names, "ok", bic, rejected)


def species_of_atoms(image, xy, *, pixel_size_nm: float | None, intensity=None, intensity_err=None,
                     elements: Sequence | None = None, **kwargs) -> SpeciesAssignment:
    """The species stage of :func:`fastsac.pipeline.analyze`.

    Uses the Gaussian fit's ``intensity`` when it comes with a finite
    ``intensity_err`` for at least half of the atoms; otherwise measures
    every atom by :func:`photometry` at the apparent atom size for this
    pixel size (:data:`fastsac.scale.REFERENCE_SCALE_PX` at
    :data:`~fastsac.scale.REFERENCE_PIXEL_SIZE_NM`), which never fails and
    gives errors. ``kwargs`` go to :func:`assign_species`. With two or more
    elements it also sets ``lightest_snr`` from :func:`support_noise` at the
    same photometry σ.
    """
    from dataclasses import replace

    n = len(np.asarray(xy).reshape(-1, 2))
    if intensity is not None and intensity_err is not None:
        err = np.asarray(intensity_err, float)
        inten = np.asarray(intensity, float)
        if n and np.count_nonzero(np.isfinite(err) & np.isfinite(inten)) >= 0.5 * n:
            return replace(assign_species(inten, intensity_err=err, elements=elements, **kwargs),
                           feature="gaussian fit intensity")
    sigma = photometry_sigma_px(pixel_size_nm)
    ph = photometry(image, xy, sigma_px=sigma)
    res = replace(assign_species(ph.intensity, intensity_err=ph.intensity_err, elements=elements, **kwargs),
                  feature=photometry_feature(sigma, ph.radius_px))
    if wants_lightest_snr(elements):
        res = with_lightest_snr(res, ph.intensity, support_noise(image, xy, sigma_px=sigma))
    return res


def wants_lightest_snr(elements) -> bool:
    """Whether the species stage measures :func:`support_noise` for these
    ``elements``: with two or more named elements (the lightest one may be
    lost in the support)."""
    return elements is not None and len(elements) > 1


def with_lightest_snr(res: SpeciesAssignment, intensity, noise: float) -> SpeciesAssignment:
    """``res`` with ``lightest_snr`` set: the expected intensity of the lightest
    named element over the support ``noise`` (:func:`support_noise`); ``res``
    unchanged with fewer than two elements or fewer than 8 finite intensities.

    The scale comes from the heaviest element: the brightest fitted class when the
    species were separated, else the median atom (the atoms that were found are
    then mostly the heaviest: a lighter element is the first to be missed)."""
    from dataclasses import replace

    intensity = np.asarray(intensity, np.float64)
    if not (res.elements and len(res.elements) > 1 and np.isfinite(intensity).sum() >= 8):
        return res
    heavy = (float(res.means[-1]) if res.status == "ok" and len(res.means) == len(res.elements)
             else float(np.nanmedian(intensity)))
    exponent = res.exponent if np.isfinite(res.exponent) else HAADF_EXPONENT
    expected = heavy * (_z(res.elements[0]) / _z(res.elements[-1])) ** exponent
    return replace(res, lightest_snr=expected / noise if noise > 0 and np.isfinite(noise) else float("nan"))
