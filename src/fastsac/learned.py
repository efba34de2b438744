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
  shared :func:`~fastsac.detect.postprocess_scores` (maxima → NMS → sub-pixel
  fit). Per-atom score = heatmap peak value. Images are resampled to the
  model's working pixel size when their calibration is known.
* :func:`default_detector` returns the shipped heatmap model (``--detector heatmap``;
  ``"default"`` stays classical until a learned model beats it under cross-validation)
  (``fastsac/weights/fastsac_heatmap_v1.pt``) or None; :func:`load_detector`
  builds a detector from a checkpoint recognised by its keys; :func:`train`
  trains the heatmap model from scratch (seeded; ``fastsac train``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F

from . import peaks, preprocess
from ._validate import as_float, check_image, check_positive
from .detect import DEFAULT_PIXEL_SIZE_NM, Detections, Detector, _as_micrograph, postprocess_scores
from .errors import FastsacInputError
from .models import BasicCNN, Checkpoint, DenseSacCnn, HeatmapUNet, load_checkpoint, save_checkpoint
from .models.sac_cnn import ATOM_CLASS, HALO, WINDOW

__all__ = ["SacCnnDetector", "HeatmapDetector", "HeatmapPredictor", "default_detector", "load_detector",
           "sliding_window_probabilities", "sac_cnn_preprocess", "heatmap_preprocess",
           "TrainConfig", "TrainResult", "train", "DEFAULT_WEIGHTS", "evaluate_threshold_sweep"]

log = logging.getLogger(__name__)

#: File name of the shipped heatmap model inside ``fastsac/weights``.
DEFAULT_WEIGHTS = "fastsac_heatmap_v1.pt"


def _refine_points(raw, xy0, *, refine, sigma_px, fit_radius_px, max_shift_px, backend):
    """Sub-pixel refinement as in :func:`~fastsac.detect.postprocess_scores`, as a dict of columns."""
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
        refine them on the raw image like fastsac's detectors.
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
        img, px = _as_micrograph(micrograph, pixel_size_nm)
        t0 = time.perf_counter()
        prob = self.score_map(img)
        t1 = time.perf_counter()
        xy, score, _ = self.components(prob)
        t2 = time.perf_counter()
        out = _refine_points(img, xy, refine=self.refine, sigma_px=1.5, fit_radius_px=4,
                             max_shift_px=5.0, backend=self.backend)
        t3 = time.perf_counter()
        return Detections(score=score, **out, detector=self.name,
                          params=self.params() | {"pixel_size_nm_used": px},
                          timings={"score_map": t1 - t0, "peaks": t2 - t1, "refine": t3 - t2})


# ----------------------------------------------------------------------------------------------
# fastsac heatmap detector
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray      # (h, w) float32 network input at the working scale
    scale: tuple           # (sy, sx): working pixels per input pixel
    shape: tuple           # original (H, W)


def _resample(img: np.ndarray, out_shape) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in out_shape), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def heatmap_preprocess(image, *, pixel_size_nm: float | None, working_pixel_nm: float = DEFAULT_PIXEL_SIZE_NM,
                       background_nm: float = 40 * DEFAULT_PIXEL_SIZE_NM,
                       noise_sigma_nm: float = 16 * DEFAULT_PIXEL_SIZE_NM, backend: str = "auto") -> _Prepared:
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
        x = _resample(x, (oh, ow))
        sy, sx = oh / h, ow / w
    else:
        sy = sx = 1.0
    return _Prepared(np.ascontiguousarray(x, np.float32), (sy, sx), (h, w))


#: Network inputs are local-noise units divided by this (keeps activations O(1)).
_INPUT_SCALE = 0.25


