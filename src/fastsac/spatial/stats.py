"""Dispersion statistics of detected atoms: density, nearest neighbours,
multimers, clusters, Clark–Evans, Ripley's K/L and the pair correlation g(r)
with Monte Carlo envelopes, pooling over frames and two-sample comparison.

All computations run in **pixels**; results carry ``pixel_size_nm`` and their
``as_dict()`` gives every length both in px (``*_px``, ``*_px2``) and in nm
(``*_nm``, ``*_nm2``; None when the image is uncalibrated). The keys are
documented in ``docs/statistics.md``.

Geometry: pixel centres sit at integer coordinates, so an (H, W) image covers
``[-0.5, W-0.5] × [-0.5, H-0.5]``. A :class:`Window` is that rectangle or the
union of the True pixels of a support mask.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy import stats as sstats
from scipy.spatial import ConvexHull, cKDTree

from .._validate import as_points, check_positive
from ..io import DEFAULT_PIXEL_SIZE_NM
from .neighbors import clusters as _clusters
from .neighbors import nearest_neighbors

__all__ = [
    "Window", "ClarkEvans", "ClusterStats", "DispersionStats", "PatternTest", "PooledStats",
    "SampleComparison", "clark_evans", "cluster_stats", "dispersion", "pair_correlation_test",
    "pool_dispersion", "compare_samples", "DEFAULT_MULTIMER_CUTOFF_NM", "CLUSTER_CLASSES",
]

log = logging.getLogger(__name__)

#: Default NN distance below which an atom counts as part of a multimer, nm.
DEFAULT_MULTIMER_CUTOFF_NM = 0.23
#: Pixel size used to convert nm defaults when an image is uncalibrated (ptnc-train).
#: With more points, Clark–Evans' "auto" correction on a mask is Donnelly's, not Monte Carlo.
MONTE_CARLO_MAX_POINTS = 20000
#: Cluster classes by size: 1, 2, 3 and ≥ 4 atoms.
CLUSTER_CLASSES = ("monomer", "dimer", "trimer", "4plus")


def _nm(value_px, px_nm, power: int = 1):
    """Convert a px length (power 1), area (2) or density (-2) to nm; None when uncalibrated."""
    if px_nm is None or value_px is None:
        return None
    return float(value_px) * px_nm**power


def _f(x) -> float | None:
    """JSON-ready float (NaN/inf → None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- window


class Window:
    """Observation window in pixel coordinates: the image rectangle or a support mask.

    Parameters
    ----------
    shape : (H, W)
        Image shape.
    mask : (H, W) bool array, optional
        True where points can lie. None (or all True) means the full rectangle.
    bin_factor : int
        With ``bin_factor = F > 1``, ``mask`` is given on the F×F-binned grid,
        shape ``(⌈H/F⌉, ⌈W/F⌉)``: full-resolution pixel ``(r, c)`` is support
        when ``mask[r // F, c // F]`` (the last row/column of blocks is
        cropped at the image edge), exactly the mask that
        ``np.repeat(np.repeat(mask, F, 0), F, 1)[:H, :W]`` would give, without
        building it (gigapixel montages). Area, perimeter, :meth:`contains`
        and :meth:`sample` are exact (``sample`` draws the same points from
        the same generator state); the border-distance and set-covariance
        methods need the full-resolution mask and raise.
    """

    def __init__(self, shape, *, mask=None, bin_factor: int = 1):
        h, w = (int(s) for s in shape)
        if h < 1 or w < 1:
            raise ValueError(f"shape must be positive (H, W), got {shape}")
        self.shape = (h, w)
        f = int(bin_factor)
        if f != bin_factor or f < 1:
            raise ValueError(f"bin_factor must be a positive integer, got {bin_factor!r}")
        self.bin_factor = f
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            want = (-(-h // f), -(-w // f))
            if mask.shape != want:
                raise ValueError(f"mask must have the {'image' if f == 1 else f'{f}x-binned'} "
                                 f"shape {want}, got {mask.shape}")
            if not mask.any():
                raise ValueError("mask has no support pixels; nothing to analyse")
            if mask.all():
                mask = None
        self.mask = mask

    @property
    def is_rectangle(self) -> bool:
        return self.mask is None

    @functools.cached_property
    def area(self) -> float:
        """Area in px²."""
        if self.mask is None:
            return float(self.shape[0] * self.shape[1])
        if self.bin_factor == 1:
            return float(np.count_nonzero(self.mask))
        return float(int(self._row_support @ self._block_h))

    def _block_sizes(self, axis: int) -> np.ndarray:
        """True heights (axis 0) or widths (axis 1) of the blocks of a binned mask, px."""
        n, f = self.shape[axis], self.bin_factor
        size = np.full(-(-n // f), f, np.int64)
        size[-1] = n - (len(size) - 1) * f
        return size

    @functools.cached_property
    def _block_h(self) -> np.ndarray:
        return self._block_sizes(0)

    @functools.cached_property
    def _block_w(self) -> np.ndarray:
        return self._block_sizes(1)

    @functools.cached_property
    def _row_support(self) -> np.ndarray:
        """(⌈H/F⌉,) int64: support px in one full-resolution row of each block row."""
        m = self.mask
        f = self.bin_factor
        return (np.count_nonzero(m[:, :-1], axis=1).astype(np.int64) * f
                + m[:, -1].astype(np.int64) * int(self._block_w[-1]))

    def _full_res_only(self, what: str):
        if self.bin_factor != 1:
            raise NotImplementedError(
                f"{what} needs the full-resolution mask; a binned mask (bin_factor="
                f"{self.bin_factor}) supports the 'donnelly', 'monte_carlo' and 'none' "
                "Clark-Evans corrections")

    @functools.cached_property
    def perimeter(self) -> float:
        """Boundary length in px (pixel-edge count for masks: overestimates
        diagonal boundaries by ≤ 4/π; used only by the approximate Donnelly
        correction on masks)."""
        h, w = self.shape
        if self.mask is None:
            return 2.0 * (h + w)
        m = np.pad(self.mask, 1)
        if self.bin_factor == 1:
            return float(np.count_nonzero(m[1:] != m[:-1]) + np.count_nonzero(m[:, 1:] != m[:, :-1]))
        # Binned: every transition between blocks is as many pixel edges long
        # as the block is wide (rows) or high (columns).
        bw = np.concatenate([[0], self._block_w, [0]])
        bh = np.concatenate([[0], self._block_h, [0]])
        return float(int(np.count_nonzero(m[1:] != m[:-1], axis=0) @ bw)
                     + int(np.count_nonzero(m[:, 1:] != m[:, :-1], axis=1) @ bh))

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool: which points lie inside the window."""
        h, w = self.shape
        x, y = xy[:, 0], xy[:, 1]
        inside = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
        if self.mask is not None and len(xy):
            ix = np.clip(np.floor(x + 0.5).astype(np.int64), 0, w - 1)
            iy = np.clip(np.floor(y + 0.5).astype(np.int64), 0, h - 1)
            f = self.bin_factor
            inside &= self.mask[iy // f, ix // f] if f > 1 else self.mask[iy, ix]
        return inside

    @functools.cached_property
    def _border_map(self) -> np.ndarray:
        self._full_res_only("the border distance (guard correction)")
        m = np.pad(self.mask, 1)
        # Distance from each pixel centre to the nearest outside pixel centre,
        # minus half a pixel: the distance to the boundary of the pixel union.
        return ndi.distance_transform_edt(m)[1:-1, 1:-1] - 0.5

    def border_distance(self, xy: np.ndarray) -> np.ndarray:
        """(N,) distance of each point to the window boundary, px."""
        h, w = self.shape
        x, y = xy[:, 0], xy[:, 1]
        rect = np.minimum.reduce([x + 0.5, w - 0.5 - x, y + 0.5, h - 0.5 - y])
        if self.mask is None or not len(xy):
            return rect
        ix = np.clip(np.round(x).astype(np.int64), 0, w - 1)
        iy = np.clip(np.round(y).astype(np.int64), 0, h - 1)
        return np.minimum(rect, self._border_map[iy, ix])

    def interior_area(self, g: float) -> float:
        """Area (px²) of the points at least ``g`` from the boundary."""
        h, w = self.shape
        if self.mask is None:
            return max(w - 2 * g, 0.0) * max(h - 2 * g, 0.0)
        return float(np.count_nonzero(self.mask & (self._border_map >= g)))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniform in the window (binomial process), (n, 2) px."""
        h, w = self.shape
        if self.mask is None:
            return np.column_stack([rng.uniform(-0.5, w - 0.5, n), rng.uniform(-0.5, h - 0.5, n)])
        # The same draws as indexing the flat support (_sample_flat, the
        # reference) from the row runs: O(runs) memory instead of 8 bytes per
        # support pixel (430 MB for an 8192² frame).
        return self._sample_binned(n, rng)

    def _sample_flat(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Reference of :meth:`sample` for full-resolution masks."""
        w = self.shape[1]
        flat = self._flat_support
        k = flat[rng.integers(0, len(flat), n)]
        return np.column_stack([k % w + rng.uniform(-0.5, 0.5, n), k // w + rng.uniform(-0.5, 0.5, n)])

    @functools.cached_property
    def _runs(self):
        """Runs of support blocks of a binned mask, in full-resolution columns:
        search keys (block row · (W+1) + support px before the run in its row),
        first column and cumulative support px at each run's start; and the
        cumulative support px per full-resolution row."""
        h, w = self.shape
        f = self.bin_factor
        p = np.pad(self.mask, ((0, 0), (1, 1)))
        row, col = np.nonzero(p[:, 1:] != p[:, :-1])  # row-major: starts and ends alternate
        row, b0, b1 = row[0::2], col[0::2], col[1::2]
        c0 = b0.astype(np.int64) * f
        length = np.minimum(b1.astype(np.int64) * f, w) - c0
        cum = np.cumsum(length)
        row_start = np.zeros(len(self.mask) + 1, np.int64)
        row_start[1:] = np.bincount(row, weights=length, minlength=len(self.mask)).astype(np.int64)
        before = cum - length - np.cumsum(row_start)[:-1][row]  # support px before the run in its row
        rows_cum = np.cumsum(np.repeat(self._row_support, self._block_h))  # (H,)
        return row.astype(np.int64) * (w + 1) + before, c0, before, rows_cum

    def _sample_binned(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # The k-th support pixel in row-major order without the full mask: the
        # same draws as the full-resolution branch of :meth:`sample`.
        w = self.shape[1]
        keys, c0, before, rows_cum = self._runs
        j = rng.integers(0, int(rows_cum[-1]), n)
        r = np.searchsorted(rows_cum, j, side="right")
        o = j - (rows_cum[r] - self._row_support[r // self.bin_factor])  # rank within the row
        run = np.searchsorted(keys, (r // self.bin_factor) * (w + 1) + o, side="right") - 1
        c = c0[run] + (o - before[run])
        return np.column_stack([c + rng.uniform(-0.5, 0.5, n), r + rng.uniform(-0.5, 0.5, n)])

    @functools.cached_property
    def _flat_support(self) -> np.ndarray:
        self._full_res_only("the flat support index")
        return np.flatnonzero(self.mask.ravel())

    @functools.cached_property
    def _set_cov(self) -> np.ndarray:
        self._full_res_only("the set covariance (K/L, g(r))")
        from scipy.signal import fftconvolve

        m = self.mask.astype(np.float64)
        return np.maximum(fftconvolve(m, m[::-1, ::-1], mode="full"), 0.0)

    def set_covariance(self, u: np.ndarray) -> np.ndarray:
        """|W ∩ (W + u)| for displacement vectors u (M, 2) [dx, dy], px².

        Exact for the rectangle; for a mask, the pixel autocorrelation at the
        nearest integer displacement."""
        h, w = self.shape
        dx, dy = np.abs(u[:, 0]), np.abs(u[:, 1])
        if self.mask is None:
            return np.clip(w - dx, 0, None) * np.clip(h - dy, 0, None)
        ix = np.clip(np.round(u[:, 0]).astype(np.int64) + w - 1, 0, 2 * w - 2)
        iy = np.clip(np.round(u[:, 1]).astype(np.int64) + h - 1, 0, 2 * h - 2)
        return self._set_cov[iy, ix]


def _as_window(image_shape, mask) -> Window:
    if mask is not None and image_shape is None:
        image_shape = np.shape(mask)
    if image_shape is None:
        raise ValueError("image_shape is required (the (H, W) of the image the points come from)")
    return Window(image_shape, mask=mask)


# --------------------------------------------------------------------------- Clark–Evans


@dataclass(frozen=True)
class ClarkEvans:
    """Clark–Evans aggregation index of one pattern in one window (lengths in px).

    ``R = mean_nn / expected_nn``: < 1 clustered, ≈ 1 random (CSR), > 1
    regular. ``expected_nn`` and ``se`` include the edge correction named in
    ``correction``; ``expected_nn_naive = 1/(2√λ)`` is the infinite-plane value
    and ``R_naive`` uses it (biased upwards by edge effects).
    """

    R: float
    R_naive: float
    mean_nn: float
    expected_nn: float
    expected_nn_naive: float
    se: float
    z: float
    p_value: float
    n_used: int
    n_points: int
    area: float
    correction: str

    def as_dict(self, prefix: str = "ce_", pixel_size_nm: float | None = None) -> dict:
        p = prefix
        return {f"{p}R": _f(self.R), f"{p}R_naive": _f(self.R_naive), f"{p}z": _f(self.z),
                f"{p}p_value": _f(self.p_value), f"{p}correction": self.correction,
                f"{p}n_used": self.n_used, f"{p}n_points": self.n_points,
                f"{p}se_px": _f(self.se), f"{p}area_px2": _f(self.area),
                f"{p}mean_nn_px": _f(self.mean_nn), f"{p}mean_nn_nm": _f(_nm(self.mean_nn, pixel_size_nm)),
                f"{p}expected_nn_px": _f(self.expected_nn),
                f"{p}expected_nn_nm": _f(_nm(self.expected_nn, pixel_size_nm)),
                f"{p}expected_nn_naive_px": _f(self.expected_nn_naive),
                f"{p}expected_nn_naive_nm": _f(_nm(self.expected_nn_naive, pixel_size_nm))}


_CORRECTIONS = ("auto", "donnelly", "guard", "monte_carlo", "none")


def clark_evans(xy, *, image_shape=None, mask=None, correction: str = "auto",
                guard_px: float | None = None, n_sim: int = 199, seed: int = 0,
                backend: str = "auto", _window: Window | None = None,
                _nn: np.ndarray | None = None) -> ClarkEvans:
    """Clark–Evans test of complete spatial randomness with an edge correction.

    Parameters
    ----------
    xy : (N, 2) array
        Point positions [x, y], px. Points outside the window are dropped.
    image_shape : (H, W), optional
        Image shape (needed unless ``mask`` is given).
    mask : (H, W) bool array, optional
        Support mask: the window is its True pixels.
    correction : {"auto", "donnelly", "guard", "monte_carlo", "none"}
        ``donnelly``: Donnelly (1978) expected mean NN and variance for a
        rectangle of area A and perimeter P,
        ``E = 0.5√(A/n) + (0.0514 + 0.041/√n) P/n``,
        ``Var = 0.0703 A/n² + 0.037 P √(A/n⁵)``; for a mask the mask's area and
        boundary length are used (an approximation). ``guard``: border
        exclusion, only points farther than ``guard_px`` from the boundary are
        reference points (their NN may be any point), compared with the
        infinite-plane ``1/(2√λ)`` and ``SE = 0.26136/√(n_ref λ)``.
        ``monte_carlo``: expected value, SE and a two-sided rank p-value from
        ``n_sim`` uniform patterns of the same n in the same window (exact for
        any window). ``auto``: donnelly for the rectangle, monte_carlo for a
        mask with at most :data:`MONTE_CARLO_MAX_POINTS` (20 000) points, else
        donnelly (the simulations would cost n_sim NN searches of all points).
        ``none``: Clark & Evans (1954) without correction.
    guard_px : float, optional
        Guard width; default twice the naive expected NN distance.
    n_sim, seed : int
        Monte Carlo simulations and their seed.

    Returns
    -------
    ClarkEvans
        p-values are two-sided (normal approximation except ``monte_carlo``).

    References
    ----------
    Clark & Evans (1954) Ecology 35:445. Donnelly (1978) in Simulation Methods
    in Archaeology, 91–95.
    """
    win = _window or _as_window(image_shape, mask)
    pts = as_points(xy)
    if correction not in _CORRECTIONS:
        raise ValueError(f"correction must be one of {_CORRECTIONS}, got {correction!r}")
    inside = win.contains(pts)
    if _nn is None or not inside.all():
        pts = pts[inside]
        nn = nearest_neighbors(pts, backend=backend).distance if len(pts) >= 2 else np.zeros(0)
    else:
        nn = _nn
    if correction == "auto":
        # Monte Carlo costs n_sim nearest-neighbour searches of all n points;
        # above MONTE_CARLO_MAX_POINTS the mask's edge effect on the mean NN
        # distance is small against its scatter and Donnelly's formula is used.
        correction = ("donnelly" if win.is_rectangle or len(pts) > MONTE_CARLO_MAX_POINTS
                      else "monte_carlo")
    n, area = len(pts), win.area
    nan = float("nan")
    if n < 2:
        return ClarkEvans(nan, nan, nan, nan, nan, nan, nan, nan, 0, n, area, correction)
    lam = n / area
    naive = 0.5 / math.sqrt(lam)
    mean = float(nn.mean())
    n_used = n
    if correction == "none":
        expected, se = naive, 0.26136 / math.sqrt(n * lam)
    elif correction == "donnelly":
        p_len = win.perimeter
        expected = 0.5 * math.sqrt(area / n) + (0.0514 + 0.041 / math.sqrt(n)) * p_len / n
        se = math.sqrt(0.0703 * area / n**2 + 0.037 * p_len * math.sqrt(area / n**5))
    elif correction == "guard":
        g = 2.0 * naive if guard_px is None else check_positive(guard_px, name="guard_px")
        ref = win.border_distance(pts) >= g
        n_used = int(ref.sum())
        if n_used == 0:
            return ClarkEvans(nan, mean / naive, mean, naive, naive, nan, nan, nan, 0, n, area, correction)
        mean = float(nn[ref].mean())
        # n is fixed (binomial process): a reference point sees the other n − 1.
        lam1 = (n - 1) / area
        expected = 0.5 / math.sqrt(lam1)
        # Two variance terms: the NN distances of the reference points (Clark &
        # Evans) and the binomial scatter of how many of the n points fall in
        # the interior (a denser interior has shorter NN distances):
        # Var(mean)/E² = 0.2732/n_used + (1 − p)/(4 n p), p = interior area fraction.
        p_in = win.interior_area(g) / area
        rel_var = 0.26136**2 * 4 / n_used + ((1 - p_in) / (4 * n * p_in) if p_in > 0 else 0.0)
        se = expected * math.sqrt(rel_var)
    else:  # monte_carlo
        rng = np.random.default_rng(seed)
        # The kernel behind nearest_neighbors (C++, all cores): 5× a cKDTree build
        # and query per pattern, which dominated large point sets (montages).
        sims = np.array([float(nearest_neighbors(win.sample(n, rng), backend=backend).distance.mean())
                         for _ in range(int(n_sim))])
        expected, se = float(sims.mean()), float(sims.std(ddof=1))
        z = (mean - expected) / se if se > 0 else nan
        dev = np.abs(sims - expected)
        p = (1 + np.count_nonzero(dev >= abs(mean - expected))) / (len(sims) + 1)
        return ClarkEvans(mean / expected, mean / naive, mean, expected, naive, se, z, float(p),
                          n_used, n, area, correction)
    z = (mean - expected) / se
    p = float(2 * sstats.norm.sf(abs(z)))
    return ClarkEvans(mean / expected, mean / naive, mean, expected, naive, se, z, p, n_used, n, area,
                      correction)


# --------------------------------------------------------------------------- clusters


@dataclass(frozen=True)
class ClusterStats:
    """Clusters of atoms linked by distance ≤ ``cutoff_px`` (single linkage).

    Attributes
    ----------
    labels, sizes : (N,) int64
        Per atom: canonical cluster id and the size of its cluster.
    cluster_size : (C,) int64
        Size of each cluster (indexed by cluster id).
    cluster_extent_px : (C,) float64
        Largest distance between two atoms of the cluster (0 for monomers), px.
    cutoff_px : float
    """

    labels: np.ndarray
    sizes: np.ndarray
    cluster_size: np.ndarray
    cluster_extent_px: np.ndarray
    cutoff_px: float
    backend: str = "numpy"

    @property
    def atom_class(self) -> np.ndarray:
        """(N,) cluster class per atom: 1, 2, 3 or 4 (= ≥ 4 atoms)."""
        return np.minimum(self.sizes, 4)

    def counts(self) -> dict:
        """Number of clusters and of atoms per class (monomer, dimer, trimer, 4plus)."""
        cls = np.minimum(self.cluster_size, 4)
        out = {}
        for k, name in enumerate(CLUSTER_CLASSES, start=1):
            out[f"n_{name}s" if k < 4 else "n_clusters_4plus"] = int(np.count_nonzero(cls == k))
            out[f"atoms_in_{name}s" if k < 4 else "atoms_in_4plus"] = int(self.cluster_size[cls == k].sum())
        return out

    def as_dict(self, pixel_size_nm: float | None = None) -> dict:
        multi = self.cluster_size >= 2
        ext = self.cluster_extent_px[multi]
        d = {"cluster_cutoff_px": self.cutoff_px, "cluster_cutoff_nm": _f(_nm(self.cutoff_px, pixel_size_nm)),
             "n_clusters": len(self.cluster_size), **self.counts(),
             "max_cluster_size": int(self.cluster_size.max()) if len(self.cluster_size) else 0,
             "multi_atom_cluster_extent_mean_px": _f(ext.mean()) if len(ext) else None,
             "multi_atom_cluster_extent_max_px": _f(ext.max()) if len(ext) else None}
        d["multi_atom_cluster_extent_mean_nm"] = _f(_nm(d["multi_atom_cluster_extent_mean_px"], pixel_size_nm))
        d["multi_atom_cluster_extent_max_nm"] = _f(_nm(d["multi_atom_cluster_extent_max_px"], pixel_size_nm))
        return d


def cluster_extents(xy, labels, cluster_size) -> np.ndarray:
    """(C,) largest distance between two atoms of each cluster (0 for monomers), px.

    ``labels`` are canonical cluster ids (0..C-1) and ``cluster_size`` their sizes.
    """
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    size = np.asarray(cluster_size, np.int64)
    extent = np.zeros(len(size))
    multi = np.flatnonzero(size >= 2)
    if len(multi):
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(size)])
        for c in multi:
            p = pts[order[starts[c]:starts[c + 1]]]
            if len(p) > 30:
                try:  # the farthest pair lies on the convex hull
                    p = p[ConvexHull(p).vertices]
                except Exception:  # collinear points: keep them all
                    pass
            diff = p[:, None, :] - p[None, :, :]
            extent[c] = float(np.sqrt((diff**2).sum(-1)).max())
    return extent


def cluster_stats(xy, *, cutoff_px: float, backend: str = "auto") -> ClusterStats:
    """Clusters by a distance cutoff, their size classes and extents.

    Parameters
    ----------
    xy : (N, 2) array
        Positions, px.
    cutoff_px : float
        Two atoms closer than or at this distance are in the same cluster.
    """
    pts = as_points(xy)
    res = _clusters(pts, cutoff=cutoff_px, backend=backend)
    n_c = res.n_clusters
    size = np.bincount(res.labels, minlength=n_c).astype(np.int64) if n_c else np.zeros(0, np.int64)
    extent = cluster_extents(pts, res.labels, size)
    return ClusterStats(res.labels, res.sizes, size, extent, float(cutoff_px), res.backend)


# --------------------------------------------------------------------------- dispersion


@dataclass(frozen=True)
class DispersionStats:
    """Dispersion statistics of one image (all lengths in px; see ``as_dict``).

    Attributes
    ----------
    xy : (N, 2) float64
        Positions analysed, px.
    nn_distance_px : (N,) float64
        First-NN distance of each atom (inf when N < 2).
    nn_index : (N,) int64
    multimer : (N,) bool
        NN distance below ``multimer_cutoff_px``.
    in_support : (N,) bool
        Atom lies on the support (always True without a mask).
    image_shape : (H, W)
    image_area_px2, support_area_px2 : float
    pixel_size_nm : float or None
    clark_evans_image : ClarkEvans
        Over the whole image rectangle (all atoms).
    clark_evans_support : ClarkEvans or None
        Over the support mask (atoms on the support); None without a mask.
    clusters : ClusterStats
    """

    xy: np.ndarray
    nn_distance_px: np.ndarray
    nn_index: np.ndarray
    multimer: np.ndarray
    multimer_cutoff_px: float
    in_support: np.ndarray
    image_shape: tuple
    image_area_px2: float
    support_area_px2: float
    pixel_size_nm: float | None
    clark_evans_image: ClarkEvans
    clark_evans_support: ClarkEvans | None
    clusters: ClusterStats
    backend: str = "numpy"
    params: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.xy)

    @property
    def unit(self) -> str:
        """Length unit of the headline values: ``"nm"`` when calibrated, else ``"px"``."""
        return "nm" if self.pixel_size_nm else "px"

    @property
    def scale(self) -> float:
        """Length of one px in :attr:`unit`."""
        return self.pixel_size_nm or 1.0

    @property
    def density_px2(self) -> float:
        """Atoms on the support per px² of support."""
        return float(self.in_support.sum()) / self.support_area_px2

    @property
    def finite_nn_px(self) -> np.ndarray:
        return self.nn_distance_px[np.isfinite(self.nn_distance_px)]

    @property
    def multimer_fraction(self) -> float:
        return float(self.multimer.mean()) if self.n_atoms >= 2 else float("nan")

    @property
    def clark_evans(self) -> ClarkEvans:
        """The headline Clark–Evans result: within the support if a mask was given."""
        return self.clark_evans_support or self.clark_evans_image

    def as_dict(self) -> dict:
        """JSON-ready flat dict; keys carry their unit (``_px``/``_nm``, ``_per_nm2`` …)."""
        px = self.pixel_size_nm
        nn = self.finite_nn_px
        q = (lambda p: _f(np.percentile(nn, p)) if len(nn) else None)
        lam = self.density_px2
        d = {
            "n_atoms": self.n_atoms, "n_atoms_in_support": int(self.in_support.sum()),
            "pixel_size_nm": px, "length_unit": self.unit,
            "image_height_px": int(self.image_shape[0]), "image_width_px": int(self.image_shape[1]),
            "image_area_px2": self.image_area_px2, "image_area_nm2": _f(_nm(self.image_area_px2, px, 2)),
            "support_area_px2": self.support_area_px2,
            "support_area_nm2": _f(_nm(self.support_area_px2, px, 2)),
            "vacuum_fraction": 1.0 - self.support_area_px2 / self.image_area_px2,
            "density_per_px2": lam, "density_per_nm2": _f(_nm(lam, px, -2)),
            "density_image_per_nm2": _f(_nm(self.n_atoms / self.image_area_px2, px, -2)),
            "nn_mean_px": _f(nn.mean()) if len(nn) else None,
            "nn_median_px": q(50), "nn_std_px": _f(nn.std(ddof=1)) if len(nn) > 1 else None,
            "nn_p10_px": q(10), "nn_p90_px": q(90),
            "expected_nn_random_px": _f(0.5 / math.sqrt(lam)) if lam > 0 else None,
            "multimer_cutoff_px": self.multimer_cutoff_px,
            "multimer_cutoff_nm": _f(_nm(self.multimer_cutoff_px, px)),
            "multimer_fraction": _f(self.multimer_fraction),
            "n_atoms_multimer": int(self.multimer.sum()),
        }
        for k in ("nn_mean", "nn_median", "nn_std", "nn_p10", "nn_p90", "expected_nn_random"):
            d[f"{k}_nm"] = _f(_nm(d[f"{k}_px"], px))
        d.update(self.clark_evans.as_dict("clark_evans_", px))
        d.update(self.clark_evans_image.as_dict("ce_image_", px))
        if self.clark_evans_support is not None:
            d.update(self.clark_evans_support.as_dict("ce_support_", px))
        d.update(self.clusters.as_dict(px))
        d["backend"] = self.backend
        return d


def dispersion(xy, *, image_shape, pixel_size_nm: float | None = None, mask=None,
               multimer_cutoff_nm: float = DEFAULT_MULTIMER_CUTOFF_NM,
               multimer_cutoff_px: float | None = None, cluster_cutoff_nm: float | None = None,
               cluster_cutoff_px: float | None = None, correction: str = "auto",
               mask_correction: str = "auto", n_sim: int = 199, seed: int = 0,
               backend: str = "auto", mask_bin_factor: int = 1) -> DispersionStats:
    """Density, NN distances, multimers, clusters and Clark–Evans of one image.

    Parameters
    ----------
    xy : (N, 2) array
        Atom positions [x, y], px (never modified).
    image_shape : (H, W)
        Shape of the image the atoms were found in.
    pixel_size_nm : float, optional
        Calibration; None → every length stays in px (nm keys are None) and
        the nm cutoffs are converted at 0.0293 nm/px with a warning unless
        ``*_cutoff_px`` are given.
    mask : (H, W) bool array, optional
        Support mask (:func:`fastsac.support.support_mask`). Density is per
        support area and Clark–Evans is also computed within the support.
    multimer_cutoff_nm, multimer_cutoff_px : float
        An atom is in a multimer when its NN distance is below this (default
        0.23 nm). ``*_px`` overrides.
    cluster_cutoff_nm, cluster_cutoff_px : float, optional
        Linking distance of clusters; default: the multimer cutoff.
    correction, mask_correction : str
        Edge corrections for the image rectangle and for the mask, see
        :func:`clark_evans`.
    n_sim, seed : int
        For the Monte Carlo correction.
    backend : str
        Backend of the NN and cluster kernels.
    mask_bin_factor : int
        ``mask`` is given on the F×F-binned grid (see :class:`Window`): the
        results equal those with the expanded full-resolution mask, for the
        ``donnelly``, ``monte_carlo`` and ``none`` mask corrections (gigapixel
        montages, :func:`fastsac.montage.analyze_montage`).

    Returns
    -------
    DispersionStats

    Examples
    --------
    >>> s = dispersion([[10, 10], [14, 10], [60, 60]], image_shape=(100, 100), pixel_size_nm=0.05)
    >>> s.as_dict()["n_dimers"], round(s.as_dict()["nn_mean_nm"], 3)
    (1, 1.266)
    """
    pts = as_points(xy)
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions; drop them first")
    if pixel_size_nm is not None:
        pixel_size_nm = check_positive(pixel_size_nm, name="pixel_size_nm")
    px = pixel_size_nm
    if multimer_cutoff_px is None:
        check_positive(multimer_cutoff_nm, name="multimer_cutoff_nm", allow_zero=True)
        if px is None:
            log.warning("no pixel size: converting multimer_cutoff_nm=%g at %g nm/px; give "
                        "multimer_cutoff_px to silence this", multimer_cutoff_nm, DEFAULT_PIXEL_SIZE_NM)
        multimer_cutoff_px = multimer_cutoff_nm / (px or DEFAULT_PIXEL_SIZE_NM)
    multimer_cutoff_px = check_positive(multimer_cutoff_px, name="multimer_cutoff_px", allow_zero=True)
    if cluster_cutoff_px is None:
        cluster_cutoff_px = (multimer_cutoff_px if cluster_cutoff_nm is None
                             else cluster_cutoff_nm / (px or DEFAULT_PIXEL_SIZE_NM))
    rect = Window(image_shape)
    win = Window(image_shape, mask=mask, bin_factor=mask_bin_factor) if mask is not None else rect
    n = len(pts)
    if n >= 2:
        nnr = nearest_neighbors(pts, backend=backend)
        nn, idx, used = nnr.distance, nnr.index, nnr.backend
    else:
        nn, idx, used = np.full(n, np.inf), np.full(n, -1, np.int64), "numpy"
    multimer = nn < multimer_cutoff_px
    in_rect = rect.contains(pts)
    ce_img = clark_evans(pts, correction=correction, n_sim=n_sim, seed=seed, backend=backend,
                         _window=rect, _nn=nn if in_rect.all() else None)
    in_sup = win.contains(pts)
    ce_sup = None
    if not win.is_rectangle:
        ce_sup = clark_evans(pts, correction=mask_correction, n_sim=n_sim, seed=seed, backend=backend,
                             _window=win, _nn=nn if in_sup.all() else None)
    cl = cluster_stats(pts, cutoff_px=cluster_cutoff_px, backend=backend)
    params = {"multimer_cutoff_px": multimer_cutoff_px, "cluster_cutoff_px": cluster_cutoff_px,
              "correction": correction, "mask_correction": mask_correction, "n_sim": n_sim, "seed": seed}
    return DispersionStats(pts, nn, idx, multimer, multimer_cutoff_px, in_sup, tuple(int(s) for s in
                           image_shape), rect.area, win.area, px, ce_img, ce_sup, cl, used, params)


# --------------------------------------------------------------------------- Ripley K/L, g(r)


def _pair_data(pts: np.ndarray, r_max: float, win: Window):
    """Distances and translation-correction weights |W|/γ(u) of unordered pairs within r_max."""
    if len(pts) < 2:
        return np.zeros(0), np.zeros(0)
    pairs = cKDTree(pts).query_pairs(r_max, output_type="ndarray")
    if not len(pairs):
        return np.zeros(0), np.zeros(0)
    u = pts[pairs[:, 1]] - pts[pairs[:, 0]]
    d = np.hypot(u[:, 0], u[:, 1])
    gamma = win.set_covariance(u)
    w = np.where(gamma > 0, win.area / np.maximum(gamma, 1e-12), 0.0)
    return d, w


def _k_and_g(pts: np.ndarray, r: np.ndarray, h: float, win: Window):
    """Translation-corrected K(r) (px²) and Epanechnikov-kernel g(r) at radii r."""
    n = len(pts)
    if n < 2:
        return np.full(len(r), np.nan), np.full(len(r), np.nan)
    d, w = _pair_data(pts, float(r[-1]) + h, win)
    scale = 2.0 * win.area / (n * (n - 1))  # ordered pairs: ×2; λ² ≈ n(n−1)/|W|²
    order = np.argsort(d)
    cw = np.concatenate([[0.0], np.cumsum(w[order])])
    k = scale * cw[np.searchsorted(d[order], r, side="right")]
    # g: the kernel sum over pairs, with pair distances binned at h/16 first
    # (error ≤ h/32 in d) so the cost is O(pairs + n_r · bins), not O(pairs · n_r).
    bw = h / 16
    nb = int(np.ceil((float(r[-1]) + h) / bw)) + 1
    hist = np.bincount(np.minimum((d / bw).astype(np.int64), nb - 1),
                       weights=w / (2 * np.pi * np.maximum(d, 1e-12)), minlength=nb)
    t = (r[:, None] - (np.arange(nb) + 0.5)[None, :] * bw) / h
    kern = np.where(np.abs(t) < 1, 0.75 * (1 - t * t) / h, 0.0)
    g = scale * (kern @ hist)
    return k, g


@dataclass(frozen=True)
class PatternTest:
    """Ripley's L and the pair correlation g with Monte Carlo envelopes (lengths in px).

    Attributes
    ----------
    r_px : (M,) radii, px.
    L_minus_r_px, g : (M,) observed centred L(r) − r (px) and g(r) (unitless).
    *_mean, *_lo, *_hi : (M,)
        Mean of the simulations and pointwise envelopes (quantiles α/2, 1−α/2).
    *_global_lo, *_global_hi : (M,)
        Global MAD envelope: reference ± the critical maximum deviation; the
        observed curve leaves it (anywhere in the tested range) with
        probability α under CSR.
    L_p_value, g_p_value : float
        Global MAD test (two-sided) over ``test_range_px``:
        ``p = (1 + #{T_sim ≥ T_obs}) / (n_sim + 1)``.
    L_p_clustering, L_p_repulsion : float
        One-sided versions on L (above / below the reference).
    verdict : str
        ``"clustering"``, ``"repulsion"`` or ``"random"`` at level α, from L.
    """

    r_px: np.ndarray
    L_minus_r_px: np.ndarray
    L_mean: np.ndarray
    L_lo: np.ndarray
    L_hi: np.ndarray
    L_global_lo: np.ndarray
    L_global_hi: np.ndarray
    g: np.ndarray
    g_mean: np.ndarray
    g_lo: np.ndarray
    g_hi: np.ndarray
    g_global_lo: np.ndarray
    g_global_hi: np.ndarray
    L_p_value: float
    L_p_clustering: float
    L_p_repulsion: float
    g_p_value: float
    verdict: str
    n_points: int
    n_sim: int
    seed: int
    alpha: float
    bandwidth_px: float
    test_range_px: tuple
    pixel_size_nm: float | None = None

    def as_dict(self, *, curves: bool = False) -> dict:
        px = self.pixel_size_nm
        d = {"pattern_n_points": self.n_points, "pattern_n_sim": self.n_sim, "pattern_seed": self.seed,
             "pattern_alpha": self.alpha, "pattern_test": "MAD global envelope, translation edge correction",
             "pattern_test_rmin_px": self.test_range_px[0], "pattern_test_rmax_px": self.test_range_px[1],
             "pattern_test_rmin_nm": _f(_nm(self.test_range_px[0], px)),
             "pattern_test_rmax_nm": _f(_nm(self.test_range_px[1], px)),
             "L_p_value": _f(self.L_p_value), "L_p_clustering": _f(self.L_p_clustering),
             "L_p_repulsion": _f(self.L_p_repulsion), "g_p_value": _f(self.g_p_value),
             "pattern_verdict": self.verdict, "g_bandwidth_px": self.bandwidth_px}
        if curves:
            for k in ("r_px", "L_minus_r_px", "L_mean", "L_lo", "L_hi", "L_global_lo", "L_global_hi",
                      "g", "g_mean", "g_lo", "g_hi", "g_global_lo", "g_global_hi"):
                d[f"curve_{k}"] = [_f(v) for v in getattr(self, k)]
        return d


def _mad_test(obs: np.ndarray, sims: np.ndarray, sel: np.ndarray, alpha: float):
    """Global MAD test with the reference = mean of all n_sim + 1 curves
    (exchangeable, so the rank p-value is exact)."""
    allc = np.vstack([obs[None], sims])
    ok = sel & np.isfinite(allc).all(0)
    ref = allc.mean(0)
    dev = (allc - ref)[:, ok]
    if not ok.any():
        nanv = np.full_like(obs, np.nan)
        return ref, nanv, nanv, float("nan"), float("nan"), float("nan")
    t2 = np.abs(dev).max(1)
    tp = dev.max(1)
    tm = (-dev).max(1)
    m = len(sims)
    p = (1 + np.count_nonzero(t2[1:] >= t2[0])) / (m + 1)
    pc = (1 + np.count_nonzero(tp[1:] >= tp[0])) / (m + 1)
    pr = (1 + np.count_nonzero(tm[1:] >= tm[0])) / (m + 1)
    k = max(1, int(math.floor(alpha * (m + 1))))
    crit = np.sort(t2[1:])[::-1][k - 1]
    return ref, ref - crit, ref + crit, float(p), float(pc), float(pr)


def pair_correlation_test(xy, *, image_shape=None, mask=None, pixel_size_nm: float | None = None,
                          r_max_px: float | None = None, n_r: int = 48, test_rmin_px: float | None = None,
                          bandwidth_px: float | None = None, n_sim: int = 99, alpha: float = 0.05,
                          seed: int = 0, progress: bool = False) -> PatternTest:
    """Ripley's L and g(r) with Monte Carlo envelopes and a global MAD test.

    Random patterns with the same number of points are placed uniformly in
    the window (the support mask when given). Both functions use the
    translation edge correction ``|W| / |W ∩ (W + u)|``.

    Parameters
    ----------
    xy : (N, 2) array
        Positions, px; points outside the window are dropped.
    image_shape, mask : see :func:`dispersion`.
    r_max_px : float, optional
        Largest radius; default a quarter of the shorter image side.
    n_r : int
        Number of radii.
    test_rmin_px : float, optional
        Smallest radius of the global test; default the g bandwidth (below it
        g is dominated by the kernel).
    bandwidth_px : float, optional
        Epanechnikov half-width for g; default Stoyan's 0.15/√λ.
    n_sim : int
        Simulations (99 → exact α = 0.05 rank test).
    alpha : float
        Level of the envelopes and the verdict.
    seed : int

    Returns
    -------
    PatternTest

    References
    ----------
    Ripley (1977) J. R. Stat. Soc. B 39:172. Ohser & Stoyan (1981) Biom. J.
    23:523. Myllymäki et al. (2017) J. R. Stat. Soc. B 79:381 (global envelopes).
    """
    win = _as_window(image_shape, mask)
    pts = as_points(xy)
    pts = pts[win.contains(pts)]
    n = len(pts)
    n_sim = int(n_sim)
    if n_sim < 1:
        raise ValueError(f"n_sim must be ≥ 1, got {n_sim}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    r_max = r_max_px or 0.25 * min(win.shape)
    lam = max(n, 1) / win.area
    h = bandwidth_px or 0.15 / math.sqrt(lam)
    h = min(h, r_max / 4)
    r = np.linspace(r_max / n_r, r_max, n_r)
    rmin = h if test_rmin_px is None else float(test_rmin_px)
    sel = r >= rmin
    k_obs, g_obs = _k_and_g(pts, r, h, win)
    rng = np.random.default_rng(seed)
    ks, gs = np.empty((n_sim, n_r)), np.empty((n_sim, n_r))
    it = range(n_sim)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="envelopes", leave=False)
    for i in it:
        ks[i], gs[i] = _k_and_g(win.sample(n, rng), r, h, win)
    l_obs = np.sqrt(np.maximum(k_obs, 0) / np.pi) - r
    ls = np.sqrt(np.maximum(ks, 0) / np.pi) - r
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    L_ref, L_glo, L_ghi, pL, pc, pr = _mad_test(l_obs, ls, sel, alpha)
    g_ref, g_glo, g_ghi, pg, _, _ = _mad_test(g_obs, gs, sel, alpha)
    verdict = "random"
    if np.isfinite(pL) and pL <= alpha:
        verdict = "clustering" if pc <= pr else "repulsion"
    with np.errstate(all="ignore"):
        return PatternTest(r, l_obs, L_ref, np.quantile(ls, lo_q, axis=0), np.quantile(ls, hi_q, axis=0),
                           L_glo, L_ghi, g_obs, g_ref, np.quantile(gs, lo_q, axis=0),
                           np.quantile(gs, hi_q, axis=0), g_glo, g_ghi, pL, pc, pr, pg, verdict, n,
                           n_sim, int(seed), float(alpha), float(h), (float(rmin), float(r_max)),
                           pixel_size_nm)


# --------------------------------------------------------------------------- pooling


@dataclass(frozen=True)
class PooledStats:
    """Per-image and pooled values of several frames of one sample.

    ``n_atoms`` counts the atoms on the support (density = n_atoms / area);
    ``as_dict()["n_atoms"]`` counts all. ``nn_distance`` is in ``unit`` (nm when every frame is calibrated, else px).
    Pooled Clark–Evans: ``R = Σ nᵢ·meanᵢ / Σ nᵢ·Eᵢ`` and
    ``z = Σ nᵢ(meanᵢ − Eᵢ) / √(Σ nᵢ² SEᵢ²)`` over the frames' headline tests.
    """

    per_image: list
    names: list
    unit: str
    n_atoms: int
    area: float
    nn_distance: np.ndarray
    n_multimer: int
    cluster_counts: dict
    ce_R: float
    ce_z: float
    ce_p_value: float

    @property
    def density(self) -> float:
        return self.n_atoms / self.area if self.area else float("nan")

    @property
    def multimer_fraction(self) -> float:
        return self.n_multimer / self.n_atoms if self.n_atoms else float("nan")

    def as_dict(self) -> dict:
        u = self.unit
        nn = self.nn_distance
        per = [s.as_dict() | {"name": nm} for s, nm in zip(self.per_image, self.names)]
        dens = np.array([p[f"density_per_{u}2"] or np.nan for p in per], float)
        return {
            "n_images": len(self.per_image), "length_unit": u,
            "n_atoms": int(sum(s.n_atoms for s in self.per_image)), "n_atoms_in_support": self.n_atoms,
            f"support_area_{u}2": self.area, f"density_per_{u}2": _f(self.density),
            f"density_between_image_sd_per_{u}2": _f(dens.std(ddof=1)) if len(dens) > 1 else None,
            f"nn_mean_{u}": _f(nn.mean()) if len(nn) else None,
            f"nn_median_{u}": _f(np.median(nn)) if len(nn) else None,
            "multimer_fraction": _f(self.multimer_fraction), "n_atoms_multimer": self.n_multimer,
            **self.cluster_counts,
            "clark_evans_R": _f(self.ce_R), "clark_evans_z": _f(self.ce_z),
            "clark_evans_p_value": _f(self.ce_p_value), "per_image": per,
        }


def pool_dispersion(stats: Sequence[DispersionStats], *, names: Sequence[str] | None = None) -> PooledStats:
    """Pool the statistics of several frames of one sample.

    Lengths are pooled in nm when every frame is calibrated, else in px (and
    then all frames must share one pixel size, which is not checked).
    """
    stats = list(stats)
    if not stats:
        raise ValueError("stats is empty; pass at least one DispersionStats")
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(stats))]
    calibrated = all(s.pixel_size_nm for s in stats)
    unit = "nm" if calibrated else "px"
    sc = [s.scale if calibrated else 1.0 for s in stats]
    n = sum(int(s.in_support.sum()) for s in stats)
    area = sum(s.support_area_px2 * c * c for s, c in zip(stats, sc))
    nn = np.concatenate([s.finite_nn_px * c for s, c in zip(stats, sc)]) if stats else np.zeros(0)
    counts: dict = {}
    for s in stats:
        for k, v in s.clusters.counts().items():
            counts[k] = counts.get(k, 0) + v
    num = den = var = 0.0
    for s, c in zip(stats, sc):
        ce = s.clark_evans
        if ce.n_used >= 2 and np.isfinite(ce.se):
            num += ce.n_used * ce.mean_nn * c
            den += ce.n_used * ce.expected_nn * c
            var += (ce.n_used * ce.se * c) ** 2
    R = num / den if den else float("nan")
    z = (num - den) / math.sqrt(var) if var else float("nan")
    p = float(2 * sstats.norm.sf(abs(z))) if np.isfinite(z) else float("nan")
    return PooledStats(stats, names, unit, n, float(area), nn, int(sum(s.multimer.sum() for s in stats)),
                       counts, R, z, p)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class SampleComparison:
    """Two-sample comparison (e.g. before/after reaction), lengths in ``unit``.

    ``ks_*``: Kolmogorov–Smirnov on the pooled NN distances. ``perm_*``:
    permutation tests (atoms exchanged between samples) on the difference of
    the mean NN distance and of the multimer share (B − A), two-sided.
    """

    unit: str
    n_a: int
    n_b: int
    nn_mean_a: float
    nn_mean_b: float
    multimer_fraction_a: float
    multimer_fraction_b: float
    density_a: float
    density_b: float
    ks_statistic: float
    ks_p_value: float
    perm_nn_mean_diff: float
    perm_nn_mean_p_value: float
    perm_multimer_diff: float
    perm_multimer_p_value: float
    n_perm: int

    def as_dict(self) -> dict:
        u = self.unit
        return {"length_unit": u, "n_atoms_a": self.n_a, "n_atoms_b": self.n_b,
                f"nn_mean_a_{u}": _f(self.nn_mean_a), f"nn_mean_b_{u}": _f(self.nn_mean_b),
                "multimer_fraction_a": _f(self.multimer_fraction_a),
                "multimer_fraction_b": _f(self.multimer_fraction_b),
                f"density_a_per_{u}2": _f(self.density_a), f"density_b_per_{u}2": _f(self.density_b),
                "ks_statistic": _f(self.ks_statistic), "ks_p_value": _f(self.ks_p_value),
                f"nn_mean_diff_{u}": _f(self.perm_nn_mean_diff), "nn_mean_p_value": _f(self.perm_nn_mean_p_value),
                "multimer_fraction_diff": _f(self.perm_multimer_diff),
                "multimer_p_value": _f(self.perm_multimer_p_value), "n_perm": self.n_perm}


def compare_samples(a, b, *, n_perm: int = 9999, seed: int = 0) -> SampleComparison:
    """Compare the NN distributions and multimer shares of two samples.

    Parameters
    ----------
    a, b : DispersionStats, PooledStats or sequence of DispersionStats
        The frames of sample A and of sample B (pooled if several).
    n_perm : int
        Permutations.

    Notes
    -----
    NN distances shrink as density grows (mean ∝ 1/√λ), so a shift in the NN
    distribution can be a density change as well as a change in clustering;
    read it together with the densities and the Clark–Evans R of each sample.
    Atoms are treated as exchangeable, ignoring frame-to-frame variation.
    """
    pa, pb = (x if isinstance(x, PooledStats) else pool_dispersion(
        [x] if isinstance(x, DispersionStats) else list(x)) for x in (a, b))
    if pa.unit != pb.unit:
        raise ValueError(f"samples are in different units ({pa.unit} vs {pb.unit}); "
                         "give both a pixel size so that lengths are in nm")
    xa, xb = pa.nn_distance, pb.nn_distance
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError(f"need ≥ 2 NN distances per sample, got {len(xa)} and {len(xb)}")
    cut_a = np.concatenate([np.full(len(s.finite_nn_px), s.multimer_cutoff_px * (s.scale if pa.unit == "nm"
                                                                                  else 1.0))
                            for s in pa.per_image])
    cut_b = np.concatenate([np.full(len(s.finite_nn_px), s.multimer_cutoff_px * (s.scale if pb.unit == "nm"
                                                                                  else 1.0))
                            for s in pb.per_image])
    ma, mb = xa < cut_a, xb < cut_b
    ks = sstats.ks_2samp(xa, xb)
    rng = np.random.default_rng(seed)
    allx = np.concatenate([xa, xb])
    allm = np.concatenate([ma, mb]).astype(np.float64)
    na = len(xa)
    d_nn = xb.mean() - xa.mean()
    d_m = mb.mean() - ma.mean()
    cnt_nn = cnt_m = 0
    tot_x, tot_m, n_all = allx.sum(), allm.sum(), len(allx)
    for start in range(0, n_perm, 1000):
        k = min(1000, n_perm - start)
        perm = rng.permuted(np.tile(np.arange(n_all), (k, 1)), axis=1)[:, :na]
        sx = allx[perm].sum(1)
        sm = allm[perm].sum(1)
        dn = (tot_x - sx) / (n_all - na) - sx / na
        dm = (tot_m - sm) / (n_all - na) - sm / na
        cnt_nn += np.count_nonzero(np.abs(dn) >= abs(d_nn) - 1e-12)
        cnt_m += np.count_nonzero(np.abs(dm) >= abs(d_m) - 1e-12)
    return SampleComparison(pa.unit, len(xa), len(xb), float(xa.mean()), float(xb.mean()),
                            float(ma.mean()), float(mb.mean()), pa.density, pb.density,
                            float(ks.statistic), float(ks.pvalue), float(d_nn),
                            (1 + cnt_nn) / (n_perm + 1), float(d_m), (1 + cnt_m) / (n_perm + 1), n_perm)
