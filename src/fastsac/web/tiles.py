"""Deep-zoom (DZI) tile pyramids, served on demand, for frames and montages.

OpenSeadragon asks for ``<name>.dzi`` (the pyramid's size) and then for tiles
``<name>_files/<level>/<col>_<row>.jpeg``. Level ``L`` shows the image
down-sampled by ``d = 2**(max_level - L)`` (block means). A tile is made the
first time it is asked for and kept in a bounded LRU cache.

* :class:`FramePyramid`: a frame in memory (uploads are limited in pixels);
  levels are built lazily, each from the one above it.
* :class:`MontagePyramid`: a montage read through
  :class:`fastsac.montage.MontageSource` (BigTIFF, Zarr, ``.npy``) without ever
  loading it whole. An overview binned by ``f`` (a power of two, at most
  ``overview_px`` on a side) is built once, streamed band by band, and cached
  on disk, with every coarser level made from it; levels at or below ``1/f``
  come from these, finer levels read only the tile's own region of the source. So after the overview exists, every tile of
  a 32768² montage costs one read of at most ``tile·f/2`` px on a side.

Intensities are mapped to 8 bits by the 0.5th–99.8th percentiles of the frame
(of the overview for a montage), the same on every tile.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["DeepZoom", "FramePyramid", "MontagePyramid", "TileCache", "block_mean", "mask_overlay_png"]


def block_mean(a: np.ndarray, d: int) -> np.ndarray:
    """``d × d`` block means (float32); a ragged last block is completed by
    repeating the edge row/column (as :func:`fastsac.spatial.mask.bin_mean` does)."""
    if d == 1:
        return np.asarray(a, np.float32)
    h, w = a.shape
    hh, ww = -(-h // d), -(-w // d)
    a = np.asarray(a, np.float32)
    if hh * d != h or ww * d != w:
        a = np.pad(a, ((0, hh * d - h), (0, ww * d - w)), mode="edge")
    return a.reshape(hh, d, ww, d).mean(axis=(1, 3), dtype=np.float32)


def display_range(sample: np.ndarray) -> tuple[float, float]:
    finite = sample[np.isfinite(sample)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.8])
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = (np.asarray(a, np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.nan_to_num(out, nan=0.0), 0, 255).astype(np.uint8)


class TileCache:
    """A thread-safe LRU of encoded tiles, bounded in bytes."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._d: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key, value: bytes) -> None:
        with self._lock:
            if key in self._d:
                return
            self._d[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes and self._d:
                _, old = self._d.popitem(last=False)
                self._bytes -= len(old)


class DeepZoom:
    """DZI geometry and tile encoding over a pyramid with ``region(d, y0, y1, x0, x1)``
    returning the level-``d`` pixels (uint8) of that level-coordinate window."""

    def __init__(self, pyramid, *, key, cache: TileCache, tile_size: int = 254, overlap: int = 1,
                 quality: int = 85):
        self.pyramid = pyramid
        self.key = key
        self.cache = cache
        self.tile_size = tile_size
        self.overlap = overlap
        self.quality = quality
        self.height, self.width = pyramid.shape
        self.max_level = max(0, math.ceil(math.log2(max(self.width, self.height))))

    def dzi(self) -> str:
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
                f'Format="jpeg" Overlap="{self.overlap}" TileSize="{self.tile_size}">'
                f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n')

    def level_shape(self, level: int) -> tuple[int, int]:
        d = 2 ** (self.max_level - level)
        return -(-self.height // d), -(-self.width // d)

    def tile(self, level: int, col: int, row: int) -> bytes | None:
        """JPEG bytes of one tile, or None when it does not exist."""
        if not 0 <= level <= self.max_level:
            return None
        lh, lw = self.level_shape(level)
        t = self.tile_size
        if col < 0 or row < 0 or col * t >= lw or row * t >= lh:
            return None
        key = (self.key, level, col, row)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        x0 = max(0, col * t - self.overlap)
        y0 = max(0, row * t - self.overlap)
        x1 = min(lw, (col + 1) * t + self.overlap)
        y1 = min(lh, (row + 1) * t + self.overlap)
        pix = self.pyramid.region(2 ** (self.max_level - level), y0, y1, x0, x1)
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pix)).save(buf, format="JPEG", quality=self.quality)
        data = buf.getvalue()
        self.cache.put(key, data)
        return data


