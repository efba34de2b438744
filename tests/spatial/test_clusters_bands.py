"""The fused C++ cluster kernel (row bands, union–find, no pair list) against the
reference on inputs that stress its band boundaries, duplicates and extremes."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.spatial import clusters
from fastsac.spatial.neighbors import _cluster_kernel, _clusters_numpy_ref

pytestmark = pytest.mark.skipif("cpp" not in _cluster_kernel.available(), reason="C++ core not built")


def _check(xy, cutoff, name=""):
    ref_l, ref_s = _clusters_numpy_ref(np.asarray(xy, float), cutoff)
    res = clusters(xy, cutoff=cutoff, backend="cpp")
    np.testing.assert_array_equal(res.labels, ref_l, err_msg=name)
    np.testing.assert_array_equal(res.sizes, ref_s, err_msg=name)
    return res


def test_many_bands_mean_size_three(rng):
    # ~70k points: hundreds of rows, >= 32 bands, clusters crossing every band boundary.
    n = 70000
    xy = rng.random((n, 2)) * np.sqrt(n)
    res = _check(xy, 0.78, "uniform")
    assert 2.5 < n / res.n_clusters < 3.5  # the benchmark's regime: mean cluster size ~3


def test_chains_across_all_bands(rng):
    # Vertical and diagonal chains spanning the whole height link every band to
    # the next; a spiral makes roots move across many boundaries in both orders.
    t = np.linspace(0, 60 * np.pi, 20000)
    spiral = np.c_[t * np.cos(t), t * np.sin(t)] * 0.05
    vertical = np.c_[np.full(3000, 5.0), np.arange(3000) * 0.3]
    diagonal = np.c_[np.arange(3000) * 0.2, np.arange(3000) * 0.2]
    noise = rng.random((20000, 2)) * [600, 900]
    xy = rng.permutation(np.concatenate([spiral, vertical, diagonal, noise]))
    for cutoff in (0.3, 0.5, 1.0):
        _check(xy, cutoff, f"chains cutoff {cutoff}")


def test_duplicates_and_exact_cutoff(rng):
    base = np.round(rng.random((5000, 2)) * 40, 1)  # decimal grid: many exact-cutoff distances
    xy = rng.permutation(np.concatenate([base, base[:2000], base[:100]]))
    for cutoff in (0.0, 0.1, 0.2, 0.3):
        _check(xy, cutoff, f"duplicates cutoff {cutoff}")


def test_collinear_degenerate_and_tiny():
    _check(np.zeros((0, 2)), 1.0, "empty")
    _check(np.array([[3.0, 4.0]]), 1.0, "one")
    _check(np.c_[np.arange(50000) * 0.5, np.zeros(50000)], 0.5, "horizontal line")
    _check(np.c_[np.zeros(50000), np.arange(50000) * 0.5], 0.49, "vertical line (no links)")
    _check(np.c_[np.zeros(50000), np.arange(50000) * 0.5], 0.5, "vertical line (one chain)")
    _check(np.full((1000, 2), 7.0), 0.0, "all the same point")


@pytest.mark.parametrize("scale,offset", [(1e-9, 0.0), (1.0, 1e12), (1e150, 0.0), (1.0, -1e15)])
def test_huge_and_tiny_coordinates(rng, scale, offset):
    xy = rng.random((3000, 2)) * 60 * scale + offset
    xy = np.concatenate([xy, xy[:50]])
    for cutoff in (0.5 * scale, 2.0 * scale):
        _check(xy, cutoff, f"scale {scale} offset {offset} cutoff {cutoff}")


def test_far_outlier_makes_coarse_grid(rng):
    xy = np.r_[rng.random((20000, 2)) * 100, [[1e9, 1e9]], [[-1e9, 5.0]]]
    _check(xy, 0.6, "outliers")
