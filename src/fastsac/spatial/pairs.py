"""Kernels of the second-order statistics: pair-distance histograms with the
translation edge correction, and the set covariance of a window.

Neither builds a pair list or an image-sized FFT: pairs are counted straight
into histograms on a cell grid (memory O(N + bins)), and the set covariance
``γ(u) = |A ∩ (B − u)|`` is computed from the masks' row runs for the lags
``|u_x|, |u_y| ≤ L`` that the statistics need (memory O(L²), exact integers).
The numpy/scipy references (cKDTree pairs, FFT correlation of the whole
masks) are the specs the C++ kernels are tested against.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .._backend import Kernel, core

__all__ = ["pair_histogram", "pair_histogram_backend", "set_covariance_table", "weight_table"]


# --------------------------------------------------------------------------- pair histograms


def _pair_histogram_numpy_ref(xy: np.ndarray, bin_width: float, n_bins: int, area: float,
                              rect_w: float, rect_h: float, wtable: np.ndarray, ref: np.ndarray):
    """Spec. Over ordered pairs (i, j), i ≠ j, with i a reference point
    (``ref[i]``; every point when ``ref`` is empty) and
    ``b = floor(d · (1/bin_width)) < n_bins``, ``d = sqrt(dx*dx + dy*dy)`` in
    float64, ``u = x_j − x_i``: ``hk[b] += w(u)`` and
    ``hg[b] += w(u) / (2π max(d, 1e-12))`` with ``w = area / γ(u)`` (0 where
    γ ≤ 0). γ is the rectangle ``(rect_w − |dx|)₊ (rect_h − |dy|)₊`` when
    ``wtable`` is empty, else ``w = wtable[round(dy) + L, round(dx) + L]``
    (half to even) of a (2L+1, 2L+1) float32 table of area/γ, which must be
    symmetric when every point is a reference (then each unordered pair adds
    ``2 w(u)``)."""
    hk, hg = np.zeros(n_bins), np.zeros(n_bins)
    if len(xy) < 2:
        return hk, hg
    reach = bin_width * n_bins
    pairs = cKDTree(xy).query_pairs(reach * (1 + 1e-9) + 1e-300, output_type="ndarray")
    if not len(pairs):
        return hk, hg
    i, j = pairs[:, 0], pairs[:, 1]
    dx = xy[j, 0] - xy[i, 0]
    dy = xy[j, 1] - xy[i, 1]
    d = np.sqrt(dx * dx + dy * dy)
    f = np.floor(d * (1.0 / bin_width))
    keep = f < n_bins
    i, j, dx, dy, d, b = i[keep], j[keep], dx[keep], dy[keep], d[keep], f[keep].astype(np.int64)

    def weight(ux, uy):
        if wtable.size:
            lag = (wtable.shape[0] - 1) // 2
            ix = np.clip(np.rint(ux).astype(np.int64) + lag, 0, 2 * lag)
            iy = np.clip(np.rint(uy).astype(np.int64) + lag, 0, 2 * lag)
            return wtable[iy, ix].astype(np.float64)
        gamma = np.maximum(rect_w - np.abs(ux), 0.0) * np.maximum(rect_h - np.abs(uy), 0.0)
        return np.where(gamma > 0, area / np.maximum(gamma, 1e-12), 0.0)

    if ref.size:
        w = (np.where(ref[i].astype(bool), weight(dx, dy), 0.0)
             + np.where(ref[j].astype(bool), weight(-dx, -dy), 0.0))
    else:  # the table is symmetric: both orders weigh w(u)
        w = 2.0 * weight(dx, dy)
    hk = np.bincount(b, weights=w, minlength=n_bins)
    hg = np.bincount(b, weights=w / (2 * np.pi * np.maximum(d, 1e-12)), minlength=n_bins)
    return hk, hg


_pair_histogram_kernel = Kernel("pair_histogram", _pair_histogram_numpy_ref)


@_pair_histogram_kernel.register("cpp")
def _pair_histogram_cpp(xy, bin_width, n_bins, area, rect_w, rect_h, wtable, ref):
    hk, hg = core().pair_histogram(xy, float(bin_width), int(n_bins), float(area), float(rect_w),
                                   float(rect_h), wtable, ref)
    return np.asarray(hk), np.asarray(hg)


def pair_histogram_backend(backend: str = "auto") -> str:
    """The backend :func:`pair_histogram` resolves ``backend`` to (raises if unavailable)."""
    return _pair_histogram_kernel.resolve(backend).value


def pair_histogram(xy: np.ndarray, *, bin_width: float, n_bins: int, area: float,
                   rect_shape: tuple | None = None, table: np.ndarray | None = None,
                   ref: np.ndarray | None = None, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Translation-weighted histograms of the ordered pair distances below ``bin_width · n_bins``.

    Parameters
    ----------
    xy : (N, 2) float64
        Positions, px (C-contiguous; the caller validates).
    bin_width : float
        Bin width, px; bin ``b`` holds ``b·bin_width ≤ d < (b+1)·bin_width``.
    n_bins : int
    area : float
        Window area |W|, px² (the numerator of the weights).
    rect_shape : (H, W), optional
        The window is this rectangle: γ(u) = (W − |dx|)(H − |dy|), exact.
    table : (2L+1, 2L+1) float64, optional
        γ at integer lags (:func:`set_covariance_table`), ``L ≥ bin_width·n_bins``;
        or the weights ``area/γ`` as float32 (:func:`weight_table`, to reuse
        over many patterns).
    ref : (N,) bool, optional
        Reference points (pairs (i, j) count only for reference i); default all.

    Returns
    -------
    hk, hg : (n_bins,) float64
        Σ |W|/γ(u) and Σ |W|/(γ(u)·2πd) over the ordered pairs of each bin.
    """
    if (rect_shape is None) == (table is None):
        raise ValueError("give exactly one of rect_shape (rectangle) and table (mask)")
    if table is None:
        rect_h, rect_w = (float(s) for s in rect_shape)
        table = np.zeros((0, 0), np.float32)
    else:
        rect_h = rect_w = 0.0
        if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] % 2 != 1:
            raise ValueError(f"table must be (2L+1, 2L+1), got {table.shape}")
        if (table.shape[0] - 1) // 2 < bin_width * n_bins:
            raise ValueError(f"table lag {(table.shape[0] - 1) // 2} < reach {bin_width * n_bins}")
        table = np.ascontiguousarray(table if table.dtype == np.float32 else weight_table(table, area=area))
    if ref is None:
        ref = np.zeros(0, np.uint8)
    else:
        ref = np.ascontiguousarray(ref, dtype=bool).view(np.uint8)
        if ref.shape != (len(xy),):
            raise ValueError(f"ref must have shape ({len(xy)},), got {ref.shape}")
    b = _pair_histogram_kernel.resolve(backend)
    return _pair_histogram_kernel.impls[b](xy, bin_width, int(n_bins), area, rect_w, rect_h, table, ref)


