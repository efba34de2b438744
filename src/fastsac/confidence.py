"""Calibrated detection confidence: the probability that a detected atom is real.

A detector's ``score`` ranks atoms (for the classical detector it is a local
signal-to-noise ratio) but is not a probability. This stage maps measurements
available at detection to a probability with a small logistic (Platt) model
shipped as JSON (``fastsac/weights/fastsac_probability_v1.json``, trained by
``benchmarks/train_probability.py``, see docs/confidence.md):

* ``probability`` — calibrated on **simulated truth** (``fastsac.synth``
  frames across dose and loading, detections matched one-to-one to the true
  atoms within 6 px): the chance that a real atom lies there. This is the
  column the summary's expected counts use.
* ``probability_expert`` — calibrated on the expert labels of ptnc-train
  (out-of-fold, leave-one-image-out in the docs): the chance that an expert
  marks the atom. Experts label marginal atoms (SNR 3.5–5) only a quarter to
  two thirds of the time (docs/model.md §5), so it is lower for faint atoms
  and is *not* the chance that the atom exists.

Features (:data:`FEATURES`): the detection score, the Gaussian fit's amplitude
over its residual RMS (log), the fitted width over the atom size at this
calibration (log), and a flag for a failed fit (the two fit features are then
set to their training means). Models are per detector: only the classical
detector's score is calibrated today; other detectors get NaN.

:func:`expected_count` turns probabilities into the expected number of atoms
and an exact Poisson-binomial interval.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["FEATURES", "ProbabilityModel", "AtomProbability", "atom_probability", "features",
           "load_model", "default_model", "expected_count", "fit_logistic",
           "poisson_binomial_interval", "multimer_fraction_interval", "confidence_summary", "confidence_columns",
           "confidence_row",
           "MODEL_FILE"]

#: Shipped model file (package data in ``fastsac/weights``).
MODEL_FILE = "fastsac_probability_v1.json"

#: Names of the model's input features, in order.
FEATURES = ("score", "log_fit_snr", "log_sigma_ratio", "fit_failed")


def features(score, amplitude, sigma_px, residual, *, atom_sigma_px: float,
             fill: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) float64 feature matrix (see :data:`FEATURES`). ``fill`` (4,)
    replaces the fit features of failed fits (the training means); 0 if None."""
    score = np.asarray(score, np.float64).reshape(-1)
    amp = np.asarray(amplitude, np.float64).reshape(-1)
    sig = np.asarray(sigma_px, np.float64).reshape(-1)
    res = np.asarray(residual, np.float64).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.log(np.clip(amp / res, 1e-3, 1e3))
        ratio = np.log(np.clip(sig / float(atom_sigma_px), 0.05, 20.0))
    failed = ~(np.isfinite(snr) & np.isfinite(ratio) & (amp > 0) & (res > 0))
    f = fill if fill is not None else np.zeros(4)
    snr = np.where(failed, f[1], snr)
    ratio = np.where(failed, f[2], ratio)
    return np.column_stack([np.nan_to_num(score, nan=0.0), snr, ratio, failed.astype(np.float64)])


@dataclass(frozen=True)
class ProbabilityModel:
    """Logistic model ``p = 1 / (1 + exp(-(coef · (x - mean) / scale + intercept)))``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    target: str = "simulated truth"

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = ((np.asarray(X, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))

    def as_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": float(self.intercept),
                "target": self.target}

    @classmethod
    def from_dict(cls, d: dict) -> "ProbabilityModel":
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                   np.asarray(d["coef"], np.float64), float(d["intercept"]),
                   str(d.get("target", "")))


def fit_logistic(X, y, *, l2: float = 1e-2, target: str = "", max_iter: int = 100,
                 tol: float = 1e-10) -> ProbabilityModel:
    """Deterministic L2-penalised logistic regression (Newton's method) on
    standardised features; the intercept is not penalised."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).reshape(-1)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-12] = 1.0
    Z = np.column_stack([(X - mean) / scale, np.ones(len(X))])
    w = np.zeros(Z.shape[1])
    pen = np.full(Z.shape[1], float(l2))
    pen[-1] = 0.0
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -700, 700)))
        g = Z.T @ (p - y) + pen * w
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < tol:
            break
    return ProbabilityModel(mean, scale, w[:-1].copy(), float(w[-1]), target)


@dataclass(frozen=True)
class CalibrationFile:
    """A shipped calibration: models per detector and the feature fill values."""

    models: dict  # detector name -> {"probability": ProbabilityModel, "probability_expert": ...}
    fill: dict    # detector name -> (4,) fill values for failed fits (simulated training set)
    atom_sigma_nm: float
    fill_expert: dict = field(default_factory=dict)  # the same for the expert model
    meta: dict = field(default_factory=dict)


