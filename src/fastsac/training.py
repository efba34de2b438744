"""Training fastsac's learned detectors (``fastsac train``): the heatmap U-Net and the
re-scorer, with thresholds chosen on out-of-fold predictions.

Kept apart from :mod:`fastsac.detectors` so that analysing an image never imports the
simulator or the evaluation code.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import io
from ._validate import check_positive
from .detectors.base import Detections, postprocess_scores
from .detectors.learned import (INPUT_SCALE, HeatmapDetector, PreparedImage, heatmap_preprocess,
                                resample_image, run_heatmap)
from .detectors.rescore import FEATURES, CandidateTable, RescoreModel, candidate_features
from .errors import FastsacInputError
from .io import DEFAULT_PIXEL_SIZE_NM
from .evaluate import labelled_stems, match_points, pool
from .models import HeatmapUNet, save_checkpoint

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate_threshold_sweep", "simulated_training_frames",
           "load_training_images", "detect_prepared", "rescore_targets", "fit_logistic",
           "choose_threshold", "fit_and_select", "train_rescore"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- heatmap U-Net


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


def simulated_training_frames(cfg: TrainConfig, backend: str) -> list:
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
        patch = crop if c == p else resample_image(crop, (p, p))
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
        xs[b, 0] = patch * INPUT_SCALE
        ys[b, 0] = tgt
    return torch.from_numpy(xs), torch.from_numpy(ys)


def load_training_images(image_dir: Path, label_dir: Path, stems, *, working_pixel_nm: float, backend: str,
                          cache_dir=None, noise_sigma_nm: float = 16 * DEFAULT_PIXEL_SIZE_NM,
                          background_nm: float = 40 * DEFAULT_PIXEL_SIZE_NM):
    from .io import SUPPORTED_SUFFIXES, read, read_points
    data = []
    for stem in stems:
        cands = sorted(q for q in image_dir.glob(f"{stem}.*") if q.suffix.lower() in SUPPORTED_SUFFIXES)
        if not cands:
            raise FastsacInputError(image_dir / stem, "training image not found")
        mic = read(cands[0])
        pts = read_points(label_dir / f"{stem}.csv")
        key = f"{stem}_bg{background_nm:.4f}_n{noise_sigma_nm:.4f}"
        cached = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
        if cached is not None and cached.is_file():
            with np.load(cached) as z:
                prep = PreparedImage(z["image"], tuple(z["scale"]), tuple(z["shape"]))
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


def detect_prepared(det: "HeatmapDetector", d: dict) -> Detections:
    """``det.detect`` on a training image whose network input is already prepared."""
    heat = run_heatmap(det.model, d["input"], det.device)
    if heat.shape != d["raw"].shape:
        heat = resample_image(heat, d["raw"].shape)
    px = d["px"] or det.working_pixel_nm
    out = postprocess_scores(heat, d["raw"], threshold=det.threshold, min_distance_px=det.min_distance_nm / px,
                             refine=det.refine, **det.fit_params(px), backend=det.backend)
    out.pop("timings")
    return Detections(**out, detector=det.name)


def evaluate_threshold_sweep(detections_by_image, truths, thresholds, *, tolerance_px: float = 6.0):
    """Pooled P/R/F1 for each threshold, filtering detections made at a lower threshold by score.

    Filtering by score after greedy NMS equals re-running NMS at the higher
    threshold (a kept point is only ever suppressed by a stronger one).
    """
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

    image_dir, label_dir, stems = labelled_stems(image_dir, label_dir, stems)
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        data = load_training_images(image_dir, label_dir, stems, working_pixel_nm=DEFAULT_PIXEL_SIZE_NM,
                                     backend=backend, cache_dir=cache_dir, noise_sigma_nm=cfg.noise_sigma_nm,
                                     background_nm=cfg.background_nm)
        pairs = [(d["input"], d["labels_work"]) for d in data]
        synth_pairs = simulated_training_frames(cfg, backend) if cfg.synth_frames else []
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
        dets = [detect_prepared(det, d) for d in data]
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


# ---------------------------------------------------------------------------------------- re-scorer


def fit_logistic(X, y, *, l2: float = 1.0, max_iter: int = 100, tol: float = 1e-10):
    """L2-penalised logistic regression by Newton's method (deterministic).

    Minimises Σ log-loss + l2/2 · ‖w‖² on standardised features; the intercept is not
    penalised. Returns (mean, scale, coef, intercept).
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    check_positive(l2, name="l2")
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X must be (N, F) and y (N,) with N > 0, got {X.shape} and {y.shape}")
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-12] = 1.0
    Z = np.c_[np.ones(len(X)), (X - mean) / scale]
    w = np.zeros(Z.shape[1])
    pen = np.full(Z.shape[1], l2)
    pen[0] = 0.0
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -40, 40)))
        g = Z.T @ (p - y) + pen * w
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(pen + 1e-9)
        step = np.linalg.solve(H, g)
        w -= step
        if np.max(np.abs(step)) < tol:
            break
    return mean, scale, w[1:], float(w[0])


