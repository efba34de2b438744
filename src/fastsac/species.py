"""Atomic species from HAADF intensities: Gaussian mixtures over per-atom
integrated intensity (and optionally amplitude).

HAADF (Z-contrast) intensity of a single atom grows roughly as Z^1.7, so in a
bimetallic single-atom catalyst the heavier element gives the brighter spots.
The mixture is fitted by EM (numpy; no scikit-learn needed), the number of
species is given or chosen by BIC, and species are ordered by brightness:
species 0 is the dimmest (lightest), the last the brightest (heaviest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Z", "expected_intensity_ratio", "GaussianMixture", "fit_gmm", "SpeciesResult",
           "classify_species", "HAADF_EXPONENT"]

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
