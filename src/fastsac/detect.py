"""Atom detectors: from a micrograph to a table of sub-pixel atom positions.

Every detector produces a *score map* (classical: matched-filter signal-to-noise;
learned: heatmap or probability) and shares the same post-processing: local
maxima → non-maximum suppression → sub-pixel refinement on the raw image.

``get_detector(spec)`` resolves ``"default"`` (the best cross-validated
detector, today the classical one), ``"classical"``, ``"heatmap"`` (fastsac's
learned U-Net), ``"rescore"`` (classical candidates + learned re-scorer) or a
checkpoint path.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import peaks, preprocess
from ._validate import as_float, check_image, check_positive
from .errors import FastsacInputError
from .io import Micrograph

__all__ = ["Detections", "Detector", "ClassicalDetector", "get_detector", "postprocess_scores",
           "DEFAULT_PIXEL_SIZE_NM"]

#: Pixel size of the ptnc-train images; physical defaults are tuned at this scale.
DEFAULT_PIXEL_SIZE_NM = 0.0293


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
                       intensity=self.intensity[k], residual=self.residual[k])


def postprocess_scores(score_map: np.ndarray, raw: np.ndarray, *, threshold: float,
                       min_distance_px: float, refine: str = "gaussian", fit_radius_px: int = 4,
                       sigma_px: float = 1.5, exclude_border_px: int = 0,
                       backend: str = "auto") -> dict:
    """Shared detector tail: maxima of ``score_map`` above ``threshold``, NMS at
    ``min_distance_px``, then sub-pixel refinement on ``raw``.

    Returns a dict of arrays (xy, score, amplitude, sigma_px, background,
    intensity, residual) and per-stage timings.
    """
    t0 = time.perf_counter()
    cand = peaks.local_maxima(score_map, threshold=threshold, radius=1,
                              exclude_border=exclude_border_px, backend=backend)
    keep = peaks.nms(cand.xy, cand.values, radius=min_distance_px, backend=backend)
    xy0 = cand.xy[keep].astype(np.float64)
    score = cand.values[keep].astype(np.float64)
    t1 = time.perf_counter()
    xy, (amp, sig, bg, inten, res) = peaks.refine_positions(
        raw, xy0, min_distance_px=min_distance_px, refine=refine, fit_radius_px=fit_radius_px,
        sigma_px=sigma_px, backend=backend)
    t2 = time.perf_counter()
    return {"xy": xy, "score": score, "amplitude": amp, "sigma_px": sig, "background": bg,
            "intensity": inten, "residual": res,
            "timings": {"peaks": t1 - t0, "refine": t2 - t1}}


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


def _as_micrograph(micrograph, pixel_size_nm):
    if isinstance(micrograph, Micrograph):
        px = pixel_size_nm or micrograph.pixel_size_nm
        return micrograph.data, px
    return as_float(check_image(micrograph)).astype(np.float32), pixel_size_nm


class ClassicalDetector(Detector):
    """Model-free detector: a centre-surround (difference-of-Gaussians) matched
    filter normalised by the local noise of the filtered image, then maxima,
    NMS and a Gaussian fit.

    Why this works: each atom is a compact bump of known width. The DoG is a
    band-pass matched to that width: its centre integrates the spot, its
    surround (``surround_ratio`` × wider) removes the slowly varying support
    and thickness signal. Shot noise on these images is signal dependent
    (variance ∝ mean^1.4–2.1) and the carbon texture varies across the frame,
    so the filtered map is divided by its *local* standard deviation, which
    turns it into a signal-to-noise map where one threshold works across thin
    and thick regions. Tuned on ptnc-train by leave-one-image-out
    (``benchmarks/tune_classical.py``).

    Parameters are physical when the pixel size is known and scale with it;
    otherwise the pixel equivalents at :data:`DEFAULT_PIXEL_SIZE_NM` are used.

    Parameters
    ----------
    threshold : float
        Minimum score (local-noise units) of an atom.
    atom_sigma_nm : float
        Centre width of the DoG ≈ Gaussian sigma of an atom's image, nm.
    surround_ratio : float
        Surround sigma / centre sigma.
    background_nm : float or None
        Median background window removed first, nm (the published 40 px at
        0.0293 nm/px); None skips it (the DoG surround already removes most).
    min_distance_nm : float
        NMS radius, nm: two maxima closer than this are one atom.
    noise_sigma_nm : float
        Width of the local noise estimate, nm.
    exclude_border_px : int
        Ignore maxima this close to the frame edge: the outermost scan line
        often has a different gain, which the reflected filters turn into
        false atoms.
    refine : {"gaussian", "com", "none"}
    noise_window : {"box", "gaussian"}
        Weighting of the local noise estimate: ``"box"`` (default) a cascade of
        three extended boxes with the Gaussian's variance (O(1) per pixel,
        support 3σ: :func:`fastsac.boxfilter.box_gaussian_filter`; same F1 on
        ptnc-train and on simulated truth, docs/performance.md); ``"gaussian"``
        the σ-Gaussian truncated at 4σ (before 2026-12).
    device : {"cpu", "auto", "cuda"}
        Where :meth:`detect` computes: ``"cpu"`` runs the C++/numpy kernels;
        ``"cuda"`` runs the score map as torch convolutions and the peak
        kernels in numba CUDA through the tiled engine (:meth:`detect_tiled`),
        so only the peak table leaves the GPU; ``"auto"`` picks CUDA when torch
        sees a GPU. Needs ``background_nm=None`` (the default).
    """

    name = "classical"

    def __init__(self, *, threshold: float = 3.9, atom_sigma_nm: float = 0.0586,
                 surround_ratio: float = 3.0, background_nm: float | None = None,
                 min_distance_nm: float = 0.176, noise_sigma_nm: float = 0.94,
                 exclude_border_px: int = 1, refine: str = "gaussian", backend: str = "auto",
                 device: str = "cpu", noise_window: str = "box"):
        self.threshold = float(threshold)
        self.atom_sigma_nm = check_positive(atom_sigma_nm, name="atom_sigma_nm")
        self.surround_ratio = check_positive(surround_ratio, name="surround_ratio")
        self.background_nm = (None if background_nm is None
                              else check_positive(background_nm, name="background_nm"))
        self.min_distance_nm = check_positive(min_distance_nm, name="min_distance_nm")
        self.noise_sigma_nm = check_positive(noise_sigma_nm, name="noise_sigma_nm")
        self.exclude_border_px = int(exclude_border_px)
        if self.exclude_border_px < 0:
            raise ValueError(f"exclude_border_px must be ≥ 0, got {exclude_border_px}")
        if refine not in ("gaussian", "com", "none"):
            raise ValueError(f"refine must be 'gaussian', 'com' or 'none', got {refine!r}")
        self.refine = refine
        if noise_window not in ("box", "gaussian"):
            raise ValueError(f"noise_window must be 'box' or 'gaussian', got {noise_window!r}")
        self.noise_window = noise_window
        self.backend = backend
        if device not in ("cpu", "auto", "cuda"):
            raise ValueError(f"device must be 'cpu', 'auto' or 'cuda', got {device!r}")
        self.device = device
        self._nets: dict = {}

    def params(self) -> dict:
        return {"threshold": self.threshold, "atom_sigma_nm": self.atom_sigma_nm,
                "surround_ratio": self.surround_ratio, "background_nm": self.background_nm,
                "min_distance_nm": self.min_distance_nm, "noise_sigma_nm": self.noise_sigma_nm,
                "exclude_border_px": self.exclude_border_px, "refine": self.refine,
                "noise_window": self.noise_window}

    def _px(self, nm: float, pixel_size_nm: float | None) -> float:
        return nm / (pixel_size_nm or DEFAULT_PIXEL_SIZE_NM)

    def pixel_params(self, pixel_size_nm: float | None) -> dict:
        """The filter widths in pixels at ``pixel_size_nm`` (what :meth:`dog` and
        :meth:`snr` use; the montage engine derives its halos from them)."""
        s = self._px(self.atom_sigma_nm, pixel_size_nm)
        bg = (None if self.background_nm is None
              else max(3, int(round(self._px(self.background_nm, pixel_size_nm)))))
        return {"sigma_px": s, "surround_px": s * self.surround_ratio, "background_px": bg,
                "noise_sigma_px": self._px(self.noise_sigma_nm, pixel_size_nm)}

    def dog(self, image, *, pixel_size_nm=None) -> np.ndarray:
        """Stage 1 of the score map: optional median background, then the
        centre-surround difference of Gaussians, float32 (H, W)."""
        p = self.pixel_params(pixel_size_nm)
        img = as_float(check_image(image)).astype(np.float32)
        if p["background_px"] is not None:
            img = preprocess.subtract_background(img, method="median", size_px=p["background_px"],
                                                 backend=self.backend).image
        d = preprocess.gaussian_filter(img, p["sigma_px"], backend=self.backend)
        d -= preprocess.gaussian_filter(img, p["surround_px"], backend=self.backend)
        return d

    def snr(self, dog: np.ndarray, *, pixel_size_nm=None, cap: float | None = None,
            global_rms: float | None = None) -> np.ndarray:
        """Stage 2: the DoG in units of its local noise. ``cap``/``global_rms``
        default to this image's own (see :func:`fastsac.preprocess.local_noise`)."""
        noise = preprocess.local_noise(dog, sigma_px=self.pixel_params(pixel_size_nm)["noise_sigma_px"],
                                       cap=cap, global_rms=global_rms, window=self.noise_window,
                                       backend=self.backend)
        return (dog / noise).astype(np.float32)

    def score_map(self, image, *, pixel_size_nm=None) -> np.ndarray:
        """Local signal-to-noise of the DoG-filtered image, float32 (H, W)."""
        return self.snr(self.dog(image, pixel_size_nm=pixel_size_nm), pixel_size_nm=pixel_size_nm)

    def _resolved_device(self) -> str:
        if self.device == "cpu":
            return "cpu"
        from .infer import _resolve_device

        return _resolve_device(self.device).type

    def _tail_params(self, px) -> dict:
        sigma_px = self._px(self.atom_sigma_nm, px)
        return {"threshold": self.threshold, "min_distance_px": self._px(self.min_distance_nm, px),
                "refine": self.refine, "sigma_px": sigma_px,
                "fit_radius_px": max(2, int(np.ceil(2.0 * sigma_px))),
                "exclude_border_px": self.exclude_border_px}

    def as_predictor(self, pixel_size_nm: float | None = None):
        """The score map as a torch module (:class:`fastsac.models.classical.ClassicalScoreNet`)
        for :func:`fastsac.infer.detect_tiled`; calibrate it on the image first
        (:func:`fastsac.models.classical.calibrate`). Cached per pixel size."""
        from .models.classical import ClassicalScoreNet

        key = float(pixel_size_nm or DEFAULT_PIXEL_SIZE_NM)
        if key not in self._nets:
            self._nets[key] = ClassicalScoreNet.from_detector(self, pixel_size_nm).eval()
        return self._nets[key]

    def detect_tiled(self, source, *, pixel_size_nm: float | None = None, device: str | None = None,
                     tile=None, batch_size: int | None = None, progress: bool = False,
                     exact_max_px: int = 1 << 26, resident: bool | None = None):
        """Detect on an image of any size through the tiled torch engine
        (GPU when ``device`` resolves to CUDA): calibrate the global noise
        statistics (:func:`fastsac.models.classical.calibrate`: exact for images
        up to ``exact_max_px`` in memory, one streamed histogram pass beyond),
        then :func:`fastsac.infer.detect_tiled`. Returns
        :class:`fastsac.infer.TiledDetections` in image coordinates.

        ``resident`` (default: when ``source`` is an in-memory array on a CUDA
        device with room for 8 B/px) uploads the image once and keeps it and
        its DoG on the device (:func:`fastsac.models.classical.detect_resident`):
        one read of the host data instead of two, and an exact percentile."""
        from . import infer
        from .models.classical import calibrate, detect_resident, resident_bytes

        dev = device or (self.device if self.device != "cpu" else "cpu")
        if tile is None and infer._resolve_device(dev).type == "cuda":
            # The halo is 121 px at 0.0293 nm/px: 4096² cores read 1.12× their
            # area (the memory-based default picks ~1.7k cores, 1.4×).
            tile = 4096
        net = self.as_predictor(pixel_size_nm)
        tail = self._tail_params(pixel_size_nm)
        if resident is None:
            resident = False
            if isinstance(source, np.ndarray) and source.ndim == 2 and \
                    infer._resolve_device(dev).type == "cuda":
                import torch

                free = torch.cuda.mem_get_info()[0]
                resident = free > 1.5 * resident_bytes(source.shape) + (4 << 30)
        if resident:
            return detect_resident(np.asarray(source), net, device=dev, tile=tile or 4096,
                                   progress=progress, **tail)
        t0 = time.perf_counter()
        stats = calibrate(source, net, device=dev, exact_max_px=exact_max_px, tile=tile,
                          batch_size=batch_size, progress=progress)
        t1 = time.perf_counter()
        com_r = max(2, int(round(tail["sigma_px"] * 1.5)))
        reach = 2 * com_r + tail["fit_radius_px"] + 2
        res = infer.detect_tiled(source, net, halo=max(net.receptive_field + 1, reach), tile=tile,
                                 device=dev, batch_size=batch_size, progress=progress, **tail)
        res.timings["calibrate"] = t1 - t0
        res.params["calibration"] = stats
        return res

    def detect(self, micrograph, *, pixel_size_nm=None) -> Detections:
        img, px = _as_micrograph(micrograph, pixel_size_nm)
        params = self.params() | {"pixel_size_nm_used": px or DEFAULT_PIXEL_SIZE_NM}
        if self.device != "cpu" and self._resolved_device() == "cuda":
            # One window holding the whole frame (tiles only when it is huge).
            res = self.detect_tiled(img, pixel_size_nm=px, device="cuda",
                                    tile=None if img.size > (1 << 26) else max(img.shape))
            t = res.timings
            timings = {"score_map": t.get("calibrate", 0.0) + t.get("dog", 0.0) + t["inference"]
                       + t["read"],
                       "peaks": t["peaks"] + t["nms"], "refine": 0.0}
            return Detections(**res.as_dict(), detector=self.name,
                              params=params | {"device": res.device}, timings=timings)
        t0 = time.perf_counter()
        score = self.score_map(img, pixel_size_nm=px)
        t1 = time.perf_counter()
        out = postprocess_scores(score, img, backend=self.backend, **self._tail_params(px))
        timings = {"score_map": t1 - t0, **out.pop("timings")}
        return Detections(**out, detector=self.name, params=params, timings=timings)


