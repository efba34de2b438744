"""What every detector shares: the :class:`Detections` table, the :class:`Detector`
interface and the common tail (maxima → NMS → sub-pixel refinement,
:func:`postprocess_scores`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from .. import peaks
from .._validate import as_float, check_image
from ..io import Micrograph

__all__ = ["Detections", "Detector", "postprocess_scores", "as_micrograph"]


@dataclass(frozen=True)
class Detections:
    """Atoms found in one image.

    Attributes
    ----------
    xy : (N, 2) float64
        Sub-pixel positions [x, y] (column, row) in pixels.
    score : (N,) float64
        Detector confidence at the atom (score-map peak value).
    amplitude, sigma_px, background, intensity, residual : (N,) float64
        2-D Gaussian fit on the raw image (NaN where the fit failed);
        ``intensity`` = 2π A σ² in raw counts·px².
    detector : str
    params : dict
        Resolved parameters (JSON-serialisable).
    timings : dict
        Seconds per stage.
    split_probability : (N,) float64 or None
        Close-pair stage (:mod:`fastsac.close_pairs`): probability of two atoms
        where it decided — that the atom and its closest partner within the
        pair radius are two atoms, or that the atom's elongated spot holds two
        (the split move); NaN: no decision; None when the stage did not run.
    x_err_px, y_err_px, amplitude_err, sigma_err_px, background_err, intensity_err : (N,) float64
        Standard errors of the fit (:func:`fastsac.peaks.refine_gaussian`;
        NaN when not fitted, ``sigma_err_px`` NaN unless σ was fitted).
    fit_status : (N,) int8
        :class:`fastsac.peaks.FitStatus` (0 free fit, 1 fixed-σ fit, 2
        centroid with linear amplitude, 3 no fit). Optional at construction:
        missing error columns are NaN and the status NONE.
    """

    xy: np.ndarray
    score: np.ndarray
    amplitude: np.ndarray
    sigma_px: np.ndarray
    background: np.ndarray
    intensity: np.ndarray
    residual: np.ndarray
    detector: str = ""
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    split_probability: np.ndarray | None = None
    x_err_px: np.ndarray | None = None
    y_err_px: np.ndarray | None = None
    amplitude_err: np.ndarray | None = None
    sigma_err_px: np.ndarray | None = None
    background_err: np.ndarray | None = None
    intensity_err: np.ndarray | None = None
    fit_status: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.xy)
        for name in _ERROR_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, np.nan))
        st = (np.full(n, int(peaks.FitStatus.NONE)) if self.fit_status is None
              else np.nan_to_num(np.asarray(self.fit_status, np.float64),
                                 nan=float(peaks.FitStatus.NONE)))
        object.__setattr__(self, "fit_status", st.astype(np.int8))

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def empty(cls, detector: str = "", params: dict | None = None) -> "Detections":
        z = np.zeros(0)
        return cls(np.zeros((0, 2)), z, z, z, z, z, z, detector, params or {}, {})

    def subset(self, keep) -> "Detections":
        k = np.asarray(keep)
        return replace(self, xy=self.xy[k], score=self.score[k], amplitude=self.amplitude[k],
                       sigma_px=self.sigma_px[k], background=self.background[k],
                       intensity=self.intensity[k], residual=self.residual[k],
                       split_probability=None if self.split_probability is None
                       else self.split_probability[k],
                       **{name: getattr(self, name)[k] for name in _ERROR_FIELDS + ("fit_status",)})


_ERROR_FIELDS = ("x_err_px", "y_err_px", "amplitude_err", "sigma_err_px", "background_err",
                 "intensity_err")


def postprocess_scores(score_map: np.ndarray, raw: np.ndarray, *, threshold: float,
                       min_distance_px: float, refine: str = "gaussian", fit_radius_px: int = 4,
                       sigma_px: float = 1.5, exclude_border_px: int = 0,
                       backend: str = "auto", pairs: dict | None = None) -> dict:
    """Shared detector tail: maxima of ``score_map`` above ``threshold``, NMS at
    ``min_distance_px``, sub-pixel refinement on ``raw``, then (when ``pairs``
    gives :func:`fastsac.close_pairs.resolve_pairs`' keyword arguments) one-or-two
    decisions on close pairs.

    Returns a dict of arrays (xy, score and :data:`fastsac.peaks.FIT_COLUMNS`;
    split_probability with ``pairs``) and per-stage timings.
    """
    t0 = time.perf_counter()
    cand = peaks.local_maxima(score_map, threshold=threshold, radius=1,
                              exclude_border=exclude_border_px, backend=backend)
    keep = peaks.nms(cand.xy, cand.values, radius=min_distance_px, backend=backend)
    xy0 = cand.xy[keep].astype(np.float64)
    score = cand.values[keep].astype(np.float64)
    t1 = time.perf_counter()
    xy, cols = peaks.refine_positions(
        raw, xy0, min_distance_px=min_distance_px, refine=refine, fit_radius_px=fit_radius_px,
        sigma_px=sigma_px, backend=backend)
    t2 = time.perf_counter()
    out = {"xy": xy, "score": score, **dict(zip(peaks.FIT_COLUMNS, cols))}
    timings = {"peaks": t1 - t0, "refine": t2 - t1}
    if pairs is not None:
        from .. import close_pairs

        out = close_pairs.apply_pair_decisions(
            out, close_pairs.resolve_pairs(raw, xy, score=score, **pairs))
        timings["pairs"] = time.perf_counter() - t2
    return out | {"timings": timings}


class Detector:
    """Base class. Subclasses implement :meth:`score_map` and set ``threshold``.

    ``detect`` accepts a :class:`~fastsac.io.Micrograph` or a 2-D array.
    """

    name = "detector"

    def params(self) -> dict:
        return {}

    def score_map(self, image: np.ndarray, *, pixel_size_nm: float | None = None) -> np.ndarray:
        raise NotImplementedError

    def detect(self, micrograph, *, pixel_size_nm: float | None = None) -> Detections:
        raise NotImplementedError


def as_micrograph(micrograph, pixel_size_nm):
    """(float32 image, pixel size) of a Micrograph or a 2-D array; ``pixel_size_nm`` overrides."""
    if isinstance(micrograph, Micrograph):
        px = pixel_size_nm or micrograph.pixel_size_nm
        return micrograph.data, px
    return as_float(check_image(micrograph)).astype(np.float32), pixel_size_nm