def weight_table(gamma: np.ndarray, *, area: float) -> np.ndarray:
    """Translation-correction weights ``area / γ`` (0 where γ ≤ 0) as float32,
    the form :func:`pair_histogram` reads (half the memory: fewer cache misses)."""
    gamma = np.asarray(gamma, np.float64)
    return np.where(gamma > 0, area / np.maximum(gamma, 1e-12), 0.0).astype(np.float32)


# --------------------------------------------------------------------------- set covariance


def _set_covariance_table_numpy_ref(mask_a: np.ndarray, mask_b: np.ndarray, image_shape: tuple,
                                    bin_factor: int, lag: int):
    """Spec: the FFT correlation of the full-resolution masks,
    ``γ(dx, dy) = Σ_p a(p) b(p + (dx, dy))``, at ``|dx|, |dy| ≤ lag``, rounded
    to integers, as ``table[dy + lag, dx + lag]``."""
    from scipy.signal import fftconvolve

    h, w = (int(s) for s in image_shape)
    f = int(bin_factor)

    def full(m):
        m = np.asarray(m, dtype=bool)
        if f > 1:
            m = np.repeat(np.repeat(m, f, 0), f, 1)[:h, :w]
        return m.astype(np.float64)

    a, b = full(mask_a), full(mask_b)
    corr = np.rint(fftconvolve(a[::-1, ::-1], b, mode="full"))  # index (dy + h - 1, dx + w - 1)
    out = np.zeros((2 * lag + 1, 2 * lag + 1))
    ly, lx = min(lag, h - 1), min(lag, w - 1)
    out[lag - ly:lag + ly + 1, lag - lx:lag + lx + 1] = corr[h - 1 - ly:h + ly, w - 1 - lx:w + lx]
    return np.maximum(out, 0.0)