class FramePyramid:
    """Levels of one in-memory frame, each built on first use from the one above."""

    def __init__(self, data: np.ndarray):
        data = np.asarray(data)
        self.shape = data.shape
        step = max(1, int(math.sqrt(data.size / 1e6)))
        self.lo, self.hi = display_range(data[::step, ::step])
        self._levels = {1: to_uint8(data, self.lo, self.hi)}
        self._lock = threading.Lock()

    def level(self, d: int) -> np.ndarray:
        with self._lock:
            if d not in self._levels:
                k = max(k for k in self._levels if k < d)
                a = self._levels[k]
                while k < d:
                    a = block_mean(a, 2).round().astype(np.uint8)
                    k *= 2
                    self._levels[k] = a
            return self._levels[d]

    def region(self, d: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.level(d)[y0:y1, x0:x1]


class MontagePyramid:
    """Levels of a montage: coarse ones from a cached overview, fine ones read
    from the source region by region (see the module docstring)."""

    def __init__(self, source, *, cache_dir: str | Path, overview_px: int = 4096, band_rows: int = 1024):
        self.source = source
        self.shape = tuple(source.shape)
        h, w = self.shape
        f = 1
        while -(-max(h, w) // f) > overview_px:
            f *= 2
        self.f = f
        self.cache_dir = Path(cache_dir)
        self.band_rows = max(f, band_rows // f * f)
        self._overview = None
        self._levels: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.lo = self.hi = None

    def overview(self) -> np.ndarray:
        """The montage binned by ``f`` (float32), built once and cached in ``cache_dir``;
        every coarser level is made from it at the same time (each from the one
        below, a quarter of its size), so the first screen only slices and encodes."""
        with self._lock:
            if self._overview is None:
                ov = self._load_or_build()
                self.lo, self.hi = display_range(ov)
                lev, d = ov, self.f
                self._levels[d] = to_uint8(lev, self.lo, self.hi)
                while max(lev.shape) > 1:
                    lev, d = block_mean(lev, 2), d * 2
                    self._levels[d] = to_uint8(lev, self.lo, self.hi)
                self._overview = ov
            return self._overview

    def _load_or_build(self) -> np.ndarray:
        import os

        from ..io import atomic_path

        st = os.stat(self.source.path) if self.source.path else None
        stamp = f"{self.f}-{st.st_mtime_ns}-{st.st_size}" if st else None
        path = self.cache_dir / f"overview-{stamp}.npy" if stamp else None
        if path is not None and path.is_file():
            ov = np.load(path, allow_pickle=False)
            if ov.shape == (-(-self.shape[0] // self.f), -(-self.shape[1] // self.f)):
                return ov
        h, w = self.shape
        src = self.source
        arr = src.open()
        bands = [block_mean(src.read(y, min(h, y + self.band_rows), 0, w, arr=arr), self.f)
                 for y in range(0, h, self.band_rows)]
        ov = np.concatenate(bands, axis=0)
        if path is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for old in self.cache_dir.glob("overview-*.npy"):
                old.unlink(missing_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, ov, allow_pickle=False)
        return ov

    def region(self, d: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        ov = self.overview()
        if d >= self.f:
            lev = self._levels.get(d)
            if lev is None:  # coarser than a 1-px level: cannot happen for DZI levels ≥ 0
                lev = to_uint8(block_mean(ov, d // self.f), self.lo, self.hi)
            return lev[y0:y1, x0:x1]
        h, w = self.shape
        raw = self.source.read(y0 * d, min(h, y1 * d), x0 * d, min(w, x1 * d))
        return to_uint8(block_mean(raw, d), self.lo, self.hi)


def mask_overlay_png(mask_png: str | Path) -> bytes:
    """The support mask (255 support / 0 vacuum PNG) as an RGBA overlay: vacuum
    opaque blue, support transparent (the viewer draws it at partial opacity)."""
    from PIL import Image

    m = np.asarray(Image.open(mask_png).convert("L")) > 127
    rgba = np.zeros(m.shape + (4,), np.uint8)
    rgba[~m] = (40, 110, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()
