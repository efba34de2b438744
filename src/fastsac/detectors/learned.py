"""Learned atom detectors: the published SAC-CNN (exact, one pass) and fastsac's heatmap U-Net.

* :class:`SacCnnDetector` reproduces the published SAC-CNN workflow: 40×40
  median background subtraction, clip at 0, min-max normalisation to [0, 1],
  the 21×21 window classifier evaluated at every pixel (here in one fully
  convolutional pass, :class:`~fastsac.models.DenseSacCnn`), probability map
  padded back to the image size (10-px border = 0), threshold 0.89, connected
  components (``scipy.ndimage.label``, 4-connectivity) and the unweighted
  centroid of each component as the atom position. Optional fastsac
  refinement (``refine="com"|"gaussian"``) on the raw image.
* :class:`HeatmapDetector` is fastsac's own detector: median background
  subtraction + local-noise normalisation, a compact U-Net heatmap, then the
  shared :func:`~fastsac.detectors.postprocess_scores` (maxima → NMS → sub-pixel
  fit). Per-atom score = heatmap peak value. Images are resampled to the
  model's working pixel size when their calibration is known.
* :func:`default_detector` returns the shipped heatmap model (``--detector heatmap``;
  ``"default"`` stays classical until a learned model beats it under cross-validation)
  (``fastsac/weights/fastsac_heatmap_v1.pt``) or None; :func:`load_detector`
  builds a detector from a checkpoint recognised by its keys. Training lives in
  :mod:`fastsac.training` (``fastsac train``), so analysis never imports the simulator.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F

from .. import peaks, preprocess
from .._validate import as_float, check_image, check_positive
from ..io import DEFAULT_PIXEL_SIZE_NM
from .base import Detections, Detector, as_micrograph, postprocess_scores
from ..models import BasicCNN, Checkpoint, DenseSacCnn, load_checkpoint
from ..models.sac_cnn import ATOM_CLASS, HALO, WINDOW

__all__ = ["SacCnnDetector", "HeatmapDetector", "HeatmapPredictor", "default_detector", "load_detector",
           "sliding_window_probabilities", "sac_cnn_preprocess", "heatmap_preprocess", "DEFAULT_WEIGHTS"]

log = logging.getLogger(__name__)

#: File name of the shipped heatmap model inside ``fastsac/weights``.
DEFAULT_WEIGHTS = "fastsac_heatmap_v1.pt"


def _refine_points(raw, xy0, *, refine, sigma_px, fit_radius_px, max_shift_px, backend):
    """Sub-pixel refinement as in :func:`~fastsac.detectors.postprocess_scores`, as a dict of columns."""
    xy, cols = peaks.refine_positions(raw, xy0, min_distance_px=max_shift_px, refine=refine,
                                      fit_radius_px=fit_radius_px, sigma_px=sigma_px,
                                      backend=backend)
    return {"xy": xy, **dict(zip(peaks.FIT_COLUMNS, cols))}


def _check_refine(refine: str) -> str:
    if refine not in ("none", "com", "gaussian"):
        raise ValueError(f"refine must be 'none', 'com' or 'gaussian', got {refine!r}")
    return refine


# ----------------------------------------------------------------------------------------------
# Published SAC-CNN
# ----------------------------------------------------------------------------------------------

def sac_cnn_preprocess(image, *, background_px: int = 40, backend: str = "auto") -> np.ndarray:
    """Published pre-processing: median background (``background_px``²), clip at 0, min-max to [0, 1].

    Returns (H, W) float32.
    """
    sub = preprocess.subtract_background(image, method="median", size_px=background_px, clip=True,
                                         backend=backend).image
    return preprocess.normalize(sub, method="minmax").astype(np.float32)


def sliding_window_probabilities(model: BasicCNN, norm_image, *, batch_size: int = 64,
                                 positions=None, device: str = "cpu") -> np.ndarray:
    """The published (slow) evaluation: classify the 21×21 window around each pixel.

    Parameters
    ----------
    model : BasicCNN
    norm_image : (H, W) array
        Pre-processed image (:func:`sac_cnn_preprocess`).
    batch_size : int
        Windows per forward pass (the published code used 64).
    positions : (N, 2) int array of [x, y], optional
        Window centres to classify; default every pixel at least 10 px from the
        border (row-major order).

    Returns
    -------
    (N,) float32 atom probabilities for ``positions``, or, when ``positions``
    is None, the (H, W) map with a zero 10-px border.
    """
    img = as_float(check_image(norm_image, name="norm_image")).astype(np.float32)
    h, w = img.shape
    full = positions is None
    if full:
        yy, xx = np.mgrid[HALO:h - HALO, HALO:w - HALO]
        positions = np.stack([xx.ravel(), yy.ravel()], axis=1)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    if len(pos) and (pos.min() < HALO or (pos[:, 0] >= w - HALO).any() or (pos[:, 1] >= h - HALO).any()):
        raise ValueError(f"positions must be ≥ {HALO} px from the border of the {h}×{w} image")
    # Strided view of every 21×21 window: no copy until a batch is gathered.
    win = np.lib.stride_tricks.sliding_window_view(img, (WINDOW, WINDOW))
    model = model.eval().to(device)
    out = np.empty(len(pos), np.float32)
    with torch.inference_mode():
        for s in range(0, len(pos), batch_size):
            p = pos[s:s + batch_size]
            batch = np.ascontiguousarray(win[p[:, 1] - HALO, p[:, 0] - HALO])
            logits = model(torch.from_numpy(batch[:, None]).to(device))
            out[s:s + batch_size] = torch.softmax(logits, 1)[:, ATOM_CLASS].cpu().numpy()
    if not full:
        return out
    prob = np.zeros((h, w), np.float32)
    prob[HALO:h - HALO, HALO:w - HALO] = out.reshape(h - 2 * HALO, w - 2 * HALO)
    return prob


class SacCnnDetector(Detector):
    """The published SAC-CNN workflow, exact, with the window classifier run in one pass.

    Parameters
    ----------
    model : BasicCNN
        Published weights (see :func:`load_detector`).
    threshold : float
        Probability threshold of the published workflow (0.89).
    background_px : int
        Median background window (published: 40 px).
    refine : {"none", "com", "gaussian"}
        ``none`` (default) keeps the published component centroids; the others
        refine them on the raw image like fastsac's detectors (atom σ
        :data:`fastsac.peaks.FIT_SIGMA_NM` at the image's calibration).
    min_area_px : int
        Components smaller than this are dropped (published: 1, i.e. none).
    device : str
        torch device for the network.

    Notes
    -----
    The image is used at its own pixel size (the published workflow does not
    resample); the model was trained at 0.0293 nm/px.
    """

    name = "sac_cnn"

    def __init__(self, model: BasicCNN, *, threshold: float = 0.89, background_px: int = 40,
                 refine: str = "none", min_area_px: int = 1, device: str = "cpu",
                 backend: str = "auto", source: str | None = None):
        if not isinstance(model, BasicCNN):
            raise TypeError(f"model must be a BasicCNN, got {type(model).__name__}")
        self.model = model.eval()
        self.dense = DenseSacCnn.from_basic(self.model).to(device)
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1), got {threshold!r}")
        self.background_px = int(background_px)
        self.refine = _check_refine(refine)
        self.min_area_px = int(min_area_px)
        self.device = device
        self.backend = backend
        self.source = source

    def params(self) -> dict:
        return {"threshold": self.threshold, "background_px": self.background_px,
                "refine": self.refine, "min_area_px": self.min_area_px, "centre": "component centroid",
                "weights": self.source}

    def probability_map(self, norm_image) -> np.ndarray:
        """Dense stride-1 atom probability of a pre-processed image, (H, W) float32, 10-px zero border."""
        img = as_float(check_image(norm_image, name="norm_image")).astype(np.float32)
        h, w = img.shape
        out = np.zeros((h, w), np.float32)
        if h < WINDOW or w < WINDOW:
            return out
        with torch.inference_mode():
            p = self.dense(torch.from_numpy(img)[None, None].to(self.device))
        out[HALO:h - HALO, HALO:w - HALO] = p[0, 0].cpu().numpy()
        return out

    def score_map(self, image, *, pixel_size_nm=None) -> np.ndarray:
        return self.probability_map(sac_cnn_preprocess(image, background_px=self.background_px,
                                                       backend=self.backend))

    def components(self, prob: np.ndarray, threshold: float | None = None):
        """Connected components of ``prob > threshold`` → (centroids [x, y], peak probabilities, areas)."""
        thr = self.threshold if threshold is None else float(threshold)
        mask = prob > thr
        lab, n = ndi.label(mask)
        if n == 0:
            return np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64)
        idx = np.arange(1, n + 1)
        area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        ys, xs = np.nonzero(lab)
        labs = lab[ys, xs]
        cx = np.bincount(labs, weights=xs, minlength=n + 1)[1:] / area
        cy = np.bincount(labs, weights=ys, minlength=n + 1)[1:] / area
        score = ndi.maximum(prob, lab, idx)
        keep = area >= self.min_area_px
        return (np.stack([cx, cy], axis=1)[keep].astype(np.float64),
                np.asarray(score, np.float64)[keep], area[keep])

    def detect(self, micrograph, *, pixel_size_nm=None) -> Detections:
        img, px = as_micrograph(micrograph, pixel_size_nm)
        t0 = time.perf_counter()
        prob = self.score_map(img)
        t1 = time.perf_counter()
        xy, score, _ = self.components(prob)
        t2 = time.perf_counter()
        sigma_px = peaks.FIT_SIGMA_NM / peaks.stable_float(px or DEFAULT_PIXEL_SIZE_NM)
        out = _refine_points(img, xy, refine=self.refine, sigma_px=sigma_px,
                             fit_radius_px=peaks.fit_radius(sigma_px), max_shift_px=5.0,
                             backend=self.backend)
        t3 = time.perf_counter()
        return Detections(score=score, **out, detector=self.name,
                          params=self.params() | {"pixel_size_nm_used": px},
                          timings={"score_map": t1 - t0, "peaks": t2 - t1, "refine": t3 - t2})


# ----------------------------------------------------------------------------------------------
# fastsac heatmap detector
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreparedImage:
    image: np.ndarray      # (h, w) float32 network input at the working scale
    scale: tuple           # (sy, sx): working pixels per input pixel
    shape: tuple           # original (H, W)


def resample_image(img: np.ndarray, out_shape) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in out_shape), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def heatmap_preprocess(image, *, pixel_size_nm: float | None, working_pixel_nm: float = DEFAULT_PIXEL_SIZE_NM,
                       background_nm: float = 40 * DEFAULT_PIXEL_SIZE_NM,
                       noise_sigma_nm: float = 16 * DEFAULT_PIXEL_SIZE_NM, backend: str = "auto") -> PreparedImage:
    """Network input of :class:`HeatmapDetector`: median background subtraction and division
    by the local noise level (windows given in nm), then resampling to the working scale when
    the calibration is known and differs by > 2 %. Values are in local-noise units.
    """
    img = as_float(check_image(image)).astype(np.float32)
    h, w = img.shape
    scale = 1.0 if not pixel_size_nm else float(pixel_size_nm) / working_pixel_nm
    if abs(scale - 1.0) <= 0.02:
        scale = 1.0
    # Background and noise are estimated at the native pixel size (window sizes scaled), and
    # only the normalised image is resampled: interpolation correlates and shrinks the noise,
    # so a noise level measured after upsampling would inflate every blob's signal-to-noise.
    bg_px = max(3, int(round(background_nm / (working_pixel_nm * scale))))
    sub = preprocess.subtract_background(img, method="median", size_px=bg_px, backend=backend).image
    x = preprocess.normalize(sub, method="local_noise",
                             noise_sigma_px=noise_sigma_nm / (working_pixel_nm * scale))
    if scale != 1.0:
        oh, ow = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        x = resample_image(x, (oh, ow))
        sy, sx = oh / h, ow / w
    else:
        sy = sx = 1.0
    return PreparedImage(np.ascontiguousarray(x, np.float32), (sy, sx), (h, w))


#: Network inputs are local-noise units divided by this (keeps activations O(1)).
INPUT_SCALE = 0.25


def run_heatmap(model: torch.nn.Module, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Sigmoid heatmap of a prepared image.

    Reflect-pads by the halo rounded up to a multiple of ``pad_multiple`` in front (so image
    pixel (0, 0) sits on the pooling grid, as it does in tiles that start at multiples of 4)
    and up to the next multiple behind.
    """
    h, w = x.shape
    m = int(getattr(model, "pad_multiple", 4))
    halo = int(getattr(model, "halo", 0))
    front = -(-halo // m) * m
    ph = front + (-(h + 2 * front)) % m
    pw = front + (-(w + 2 * front)) % m
    t = torch.from_numpy(x * INPUT_SCALE)[None, None].to(device)
    # Reflect padding by the halo keeps border atoms as well detected as interior ones.
    mode = "reflect" if min(h, w) > max(front, ph, pw) else "replicate"
    t = F.pad(t, (front, pw, front, ph), mode=mode)
    # channels_last is ~1.5-2x faster on CPU for thin (8-32 channel) convolutions.
    t = t.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = torch.sigmoid(model(t))[0, 0, front:front + h, front:front + w]
    return y.cpu().numpy()


class HeatmapPredictor(torch.nn.Module):
    """The heatmap network as a plain predictor for tiled inference.

    Maps (B, 1, H, W) pre-processed images (:func:`heatmap_preprocess`, local-noise units)
    to (B, 1, H, W) heatmaps in [0, 1]. ``halo`` (receptive-field radius, px) and
    ``pad_multiple`` are those of the wrapped network; H and W must be multiples of
    ``pad_multiple``.
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.halo = int(getattr(net, "halo", 0))
        self.pad_multiple = int(getattr(net, "pad_multiple", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x * INPUT_SCALE))


class HeatmapDetector(Detector):
    """fastsac's learned detector: U-Net atom-centre heatmap → maxima → NMS → sub-pixel fit.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (B, 1, H, W) normalised images to logits (e.g. :class:`HeatmapUNet`).
    threshold : float
        Minimum heatmap peak value (0–1) of an atom.
    min_distance_nm : float
        NMS radius, nm.
    atom_sigma_nm : float
        Gaussian sigma the sub-pixel fit used before ``fit_sigma_nm`` (0.045 nm);
        kept because checkpoints record it, no longer used.
    fit_sigma_nm : float
        Physical σ of an atom's image for the sub-pixel fit (its σ, window
        ⌈2.5σ⌉ and centre-of-mass disc), nm.
    working_pixel_nm, background_nm, noise_sigma_nm : float
        Pre-processing the model was trained with (from the checkpoint).
    refine : {"gaussian", "com", "none"}
    device : str
    """

    name = "fastsac_heatmap"

    def __init__(self, model: torch.nn.Module, *, threshold: float = 0.4, min_distance_nm: float = 0.15,
                 atom_sigma_nm: float = 0.045, fit_sigma_nm: float = peaks.FIT_SIGMA_NM,
                 working_pixel_nm: float = DEFAULT_PIXEL_SIZE_NM,
                 background_nm: float = 40 * DEFAULT_PIXEL_SIZE_NM,
                 noise_sigma_nm: float = 16 * DEFAULT_PIXEL_SIZE_NM, refine: str = "gaussian",
                 device: str = "cpu", backend: str = "auto", source: str | None = None):
        self.model = model.eval().to(device=device, memory_format=torch.channels_last)
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be a heatmap value in [0, 1), got {threshold!r}")
        self.min_distance_nm = check_positive(min_distance_nm, name="min_distance_nm")
        self.atom_sigma_nm = check_positive(atom_sigma_nm, name="atom_sigma_nm")
        self.fit_sigma_nm = check_positive(fit_sigma_nm, name="fit_sigma_nm")
        self.working_pixel_nm = check_positive(working_pixel_nm, name="working_pixel_nm")
        self.background_nm = check_positive(background_nm, name="background_nm")
        self.noise_sigma_nm = check_positive(noise_sigma_nm, name="noise_sigma_nm")
        self.refine = _check_refine(refine)
        self.device = device
        self.backend = backend
        self.source = source

    def params(self) -> dict:
        return {"threshold": self.threshold, "min_distance_nm": self.min_distance_nm,
                "atom_sigma_nm": self.atom_sigma_nm, "fit_sigma_nm": self.fit_sigma_nm,
                "working_pixel_nm": self.working_pixel_nm,
                "background_nm": self.background_nm, "noise_sigma_nm": self.noise_sigma_nm,
                "refine": self.refine, "weights": self.source}

    def fit_params(self, pixel_size_nm: float) -> dict:
        """``sigma_px`` and ``fit_radius_px`` of the refinement at this pixel size."""
        sigma_px = self.fit_sigma_nm / peaks.stable_float(pixel_size_nm)
        return {"sigma_px": sigma_px, "fit_radius_px": peaks.fit_radius(sigma_px)}

    def as_predictor(self) -> HeatmapPredictor:
        """The network (input scaling and sigmoid included) for ``fastsac.infer.predict_tiled``."""
        return HeatmapPredictor(self.model).eval()

    def score_map(self, image, *, pixel_size_nm=None) -> np.ndarray:
        """Heatmap (H, W) float32 in [0, 1] on the input's pixel grid."""
        prep = heatmap_preprocess(image, pixel_size_nm=pixel_size_nm, working_pixel_nm=self.working_pixel_nm,
                                  background_nm=self.background_nm, noise_sigma_nm=self.noise_sigma_nm,
                                  backend=self.backend)
        heat = run_heatmap(self.model, prep.image, self.device)
        if heat.shape != prep.shape:
            heat = resample_image(heat, prep.shape)
        return heat

    def detect(self, micrograph, *, pixel_size_nm=None) -> Detections:
        img, px = as_micrograph(micrograph, pixel_size_nm)
        t0 = time.perf_counter()
        heat = self.score_map(img, pixel_size_nm=px)
        t1 = time.perf_counter()
        px_used = px or self.working_pixel_nm
        out = postprocess_scores(heat, img, threshold=self.threshold,
                                 min_distance_px=self.min_distance_nm / px_used, refine=self.refine,
                                 **self.fit_params(px_used), backend=self.backend)
        timings = {"score_map": t1 - t0, **out.pop("timings")}
        return Detections(**out, detector=self.name, params=self.params() | {"pixel_size_nm_used": px_used},
                          timings=timings)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _from_checkpoint(ck: Checkpoint, **params) -> Detector:
    if ck.kind == "sac_cnn":
        return SacCnnDetector(ck.model, source=ck.path, **params)
    kw = {k: v for k, v in ck.detector.items()
          if k in ("threshold", "min_distance_nm", "atom_sigma_nm", "working_pixel_nm", "background_nm",
                   "noise_sigma_nm")}
    return HeatmapDetector(ck.model, source=ck.path, **(kw | params))


def load_detector(path: str | os.PathLike, **params) -> Detector:
    """Detector from a checkpoint file, recognised by its keys.

    The published SAC-CNN checkpoint gives a :class:`SacCnnDetector`; a fastsac
    checkpoint a :class:`HeatmapDetector` with its stored threshold and
    pre-processing. Keyword arguments override detector parameters.

    Raises
    ------
    FastsacInputError
        Naming the file, when it is missing or neither kind of checkpoint.
    """
    return _from_checkpoint(load_checkpoint(path), **params)


def _weights_path() -> Path | None:
    try:
        p = resources.files("fastsac") / "weights" / DEFAULT_WEIGHTS
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    return Path(os.fspath(p)) if p.is_file() else None


def default_detector(**params) -> Detector | None:
    """fastsac's shipped heatmap detector, or None when its weights are not installed.

    Loads offline from the package data (``fastsac/weights/fastsac_heatmap_v1.pt``).
    """
    p = _weights_path()
    return None if p is None else load_detector(p, **params)