_set_covariance_kernel = Kernel("set_covariance_table", _set_covariance_table_numpy_ref)


@_set_covariance_kernel.register("cpp")
def _set_covariance_table_cpp(mask_a, mask_b, image_shape, bin_factor, lag):
    h, w = image_shape
    return np.asarray(core().set_covariance_table(np.ascontiguousarray(mask_a).view(np.uint8),
                                                  np.ascontiguousarray(mask_b).view(np.uint8),
                                                  int(bin_factor), int(h), int(w), int(lag)))


def set_covariance_table(mask: np.ndarray, *, image_shape: tuple, lag: int, bin_factor: int = 1,
                         other: np.ndarray | None = None, backend: str = "auto") -> np.ndarray:
    """Set covariance ``γ(u) = |W ∩ (W − u)|`` of a mask window at integer lags
    (or the cross covariance ``|A ∩ (B − u)|`` with ``other = B``).

    Parameters
    ----------
    mask : (H, W) bool, or (⌈H/F⌉, ⌈W/F⌉) with ``bin_factor = F``
        True on the window (support); a binned mask stands for its F×F blocks.
    image_shape : (H, W)
    lag : int
        Largest |dx| and |dy|, px.
    other : bool array like ``mask``, optional
        The second window B (default: ``mask`` itself).

    Returns
    -------
    (2·lag+1, 2·lag+1) float64
        ``table[dy + lag, dx + lag]`` = number of pixels p with p in A and
        p + (dx, dy) in B (px², exact integers; symmetric when A = B).

    Notes
    -----
    The C++ kernel costs O(lag · H · runs per row) and O(lag²) memory (46 ms
    for an 8192² mask at lag 150); the reference FFT O(HW log HW) time and
    several HW float64 arrays.

    Examples
    --------
    >>> t = set_covariance_table(np.ones((4, 5), bool), image_shape=(4, 5), lag=1)
    >>> t[1, 1], t[1, 2], t[2, 1]   # (dy, dx) = (0, 0), (0, 1), (1, 0)
    (20.0, 16.0, 15.0)
    """
    lag = int(lag)
    if lag < 0:
        raise ValueError(f"lag must be ≥ 0, got {lag}")
    h, w = (int(s) for s in image_shape)
    f = int(bin_factor)
    want = (-(-h // f), -(-w // f)) if f >= 1 else None
    mask = np.asarray(mask, dtype=bool)
    other = mask if other is None else np.asarray(other, dtype=bool)
    if want is None or mask.shape != want or other.shape != want:
        raise ValueError(f"masks must have shape (⌈H/F⌉, ⌈W/F⌉) = {want} for image_shape {(h, w)} and "
                         f"bin_factor {bin_factor}, got {mask.shape} and {other.shape}")
    b = _set_covariance_kernel.resolve(backend)
    return _set_covariance_kernel.impls[b](mask, other, (h, w), f, lag)
