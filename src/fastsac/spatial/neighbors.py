"""First-nearest-neighbour distances and distance-cutoff clusters.

References use scipy's cKDTree; the C++ kernels use a uniform cell grid
(O(N) for the point densities of real micrographs) and union–find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .._backend import Backend, Kernel, core, on_device
from .._validate import as_points, check_positive

__all__ = ["nearest_neighbors", "clusters", "NeighborResult", "ClusterResult"]


def _nearest_neighbors_numpy_ref(xy: np.ndarray):
    """Spec. For each point the Euclidean distance to the closest *other*
    point and its index; ties go to the lower index; coincident points have
    distance 0. With one point: distance inf, index -1."""
    n = len(xy)
    if n < 2:
        return np.full(n, np.inf), np.full(n, -1, np.int64)
    tree = cKDTree(xy)
    d2, _ = tree.query(xy, k=2)
    # Candidates within the k-d tree's distance (slightly widened), then the
    # exact rule: distance sqrt(dx*dx + dy*dy) in float64, ties to lower index.
    balls = tree.query_ball_point(xy, d2[:, 1] * (1 + 1e-9) + 1e-300)
    dist = np.empty(n)
    idx = np.empty(n, np.int64)
    for i in range(n):
        cand = np.asarray([j for j in balls[i] if j != i], dtype=np.int64)
        dx = xy[cand, 0] - xy[i, 0]
        dy = xy[cand, 1] - xy[i, 1]
        dd = np.sqrt(dx * dx + dy * dy)
        best = np.lexsort((cand, dd))[0]
        dist[i], idx[i] = dd[best], cand[best]
    return dist, idx


_nn_kernel = Kernel("nearest_neighbors", _nearest_neighbors_numpy_ref)


@_nn_kernel.register("cpp")
def _nearest_neighbors_cpp(xy):
    d, j = core().nearest_neighbors(xy)
    return np.asarray(d, np.float64), np.asarray(j, np.int64)


@dataclass(frozen=True)
class NeighborResult:
    """``distance`` (N,) float64 in the units of the input; ``index`` (N,) int64 (−1: none)."""

    distance: np.ndarray
    index: np.ndarray
    backend: str = "numpy"


def nearest_neighbors(xy, *, backend: str = "auto") -> NeighborResult:
    """First-nearest-neighbour distance and index for every point.

    Parameters
    ----------
    xy : (N, 2) array
        Positions in any length unit (pixels or nm); distances come back in it.
    """
    if on_device(_nn_kernel, backend, xy):
        d, j = _nn_kernel.impls[Backend.CUDA](xy)
        return NeighborResult(d, j, "cuda")
    pts = as_points(xy)
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions; drop them first")
    b = _nn_kernel.resolve(backend, data=xy)
    d, j = _nn_kernel.impls[b](pts)
    return NeighborResult(d, j, b.value)


def _clusters_numpy_ref(xy: np.ndarray, cutoff: float):
    """Spec. Points are linked when their distance is ≤ cutoff; clusters are
    the connected components. Labels are canonical: clusters are numbered
    0, 1, … in order of their lowest point index. Returns (labels, sizes) where
    sizes[i] is the size of point i's cluster."""
    n = len(xy)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = cKDTree(xy).query_pairs(cutoff, output_type="ndarray")
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, raw = connected_components(g, directed=False)
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(first)
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    labels = remap[raw[np.arange(n)]].astype(np.int64)
    sizes = np.bincount(labels)[labels].astype(np.int64)
    return labels, sizes


_cluster_kernel = Kernel("clusters", _clusters_numpy_ref)


@_cluster_kernel.register("cpp")
def _clusters_cpp(xy, cutoff):
    lab, size = core().clusters(xy, float(cutoff))
    return np.asarray(lab, np.int64), np.asarray(size, np.int64)


@dataclass(frozen=True)
class ClusterResult:
    """``labels`` (N,) canonical cluster ids; ``sizes`` (N,) size of each point's cluster."""

    labels: np.ndarray
    sizes: np.ndarray
    cutoff: float
    backend: str = "numpy"

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def clusters(xy, *, cutoff: float, backend: str = "auto") -> ClusterResult:
    """Group points closer than ``cutoff`` (≤, single linkage) into clusters."""
    check_positive(cutoff, name="cutoff", allow_zero=True)
    if on_device(_cluster_kernel, backend, xy):
        lab, size = _cluster_kernel.impls[Backend.CUDA](xy, float(cutoff))
        return ClusterResult(lab, size, float(cutoff), "cuda")
    pts = as_points(xy)
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions; drop them first")
    b = _cluster_kernel.resolve(backend, data=xy)
    lab, size = _cluster_kernel.impls[b](pts, float(cutoff))
    return ClusterResult(lab, size, float(cutoff), b.value)


# CUDA implementations, by dotted path: imported (with numba.cuda) only when first used.
_nn_kernel.register_path("cuda", "fastsac._cuda.spatial:nearest_neighbors_cuda")
_cluster_kernel.register_path("cuda", "fastsac._cuda.spatial:clusters_cuda")
