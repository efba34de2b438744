"""Throughput benchmark: Mpx/s per stage and end to end, peak RSS, baselines.

Stages, each timed on its own pass over the same image (so they can be
compared with the end-to-end run, where they overlap):

``read``       reading every tile window from the source (host copies)
``preprocess`` the model's preprocessing alone, run through the tiled engine
``inference``  the tiled network (read + transfers + network), score map only
``peaks``      local maxima + refinement + NMS on the score map (measured
               inside the end-to-end run)
``spatial``    first-nearest-neighbour distances + distance-cutoff clusters
``end_to_end`` :func:`fastsac.infer.detect_tiled` + spatial, wall clock

Baselines, in the same run: ``trackpy.locate``, ``skimage.feature.
peak_local_max`` + ``scipy.ndimage.center_of_mass``, ``cKDTree`` +
``connected_components`` (each skipped with a note when not installed), and
the published sliding-window SAC-CNN on a 512² crop, extrapolated (when
:mod:`fastsac.models` is available). ``kernels`` compares each CUDA kernel
with the host (C++ when built) implementation on the same inputs.

The default model is fastsac's default detector (the classical matched filter
divided by the local noise; its score map runs as torch convolutions on the
device, with the global noise statistics calibrated by a first streamed pass,
which is part of the end-to-end time). ``model="builtin"`` is a stand-in
network with the compute profile of a light CNN (random weights).
Images come from a built-in generator (Gaussian spots on a noisy sloped
background) or :mod:`fastsac.synth` when ``synth=True`` and it is installed.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np

from .io import DEFAULT_PIXEL_SIZE_NM

log = logging.getLogger(__name__)

__all__ = ["BenchConfig", "run_bench", "format_table", "synthetic_image", "stand_in_model"]


@dataclass(frozen=True)
class BenchConfig:
    """What :func:`run_bench` measures.

    sizes : image edge lengths (square images), pixels
    device : "auto" | "cpu" | "cuda"
    model : "default" / "classical" (the default detector: its score map as torch
        convolutions, calibrated per image, through the tiled engine) or
        "builtin" (a stand-in network with a light CNN's compute profile)
    dtype : autocast dtype on CUDA ("bf16" default there), None on CPU
    baselines, kernels : run the baselines / the CUDA-vs-host kernel comparison
    synth : images from fastsac.synth when available
    """

    sizes: tuple = (2048, 8192)
    device: str = "auto"
    model: str = "default"
    dtype: str | None = None
    baselines: bool = True
    kernels: bool = True
    synth: bool = False
    seed: int = 0
    density_per_mpx: float = 2000.0
    tile: int | None = None
    batch_size: int | None = None


# --------------------------------------------------------------------------- data
def synthetic_image(size, *, density_per_mpx: float = 2000.0, sigma_px: float = 1.4,
                    seed: int = 0, dtype=np.float32, device: str = "cpu", synth: bool = False):
    """(H, W) image of Gaussian atoms on a noisy, sloped background, and the truth (N, 2).

    Generated in row blocks (noise on ``device`` with torch when it is CUDA,
    which makes 32768² take seconds); ``dtype`` uint16 halves memory.
    """
    h, w = (size, size) if np.ndim(size) == 0 else tuple(size)
    if synth:
        try:
            from . import synth as _synth  # noqa: F401
        except ImportError:
            log.info("fastsac.synth not installed; using the built-in generator")
        else:
            log.info("fastsac.synth found but its montage API is not wired here; "
                     "using the built-in generator")
    import torch

    rng = np.random.default_rng(seed)
    n = int(density_per_mpx * h * w / 1e6)
    truth = np.column_stack([rng.uniform(3, w - 4, n), rng.uniform(3, h - 4, n)])
    out = np.empty((h, w), dtype)
    r = int(math.ceil(3 * sigma_px))
    k = np.arange(-r, r + 1)
    dev = torch.device(device if device != "auto" else
                       ("cuda" if torch.cuda.is_available() else "cpu"))
    gen = torch.Generator(device=dev).manual_seed(seed)
    rows = 2048
    order = np.argsort(truth[:, 1])
    ys_sorted = truth[order, 1]
    scale = 1000.0 if np.dtype(dtype).kind == "u" else 1.0
    for y0 in range(0, h, rows):
        y1 = min(y0 + rows, h)
        yy = torch.arange(y0, y1, device=dev, dtype=torch.float32)[:, None]
        xx = torch.arange(w, device=dev, dtype=torch.float32)[None, :]
        block = 0.3 + 1e-5 * xx + 2e-5 * yy + 0.05 * torch.randn((y1 - y0, w), generator=gen,
                                                                    device=dev)
        lo, hi = np.searchsorted(ys_sorted, [y0 - r - 1, y1 + r + 1])
        pts = truth[order[lo:hi]]
        if len(pts):
            cx, cy = np.round(pts[:, 0]).astype(np.int64), np.round(pts[:, 1]).astype(np.int64)
            gy, gx = np.meshgrid(k, k, indexing="ij")
            px = cx[:, None, None] + gx[None]
            py = cy[:, None, None] + gy[None]
            val = np.exp(-((px - pts[:, 0, None, None]) ** 2 + (py - pts[:, 1, None, None]) ** 2)
                         / (2 * sigma_px**2)) * rng.uniform(0.5, 1.0, len(pts))[:, None, None]
            ok = (py >= y0) & (py < y1) & (px >= 0) & (px < w)
            flat = torch.as_tensor(((py[ok] - y0) * w + px[ok]).astype(np.int64), device=dev)
            block.view(-1).index_add_(0, flat, torch.as_tensor(val[ok], dtype=torch.float32,
                                                                 device=dev))
        block = block * scale
        if np.dtype(dtype).kind == "u":
            block = block.clamp_(0, np.iinfo(dtype).max).round_().to(torch.int32)
        out[y0:y1] = block.cpu().numpy().astype(dtype, copy=False)
    return out, truth


def stand_in_model(device: str = "cpu"):
    """A light detector-shaped network (receptive field 9 px): fixed local
    preprocessing (subtract a 9×9 local mean, scale), a Gaussian matched filter
    that makes the score map meaningful (peaks at atoms), plus a random-weight
    conv stack 1→8 (5×5) → 8 (3×3) → 1 (3×3) (≈1.7 kFLOP/px, lighter than
    fastsac's U-Net) added at 1 % weight.

    Returns (predictor, preprocessing module)."""
    import torch
    import torch.nn.functional as F

    class LocalNorm(torch.nn.Module):
        receptive_field = 4

        def forward(self, x):
            return (x - F.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)) * 4.0

    class StandIn(torch.nn.Module):
        receptive_field = 9

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.pre = LocalNorm()
            r = torch.arange(-2, 3, dtype=torch.float32)
            g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 1.4**2))
            self.mf = torch.nn.Conv2d(1, 1, 5, padding=2, bias=False)
            with torch.no_grad():
                self.mf.weight[0, 0] = g / g.sum()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(1, 8, 5, padding=2), torch.nn.ReLU(),
                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                torch.nn.Conv2d(8, 1, 3, padding=1))

        def forward(self, x):
            xn = self.pre(x)
            return self.mf(xn) + 0.01 * self.body(xn)

    net = StandIn().eval()
    return net, net.pre


# --------------------------------------------------------------------------- helpers
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device="cpu"):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


class _Discard:
    """``out=`` sink that keeps nothing (inference throughput without a result array)."""

    def __init__(self, shape):
        self.shape = shape

    def __setitem__(self, key, value):
        pass


def _mpx(px, sec):
    return px / 1e6 / sec if sec > 0 else float("inf")


# --------------------------------------------------------------------------- stages
def _end_to_end(res: dict, dev: str, detect):
    """Time ``detect()`` + NN + clusters into ``res`` (end_to_end_s, detect_s,
    spatial_s). On CUDA the first pass also allocates pinned buffers, plans FFTs
    and autotunes cuDNN: it is reported as ``end_to_end_cold_s`` and the second,
    steady-state pass is the measurement. Returns (detections, nn, clusters)."""
    from .spatial import clusters, nearest_neighbors

    sp_backend = "cuda" if dev == "cuda" else "auto"
    for attempt in range(2 if dev == "cuda" else 1):
        _sync(dev)
        t0 = time.perf_counter()
        d = detect()
        t1 = time.perf_counter()
        nn = nearest_neighbors(d.xy, backend=sp_backend)
        cl = clusters(d.xy, cutoff=10.0, backend=sp_backend)
        _sync(dev)
        t2 = time.perf_counter()
        if attempt == 0 and dev == "cuda":
            res["end_to_end_cold_s"] = t2 - t0
    res.update({"end_to_end_s": t2 - t0, "detect_s": t1 - t0, "spatial_s": t2 - t1})
    return d, nn, cl


def _bench_size(size, cfg: BenchConfig, dev: str, predictor, pre) -> dict:
    from . import infer

    res: dict = {"size": size, "pixels": size * size}
    gen_dtype = np.uint16 if size >= 16384 else np.float32
    t, (img, truth) = _timed(lambda: synthetic_image(size, density_per_mpx=cfg.density_per_mpx,
                                                     seed=cfg.seed, dtype=gen_dtype,
                                                     device=dev, synth=cfg.synth))
    res["generate_s"] = t
    res["n_truth"] = len(truth)
    px = size * size
    dtype = cfg.dtype if dev == "cuda" else None
    scale = 1e-3 if gen_dtype == np.uint16 else 1.0
    thr = 0.5
    kw = dict(tile=cfg.tile, batch_size=cfg.batch_size, device=dev, dtype=dtype)
    if predictor is None:
        return _bench_classical(res, img, cfg, dev)
    if scale != 1.0:
        import torch

        base = predictor

        class _Scaled(torch.nn.Module):  # integer counts → the model's units, on the device
            receptive_field = base.receptive_field

            def __init__(self):
                super().__init__()
                self.base = base

            def forward(self, x):
                return self.base(x * scale)
        predictor = _Scaled().eval()

    # read
    src = infer.open_source(img)
    plan = infer.plan_tiles(img.shape, tile=cfg.tile or 2048, halo=16)
    t0 = time.perf_counter()
    for (y0, y1, x0, x1) in plan.windows:
        src.read(y0, y1, x0, x1)
    res["read_s"] = time.perf_counter() - t0
    # preprocess alone, inference alone (score map discarded)
    if pre is not None:
        t, r = _timed(lambda: infer.predict_tiled(img, pre, halo=pre.receptive_field,
                                                  out=_Discard(img.shape), check_halo=False,
                                                  **kw), dev)
        res["preprocess_s"] = t
    t, r = _timed(lambda: infer.predict_tiled(img, predictor, halo=16, out=_Discard(img.shape),
                                              check_halo=False, **kw), dev)
    res["inference_s"] = t
    res["tile"], res["batch_size"] = list(r.plan.tile), r.batch_size
    # end to end: detection + spatial (cold and steady-state passes on CUDA)
    det, nn, cl = _end_to_end(res, dev, lambda: infer.detect_tiled(
        img, predictor, threshold=thr, min_distance_px=3.0,
        refine="com" if dev == "cpu" else "gaussian", fit_radius_px=3, sigma_px=1.4, halo=16,
        **kw))
    res.update({"peaks_s": det.timings["peaks"] + det.timings["nms"],
                "n_detected": len(det), "n_clusters": cl.n_clusters,
                "spatial_backend": nn.backend, "peaks_backend": det.peaks_backend,
                "refine": det.params["refine"], "detect_timings": det.timings})
    for k in ("read", "preprocess", "inference", "peaks", "spatial", "end_to_end"):
        if f"{k}_s" in res:
            res[f"{k}_mpx_s"] = _mpx(px, res[f"{k}_s"])
    # recall against the generator's truth (sanity: the stand-in is untrained)
    res["peak_rss_mb"] = _peak_rss_mb()
    del img
    return res


#: Pixel size the benchmark images are treated as having (the ptnc-train calibration).
BENCH_PIXEL_NM = DEFAULT_PIXEL_SIZE_NM


def _bench_classical(res: dict, img, cfg: BenchConfig, dev: str, torch_path: bool = False) -> dict:
    """Stages and end to end for the default (classical) detector on ``img``:
    C++ on CPU, the torch engine on CUDA (or on CPU with ``torch_path``, for tests)."""
    from . import infer
    from .detectors import ClassicalDetector
    from .models.classical import calibrate
    from .spatial import clusters, nearest_neighbors

    px = img.shape[0] * img.shape[1]
    if dev == "cpu" and not torch_path:
        return _bench_classical_cpu(res, img, cfg)
    det = ClassicalDetector(device=dev)
    net = det.as_predictor(BENCH_PIXEL_NM)
    kw = dict(tile=cfg.tile, batch_size=cfg.batch_size, device=dev)
    src = infer.open_source(img)
    plan = infer.plan_tiles(img.shape, tile=cfg.tile or 2048, halo=net.receptive_field + 1)
    t0 = time.perf_counter()
    for (y0, y1, x0, x1) in plan.windows:
        src.read(y0, y1, x0, x1)
    res["read_s"] = time.perf_counter() - t0
    # "preprocess" = the calibration pass (DoG + histogram of |DoG|, streamed)
    t, info = _timed(lambda: calibrate(img, net, **kw), dev)
    res["preprocess_s"], res["calibration"] = t, info
    t, r = _timed(lambda: infer.predict_tiled(img, net, halo=net.receptive_field,
                                              out=_Discard(img.shape), check_halo=False, **kw), dev)
    res["inference_s"] = t
    res["tile"], res["batch_size"] = list(r.plan.tile), r.batch_size
    sp_backend = "cuda" if dev == "cuda" else "auto"
    d, nn, cl = _end_to_end(res, dev, lambda: det.detect_tiled(
        img, pixel_size_nm=BENCH_PIXEL_NM, device=dev, tile=cfg.tile, batch_size=cfg.batch_size))
    res.update({"peaks_s": d.timings["peaks"] + d.timings["nms"],
                "n_detected": len(d), "n_clusters": cl.n_clusters,
                "spatial_backend": nn.backend, "peaks_backend": d.peaks_backend,
                "refine": d.params["refine"], "detect_timings": d.timings,
                "resident": bool(d.params.get("resident")),
                "model": "classical (default detector)"})
    if d.params.get("resident"):
        # the streamed engine on the same image, for comparison (two host passes)
        _sync(dev)
        t0 = time.perf_counter()
        ds = det.detect_tiled(img, pixel_size_nm=BENCH_PIXEL_NM, device=dev, tile=cfg.tile,
                              batch_size=cfg.batch_size, resident=False)
        nearest_neighbors(ds.xy, backend=sp_backend)
        clusters(ds.xy, cutoff=10.0, backend=sp_backend)
        _sync(dev)
        res["end_to_end_streamed_s"] = time.perf_counter() - t0
        res["n_detected_streamed"] = len(ds)
    for k in ("read", "preprocess", "inference", "peaks", "spatial", "end_to_end"):
        if f"{k}_s" in res:
            res[f"{k}_mpx_s"] = _mpx(px, res[f"{k}_s"])
    res["peak_rss_mb"] = _peak_rss_mb()
    return res


def _bench_classical_cpu(res: dict, img, cfg: BenchConfig) -> dict:
    """On CPU the default detector runs its C++ kernels, tiled exactly
    (:func:`fastsac.montage.detect_montage`: DoG pass → exact global percentile
    → score, maxima, refinement per tile → one NMS), which equals the
    whole-image detection and keeps memory bounded."""
    from .montage import detect_montage
    from .spatial import clusters, nearest_neighbors

    px = img.shape[0] * img.shape[1]
    t0 = time.perf_counter()
    d, _, n_cand, _ = detect_montage(img, tile=cfg.tile or 2048, pixel_size_nm=BENCH_PIXEL_NM,
                                     progress=False)
    tim = dict(d.timings)
    t1 = time.perf_counter()
    nn = nearest_neighbors(d.xy)
    cl = clusters(d.xy, cutoff=10.0)
    t2 = time.perf_counter()
    res.update({"preprocess_s": tim.get("pass1_dog", 0.0) + tim.get("percentile", 0.0),
                "inference_s": tim.get("pass2_detect", 0.0),
                "end_to_end_s": t2 - t0, "detect_s": t1 - t0, "spatial_s": t2 - t1,
                "n_detected": len(d), "n_clusters": cl.n_clusters, "spatial_backend": nn.backend,
                "peaks_backend": "cpp", "refine": "gaussian", "detect_timings": tim,
                "tile": [cfg.tile or 2048] * 2, "batch_size": 1,
                "model": "classical (default detector), C++ exact tiling"})
    for k in ("preprocess", "inference", "spatial", "end_to_end"):
        res[f"{k}_mpx_s"] = _mpx(px, res[f"{k}_s"])
    res["peak_rss_mb"] = _peak_rss_mb()
    return res


def _baselines(dev: str, cfg: BenchConfig) -> dict:
    out: dict = {}
    img, _ = synthetic_image(2048, density_per_mpx=cfg.density_per_mpx, seed=cfg.seed + 1)
    px = img.size
    try:
        import trackpy

        trackpy.quiet()
        t, f = _timed(lambda: trackpy.locate(img, 7, minmass=1.0, engine="auto"))
        out["trackpy.locate"] = {"size": 2048, "s": t, "mpx_s": _mpx(px, t), "n": len(f)}
    except ImportError:
        out["trackpy.locate"] = {"skipped": "trackpy not installed"}
    try:
        from scipy import ndimage as ndi
        from skimage.feature import peak_local_max

        def skim():
            sm = ndi.gaussian_filter(img, 1.4)
            pk = peak_local_max(sm, min_distance=3, threshold_abs=float(np.percentile(sm, 99)))
            lab = np.zeros(img.shape, np.int32)
            lab[pk[:, 0], pk[:, 1]] = np.arange(1, len(pk) + 1)
            lab = ndi.grey_dilation(lab, size=(5, 5))
            return ndi.center_of_mass(img, lab, np.arange(1, len(pk) + 1))
        t, com = _timed(skim)
        out["skimage.peak_local_max+center_of_mass"] = {"size": 2048, "s": t,
                                                         "mpx_s": _mpx(px, t), "n": len(com)}
    except ImportError:
        out["skimage.peak_local_max+center_of_mass"] = {"skipped": "scikit-image not installed"}
    try:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        rng = np.random.default_rng(0)
        pts = rng.uniform(0, 8192, (int(cfg.density_per_mpx * 67), 2))

        def kd():
            tree = cKDTree(pts)
            tree.query(pts, k=2)
            pairs = tree.query_pairs(10.0, output_type="ndarray")
            g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                           shape=(len(pts), len(pts)))
            return connected_components(g, directed=False)
        t, _ = _timed(kd)
        out["cKDTree+connected_components"] = {"points": len(pts), "s": t,
                                               "points_per_s": len(pts) / t}
    except ImportError:
        out["cKDTree+connected_components"] = {"skipped": "scipy missing"}
    out["sac_cnn_sliding_window"] = _sac_cnn_baseline(dev)
    return out


def _sac_cnn_baseline(dev: str) -> dict:
    try:
        from .detectors.learned import sliding_window_probabilities
        from .models.sac_cnn import BasicCNN
    except ImportError:
        return {"skipped": "fastsac.models / fastsac.detectors.learned not installed in this build"}
    try:
        import torch

        model = BasicCNN()
        img = np.random.default_rng(0).random((512, 512), dtype=np.float32)
        t, _ = _timed(lambda: sliding_window_probabilities(model, img, batch_size=64,
                                                           device="cuda" if dev == "cuda"
                                                           else "cpu"), dev)
        del torch
        return {"size": 512, "s": t, "mpx_s": _mpx(512 * 512, t),
                "extrapolated_8192_s": t * (8192 / 512) ** 2,
                "note": "measured on a 512² crop, extrapolated linearly (random weights)"}
    except Exception as exc:  # an interface that moved: report, do not fail the run
        return {"skipped": f"{type(exc).__name__}: {exc}"}


def _kernel_comparison(dev: str) -> dict:
    """Each CUDA kernel vs the host implementation (C++ when built), same inputs."""
    from . import peaks
    from ._backend import Backend, unavailable_reason
    from .spatial import neighbors as nb

    why = unavailable_reason(Backend.CUDA)
    if dev != "cuda" or why:
        return {"skipped": why or "device is not CUDA"}
    rng = np.random.default_rng(0)
    img, truth = synthetic_image(8192, density_per_mpx=3000, seed=3, device="cuda")
    cand = peaks.local_maxima(img, threshold=0.6, backend="auto")
    xy0 = cand.xy.astype(np.float64)
    pts = rng.uniform(0, 30000, (1_000_000, 2))
    cases = {
        "local_maxima": (peaks._maxima_kernel, (img, 0.6, 1, 0)),
        "nms": (peaks._nms_kernel, (xy0, cand.values.astype(np.float64), 3.0)),
        "refine_com": (peaks._com_kernel, (img, xy0, 2, 2)),
        "refine_gaussian": (peaks._gauss_kernel, (img, xy0, 3, 1.4, 50)),
        "nearest_neighbors": (nb._nn_kernel, (pts,)),
        "clusters": (nb._cluster_kernel, (pts, 40.0)),
    }
    import torch

    out = {}
    for name, (kern, args) in cases.items():
        host = kern.resolve("auto")  # host data: cpp > numba > numpy
        first = args[1] if name.startswith("refine") else args[0]
        row = {"host_backend": host.value,
               "n": int(len(first)) if first.ndim == 2 and first.shape[1] == 2 else int(first.size)}
        if host is Backend.NUMPY and name in ("nms", "refine_gaussian", "nearest_neighbors",
                                              "refine_com"):
            row["note"] = "no compiled host kernel in this build; numpy reference too slow, skipped"
            t_host = None
        else:
            kern.impls[host](*args)
            t_host = min(_timed(lambda: kern.impls[host](*args))[0] for _ in range(3))
        dev_args = tuple(torch.as_tensor(a, device="cuda") if isinstance(a, np.ndarray) else a
                         for a in args)
        impl = kern.impls[Backend.CUDA]
        impl(*dev_args)  # JIT warm-up
        t_dev = min(_timed(lambda: impl(*dev_args), "cuda")[0] for _ in range(3))
        t_hio = min(_timed(lambda: impl(*args), "cuda")[0] for _ in range(2))
        row.update({"host_s": t_host, "cuda_s": t_dev, "cuda_host_io_s": t_hio,
                    "speedup": (t_host / t_dev) if t_host else None,
                    "speedup_host_io": (t_host / t_hio) if t_host else None,
                    "note_cuda": "cuda_s: data resident on the GPU (the pipeline case); "
                                 "cuda_host_io_s: numpy in/out, transfers included"})
        out[name] = row
    return out


def _meta(dev) -> dict:
    import torch

    from ._backend import Backend, unavailable_reason

    m = {"python": platform.python_version(), "torch": torch.__version__,
         "cpu_count": os.cpu_count(), "device": dev, "machine": platform.machine(),
         "backends": {b.value: unavailable_reason(b) or "ok"
                      for b in (Backend.CPP, Backend.CUDA)}}
    if dev == "cuda":
        m["gpu"] = torch.cuda.get_device_name(0)
    return m


def run_bench(config: BenchConfig | None = None) -> dict:
    """Run the benchmark; returns a JSON-serialisable dict (see module docstring)."""
    import torch

    cfg = config or BenchConfig()
    dev = cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.dtype is None and dev == "cuda":
        cfg = BenchConfig(**{**asdict(cfg), "dtype": "bf16"})
    predictor, pre = _model(cfg.model, dev)
    out: dict = {"config": asdict(cfg), "meta": _meta(dev), "sizes": [], "notes": []}
    if cfg.model == "builtin":
        out["notes"].append("model: built-in stand-in network (matched filter + a small "
                            "random-weight conv stack); not fastsac's trained detector")
    # warm-up: cuDNN autotune, numba JIT, thread pools
    from . import infer

    warm, _ = synthetic_image(512, seed=99)
    if predictor is None:
        from .detectors import ClassicalDetector

        out["notes"].append("model: fastsac's default (classical) detector; 'preprocess' is its "
                            "calibration pass (global noise statistics), counted in end to end")
        wd = (ClassicalDetector(device=dev).detect_tiled(warm, device=dev, tile=cfg.tile)
              if dev == "cuda" else ClassicalDetector().detect(warm))
    else:
        wd = infer.detect_tiled(warm, predictor, threshold=0.5, min_distance_px=3.0, halo=16,
                                device=dev, tile=cfg.tile,
                                dtype=cfg.dtype if dev == "cuda" else None)
    from .spatial import clusters, nearest_neighbors

    nearest_neighbors(wd.xy, backend="cuda" if dev == "cuda" else "auto")
    clusters(wd.xy, cutoff=10.0, backend="cuda" if dev == "cuda" else "auto")
    for size in cfg.sizes:
        log.info("benchmark %d² on %s", size, dev)
        try:
            out["sizes"].append(_bench_size(int(size), cfg, dev, predictor, pre))
            log.info("result %s", {k: v for k, v in out["sizes"][-1].items()
                                   if k != "detect_timings"})
        except Exception as exc:  # keep the other sizes' numbers (e.g. out of memory)
            log.exception("size %d failed", size)
            out["sizes"].append({"size": int(size), "error": f"{type(exc).__name__}: {exc}"})
            if dev == "cuda":
                torch.cuda.empty_cache()
    if cfg.baselines:
        out["baselines"] = _baselines(dev, cfg)
    if cfg.kernels:
        out["kernels"] = _kernel_comparison(dev)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _model(spec: str, dev: str):
    if spec == "builtin":
        return stand_in_model(dev)
    if spec in ("default", "classical"):
        return None, None   # handled by _bench_classical
    raise ValueError(f"model must be 'default', 'classical' or 'builtin', got {spec!r}")


def format_table(result: dict) -> str:
    """Human-readable summary of :func:`run_bench` output."""
    lines = [f"device: {result['meta'].get('gpu', result['meta']['device'])}  "
             f"torch {result['meta']['torch']}  cpus {result['meta']['cpu_count']}"]
    head = f"{'size':>7} {'read':>9} {'prep':>9} {'infer':>9} {'peaks':>9} {'spatial':>9} " \
           f"{'e2e':>9}  {'atoms':>9} {'RSS MB':>8}"
    lines += ["throughput in Mpx/s", head]
    for r in result["sizes"]:
        if "error" in r:
            lines.append(f"{r['size']:>7} failed: {r['error']}")
            continue

        def f(k):
            v = r.get(f"{k}_mpx_s")
            return f"{v:9.1f}" if v is not None else f"{'-':>9}"
        if "end_to_end_streamed_s" in r:
            r = dict(r, end_to_end_streamed_mpx_s=_mpx(r["pixels"], r["end_to_end_streamed_s"]))
        lines.append(f"{r['size']:>7} {f('read')} {f('preprocess')} {f('inference')} "
                     f"{f('peaks')} {f('spatial')} {f('end_to_end')}  {r['n_detected']:>9} "
                     f"{r['peak_rss_mb']:8.0f}")
    for r in result["sizes"]:
        if "end_to_end_s" in r:
            lines.append(f"  {r['size']}²: e2e {r['end_to_end_s']:.2f} s "
                         f"(detect {r['detect_s']:.2f}, "
                         f"spatial {r['spatial_s']:.2f} [{r['spatial_backend']}], peaks "
                         f"[{r['peaks_backend']}]) tile {r['tile']} batch {r['batch_size']}"
                         + (f"; resident on the device (streamed: {r['end_to_end_streamed_s']:.2f} s)"
                            if "end_to_end_streamed_s" in r else ""))
    if "baselines" in result:
        lines.append("baselines")
        for k, v in result["baselines"].items():
            if "skipped" in v:
                lines.append(f"  {k:<40} skipped: {v['skipped']}")
            elif "mpx_s" in v:
                extra = f"  (8192² extrapolated: {v['extrapolated_8192_s']:.0f} s)" \
                    if "extrapolated_8192_s" in v else ""
                lines.append(f"  {k:<40} {v['mpx_s']:9.2f} Mpx/s on {v['size']}²{extra}")
            else:
                lines.append(f"  {k:<40} {v['s']:9.3f} s for {v['points']} points")
    if "kernels" in result:
        lines.append("kernels: CUDA vs host")
        kr = result["kernels"]
        if "skipped" in kr:
            lines.append(f"  skipped: {kr['skipped']}")
        else:
            for k, v in kr.items():
                sp = f"{v['speedup']:8.1f}x" if v.get("speedup") else "       -"
                sp2 = f"{v['speedup_host_io']:6.1f}x" if v.get("speedup_host_io") else "     -"
                hs = f"{v['host_s']:.4f}" if v.get("host_s") else "-"
                lines.append(f"  {k:<18} n={v['n']:<9} host[{v['host_backend']}] {hs:>8} s  "
                             f"cuda(resident) {v['cuda_s']:.4f} s {sp}   cuda(numpy io) "
                             f"{v['cuda_host_io_s']:.4f} s {sp2}")
    for n in result.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