def _run_heatmap(model: torch.nn.Module, x: np.ndarray, device: str = "cpu") -> np.ndarray:
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
    t = torch.from_numpy(x * _INPUT_SCALE)[None, None].to(device)
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
        return torch.sigmoid(self.net(x * _INPUT_SCALE))


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
        Gaussian sigma used by the sub-pixel fit, nm.
    working_pixel_nm, background_nm, noise_sigma_nm : float
        Pre-processing the model was trained with (from the checkpoint).
    refine : {"gaussian", "com", "none"}
    device : str
    """

    name = "fastsac_heatmap"

    def __init__(self, model: torch.nn.Module, *, threshold: float = 0.4, min_distance_nm: float = 0.15,
                 atom_sigma_nm: float = 0.045, working_pixel_nm: float = DEFAULT_PIXEL_SIZE_NM,
                 background_nm: float = 40 * DEFAULT_PIXEL_SIZE_NM,
                 noise_sigma_nm: float = 16 * DEFAULT_PIXEL_SIZE_NM, refine: str = "gaussian",
                 device: str = "cpu", backend: str = "auto", source: str | None = None):
        self.model = model.eval().to(device=device, memory_format=torch.channels_last)
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be a heatmap value in [0, 1), got {threshold!r}")
        self.min_distance_nm = check_positive(min_distance_nm, name="min_distance_nm")
        self.atom_sigma_nm = check_positive(atom_sigma_nm, name="atom_sigma_nm")
        self.working_pixel_nm = check_positive(working_pixel_nm, name="working_pixel_nm")
        self.background_nm = check_positive(background_nm, name="background_nm")
        self.noise_sigma_nm = check_positive(noise_sigma_nm, name="noise_sigma_nm")
        self.refine = _check_refine(refine)
        self.device = device
        self.backend = backend
        self.source = source

    def params(self) -> dict:
        return {"threshold": self.threshold, "min_distance_nm": self.min_distance_nm,
                "atom_sigma_nm": self.atom_sigma_nm, "working_pixel_nm": self.working_pixel_nm,
                "background_nm": self.background_nm, "noise_sigma_nm": self.noise_sigma_nm,
                "refine": self.refine, "weights": self.source}

    def as_predictor(self) -> HeatmapPredictor:
        """The network (input scaling and sigmoid included) for ``fastsac.infer.predict_tiled``."""
        return HeatmapPredictor(self.model).eval()

    def score_map(self, image, *, pixel_size_nm=None) -> np.ndarray:
        """Heatmap (H, W) float32 in [0, 1] on the input's pixel grid."""
        prep = heatmap_preprocess(image, pixel_size_nm=pixel_size_nm, working_pixel_nm=self.working_pixel_nm,
                                  background_nm=self.background_nm, noise_sigma_nm=self.noise_sigma_nm,
                                  backend=self.backend)
        heat = _run_heatmap(self.model, prep.image, self.device)
        if heat.shape != prep.shape:
            heat = _resample(heat, prep.shape)
        return heat

    def detect(self, micrograph, *, pixel_size_nm=None) -> Detections:
        img, px = _as_micrograph(micrograph, pixel_size_nm)
        t0 = time.perf_counter()
        heat = self.score_map(img, pixel_size_nm=px)
        t1 = time.perf_counter()
        px_used = px or self.working_pixel_nm
        sigma_px = self.atom_sigma_nm / px_used
        out = postprocess_scores(heat, img, threshold=self.threshold,
                                 min_distance_px=self.min_distance_nm / px_used, refine=self.refine,
                                 sigma_px=max(sigma_px, 0.7),
                                 fit_radius_px=max(2, int(np.ceil(2.5 * sigma_px))), backend=self.backend)
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


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Recipe of the shipped model (``fastsac train`` defaults reproduce it).

    Patches of ``patch`` px are cut from the pre-processed real images with
    random scale (log-uniform in ``scale_range``), flips/rot90, intensity
    gain and extra Gaussian noise; targets are Gaussian bumps of
    ``target_sigma_px`` on the (transformed) labels.
    """

    widths: tuple = (8, 16, 32)
    patch: int = 64
    batch: int = 16
    steps: int = 1200
    lr: float = 5e-3
    weight_decay: float = 1e-4
    target_sigma_px: float = 2.0
    pos_weight: float = 10.0
    p_centred: float = 0.5
    scale_range: tuple = (0.85, 1.18)
    gain_range: tuple = (0.9, 1.1)
    noise_max: float = 0.2
    seed: int = 0
    threads: int = 1
    min_distance_nm: float = 0.15
    noise_sigma_nm: float = 16 * DEFAULT_PIXEL_SIZE_NM
    background_nm: float = 40 * DEFAULT_PIXEL_SIZE_NM
    #: Simulated frames (fastsac.synth, exact truth) mixed into training, with
    #: domain randomisation over dose, blur, loading and clustering; 0 = real only.
    synth_frames: int = 0
    #: Probability that a training patch comes from a simulated frame.
    synth_fraction: float = 0.5


def _simulated_training_frames(cfg: TrainConfig, backend: str) -> list:
    """(network input, truth in working pixels) for ``cfg.synth_frames`` simulated frames.

    Domain randomisation: dose over a decade around the real images', probe blur,
    loading, clustering and vacuum vary frame to frame (seeded by ``cfg.seed``).
    """
    from .synth import simulate

    rng = np.random.default_rng([cfg.seed, 7])
    out = []
    for i in range(cfg.synth_frames):
        img, truth = simulate(
            size=512, seed=int(rng.integers(2**31)), dose=float(np.exp(rng.uniform(np.log(1.5e4), np.log(2e5)))),
            probe_fwhm_nm=float(rng.uniform(0.18, 0.3)), loading_per_nm2=float(rng.uniform(0.1, 0.5)),
            pattern=str(rng.choice(["random", "clustered"])))
        prep = heatmap_preprocess(img.astype(np.float32), pixel_size_nm=DEFAULT_PIXEL_SIZE_NM,
                                  working_pixel_nm=DEFAULT_PIXEL_SIZE_NM, background_nm=cfg.background_nm,
                                  noise_sigma_nm=cfg.noise_sigma_nm, backend=backend)
        out.append((prep.image, np.asarray(truth.xy, np.float64)))
    return out


@dataclass(frozen=True)
class TrainResult:
    model: torch.nn.Module
    config: TrainConfig
    threshold: float
    train_f1: float
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    images: list = field(default_factory=list)


def _render_targets(xy: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Max of Gaussian bumps (peak 1) at ``xy`` on a size×size grid."""
    out = np.zeros((size, size), np.float32)
    if not len(xy):
        return out
    r = int(math.ceil(4 * sigma))
    for x, y in xy:
        x0, x1 = max(0, int(x) - r), min(size, int(x) + r + 2)
        y0, y1 = max(0, int(y) - r), min(size, int(y) + r + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-0.5 * ((np.arange(x0, x1) - x) / sigma) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) - y) / sigma) ** 2)
        np.maximum(out[y0:y1, x0:x1], (gy[:, None] * gx[None, :]).astype(np.float32), out=out[y0:y1, x0:x1])
    return out


