"""numba CUDA kernels for :mod:`fastsac.spatial.neighbors`.

* ``nearest_neighbors``: one thread per point searches rings of grid cells
  outwards until the best distance is shorter than the nearest unsearched
  ring. Same rule as the reference (float64 ``sqrt(dx²+dy²)``, ties to the
  lower index). Indices equal the reference's; distances agree to 1e-12
  (relative; the GPU may fuse ``dx*dx + dy*dy`` into one FMA, so exact ties
  between different neighbours can in principle resolve differently).
* ``clusters``: union–find with atomic compare-and-swap over the pairs
  within the cutoff found through a cell grid (cell ≥ cutoff, 3×3 cells);
  roots are linked larger-under-smaller so every root is its component's
  lowest index, which gives the reference's canonical numbering directly.
  Labels and sizes are identical to the reference (up to pairs at a distance
  equal to the cutoff within rounding).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..spatial import neighbors as _nb
cu = None  # numba.cuda, bound on first use by _kernels()

from . import cuda, grid, host
from .peaks import cell_grid


@functools.lru_cache(maxsize=None)
def _kernels():
    # Kernels must see numba.cuda as a module global (the simulator swaps globals).
    global cu
    cu = cuda()

    @cu.jit
    def nn(xs, ys, idx, cellx, celly, start, nx, ny, cell, dist, nbr):
        i = cu.grid(1)
        n = xs.shape[0]
        if i >= n:
            return
        xi, yi = xs[i], ys[i]
        cxi, cyi = cellx[i], celly[i]
        best = np.inf
        bj = -1
        kmax = max(nx, ny)
        k = 0
        while k <= kmax:
            for gy in range(max(cyi - k, 0), min(cyi + k, ny - 1) + 1):
                for gx in range(max(cxi - k, 0), min(cxi + k, nx - 1) + 1):
                    if max(abs(gx - cxi), abs(gy - cyi)) != k:
                        continue  # inner rings were searched already
                    c = gy * nx + gx
                    for j in range(start[c], start[c + 1]):
                        if j != i:
                            dx = xs[j] - xi
                            dy = ys[j] - yi
                            d = math.sqrt(dx * dx + dy * dy)
                            oj = idx[j]
                            if d < best or (d == best and oj < bj):
                                best = d
                                bj = oj
            # Unsearched points lie ≥ k cells away: stop when nothing there can tie or win.
            if best < k * cell * (1 - 1e-9):
                break
            k += 1
        dist[idx[i]] = best
        nbr[idx[i]] = bj

    @cu.jit(device=True)
    def find(parent, x):
        while True:
            p = parent[x]
            if p == x:
                return x
            gp = parent[p]
            if gp != p:
                parent[x] = gp  # path halving: benign race, parents only decrease
            x = p

    @cu.jit
    def link(xs, ys, idx, cellx, celly, start, nx, ny, k, c2, parent):
        i = cu.grid(1)
        n = xs.shape[0]
        if i >= n:
            return
        oi = idx[i]
        for gy in range(max(celly[i] - k, 0), min(celly[i] + k, ny - 1) + 1):
            for gx in range(max(cellx[i] - k, 0), min(cellx[i] + k, nx - 1) + 1):
                c = gy * nx + gx
                for j in range(start[c], start[c + 1]):
                    oj = idx[j]
                    if oj <= oi:
                        continue
                    dx = xs[j] - xs[i]
                    dy = ys[j] - ys[i]
                    if dx * dx + dy * dy <= c2:
                        a = oi
                        b = oj
                        while True:
                            a = find(parent, a)
                            b = find(parent, b)
                            if a == b:
                                break
                            if a > b:
                                a, b = b, a
                            old = cu.atomic.cas(parent, b, b, a)
                            if old == b:
                                break

    @cu.jit
    def flatten(parent, root):
        i = cu.grid(1)
        if i >= parent.shape[0]:
            return
        x = i
        while parent[x] != x:
            x = parent[x]
        root[i] = x

    return {"nn": nn, "link": link, "flatten": flatten}


def nearest_neighbors_cuda(xy):
    """CUDA ``nearest_neighbors`` → (distance (N,) float64, index (N,) int64), host arrays."""
    pts = np.ascontiguousarray(host(xy), np.float64).reshape(-1, 2)
    n = len(pts)
    if n < 2:
        return np.full(n, np.inf), np.full(n, -1, np.int64)
    ext = pts.max(0) - pts.min(0)
    cell = float(np.sqrt(max(ext[0], 1e-9) * max(ext[1], 1e-9) / n)) or 1.0
    perm, cx, cy, start, nx, ny, cell = cell_grid(pts, max(cell, 1e-9))
    cu = cuda()
    dist = cu.device_array(n, np.float64)
    nbr = cu.device_array(n, np.int64)
    _kernels()["nn"][grid(n)](cu.to_device(np.ascontiguousarray(pts[perm, 0])),
                              cu.to_device(np.ascontiguousarray(pts[perm, 1])),
                              cu.to_device(perm.astype(np.int64)), cu.to_device(cx),
                              cu.to_device(cy), cu.to_device(start), nx, ny, float(cell),
                              dist, nbr)
    return dist.copy_to_host(), nbr.copy_to_host()


def clusters_cuda(xy, cutoff):
    """CUDA ``clusters`` → (labels, sizes) (N,) int64, canonical as the reference."""
    pts = np.ascontiguousarray(host(xy), np.float64).reshape(-1, 2)
    n = len(pts)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    c = float(cutoff)
    perm, cx, cy, start, nx, ny, cell = cell_grid(pts, c * (1 + 1e-12) if c > 0 else 1.0)
    k = 1 if c > 0 else 0
    cu = cuda()
    parent = cu.to_device(np.arange(n, dtype=np.int64))
    kern = _kernels()
    kern["link"][grid(n)](cu.to_device(np.ascontiguousarray(pts[perm, 0])),
                          cu.to_device(np.ascontiguousarray(pts[perm, 1])),
                          cu.to_device(perm.astype(np.int64)), cu.to_device(cx), cu.to_device(cy),
                          cu.to_device(start), nx, ny, k, c * c, parent)
    root = cu.device_array(n, np.int64)
    kern["flatten"][grid(n)](parent, root)
    root = root.copy_to_host()
    # Roots are each component's lowest index: numbering roots in index order is canonical.
    is_root = root == np.arange(n)
    label_of = np.cumsum(is_root) - 1
    labels = label_of[root].astype(np.int64)
    sizes = np.bincount(labels)[labels].astype(np.int64)
    return labels, sizes


_nb._nn_kernel.register("cuda")(nearest_neighbors_cuda)
_nb._cluster_kernel.register("cuda")(clusters_cuda)
