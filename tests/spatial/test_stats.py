"""Dispersion statistics validated on point patterns with known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastsac.spatial import neighbors
from fastsac.spatial.stats import (Window, clark_evans, cluster_stats, compare_samples, dispersion,
                                   pair_correlation_test, pool_dispersion)

# Binomial acceptance band for a rejection rate with nominal level 5%: mean ± 3.3 sd.
def _band(n_trials: int, p: float = 0.05) -> tuple[float, float]:
    sd = math.sqrt(p * (1 - p) / n_trials)
    return max(0.0, p - 3.3 * sd), p + 3.3 * sd


def csr(rng, n, shape=(512, 512)):
    h, w = shape
    return np.column_stack([rng.uniform(-0.5, w - 0.5, n), rng.uniform(-0.5, h - 0.5, n)])


def thomas(rng, n_parents, kids, sigma, shape=(512, 512)):
    h, w = shape
    par = csr(rng, n_parents, shape)
    pts = np.concatenate([p + rng.normal(0, sigma, (kids, 2)) for p in par])
    keep = (pts[:, 0] >= -0.5) & (pts[:, 0] < w - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] < h - 0.5)
    return pts[keep]


def hard_core(rng, n, d, shape=(512, 512)):
    """Sequential inhibition: uniform points, each at least d from the earlier ones."""
    pts = np.zeros((0, 2))
    while len(pts) < n:
        c = csr(rng, 1, shape)
        if not len(pts) or np.hypot(*(pts - c).T).min() >= d:
            pts = np.vstack([pts, c])
    return pts


L_MASK = np.ones((256, 256), bool)
L_MASK[:90, :] = False
L_MASK[:180, :70] = False


# ------------------------------------------------------------------ Clark–Evans


def test_clark_evans_donnelly_nominal_rate_on_csr():
    rng = np.random.default_rng(1)
    trials, rej, R = 400, 0, []
    for _ in range(trials):
        ce = clark_evans(csr(rng, int(rng.integers(20, 120))), image_shape=(512, 512), correction="donnelly")
        rej += ce.p_value < 0.05
        R.append(ce.R)
    lo, hi = _band(trials)
    assert lo <= rej / trials <= hi
    assert abs(np.mean(R) - 1) < 0.01          # edge-corrected R ≈ 1
    assert ce.correction == "donnelly" and ce.n_used == ce.n_points


def test_uncorrected_clark_evans_is_biased_by_edges():
    rng = np.random.default_rng(2)
    naive = [clark_evans(csr(rng, 30), image_shape=(512, 512)).R_naive for _ in range(200)]
    assert np.mean(naive) > 1.03             # the edge effect the corrections remove


@pytest.mark.parametrize("correction,trials", [("guard", 400), ("monte_carlo", 120), ("donnelly", 300)])
def test_clark_evans_nominal_rate_in_mask(correction, trials):
    rng = np.random.default_rng(3)
    win = Window(L_MASK.shape, mask=L_MASK)
    rej, z = 0, []
    for i in range(trials):
        ce = clark_evans(win.sample(int(rng.integers(30, 90)), rng), mask=L_MASK, correction=correction,
                         n_sim=99, seed=i)
        rej += ce.p_value < 0.05
        z.append(ce.z)
    lo, hi = _band(trials)
    # Donnelly's formula is for rectangles: on an L-shaped mask it is only approximately calibrated.
    assert lo <= rej / trials <= (hi if correction != "donnelly" else 0.12)
    assert abs(np.mean(z)) < 0.3


def test_clark_evans_detects_clustering_and_regularity():
    rng = np.random.default_rng(4)
    cl = clark_evans(thomas(rng, 20, 5, 6.0), image_shape=(512, 512))
    assert cl.R < 0.6 and cl.p_value < 1e-3 and cl.z < 0
    hc = clark_evans(hard_core(rng, 120, 30), image_shape=(512, 512))
    assert hc.R > 1.2 and hc.p_value < 1e-3 and hc.z > 0


def test_clark_evans_degenerate_inputs():
    assert math.isnan(clark_evans(np.zeros((0, 2)), image_shape=(10, 10)).R)
    assert math.isnan(clark_evans([[1.0, 1.0]], image_shape=(10, 10)).R)
    with pytest.raises(ValueError, match="correction"):
        clark_evans([[1, 1], [3, 3]], image_shape=(10, 10), correction="bogus")
    with pytest.raises(ValueError, match="image_shape"):
        clark_evans([[1, 1], [3, 3]])


# ------------------------------------------------------------------ multimers and clusters


def _multimer_pattern(rng, n_sites, p_dimer, p_trimer, bond_px, shape=(1024, 1024)):
    """Hard-core cluster centres (≥ 40 px apart, so no chance multimers), each a
    monomer, a dimer (two atoms bond_px apart) or an equilateral trimer."""
    centres = hard_core(rng, n_sites, 40, shape)
    pts, kinds = [], []
    for c in centres:
        u = rng.random()
        a = rng.uniform(0, 2 * np.pi)
        if u < p_dimer:
            off = 0.5 * bond_px * np.array([np.cos(a), np.sin(a)])
            pts += [c + off, c - off]
            kinds.append(2)
        elif u < p_dimer + p_trimer:
            ang = a + np.array([0, 2, 4]) * np.pi / 3
            pts += list(c + bond_px / math.sqrt(3) * np.column_stack([np.cos(ang), np.sin(ang)]))
            kinds.append(3)
        else:
            pts.append(c)
            kinds.append(1)
    return np.array(pts), np.array(kinds)


def test_known_dimer_and_trimer_counts_are_recovered_exactly():
    rng = np.random.default_rng(5)
    px = 0.03
    xy, kinds = _multimer_pattern(rng, 150, 0.2, 0.1, bond_px=0.18 / px)
    s = dispersion(xy, image_shape=(1024, 1024), pixel_size_nm=px)
    d = s.as_dict()
    assert d["n_monomers"] == np.sum(kinds == 1)
    assert d["n_dimers"] == np.sum(kinds == 2)
    assert d["n_trimers"] == np.sum(kinds == 3)
    assert d["atoms_in_dimers"] == 2 * np.sum(kinds == 2)
    assert d["n_atoms_multimer"] == 2 * np.sum(kinds == 2) + 3 * np.sum(kinds == 3)
    # Extent = bond length for dimers and equilateral trimers.
    assert d["multi_atom_cluster_extent_max_nm"] == pytest.approx(0.18, rel=1e-9)
    assert d["multi_atom_cluster_extent_mean_nm"] == pytest.approx(0.18, rel=1e-9)
    assert d["multimer_cutoff_nm"] == pytest.approx(0.23)
    assert d["length_unit"] == "nm"


def test_dimer_fraction_recovered_within_sampling_error():
    """Sites become dimers with probability q; the expected share of atoms in
    multimers is 2q/(1+q). Mean over frames within 3 standard errors."""
    rng = np.random.default_rng(6)
    q = 0.15
    truth = 2 * q / (1 + q)
    est = [dispersion(_multimer_pattern(rng, 100, q, 0.0, bond_px=6.0)[0], image_shape=(1024, 1024),
                      pixel_size_nm=0.03).multimer_fraction for _ in range(30)]
    se = np.std(est, ddof=1) / math.sqrt(len(est))
    assert abs(np.mean(est) - truth) < 3 * se + 1e-9


def test_multimer_cutoff_is_configurable_and_px_when_uncalibrated(caplog):
    xy = [[10, 10], [16, 10], [60, 60]]
    a = dispersion(xy, image_shape=(100, 100), multimer_cutoff_px=5.0)
    b = dispersion(xy, image_shape=(100, 100), multimer_cutoff_px=7.0)
    assert a.as_dict()["multimer_fraction"] == 0 and b.as_dict()["n_atoms_multimer"] == 2
    d = b.as_dict()
    assert d["length_unit"] == "px" and d["density_per_nm2"] is None and d["nn_mean_nm"] is None
    assert d["nn_mean_px"] == pytest.approx((6 + 6 + math.hypot(44, 50)) / 3)
    with caplog.at_level("WARNING"):
        dispersion(xy, image_shape=(100, 100))
    assert "no pixel size" in caplog.text


def test_cluster_extent_of_a_large_cluster_uses_the_hull():
    xy = np.column_stack([np.arange(50.0) * 2, np.zeros(50)])  # a chain 98 px long
    cs = cluster_stats(xy, cutoff_px=2.5)
    assert cs.cluster_size.tolist() == [50] and cs.cluster_extent_px[0] == pytest.approx(98.0)
    assert cs.counts()["n_clusters_4plus"] == 1 and cs.counts()["atoms_in_4plus"] == 50


# ------------------------------------------------------------------ invariances and edge cases


def _close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float):
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), k
        else:
            assert a[k] == b[k], k


def test_statistics_do_not_depend_on_point_order():
    rng = np.random.default_rng(7)
    xy, _ = _multimer_pattern(rng, 80, 0.3, 0.1, bond_px=6.0, shape=(512, 512))
    perm = rng.permutation(len(xy))
    for mask in (None, L_MASK):
        shape = (512, 512) if mask is None else L_MASK.shape
        pts = xy if mask is None else xy[Window(shape, mask=mask).contains(xy)]
        p2 = pts[rng.permutation(len(pts))] if mask is not None else xy[perm]
        a = dispersion(pts, image_shape=shape, pixel_size_nm=0.03, mask=mask)
        b = dispersion(p2, image_shape=shape, pixel_size_nm=0.03, mask=mask)
        _close(a.as_dict(), b.as_dict())
    ta = pair_correlation_test(xy, image_shape=(512, 512), n_sim=9)
    tb = pair_correlation_test(xy[perm], image_shape=(512, 512), n_sim=9)
    np.testing.assert_allclose(ta.g, tb.g, rtol=1e-10)
    np.testing.assert_allclose(ta.L_minus_r_px, tb.L_minus_r_px, rtol=1e-10, atol=1e-12)
    assert ta.L_p_value == tb.L_p_value


def test_dispersion_edge_cases_and_input_unchanged():
    for xy in (np.zeros((0, 2)), [[5.0, 5.0]]):
        d = dispersion(xy, image_shape=(50, 50), pixel_size_nm=0.1).as_dict()
        assert d["nn_mean_nm"] is None and d["clark_evans_R"] is None
        assert d["n_atoms"] == len(xy)
    xy = np.array([[5.0, 5.0], [8.0, 9.0], [40.0, 40.0]])
    keep = xy.copy()
    d = dispersion(xy[::1], image_shape=(50, 50), pixel_size_nm=0.1)
    np.testing.assert_array_equal(xy, keep)
    assert d.as_dict()["density_per_nm2"] == pytest.approx(3 / 25.0)
    # Non-contiguous float32 input gives the same numbers as contiguous float64.
    big = np.random.default_rng(0).uniform(0, 50, (40, 2))
    a = dispersion(big.astype(np.float32)[::2], image_shape=(50, 50), pixel_size_nm=0.1).as_dict()
    b = dispersion(np.ascontiguousarray(big.astype(np.float32)[::2], np.float64), image_shape=(50, 50),
                   pixel_size_nm=0.1).as_dict()
    _close(a, b)
    with pytest.raises(ValueError, match="NaN"):
        dispersion([[np.nan, 1.0], [2, 2]], image_shape=(50, 50))
    with pytest.raises(ValueError, match="mask"):
        dispersion(xy, image_shape=(50, 50), mask=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="pixel_size_nm"):
        dispersion(xy, image_shape=(50, 50), pixel_size_nm=-1)


def test_support_mask_window_density_and_outside_points():
    mask = np.zeros((100, 100), bool)
    mask[:, :50] = True
    xy = np.array([[10.0, 10.0], [20.0, 80.0], [30.0, 40.0], [80.0, 50.0]])  # last one in vacuum
    d = dispersion(xy, image_shape=(100, 100), pixel_size_nm=0.1, mask=mask).as_dict()
    assert d["n_atoms_in_support"] == 3 and d["support_area_nm2"] == pytest.approx(50.0)
    assert d["density_per_nm2"] == pytest.approx(3 / 50.0) and d["vacuum_fraction"] == pytest.approx(0.5)
    assert d["ce_support_n_used"] == 3 and d["ce_image_n_used"] == 4


def test_window_geometry():
    w = Window((10, 20))
    assert w.area == 200 and w.perimeter == 60
    np.testing.assert_allclose(w.set_covariance(np.array([[3.0, 4.0]])), [(20 - 3) * (10 - 4)])
    full = Window((10, 20), mask=np.ones((10, 20), bool))
    assert full.is_rectangle                     # an all-True mask is the rectangle
    m = np.zeros((10, 20), bool)
    m[2:8, 5:15] = True
    wm = Window((10, 20), mask=m)
    assert wm.area == 60 and wm.perimeter == 32
    np.testing.assert_allclose(wm.set_covariance(np.array([[0.0, 0.0], [3.0, -2.0], [12.0, 0.0]])),
                               [60, 7 * 4, 0])
    assert wm.border_distance(np.array([[9.5, 5.0]]))[0] == pytest.approx(2.5, abs=0.6)  # to y = 7.5
    rng = np.random.default_rng(0)
    assert wm.contains(wm.sample(500, rng)).all()


def test_translation_corrected_K_is_unbiased_under_csr():
    rng = np.random.default_rng(8)
    from fastsac.spatial.pair_correlation import _k_and_g

    win = Window(L_MASK.shape, mask=L_MASK)
    r = np.array([10.0, 25.0, 40.0])
    ks = np.array([_k_and_g(win.sample(60, rng), r, 5.0, win)[0] for _ in range(300)])
    np.testing.assert_allclose(ks.mean(0) / (np.pi * r**2), 1.0, atol=0.06)


# ------------------------------------------------------------------ Ripley / g(r) envelopes


def test_global_envelope_tests_hold_nominal_rate_on_csr():
    rng = np.random.default_rng(9)
    win = Window(L_MASK.shape, mask=L_MASK)
    trials = 160
    rej_L = rej_g = 0
    outside = []
    for i in range(trials):
        t = pair_correlation_test(win.sample(40, rng), mask=L_MASK, n_sim=19, seed=i)
        rej_L += t.L_p_value <= 0.05
        rej_g += t.g_p_value <= 0.05
        sel = t.r_px >= t.test_range_px[0]
        outside.append(((t.g[sel] < t.g_global_lo[sel]) | (t.g[sel] > t.g_global_hi[sel])).any())
    lo, hi = _band(trials)
    assert lo <= rej_L / trials <= hi
    assert rej_g / trials <= hi
    # The global envelope is the test: the curve leaves it exactly when p ≤ α.
    assert np.mean(outside) == pytest.approx(rej_g / trials)


def test_pattern_test_detects_clustering_and_repulsion():
    rng = np.random.default_rng(10)
    t = pair_correlation_test(thomas(rng, 15, 5, 5.0, (256, 256)), image_shape=(256, 256), n_sim=39)
    assert t.verdict == "clustering" and t.L_p_clustering <= 0.05 and t.g[1:6].max() > 2
    h = pair_correlation_test(hard_core(rng, 120, 14, (256, 256)), image_shape=(256, 256), n_sim=39)
    assert h.verdict == "repulsion" and h.L_p_repulsion <= 0.05
    assert np.all(h.g[h.r_px < 10] < 0.5)       # no pairs closer than the hard core
    d = h.as_dict(curves=True)
    assert len(d["curve_g"]) == len(h.r_px) and d["pattern_verdict"] == "repulsion"


def test_pattern_test_validates():
    with pytest.raises(ValueError, match="n_sim"):
        pair_correlation_test([[1, 1], [5, 5], [9, 9]], image_shape=(20, 20), n_sim=0)
    with pytest.raises(ValueError, match="alpha"):
        pair_correlation_test([[1, 1], [5, 5], [9, 9]], image_shape=(20, 20), alpha=1.5)


# ------------------------------------------------------------------ pooling and comparison


def test_pooling_over_frames():
    rng = np.random.default_rng(11)
    frames = [dispersion(csr(rng, n), image_shape=(512, 512), pixel_size_nm=0.03) for n in (40, 60, 80)]
    p = pool_dispersion(frames, names=["a", "b", "c"])
    d = p.as_dict()
    area_nm2 = 3 * (512 * 0.03) ** 2
    assert d["n_atoms"] == 180 and d["support_area_nm2"] == pytest.approx(area_nm2)
    assert d["density_per_nm2"] == pytest.approx(180 / area_nm2)
    assert [x["name"] for x in d["per_image"]] == ["a", "b", "c"]
    assert len(p.nn_distance) == 180 and d["n_monomers"] == sum(f.clusters.counts()["n_monomers"] for f in frames)
    single = pool_dispersion(frames[:1])
    assert single.ce_z == pytest.approx(frames[0].clark_evans.z)
    assert single.ce_R == pytest.approx(frames[0].clark_evans.R)
    # Pooled z over many CSR frames is standard normal.
    zs = [pool_dispersion([dispersion(csr(rng, 50), image_shape=(512, 512)) for _ in range(3)]).ce_z
          for _ in range(150)]
    assert abs(np.mean(zs)) < 0.25 and 0.8 < np.std(zs) < 1.2
    with pytest.raises(ValueError, match="empty"):
        pool_dispersion([])


def test_compare_samples():
    rng = np.random.default_rng(12)
    kw = dict(image_shape=(512, 512), pixel_size_nm=0.03)
    a = [dispersion(csr(rng, 60), **kw) for _ in range(3)]
    b = [dispersion(csr(rng, 60), **kw) for _ in range(3)]
    c = [dispersion(_multimer_pattern(rng, 40, 0.5, 0.0, bond_px=6.0, shape=(512, 512))[0], **kw)
         for _ in range(3)]
    same = compare_samples(a, b, n_perm=1999)
    diff = compare_samples(a, c, n_perm=1999)
    assert same.ks_p_value > 0.01 and same.perm_nn_mean_p_value > 0.01
    assert diff.perm_multimer_p_value < 0.01 and diff.perm_multimer_diff > 0.2
    d = diff.as_dict()
    assert d["length_unit"] == "nm" and d["n_perm"] == 1999 and "nn_mean_a_nm" in d
    px = [dispersion(csr(rng, 30), image_shape=(512, 512), multimer_cutoff_px=7) for _ in range(2)]
    with pytest.raises(ValueError, match="units"):
        compare_samples(a, px)


# ------------------------------------------------------------------ backends on real detections


def _backends():
    avail = set(neighbors._nn_kernel.available()) & set(neighbors._cluster_kernel.available())
    return sorted(avail)


@pytest.mark.parametrize("backend", _backends())
def test_backends_agree_with_scipy_reference_on_real_labels(backend, ptnc_dir):
    import fastsac

    for lab in sorted((ptnc_dir / "labels").glob("*.csv")):
        xy = fastsac.read_points(lab)
        ref = dispersion(xy, image_shape=(512, 512), pixel_size_nm=0.0293, backend="numpy").as_dict()
        got = dispersion(xy, image_shape=(512, 512), pixel_size_nm=0.0293, backend=backend).as_dict()
        ref.pop("backend"), got.pop("backend")
        _close(ref, got)