def _sample_batch(data, cfg: TrainConfig, rng: np.random.Generator):
    """One augmented batch: (B,1,P,P) inputs and targets."""
    p = cfg.patch
    xs = np.empty((cfg.batch, 1, p, p), np.float32)
    ys = np.empty((cfg.batch, 1, p, p), np.float32)
    lo, hi = np.log(cfg.scale_range[0]), np.log(cfg.scale_range[1])
    for b in range(cfg.batch):
        img, pts = data[rng.integers(len(data))]
        s = float(np.exp(rng.uniform(lo, hi)))   # input px per patch px
        c = min(int(math.ceil(p * s)), min(img.shape))
        s = c / p
        if len(pts) and rng.random() < cfg.p_centred:
            # Half the patches contain a labelled atom somewhere inside: more signal per step.
            ax, ay = pts[rng.integers(len(pts))]
            y0 = int(np.clip(ay - rng.uniform(4, c - 4), 0, img.shape[0] - c))
            x0 = int(np.clip(ax - rng.uniform(4, c - 4), 0, img.shape[1] - c))
        else:
            y0 = int(rng.integers(0, img.shape[0] - c + 1))
            x0 = int(rng.integers(0, img.shape[1] - c + 1))
        crop = img[y0:y0 + c, x0:x0 + c]
        patch = crop if c == p else _resample(crop, (p, p))
        q = (pts - [x0, y0] + 0.5) / s - 0.5       # label positions in patch pixels
        q = q[(q[:, 0] > -5) & (q[:, 0] < p + 5) & (q[:, 1] > -5) & (q[:, 1] < p + 5)]
        tgt = _render_targets(q, p, cfg.target_sigma_px)
        k = int(rng.integers(4))
        patch, tgt = np.rot90(patch, k), np.rot90(tgt, k)
        if rng.random() < 0.5:
            patch, tgt = patch[:, ::-1], tgt[:, ::-1]
        gain = rng.uniform(*cfg.gain_range)
        noise = rng.uniform(0, cfg.noise_max)
        patch = patch * gain + rng.normal(0, noise, patch.shape)
        xs[b, 0] = patch * _INPUT_SCALE
        ys[b, 0] = tgt
    return torch.from_numpy(xs), torch.from_numpy(ys)


