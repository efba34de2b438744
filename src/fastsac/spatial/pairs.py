"""Kernels of the second-order statistics: pair-distance histograms with the
translation edge correction, and the set covariance of a window.

Neither builds a pair list or an image-sized FFT: pairs are counted straight
into histograms on a cell grid (memory O(N + bins)), and the set covariance
``γ(u) = |W ∩ (W + u)|`` is computed from the window's row runs for the lags
``|u_x|, |u_y| ≤ L`` that the statistics need (memory O(L²), exact integers).
The numpy/scipy references (cKDTree pairs, FFT autocorrelation of the whole
mask) are the specs the C++ kernels are tested against.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from .._backend import Kernel, core

__all__ = ["pair_histogram", "pair_histogram_backend", "set_covariance_table"]


# --------------------------------------------------------------------------- pair histograms


def _pair_histogram_numpy_ref(xy: np.ndarray, bin_width: float, n_bins: int, area: float,
                              rect_w: float, rect_h: float, table: np.ndarray):
    """Spec. Over unordered pairs i < j with ``b = floor(d · (1/bin_width)) < n_bins``,
    ``d = sqrt(dx*dx + dy*dy)`` in float64: ``hk[b] += w`` and
    ``hg[b] += w / (2π max(d, 1e-12))`` with ``w = area / γ(u)`` (0 where
    γ ≤ 0). γ is the rectangle ``(rect_w − |dx|)₊ (rect_h − |dy|)₊`` when
    ``table`` is empty, else ``table[round(dy) + L, round(dx) + L]`` (half to
    even) of a (2L+1, 2L+1) table."""
    hk, hg = np.zeros(n_bins), np.zeros(n_bins)
    if len(xy) < 2:
        return hk, hg
    reach = bin_width * n_bins
    pairs = cKDTree(xy).query_pairs(reach * (1 + 1e-9) + 1e-300, output_type="ndarray")
    if not len(pairs):
        return hk, hg
    dx = xy[pairs[:, 1], 0] - xy[pairs[:, 0], 0]
    dy = xy[pairs[:, 1], 1] - xy[pairs[:, 0], 1]
    d = np.sqrt(dx * dx + dy * dy)
    f = np.floor(d * (1.0 / bin_width))
    keep = f < n_bins
    dx, dy, d, b = dx[keep], dy[keep], d[keep], f[keep].astype(np.int64)
    if table.size:
        lag = (table.shape[0] - 1) // 2
        ix = np.clip(np.rint(dx).astype(np.int64) + lag, 0, 2 * lag)
        iy = np.clip(np.rint(dy).astype(np.int64) + lag, 0, 2 * lag)
        gamma = table[iy, ix]
    else:
        gamma = np.maximum(rect_w - np.abs(dx), 0.0) * np.maximum(rect_h - np.abs(dy), 0.0)
    w = np.where(gamma > 0, area / np.maximum(gamma, 1e-12), 0.0)
    hk = np.bincount(b, weights=w, minlength=n_bins)
    hg = np.bincount(b, weights=w / (2 * np.pi * np.maximum(d, 1e-12)), minlength=n_bins)
    return hk, hg


_pair_histogram_kernel = Kernel("pair_histogram", _pair_histogram_numpy_ref)


@_pair_histogram_kernel.register("cpp")
def _pair_histogram_cpp(xy, bin_width, n_bins, area, rect_w, rect_h, table):
    hk, hg = core().pair_histogram(xy, float(bin_width), int(n_bins), float(area), float(rect_w),
                                   float(rect_h), table)
    return np.asarray(hk), np.asarray(hg)


def pair_histogram_backend(backend: str = "auto") -> str:
    """The backend :func:`pair_histogram` resolves ``backend`` to (raises if unavailable)."""
    return _pair_histogram_kernel.resolve(backend).value


def pair_histogram(xy: np.ndarray, *, bin_width: float, n_bins: int, area: float,
                   rect_shape: tuple | None = None, table: np.ndarray | None = None,
                   backend: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Translation-weighted histograms of the pair distances below ``bin_width · n_bins``.

    Parameters
    ----------
    xy : (N, 2) float64
        Positions, px (C-contiguous; the caller validates).
    bin_width : float
        Bin width, px; bin ``b`` holds ``b·bin_width ≤ d < (b+1)·bin_width``.
    n_bins : int
    area : float
        Window area |W|, px².
    rect_shape : (H, W), optional
        The window is this rectangle: γ(u) = (W − |dx|)(H − |dy|), exact.
    table : (2L+1, 2L+1) float64, optional
        γ at integer lags (:func:`set_covariance_table`), ``L ≥ bin_width·n_bins``.

    Returns
    -------
    hk, hg : (n_bins,) float64
        Σ |W|/γ(u) and Σ |W|/(γ(u)·2πd) over the unordered pairs of each bin.
    backend : str
    """
    if (rect_shape is None) == (table is None):
        raise ValueError("give exactly one of rect_shape (rectangle) and table (mask)")
    if table is None:
        rect_h, rect_w = (float(s) for s in rect_shape)
        table = np.zeros((0, 0))
    else:
        rect_h = rect_w = 0.0
        table = np.ascontiguousarray(table, dtype=np.float64)
        if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] % 2 != 1:
            raise ValueError(f"table must be (2L+1, 2L+1), got {table.shape}")
        if (table.shape[0] - 1) // 2 < bin_width * n_bins:
            raise ValueError(f"table lag {(table.shape[0] - 1) // 2} < reach {bin_width * n_bins}")
    b = _pair_histogram_kernel.resolve(backend)
    hk, hg = _pair_histogram_kernel.impls[b](xy, bin_width, int(n_bins), area, rect_w, rect_h, table)
    return hk, hg, b.value


