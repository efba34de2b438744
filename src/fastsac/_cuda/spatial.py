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

cu = None  # numba.cuda, bound on first use by _kernels()

from . import as_torch, cuda, grid, launch, library, to_lib
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
    """CUDA ``nearest_neighbors`` → (distance (N,) float64, index (N,) int64), as the
    input's library (numpy for host input)."""
    import torch

    lib = library(xy)
    pts = as_torch(xy, np.float64).reshape(-1, 2)
    n = len(pts)
    dev = pts.device
    if n < 2:
        return (to_lib(torch.full((n,), math.inf, dtype=torch.float64, device=dev), lib),
                to_lib(torch.full((n,), -1, dtype=torch.int64, device=dev), lib))
    ext = (pts.max(0).values - pts.min(0).values).tolist()
    cell = math.sqrt(max(ext[0], 1e-9) * max(ext[1], 1e-9) / n) or 1.0  # ~1 point per cell
    perm, cx, cy, start, nx, ny, cell = cell_grid(pts, max(cell, 1e-9))
    dist = torch.empty(n, dtype=torch.float64, device=dev)
    nbr = torch.empty(n, dtype=torch.int64, device=dev)
    g = grid(n)
    launch(_kernels()["nn"], g[0], g[1],
           (pts[perm, 0].contiguous(), pts[perm, 1].contiguous(), perm, cx, cy, start, nx, ny,
            float(cell), dist, nbr), writes=(9, 10))
    return to_lib(dist, lib), to_lib(nbr, lib)


def clusters_cuda(xy, cutoff):
    """CUDA ``clusters`` → (labels, sizes) (N,) int64, canonical as the reference."""
    import torch

    lib = library(xy)
    pts = as_torch(xy, np.float64).reshape(-1, 2)
    n = len(pts)
    dev = pts.device
    if n == 0:
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        return to_lib(z, lib), to_lib(z, lib)
    c = float(cutoff)
    perm, cx, cy, start, nx, ny, _ = cell_grid(pts, c * (1 + 1e-12) if c > 0 else 1.0)
    k = 1 if c > 0 else 0
    parent = torch.arange(n, dtype=torch.int64, device=dev)
    kern = _kernels()
    g = grid(n)
    launch(kern["link"], g[0], g[1],
           (pts[perm, 0].contiguous(), pts[perm, 1].contiguous(), perm, cx, cy, start, nx, ny, k,
            c * c, parent), writes=(10,))
    root = torch.empty(n, dtype=torch.int64, device=dev)
    launch(kern["flatten"], g[0], g[1], (parent, root), writes=(1,))
    # Roots are each component's lowest index: numbering roots in index order is canonical.
    is_root = root == torch.arange(n, device=dev)
    labels = (torch.cumsum(is_root.to(torch.int64), 0) - 1)[root]
    sizes = torch.bincount(labels)[labels]
    return to_lib(labels, lib), to_lib(sizes, lib)