def _load_training_images(image_dir: Path, label_dir: Path, stems, *, working_pixel_nm: float, backend: str,
                          cache_dir=None, noise_sigma_nm: float = 16 * DEFAULT_PIXEL_SIZE_NM,
                          background_nm: float = 40 * DEFAULT_PIXEL_SIZE_NM):
    from .io import read, read_points
    data = []
    for stem in stems:
        cands = sorted(image_dir.glob(f"{stem}.*"))
        if not cands:
            raise FastsacInputError(image_dir / stem, "training image not found")
        mic = read(cands[0])
        pts = read_points(label_dir / f"{stem}.csv")
        key = f"{stem}_bg{background_nm:.4f}_n{noise_sigma_nm:.4f}"
        cached = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
        if cached is not None and cached.is_file():
            with np.load(cached) as z:
                prep = _Prepared(z["image"], tuple(z["scale"]), tuple(z["shape"]))
        else:
            prep = heatmap_preprocess(mic.data, pixel_size_nm=mic.pixel_size_nm,
                                      working_pixel_nm=working_pixel_nm, background_nm=background_nm,
                                      noise_sigma_nm=noise_sigma_nm, backend=backend)
            if cached is not None:
                # The median background dominates loading; caching it makes repeated runs (CV) cheap.
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cached, image=prep.image, scale=np.asarray(prep.scale), shape=np.asarray(prep.shape))
        sy, sx = prep.scale
        pts_w = (pts + 0.5) * [sx, sy] - 0.5
        data.append({"stem": stem, "raw": mic.data, "px": mic.pixel_size_nm, "input": prep.image,
                     "labels": pts, "labels_work": pts_w})
    return data


def _detect_prepared(det: "HeatmapDetector", d: dict) -> Detections:
    """``det.detect`` on a training image whose network input is already prepared."""
    heat = _run_heatmap(det.model, d["input"], det.device)
    if heat.shape != d["raw"].shape:
        heat = _resample(heat, d["raw"].shape)
    px = d["px"] or det.working_pixel_nm
    s = det.atom_sigma_nm / px
    out = postprocess_scores(heat, d["raw"], threshold=det.threshold, min_distance_px=det.min_distance_nm / px,
                             refine=det.refine, sigma_px=max(s, 0.7), fit_radius_px=max(2, int(np.ceil(2.5 * s))),
                             backend=det.backend)
    out.pop("timings")
    return Detections(**out, detector=det.name)


def evaluate_threshold_sweep(detections_by_image, truths, thresholds, *, tolerance_px: float = 6.0):
    """Pooled P/R/F1 for each threshold, filtering detections made at a lower threshold by score.

    Filtering by score after greedy NMS equals re-running NMS at the higher
    threshold (a kept point is only ever suppressed by a stronger one).
    """
    from .evaluate import match_points, pool
    rows = []
    for thr in thresholds:
        res = [match_points(d.xy[d.score >= thr], t, tolerance_px=tolerance_px)
               for d, t in zip(detections_by_image, truths)]
        rows.append({"threshold": float(thr)} | pool(res))
    return rows