def get_detector(spec="default", **params) -> Detector:
    """Resolve a detector from a name, a checkpoint path or a Detector instance.

    ``"default"``: the detector with the best cross-validated F1 on real
    labelled images — today :class:`ClassicalDetector` (leave-one-image-out
    pooled F1 0.695 on ptnc-train, against 0.691 for the two-stage re-scorer,
    0.585 (4-fold) for fastsac's heatmap U-Net and 0.605 for the published
    SAC-CNN; docs/model.md). ``"classical"``: the same, explicitly.
    ``"heatmap"``: fastsac's shipped learned heatmap detector. ``"rescore"``:
    :class:`fastsac.rescore.RescoreDetector` with the shipped re-scorer. A
    path: a checkpoint recognised by its keys (the published SAC-CNN, or a
    fastsac model; ``.json``: a re-scorer). Extra keyword arguments go to the
    detector (e.g. ``threshold``).
    """
    if isinstance(spec, Detector):
        return spec
    if spec is None or spec in ("default", "classical"):
        return ClassicalDetector(**params)
    if spec == "heatmap":
        from .learned import default_detector

        det = default_detector(**params)
        if det is None:
            raise FastsacInputError("fastsac/weights", "the shipped heatmap model's weights are "
                                                      "not installed; reinstall fastsac")
        return det
    if spec == "rescore":
        from .rescore import default_rescore

        det = default_rescore(**params)
        if det is None:
            raise FastsacInputError("fastsac/weights", "the shipped re-scorer is not installed; "
                                                      "reinstall fastsac")
        return det
    path = Path(os.fspath(spec))
    if path.suffix == ".json":
        if not path.is_file():
            raise FastsacInputError(path, "re-scorer file not found")
        from .rescore import load_rescore

        return load_rescore(path, **params)
    if path.suffix in (".ckpt", ".pt", ".pth") or path.exists():
        if not path.is_file():
            raise FastsacInputError(path, "detector checkpoint not found")
        from .learned import load_detector

        return load_detector(path, **params)
    raise ValueError(f"detector must be 'default', 'classical', 'heatmap', 'rescore' or a checkpoint path, "
                     f"got {spec!r}")
