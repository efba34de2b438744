"""Nearest neighbours and clusters: every backend equals the reference exactly."""

from __future__ import annotations

import numpy as np
import pytest
from fastsac_testdata import backend_params

from fastsac import _backend
from fastsac.spatial import clusters, nearest_neighbors
from fastsac.spatial.neighbors import (_cluster_kernel, _clusters_numpy_ref, _nearest_neighbors_numpy_ref,
                                       _nn_kernel)




@pytest.fixture(params=backend_params(_nn_kernel))
def nn_backend(request):
    if request.param not in _nn_kernel.available():
        pytest.skip(f"{request.param} not available")
    return request.param


@pytest.fixture(params=backend_params(_cluster_kernel))
def cl_backend(request):
    if request.param not in _cluster_kernel.available():
        pytest.skip(f"{request.param} not available")
    return request.param


def point_sets(rng):
    yield "random", rng.random((500, 2)) * 100
    yield "lattice-ties", np.array([[x, y] for x in range(12) for y in range(9)], float)
    yield "lattice-shuffled", rng.permutation(np.array([[x, y] for x in range(10) for y in range(10)], float))
    yield "coincident", np.repeat(rng.random((30, 2)) * 5, 3, axis=0)
    yield "all-same", np.full((7, 2), 2.5)
    yield "collinear-x", np.c_[rng.random(80) * 50, np.full(80, 3.0)]
    yield "collinear-y", np.c_[np.zeros(40), np.arange(40) * 0.1]
    yield "decimal-grid", np.round(rng.random((300, 2)) * 3, 1)
    yield "clustered", np.r_[rng.normal(0, 0.01, (100, 2)), rng.normal(1000, 0.01, (100, 2))]
    yield "far-outlier", np.r_[rng.random((200, 2)), [[1e6, -1e6]]]
    yield "large-offset", rng.random((300, 2)) * 10 + 1e7
    yield "tiny-scale", rng.random((300, 2)) * 1e-9
    yield "two", np.array([[0.0, 0.0], [3.0, 4.0]])
    yield "one", np.array([[1.0, 1.0]])
    yield "empty", np.zeros((0, 2))


def test_nearest_neighbors_parity(nn_backend, rng):
    for name, xy in point_sets(rng):
        ref_d, ref_j = _nearest_neighbors_numpy_ref(xy)
        res = nearest_neighbors(xy, backend=nn_backend)
        np.testing.assert_array_equal(res.distance, ref_d, err_msg=name)
        np.testing.assert_array_equal(res.index, ref_j, err_msg=name)
        assert res.distance.dtype == np.float64 and res.index.dtype == np.int64


def test_nearest_neighbors_semantics(nn_backend):
    res = nearest_neighbors([[0, 0], [1, 0], [-1, 0], [0, 0], [5, 5]], backend=nn_backend)
    assert res.index.tolist() == [3, 0, 0, 0, 1]  # ties to the lower index
    np.testing.assert_array_equal(res.distance[:4], [0, 1, 1, 0])
    np.testing.assert_allclose(res.distance[4], np.hypot(4, 5))
    one = nearest_neighbors([[3.0, 4.0]], backend=nn_backend)
    assert one.distance.tolist() == [np.inf] and one.index.tolist() == [-1]
    empty = nearest_neighbors(np.zeros((0, 2)), backend=nn_backend)
    assert empty.distance.shape == (0,) and empty.index.shape == (0,)


def test_nearest_neighbors_order_invariant(nn_backend, rng):
    xy = rng.random((2000, 2)) * 300
    perm = rng.permutation(len(xy))
    a = nearest_neighbors(xy, backend=nn_backend)
    b = nearest_neighbors(xy[perm], backend=nn_backend)
    np.testing.assert_array_equal(b.distance, a.distance[perm])
    np.testing.assert_array_equal(perm[b.index], a.index[perm])  # no ties in random data


def test_inputs_coerced_and_not_mutated(nn_backend, cl_backend, rng):
    xy = rng.integers(0, 30, (100, 2))
    ref_d, ref_j = _nearest_neighbors_numpy_ref(xy.astype(float))
    ref_l, ref_s = _clusters_numpy_ref(xy.astype(float), 2.0)
    for pts in (xy, xy.astype(np.float32), np.asfortranarray(xy.astype(float)), xy.tolist()):
        before = np.array(pts, copy=True)
        res = nearest_neighbors(pts, backend=nn_backend)
        np.testing.assert_array_equal(res.distance, ref_d)
        np.testing.assert_array_equal(res.index, ref_j)
        cl = clusters(pts, cutoff=2.0, backend=cl_backend)
        np.testing.assert_array_equal(cl.labels, ref_l)
        np.testing.assert_array_equal(cl.sizes, ref_s)
        np.testing.assert_array_equal(np.asarray(pts), before)
    big = np.zeros((len(xy), 4))
    big[:, ::2] = xy
    wide = big[:, ::2]  # non-contiguous (N, 2) view
    np.testing.assert_array_equal(nearest_neighbors(wide, backend=nn_backend).index, ref_j)
    with pytest.raises(ValueError, match="NaN"):
        nearest_neighbors([[0, 0], [np.nan, 1]], backend=nn_backend)
    with pytest.raises(ValueError, match="NaN"):
        clusters([[0, 0], [np.inf, 1]], cutoff=1, backend=cl_backend)


