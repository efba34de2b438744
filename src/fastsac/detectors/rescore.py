"""Two-stage atom detector: classical signal-to-noise candidates + a learned re-scorer.

Stage 1 is :class:`~fastsac.detectors.ClassicalDetector`'s score map (difference-of-Gaussians
matched filter divided by the local noise, no median background) with a *low* threshold
(2.5 local-noise units), which keeps ~95 % of the expert-labelled atoms of ptnc-train at
~5× as many candidates. Stage 2 describes every candidate by a few image measurements
(:data:`FEATURES`: matched-filter SNR at three scales, local contrast, local noise and
thickness relative to the frame, Gaussian-fit amplitude and width, distances to
neighbouring candidates, candidate density of the frame) and a logistic regression trained
on the labelled images turns them into the probability that an expert labelled the
candidate an atom. Atoms = candidates with probability ≥ ``threshold``; the threshold is
chosen on out-of-fold predictions of the training images (never on in-sample fits).

The model is three numbers per feature (mean, scale, weight) and two scalars, stored as JSON
(``fastsac/weights/fastsac_rescore_v1.json``), trained in seconds by
:func:`train_rescore` (``fastsac train --model rescore``). See docs/model.md for the
validation: on ptnc-train it matches, but does not beat, the tuned classical detector,
and it is far above the heatmap U-Net and the published SAC-CNN.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .. import io, peaks, preprocess
from .._validate import as_float, check_image
from ..io import DEFAULT_PIXEL_SIZE_NM
from .base import Detections, Detector, as_micrograph
from .classical import ClassicalDetector
from ..errors import FastsacInputError

__all__ = ["FEATURES", "CandidateTable", "candidate_features", "RescoreModel", "RescoreDetector", "load_rescore", "default_rescore",
           "RESCORE_WEIGHTS"]

log = logging.getLogger(__name__)

#: File name of the shipped re-scorer inside ``fastsac/weights``.
RESCORE_WEIGHTS = "fastsac_rescore_v1.json"
_FORMAT = "fastsac-rescore"

#: Per-candidate features, in model order. Distances and widths are in pixels at
#: :data:`~fastsac.detectors.DEFAULT_PIXEL_SIZE_NM` (i.e. physical units / 0.0293 nm).
FEATURES = ("score", "snr_fine", "snr_fine_max", "snr_coarse", "snr_coarse_max", "noise_rel",
            "thickness_rel", "contrast", "surround_rel", "fit_amplitude", "fit_sigma",
            "d_higher", "d_strong", "n_within", "n_strong_frame", "score_rel")

# Feature scales (nm). Fine / coarse matched filters bracket the atom width (0.0586 nm).
_FINE_NM, _COARSE_NM = 0.044, 0.088
_THICK_NM = 0.44          # smoothing that keeps the support thickness, not the atoms
_DISC_NM, _ANN_IN_NM, _ANN_OUT_NM = 0.0586, 0.117, 0.234
_WITHIN_NM = 0.586        # neighbourhood for the local candidate count
_STRONG = 3.9             # the classical detector's threshold: "confident" candidates


@dataclass(frozen=True)
class CandidateTable:
    """Stage-1 candidates of one image and their features.

    Attributes
    ----------
    xy : (N, 2) float64
        Refined positions [x, y] (px).
    score : (N,) float64
        Classical SNR score at the candidate.
    features : (N, F) float64
        Columns in :data:`FEATURES` order.
    fit : dict of (N,) float64
        Gaussian-fit columns (amplitude, sigma_px, background, intensity, residual).
    timings : dict
        Seconds per stage (score_map, candidates, features).
    """

    xy: np.ndarray
    score: np.ndarray
    features: np.ndarray
    fit: dict
    timings: dict


def _smooth_coarse(a: np.ndarray, sigma_px: float, xi, yi):
    """Wide Gaussian smoothing of ``a`` sampled at integer points (xi, yi), and its median.

    Computed on a grid of b×b block means (b = sigma // 4): for sigma ≥ 8 px the smoothed
    field varies slowly on the scale of a block, so filtering the block means with
    sigma / b and interpolating linearly differs from the full-resolution filter by
    < 1 % of the field, at a small fraction of the cost. Returns (values at points, median).
    """
    b = max(1, int(sigma_px // 4))
    h, w = a.shape
    if b == 1:
        full = ndi.gaussian_filter(a, sigma_px, mode="reflect")
        return full[yi, xi].astype(np.float64), float(np.median(full))
    hb, wb = -(-h // b), -(-w // b)
    pad = np.pad(a, ((0, hb * b - h), (0, wb * b - w)), mode="edge")
    small = ndi.gaussian_filter(pad.reshape(hb, b, wb, b).mean(axis=(1, 3)), sigma_px / b, mode="reflect")
    # Block k is centred on pixel (b − 1)/2 + b·k.
    coords = np.stack([(yi - (b - 1) / 2) / b, (xi - (b - 1) / 2) / b])
    return (ndi.map_coordinates(small, coords, order=1, mode="nearest").astype(np.float64),
            float(np.median(small)))


def _clipped_square(dog):
    # As preprocess.local_noise: the brightest 2 % (atoms) must not inflate the noise.
    cap = np.percentile(np.abs(dog), 98)
    return np.minimum(dog * dog, cap * cap)


def _feature_fit(img, xy0, sigma_px, nms_px, refine, backend) -> peaks.GaussianFit:
    """The fit the shipped re-scorer's fit features were trained on (before the
    physical fit size): centre of mass and a constant-background fit at the
    DoG width in a ⌈2σ⌉ window, moving at most the NMS distance. Not the
    detector's positions; kept until the model is retrained on the current fit."""
    if refine != "gaussian":
        nan = np.full(len(xy0), np.nan)
        return peaks.GaussianFit(xy0, nan, nan, nan, nan, nan, np.c_[nan, nan], nan, nan, nan, nan,
                                 np.full(len(xy0), int(peaks.FitStatus.NONE), np.int8))
    xy = peaks.refine_com(img, xy0, radius=peaks.com_radius(sigma_px), iterations=2,
                          backend=backend)
    moved = np.hypot(*(xy - xy0).T) > nms_px
    xy[moved] = xy0[moved]
    return peaks.refine_gaussian(img, xy, radius=peaks.fit_radius(sigma_px, 2.0), sigma=sigma_px,
                                 max_shift=max(nms_px, 1e-9), background="constant",
                                 backend=backend)