def load_model(path) -> CalibrationFile:
    """Read a calibration JSON written by ``benchmarks/train_probability.py``."""
    from .errors import FastsacInputError

    p = Path(path)
    try:
        d = json.loads(p.read_text())
        if d.get("format") != "fastsac-probability":
            raise ValueError("not a fastsac probability calibration (format key)")
        models = {det: {k: ProbabilityModel.from_dict(m) for k, m in ms.items()}
                  for det, ms in d["models"].items()}
        fill = {det: np.asarray(v, np.float64) for det, v in d["fill"].items()}
        fill_expert = {det: np.asarray(v, np.float64)
                       for det, v in d.get("fill_expert", d["fill"]).items()}
        return CalibrationFile(models, fill, float(d["atom_sigma_nm"]), fill_expert,
                               d.get("meta", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FastsacInputError(p, f"cannot read probability calibration: {exc}") from None


@lru_cache(maxsize=1)
def default_model() -> CalibrationFile | None:
    """The shipped calibration, or None when it is not installed."""
    ref = resources.files("fastsac") / "weights" / MODEL_FILE
    if not ref.is_file():
        return None
    with resources.as_file(ref) as p:
        return load_model(p)


@dataclass(frozen=True)
class AtomProbability:
    """Per-atom probabilities (N,) float64; NaN when no model covers the detector."""

    probability: np.ndarray
    probability_expert: np.ndarray
    detector: str
    calibrated: bool


def atom_probability(detections, *, pixel_size_nm: float | None,
                     calibration: CalibrationFile | None = None) -> AtomProbability:
    """Calibrated probabilities of :class:`fastsac.detect.Detections` (any object
    with ``detector``, ``score``, ``amplitude``, ``sigma_px``, ``residual``).

    ``pixel_size_nm`` None uses the detectors' default scale (0.0293 nm/px).
    """
    from .io import DEFAULT_PIXEL_SIZE_NM

    n = len(detections.score)
    cal = calibration if calibration is not None else default_model()
    name = str(getattr(detections, "detector", ""))
    if cal is None or name not in cal.models or n == 0:
        nan = np.full(n, np.nan)
        return AtomProbability(nan, nan.copy(), name, bool(cal is not None and name in cal.models))
    px = pixel_size_nm or DEFAULT_PIXEL_SIZE_NM
    cols = (detections.score, detections.amplitude, detections.sigma_px, detections.residual)
    X = features(*cols, atom_sigma_px=cal.atom_sigma_nm / px, fill=cal.fill[name])
    Xe = features(*cols, atom_sigma_px=cal.atom_sigma_nm / px,
                  fill=cal.fill_expert.get(name, cal.fill[name]))
    m = cal.models[name]
    return AtomProbability(m["probability"].predict(X), m["probability_expert"].predict(Xe),
                           name, True)


def poisson_binomial_interval(p, *, level: float = 0.95, exact_max: int = 5000):
    """Central ``level`` interval of the number of successes of independent
    Bernoulli(p_i): exact (dynamic programming) up to ``exact_max`` atoms, a
    normal approximation with continuity correction beyond. Returns (lo, hi) ints."""
    p = np.asarray(p, np.float64)
    p = p[np.isfinite(p)]
    n = len(p)
    if n == 0:
        return 0, 0
    a = (1.0 - level) / 2.0
    if n <= exact_max:
        dist = np.zeros(n + 1)
        dist[0] = 1.0
        for k, pk in enumerate(p, start=1):
            dist[1:k + 1] = dist[1:k + 1] * (1 - pk) + dist[0:k] * pk
            dist[0] *= 1 - pk
        cdf = np.cumsum(dist)
        lo = int(np.searchsorted(cdf, a - 1e-12))
        hi = int(np.searchsorted(cdf, 1.0 - a - 1e-12))
        return lo, min(hi, n)
    mu, sd = float(p.sum()), float(math.sqrt((p * (1 - p)).sum()))
    from scipy.stats import norm

    z = float(norm.ppf(1.0 - a))
    return max(0, int(math.floor(mu - z * sd - 0.5))), min(n, int(math.ceil(mu + z * sd + 0.5)))


def expected_count(p, *, area_nm2: float | None = None, level: float = 0.95) -> dict:
    """Expected number of real atoms Σp, its standard deviation √Σp(1−p) and the
    Poisson-binomial ``level`` interval; per nm² of ``area_nm2`` when given."""
    p = np.asarray(p, np.float64)
    ok = np.isfinite(p)
    if len(p) and not ok.all():
        return {"expected": None, "sd": None, "interval": None, "level": level,
                "density_per_nm2": None, "density_interval_per_nm2": None}
    mu = float(p.sum())
    sd = float(math.sqrt((p * (1 - p)).sum()))
    lo, hi = poisson_binomial_interval(p, level=level)
    out = {"expected": mu, "sd": sd, "interval": [lo, hi], "level": level}
    if area_nm2:
        out["density_per_nm2"] = mu / area_nm2
        out["density_interval_per_nm2"] = [lo / area_nm2, hi / area_nm2]
    else:
        out["density_per_nm2"] = None
        out["density_interval_per_nm2"] = None
    return out


def multimer_fraction_interval(xy, p, *, cutoff_px: float, level: float = 0.95,
                               draws: int = 200, seed: int = 0, max_atoms: int = 20000):
    """Monte Carlo interval of the multimer fraction (atoms whose nearest
    neighbour is closer than ``cutoff_px``) when each atom is real with its
    probability ``p``: (mean, [lo, hi]) over ``draws`` random inclusions, or
    (None, None) without probabilities or above ``max_atoms``."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    p = np.asarray(p, np.float64)
    if len(xy) < 2 or len(xy) > max_atoms or not np.isfinite(p).all():
        return None, None
    rng = np.random.default_rng(seed)
    # Only atoms with a neighbour within the cutoff can ever be in a multimer.
    close = cKDTree(xy).query_pairs(float(cutoff_px), output_type="ndarray")
    fr = np.empty(draws)
    for k in range(draws):
        real = rng.random(len(p)) < p
        n_real = int(real.sum())
        if n_real < 2:
            fr[k] = 0.0
            continue
        both = real[close[:, 0]] & real[close[:, 1]] if len(close) else np.zeros(0, bool)
        multi = np.zeros(len(p), bool)
        multi[close[both, 0]] = True
        multi[close[both, 1]] = True
        fr[k] = multi.sum() / n_real
    a = (1 - level) / 2
    return float(fr.mean()), [float(np.quantile(fr, a)), float(np.quantile(fr, 1 - a))]


def confidence_summary(prob: AtomProbability, *, xy, in_support, support_area_nm2: float | None,
                       multimer_cutoff_px: float, split_probability=None,
                       level: float = 0.95) -> dict:
    """The ``confidence`` block of summary.json (docs/confidence.md): expected
    atom counts and densities with Poisson-binomial intervals from
    ``probability``, the same for ``probability_expert``, the multimer
    fraction's Monte Carlo interval, and close-pair decisions."""
    p = prob.probability
    insup = np.asarray(in_support, bool)
    sp = None if split_probability is None else np.asarray(split_probability, np.float64)
    mean_mf, mf_int = multimer_fraction_interval(xy, p, cutoff_px=multimer_cutoff_px,
                                                 level=level)
    out = {
        "probability_column": "probability",
        "calibrated_against": "simulated truth (probability); expert labels (probability_expert)",
        "calibrated": bool(prob.calibrated),
        "detector": prob.detector,
        "expected_atoms": expected_count(p, level=level),
        "expected_atoms_in_support": expected_count(p[insup] if len(p) else p,
                                                    area_nm2=support_area_nm2, level=level),
        "expected_marked_by_expert_in_support": expected_count(
            prob.probability_expert[insup] if len(p) else p, area_nm2=support_area_nm2,
            level=level),
        "multimer_fraction_expected": mean_mf,
        "multimer_fraction_interval": mf_int,
        # split_probability is set by both decisions of the close-pair stage (a
        # pair of detections merged or kept; one spot split or kept)
        "close_pairs": None if sp is None else {
            "atoms_with_one_or_two_decision": int(np.isfinite(sp).sum()),
            "atoms_called_two": int((sp >= 0.5).sum()),
            "atoms_called_one": int((sp < 0.5).sum())},
    }
    return out


def confidence_columns(prob: AtomProbability | None, split_probability, n: int) -> dict:
    """The per-atom table columns ``probability``, ``probability_expert`` and
    ``split_probability`` (NaN where not available), each (n,) float64."""
    nan = np.full(n, np.nan)
    return {"probability": nan if prob is None else prob.probability,
            "probability_expert": nan.copy() if prob is None else prob.probability_expert,
            "split_probability": nan.copy() if split_probability is None
            else np.asarray(split_probability, np.float64)}


def confidence_row(conf: dict | None) -> dict:
    """The summary.csv columns of a ``confidence`` block (empty without one)."""
    if not conf:
        return {}
    e = conf["expected_atoms_in_support"]
    lo, hi = e["interval"] or (None, None)
    mf = conf.get("multimer_fraction_interval") or (None, None)
    return {"expected_atoms_in_support": e["expected"], "expected_atoms_in_support_lo": lo,
            "expected_atoms_in_support_hi": hi, "expected_density_per_nm2": e["density_per_nm2"],
            "multimer_fraction_lo": mf[0], "multimer_fraction_hi": mf[1]}