def train(image_dir, label_dir=None, *, stems=None, config: TrainConfig | None = None,
          out: str | os.PathLike | None = None, backend: str = "auto", progress: bool = True,
          cache_dir: str | os.PathLike | None = None, device: str = "cpu") -> TrainResult:
    """Train the heatmap U-Net from scratch (seeded, CPU) and optionally save a checkpoint.

    Parameters
    ----------
    image_dir : path
        Folder of calibrated images ``<stem>.tif``.
    label_dir : path, optional
        Folder of ``<stem>.csv`` expert labels (X, Y); default ``image_dir/../labels``.
    stems : list of str, optional
        Images to train on (default: every image with a label file).
    config : TrainConfig
    out : path, optional
        Where to write the fastsac checkpoint.
    cache_dir : path, optional
        Folder for pre-processed inputs (``<stem>.npz``), reused by later runs.
    device : str
        torch device for training (the shipped weights were trained on CPU).

    Returns
    -------
    TrainResult
        The model, the detection threshold chosen on the training images
        (max pooled F1 at 6 px) and the loss history.
    """
    from tqdm import tqdm
    cfg = config or TrainConfig()
    from .evaluate import labelled_stems

    image_dir, label_dir, stems = labelled_stems(image_dir, label_dir, stems)
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        data = _load_training_images(image_dir, label_dir, stems, working_pixel_nm=DEFAULT_PIXEL_SIZE_NM,
                                     backend=backend, cache_dir=cache_dir, noise_sigma_nm=cfg.noise_sigma_nm,
                                     background_nm=cfg.background_nm)
        pairs = [(d["input"], d["labels_work"]) for d in data]
        synth_pairs = _simulated_training_frames(cfg, backend) if cfg.synth_frames else []
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        model = HeatmapUNet(tuple(cfg.widths))
        # channels_last is ~2x faster for these thin convolutions on CPU.
        model = model.to(device=device, memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
        losses = []
        model.train()
        for step in tqdm(range(cfg.steps), desc="train", disable=not progress, mininterval=5):
            use_synth = bool(synth_pairs) and rng.random() < cfg.synth_fraction
            x, y = _sample_batch(synth_pairs if use_synth else pairs, cfg, rng)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            logits = model(x)
            w = 1.0 + cfg.pos_weight * y
            loss = F.binary_cross_entropy_with_logits(logits, y, weight=w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if step % 250 == 0:
                log.info("step %d loss %.4f", step, float(np.mean(losses[-50:])))
        model = model.to("cpu", memory_format=torch.contiguous_format).eval()
        det = HeatmapDetector(model, threshold=0.05, min_distance_nm=cfg.min_distance_nm, backend=backend,
                              noise_sigma_nm=cfg.noise_sigma_nm, background_nm=cfg.background_nm)
        dets = [_detect_prepared(det, d) for d in data]
        grid = np.round(np.arange(0.1, 0.91, 0.02), 2)
        rows = evaluate_threshold_sweep(dets, [d["labels"] for d in data], grid)
        best = max(rows, key=lambda r: (r["f1"], -abs(r["threshold"] - 0.5)))
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - t_start
    result = TrainResult(model, cfg, best["threshold"], best["f1"], losses, seconds, list(stems))
    if out is not None:
        cfg_d = asdict(cfg)
        save_checkpoint(out, model, arch={"name": "heatmap_unet", "widths": list(cfg.widths)},
                        detector={"threshold": best["threshold"], "min_distance_nm": cfg.min_distance_nm,
                                  "atom_sigma_nm": 0.045, "working_pixel_nm": DEFAULT_PIXEL_SIZE_NM,
                                  "background_nm": cfg.background_nm,
                                  "noise_sigma_nm": cfg.noise_sigma_nm},
                        meta={"train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg_d.items()},
                              "train_images": list(stems), "train_f1": best["f1"],
                              "train_seconds": round(seconds, 1), "torch": str(torch.__version__)})
    return result
