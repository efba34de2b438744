"""Gigapixel montages: streamed, exactly tiled detection and global statistics.

A montage is read one window at a time (BigTIFF through ``tifffile``'s Zarr
view, Zarr / OME-Zarr arrays, numpy arrays or memmaps) and cut into a grid of
non-overlapping *cores* (``tile`` × ``tile`` px). Each core is processed with a
*halo* of context, and every detection is *owned* by the core that holds its
integer score-map maximum, so nothing is counted twice and nothing is lost at
tile borders.

Exactness (the contract, tested in ``tests/montage``): the detections of a
montage equal those of :meth:`ClassicalDetector.detect` on the whole image —
same points, same order — and so do the nearest-neighbour distances, clusters
and counts. Three things make that true:

1. **Halo ≥ the score map's context.** The classical score map is median
   background (window ``b`` px, reach ``b/2``) → difference of Gaussians
   (reach ``⌊4σ_surround + ½⌋``) → local noise (a cascade of three extended
   boxes, reach ``3(r + 1)`` ≈ 3σ_noise: :func:`fastsac.boxfilter.box_reach`;
   ``⌊4σ_noise + ½⌋`` with ``noise_window="gaussian"``). :func:`classical_halo`
   adds these up (121 px at 0.0293 nm/px: 24 + 96, + 1 for the 3×3 maximum
   test; 153 px with the Gaussian window). Windows are
   clipped at the image edge, so scipy's reflected borders act exactly where
   they act on the whole image.
2. **The score map's global constants are computed globally.** The local
   noise estimate clips the squared residual at the 98th percentile of
   ``|DoG|`` over the *whole image* and floors it at 10⁻³ × the global RMS.
   A per-tile percentile would differ, so we run two passes: pass 1 computes
   the DoG per core (stored in a scratch Zarr array), a histogram over the
   float32 bit patterns and per-bin sums; the exact 98th percentile is then
   selected from the few values in the bins around its rank and interpolated
   by ``numpy.quantile`` itself. Pass 2 computes the noise and score maps
   from the stored DoG with the global constants. (The global RMS is summed
   in float64 rather than numpy's float32 pairwise order; it only acts as a
   floor at 0.1 % of the RMS, which real images never reach.)
3. **NMS runs once over the candidate table** (as in :mod:`fastsac.infer`):
   greedy NMS is order dependent along chains of close candidates, so a
   per-tile NMS cannot be exact. Candidates (maxima above the threshold,
   refined on the raw window whose reach covers the refinement) are few; one
   exact, cell-grid NMS over all of them in the whole-image order costs
   little.

Memory: a few windows of ``(tile + 2·halo)²`` float32 plus the candidate
table; the montage itself is never loaded. Chunk work is a pure function of
``(source spec, core)`` so it runs the same in-process or as Dask tasks
(:mod:`fastsac.dask_runner`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import peaks
from .boxfilter import box_reach
from .confidence import atom_probability, confidence_summary
from .io import DEFAULT_PIXEL_SIZE_NM
from .detectors import ClassicalDetector, Detections, get_detector
from .errors import FastsacInputError
from .result import ATOM_COLUMNS
from .spatial.clusters_table import ClusterTable, cluster_table
from .species import (SpeciesAssignment, assign_species, check_elements, photometry,
                      photometry_feature, photometry_radius_px, photometry_sigma_px, support_grid,
                      support_noise_of, wants_lightest_snr, with_lightest_snr)

__all__ = ["MontageSource", "open_montage", "plan_cores", "classical_halo", "ClassicalTiling",
           "MontageResult", "detect_montage", "analyze_montage", "montage_statistics",
           "write_parquet", "read_parquet", "PARQUET_COLUMNS", "read_positions",
           "analyze_frames", "grid_nms", "montage_support_mask", "mask_bin_factor",
           "frames_support_mask", "montage_in_support", "support_png", "MAX_BINNED_PX",
           "missing_chunks_of", "montage_species", "photometry_sigma_px", "check_elements",
           "write_montage_result", "species_columns"]

log = logging.getLogger(__name__)

#: Columns of atoms.parquet: the frames' atom table (with ``species``,
#: ``species_probability`` unless species are off) plus the owning ``tile``
#: (core or frame index).
PARQUET_COLUMNS = ATOM_COLUMNS + ["species", "species_probability", "tile"]

_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter default


# --------------------------------------------------------------------------- sources
_OPEN: dict = {}  # per-process cache of opened montages


@dataclass(frozen=True)
class MontageSource:
    """A picklable description of a 2-D montage that re-opens lazily anywhere.

    ``kind`` is ``"tiff"``, ``"zarr"``, ``"npy"`` or ``"array"`` (``array``
    holds the numpy array itself: in-process and tests only).
    """

    kind: str
    path: str | None
    shape: tuple[int, int]
    dtype: str
    pixel_size_nm: float | None = None
    array: Any = field(default=None, repr=False, compare=False)
    key: str | None = None  # array inside a Zarr group (OME-Zarr level)

    @property
    def name(self) -> str:
        return Path(self.path).stem if self.path else "array"

    def open(self):
        """A sliceable 2-D array (reads only what is sliced). File handles are
        cached per process (a few), so chunk tasks do not reopen the file."""
        if self.kind == "array":
            return self.array
        try:  # a rewritten file must not be served from the cache
            stamp = os.stat(self.path).st_mtime_ns
        except OSError:
            stamp = None
        k = (self.kind, self.path, self.key, stamp)
        arr = _OPEN.get(k)
        if arr is None:
            arr = self._open()
            if len(_OPEN) >= 4:
                _OPEN.pop(next(iter(_OPEN)))
            _OPEN[k] = arr
        return arr

    def _open(self):
        if self.kind == "npy":
            return np.load(self.path, mmap_mode="r")
        import zarr

        if self.kind == "tiff":
            import tifffile

            store = tifffile.imread(self.path, aszarr=True)
            z = zarr.open(store, mode="r")
        else:
            z = zarr.open(self.path, mode="r")
        if self.key is not None:
            z = z[self.key]
        return z

    def read(self, y0: int, y1: int, x0: int, x1: int, arr=None) -> np.ndarray:
        """The window ``[y0:y1, x0:x1]`` as float32. A chunk or tile that cannot
        be decoded, or NaN/inf in the window, raises :class:`FastsacInputError`
        naming the file and the region (as frames with NaN are refused)."""
        region = f"rows {y0}:{y1}, columns {x0}:{x1}"
        try:
            a = self.open() if arr is None else arr
            out = np.ascontiguousarray(a[y0:y1, x0:x1], dtype=np.float32)
        except MemoryError:
            raise
        except Exception as exc:
            raise FastsacInputError(self.path or "array", f"cannot read the montage at {region} "
                                    f"(a corrupt or truncated chunk/tile; {type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:160]})") from exc
        if out.size and not np.isfinite(out.min() + out.max()):
            frac = 1.0 - np.isfinite(out).mean()
            raise FastsacInputError(self.path or "array", f"montage contains NaN/inf at {region} "
                                    f"({frac:.1%} of that window); replace them (e.g. by the "
                                    "vacuum level) first")
        return out


def missing_chunks_of(source: MontageSource, *, limit: int = 5) -> tuple[int, int, list[tuple]]:
    """Chunks of a Zarr montage that were never written (read as the fill
    value, i.e. silently zeros): ``(n_missing, n_chunks, examples)`` where each
    example is ``(chunk index, (y0, y1, x0, x1))``. ``(0, 0, [])`` for other kinds."""
    if source.kind != "zarr":
        return 0, 0, []
    z = source.open()
    n = int(z.nchunks)
    have = int(z.nchunks_initialized)
    if have >= n:
        return 0, n, []
    examples: list[tuple] = []
    root = Path(source.path)
    if source.key is not None:
        root = root / source.key
    try:
        enc = z.metadata.encode_chunk_key
        cy, cx = z.chunks
        for coords in np.ndindex(*z.cdata_shape):
            if len(examples) >= limit:
                break
            if not (root / enc(coords)).exists():
                y0, x0 = coords[0] * cy, coords[1] * cx
                examples.append((coords, (y0, min(y0 + cy, z.shape[0]), x0,
                                          min(x0 + cx, z.shape[1]))))
    except (AttributeError, TypeError, ValueError, OSError):
        pass  # not a local directory store: the count is still right
    return n - have, n, examples


def _missing_regions(source: MontageSource) -> list[tuple[int, int, int, int]]:
    """Every never-written chunk's pixel region (for ``missing_chunks="vacuum"``)."""
    z = source.open()
    root = Path(source.path) / (source.key or "")
    enc = z.metadata.encode_chunk_key
    cy, cx = z.chunks
    out = []
    for coords in np.ndindex(*z.cdata_shape):
        if not (root / enc(coords)).exists():
            y0, x0 = coords[0] * cy, coords[1] * cx
            out.append((y0, min(y0 + cy, z.shape[0]), x0, min(x0 + cx, z.shape[1])))
    return out


def _tiff_pixel_size(path: Path) -> float | None:
    """Calibration from the tags only (never decodes pixel data)."""
    import tifffile

    from .io import unit_to_nm

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tags = page.tags
        xres = tags.get("XResolution")
        ppu = None
        if xres is not None:
            num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
            ppu = num / den if num and den else None
        ij = tif.imagej_metadata or {}
        u = unit_to_nm(ij.get("unit")) if ij else None
        if u and ppu:
            return u / ppu
        resunit = tags.get("ResolutionUnit")
        if ppu and resunit is not None and int(resunit.value) == 3:
            return 1e7 / ppu
    return None


