"""One row per cluster: size in atoms, centroid, radius of gyration and extent in nm, composition.

Clusters are the single-linkage groups of :func:`fastsac.spatial.clusters`
(atoms closer than the multimer cutoff); a monomer is a cluster of one. The
table is what ``clusters.csv`` holds, and :meth:`ClusterTable.size_distribution`
the cluster-size distribution of ``summary.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validate import as_points

__all__ = ["ClusterTable", "cluster_table", "CLUSTER_COLUMNS"]

#: Fixed columns of clusters.csv, in order (then ``n_<species>`` per species).
CLUSTER_COLUMNS = ["cluster_id", "n_atoms", "x_px", "y_px", "x_nm", "y_nm", "radius_of_gyration_nm",
                   "max_extent_nm", "composition"]


def _max_extent(p: np.ndarray) -> float:
    if len(p) < 2:
        return 0.0
    if len(p) > 30:
        from scipy.spatial import ConvexHull, QhullError

        try:  # the farthest pair lies on the convex hull
            p = p[ConvexHull(p).vertices]
        except QhullError:  # collinear points: keep them all
            pass
    d = p[:, None, :] - p[None, :, :]
    return float(np.sqrt((d**2).sum(-1)).max())



#: Clusters up to this size get their extent from all atom pairs, grouped by size
#: (one array operation per distinct size); larger ones (rare) from their convex hull.
_PAIRWISE_MAX_ATOMS = 30


def _max_extents(pts: np.ndarray, lab: np.ndarray, n: np.ndarray, *,
                 max_elements: int = 1 << 22) -> np.ndarray:
    """(C,) largest atom–atom distance per cluster (0 for monomers), vectorised:
    clusters of one size are stacked into an (m, s, 2) array and all their pair
    distances taken at once, in blocks of at most ``max_elements`` pairs (bounded
    memory for millions of clusters); sqrt of the largest squared distance equals
    the largest distance exactly (sqrt is monotone and correctly rounded)."""
    ext = np.zeros(len(n))
    multi = n >= 2
    if not multi.any():
        return ext
    order = np.argsort(lab, kind="stable")
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    for s in np.unique(n[multi]).tolist():
        ks = np.flatnonzero(n == s)
        if s > _PAIRWISE_MAX_ATOMS:
            for k in ks.tolist():
                ext[k] = _max_extent(pts[order[starts[k]:starts[k] + s]])
            continue
        step = max(1, max_elements // (s * s))
        for b0 in range(0, len(ks), step):
            kb = ks[b0:b0 + step]
            p = pts[order[starts[kb][:, None] + np.arange(s)[None, :]]]  # (m, s, 2)
            d = p[:, :, None, :] - p[:, None, :, :]
            ext[kb] = np.sqrt((d**2).sum(-1).reshape(len(kb), -1).max(1))
    return ext


@dataclass(frozen=True)
class ClusterTable:
    """Per-cluster geometry and composition.

    Attributes
    ----------
    cluster_id, n_atoms : (C,) int64
        Cluster ids as in atoms.csv ``cluster_id`` and their sizes.
    x_px, y_px : (C,) float64
        Centroid, px.
    radius_of_gyration_px : (C,) float64
        √(mean squared distance of the atoms from the centroid); 0 for a monomer.
    max_extent_px : (C,) float64
        Largest atom–atom distance in the cluster; 0 for a monomer.
    species_names : list of str
        Species counted in ``species_counts`` (empty without species).
    species_counts : (C, S) int64
    pixel_size_nm : float or None
    """

    cluster_id: np.ndarray
    n_atoms: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    radius_of_gyration_px: np.ndarray
    max_extent_px: np.ndarray
    species_names: list = field(default_factory=list)
    species_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    pixel_size_nm: float | None = None

    def __len__(self) -> int:
        return len(self.cluster_id)

    @property
    def unit(self) -> str:
        return "nm" if self.pixel_size_nm else "px"

    def composition(self) -> np.ndarray:
        """(C,) str: ``"Pt:2;Pd:1"`` (species with their counts, most first); ``""`` without species."""
        out = np.full(len(self), "", dtype=object)
        if not self.species_names or not len(self):
            return out
        # One string per distinct count row (a few hundred even for 10⁶ clusters), then gathered.
        rows, inverse = np.unique(self.species_counts, axis=0, return_inverse=True)
        text = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            order = sorted(np.flatnonzero(row), key=lambda j: (-row[j], self.species_names[j]))
            text[i] = ";".join(f"{self.species_names[j]}:{int(row[j])}" for j in order)
        return text[np.asarray(inverse).reshape(-1)]

    def columns(self) -> dict[str, np.ndarray]:
        """clusters.csv columns: :data:`CLUSTER_COLUMNS` then ``n_<species>``
        (nm columns NaN without calibration)."""
        s = self.pixel_size_nm if self.pixel_size_nm else float("nan")
        cols = {"cluster_id": self.cluster_id, "n_atoms": self.n_atoms, "x_px": self.x_px,
                "y_px": self.y_px, "x_nm": self.x_px * s, "y_nm": self.y_px * s,
                "radius_of_gyration_nm": self.radius_of_gyration_px * s,
                "max_extent_nm": self.max_extent_px * s, "composition": self.composition()}
        for j, name in enumerate(self.species_names):
            cols[f"n_{name}"] = self.species_counts[:, j]
        return cols

    def size_distribution(self, *, bin_nm: float = 0.05) -> dict:
        """JSON-ready cluster-size distribution (``summary.json`` key ``cluster_size_distribution``).

        ``by_n_atoms``: number of clusters of each size (1 = monomers);
        ``multi_atom``: for clusters of ≥ 2 atoms, statistics and a histogram
        (bins of ``bin_nm``, or of ``bin_nm / 0.0293`` px without calibration)
        of the maximum extent and of the radius of gyration, in ``unit``."""
        scale = self.pixel_size_nm or 1.0
        width = bin_nm / (1.0 if self.pixel_size_nm else 0.0293)
        sizes, counts = np.unique(self.n_atoms, return_counts=True)
        multi = self.n_atoms >= 2

        def describe(v):
            if not len(v):
                return None
            top = max(float(v.max()), width)
            edges = np.arange(0.0, top + width, width)
            if edges[-1] < top:
                edges = np.append(edges, edges[-1] + width)
            h, _ = np.histogram(v, bins=edges)
            return {"mean": float(v.mean()), "median": float(np.median(v)),
                    "p90": float(np.percentile(v, 90)), "max": float(v.max()),
                    "histogram": {"edges": [round(float(e), 6) for e in edges], "counts": h.tolist()}}

        ext = self.max_extent_px[multi] * scale
        rg = self.radius_of_gyration_px[multi] * scale
        n_at = int(self.n_atoms.sum())
        return {"unit": self.unit, "n_clusters": len(self),
                "by_n_atoms": {str(int(k)): int(c) for k, c in zip(sizes, counts)},
                "atom_fraction_by_n_atoms": ({str(int(k)): float(k * c / n_at) for k, c in zip(sizes, counts)}
                                            if n_at else {}),
                "mean_atoms_per_cluster": float(self.n_atoms.mean()) if len(self) else None,
                "multi_atom": {"n_clusters": int(multi.sum()), "max_extent": describe(ext),
                               "radius_of_gyration": describe(rg)}}


def cluster_table(xy, labels, *, pixel_size_nm: float | None = None, species=None) -> ClusterTable:
    """Build the per-cluster table.

    Parameters
    ----------
    xy : (N, 2) array
        Atom positions [x, y], px.
    labels : (N,) int array
        Cluster id per atom, 0 … C−1 (``ClusterResult.labels``).
    pixel_size_nm : float, optional
    species : (N,) array of str, optional
        Species name per atom (``""`` = none; not counted).

    Returns
    -------
    ClusterTable

    Examples
    --------
    >>> t = cluster_table([[0, 0], [4, 0], [50, 50]], [0, 0, 1], pixel_size_nm=0.05,
    ...                   species=["Pt", "Pd", "Pt"])
    >>> t.n_atoms.tolist(), t.max_extent_px.tolist(), t.composition().tolist()
    ([2, 1], [4.0, 0.0], ['Pd:1;Pt:1', 'Pt:1'])
    >>> round(float(t.columns()["radius_of_gyration_nm"][0]), 3)
    0.1
    """
    pts = as_points(xy)
    lab = np.asarray(labels).astype(np.int64).ravel()
    if lab.shape != (len(pts),):
        raise ValueError(f"labels must have one entry per atom ({len(pts)}), got shape {np.shape(labels)}")
    if len(lab) and lab.min() < 0:
        raise ValueError("labels must be ≥ 0 (cluster ids 0 … C−1)")
    if pixel_size_nm is not None and not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be a positive number or None, got {pixel_size_nm!r}")
    c = int(lab.max()) + 1 if len(lab) else 0
    n = np.bincount(lab, minlength=c).astype(np.int64)
    present = n > 0
    nz = np.maximum(n, 1)
    cx = np.bincount(lab, pts[:, 0], minlength=c) / nz
    cy = np.bincount(lab, pts[:, 1], minlength=c) / nz
    d2 = (pts[:, 0] - cx[lab]) ** 2 + (pts[:, 1] - cy[lab]) ** 2
    rg = np.sqrt(np.bincount(lab, d2, minlength=c) / nz)
    ext = _max_extents(pts, lab, n)
    names: list = []
    counts = np.zeros((c, 0), np.int64)
    if species is not None:
        sp = np.asarray(species, dtype=object).ravel()
        if sp.shape != lab.shape:
            raise ValueError(f"species must have one entry per atom ({len(lab)}), got shape {np.shape(species)}")
        sp = np.where(np.equal(sp, None), "", sp).astype(str)
        values, which = np.unique(sp, return_inverse=True)
        which = np.asarray(which).reshape(-1)
        named = values != ""
        names = [str(v) for v in values[named]]
        # one bincount over (cluster, species) pairs: no loop over clusters or atoms
        col = np.cumsum(named) - 1  # column of each distinct value among the named ones
        keep = named[which]
        counts = np.bincount(lab[keep] * len(names) + col[which[keep]],
                             minlength=c * len(names)).reshape(c, len(names)).astype(np.int64)
    ids = np.flatnonzero(present).astype(np.int64)
    return ClusterTable(ids, n[ids], cx[ids], cy[ids], rg[ids], ext[ids], names, counts[ids],
                        float(pixel_size_nm) if pixel_size_nm else None)
