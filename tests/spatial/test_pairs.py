"""The pair-histogram and set-covariance kernels against their numpy/scipy references."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.spatial import pairs
from fastsac.spatial.pairs import pair_histogram, set_covariance_table, weight_table

BACKENDS = pairs._pair_histogram_kernel.available()
COV_BACKENDS = pairs._set_covariance_kernel.available()


@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"] or ["numpy"])
def backend(request):
    return request.param


def _brute_cov(a, b, lag):
    h, w = a.shape
    out = np.zeros((2 * lag + 1, 2 * lag + 1))
    for dy in range(-lag, lag + 1):
        for dx in range(-lag, lag + 1):
            ys, xs = np.nonzero(a)
            y2, x2 = ys + dy, xs + dx
            ok = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
            out[dy + lag, dx + lag] = np.count_nonzero(b[y2[ok], x2[ok]])
    return out


@pytest.mark.parametrize("cov_backend", COV_BACKENDS)
def test_set_covariance_equals_brute_force(cov_backend):
    rng = np.random.default_rng(0)
    a = rng.random((11, 14)) < 0.6
    b = rng.random((11, 14)) < 0.5
    np.testing.assert_array_equal(set_covariance_table(a, image_shape=a.shape, lag=4, backend=cov_backend),
                                  _brute_cov(a, a, 4))
    np.testing.assert_array_equal(
        set_covariance_table(a, other=b, image_shape=a.shape, lag=4, backend=cov_backend), _brute_cov(a, b, 4))


MASKS = {
    "random": lambda rng: rng.random((23, 31)) < 0.55,
    "all_true": lambda rng: np.ones((9, 13), bool),
    "one_pixel": lambda rng: np.pad(np.ones((1, 1), bool), ((3, 5), (2, 4))),
    "stripes": lambda rng: (np.arange(40)[None, :] % 3 == 0) & np.ones((6, 1), bool),
    "checker": lambda rng: (np.add.outer(np.arange(12), np.arange(17)) % 2).astype(bool),
    "single_row": lambda rng: rng.random((1, 40)) < 0.5,
    "single_col": lambda rng: rng.random((37, 1)) < 0.5,
    "empty_rows": lambda rng: np.vstack([np.zeros((4, 20), bool), rng.random((5, 20)) < 0.5,
                                         np.zeros((3, 20), bool)]),
}


@pytest.mark.parametrize("lag", [0, 1, 7, 60])  # 60: lags beyond the mask
@pytest.mark.parametrize("name", sorted(MASKS))
def test_set_covariance_cpp_matches_reference(name, lag):
    if "cpp" not in COV_BACKENDS:
        pytest.skip("no C++ build")
    rng = np.random.default_rng(len(name))
    a = MASKS[name](rng)
    b = np.roll(a, 1, axis=1) | (rng.random(a.shape) < 0.2)
    for other in (None, b):
        ref = set_covariance_table(a, other=other, image_shape=a.shape, lag=lag, backend="numpy")
        got = set_covariance_table(a, other=other, image_shape=a.shape, lag=lag, backend="cpp")
        np.testing.assert_array_equal(got, ref)
    t = set_covariance_table(a, image_shape=a.shape, lag=lag, backend="cpp")
    np.testing.assert_array_equal(t, t[::-1, ::-1])  # γ(−u) = γ(u)
    assert t[lag, lag] == a.sum()


@pytest.mark.parametrize("f, shape", [(3, (14, 17)), (4, (16, 16)), (5, (9, 23))])
def test_set_covariance_binned_equals_expanded(f, shape):
    rng = np.random.default_rng(f)
    hb, wb = -(-shape[0] // f), -(-shape[1] // f)
    a, b = rng.random((hb, wb)) < 0.6, rng.random((hb, wb)) < 0.6
    full_a = np.repeat(np.repeat(a, f, 0), f, 1)[:shape[0], :shape[1]]
    full_b = np.repeat(np.repeat(b, f, 0), f, 1)[:shape[0], :shape[1]]
    for be in COV_BACKENDS:
        got = set_covariance_table(a, other=b, image_shape=shape, bin_factor=f, lag=11, backend=be)
        np.testing.assert_array_equal(got, _brute_cov(full_a, full_b, 11))


def test_set_covariance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        set_covariance_table(np.ones((4, 4), bool), image_shape=(5, 5), lag=2)
    with pytest.raises(ValueError, match="lag"):
        set_covariance_table(np.ones((4, 4), bool), image_shape=(4, 4), lag=-1)


def _patterns():
    rng = np.random.default_rng(7)
    lattice = np.stack(np.meshgrid(np.arange(0, 30, 1.0), np.arange(0, 20, 1.0)), -1).reshape(-1, 2)
    return {
        "uniform": rng.uniform(0, 200, (2500, 2)),
        "clustered": np.concatenate([c + rng.normal(0, 2, (40, 2)) for c in rng.uniform(10, 190, (30, 2))]),
        "lattice_ties": lattice,  # integer distances land exactly on bin edges, half-integer lags
        "half_pixel": lattice + 0.5,
        "coincident": np.repeat(rng.uniform(0, 50, (30, 2)), 3, axis=0),
        "collinear": np.column_stack([np.linspace(0, 100, 300), np.full(300, 5.0)]),
        "two": np.array([[1.0, 1.0], [3.0, 2.0]]),
        "one": np.array([[1.0, 1.0]]),
        "empty": np.zeros((0, 2)),
    }


@pytest.mark.parametrize("mode", ["rect", "table", "table_ref"])
@pytest.mark.parametrize("name", sorted(_patterns()))
def test_pair_histogram_matches_reference(name, mode, backend):
    xy = _patterns()[name]
    rng = np.random.default_rng(1)
    mask = rng.random((201, 201)) < 0.9
    kw = {"bin_width": 0.5, "n_bins": 41, "area": 40000.0}
    if mode == "rect":
        kw["rect_shape"] = (201, 201)
    else:
        kw["table"] = weight_table(set_covariance_table(mask, image_shape=mask.shape, lag=21), area=kw["area"])
        if mode == "table_ref":
            kw["ref"] = rng.random(len(xy)) < 0.4
    hk0, hg0 = pair_histogram(np.ascontiguousarray(xy), backend="numpy", **kw)
    hk1, hg1 = pair_histogram(np.ascontiguousarray(xy), backend=backend, **kw)
    np.testing.assert_allclose(hk1, hk0, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(hg1, hg0, rtol=1e-12, atol=1e-9)
    if name == "two":
        d = np.hypot(2, 1)
        b = int(d / 0.5)
        w = 40000.0 / ((201 - 2) * (201 - 1)) if mode == "rect" else None
        if w is not None:
            assert hk0[b] == pytest.approx(2 * w) and hk0.sum() == pytest.approx(2 * w)


def test_pair_histogram_counts_pairs_and_ignores_order(backend):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (800, 2))
    kw = {"bin_width": 0.25, "n_bins": 40, "area": 1.0, "table": np.ones((23, 23), np.float32), "backend": backend}
    hk, _ = pair_histogram(xy, **kw)
    d = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))
    n_ordered = np.count_nonzero((d < 10) & (d > 0))
    assert hk.sum() == pytest.approx(n_ordered)  # weight 1 per ordered pair
    perm = rng.permutation(len(xy))
    np.testing.assert_allclose(pair_histogram(np.ascontiguousarray(xy[perm]), **kw)[0], hk, rtol=1e-12)
    np.testing.assert_array_equal(xy, xy)  # input untouched (float64 view passed through)


def test_pair_histogram_validates():
    xy = np.zeros((3, 2))
    with pytest.raises(ValueError, match="exactly one"):
        pair_histogram(xy, bin_width=1, n_bins=2, area=1.0)
    with pytest.raises(ValueError, match="reach"):
        pair_histogram(xy, bin_width=1, n_bins=20, area=1.0, table=np.ones((5, 5)))
    with pytest.raises(ValueError, match="ref"):
        pair_histogram(xy, bin_width=1, n_bins=2, area=1.0, rect_shape=(5, 5), ref=np.ones(2, bool))
