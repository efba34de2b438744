"""Dispersion statistics of one image: density over the support, NN distances, multimers,
clusters by class and extent, Clark–Evans over the image and the support.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import ConvexHull

from .._validate import as_points, check_positive
from ..io import DEFAULT_PIXEL_SIZE_NM
from .neighbors import clusters as find_clusters
from .neighbors import nearest_neighbors
from .units import CLUSTER_CLASSES, DEFAULT_MULTIMER_CUTOFF_NM, json_float, to_nm
from .clark_evans import ClarkEvans, clark_evans
from .window import Window

__all__ = ['ClusterStats', 'cluster_extents', 'cluster_stats', 'DispersionStats', 'dispersion']

log = logging.getLogger(__name__)


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
        d = {"cluster_cutoff_px": self.cutoff_px, "cluster_cutoff_nm": json_float(to_nm(self.cutoff_px, pixel_size_nm)),
             "n_clusters": len(self.cluster_size), **self.counts(),
             "max_cluster_size": int(self.cluster_size.max()) if len(self.cluster_size) else 0,
             "multi_atom_cluster_extent_mean_px": json_float(ext.mean()) if len(ext) else None,
             "multi_atom_cluster_extent_max_px": json_float(ext.max()) if len(ext) else None}
        d["multi_atom_cluster_extent_mean_nm"] = json_float(to_nm(d["multi_atom_cluster_extent_mean_px"], pixel_size_nm))
        d["multi_atom_cluster_extent_max_nm"] = json_float(to_nm(d["multi_atom_cluster_extent_max_px"], pixel_size_nm))
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
    res = find_clusters(pts, cutoff=cutoff_px, backend=backend)
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
        q = (lambda p: json_float(np.percentile(nn, p)) if len(nn) else None)
        lam = self.density_px2
        d = {
            "n_atoms": self.n_atoms, "n_atoms_in_support": int(self.in_support.sum()),
            "pixel_size_nm": px, "length_unit": self.unit,
            "image_height_px": int(self.image_shape[0]), "image_width_px": int(self.image_shape[1]),
            "image_area_px2": self.image_area_px2, "image_area_nm2": json_float(to_nm(self.image_area_px2, px, 2)),
            "support_area_px2": self.support_area_px2,
            "support_area_nm2": json_float(to_nm(self.support_area_px2, px, 2)),
            "vacuum_fraction": 1.0 - self.support_area_px2 / self.image_area_px2,
            "density_per_px2": lam, "density_per_nm2": json_float(to_nm(lam, px, -2)),
            "density_image_per_nm2": json_float(to_nm(self.n_atoms / self.image_area_px2, px, -2)),
            "nn_mean_px": json_float(nn.mean()) if len(nn) else None,
            "nn_median_px": q(50), "nn_std_px": json_float(nn.std(ddof=1)) if len(nn) > 1 else None,
            "nn_p10_px": q(10), "nn_p90_px": q(90),
            "expected_nn_random_px": json_float(0.5 / math.sqrt(lam)) if lam > 0 else None,
            "multimer_cutoff_px": self.multimer_cutoff_px,
            "multimer_cutoff_nm": json_float(to_nm(self.multimer_cutoff_px, px)),
            "multimer_fraction": json_float(self.multimer_fraction),
            "n_atoms_multimer": int(self.multimer.sum()),
        }
        for k in ("nn_mean", "nn_median", "nn_std", "nn_p10", "nn_p90", "expected_nn_random"):
            d[f"{k}_nm"] = json_float(to_nm(d[f"{k}_px"], px))
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