# --------------------------------------------------------------------------- set covariance


def _set_covariance_table_numpy_ref(mask: np.ndarray, image_shape: tuple, bin_factor: int, lag: int):
    """Spec: the FFT autocorrelation of the full-resolution mask,
    ``γ(dx, dy) = Σ_p m(p) m(p + (dx, dy))``, at ``|dx|, |dy| ≤ lag``,
    rounded to integers, as ``table[dy + lag, dx + lag]``."""
    from scipy.signal import fftconvolve

    h, w = (int(s) for s in image_shape)
    f = int(bin_factor)
    m = np.asarray(mask, dtype=bool)
    if f > 1:
        m = np.repeat(np.repeat(m, f, 0), f, 1)[:h, :w]
    m = m.astype(np.float64)
    full = np.rint(fftconvolve(m[::-1, ::-1], m, mode="full"))  # index (dy + h - 1, dx + w - 1)
    out = np.zeros((2 * lag + 1, 2 * lag + 1))
    ly, lx = min(lag, h - 1), min(lag, w - 1)
    out[lag - ly:lag + ly + 1, lag - lx:lag + lx + 1] = full[h - 1 - ly:h + ly, w - 1 - lx:w + lx]
    return np.maximum(out, 0.0)


_set_covariance_kernel = Kernel("set_covariance_table", _set_covariance_table_numpy_ref)


@_set_covariance_kernel.register("cpp")
def _set_covariance_table_cpp(mask, image_shape, bin_factor, lag):
    h, w = image_shape
    return np.asarray(core().set_covariance_table(np.ascontiguousarray(mask).view(np.uint8), int(bin_factor),
                                                  int(h), int(w), int(lag)))


def set_covariance_table(mask: np.ndarray, *, image_shape: tuple, lag: int, bin_factor: int = 1,
                         backend: str = "auto") -> np.ndarray:
    """Set covariance ``γ(u) = |W ∩ (W + u)|`` of a mask window at integer lags.

    Parameters
    ----------
    mask : (H, W) bool, or (⌈H/F⌉, ⌈W/F⌉) with ``bin_factor = F``
        True on the window (support); a binned mask stands for its F×F blocks.
    image_shape : (H, W)
    lag : int
        Largest |dx| and |dy|, px.

    Returns
    -------
    (2·lag+1, 2·lag+1) float64
        ``table[dy + lag, dx + lag]`` = number of pixels p with p and p + (dx, dy)
        both in the window (px², exact integers; symmetric: γ(−u) = γ(u)).

    Notes
    -----
    The C++ kernel costs O(lag · H · runs per row) and O(lag²) memory; the
    reference FFT costs O(HW log HW) time and 4·HW·8 bytes.
    """
    lag = int(lag)
    if lag < 0 or not math.isfinite(lag):
        raise ValueError(f"lag must be ≥ 0, got {lag}")
    mask = np.asarray(mask, dtype=bool)
    h, w = (int(s) for s in image_shape)
    f = int(bin_factor)
    if f < 1 or mask.shape != (-(-h // f), -(-w // f)):
        raise ValueError(f"mask must have shape (⌈H/F⌉, ⌈W/F⌉) = {(-(-h // f), -(-w // f))} for image_shape "
                         f"{(h, w)} and bin_factor {bin_factor}, got {mask.shape}")
    b = _set_covariance_kernel.resolve(backend)
    return _set_covariance_kernel.impls[b](np.asarray(mask, dtype=bool), tuple(int(s) for s in image_shape),
                                           int(bin_factor), lag)
