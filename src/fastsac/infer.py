"""Tiled, streamed inference of a score-map network over images of any size.

The image is cut into a grid of non-overlapping *cores*; each core is read with
a *halo* of context around it (clipped at the image edges), the predictor runs
on the window, and only the core of the result is kept. Every output pixel is
owned by exactly one core, so there is no blending.

Assumption (stated, and checked where it can be): the value of the predictor
at a pixel depends only on input pixels within ``halo`` of it (Chebyshev
distance), i.e. ``halo`` ≥ the network's receptive-field radius. Then the
tiled result equals whole-image inference up to floating-point
non-associativity of the convolution algorithms (≤ 1e-4 in float32 in our
tests). Windows are never padded beyond the image: a window touching the image
edge ends exactly there, so a network's own padding behaves as it does on the
whole image. Networks without padding (valid convolutions, like the
published SAC-CNN) must be wrapped so they return a map of the input size
(:class:`PadToSame`).

Sources are read lazily, one window at a time: numpy arrays and memmaps,
Zarr arrays, ``tifffile.imread(path, aszarr=True)`` stores, or a path to a
(Big)TIFF / ``.npy`` file. Peak memory is a few windows, independent of the
image size (the output is an array of the image size unless ``out`` is a
memmap or Zarr array).

:func:`detect_tiled` runs the whole detection (preprocess → network → local
maxima → sub-pixel refinement) per window, keeps only candidates whose integer
maximum lies in the window's core, and finishes with one non-maximum
suppression over the candidate table. The result equals
:func:`fastsac.detectors.postprocess_scores` on the whole image exactly (same
points, same order) when the halo covers the preprocessing, the network and
the refinement windows (:func:`required_halo`).

Why NMS runs once over the candidate table and not per window: greedy NMS is
order-dependent along chains of candidates closer than the radius
(A suppresses B, so B cannot suppress C, …); a per-window NMS is exact only
if every chain fits inside the halo, which no finite halo guarantees. The
candidate table is small (local maxima above the threshold), so a global,
cell-grid NMS over it costs little and is exact by construction.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ._backend import resolve_device
from ._validate import check_positive, per_axis

__all__ = ["predict_tiled", "detect_tiled", "TiledPrediction", "TiledDetections", "TilePlan",
           "plan_tiles", "open_source", "receptive_field", "required_halo", "PadToSame",
           "resolve_close_pairs"]

log = logging.getLogger(__name__)

# Fraction of free device memory / available RAM the engine plans to use.
_GPU_MEMORY_FRACTION = 0.4
_CPU_MEMORY_FRACTION = 0.25
# Cap on the CPU working set so an 8192² run stays well below 1.5 GB RSS.
_CPU_MEMORY_CAP = 384 * 2**20


# --------------------------------------------------------------------------- sources
class ArraySource:
    """Window reader over anything sliceable with a 2-D ``shape``: numpy arrays,
    memmaps, Zarr / h5py / dask arrays. Reads return float32 copies."""

    def __init__(self, array, name: str = "image"):
        shape = tuple(getattr(array, "shape", ()))
        if len(shape) == 3 and 1 in (shape[0], shape[-1]) and not isinstance(array, np.ndarray):
            raise ValueError(f"{name} must be 2-D, got shape {shape}; select one plane first")
        if len(shape) != 2:
            raise ValueError(f"{name} must be a 2-D array, got shape {shape}; "
                             "pass a single grayscale frame")
        if shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"{name} is empty (shape {shape})")
        dtype = np.dtype(getattr(array, "dtype", np.float32))
        if dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got dtype {dtype}")
        self.array = array
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.array(self.array[y0:y1, x0:x1], dtype=np.float32, copy=True)

    def read_padded(self, y0: int, y1: int, x0: int, x1: int, mode: str | None) -> np.ndarray:
        """Like :meth:`read`, for windows reaching outside the image: the missing
        part is filled by numpy padding ``mode`` ("replicate" = "edge")."""
        H, W = self.shape
        if y0 >= 0 and x0 >= 0 and y1 <= H and x1 <= W:
            return self.read(y0, y1, x0, x1)
        if mode is None:
            raise ValueError(f"window {(y0, y1, x0, x1)} leaves the {H}×{W} image")
        iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, H), max(x0, 0), min(x1, W)
        inner = self.read(iy0, iy1, ix0, ix1)
        np_mode = {"replicate": "edge", "constant": "constant", "reflect": "reflect"}[mode]
        return np.pad(inner, ((iy0 - y0, y1 - iy1), (ix0 - x0, x1 - ix1)), mode=np_mode)

    def read_into(self, dst: np.ndarray, y0: int, y1: int, x0: int, x1: int,
                  mode: str | None = None) -> None:
        """Read a window into ``dst`` (float32, the window's shape), casting on the fly."""
        H, W = self.shape
        if (y0 >= 0 and x0 >= 0 and y1 <= H and x1 <= W and isinstance(self.array, np.ndarray)
                and type(self).read is ArraySource.read):
            src = self.array[y0:y1, x0:x1]
            if dst.dtype == np.int16 and src.dtype == np.uint16:  # 16-bit staging: copy bits
                dst = dst.view(np.uint16)
            np.copyto(dst, src, casting="unsafe")
        else:
            dst[...] = self.read_padded(y0, y1, x0, x1, mode)

    def close(self) -> None:
        close = getattr(self.array, "close", None)
        if callable(close) and not isinstance(self.array, np.ndarray):
            close()


def open_source(image, *, name: str = "image") -> ArraySource:
    """A lazy window reader for ``image``.

    Parameters
    ----------
    image : array-like, path or store
        A 2-D numpy array or memmap; a Zarr (or any sliceable) array; the store
        returned by ``tifffile.imread(path, aszarr=True)``; or a path to a
        TIFF/BigTIFF (read tile by tile through Zarr when it is installed,
        else memory-mapped when the file is uncompressed and contiguous) or a
        ``.npy`` file (memory-mapped).
    """
    if isinstance(image, ArraySource):
        return image
    if isinstance(image, (str, os.PathLike)):
        return _open_path(Path(image))
    if type(image).__name__ == "ZarrTiffStore" or type(image).__module__.startswith("tifffile"):
        return ArraySource(_zarr_open(image), name)
    if isinstance(image, np.ndarray) or hasattr(image, "__getitem__") and hasattr(image, "shape"):
        if hasattr(image, "device") and getattr(image.device, "type", "cpu") != "cpu":
            raise TypeError(f"{name} lives on {image.device}; pass host data (the engine "
                            "moves tiles to the device itself)")
        return ArraySource(image, name)
    return ArraySource(np.asarray(image), name)


def _zarr_open(store):
    import zarr

    z = zarr.open(store, mode="r")
    if not hasattr(z, "shape"):  # a multiscale group: level 0 is full resolution
        z = z["0"]
    return z


def _open_path(path: Path) -> ArraySource:
    from .errors import FastsacInputError

    if not path.is_file():
        raise FastsacInputError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return ArraySource(np.load(path, mmap_mode="r"), path.name)
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            import zarr  # noqa: F401
            has_zarr = True
        except ImportError:
            has_zarr = False
        try:
            if has_zarr:
                return ArraySource(_zarr_open(tifffile.imread(path, aszarr=True)), path.name)
            try:
                return ArraySource(tifffile.memmap(path, mode="r"), path.name)
            except ValueError:  # compressed or tiled: no memmap, read it whole
                log.warning("%s: zarr is not installed and the TIFF cannot be memory-mapped; "
                            "reading it whole", path)
                return ArraySource(tifffile.imread(path), path.name)
        except Exception as exc:
            raise FastsacInputError(path, f"cannot be read as TIFF ({type(exc).__name__}: {exc})") \
                from exc
    from .io import read

    return ArraySource(read(path).data, path.name)


# --------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class TilePlan:
    """Core grid and fixed-size read windows.

    ``cores[i] = (y0, y1, x0, x1)`` partition the image; ``windows[i]`` is the
    read window of core ``i`` in image coordinates (size ``window``; shifted to
    stay inside the image — or its virtual padding when ``pad_mode`` is set —
    so all windows have one shape and can be batched).
    """

    shape: tuple[int, int]
    tile: tuple[int, int]
    halo: int
    window: tuple[int, int]
    cores: np.ndarray
    windows: np.ndarray
    pad_mode: str | None = None

    def __len__(self) -> int:
        return len(self.cores)


def plan_tiles(shape, *, tile, halo: int, pad_mode: str | None = None,
               align: int = 1) -> TilePlan:
    """Cut an image of ``shape`` into cores of ``tile`` (last row/column may be
    smaller) each read with ``halo`` pixels of context.

    Parameters
    ----------
    pad_mode : None or {"reflect", "replicate", "constant"}
        None: windows stay inside the image (a window at the edge ends there).
        Otherwise the image is virtually extended by ``halo`` on every side
        (plus up to ``align - 1`` on the bottom/right) with that numpy/torch
        padding mode, and windows are read from the extension: the tiled
        result then equals the predictor applied to the padded whole image.
    align : int
        Window origins (in the padded frame) and sizes are multiples of it, so
        networks that downsample by ``align`` see the whole-image pooling grid.
    """
    H, W = (int(s) for s in shape)
    th, tw = (int(t) for t in per_axis(tile, 2, name="tile"))
    if th < 1 or tw < 1:
        raise ValueError(f"tile must be ≥ 1 pixel per axis, got {tile!r}")
    halo, align = int(halo), int(align)
    if halo < 0:
        raise ValueError(f"halo must be ≥ 0 pixels, got {halo}")
    if align < 1:
        raise ValueError(f"align must be ≥ 1, got {align}")
    p = halo if pad_mode is not None else 0
    if pad_mode is None and align > 1 and (H % align or W % align):
        raise ValueError(f"the predictor needs sides that are multiples of {align} but the "
                         f"image is {H}×{W}; pass pad_mode='reflect' (or crop the image)")
    He = H + 2 * p + ((-(H + 2 * p)) % align if pad_mode is not None else 0)
    We = W + 2 * p + ((-(W + 2 * p)) % align if pad_mode is not None else 0)
    th, tw = min(th, H), min(tw, W)
    slack = align - 1
    wh = min(-(-(th + 2 * halo + slack) // align) * align, He)
    ww = min(-(-(tw + 2 * halo + slack) // align) * align, We)
    cores, wins = [], []
    for y0 in range(0, H, th):
        y1 = min(y0 + th, H)
        ey0 = min(max(y0 + p - halo, 0) // align * align, He - wh)
        for x0 in range(0, W, tw):
            x1 = min(x0 + tw, W)
            ex0 = min(max(x0 + p - halo, 0) // align * align, We - ww)
            cores.append((y0, y1, x0, x1))
            wins.append((ey0 - p, ey0 - p + wh, ex0 - p, ex0 - p + ww))
    return TilePlan((H, W), (th, tw), halo, (wh, ww), np.asarray(cores, np.int64),
                    np.asarray(wins, np.int64), pad_mode)


# --------------------------------------------------------------------------- predictor helpers
class PadToSame:
    """Wrap a valid-convolution network (output smaller than input by
    ``2 * pad``) so it returns a map of the input size: the input is padded by
    ``pad`` with ``mode`` first. Its receptive-field radius is ``pad`` (for the
    published SAC-CNN, half its input window)."""

    def __init__(self, net, pad: int, mode: str = "reflect"):
        self.net, self.pad, self.mode = net, int(pad), mode
        self.receptive_field = int(pad)

    def __call__(self, x):
        import torch.nn.functional as F

        return self.net(F.pad(x, (self.pad,) * 4, mode=self.mode))

    def to(self, *args, **kwargs):
        self.net = self.net.to(*args, **kwargs)
        return self

    def __getattr__(self, name):  # eval(), parameters(), training … of the wrapped net
        if name == "net":
            raise AttributeError(name)
        return getattr(self.net, name)


def _torch():
    import torch

    return torch


def _resolve_dtype(dtype):
    torch = _torch()
    if dtype is None or dtype in ("fp32", "float32", torch.float32):
        return None
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, torch.bfloat16: torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16, torch.float16: torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be None/'fp32', 'bf16' or 'fp16', got {dtype!r}")
    return table[dtype]


def _param_device(predictor):
    params = getattr(predictor, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return None


def _declared_rf(predictor) -> int | None:
    """The receptive-field radius a predictor declares: ``receptive_field`` or
    (fastsac's U-Net convention) an integer ``halo`` attribute."""
    for name in ("receptive_field", "halo"):
        v = getattr(predictor, name, None)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return int(v)
    return None


def receptive_field(predictor, *, device="cpu", size: int = 129, seed: int = 0) -> int:
    """Measured receptive-field radius (pixels, Chebyshev) of ``predictor``.

    Uses the predictor's ``receptive_field`` (or integer ``halo``) attribute when it has one;
    otherwise perturbs the centre pixel of a random ``size``² image and
    returns the largest distance at which the output changed (a lower bound
    of the true radius; exact for generic weights). If the response reaches
    the probe's edge, the radius is at least ``size // 2``; a larger probe is
    tried once.
    """
    rf = _declared_rf(predictor)
    if rf is not None:
        return rf
    torch = _torch()
    dev = torch.device(device)
    m = int(getattr(predictor, "pad_multiple", 1) or 1)
    for probe in (int(size), 4 * int(size) + 1):
        probe = -(-probe // m) * m + (1 if m == 1 else 0)  # odd, or the network's multiple
        g = torch.Generator().manual_seed(seed)
        x = torch.rand((1, 1, probe, probe), generator=g)
        x2 = x.clone()
        c = probe // 2
        x2[0, 0, c, c] += 1.0
        with torch.inference_mode():
            y = predictor(torch.cat([x, x2]).to(dev)).float().cpu()
        d = (y[0] - y[1]).abs().amax(dim=0)
        scale = float(y.abs().max()) or 1.0
        ys, xs = torch.nonzero(d > 1e-6 * scale, as_tuple=True)
        if len(ys) == 0:
            return 0
        r = int(max((ys - c).abs().max(), (xs - c).abs().max()))
        if r < c:
            return r
    return r


def required_halo(*, receptive_field: int = 0, preprocess_radius: int = 0,
                  refine_radius: int = 0) -> int:
    """Halo for :func:`detect_tiled` to equal whole-image detection exactly:
    network + preprocessing context for the score map, +1 for the 3×3 local
    maximum test, and the raw-image reach of the refinement windows."""
    return int(max(receptive_field + preprocess_radius + 1, refine_radius))


# --------------------------------------------------------------------------- auto sizing
def _bytes_per_pixel(predictor, device) -> float:
    """Activation bytes per input pixel, measured by forward hooks on a small
    probe (the largest module output, ×3 for input/output/workspace)."""
    torch = _torch()
    sizes: list[int] = []
    hooks = []
    modules = getattr(predictor, "modules", None)
    if callable(modules):
        for m in modules():
            if not list(m.children()):
                hooks.append(m.register_forward_hook(
                    lambda _m, _i, o: sizes.append(o.numel() if hasattr(o, "numel") else 0)))
    try:
        with torch.inference_mode():
            out = predictor(torch.zeros((1, 1, 64, 64), device=device))
        sizes.append(out.numel())
    finally:
        for h in hooks:
            h.remove()
    per_px = max(sizes) / (64 * 64) if sizes else 64
    return 4.0 * (3 * per_px + 4)


def _auto_tile(shape, halo, predictor, device, tile, batch_size):
    """Choose (tile, batch) from free memory; see module docstring."""
    torch = _torch()
    H, W = shape
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = _GPU_MEMORY_FRACTION * free
    else:
        try:
            import psutil

            avail = psutil.virtual_memory().available
        except ImportError:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        budget = min(_CPU_MEMORY_FRACTION * avail, _CPU_MEMORY_CAP)
    bpp = _bytes_per_pixel(predictor, device) if (tile is None or batch_size is None) else 0
    if tile is None:
        # Largest window per item that keeps ≥ 4 items of the budget (GPU) or 1 (CPU);
        # halo overhead argues for big windows, latency and memory for small ones.
        items = 4 if device.type == "cuda" else 1
        side = int(math.sqrt(max(budget / items / bpp, 1)))
        cap = 2048 if device.type == "cuda" else 1024
        side = max(min(side, cap), 2 * halo + 64)
        core = max(side - 2 * halo, 32)
        core = (core // 32) * 32 or core
        tile = (min(core, H), min(core, W))
    th, tw = per_axis(tile, 2, name="tile")
    if batch_size is None:
        win_px = min(th + 2 * halo, H) * min(tw + 2 * halo, W)
        batch_size = int(max(1, min(64, budget // max(win_px * bpp, 1))))
        # Host staging buffers hold batch × window pixels each (several in flight):
        # ≤ 16 Mpx per batch keeps them small; big batches add nothing once the
        # GPU is busy.
        batch_size = max(1, min(batch_size, (16 * 2**20) // max(win_px, 1)))
        if device.type == "cpu":
            batch_size = min(batch_size, 2)
    return (int(th), int(tw)), int(batch_size)


# --------------------------------------------------------------------------- engine
@dataclass(frozen=True)
class TiledPrediction:
    """Score map stitched from tile cores.

    Attributes
    ----------
    scores : (H, W) or (C, H, W) float32 array-like
        The predictor output (2-D when it has one channel); ``out`` when given.
    plan : TilePlan
    batch_size : int
    device : str
    dtype : str
        Autocast dtype used ("float32" when none).
    timings : dict
        Seconds: ``read`` (summed in the reader thread, overlapped),
        ``compute`` (main thread: transfers + network), ``total``.
    """

    scores: Any
    plan: TilePlan
    batch_size: int
    device: str
    dtype: str
    timings: dict = field(default_factory=dict)


_POOL_LOCK = threading.Lock()
_POOL: dict = {}


#: Tests set this to exercise 16-bit staging without a GPU.
_U16_STAGING_ON_CPU = False


def _host_buffers(shape, n, pin, dtype=None):
    """``n`` staging buffers (float32 unless ``dtype``) of ``shape``, pinned on CUDA. Pinned
    allocations are slow (page locking): the engine hands its set back when it
    finishes (:func:`_return_buffers`) and the next engine of the same shape
    takes it (exclusively, so concurrent engines never share buffers)."""
    torch = _torch()
    dtype = dtype or torch.float32
    key = (tuple(shape), bool(pin), dtype)
    with _POOL_LOCK:
        bufs = _POOL.pop(key, []) if pin else []
    if len(bufs) < n:
        bufs = bufs + [torch.empty(shape, dtype=dtype, pin_memory=pin)
                       for _ in range(n - len(bufs))]
    return bufs


def _return_buffers(shape, bufs, pin, dtype=None):
    if pin:
        with _POOL_LOCK:
            _POOL.clear()  # keep one set: pinned host memory is a scarce resource
            _POOL[(tuple(shape), True, dtype or _torch().float32)] = bufs


@dataclass
class _Batch:
    index: int
    tiles: np.ndarray          # indices into the plan
    buf: int                   # index of the host buffer holding it
    raw_buf: int = -1          # host buffer of the raw windows (detect_tiled)
    copied: Any = None         # CUDA event recorded after the host-to-device copies


class _Engine:
    """Reader thread + pinned buffer ring + async device pipeline, shared by
    :func:`predict_tiled` and :func:`detect_tiled`."""

    def __init__(self, source, predictor, *, plan, batch_size, device, dtype, preprocess,
                 keep_raw, compile, channels_last, prefetch, progress, workers=None):
        torch = _torch()
        self.torch = torch
        self.src, self.plan, self.B = source, plan, batch_size
        self.device, self.amp_dtype = device, dtype
        self.preprocess, self.keep_raw = preprocess, keep_raw
        self.cuda = device.type == "cuda"
        wh, ww = plan.window
        if workers is None:
            # Windows are copied (and cast) by numpy, which releases the GIL: several
            # readers keep a GPU fed; on CPU the network wants the cores.
            workers = min(8, max(1, (os.cpu_count() or 2) // 2)) if device.type == "cuda" else 1
        n_batches = -(-len(plan) // batch_size)
        self.workers = max(1, min(int(workers), n_batches))
        self._lock = threading.Lock()
        nbuf = min(max(int(prefetch), 1) + 1 + self.workers, n_batches + 1)
        pin = self.cuda
        shape = (batch_size, 1, wh, ww)
        # Without preprocessing the network input *is* the raw window: one buffer.
        self.separate_raw = keep_raw and preprocess is not None
        # 16-bit integer frames cross PCIe as 16 bits (half the bytes of float32) and
        # are widened on the device; their bits ride in int16 buffers (torch's uint16
        # support is partial) and are masked back to 0…65535 after the upload.
        self.u16 = ((self.cuda or _U16_STAGING_ON_CPU) and preprocess is None and plan.pad_mode is None
                    and isinstance(getattr(source, "array", None), np.ndarray)
                    and type(source).read is ArraySource.read
                    and np.dtype(source.array.dtype) in (np.dtype(np.uint16), np.dtype(np.int16)))
        self.u16_signed = self.u16 and np.dtype(source.array.dtype) == np.dtype(np.int16)
        buf_dtype = torch.int16 if self.u16 else torch.float32
        pool = _host_buffers(shape, 2 * nbuf if self.separate_raw else nbuf, pin, buf_dtype)
        self._pool = (shape, pool, pin, buf_dtype)
        self.bufs = pool[:nbuf]
        self.raw_bufs = pool[nbuf:]
        self.free: queue.Queue = queue.Queue()
        for i in range(nbuf):
            self.free.put(i)
        self.ready: queue.Queue = queue.Queue(maxsize=max(int(prefetch), 1) + self.workers)
        self.read_time = 0.0
        self.pre_time = 0.0
        self._stop = threading.Event()
        self.compile = compile
        self.progress = progress
        if hasattr(predictor, "to") and callable(predictor.to):
            pd = _param_device(predictor)
            if pd is None or pd != device:
                predictor = predictor.to(device)
            if channels_last and self.cuda:
                predictor = predictor.to(memory_format=torch.channels_last)
        if getattr(predictor, "training", False):
            log.warning("predictor is in training mode; call .eval() for deterministic, "
                        "tile-independent results (batch norm, dropout)")
        if self.cuda:
            # Every batch has the same shape: let cuDNN pick the fastest kernels once.
            torch.backends.cudnn.benchmark = True
        if compile:
            predictor = torch.compile(predictor, dynamic=False)
        self.predictor = predictor
        self.channels_last = channels_last and self.cuda

    # -- reader threads
    def _reader(self, worker: int):
        try:
            wins = self.plan.windows
            n = len(wins)
            for bi, start in enumerate(range(0, n, self.B)):
                if bi % self.workers != worker:
                    continue
                idx = np.arange(start, min(start + self.B, n))
                while True:
                    try:
                        buf = self.free.get(timeout=0.1)
                        break
                    except queue.Empty:
                        if self._stop.is_set():
                            return
                t_read = t_pre = 0.0
                for j, t in enumerate(idx):
                    y0, y1, x0, x1 = wins[t]
                    t0 = time.perf_counter()
                    if self.preprocess is None:  # read straight into the staging buffer
                        self.src.read_into(self.bufs[buf][j, 0].numpy(), y0, y1, x0, x1,
                                           self.plan.pad_mode)
                        t_read += time.perf_counter() - t0
                        continue
                    raw = self.src.read_padded(y0, y1, x0, x1, self.plan.pad_mode)
                    t1 = time.perf_counter()
                    t_read += t1 - t0
                    x = raw
                    if self.preprocess is not None:
                        x = np.asarray(self.preprocess(raw), dtype=np.float32)
                        if x.shape != raw.shape:
                            raise ValueError(f"preprocess must keep the window shape {raw.shape}, "
                                             f"returned {x.shape}")
                        t_pre += time.perf_counter() - t1
                    self.bufs[buf][j, 0].numpy()[...] = x
                    if self.separate_raw:
                        self.raw_bufs[buf][j, 0].numpy()[...] = raw
                if self.compile and len(idx) < self.B:  # constant shapes: no recompiles
                    self.bufs[buf][len(idx):].zero_()
                with self._lock:
                    self.read_time += t_read
                    self.pre_time += t_pre
                self._put(_Batch(bi, idx, buf, buf))
            self._put(None)
        except BaseException as exc:  # surface reader errors in the main thread
            self._put(exc)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def batches(self) -> Iterator[_Batch]:
        threads = [threading.Thread(target=self._reader, args=(k,), daemon=True,
                                    name=f"fastsac-tile-reader-{k}")
                   for k in range(self.workers)]
        for th in threads:
            th.start()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.plan), unit="tile", desc="tiles")
        done = 0
        try:
            while done < self.workers:
                item = self.ready.get()
                if item is None:
                    done += 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
                if bar is not None:
                    bar.update(len(item.tiles))
        finally:
            self._stop.set()
            for th in threads:
                th.join()
            if bar is not None:
                bar.close()
            if self.cuda:  # every H2D copy from these buffers was issued; wait for them
                self.torch.cuda.current_stream(self.device).synchronize()
            _return_buffers(*self._pool)

    def release(self, batch: _Batch):
        if batch.copied is not None:  # the H2D copies out of this buffer must be done
            batch.copied.synchronize()
        self.free.put(batch.buf)

    def forward(self, batch: _Batch):
        """Upload one batch and run the network; returns (scores (B,C,h,w) float32
        on the device, raw windows on the device or None)."""
        torch = self.torch
        n = len(batch.tiles) if not self.compile else self.B
        xh = self.bufs[batch.buf][:n]
        x = xh.to(self.device, non_blocking=True)
        if self.u16:
            x = x.float() if self.u16_signed else (x.to(torch.int32) & 0xFFFF).float()
        raw = None
        if self.separate_raw:
            raw = self.raw_bufs[batch.buf][:n].to(self.device, non_blocking=True)
        elif self.keep_raw:
            raw = x
        if self.cuda:
            batch.copied = torch.cuda.Event()
            batch.copied.record()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                y = self.predictor(x)
        else:
            y = self.predictor(x)
        if y.ndim != 4 or y.shape[0] != n or y.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"predictor must map (B, 1, h, w) to (B, C, h, w) of the same size; got "
                f"{tuple(x.shape)} -> {tuple(y.shape)}. Wrap valid-convolution networks in "
                "fastsac.infer.PadToSame")
        y = y[: len(batch.tiles)].float().contiguous()
        if raw is not None:
            raw = raw[: len(batch.tiles), 0]
        return y, raw


def _validate_common(plan_shape, tile, halo, batch_size):
    if halo is None:
        raise TypeError("halo is required: the receptive-field radius of the predictor "
                        "(pass halo='auto' to measure it)")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")


def prepare_tiles(image, predictor, *, tile, halo, device, batch_size, dtype, extra_halo=0,
             check_halo=True, pad_mode=None, align=None):
    torch = _torch()
    src = open_source(image)
    dev = resolve_device(device)
    amp = _resolve_dtype(dtype)
    _validate_common(src.shape, tile, halo, batch_size)
    pd = _param_device(predictor)
    probe_dev = pd if pd is not None else dev
    if halo == "auto":
        halo = receptive_field(predictor, device=probe_dev) + int(extra_halo)
    else:
        halo = int(halo)
        if halo < 0:
            raise ValueError(f"halo must be ≥ 0 pixels, got {halo}")
        declared = _declared_rf(predictor)
        if declared is not None and halo < int(declared) + int(extra_halo):
            raise ValueError(f"halo={halo} is smaller than the predictor's receptive field "
                             f"({int(declared)} px) + {int(extra_halo)} px of post-processing "
                             "context; tiles would differ from whole-image inference. "
                             f"Use halo ≥ {int(declared) + int(extra_halo)}")
        if declared is None and check_halo:
            rf = receptive_field(predictor, device=probe_dev,
                                 size=max(2 * halo + 3, 17) + 2 * 8)
            if rf > halo:
                raise ValueError(f"halo={halo} is smaller than the measured receptive field of "
                                 f"the predictor ({rf} px); use halo ≥ {rf + int(extra_halo)}")
    del torch
    tile_hw, bs = _auto_tile(src.shape, halo, predictor, probe_dev, tile, batch_size)
    if align is None:
        align = int(getattr(predictor, "pad_multiple", 1) or 1)
    if pad_mode not in (None, "reflect", "replicate", "constant"):
        raise ValueError(f"pad_mode must be None, 'reflect', 'replicate' or 'constant', "
                         f"got {pad_mode!r}")
    plan = plan_tiles(src.shape, tile=tile_hw, halo=halo, pad_mode=pad_mode, align=align)
    if batch_size is None:
        bs = min(bs, len(plan))
    return src, dev, amp, plan, bs


def predict_tiled(image, predictor: Callable, *, tile=None, halo, device: str = "auto",
                  batch_size: int | None = None, dtype=None, out=None, compile: bool = False,
                  channels_last: bool = True, prefetch: int = 2, check_halo: bool = True,
                  workers: int | None = None, pad_mode: str | None = None,
                  align: int | None = None, progress: bool = False) -> TiledPrediction:
    """Apply ``predictor`` to ``image`` tile by tile; exact, no blending.

    Parameters
    ----------
    image : (H, W) array-like or path
        Anything :func:`open_source` accepts (numpy array/memmap, Zarr array,
        tifffile Zarr store, TIFF/BigTIFF/.npy path); read window by window.
    predictor : callable or torch.nn.Module
        Maps a (B, 1, h, w) float32 tensor to (B, C, h, w) scores of the same
        size. Modules are moved to ``device`` (and to channels-last on CUDA);
        put them in eval mode. A ``receptive_field`` attribute (radius, px) is
        honoured and checked against ``halo``.
    tile : int or (int, int), optional
        Core size (pixels owned by one window). Default: chosen from free GPU
        memory (``torch.cuda.mem_get_info``) or available RAM.
    halo : int or "auto"
        Context read around each core, pixels; must be ≥ the receptive-field
        radius. ``"auto"`` measures it (:func:`receptive_field`).
    device : {"auto", "cpu", "cuda"}
    batch_size : int, optional
        Windows per forward pass (default from memory).
    dtype : None, "bf16" or "fp16"
        Autocast dtype for the network (outputs are float32).
    out : array-like, optional
        (H, W) or (C, H, W) destination (e.g. a memmap or Zarr array) written
        core by core.
    compile : bool
        ``torch.compile`` the predictor (batches are padded to one shape).
    channels_last : bool
        Use channels-last memory format on CUDA.
    prefetch : int
        Batches read ahead by the reader threads.
    workers : int, optional
        Reader threads (default: 1 on CPU, up to 8 on CUDA).
    pad_mode : None or {"reflect", "replicate", "constant"}
        None: windows end at the image edges (the network's own padding acts
        there, as on the whole image). Otherwise the image is virtually padded
        by ``halo`` (see :func:`plan_tiles`) and the result equals
        ``predictor(pad(image))`` cropped back to the image.
    align : int, optional
        Window alignment for downsampling networks (default: the predictor's
        ``pad_multiple`` attribute, else 1).
    check_halo : bool
        Probe the predictor's receptive field once and raise if it exceeds
        ``halo`` (skipped when the predictor declares ``receptive_field``).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    TiledPrediction

    Raises
    ------
    ValueError
        If ``halo`` is smaller than the declared or measured receptive field,
        or the predictor changes the spatial size.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Conv2d(1, 1, 5, padding=2)
    >>> img = np.random.default_rng(0).random((300, 200), dtype=np.float32)
    >>> res = predict_tiled(img, net, tile=64, halo=2, device="cpu")
    >>> res.scores.shape
    (300, 200)
    """
    torch = _torch()
    t_start = time.perf_counter()
    src, dev, amp, plan, bs = prepare_tiles(image, predictor, tile=tile, halo=halo, device=device,
                                       batch_size=batch_size, dtype=dtype, check_halo=check_halo,
                                       pad_mode=pad_mode, align=align)
    eng = _Engine(src, predictor, plan=plan, batch_size=bs, device=dev, dtype=amp, preprocess=None,
                  keep_raw=False, compile=compile, channels_last=channels_last, prefetch=prefetch,
                  progress=progress, workers=workers)
    H, W = src.shape
    result = out
    squeeze = None
    t_compute = 0.0
    pending = None
    out_bufs: list = []

    def finish(p):
        nonlocal result, squeeze
        ev, yh, b = p
        if ev is not None:
            ev.synchronize()
        arr = yh.numpy()
        C = arr.shape[1]
        if result is None:
            squeeze = C == 1
            result = np.empty((H, W) if squeeze else (C, H, W), np.float32)
        elif squeeze is None:
            squeeze = len(result.shape) == 2
            want = (H, W) if squeeze else (C, H, W)
            if tuple(result.shape) != want or (squeeze and C != 1):
                raise ValueError(f"out must have shape {(C, H, W)} (or {(H, W)} for one "
                                 f"channel), got {tuple(result.shape)}")
        for j, t in enumerate(b.tiles):
            y0, y1, x0, x1 = plan.cores[t]
            block = arr[j, :, : y1 - y0, : x1 - x0]
            if squeeze:
                result[y0:y1, x0:x1] = block[0]
            else:
                result[:, y0:y1, x0:x1] = block

    th, tw = plan.tile
    with torch.inference_mode():
        for k, b in enumerate(eng.batches()):
            t0 = time.perf_counter()
            y, _ = eng.forward(b)
            n, C = y.shape[:2]
            # Copy only the cores back; alternate two pinned host buffers.
            if len(out_bufs) < 2 or out_bufs[0].shape[1] != C:
                out_bufs = [torch.empty((bs, C, th, tw), dtype=torch.float32,
                                        pin_memory=eng.cuda) for _ in range(2)]
            yh = out_bufs[k % 2]
            for j, t in enumerate(b.tiles):
                y0, y1, x0, x1 = plan.cores[t]
                wy0, _, wx0, _ = plan.windows[t]
                yh[j, :, : y1 - y0, : x1 - x0].copy_(
                    y[j, :, y0 - wy0: y1 - wy0, x0 - wx0: x1 - wx0], non_blocking=eng.cuda)
            ev = None
            if eng.cuda:
                ev = torch.cuda.Event()
                ev.record()
            if pending is not None:
                finish(pending)
                eng.release(pending[2])
            pending = (ev, yh, b)
            t_compute += time.perf_counter() - t0
        if pending is not None:
            t0 = time.perf_counter()
            finish(pending)
            eng.release(pending[2])
            t_compute += time.perf_counter() - t0
    src.close()
    timings = {"read": eng.read_time, "compute": t_compute,
               "total": time.perf_counter() - t_start}
    return TiledPrediction(result, plan, bs, str(dev), str(amp or torch.float32).replace(
        "torch.", ""), timings)


# --------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class TiledDetections:
    """Detections of :func:`detect_tiled`, same fields and order as
    :func:`fastsac.detectors.postprocess_scores` (a dict there; the fit columns
    after ``residual`` are the rest of :data:`fastsac.peaks.FIT_COLUMNS`).

    ``n_candidates`` is the size of the candidate table before NMS.
    """

    xy: np.ndarray
    score: np.ndarray
    amplitude: np.ndarray
    sigma_px: np.ndarray
    background: np.ndarray
    intensity: np.ndarray
    residual: np.ndarray
    x_err_px: np.ndarray
    y_err_px: np.ndarray
    amplitude_err: np.ndarray
    sigma_err_px: np.ndarray
    background_err: np.ndarray
    intensity_err: np.ndarray
    fit_status: np.ndarray
    n_candidates: int
    plan: TilePlan
    device: str
    peaks_backend: str
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    #: Close-pair stage (:mod:`fastsac.close_pairs`) output, or None when it did not run.
    split_probability: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.xy)

    def as_dict(self) -> dict:
        from .peaks import FIT_COLUMNS

        return {k: getattr(self, k) for k in ("xy", "score", *FIT_COLUMNS, "split_probability")}


def resolve_close_pairs(res: TiledDetections, image, pairs: dict | None) -> TiledDetections:
    """The close-pair stage of :func:`fastsac.detect.postprocess_scores` on a
    finished tiled result: it reads its small windows from ``image`` (the whole
    source) after the global NMS, so it is exact whatever the tiling."""
    if pairs is None:
        return res
    from . import close_pairs

    t0 = time.perf_counter()
    out = close_pairs.apply_pair_decisions(
        res, close_pairs.resolve_pairs(image, res.xy, score=res.score, **pairs))
    dt = time.perf_counter() - t0
    return replace(out, timings=out.timings | {"pairs": dt,
                                               "total": out.timings.get("total", 0.0) + dt},
                   params=out.params | {"pairs": dict(pairs)})


def _refine_host(raw, xy0, *, min_distance_px, refine, fit_radius_px, sigma_px, backend):
    """The refinement half of fastsac.detectors.postprocess_scores, per point and
    window-local (so it can run on candidates before NMS)."""
    from . import peaks

    return peaks.refine_positions(raw, xy0, min_distance_px=min_distance_px, refine=refine,
                                  fit_radius_px=fit_radius_px, sigma_px=sigma_px,
                                  backend=backend)


def _inside(plan, t):
    """The image part of window ``t``, in window coordinates."""
    H, W = plan.shape
    wy0, wy1, wx0, wx1 = plan.windows[t]
    return max(-wy0, 0), min(H, wy1) - wy0, max(-wx0, 0), min(W, wx1) - wx0


def _core_mask_limits(plan, t, exclude_border):
    """Core of tile ``t`` in window coordinates, shrunk by the image-edge exclusion."""
    H, W = plan.shape
    y0, y1, x0, x1 = plan.cores[t]
    wy0, _, wx0, _ = plan.windows[t]
    b = int(exclude_border)
    y0, y1 = max(y0, b), min(y1, H - b)
    x0, x1 = max(x0, b), min(x1, W - b)
    return y0 - wy0, y1 - wy0, x0 - wx0, x1 - wx0


def detect_tiled(source, predictor: Callable, *, preprocess: Callable | None = None,
                 threshold: float, min_distance_px: float, refine: str = "gaussian",
                 fit_radius_px: int = 4, sigma_px: float = 1.5, exclude_border_px: int = 0,
                 channel: int = 0, tile=None, halo="auto", device: str = "auto",
                 batch_size: int | None = None, dtype=None, peaks_backend: str = "auto",
                 compile: bool = False, prefetch: int = 2, workers: int | None = None,
                 pad_mode: str | None = None, align: int | None = None,
                 progress: bool = False, pairs: dict | None = None) -> TiledDetections:
    """Streamed detection: per window preprocess → network → local maxima →
    sub-pixel refinement, keep candidates owned by the core, then one NMS.

    Parameters
    ----------
    source : (H, W) array-like or path
        Raw image (anything :func:`open_source` accepts).
    predictor : callable
        As in :func:`predict_tiled`; channel ``channel`` of its output is the score map.
    preprocess : callable, optional
        ``f(raw_window) -> window`` (numpy float32, same shape), run in the
        reader thread; it must be local (its radius counts into ``halo``).
    threshold, min_distance_px, refine, fit_radius_px, sigma_px, exclude_border_px
        As :func:`fastsac.detectors.postprocess_scores`.
    halo : int or "auto"
        Must be ≥ :func:`required_halo` (network + preprocessing radius + 1,
        and the refinement reach ``2·com_radius + fit_radius_px + 2``).
        ``"auto"``: measured receptive field of the predictor (preprocessing
        included when it is a plain numpy function it is *not* measured: pass
        an int then) + 1, at least the refinement reach.
    pad_mode, align
        As :func:`predict_tiled`. With padding, the score map outside the
        image is ignored and the refinement sees the image only (padded raw
        pixels are NaN, which the refinement skips), as on the whole image.
    peaks_backend : str
        Backend of the peak kernels: on CUDA devices ``"auto"`` runs maxima
        (max-pooling) and refinement (numba CUDA) on the GPU so only peak
        tables leave it; ``"cpp"``/``"numpy"``… force host post-processing.
    pairs : dict, optional
        As :func:`fastsac.detect.postprocess_scores`: close-pair decisions
        after the NMS, on windows read from the source (no halo needed).

    Returns
    -------
    TiledDetections
        Equal to ``postprocess_scores(score_map, raw, ...)`` on the whole image
        (same points, same order) under the halo assumption.
    """
    from ._backend import Backend
    from ._validate import resolve_option

    from .peaks import com_radius, refine_reach

    torch = _torch()
    t_start = time.perf_counter()
    check_positive(min_distance_px, name="min_distance_px", allow_zero=True)
    if refine not in ("gaussian", "com", "none"):
        raise ValueError(f"refine must be 'gaussian', 'com' or 'none', got {refine!r}")
    com_r = com_radius(sigma_px)
    reach = refine_reach(sigma_px, fit_radius_px, refine)
    rf_extra = 1
    if halo == "auto":
        halo = max(receptive_field(predictor, device=_param_device(predictor) or "cpu") + 1, reach)
    elif int(halo) < reach:
        raise ValueError(f"halo={halo} is smaller than the refinement reach ({reach} px: "
                         f"2×{com_r} centre-of-mass + {fit_radius_px} fit radius + 2); "
                         f"use halo ≥ {reach}")
    src, dev, amp, plan, bs = prepare_tiles(source, predictor, tile=tile, halo=halo, device=device,
                                       batch_size=batch_size, dtype=dtype, extra_halo=rf_extra,
                                       check_halo=True, pad_mode=pad_mode, align=align)
    pb = resolve_option(peaks_backend, Backend, "peaks_backend")
    gpu_peaks = dev.type == "cuda" and pb in (Backend.AUTO, Backend.CUDA)
    if pb is Backend.CUDA and dev.type != "cuda":
        from ._backend import unavailable_reason
        why = unavailable_reason(Backend.CUDA)
        if why:
            raise RuntimeError(f"peaks_backend='cuda' requested but {why}")
    eng = _Engine(src, predictor, plan=plan, batch_size=bs, device=dev, dtype=amp,
                  preprocess=preprocess, keep_raw=refine != "none", compile=compile,
                  channels_last=True, prefetch=prefetch, progress=progress, workers=workers)
    peaks_step = _PeakCollector(plan, gpu=gpu_peaks, peaks_backend=pb, threshold=threshold,
                                min_distance_px=min_distance_px, refine=refine,
                                fit_radius_px=fit_radius_px, sigma_px=sigma_px,
                                exclude_border_px=exclude_border_px)
    t_net = 0.0
    with torch.inference_mode():
        for b in eng.batches():
            t0 = time.perf_counter()
            y, raw = eng.forward(b)
            if not 0 <= channel < y.shape[1]:
                raise ValueError(f"channel={channel} but the predictor returns "
                                 f"{y.shape[1]} channels")
            s = y[:, channel]
            if plan.pad_mode is not None:
                # Outside the image: no maxima, no suppression, no refinement pixels.
                for j, t in enumerate(b.tiles):
                    iy0, iy1, ix0, ix1 = _inside(plan, t)
                    for arr in (s, raw) if raw is not None else (s,):
                        arr[j, :iy0] = math.nan
                        arr[j, iy1:] = math.nan
                        arr[j, :, :ix0] = math.nan
                        arr[j, :, ix1:] = math.nan
            t_net += time.perf_counter() - t0
            # On CPU the windows may alias the reader's buffer: the collector copies
            # what it keeps, so the buffer can go back either way.
            peaks_step.add(s, raw, b.tiles)
            eng.release(b)
    out = peaks_step.finish()
    timings = {"read": eng.read_time, "preprocess": eng.pre_time, "inference": t_net,
               "peaks": peaks_step.t_peaks, "nms": peaks_step.t_nms,
               "total": time.perf_counter() - t_start}
    res = TiledDetections(*out, n_candidates=peaks_step.n_candidates, plan=plan,
                           device=str(dev), peaks_backend=peaks_step.backend_name,
                           params={"threshold": float(threshold),
                                   "min_distance_px": float(min_distance_px), "refine": refine,
                                   "fit_radius_px": int(fit_radius_px), "sigma_px": float(sigma_px),
                                   "exclude_border_px": int(exclude_border_px), "halo": plan.halo,
                                   "tile": list(plan.tile), "batch_size": bs},
                           timings=timings)
    try:
        return resolve_close_pairs(res, src.array, pairs)
    finally:
        src.close()


class _PeakCollector:
    """The peak half of :func:`detect_tiled`, shared with engines that produce
    score windows some other way (a GPU-resident image): per batch of windows,
    local maxima owned by each core + sub-pixel refinement (on the GPU when
    ``gpu``, else on the host); at the end one NMS over all candidates in
    whole-image candidate order."""

    def __init__(self, plan: TilePlan, *, gpu: bool, peaks_backend, threshold, min_distance_px,
                 refine, fit_radius_px, sigma_px, exclude_border_px):
        from ._backend import Backend

        self.plan, self.gpu, self.pb = plan, gpu, peaks_backend
        self.threshold, self.min_distance_px, self.refine = threshold, min_distance_px, refine
        self.fit_radius_px, self.sigma_px = fit_radius_px, sigma_px
        self.exclude_border_px = exclude_border_px
        from .peaks import com_radius

        self.com_r = com_radius(sigma_px)
        self.host_backend = "auto" if peaks_backend is Backend.AUTO else peaks_backend.value
        self.tables: list[tuple] = []
        self.t_peaks = self.t_nms = 0.0
        self.n_candidates = 0
        self.gpu_impl = None
        if gpu:
            from ._cuda import peaks as gpu_impl
            self.gpu_impl = gpu_impl

    @property
    def backend_name(self) -> str:
        return "cuda" if self.gpu else self.host_backend

    def add(self, s, raw, tiles) -> None:
        """Candidates of the windows of plan tiles ``tiles`` (consecutive): score
        ``s`` (n, h, w) and raw ``raw`` (n, h, w) or None, torch tensors."""
        from . import peaks
        from ._backend import Backend

        t1 = time.perf_counter()
        plan = self.plan
        if self.gpu:
            lims = [_core_mask_limits(plan, t, self.exclude_border_px) for t in tiles]
            try:
                tab = self.gpu_impl.detect_batch(
                    s, raw, lims, threshold=self.threshold, min_distance_px=self.min_distance_px,
                    refine=self.refine, fit_radius_px=self.fit_radius_px, sigma_px=self.sigma_px,
                    com_radius=self.com_r, sigma_bounds=peaks.default_sigma_bounds(self.sigma_px),
                    max_shift=peaks.fit_max_shift(self.min_distance_px, self.sigma_px),
                    n_fit_columns=len(peaks.FIT_COLUMNS), no_fit_status=int(peaks.FitStatus.NONE))
            except Exception as exc:
                if self.pb is Backend.CUDA:
                    raise
                # numba-cuda unusable here (toolkit/driver/version): host peaks instead.
                log.warning("GPU peak kernels failed (%s: %s); falling back to host "
                            "post-processing", type(exc).__name__, exc)
                self.gpu = False
            else:
                # Window index → plan tile (batches hold consecutive tiles).
                self.tables.append((tab[0] + int(tiles[0]),) + tuple(tab[1:]))
                self.t_peaks += time.perf_counter() - t1
                return
        s_host = s.cpu().numpy()
        raw_host = raw.cpu().numpy() if raw is not None else None
        for j, t in enumerate(tiles):
            cy0, cy1, cx0, cx1 = _core_mask_limits(plan, t, self.exclude_border_px)
            if cy1 <= cy0 or cx1 <= cx0:
                continue
            cand = peaks.local_maxima(s_host[j], threshold=self.threshold, radius=1,
                                      backend=self.host_backend)
            cx, cy = cand.xy[:, 0], cand.xy[:, 1]
            own = (cy >= cy0) & (cy < cy1) & (cx >= cx0) & (cx < cx1)
            xy0 = cand.xy[own].astype(np.float64)
            vals = cand.values[own].astype(np.float64)
            if self.refine != "none" and len(xy0):
                xy, cols = _refine_host(raw_host[j], xy0, min_distance_px=self.min_distance_px,
                                        refine=self.refine, fit_radius_px=self.fit_radius_px,
                                        sigma_px=self.sigma_px, backend=self.host_backend)
            else:
                xy, cols = xy0, peaks.empty_fit_columns(len(xy0))
            self.tables.append((np.full(len(xy0), t, np.int64), xy0, vals, xy, *cols))
        self.t_peaks += time.perf_counter() - t1

    def finish(self):
        """(xy, score, *fit columns of :data:`fastsac.peaks.FIT_COLUMNS`) after one
        NMS over the whole candidate table, in the whole-image candidate order
        (row-major by integer position), so ties and output order match exactly."""
        from . import peaks
        from ._backend import Backend

        torch = _torch()
        plan, tables = self.plan, self.tables
        n_fit = len(peaks.FIT_COLUMNS)
        n_cols = 4 + n_fit  # window, xy0, score, xy, fit columns
        t2 = time.perf_counter()
        on_gpu = bool(tables) and all(isinstance(t[0], torch.Tensor) for t in tables)
        # Window origins [x, y] of every tile: tables hold window coordinates.
        origin = np.stack([plan.windows[:, 2], plan.windows[:, 0]], axis=1).astype(np.float64)
        if on_gpu:  # candidate tables never left the device: sort + NMS there too
            cat = [torch.cat([t[k] for t in tables]) for k in range(n_cols)]
            off = torch.as_tensor(origin, device=cat[1].device)[cat[0]]
            cat = [cat[1] + off, cat[2], cat[3] + off] + cat[4:]
            key = cat[0][:, 1].to(torch.int64) * plan.shape[1] + cat[0][:, 0].to(torch.int64)
            order = torch.sort(key).indices
            keep = order[self.gpu_impl.nms_cuda(cat[0][order], cat[1][order],
                                                float(self.min_distance_px))]
            cat = [c[keep].cpu().numpy() for c in cat]
            self.n_candidates = len(order)
            keep = np.arange(len(cat[0]))
        else:
            tables = [tuple(x.cpu().numpy() if isinstance(x, torch.Tensor) else x for x in t)
                      for t in tables]
            if tables:
                cat = [np.concatenate([np.asarray(t[k]) for t in tables]) for k in range(n_cols)]
                off = origin[cat[0]]
                cat = [cat[1].reshape(-1, 2) + off, cat[2], cat[3].reshape(-1, 2) + off] + cat[4:]
            else:
                cat = [np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2))] + [np.zeros(0)] * n_fit
            xy0, vals = cat[0].reshape(-1, 2), cat[1]
            order = np.lexsort((xy0[:, 0], xy0[:, 1]))
            nms_backend = "auto" if self.pb in (Backend.AUTO, Backend.CUDA) else self.pb.value
            keep = order[peaks.nms(xy0[order], vals[order], radius=self.min_distance_px,
                                   backend=nms_backend)] if len(order) else order
            self.n_candidates = len(order)
        xy, vals = cat[2].reshape(-1, 2), cat[1]
        cols = [c[keep] for c in cat[3:]]
        self.t_nms = time.perf_counter() - t2
        return (xy[keep], vals[keep], *cols)
