"""Per-cluster table: geometry against brute force, composition, distribution."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.spatial import clusters
from fastsac.spatial.clusters_table import CLUSTER_COLUMNS, cluster_table


def brute(xy, labels):
    out = {}
    for c in np.unique(labels):
        p = xy[labels == c]
        cen = p.mean(0)
        rg = np.sqrt(((p - cen) ** 2).sum(1).mean())
        ext = max((np.hypot(*(a - b)) for a in p for b in p), default=0.0)
        out[int(c)] = (len(p), cen, rg, ext)
    return out


def test_geometry_matches_brute_force_and_point_order():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 400, (40, 2))
    xy = np.concatenate([c + rng.normal(0, 3, (rng.integers(1, 40), 2)) for c in centres])
    cl = clusters(xy, cutoff=7.8)
    t = cluster_table(xy, cl.labels, pixel_size_nm=0.03)
    ref = brute(xy, cl.labels)
    assert len(t) == len(ref) and t.n_atoms.sum() == len(xy)
    for i, c in enumerate(t.cluster_id):
        n, cen, rg, ext = ref[int(c)]
        assert t.n_atoms[i] == n
        np.testing.assert_allclose([t.x_px[i], t.y_px[i]], cen, atol=1e-9)
        assert t.radius_of_gyration_px[i] == pytest.approx(rg, abs=1e-9)
        assert t.max_extent_px[i] == pytest.approx(ext, abs=1e-9)  # > 30 atoms go through the hull
    cols = t.columns()
    assert list(cols) == CLUSTER_COLUMNS
    np.testing.assert_allclose(cols["max_extent_nm"], t.max_extent_px * 0.03)
    perm = rng.permutation(len(xy))
    tp = cluster_table(xy[perm], cl.labels[perm], pixel_size_nm=0.03)
    np.testing.assert_allclose(tp.radius_of_gyration_px, t.radius_of_gyration_px, atol=1e-9)
    np.testing.assert_allclose(tp.max_extent_px, t.max_extent_px, atol=1e-9)


def test_composition_and_species_columns():
    xy = np.array([[0, 0], [5, 0], [10, 0], [100, 100], [200, 200.0]])
    t = cluster_table(xy, [0, 0, 0, 1, 2], species=["Pt", "Pd", "Pt", "Pd", ""])
    assert t.composition().tolist() == ["Pt:2;Pd:1", "Pd:1", ""]
    cols = t.columns()
    assert cols["n_Pt"].tolist() == [2, 0, 0] and cols["n_Pd"].tolist() == [1, 1, 0]
    assert np.isnan(cols["x_nm"]).all() and t.unit == "px"


def test_size_distribution():
    xy = np.array([[0, 0], [6, 0], [50, 50], [56, 50], [62, 50], [200, 200.0]])
    t = cluster_table(xy, clusters(xy, cutoff=7.0).labels, pixel_size_nm=0.05)
    d = t.size_distribution()
    assert d["unit"] == "nm" and d["n_clusters"] == 3
    assert d["by_n_atoms"] == {"1": 1, "2": 1, "3": 1}
    assert d["atom_fraction_by_n_atoms"]["3"] == pytest.approx(0.5)
    ext = d["multi_atom"]["max_extent"]
    assert d["multi_atom"]["n_clusters"] == 2 and ext["max"] == pytest.approx(0.6)
    assert ext["median"] == pytest.approx(0.45) and sum(ext["histogram"]["counts"]) == 2
    assert ext["histogram"]["edges"][-1] >= 0.6


def test_empty_and_bad_input():
    t = cluster_table(np.zeros((0, 2)), np.zeros(0, int))
    assert len(t) == 0 and t.size_distribution()["multi_atom"]["max_extent"] is None
    with pytest.raises(ValueError, match="labels"):
        cluster_table(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="species"):
        cluster_table(np.zeros((2, 2)), [0, 1], species=["Pt"])
    with pytest.raises(ValueError, match="pixel_size_nm"):
        cluster_table(np.zeros((2, 2)), [0, 1], pixel_size_nm=-1.0)


def test_vectorised_extents_equal_every_pair_per_cluster():
    """The grouped extents (one array operation per cluster size, in blocks) equal
    the largest pair distance found cluster by cluster, bit for bit, including
    clusters above the pairwise limit (convex hull) and collinear ones."""
    from fastsac.spatial import clusters
    from fastsac.spatial.clusters_table import _max_extents

    rng = np.random.default_rng(4)
    xy = np.concatenate([rng.uniform(0, 2000, (3000, 2)),
                         rng.normal(700, 5, (45, 2)),                      # one cluster > 30 atoms
                         np.column_stack([np.arange(40) * 3.0 + 1500, np.full(40, 1900.0)])])
    xy = np.concatenate([xy, xy[:600] + rng.normal(0, 2.5, (600, 2))])  # many small clusters
    labels = clusters(xy, cutoff=6.0).labels
    table = cluster_table(xy, labels)
    ref = np.zeros(len(table))
    for k, cid in enumerate(table.cluster_id):
        p = xy[labels == cid]
        ref[k] = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)).max()
    assert table.n_atoms.max() > 30 and (table.n_atoms == 2).sum() > 100
    np.testing.assert_array_equal(table.max_extent_px, ref)
    n = np.bincount(labels)
    np.testing.assert_array_equal(_max_extents(xy, labels, n, max_elements=7)[table.cluster_id], ref)