def rescore_targets(tab: CandidateTable, labels, tolerance_px: float) -> np.ndarray:
    """1 for the candidates Hungarian-matched to a label, else 0."""
    y = np.zeros(len(tab.xy))
    r = match_points(tab.xy, labels, tolerance_px=tolerance_px)
    y[r.pairs[:, 0]] = 1.0
    return y


def choose_threshold(probs, targets, n_labels, grid=None) -> tuple[float, float]:
    """Probability threshold that maximises pooled F1 over images.

    ``probs``/``targets``: lists of per-image (N,) arrays (target 1 = the candidate is
    matched to a label); ``n_labels``: labels per image. Returns (threshold, F1).
    """
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2) if grid is None else np.asarray(grid)
    p = np.concatenate(probs)
    t = np.concatenate(targets)
    n = float(np.sum(n_labels))
    f1 = np.array([2 * t[p >= g].sum() / ((p >= g).sum() + n) for g in grid])
    # Ties → the threshold closest to 0.5 (the least extreme).
    k = max(range(len(grid)), key=lambda i: (round(f1[i], 12), -abs(grid[i] - 0.5)))
    return float(grid[k]), float(f1[k])


def fit_and_select(tables, targets, n_labels, *, l2, inner_folds):
    """Fit on all given images; threshold from out-of-fold predictions over image groups."""
    m = len(tables)
    groups = [list(range(i, m, inner_folds)) for i in range(min(inner_folds, m))]
    oof = [None] * m
    for g in groups:
        tr = [i for i in range(m) if i not in g] or g
        mean, scale, coef, b = fit_logistic(np.concatenate([tables[i].features for i in tr]),
                                            np.concatenate([targets[i] for i in tr]), l2=l2)
        rm = RescoreModel(mean, scale, coef, b, 0.5)
        for i in g:
            oof[i] = rm.probability(tables[i].features)
    thr, f1_oof = choose_threshold(oof, targets, n_labels)
    mean, scale, coef, b = fit_logistic(np.concatenate([t.features for t in tables]),
                                        np.concatenate(targets), l2=l2)
    return mean, scale, coef, b, thr, f1_oof


def train_rescore(image_dir, label_dir=None, *, stems=None, out=None, candidate_threshold: float = 2.5,
                  l2: float = 1.0, inner_folds: int = 5, tolerance_px: float = 6.0, tables=None,
                  backend: str = "auto") -> RescoreModel:
    """Train the re-scorer on labelled images (seconds on a CPU; deterministic).

    Parameters
    ----------
    image_dir : path
        Folder of calibrated ``<stem>.tif`` images.
    label_dir : path, optional
        Folder of ``<stem>.csv`` labels (X = column, Y = row, px); default ``image_dir/../labels``.
    stems : list of str, optional
        Images to use (default: every image with a label file).
    out : path, optional
        Write the model as JSON here.
    candidate_threshold : float
        Stage-1 SNR threshold.
    l2 : float
        Ridge penalty of the logistic regression (standardised features).
    inner_folds : int
        The probability threshold maximises pooled F1 of out-of-fold predictions over this
        many groups of training images (group g = images g, g + k, …).
    tables : dict stem → (CandidateTable, labels), optional
        Pre-computed features (cross-validation reuses them).

    Returns
    -------
    RescoreModel
    """
    t0 = time.perf_counter()
    if tables is None:
    
        image_dir, label_dir, stems = labelled_stems(image_dir, label_dir, stems)
        tables = {}
        for s in stems:
            img_path = next(p for p in sorted(image_dir.glob(f"{s}.*")) if p.suffix.lower() in io.SUPPORTED_SUFFIXES)
            mic = io.read(img_path)
            tables[s] = (candidate_features(mic.data, pixel_size_nm=mic.pixel_size_nm,
                                            candidate_threshold=candidate_threshold, backend=backend),
                         io.read_points(label_dir / f"{s}.csv"))
    stems = list(stems) if stems is not None else sorted(tables)
    tabs = [tables[s][0] for s in stems]
    targets = [rescore_targets(tables[s][0], tables[s][1], tolerance_px) for s in stems]
    n_labels = [len(tables[s][1]) for s in stems]
    mean, scale, coef, b, thr, f1_oof = fit_and_select(tabs, targets, n_labels, l2=l2, inner_folds=inner_folds)
    seconds = time.perf_counter() - t0
    model = RescoreModel(mean, scale, coef, b, thr, candidate_threshold, FEATURES,
                         {"train_images": list(stems), "l2": l2, "inner_folds": inner_folds,
                          "tolerance_px": tolerance_px, "out_of_fold_f1": round(f1_oof, 4),
                          "n_candidates": int(sum(len(t.xy) for t in tabs)),
                          "n_labels": int(sum(n_labels))})
    log.info("re-scorer: %d images, threshold %.2f (out-of-fold F1 %.3f), %.1f s", len(stems), thr, f1_oof, seconds)
    if out is not None:
        model.save(out)
    return model