def open_montage(source, *, pixel_size_nm: float | None = None) -> MontageSource:
    """Describe a montage for streamed reading.

    Parameters
    ----------
    source : path, (H, W) array or MontageSource
        A (Big)TIFF (tiled or striped; read through ``tifffile``'s Zarr view),
        a Zarr array or OME-Zarr group (level ``0``), a ``.npy`` file
        (memory-mapped) or an in-memory array.
    pixel_size_nm : float, optional
        Overrides the file's calibration.

    Raises
    ------
    FastsacInputError
        Missing, unreadable or non-2-D input.
    """
    if isinstance(source, MontageSource):
        if pixel_size_nm is not None:
            from dataclasses import replace
            return replace(source, pixel_size_nm=float(pixel_size_nm))
        return source
    if not isinstance(source, (str, os.PathLike)):
        arr = np.asarray(source) if not hasattr(source, "shape") else source
        if len(arr.shape) != 2:
            raise ValueError(f"montage must be a 2-D array, got shape {arr.shape}")
        return MontageSource("array", None, tuple(int(s) for s in arr.shape), str(arr.dtype),
                             pixel_size_nm, arr)
    path = Path(source)
    if not path.exists():
        raise FastsacInputError(path, "montage not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            kind, key, px = "tiff", None, _tiff_pixel_size(path)
        elif suffix == ".npy":
            kind, key, px = "npy", None, None
        elif path.is_dir() or suffix == ".zarr":
            kind, key, px = "zarr", None, None
            import zarr

            z = zarr.open(path, mode="r")
            if not hasattr(z, "shape"):  # OME-Zarr multiscale group: level 0 = full resolution
                ms = z.attrs.get("multiscales") or z.attrs.get("ome", {}).get("multiscales")
                key = ms[0]["datasets"][0]["path"] if ms else "0"
                px = _ome_pixel_size(ms)
            else:
                px = z.attrs.get("pixel_size_nm")
        else:
            raise FastsacInputError(path, f"unsupported montage type {suffix!r}; "
                                          "use a (Big)TIFF, Zarr/OME-Zarr or .npy")
        spec = MontageSource(kind, os.fspath(path), (0, 0), "float32", None, None, key)
        arr = spec.open()
    except FastsacInputError:
        raise
    except Exception as exc:
        raise FastsacInputError(path, f"cannot be opened as a montage ({type(exc).__name__}: "
                                      f"{exc})") from exc
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) != 2:
        raise FastsacInputError(path, f"expected a 2-D montage, got shape {shape}")
    if px is not None:
        from .io import PIXEL_SIZE_RANGE_NM, check_pixel_size

        try:
            px = check_pixel_size(px)
        except (TypeError, ValueError):
            log.warning("%s: calibration %r nm/px is outside the plausible %g–%g nm/px; treated "
                        "as missing", path, px, *PIXEL_SIZE_RANGE_NM)
            px = None
    if pixel_size_nm is not None:
        px = float(pixel_size_nm)
    # As fastsac.io.read: calibrations equal to 9 digits are the same (TIFF rationals).
    return MontageSource(kind, os.fspath(path), shape, str(arr.dtype),
                         peaks.stable_float(px) if px else None, None, key)


def _ome_pixel_size(ms) -> float | None:
    try:
        axes = ms[0]["axes"]
        scale = ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"]
        from .io import unit_to_nm

        u = unit_to_nm(axes[-1].get("unit"))
        return float(scale[-1]) * u if u else None
    except (KeyError, IndexError, TypeError):
        return None