def _dog(img, sigma_px, ratio, backend):
    dog = preprocess.gaussian_filter(img, sigma_px, backend=backend)
    dog -= preprocess.gaussian_filter(img, sigma_px * ratio, backend=backend)
    return dog


def _ring_stats(img, xi, yi, r_disc, r_in, r_out):
    """Mean of the disc r ≤ r_disc and mean/std of the annulus r_in ≤ r ≤ r_out around each point."""
    R = int(np.ceil(r_out))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    r = np.hypot(yy, xx)
    disc, ann = r <= r_disc, (r >= r_in) & (r <= r_out)
    pad = np.pad(img, R, mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(pad, (2 * R + 1, 2 * R + 1))[yi, xi]
    d = win[:, disc].mean(1)
    a = win[:, ann]
    return d, a.mean(1), a.std(1)


def candidate_features(image, *, pixel_size_nm: float | None = None, candidate_threshold: float = 2.5,
                       classical: ClassicalDetector | None = None, backend: str = "auto") -> CandidateTable:
    """Stage 1 + features: classical SNR maxima above ``candidate_threshold``, refined, described.

    Parameters
    ----------
    image : (H, W) array
        Raw micrograph (counts).
    pixel_size_nm : float, optional
        Calibration; physical window sizes are converted with it (default 0.0293 nm/px).
    candidate_threshold : float
        Stage-1 threshold on the classical score (local-noise units).
    classical : ClassicalDetector, optional
        Stage-1 detector (default: ``ClassicalDetector(background_nm=None,
        noise_window="gaussian")``: the re-scorer was trained on that stage 1).

    Returns
    -------
    CandidateTable
    """
    img = as_float(check_image(image)).astype(np.float32)
    det = classical or ClassicalDetector(background_nm=None, backend=backend, noise_window="gaussian")
    px = float(pixel_size_nm or DEFAULT_PIXEL_SIZE_NM)
    to_ref = px / DEFAULT_PIXEL_SIZE_NM        # image px → reference px
    t0 = time.perf_counter()
    noise_px = det.noise_sigma_nm / px
    # ClassicalDetector.score_map (= det.snr(det.dog(...))), keeping its noise map, a feature.
    dog = det.dog(img, pixel_size_nm=px)
    noise = preprocess.local_noise(dog, sigma_px=noise_px, window=det.noise_window, backend=backend)
    score_map = (dog / noise).astype(np.float32)
    t1 = time.perf_counter()
    cand = peaks.local_maxima(score_map, threshold=candidate_threshold, radius=1,
                              exclude_border=det.exclude_border_px, backend=backend)
    nms_px = det.min_distance_nm / px
    keep = peaks.nms(cand.xy, cand.values, radius=nms_px, backend=backend)
    xy0 = cand.xy[keep].astype(np.float64)
    score = cand.values[keep].astype(np.float64)
    sigma_px = det.pixel_params(px)["sigma_px"]  # the classical detector's refinement
    xy, cols = peaks.refine_positions(img, xy0, min_distance_px=nms_px, refine=det.refine,
                                      sigma_px=sigma_px, fit_radius_px=peaks.fit_radius(sigma_px),
                                      backend=backend)
    fit = dict(zip(peaks.FIT_COLUMNS, cols))
    # The shipped re-scorer's fit features were trained on the earlier fit (constant
    # background, the DoG width, a ⌈2σ⌉ window): recompute them with it until the
    # model is retrained; positions and the fit columns stay the detector's.
    feature_fit = _feature_fit(img, xy0, det.pixel_params(px)["dog_sigma_px"], nms_px, det.refine,
                               backend)
    t2 = time.perf_counter()
    n = len(xy0)
    if n == 0:
        return CandidateTable(np.zeros((0, 2)), np.zeros(0), np.zeros((0, len(FEATURES))), fit,
                              {"score_map": t1 - t0, "candidates": t2 - t1, "features": 0.0})
    xi, yi = xy0[:, 0].astype(np.int64), xy0[:, 1].astype(np.int64)
    f = {"score": score}
    win = 2 * max(1, int(round(2 / to_ref))) + 1
    for key, s_nm in (("fine", _FINE_NM), ("coarse", _COARSE_NM)):
        dog_s = _dog(img, s_nm / px, det.surround_ratio, backend)
        noise_s = np.sqrt(np.maximum(_smooth_coarse(_clipped_square(dog_s), noise_px, xi, yi)[0], 1e-12))
        f[f"snr_{key}"] = dog_s[yi, xi] / noise_s
        # The filter's own peak may sit a pixel or two away from the stage-1 maximum.
        f[f"snr_{key}_max"] = ndi.maximum_filter(dog_s, size=win)[yi, xi] / noise_s
    f["noise_rel"] = noise[yi, xi] / np.median(noise)
    thick, thick_med = _smooth_coarse(img, _THICK_NM / px, xi, yi)
    f["thickness_rel"] = thick / (thick_med or 1.0)
    disc, ann, ann_std = _ring_stats(img, xi, yi, _DISC_NM / px, _ANN_IN_NM / px, _ANN_OUT_NM / px)
    ann_std = np.maximum(ann_std, 1e-9)
    f["contrast"] = (disc - ann) / ann_std
    f["surround_rel"] = ann / (np.median(ann) or 1.0)
    # Features of the shipped re-scorer: fit values only where the free fit
    # succeeded (it was trained with failed fits as 0; fallbacks are not fits of σ).
    ok = feature_fit.status == peaks.FitStatus.FREE
    f["fit_amplitude"] = np.where(ok, feature_fit.amplitude / ann_std, 0.0)
    f["fit_sigma"] = np.where(ok, np.clip(feature_fit.sigma * to_ref, 0, 10), 0.0)
    tree = cKDTree(xy0)
    dd, ii = tree.query(xy0, k=min(n, 8))
    dd, ii = dd.reshape(n, -1) * to_ref, ii.reshape(n, -1)
    f["d_higher"] = np.minimum(np.where(score[ii] > score[:, None], dd, np.inf).min(1), 40.0)
    strong = score > _STRONG
    if strong.any():
        # Nearest *other* confident candidate (a confident candidate finds itself at distance 0).
        k = min(2, int(strong.sum()))
        ds, _ = cKDTree(xy0[strong]).query(xy0, k=k)
        ds = ds.reshape(n, k) * to_ref
        nearest = np.where(ds[:, 0] < 1e-6, ds[:, k - 1] if k > 1 else np.inf, ds[:, 0])
        f["d_strong"] = np.minimum(nearest, 60.0)
    else:
        f["d_strong"] = np.full(n, 60.0)
    f["n_within"] = np.array([len(v) for v in tree.query_ball_point(xy0, _WITHIN_NM / px)], np.float64)
    h, w = img.shape
    ref_area = (h * to_ref) * (w * to_ref) / 512.0 ** 2   # frame area in 512²-reference frames
    f["n_strong_frame"] = np.full(n, strong.sum() / ref_area)
    f["score_rel"] = score / np.median(score)
    X = np.stack([np.asarray(f[k], np.float64) for k in FEATURES], axis=1)
    t3 = time.perf_counter()
    return CandidateTable(xy, score, X, fit, {"score_map": t1 - t0, "candidates": t2 - t1,
                                             "features": t3 - t2})


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RescoreModel:
    """Standardised logistic regression over :data:`FEATURES`.

    ``p = sigmoid(intercept + coef · (x − mean) / scale)``.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    candidate_threshold: float = 2.5
    features: tuple = FEATURES
    meta: dict | None = None

    def probability(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64).reshape(-1, len(self.features))
        z = self.intercept + ((X - self.mean) / self.scale) @ self.coef
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "features": list(self.features),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": float(self.intercept), "threshold": float(self.threshold),
                "candidate_threshold": float(self.candidate_threshold), "meta": self.meta or {}}

    def save(self, path) -> Path:
        io.write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict, *, source="<dict>") -> "RescoreModel":
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise FastsacInputError(source, f"not a fastsac re-scorer (expected format {_FORMAT!r})")
        try:
            feats = tuple(d["features"])
            arrs = [np.asarray(d[k], np.float64) for k in ("mean", "scale", "coef")]
            model = cls(*arrs, float(d["intercept"]), float(d["threshold"]),
                        float(d.get("candidate_threshold", 2.5)), feats, d.get("meta") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise FastsacInputError(source, f"malformed re-scorer: {exc}") from None
        if feats != FEATURES:
            raise FastsacInputError(source, f"re-scorer features {list(feats)} differ from this fastsac's "
                                            f"{list(FEATURES)}; retrain with `fastsac train --model rescore`")
        if any(a.shape != (len(feats),) or not np.all(np.isfinite(a)) for a in arrs) or np.any(arrs[1] <= 0):
            raise FastsacInputError(source, "malformed re-scorer: mean/scale/coef must be finite vectors "
                                            f"of length {len(feats)}, scale > 0")
        return model


def load_rescore(path, **params) -> "RescoreDetector":
    """:class:`RescoreDetector` from a re-scorer JSON file (raises FastsacInputError naming it)."""
    path = Path(os.fspath(path))
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FastsacInputError(path, f"cannot read re-scorer: {exc}") from None
    return RescoreDetector(RescoreModel.from_dict(d, source=path), source=str(path), **params)


def default_rescore(**params) -> "RescoreDetector | None":
    """The shipped re-scorer (``fastsac/weights/fastsac_rescore_v1.json``), or None if missing."""
    ref = resources.files("fastsac") / "weights" / RESCORE_WEIGHTS
    if not ref.is_file():
        return None
    with resources.as_file(ref) as p:
        return load_rescore(p, **params)


class RescoreDetector(Detector):
    """Classical candidates (SNR > 2.5) re-scored by a learned per-candidate classifier.

    Parameters
    ----------
    model : RescoreModel
    threshold : float, optional
        Probability threshold (default: the model's, chosen on out-of-fold predictions).
    classical : ClassicalDetector, optional
        Stage 1 (default ``ClassicalDetector(background_nm=None, noise_window="gaussian")``,
        the tuned parameters and the noise window the re-scorer was trained with).

    ``Detections.score`` is the probability; the Gaussian-fit columns come from stage 1.
    """

    name = "fastsac_rescore"

    def __init__(self, model: RescoreModel, *, threshold: float | None = None,
                 classical: ClassicalDetector | None = None, backend: str = "auto", source: str | None = None):
        if not isinstance(model, RescoreModel):
            raise TypeError(f"model must be a RescoreModel, got {type(model).__name__}")
        self.model = model
        self.threshold = float(model.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1), got {threshold!r}")
        self.classical = classical or ClassicalDetector(background_nm=None, backend=backend,
                                                        noise_window="gaussian")
        self.backend = backend
        self.source = source

    def params(self) -> dict:
        return {"threshold": self.threshold, "candidate_threshold": self.model.candidate_threshold,
                "stage1": self.classical.params(), "weights": self.source}

    def score_map(self, image, *, pixel_size_nm=None) -> np.ndarray:
        """Stage-1 map (classical SNR); the learned scores exist only at candidates."""
        return self.classical.score_map(image, pixel_size_nm=pixel_size_nm)

    def candidates(self, micrograph, *, pixel_size_nm=None) -> tuple[CandidateTable, np.ndarray]:
        """All stage-1 candidates with their atom probabilities (for threshold sweeps)."""
        img, px = as_micrograph(micrograph, pixel_size_nm)
        tab = candidate_features(img, pixel_size_nm=px, candidate_threshold=self.model.candidate_threshold,
                                 classical=self.classical, backend=self.backend)
        return tab, self.model.probability(tab.features)

    def detect(self, micrograph, *, pixel_size_nm=None) -> Detections:
        img, px = as_micrograph(micrograph, pixel_size_nm)
        tab, prob = self.candidates(img, pixel_size_nm=px)
        t0 = time.perf_counter()
        k = prob >= self.threshold
        t1 = time.perf_counter()
        fit = {c: tab.fit[c][k] for c in peaks.FIT_COLUMNS}
        return Detections(xy=tab.xy[k], score=prob[k], **fit, detector=self.name,
                          params=self.params() | {"pixel_size_nm_used": px or DEFAULT_PIXEL_SIZE_NM},
                          timings=tab.timings | {"rescore": t1 - t0})