@pytest.mark.parametrize("cutoff", [0.0, 0.1, 0.3, 1.0, 2.5, 50.0])
def test_clusters_parity(cl_backend, rng, cutoff):
    for name, xy in point_sets(rng):
        ref_l, ref_s = _clusters_numpy_ref(xy, cutoff)
        res = clusters(xy, cutoff=cutoff, backend=cl_backend)
        np.testing.assert_array_equal(res.labels, ref_l, err_msg=f"{name} cutoff {cutoff}")
        np.testing.assert_array_equal(res.sizes, ref_s, err_msg=f"{name} cutoff {cutoff}")


def test_clusters_known_composition(cl_backend, rng):
    # Singles, dimers, trimers and a 5-atom chain far apart; links at 0.25 nm, cutoff 0.3.
    blocks, truth = [], []
    offsets = rng.permutation(np.array([[x, y] for x in range(0, 100, 10) for y in range(0, 60, 10)], float))
    shapes = ([np.zeros((1, 2))] * 20 + [np.array([[0, 0], [0.25, 0]])] * 15
              + [np.array([[0, 0], [0.25, 0], [0.125, 0.2]])] * 10 + [np.c_[np.arange(5) * 0.25, np.zeros(5)]] * 5)
    for off, shp in zip(offsets, shapes):
        blocks.append(shp + off)
        truth += [len(shp)] * len(shp)
    xy = np.concatenate(blocks)
    perm = rng.permutation(len(xy))
    xy, truth = xy[perm], np.asarray(truth)[perm]
    res = clusters(xy, cutoff=0.3, backend=cl_backend)
    np.testing.assert_array_equal(res.sizes, truth)
    assert res.n_clusters == 50
    assert np.bincount(np.bincount(res.labels))[1:6].tolist() == [20, 15, 10, 0, 5]
    assert res.labels[0] == 0 and (np.diff(np.maximum.accumulate(res.labels)) <= 1).all()  # canonical


def test_clusters_cutoff_is_inclusive(cl_backend):
    xy = np.array([[0, 0], [3, 4], [6, 8.0000001], [100, 100]])
    res = clusters(xy, cutoff=5.0, backend=cl_backend)
    assert res.labels.tolist() == [0, 0, 1, 2]
    assert res.sizes.tolist() == [2, 2, 1, 1]
    lattice = np.array([[x * 0.1, y * 0.1] for x in range(20) for y in range(20)])
    ref_l, _ = _clusters_numpy_ref(lattice, 0.1)
    np.testing.assert_array_equal(clusters(lattice, cutoff=0.1, backend=cl_backend).labels, ref_l)


def test_clusters_order_invariant_partition(cl_backend, rng):
    xy = rng.random((3000, 2)) * 60
    perm = rng.permutation(len(xy))
    a = clusters(xy, cutoff=0.8, backend=cl_backend)
    b = clusters(xy[perm], cutoff=0.8, backend=cl_backend)
    np.testing.assert_array_equal(b.sizes, a.sizes[perm])
    # Same partition: the label pairs map one-to-one.
    pairs = set(zip(a.labels[perm].tolist(), b.labels.tolist()))
    assert len(pairs) == a.n_clusters == b.n_clusters


def test_larger_random_parity(nn_backend, cl_backend, rng):
    xy = rng.random((20000, 2)) * np.sqrt(20000)
    ref_d, ref_j = _nearest_neighbors_numpy_ref(xy)
    res = nearest_neighbors(xy, backend=nn_backend)
    np.testing.assert_array_equal(res.distance, ref_d)
    np.testing.assert_array_equal(res.index, ref_j)
    ref_l, ref_s = _clusters_numpy_ref(xy, 0.6)
    cl = clusters(xy, cutoff=0.6, backend=cl_backend)
    np.testing.assert_array_equal(cl.labels, ref_l)
    np.testing.assert_array_equal(cl.sizes, ref_s)


def test_cpp_explicitly_when_built():
    if _backend._core() is None:
        pytest.skip("fastsac._core not built")
    res = nearest_neighbors([[0, 0], [0, 2], [5, 0]], backend="cpp")
    assert res.backend == "cpp" and res.index.tolist() == [1, 0, 0]
    cl = clusters([[0, 0], [0, 2], [5, 0]], cutoff=2, backend="cpp")
    assert cl.backend == "cpp" and cl.labels.tolist() == [0, 0, 1]


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match=r"backend must be one of .*'cpp'.*'numpy'"):
        nearest_neighbors([[0, 0], [1, 1]], backend="fortran")
    with pytest.raises(ValueError, match=r"backend must be one of .*'cpp'.*'numpy'"):
        clusters([[0, 0], [1, 1]], cutoff=1, backend="kdtree")