# --------------------------------------------------------------------------- planning
def plan_cores(shape, *, tile: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping cores ``(y0, y1, x0, x1)`` covering ``shape``, row-major."""
    tile = int(tile)
    if tile < 16:
        raise ValueError(f"tile must be ≥ 16 px, got {tile}")
    H, W = shape
    return [(y, min(y + tile, H), x, min(x + tile, W))
            for y in range(0, H, tile) for x in range(0, W, tile)]


def _grow(core, r: int, shape):
    y0, y1, x0, x1 = core
    H, W = shape
    return max(y0 - r, 0), min(y1 + r, H), max(x0 - r, 0), min(x1 + r, W)


def _gauss_reach(sigma: float) -> int:
    return int(_TRUNCATE * float(sigma) + 0.5)


@dataclass(frozen=True)
class ClassicalTiling:
    """Resolved pixel parameters of a :class:`ClassicalDetector` and the halos
    that make tiled detection exact (see :func:`classical_halo`)."""

    bg_size: int | None
    sigma: float
    surround: float
    noise_sigma: float
    threshold: float
    min_distance: float
    refine: str
    fit_radius: int
    backend: str
    halo_dog: int      # raw context of the DoG: median reach + surround reach
    halo_noise: int    # DoG context of the score map at the core ± 1 (3×3 maxima)
    reach: int         # raw context of the sub-pixel refinement
    exclude_border: int = 0  # maxima this close to the *montage* edge are ignored
    detector: ClassicalDetector | None = None  # computes both stages (one implementation)
    pixel_size_nm: float | None = None

    @classmethod
    def from_detector(cls, det: ClassicalDetector, pixel_size_nm: float | None):
        px = pixel_size_nm or DEFAULT_PIXEL_SIZE_NM
        p = det.pixel_params(px)  # the detector's own conversion (calibration-stable)
        bg, s, s2, ns = p["background_px"], p["sigma_px"], p["surround_px"], p["noise_sigma_px"]
        fit_r = peaks.fit_radius(s)
        reach = peaks.refine_reach(s, fit_r, det.refine)
        # scipy's median of even size n covers offsets -n/2 … n/2-1; odd: ±n//2.
        med_r = 0 if bg is None else bg // 2
        halo_dog = med_r + max(_gauss_reach(s), _gauss_reach(s2))
        noise_reach = (box_reach(ns) if getattr(det, "noise_window", "gaussian") == "box"
                       else _gauss_reach(ns))
        return cls(bg, s, s2, ns, det.threshold, p["min_distance_px"], det.refine, fit_r,
                   det.backend, halo_dog, noise_reach + 1, reach,
                   int(getattr(det, "exclude_border_px", 0)), det, px)

    @property
    def halo(self) -> int:
        """Total raw context of one core (what a single-pass scheme would need)."""
        return max(self.halo_dog + self.halo_noise, self.reach)

    def dog(self, raw: np.ndarray) -> np.ndarray:
        """Stage A of :meth:`ClassicalDetector.score_map` (background + DoG), float32."""
        return self.detector.dog(raw, pixel_size_nm=self.pixel_size_nm)

    def score(self, dog: np.ndarray, cap: np.float32, glob: float) -> np.ndarray:
        """Stage B: ``dog / local_noise(dog)`` with the whole image's ``cap`` and RMS."""
        return self.detector.snr(dog, pixel_size_nm=self.pixel_size_nm, cap=cap, global_rms=glob)


def classical_halo(detector=None, *, pixel_size_nm: float | None = None) -> int:
    """Raw-pixel halo for exact tiling of a :class:`ClassicalDetector`."""
    det = get_detector("classical" if detector is None else detector)
    if not isinstance(det, ClassicalDetector):
        raise TypeError(f"classical_halo needs a ClassicalDetector, got {type(det).__name__}")
    return ClassicalTiling.from_detector(det, pixel_size_nm).halo


# --------------------------------------------------------------------------- chunk work
# Each is a pure, picklable function of (source, core, …): the same code runs
# in-process and as a Dask task. The DoG scratch is a Zarr array on disk.

_NBINS = 1 << 16  # histogram over the top 16 bits of |DoG| as float32 (monotone for x ≥ 0)


def _bits(a: np.ndarray) -> np.ndarray:
    return (np.abs(a).astype(np.float32).view(np.uint32) >> 16).astype(np.int64)


def chunk_dog(source: MontageSource, core, tiling: ClassicalTiling, scratch: str | None):
    """Pass 1 for one core: DoG of the core (written to ``scratch``), the
    histogram of ``|DoG|`` bit patterns and per-bin sums of DoG² (float64)."""
    arr = source.open()
    win = _grow(core, tiling.halo_dog, source.shape)
    raw = source.read(*win, arr=arr)
    d = tiling.dog(raw)
    y0, y1, x0, x1 = core
    d = d[y0 - win[0]:y1 - win[0], x0 - win[2]:x1 - win[2]]
    if scratch is not None:
        _scratch_array(scratch, mode="r+")[y0:y1, x0:x1] = d
    b = _bits(d).ravel()
    sq = (d * d).astype(np.float64).ravel()
    counts = np.bincount(b, minlength=_NBINS)
    sums = np.bincount(b, weights=sq, minlength=_NBINS)
    nz = np.flatnonzero(counts)
    return nz, counts[nz], sums[nz], (d if scratch is None else None)


def chunk_select(source: MontageSource, core, scratch: str, lo_bin: int, hi_bin: int):
    """Values of ``|DoG|`` in the histogram bins ``lo_bin … hi_bin`` (float32)."""
    y0, y1, x0, x1 = core
    d = np.abs(np.asarray(_scratch_array(scratch)[y0:y1, x0:x1], dtype=np.float32)).ravel()
    b = _bits(d)
    return d[(b >= lo_bin) & (b <= hi_bin)]


def chunk_detect(source: MontageSource, core, tiling: ClassicalTiling, scratch: str,
                 cap: float, glob: float, index: int):
    """Pass 2 for one core: score map from the stored DoG, maxima owned by the
    core, sub-pixel refinement on the raw window. Global coordinates."""
    win = _grow(core, tiling.halo_noise, source.shape)
    dog = np.asarray(_scratch_array(scratch)[win[0]:win[1], win[2]:win[3]], dtype=np.float32)
    return _detect_from_dog(source, core, win, dog, tiling, cap, glob, index)


def _detect_from_dog(source, core, win, dog, tiling, cap, glob, index, arr=None):
    y0, y1, x0, x1 = core
    s = tiling.score(dog, np.float32(cap), glob)
    cand = peaks.local_maxima(s, threshold=tiling.threshold, radius=1, backend=tiling.backend)
    cx = cand.xy[:, 0] + win[2]
    cy = cand.xy[:, 1] + win[0]
    own = (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
    b = tiling.exclude_border
    if b > 0:  # as local_maxima(exclude_border=b) on the whole image
        H, W = source.shape
        own &= (cy >= b) & (cy < H - b) & (cx >= b) & (cx < W - b)
    xy0 = np.stack([cx[own], cy[own]], axis=1).astype(np.float64).reshape(-1, 2)
    vals = cand.values[own].astype(np.float64)
    n = len(xy0)
    cols = peaks.empty_fit_columns(n)
    xy = xy0.copy()
    if n and tiling.refine != "none":
        rwin = _grow(core, tiling.reach, source.shape)
        raw = source.read(*rwin, arr=arr)
        off = np.array([rwin[2], rwin[0]], np.float64)
        xy, cols = _refine(raw, xy0 - off, tiling)
        xy = xy + off
    return {"xy0": xy0, "score": vals, "xy": xy, **dict(zip(peaks.FIT_COLUMNS, cols)),
            "tile": np.full(n, index, np.int64)}


def _refine(raw, xy0, t: ClassicalTiling):
    """The refinement half of :func:`fastsac.detectors.postprocess_scores`, per point."""
    return peaks.refine_positions(raw, xy0, min_distance_px=t.min_distance, refine=t.refine,
                                  fit_radius_px=t.fit_radius, sigma_px=t.sigma,
                                  backend=t.backend)


def _scratch_array(path: str, mode: str = "r"):
    import zarr

    return zarr.open_array(path, mode=mode)


def _make_scratch(root: str | None, shape, tile: int) -> tuple[str, str]:
    import zarr

    tmpdir = tempfile.mkdtemp(prefix="fastsac-montage-", dir=root)
    path = os.path.join(tmpdir, "dog.zarr")
    zarr.create_array(path, shape=shape, chunks=(tile, tile), dtype="float32",
                      compressors=None, fill_value=0.0)
    return tmpdir, path


# --------------------------------------------------------------------------- global constants
def quantile_from_histogram(counts: np.ndarray, n: int, q: float):
    """Rank bins for ``numpy.quantile(a, q)`` (linear method) of ``n`` values
    from the histogram ``counts``: returns ``(lo_rank, hi_rank, lo_bin, hi_bin,
    below)`` where ``below`` = number of values in bins < ``lo_bin``."""
    virtual = (n - 1) * np.asarray(q, np.float64)
    lo = int(np.floor(virtual))
    hi = min(lo + 1, n - 1)
    cum = np.cumsum(counts)
    lo_bin = int(np.searchsorted(cum, lo, side="right"))
    hi_bin = int(np.searchsorted(cum, hi, side="right"))
    below = int(cum[lo_bin - 1]) if lo_bin > 0 else 0
    return lo, hi, lo_bin, hi_bin, below


def exact_quantile(selected: np.ndarray, n: int, q: float, lo: int, below: int) -> np.float32:
    """``numpy.quantile(a, q)`` of ``n`` float32 values from the sorted values
    around its rank (``selected`` holds every value of ranks ``below …``)."""
    v = np.sort(selected.astype(np.float32))
    virtual = (n - 1) * np.asarray(q, np.float64)
    frac = virtual - np.floor(virtual)
    a = v[lo - below]
    b = v[min(lo - below + 1, len(v) - 1)]
    # numpy's own interpolation on the two neighbours, so rounding is identical.
    # A Python-float q takes numpy's weak-promotion path (float32 arithmetic),
    # exactly as np.percentile(a, 98) with an int q does.
    return np.float32(np.quantile(np.array([a, b], np.float32), float(frac)))


# --------------------------------------------------------------------------- NMS over the table
def grid_nms(xy: np.ndarray, scores: np.ndarray, *, radius: float) -> np.ndarray:
    """Exactly :func:`fastsac.peaks.nms` (greedy, descending score, ties to the
    lower index, distance ≤ radius) with a cell grid, for large candidate tables.

    Returns kept indices in visiting order.
    """
    n = len(xy)
    if n < 4000 or "cpp" in peaks._nms_kernel.available():
        return peaks.nms(xy, scores, radius=radius)  # the C++ kernel is a cell grid already
    order = np.lexsort((np.arange(n), -np.nan_to_num(scores, nan=-np.inf)))
    order = order[np.isfinite(scores[order])]
    cell = max(float(radius), 1e-9)
    cx = np.floor(xy[:, 0] / cell).astype(np.int64)
    cy = np.floor(xy[:, 1] / cell).astype(np.int64)
    grid: dict[tuple[int, int], list[int]] = {}
    r2 = radius * radius
    kept = []
    X, Y = xy[:, 0].tolist(), xy[:, 1].tolist()
    CX, CY = cx.tolist(), cy.tolist()
    for i in order.tolist():
        x, y, gx, gy = X[i], Y[i], CX[i], CY[i]
        hit = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for j in grid.get((gx + dx, gy + dy), ()):
                    ddx, ddy = X[j] - x, Y[j] - y
                    if ddx * ddx + ddy * ddy <= r2:
                        hit = True
                        break
                if hit:
                    break
            if hit:
                break
        if not hit:
            kept.append(i)
            grid.setdefault((gx, gy), []).append(i)
    return np.asarray(kept, np.int64)


# --------------------------------------------------------------------------- driver
@dataclass(frozen=True)
class MontageResult:
    """Detections of a whole montage in global pixel coordinates.

    ``detections`` are in the order whole-image detection would give them;
    ``tile`` (N,) is the index of the owning core (or frame in folder mode);
    ``statistics`` is the montage summary (same keys as ``summary.json`` of
    ``fastsac analyze``); ``nn_dist``, ``cluster_id``, ``cluster_size`` per atom.
    """

    source: str
    shape: tuple[int, int]
    pixel_size_nm: float | None
    detections: Detections
    tile: np.ndarray
    nn_dist: np.ndarray
    cluster_id: np.ndarray
    cluster_size: np.ndarray
    statistics: dict
    n_candidates: int = 0
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    #: Support mask on the ``support_bin``-binned grid (a MaskResult), or None.
    support: Any = field(default=None, repr=False)
    support_bin: int = 1
    #: Species of every atom (atoms columns ``species``, ``species_probability``), or None.
    species: SpeciesAssignment | None = field(default=None, repr=False)
    #: One row per cluster (``clusters.csv``), as for frames.
    cluster_table: ClusterTable | None = field(default=None, repr=False)
    #: The dispersion statistics and pair-correlation test the summary was made
    #: from (what the plots draw).
    stats: Any = field(default=None, repr=False)
    pattern: Any = field(default=None, repr=False)

    def in_support(self) -> np.ndarray:
        """(N,) int 1/0: the atom lies on support; all 1 without a mask.
        Same lookup as :meth:`fastsac.pipeline.AnalysisResult.in_support`."""
        return montage_in_support(self.detections.xy, self.support, self.support_bin, self.shape)

    def table(self) -> dict[str, np.ndarray]:
        """Columns of :data:`PARQUET_COLUMNS`: the frame's atom table
        (:func:`fastsac.result.atoms_table`, species columns as for frames) plus
        the owning ``tile``."""
        from .result import atoms_table

        px = self.pixel_size_nm
        return atoms_table(self.detections, pixel_size_nm=px,
                           nn_dist_px=self.nn_dist / px if px else self.nn_dist,
                           cluster_id=self.cluster_id, cluster_size=self.cluster_size,
                           in_support=self.in_support(),
                           extra=species_columns(self.species) | {"tile": self.tile})


class _Runner:
    """Runs chunk functions in-process (sequentially, tqdm) — the default; the
    Dask runner in :mod:`fastsac.dask_runner` has the same ``map`` signature."""

    name = "local"

    def __init__(self, progress: bool = True):
        self.progress = progress

    def map(self, fn: Callable, args: list[tuple], *, desc: str) -> Iterable:
        from tqdm import tqdm

        for a in tqdm(args, desc=desc, unit="tile", disable=not self.progress or len(args) < 2):
            yield fn(*a)


def _detect_montage_torch(src: MontageSource, det: ClassicalDetector, *, tile: int | None,
                          device: str, progress: bool):
    """The montage through the torch engine (GPU): resident when the montage is an
    in-memory array or a memory-mapped ``.npy`` that fits on the device, else
    streamed from the file (two passes). Same return as :func:`detect_montage`."""
    px = src.pixel_size_nm
    res = det.detect_tiled(src.open(), pixel_size_nm=px, device=device, tile=tile,
                           progress=progress)
    th, tw = res.plan.tile
    ncols = -(-src.shape[1] // tw)
    # Owner tile = the core holding the refined position (within a pixel of the
    # core that owned the integer maximum).
    iy = np.clip(np.floor(res.xy[:, 1] / th), 0, -(-src.shape[0] // th) - 1).astype(np.int64)
    ix = np.clip(np.floor(res.xy[:, 0] / tw), 0, ncols - 1).astype(np.int64)
    dets = Detections(**res.as_dict(), detector=det.name,
                      params=det.params() | {"pixel_size_nm_used": px or DEFAULT_PIXEL_SIZE_NM},
                      timings=dict(res.timings))
    info = {"engine": "torch", "device": res.device, "resident": bool(res.params.get("resident")),
            "calibration": res.params.get("calibration"), "tile": int(th), "halo": res.plan.halo,
            "n_tiles": len(res.plan), "runner": "torch"}
    return dets, iy * ncols + ix, res.n_candidates, info


def detect_montage(source, *, detector="classical", tile: int = 2048,
                   pixel_size_nm: float | None = None, runner=None, scratch_dir: str | None = None,
                   progress: bool = True, engine: str = "auto") -> tuple[Detections, np.ndarray, int, dict]:
    """Streamed detection over a montage, exactly equal to whole-image detection.

    Parameters
    ----------
    source : path, array or MontageSource
    detector : "classical", "default" or a ClassicalDetector
        Detectors other than :class:`ClassicalDetector` are tiled by
        :func:`fastsac.infer.detect_tiled` when available (raises otherwise).
    tile : int
        Core edge in px; each core is read with :func:`classical_halo` px of
        context (≈ 121 px at 0.0293 nm/px), so larger tiles waste less.
    runner : optional
        Object with ``map(fn, args, desc=...)`` yielding results (in any order
        is fine: results are re-sorted); default in-process.
    scratch_dir : str, optional
        Where the DoG scratch array (4 bytes/px) lives; must be visible to all
        workers. Default: the system temp dir. Removed afterwards.
    engine : {"auto", "cpp", "torch"}
        ``cpp``: the exact C++ tiling described above (in-process or on Dask).
        ``torch``: the detector's torch engine
        (:meth:`ClassicalDetector.detect_tiled`; GPU-resident when the montage
        fits on the GPU). ``auto``: torch when the detector's ``device``
        resolves to CUDA and no ``runner`` is given, else cpp.

    Returns
    -------
    (Detections, tile_index (N,), n_candidates, timings)
    """
    src = open_montage(source, pixel_size_nm=pixel_size_nm)
    det = get_detector(detector)
    if not isinstance(det, ClassicalDetector):
        raise NotImplementedError(
            f"montage tiling is implemented for the classical detector; got "
            f"{type(det).__name__}. Use fastsac.infer.detect_tiled for learned detectors.")
    if engine not in ("auto", "cpp", "torch"):
        raise ValueError(f"engine must be 'auto', 'cpp' or 'torch', got {engine!r}")
    if engine == "auto":
        engine = ("torch" if runner is None and getattr(det, "device", "cpu") != "cpu"
                  and det.resolved_device() == "cuda" else "cpp")
    if engine == "torch":
        dev = "cpu" if getattr(det, "device", "cpu") == "cpu" else det.device
        return _detect_montage_torch(src, det, tile=tile, device=dev, progress=progress)
    px = src.pixel_size_nm
    t = ClassicalTiling.from_detector(det, px)
    runner = runner or _Runner(progress)
    H, W = src.shape
    n = H * W
    cores = plan_cores(src.shape, tile=tile)
    tim: dict[str, float] = {}
    t0 = time.perf_counter()
    tmpdir, scratch = _make_scratch(scratch_dir, src.shape, int(tile))
    try:
        counts = np.zeros(_NBINS, np.int64)
        sums = np.zeros(_NBINS, np.float64)
        for nz, c, s, _ in runner.map(chunk_dog, [(src, c, t, scratch) for c in cores],
                                      desc="pass 1/2 (DoG)"):
            counts[nz] += c
            sums[nz] += s
        t1 = time.perf_counter()
        lo, hi, lo_bin, hi_bin, below = quantile_from_histogram(counts, n, 0.98)
        sel = [v for v in runner.map(chunk_select,
                                     [(src, c, scratch, lo_bin, hi_bin) for c in cores],
                                     desc="percentile")]
        vals = np.concatenate(sel) if sel else np.zeros(0, np.float32)
        cap = exact_quantile(vals, n, 0.98, lo, below)
        cap2 = np.float32(cap) * np.float32(cap)
        # Σ min(d², cap²): full bins below, exact within the selected bins, cap² above.
        sel_sq = (vals * vals).astype(np.float64)
        in_sel = sel_sq <= float(cap2)
        n_le = below + int(in_sel.sum())
        total = float(sums[:lo_bin].sum()) + float(sel_sq[in_sel].sum()) + (n - n_le) * float(cap2)
        glob = float(np.sqrt(np.float32(total / n))) or 1.0
        t2 = time.perf_counter()
        tables = sorted(runner.map(chunk_detect,
                                   [(src, c, t, scratch, float(cap), glob, i)
                                    for i, c in enumerate(cores)], desc="pass 2/2 (detect)"),
                        key=lambda r: int(r["tile"][0]) if len(r["tile"]) else -1)
        t3 = time.perf_counter()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    dets, owner, ncand = _finish(tables, t, det, px)
    pair_kw = det.pair_params(px)
    if pair_kw is not None:  # after the global NMS, on windows of the montage itself
        from . import close_pairs

        t4 = time.perf_counter()
        dec = close_pairs.resolve_pairs(src.open(), dets.xy, score=dets.score, **pair_kw)
        dets, owner = close_pairs.apply_pair_decisions(dets, dec), owner[dec.source()]
        tim["pairs"] = time.perf_counter() - t4
    tim.update({"pass1_dog": t1 - t0, "percentile": t2 - t1, "pass2_detect": t3 - t2,
                "nms": time.perf_counter() - t3, "total": time.perf_counter() - t0})
    info = {"cap": float(cap), "global_rms": glob, "halo_dog": t.halo_dog,
            "halo_noise": t.halo_noise, "reach": t.reach, "tile": int(tile),
            "n_tiles": len(cores), "runner": getattr(runner, "name", "custom")}
    return replace_timings(dets, tim), owner, ncand, info


def replace_timings(d: Detections, tim: dict) -> Detections:
    from dataclasses import replace
    return replace(d, timings=dict(tim))


def _finish(tables, t: ClassicalTiling, det, px):
    keys = ["xy0", "score", "xy", *peaks.FIT_COLUMNS, "tile"]
    if tables:
        cat = {k: np.concatenate([np.asarray(r[k]) for r in tables]) for k in keys}
    else:
        cat = {k: np.zeros(0) for k in keys}
    xy0 = cat["xy0"].reshape(-1, 2)
    xy = cat["xy"].reshape(-1, 2)
    # Whole-image candidate order is row-major by integer position.
    order = np.lexsort((xy0[:, 0], xy0[:, 1]))
    sc = cat["score"][order].astype(np.float32).astype(np.float64)
    keep = order[grid_nms(xy0[order], sc, radius=t.min_distance)] if len(order) else order
    d = Detections(xy=xy[keep].reshape(-1, 2), score=cat["score"][keep],
                   **{k: cat[k][keep] for k in peaks.FIT_COLUMNS}, detector=det.name,
                   params=det.params() | {"pixel_size_nm_used": px or DEFAULT_PIXEL_SIZE_NM},
                   timings={})
    return d, cat["tile"][keep].astype(np.int64), len(order)


# --------------------------------------------------------------------------- support mask
#: Default cap on the binned montage's pixels for the support mask (4096²).
#: The mask step needs ≈ 75 B per binned pixel (float64 smoothings, labels);
#: this keeps a 32768² montage (F = 8) under 2 GB peak RSS end to end
#: (measured: docs/montage.md).
MAX_BINNED_PX = 4096 * 4096


def mask_bin_factor(shape, *, pixel_size_nm: float | None, smooth_nm: float = 0.35,
                    working_px: float = 6.0, max_binned_px: int = MAX_BINNED_PX) -> int:
    """Block size F of the montage's support mask.

    F starts as the factor :func:`fastsac.support.support_mask` bins a
    whole image by (``round(σ_smooth / working_px)``, 2 at 0.0293 nm/px; 1 when
    the image is under 8F px on a side) and is raised, one at a time, only until
    the binned montage ``⌈H/F⌉·⌈W/F⌉`` has at most ``max_binned_px`` pixels.
    """

    h, w = (int(v) for v in shape)
    px = float(pixel_size_nm) if pixel_size_nm else DEFAULT_PIXEL_SIZE_NM
    sigma = smooth_nm / px
    f = max(1, int(round(sigma / working_px))) if np.isfinite(working_px) and working_px > 0 else 1
    if not (f > 1 and min(h, w) >= 8 * f):
        f = 1
    if max_binned_px < 1:
        raise ValueError(f"max_binned_px must be ≥ 1, got {max_binned_px}")
    while -(-h // f) * -(-w // f) > max_binned_px:
        f += 1
    return f


def _bin_block(a: np.ndarray, f: int) -> np.ndarray:
    """F×F block means by the very function :func:`~fastsac.support.support_mask`
    bins a whole image with (:func:`~fastsac.support.bin_mean`: ragged
    last blocks by edge padding, summed in float64, then float32); every block
    is computed by the same per-element operations in the same order, so a
    window that starts on the block grid and ends on it or at the image edge
    (the padding then replicates the image's last row/column) gives exactly
    the whole image's blocks."""
    from .support import bin_mean

    return bin_mean(a, f)


def chunk_bin(source: MontageSource, core, f: int) -> np.ndarray:
    """Block means of one core (aligned to the F grid) of the montage, float32."""
    y0, y1, x0, x1 = core
    return _bin_block(source.read(y0, y1, x0, x1), f)


def montage_support_mask(source, *, pixel_size_nm: float | None = None,
                         bin_factor: int | None = None, max_binned_px: int = MAX_BINNED_PX,
                         tile: int = 2048, runner=None, progress: bool = True, **mask_params):
    """Support (True) / vacuum (False) mask of a montage, on a binned grid.

    The montage is read core by core (in-process or as Dask tasks through
    ``runner``) and binned by F×F block means with the arithmetic of
    :func:`fastsac.support.support_mask` (the binned array is
    bit-identical to the one it builds internally for the whole image); then
    ``support_mask(binned, pixel_size_nm=px·F, working_px=inf)`` runs on it.
    With the default F (:func:`mask_bin_factor`) on a montage whose binned
    size is under ``max_binned_px``, the mask equals the whole image's.

    Parameters
    ----------
    source : path, (H, W) array or MontageSource
    pixel_size_nm : float, optional
        Overrides the montage's calibration.
    bin_factor : int, optional
        F; default :func:`mask_bin_factor`.
    max_binned_px : int
        Cap on the binned montage's pixel count (memory ≈ 75 B per binned px).
    tile : int
        Core edge in px when reading (rounded down to a multiple of F).
    runner : optional
        As in :func:`detect_montage`.
    **mask_params
        Other :func:`~fastsac.support.support_mask` arguments
        (``smooth_nm``, ``min_contrast``, ``device`` …; ``working_px`` only
        sets the default F).

    Returns
    -------
    (MaskResult, F)
        ``mask`` is the binned ``(⌈H/F⌉, ⌈W/F⌉)`` grid; areas, vacuum fraction
        and calibration are those of the full-resolution montage (ragged last
        blocks counted at their true size); ``params["bin_factor"] = F``.
    """
    src = open_montage(source, pixel_size_nm=pixel_size_nm)
    px = src.pixel_size_nm
    H, W = src.shape
    mp = dict(mask_params)
    working_px = mp.pop("working_px", 6.0)
    exclude = mp.pop("exclude", None) or []
    f = _resolve_bin_factor(bin_factor, src.shape, px, mp, working_px, max_binned_px)
    step = max(f, (int(tile) // f) * f)
    cores = [(y, min(y + step, H), x, min(x + step, W))
             for y in range(0, H, step) for x in range(0, W, step)]
    runner = runner or _Runner(progress)
    t0 = time.perf_counter()
    binned = np.empty((-(-H // f), -(-W // f)), np.float32)
    for (y0, y1, x0, x1), b in zip(cores, runner.map(chunk_bin, [(src, c, f) for c in cores],
                                                     desc="support mask (bin)")):
        binned[y0 // f:y0 // f + b.shape[0], x0 // f:x0 // f + b.shape[1]] = b
    t1 = time.perf_counter()
    res = _mask_of_binned(binned, src.shape, f, px, mp, exclude=exclude)
    log.info("support mask of %d×%d px: read + bin %d× in %.1f s, mask of %d×%d in %.1f s",
             H, W, f, t1 - t0, *binned.shape, time.perf_counter() - t1)
    return res, f


def _resolve_bin_factor(bin_factor, shape, px, mask_params, working_px, max_binned_px) -> int:
    if bin_factor is None:
        return mask_bin_factor(shape, pixel_size_nm=px, smooth_nm=mask_params.get("smooth_nm", 0.35),
                               working_px=working_px, max_binned_px=max_binned_px)
    f = int(bin_factor)
    if f != bin_factor or f < 1:
        raise ValueError(f"bin_factor must be a positive integer, got {bin_factor!r}")
    return f


def _mask_of_binned(binned: np.ndarray, shape, f: int, px: float | None, mask_params: dict,
                    exclude=()):
    """:func:`~fastsac.support.support_mask` of the F-binned montage, with
    the areas of the full-resolution montage (as ``support_mask`` reports them
    for a whole image it bins itself)."""
    from .support import MaskResult, support_mask
    from .spatial.stats import Window

    H, W = shape
    small = support_mask(binned, pixel_size_nm=(px or DEFAULT_PIXEL_SIZE_NM) * f, working_px=np.inf,
                         **mask_params)
    for y0, y1, x0, x1 in exclude:  # regions with no data (missing chunks) are vacuum
        small.mask[y0 // f:-(-y1 // f), x0 // f:-(-x1 // f)] = False
    # Full-resolution support px: the ragged last blocks count at their true size.
    area = Window(shape, mask=small.mask, bin_factor=f).area if small.mask.any() else 0.0
    return MaskResult(small.mask, area, area * px**2 if px else None, 1.0 - area / (H * W), px,
                      small.has_vacuum, small.contrast, small.texture_ratio,
                      small.params | {"bin_factor": f})


def frames_support_mask(folder, pos, shape, *, pixel_size_nm: float | None,
                        read_pixel_size_nm: float | None = None, bin_factor: int | None = None,
                        max_binned_px: int = MAX_BINNED_PX, progress: bool = True,
                        **mask_params):
    """Support mask of a folder of frames (folder mode), on the binned mosaic.

    Each frame is placed at its integer-rounded position and binned into the
    montage's F×F block grid (origin at global pixel 0, 0); overlaps are
    averaged, blocks no frame covers take the value of the nearest covered
    block. Then :func:`~fastsac.support.support_mask` runs on the mosaic
    as in :func:`montage_support_mask`. Unlike that function this is not
    bit-identical to a whole image's mask (frames overlap and need not align
    with the block grid); it serves densities per support area.

    Returns
    -------
    (MaskResult, F)
    """
    from scipy import ndimage as ndi
    from tqdm import tqdm

    from .io import read

    mp = dict(mask_params)
    working_px = mp.pop("working_px", 6.0)
    exclude = mp.pop("exclude", None) or []
    f = _resolve_bin_factor(bin_factor, shape, pixel_size_nm, mp, working_px, max_binned_px)
    H, W = shape
    hb, wb = -(-H // f), -(-W // f)
    sums = np.zeros((hb, wb), np.float64)
    cnt = np.zeros((hb, wb), np.int64)
    for fname, x0, y0 in tqdm(pos, desc="support mask (frames)", unit="frame",
                              disable=not progress or len(pos) < 2):
        img = read(Path(folder) / fname, pixel_size_nm=read_pixel_size_nm).data
        gy, gx = int(round(y0)), int(round(x0))
        # crop to the mosaic [0, H) × [0, W)
        cy, cx = max(0, -gy), max(0, -gx)
        img = img[cy:max(cy, H - gy), cx:max(cx, W - gx)]
        gy, gx = gy + cy, gx + cx
        h, w = img.shape
        if not h or not w:
            continue
        oy, ox = gy % f, gx % f
        bh, bw = -(-(oy + h) // f), -(-(ox + w) // f)
        a = np.full((bh * f, bw * f), np.nan)
        a[oy:oy + h, ox:ox + w] = img
        blocks = a.reshape(bh, f, bw, f)
        by, bx = gy // f, gx // f
        sums[by:by + bh, bx:bx + bw] += np.nansum(blocks, axis=(1, 3))
        cnt[by:by + bh, bx:bx + bw] += np.count_nonzero(~np.isnan(blocks), axis=(1, 3))
    covered = cnt > 0
    if not covered.any():
        raise FastsacInputError(Path(folder), "no frame lies inside the montage")
    binned = np.where(covered, sums / np.maximum(cnt, 1), 0.0)
    if not covered.all():  # gaps between frames: nearest covered block
        iy, ix = ndi.distance_transform_edt(~covered, return_distances=False, return_indices=True)
        binned = binned[iy, ix]
    return _mask_of_binned(binned.astype(np.float32), shape, f, pixel_size_nm, mp), f


def montage_in_support(xy: np.ndarray, mask, bin_factor: int, shape) -> np.ndarray:
    """(N,) int 1/0 per atom: support at its nearest pixel (``floor(x + ½)``,
    clipped to the image, as in :mod:`fastsac.pipeline`), looked up in the
    binned mask at ``(row // F, col // F)``; all 1 without a mask."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if mask is None or not len(xy):
        return np.ones(len(xy), np.int64)
    m = getattr(mask, "mask", mask)
    h, w = shape
    r = np.clip(np.floor(xy[:, 1] + 0.5).astype(int), 0, h - 1) // bin_factor
    c = np.clip(np.floor(xy[:, 0] + 0.5).astype(int), 0, w - 1) // bin_factor
    return m[r, c].astype(np.int64)


def support_png(path, mask) -> Path:
    """Write a binned support mask as an 8-bit PNG (255 = support, 0 = vacuum), atomically."""
    from PIL import Image

    from .io import atomic_path

    m = getattr(mask, "mask", mask)
    with atomic_path(path) as tmp:
        Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    return Path(path)


# --------------------------------------------------------------------------- statistics
def montage_statistics(xy: np.ndarray, *, shape, pixel_size_nm: float | None,
                       multimer_cutoff_nm: float = 0.23, name: str = "montage",
                       source: str | None = None, backend: str = "auto", mask=None,
                       mask_bin_factor: int = 1, stats_params: dict | None = None,
                       pair_correlation: bool = True, pair_correlation_params: dict | None = None):
    """Global NN distances, clusters, counts, density and dispersion statistics
    of a montage's point set.

    The same kernels and summary keys as :func:`fastsac.pipeline.analyze` (see
    docs/statistics.md), on the global coordinates, so a montage that also
    fits as one image gives identical numbers.

    ``mask`` is a :class:`~fastsac.support.MaskResult` on the
    ``mask_bin_factor``-binned grid (:func:`montage_support_mask`) or None
    (then like ``analyze(..., support_mask=False)``): atoms on vacuum are
    flagged, not dropped; density and the support Clark–Evans test use the
    support area (:func:`~fastsac.spatial.stats.dispersion` with the binned
    mask, never a full-resolution one). ``stats_params`` go to ``dispersion``
    (e.g. ``mask_correction="donnelly"``). ``pair_correlation``: Ripley's L
    and g(r) with envelopes into ``summary["pair_correlation"]``
    (:func:`fastsac.spatial.ripley.pair_correlation`, bounded in N;
    ``pair_correlation_params`` are its keyword arguments).

    Returns
    -------
    (nn_dist (N,), cluster_id (N,), cluster_size (N,), summary dict)
        ``nn_dist`` in nm when calibrated, else px.
    """
    return _statistics(xy, shape=shape, pixel_size_nm=pixel_size_nm,
                       multimer_cutoff_nm=multimer_cutoff_nm, name=name, source=source,
                       backend=backend, mask=mask, mask_bin_factor=mask_bin_factor,
                       stats_params=stats_params, pair_correlation=pair_correlation,
                       pair_correlation_params=pair_correlation_params)[:4]


def _statistics(xy, *, shape, pixel_size_nm, multimer_cutoff_nm=0.23, name="montage", source=None,
                backend="auto", mask=None, mask_bin_factor=1, stats_params=None,
                pair_correlation=True, pair_correlation_params=None, elements=None):
    """:func:`montage_statistics` plus the DispersionStats and PatternTest it
    summarised (for the plots)."""
    from .result import build_summary
    from .spatial import clusters, nearest_neighbors
    from .spatial.ripley import pair_correlation as pair_correlation_test
    from .spatial.stats import dispersion

    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    px = pixel_size_nm
    cutoff_px = multimer_cutoff_nm / (px or DEFAULT_PIXEL_SIZE_NM)
    if mask is not None:
        from .support import require_support

        require_support(mask, source or name)
    t0 = time.perf_counter()
    nn = nearest_neighbors(pts, backend=backend)
    cl = clusters(pts, cutoff=cutoff_px, backend=backend)
    disp = dispersion(pts, image_shape=tuple(int(s) for s in shape), pixel_size_nm=px,
                      mask=None if mask is None else getattr(mask, "mask", mask),
                      mask_bin_factor=mask_bin_factor, multimer_cutoff_px=cutoff_px,
                      backend=backend, **(stats_params or {}))
    t1 = time.perf_counter()
    pattern = None
    if pair_correlation and int(disp.in_support.sum()) >= 3:
        # The same test as frames, bounded in N (sub-window reference points).
        pattern = pair_correlation_test(disp.xy[disp.in_support], image_shape=tuple(int(s) for s in shape),
                                   mask=None if mask is None else getattr(mask, "mask", mask),
                                   mask_bin_factor=mask_bin_factor, pixel_size_nm=px,
                                   **(pair_correlation_params or {}))
    nn_dist = nn.distance * px if px else nn.distance
    summary = build_summary(
        disp, name=name, source=source, shape=shape, pixel_size_nm=px,
        pixel_size_source="override" if px else "none",
        mask_info=None if mask is None else mask.as_dict(), pattern=pattern,
        detector=None, timings={"statistics": t1 - t0, "pair_correlation": time.perf_counter() - t1},
        backends={"nearest_neighbors": nn.backend, "clusters": cl.backend},
        parameters={"multimer_cutoff_nm": multimer_cutoff_nm, "stats_params": stats_params or {},
                    "pair_correlation": pair_correlation,
                    "elements": list(elements) if elements else None})
    return nn_dist, cl.labels, cl.sizes, summary, disp, pattern


def analyze_montage(source, *, detector="classical", tile: int = 2048,
                    pixel_size_nm: float | None = None, multimer_cutoff_nm: float = 0.23,
                    runner=None, scratch_dir: str | None = None,
                    progress: bool = True, engine: str = "auto", support_mask: bool = True,
                    mask_params: dict | None = None,
                    stats_params: dict | None = None, missing_chunks: str = "error",
                    max_pixels: int | None = None, elements=None,
                    species: bool = True, estimate_pixel_size: bool = True) -> MontageResult:
    """Detect atoms on a montage and compute its global statistics.

    See :func:`detect_montage` for the tiling, :func:`montage_support_mask`
    for the support mask and :func:`montage_statistics` for the statistics.

    Parameters
    ----------
    support_mask : bool
        Find vacuum and report densities and Clark–Evans per support area, as
        :func:`fastsac.pipeline.analyze` does (atoms on vacuum are flagged,
        ``in_support``). On a montage small enough to be analysed whole, with
        the default bin factor, every statistic equals ``analyze``'s.
    mask_params : dict, optional
        Keyword arguments of :func:`montage_support_mask` (``bin_factor``,
        ``max_binned_px``, ``smooth_nm`` …).
    stats_params : dict, optional
        Keyword arguments of :func:`~fastsac.spatial.stats.dispersion`
        (``mask_correction="donnelly"`` skips the 199 Monte Carlo patterns).
    missing_chunks : {"error", "vacuum"}
        Chunks of a Zarr montage that were never written read as zeros. By
        default that is an error naming them (checked before any work);
        ``"vacuum"`` analyses them as vacuum (outside the support mask; the
        regions are listed in ``summary["missing_chunks"]``).
    max_pixels : int, optional
        Refuse a montage with more pixels (a header claiming an implausible
        size would otherwise start a job of hours).
    elements : sequence of str, optional
        Elements present (e.g. ``["Pt", "Pd"]``): species per atom by the
        Z-contrast mixture, fitted once over every atom of the montage
        (:func:`montage_species`; checked before any work). None:
        intensity classes whose number comes from the data, as for frames.
    species : bool
        Classify species at all (as :func:`fastsac.pipeline.analyze`; on by
        default, its cost is in docs/montage.md). ``clusters.csv``'s
        composition needs it.
    estimate_pixel_size : bool
        A montage without a calibration (and no ``pixel_size_nm``) gets its
        pixel size from the apparent size of its atoms, as frames do
        (:func:`fastsac.scale.estimate_atom_scale_sampled` on up to five
        2048² crops; summary ``pixel_size_source: "estimated from atom size"``
        and ``pixel_size_estimate``).

    Returns
    -------
    MontageResult
        ``support`` holds the binned MaskResult, ``support_bin`` its F.

    Raises
    ------
    FastsacInputError
        Unreadable input, missing chunks (unless ``"vacuum"``), a corrupt
        chunk or tile, NaN/inf in the montage: each naming the file and region.
    """
    if missing_chunks not in ("error", "vacuum"):
        raise ValueError(f"missing_chunks must be 'error' or 'vacuum', got {missing_chunks!r}")
    check_elements(elements)
    src = open_montage(source, pixel_size_nm=pixel_size_nm)
    H, W = src.shape
    if max_pixels is not None and H * W > max_pixels:
        raise FastsacInputError(src.path or "array", f"montage of {W}×{H} px ({H * W / 1e9:.3g} "
                                f"Gpx) exceeds the limit of {max_pixels / 1e9:.3g} Gpx; if the "
                                "size is real, confirm it with a larger --max-pixels")
    n_missing, n_chunks, examples = missing_chunks_of(src)
    holes: list = []
    if n_missing:
        if n_missing == n_chunks:
            raise FastsacInputError(src.path, f"montage holds no data: none of its {n_chunks} "
                                              "chunks was ever written")
        if missing_chunks == "error":
            ex = "; ".join(f"chunk {c} = rows {r[0]}:{r[1]}, columns {r[2]}:{r[3]}"
                           for c, r in examples[:3])
            raise FastsacInputError(src.path, f"{n_missing} of {n_chunks} chunks are missing "
                                              f"(e.g. {ex}); they would read as zeros. Pass "
                                              "--missing-chunks vacuum to analyse them as vacuum")
        holes = _missing_regions(src)
        if support_mask:
            mask_params = dict(mask_params or {}) | {"exclude": holes}
    px_source = ("override" if pixel_size_nm is not None
                 else "file" if src.pixel_size_nm is not None else "none")
    scale_estimate = None
    if src.pixel_size_nm is None and estimate_pixel_size:
        from dataclasses import replace

        from .scale import estimate_atom_scale_sampled

        scale_estimate = estimate_atom_scale_sampled(src.read, src.shape)
        if np.isfinite(scale_estimate.pixel_size_nm) and not scale_estimate.at_edge:
            src = replace(src, pixel_size_nm=float(scale_estimate.pixel_size_nm))
            px_source = "estimated from atom size"
    dets, owner, ncand, info = detect_montage(src, detector=detector, tile=tile, runner=runner,
                                              scratch_dir=scratch_dir, progress=progress,
                                              engine=engine)
    mask, f = None, 1
    tm = time.perf_counter()
    if support_mask:
        mp = dict(mask_params or {})
        if info.get("engine") == "torch" and str(info.get("device", "")).startswith("cuda"):
            # Detection ran on the GPU: the binned montage's mask goes there too
            # (same mask; on the CPU it would take longer than the detection).
            mp.setdefault("device", "cuda")
        mask, f = montage_support_mask(src, tile=tile, runner=runner, progress=progress, **mp)
    t0 = time.perf_counter()
    nn, cid, csz, summary, disp, pattern = _statistics(
        dets.xy, shape=src.shape, pixel_size_nm=src.pixel_size_nm,
        multimer_cutoff_nm=multimer_cutoff_nm, name=src.name, source=src.path,
        mask=mask, mask_bin_factor=f, stats_params=stats_params, elements=elements)
    t1 = time.perf_counter()
    sp = (montage_species(src, dets.xy, elements=elements, tile=tile or 2048, runner=runner,
                          progress=progress) if species or elements else None)
    ctable = _species_clusters(summary, dets.xy, cid, src.pixel_size_nm, sp)
    t_species = time.perf_counter() - t1
    prob = atom_probability(dets, pixel_size_nm=src.pixel_size_nm)
    summary["confidence"] = confidence_summary(
        prob, xy=dets.xy, in_support=montage_in_support(dets.xy, mask, f, src.shape),
        support_area_nm2=summary.get("support_area_nm2"),
        multimer_cutoff_px=multimer_cutoff_nm / (src.pixel_size_nm or DEFAULT_PIXEL_SIZE_NM),
        split_probability=dets.split_probability)
    tim = dict(dets.timings) | {"support_mask": t0 - tm, "statistics": t1 - t0,
                                "species_clusters": t_species}
    summary["detector"] = {"name": dets.detector, "params": dets.params}
    summary["montage"] = info | {"n_candidates": ncand}
    summary["pixel_size_source"] = px_source
    summary["pixel_size_estimate"] = None if scale_estimate is None else scale_estimate.as_dict()
    summary["provenance"]["parameters"]["estimate_pixel_size"] = estimate_pixel_size
    if holes:
        summary["missing_chunks"] = {"treated_as": "vacuum", "n": len(holes), "n_chunks": n_chunks,
                                     "area_px": int(sum((r[1] - r[0]) * (r[3] - r[2])
                                                        for r in holes)),
                                     "regions_yyxx": [list(map(int, r)) for r in holes]}
    summary["timings_s"] = tim
    return MontageResult(src.path or "array", src.shape, src.pixel_size_nm, dets, owner, nn, cid,
                         csz, summary, ncand, info, tim, mask, f, sp, ctable, disp, pattern)


# --------------------------------------------------------------------------- species and clusters
def _assign(intensity, intensity_err, *, elements, sigma_px: float, radius_px: int) -> SpeciesAssignment:
    """:func:`~fastsac.species.assign_species` over every atom, labelled as
    :func:`~fastsac.species.species_of_atoms` labels its photometry."""
    from dataclasses import replace

    return replace(assign_species(intensity, intensity_err=intensity_err, elements=elements),
                   feature=photometry_feature(sigma_px, radius_px))


def chunk_photometry(source: MontageSource, core, xy: np.ndarray, sigma_px: float,
                     radius_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photometry (intensity, its error, background) of the points whose
    nearest pixel lies in ``core`` (global px), on the core grown by the disc
    radius: every disc pixel inside the montage is inside that window, and a
    window clipped at the montage edge clips exactly where the whole image
    ends, so each value equals the whole image's (the offsets are integers:
    subtracting them is exact)."""
    win = _grow(core, radius_px, source.shape)
    raw = source.read(*win)
    off = np.array([win[2], win[0]], np.float64)
    ph = photometry(raw, xy - off, sigma_px=sigma_px, radius_px=radius_px)
    return ph.intensity, ph.intensity_err, ph.background


def montage_species(source, xy, *, pixel_size_nm: float | None = None, elements=None,
                    tile: int = 2048, runner=None, progress: bool = True) -> SpeciesAssignment:
    """Species of every atom of a montage: the species stage of
    :func:`fastsac.pipeline.analyze` on global coordinates.

    Each atom's intensity is measured by :func:`fastsac.species.photometry`
    core by core (in-process or as Dask tasks through ``runner``; only cores
    holding atoms are read), equal to the whole image's; then one mixture
    (:func:`fastsac.species.assign_species`) is fitted over all atoms of
    the montage. With two or more elements the support noise behind
    ``lightest_snr`` is measured in the same pass: the points of
    :func:`fastsac.species.support_grid` over the montage's shape (at most
    ~4000, computed once, globally) are measured with the atoms and reduced
    by :func:`fastsac.species.support_noise_of`. A montage that also fits as
    one image gets the frame's species, probabilities and summary block.

    Parameters
    ----------
    source : path, (H, W) array or MontageSource
    xy : (N, 2) array
        Atom positions [x, y], global px.
    pixel_size_nm : float, optional
        Overrides the montage's calibration (sets the photometry σ).
    elements : sequence of str, optional
        As in :func:`fastsac.pipeline.analyze`.
    tile : int
        Core edge in px when reading.

    Returns
    -------
    SpeciesAssignment
    """
    check_elements(elements)
    src = open_montage(source, pixel_size_nm=pixel_size_nm)
    atoms = np.asarray(xy, np.float64).reshape(-1, 2)
    n = len(atoms)
    sigma = photometry_sigma_px(src.pixel_size_nm)
    radius = photometry_radius_px(sigma)
    want_noise = wants_lightest_snr(elements)
    grid = support_grid(src.shape, atoms, sigma_px=sigma) if want_noise else np.zeros((0, 2))
    pts = np.concatenate([atoms, grid])
    H, W = src.shape
    tile = int(tile)
    ncols = -(-W // tile)
    cx = np.clip(np.floor(pts[:, 0] + 0.5), 0, W - 1).astype(np.int64)
    cy = np.clip(np.floor(pts[:, 1] + 0.5), 0, H - 1).astype(np.int64)
    core_of = (cy // tile) * ncols + cx // tile
    order = np.argsort(core_of, kind="stable")
    cores = plan_cores(src.shape, tile=tile)
    bounds = np.searchsorted(core_of[order], np.arange(len(cores) + 1))
    todo = [k for k in range(len(cores)) if bounds[k + 1] > bounds[k]]
    inten = np.full(len(pts), np.nan)
    err = np.full(len(pts), np.nan)
    bg = np.full(len(pts), np.nan)
    runner = runner or _Runner(progress)
    args = [(src, cores[k], pts[order[bounds[k]:bounds[k + 1]]], sigma, radius) for k in todo]
    for k, (i, e, b) in zip(todo, runner.map(chunk_photometry, args, desc="species (photometry)")):
        idx = order[bounds[k]:bounds[k + 1]]
        inten[idx] = i
        err[idx] = e
        bg[idx] = b
    res = _assign(inten[:n], err[:n], elements=elements, sigma_px=sigma, radius_px=radius)
    if want_noise:
        noise = support_noise_of(inten[n:], bg[n:], atom_background=bg[:n] if n else np.zeros(0))
        res = with_lightest_snr(res, inten[:n], noise)
    return res


def species_columns(species: SpeciesAssignment | None) -> dict[str, np.ndarray]:
    """Atoms-table columns ``species``, ``species_probability`` (none without species),
    as :func:`fastsac.pipeline.analyze` adds them."""
    if species is None:
        return {}
    return {"species": species.species, "species_probability": species.probability}


def _species_clusters(summary: dict, xy, labels, pixel_size_nm, sp) -> ClusterTable:
    """The cluster table (composition from the species when they are assigned)
    and the summary blocks ``species`` and ``cluster_size_distribution``, as frames."""
    ctable = cluster_table(xy, labels, pixel_size_nm=pixel_size_nm,
                           species=sp.species if sp is not None and sp.status == "ok" else None)
    summary["species"] = None if sp is None else sp.as_dict()
    summary["cluster_size_distribution"] = ctable.size_distribution()
    return ctable


def write_montage_result(result: MontageResult, out_dir, *, plots: bool = True) -> dict:
    """Every view of a montage result in ``out_dir``, by the writers frames use
    (:mod:`fastsac.result`, :mod:`fastsac.figures`); nothing is recomputed:
    ``atoms.parquet`` (with the summary in its metadata), ``summary.json``,
    ``clusters.csv``, ``support_mask.png`` (binned; removed when there is no
    mask, so no stale one remains) and, with ``plots``, ``nn_histogram.png``,
    ``cluster_sizes.png`` and ``pair_correlation.png`` (without ``plots``, plots
    of an earlier run in ``out_dir`` are removed). Returns {name: path}."""
    from . import figures
    from .io import write_json
    from .result import write_clusters_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": write_parquet(out / "atoms.parquet", result),
             "summary": write_json(out / "summary.json", result.statistics)}
    if result.cluster_table is not None:
        paths["clusters"] = write_clusters_csv(out / "clusters.csv", result.cluster_table)
    if result.support is not None:
        paths["support_mask"] = support_png(out / "support_mask.png", result.support)
    else:
        (out / "support_mask.png").unlink(missing_ok=True)
    if plots and result.stats is not None:
        paths.update(figures.save_statistics_plots(out, result.stats, result.pattern,
                                                   cluster_table=result.cluster_table))
    # A plot this run did not draw (plots off, no pattern test) would describe an
    # earlier run's atoms: remove it rather than leave it beside these results.
    for name in ("nn_histogram", "cluster_sizes", "pair_correlation"):
        if name not in paths:
            (out / f"{name}.png").unlink(missing_ok=True)
    return paths


# --------------------------------------------------------------------------- parquet
def write_parquet(path, result: MontageResult) -> Path:
    """Write the detections (global coordinates, :data:`PARQUET_COLUMNS`) atomically,
    with the summary as JSON in the file's key-value metadata
    (:func:`fastsac.result.write_atoms_parquet`, the frames' writer)."""
    from .result import write_atoms_parquet

    return write_atoms_parquet(path, result.table(), result.statistics)


def read_parquet(path) -> tuple[dict[str, np.ndarray], dict]:
    """Columns and summary written by :func:`write_parquet`."""
    from .result import read_atoms_parquet

    return read_atoms_parquet(path)


# --------------------------------------------------------------------------- folder mode
def read_positions(path, *, pixel_size_nm: float | None = None) -> list[tuple[str, float, float]]:
    """Frame positions: a CSV with a file column (``file``/``filename``/``name``)
    and the frame's top-left corner as ``x_px,y_px`` (or ``x,y``: pixels) or
    ``x_nm,y_nm`` (stage coordinates in nm; needs the pixel size).

    Returns ``[(file, x0_px, y0_px), …]``.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise FastsacInputError(path, "positions CSV not found")
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    if not rows:
        raise FastsacInputError(path, "positions CSV has no rows")
    cols = {c.strip().lower(): c for c in rows[0]}
    fk = next((cols[k] for k in ("file", "filename", "name", "path") if k in cols), None)
    if fk is None:
        raise FastsacInputError(path, f"positions CSV needs a file column, found {list(cols)}")
    if "x_nm" in cols and "y_nm" in cols:
        if not pixel_size_nm:
            raise FastsacInputError(path, "positions are in nm (x_nm, y_nm) but the pixel size "
                                          "is unknown; pass pixel_size_nm / --pixel-size")
        xk, yk, scale = cols["x_nm"], cols["y_nm"], 1.0 / pixel_size_nm
    else:
        xk = cols.get("x_px", cols.get("x"))
        yk = cols.get("y_px", cols.get("y"))
        scale = 1.0
        if xk is None or yk is None:
            raise FastsacInputError(path, "positions CSV needs x_px,y_px (or x,y) or x_nm,y_nm")
    out = []
    for n, r in enumerate(rows, start=2):
        try:
            out.append((r[fk].strip(), float(r[xk]) * scale, float(r[yk]) * scale))
        except (TypeError, ValueError):
            raise FastsacInputError(path, f"line {n}: cannot read a position from {r}") from None
    return out


def analyze_frames(folder, positions, *, detector="classical", pixel_size_nm: float | None = None,
                   multimer_cutoff_nm: float = 0.23, dedup: str = "ownership",
                   dedup_radius_nm: float | None = None, progress: bool = True,
                   support_mask: bool = True, mask_params: dict | None = None,
                   stats_params: dict | None = None, elements=None,
                   species: bool = True) -> MontageResult:
    """A montage given as overlapping frames with stage positions.

    With ``support_mask`` the vacuum is found on the binned mosaic of the
    frames (:func:`frames_support_mask`); densities are then per support area
    as in :func:`analyze_montage` (``mask_params``: ``max_binned_px`` and
    :func:`~fastsac.support.support_mask` arguments; ``stats_params`` go
    to :func:`~fastsac.spatial.stats.dispersion`).

    Each frame is detected whole; detections are shifted by the frame's
    position into global pixels. In overlaps each atom is seen by several
    frames; ``dedup`` keeps one:

    - ``"ownership"``: a detection is kept only by the frame whose centre is
      nearest to it among the frames that contain it (for a regular grid: the
      overlap's mid-line), then any two survivors closer than the radius
      (an atom straddling the mid-line) are merged, keeping the higher score.
    - ``"score"``: detections from different frames closer than the radius
      are merged, keeping the highest score.

    ``dedup_radius_nm`` defaults to the detector's NMS distance.

    Species (``elements``, ``species`` as in :func:`analyze_montage`): each
    atom's intensity is measured on the frame it was kept from, then one
    mixture is fitted over all atoms.
    """
    from .io import read

    check_elements(elements)
    want_species = bool(species or elements)

    folder = Path(folder)
    if isinstance(positions, list):
        pos = positions
    else:
        px_pos = pixel_size_nm
        if px_pos is None:  # stage positions in nm: use the frames' own calibration
            import csv

            with open(positions, encoding="utf-8-sig", newline="") as fh:
                first = next(csv.DictReader(fh), None)
            fk = next((k for k in (first or {}) if k.strip().lower() in
                       ("file", "filename", "name", "path")), None)
            if first and fk and (folder / first[fk].strip()).is_file():
                px_pos = read(folder / first[fk].strip()).pixel_size_nm
        pos = read_positions(positions, pixel_size_nm=px_pos)
    det = get_detector(detector)
    if dedup not in ("ownership", "score"):
        raise ValueError(f"dedup must be 'ownership' or 'score', got {dedup!r}")
    from tqdm import tqdm

    parts, frames, px_seen, phot = [], [], pixel_size_nm, []
    t0 = time.perf_counter()
    for i, (fname, x0, y0) in enumerate(tqdm(pos, desc="frames", unit="frame",
                                            disable=not progress or len(pos) < 2)):
        m = read(folder / fname, pixel_size_nm=pixel_size_nm)
        px_seen = px_seen or m.pixel_size_nm
        d = det.detect(m)
        h, w = m.shape
        frames.append((x0, y0, w, h))
        parts.append((i, d.subset(np.arange(len(d))), np.array([x0, y0])))
        if want_species:  # measured on the frame while it is in memory
            ph = photometry(m.data, d.xy, sigma_px=photometry_sigma_px(px_seen))
            phot.append((ph.intensity, ph.intensity_err, ph.background, ph.sigma_px, ph.radius_px))
    frames_a = np.asarray(frames, np.float64).reshape(-1, 4)
    xs, keep_cols, owner = [], [], []
    for i, d, off in parts:
        g = d.xy + off
        if dedup == "ownership" and len(g):
            cx = frames_a[:, 0] + (frames_a[:, 2] - 1) / 2
            cy = frames_a[:, 1] + (frames_a[:, 3] - 1) / 2
            inside = ((g[:, None, 0] >= frames_a[None, :, 0])
                      & (g[:, None, 0] <= frames_a[None, :, 0] + frames_a[None, :, 2] - 1)
                      & (g[:, None, 1] >= frames_a[None, :, 1])
                      & (g[:, None, 1] <= frames_a[None, :, 1] + frames_a[None, :, 3] - 1))
            d2 = (g[:, None, 0] - cx[None]) ** 2 + (g[:, None, 1] - cy[None]) ** 2
            d2 = np.where(inside, d2, np.inf)
            mine = np.argmin(d2, axis=1) == i  # argmin: ties to the lower frame index
            d = d.subset(mine)
            g = g[mine]
            if want_species:
                phot[i] = tuple(v[mine] for v in phot[i][:3]) + phot[i][3:]
        xs.append(g)
        keep_cols.append(d)
        owner.append(np.full(len(g), i, np.int64))
    xy = np.concatenate(xs) if xs else np.zeros((0, 2))
    cat = {k: np.concatenate([getattr(d, k) for d in keep_cols]) if keep_cols else np.zeros(0)
           for k in ("score",) + peaks.FIT_COLUMNS}
    own = np.concatenate(owner) if owner else np.zeros(0, np.int64)
    px = px_seen
    r_px = (dedup_radius_nm if dedup_radius_nm is not None
            else getattr(det, "min_distance_nm", 0.176)) / (px or DEFAULT_PIXEL_SIZE_NM)
    # Merge cross-frame duplicates within the radius, highest score first.
    keep = _dedup_across(xy, cat["score"], own, r_px) if len(xy) else np.zeros(0, np.int64)
    keep = np.sort(keep)
    split = None
    if keep_cols and all(d.split_probability is not None for d in keep_cols):
        split = np.concatenate([d.split_probability for d in keep_cols])[keep]
    dets = Detections(xy=xy[keep].reshape(-1, 2), **{k: cat[k][keep] for k in
                                                     ("score",) + peaks.FIT_COLUMNS},
                      detector=det.name, params=det.params(),
                      timings={"detect": time.perf_counter() - t0}, split_probability=split)
    x_hi = float((frames_a[:, 0] + frames_a[:, 2]).max()) if len(frames_a) else 0.0
    y_hi = float((frames_a[:, 1] + frames_a[:, 3]).max()) if len(frames_a) else 0.0
    x_lo = float(frames_a[:, 0].min()) if len(frames_a) else 0.0
    y_lo = float(frames_a[:, 1].min()) if len(frames_a) else 0.0
    shape = (int(math.ceil(y_hi - y_lo)), int(math.ceil(x_hi - x_lo)))
    mask, f = None, 1
    tm = time.perf_counter()
    if support_mask and len(pos):
        mask, f = frames_support_mask(folder, pos, shape, pixel_size_nm=px,
                                      read_pixel_size_nm=pixel_size_nm, progress=progress,
                                      **(mask_params or {}))
    t_mask = time.perf_counter() - tm
    nn, cid, csz, summary, disp, pattern = _statistics(
        dets.xy, shape=shape, pixel_size_nm=px, multimer_cutoff_nm=multimer_cutoff_nm,
        name=folder.name, source=os.fspath(folder), mask=mask, mask_bin_factor=f,
        stats_params=stats_params, elements=elements)
    summary["timings_s"]["support_mask"] = t_mask
    # The bounding box over-counts area where frames leave gaps; report the union too.
    summary["frames"] = len(pos)
    summary["dedup"] = {"method": dedup, "radius_px": r_px,
                        "removed": int(sum(len(d) for _, d, _ in parts) - len(dets))}
    summary["detector"] = {"name": dets.detector, "params": dets.params}
    sp = None
    ts = time.perf_counter()
    if want_species:
        inten = np.concatenate([p[0] for p in phot])[keep] if phot else np.zeros(0)
        err = np.concatenate([p[1] for p in phot])[keep] if phot else np.zeros(0)
        sigma = phot[0][3] if phot else photometry_sigma_px(px)
        radius = phot[0][4] if phot else photometry_radius_px(sigma)
        sp = _assign(inten, err, elements=elements, sigma_px=sigma, radius_px=radius)
        if wants_lightest_snr(elements):
            bg = np.concatenate([p[2] for p in phot])[keep] if phot else np.zeros(0)
            noise = _frames_support_noise(folder, pos, frames_a, (x_lo, y_lo), shape, dets.xy, bg,
                                          sigma_px=sigma, pixel_size_nm=pixel_size_nm)
            sp = with_lightest_snr(sp, inten, noise)
    ctable = _species_clusters(summary, dets.xy, cid, px, sp)
    summary["timings_s"]["species_clusters"] = time.perf_counter() - ts
    prob = atom_probability(dets, pixel_size_nm=px)
    summary["confidence"] = confidence_summary(
        prob, xy=dets.xy, in_support=montage_in_support(dets.xy, mask, f, shape),
        support_area_nm2=summary.get("support_area_nm2"),
        multimer_cutoff_px=multimer_cutoff_nm / (px or DEFAULT_PIXEL_SIZE_NM),
        split_probability=dets.split_probability)
    return MontageResult(os.fspath(folder), shape, px, dets, own[keep], nn, cid, csz, summary,
                         len(xy), {"dedup": dedup}, dict(dets.timings), mask, f, sp, ctable,
                         disp, pattern)


def _frames_support_noise(folder, pos, frames_a, origin, shape, xy, atom_background, *,
                          sigma_px: float, pixel_size_nm: float | None) -> float:
    """:func:`fastsac.species.support_noise` of a folder montage: the grid of
    :func:`~fastsac.species.support_grid` over the mosaic (global, from all
    kept atoms), each point measured on the frame that contains it with the
    nearest centre (the frames holding grid points are read once more)."""
    from .io import read

    grid = support_grid(shape, xy - np.asarray(origin), sigma_px=sigma_px) + np.asarray(origin)
    inten = np.full(len(grid), np.nan)
    bg = np.full(len(grid), np.nan)
    if len(grid) and len(frames_a):
        x0, y0, w, h = frames_a.T
        inside = ((grid[:, None, 0] >= x0) & (grid[:, None, 0] <= x0 + w - 1)
                  & (grid[:, None, 1] >= y0) & (grid[:, None, 1] <= y0 + h - 1))
        d2 = (grid[:, None, 0] - (x0 + (w - 1) / 2)) ** 2 + (grid[:, None, 1] - (y0 + (h - 1) / 2)) ** 2
        d2 = np.where(inside, d2, np.inf)
        owner = np.where(inside.any(1), np.argmin(d2, axis=1), -1)
        for i in np.unique(owner[owner >= 0]):
            sel = owner == i
            m = read(folder / pos[i][0], pixel_size_nm=pixel_size_nm)
            ph = photometry(m.data, grid[sel] - frames_a[i, :2], sigma_px=sigma_px)
            inten[sel], bg[sel] = ph.intensity, ph.background
    return support_noise_of(inten, bg, atom_background=atom_background)


def _dedup_across(xy, score, frame, radius):
    """Greedy by descending score: drop a point within ``radius`` of a kept
    point *from another frame* (same-frame neighbours were already resolved by
    the detector's own NMS)."""
    from scipy.spatial import cKDTree

    order = np.lexsort((np.arange(len(xy)), -np.nan_to_num(score, nan=-np.inf)))
    tree = cKDTree(xy)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    pairs = pairs[frame[pairs[:, 0]] != frame[pairs[:, 1]]]
    if not len(pairs):
        return np.arange(len(xy))
    nbrs: dict[int, list[int]] = {}
    for a, b in pairs.tolist():
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    alive = np.ones(len(xy), bool)
    kept = np.zeros(len(xy), bool)
    for i in order.tolist():
        if not alive[i]:
            continue
        kept[i] = True
        for j in nbrs.get(i, ()):
            if not kept[j]:
                alive[j] = False
    return np.flatnonzero(kept)
