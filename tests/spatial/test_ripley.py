"""Ripley's L / g(r) at any N (fastsac.spatial.ripley) against the previous
implementation (stats.pair_correlation_test, the exact cKDTree/FFT reference)
and on patterns with known truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fastsac.spatial.ripley import METHOD_EXACT, METHOD_SUBWINDOW, pair_correlation
from fastsac.spatial.stats import Window, pair_correlation_test

from .test_stats import L_MASK, _band, csr, hard_core, thomas

VACUUM = np.ones((384, 384), bool)
VACUUM[60:200, 40:220] = False
VACUUM[:, 330:] = False


def _inside(xy, mask):
    ix = np.clip(np.floor(xy[:, 0] + 0.5).astype(int), 0, mask.shape[1] - 1)
    iy = np.clip(np.floor(xy[:, 1] + 0.5).astype(int), 0, mask.shape[0] - 1)
    return xy[mask[iy, ix]]


def _cases():
    rng = np.random.default_rng(11)
    return {
        "random": (csr(rng, 300, (384, 384)), None),
        "clustered": (thomas(rng, 20, 12, 4.0, (384, 384)), None),
        "random_vacuum": (_inside(csr(rng, 400, (384, 384)), VACUUM), VACUUM),
        "clustered_vacuum": (_inside(thomas(rng, 30, 10, 4.0, (384, 384)), VACUUM), VACUUM),
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_agrees_with_previous_implementation(name):
    xy, mask = _cases()[name]
    kw = {"image_shape": (384, 384), "mask": mask, "n_sim": 39, "seed": 3}
    old = pair_correlation_test(xy, **kw)
    new = pair_correlation(xy, **kw)
    assert new.method == METHOD_EXACT and new.r_max_rule == "quarter_side"
    np.testing.assert_allclose(new.r_px, old.r_px)
    # The same simulated patterns and the same K estimator: L agrees to rounding
    # (float32 weight tables for masks).
    for k in ("L_minus_r_px", "L_mean", "L_lo", "L_hi", "L_global_lo", "L_global_hi"):
        np.testing.assert_allclose(getattr(new, k), getattr(old, k), atol=1e-6, err_msg=k)
    assert new.L_p_value == old.L_p_value and new.verdict == old.verdict
    # g: pair distances binned at ≤ h/16 on the radii grid instead of at h/16 from 0.
    for k in ("g", "g_mean", "g_hi"):
        np.testing.assert_allclose(getattr(new, k), getattr(old, k), rtol=0.01, atol=0.03, err_msg=k)
    assert abs(new.g_p_value - old.g_p_value) <= 3 / 40
    assert (new.L_p_value <= 0.05) == ("clustered" in name)


def test_pattern_order_does_not_matter():
    xy, mask = _cases()["clustered_vacuum"]
    perm = np.random.default_rng(0).permutation(len(xy))
    for msp in (10**6, 100):  # whole window and sub-window
        a = pair_correlation(xy, mask=mask, n_sim=9, max_sim_points=msp)
        b = pair_correlation(xy[perm], mask=mask, n_sim=9, max_sim_points=msp)
        for k in ("L_minus_r_px", "g", "L_hi", "g_lo", "L_minus_r_all_px"):
            np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-10, atol=1e-12)
        assert a.L_p_value == b.L_p_value


@pytest.mark.parametrize("mask", [None, L_MASK], ids=["rect", "L_mask"])
def test_subwindow_test_has_nominal_level_on_csr(mask):
    rng = np.random.default_rng(5)
    win = Window((256, 256), mask=mask)
    trials, rej_L, rej_g = 150, 0, 0
    for i in range(trials):
        t = pair_correlation(win.sample(1200, rng), image_shape=(256, 256), mask=mask, n_sim=19, seed=i,
                             max_sim_points=300)
        assert t.method == METHOD_SUBWINDOW and t.subwindow_px is not None
        rej_L += t.L_p_value <= 0.05
        rej_g += t.g_p_value <= 0.05
    lo, hi = _band(trials)
    assert lo <= rej_L / trials <= hi and lo <= rej_g / trials <= hi


def test_subwindow_detects_clustering_and_repulsion():
    rng = np.random.default_rng(2)
    cl = pair_correlation(thomas(rng, 60, 20, 4.0, (512, 512)), image_shape=(512, 512), n_sim=39,
                          max_sim_points=300)
    assert cl.method == METHOD_SUBWINDOW and cl.verdict == "clustering" and cl.L_p_value <= 0.05
    hc = pair_correlation(hard_core(rng, 700, 12, (512, 512)), image_shape=(512, 512), n_sim=39,
                          max_sim_points=200)
    assert hc.method == METHOD_SUBWINDOW and hc.verdict == "repulsion"


def test_subwindow_curves_are_unbiased_under_csr():
    # K̂ is a ratio estimator with the reference points in the sub-window:
    # mean L − r over CSR patterns ≈ 0 and the all-points curve ≈ the test curve.
    rng = np.random.default_rng(8)
    win = Window(VACUUM.shape, mask=VACUUM)
    runs = [pair_correlation(win.sample(3000, rng), mask=VACUUM, n_sim=1, max_sim_points=800, seed=i)
            for i in range(40)]
    assert runs[0].method == METHOD_SUBWINDOW
    sel = runs[0].r_px >= runs[0].test_range_px[0]
    mean_l = np.mean([t.L_minus_r_px for t in runs], 0)[sel]
    mean_all = np.mean([t.L_minus_r_all_px for t in runs], 0)[sel]
    sd = np.std([t.L_minus_r_px for t in runs], 0)[sel] / math.sqrt(len(runs))
    assert np.all(np.abs(mean_l) < 4 * sd + 0.02)
    assert np.all(np.abs(mean_all) < 4 * sd + 0.02)
    g = np.mean([t.g for t in runs], 0)[sel]
    assert np.all(np.abs(g - 1) < 0.05)


def test_binned_mask_equals_full_mask():
    rng = np.random.default_rng(4)
    f, shape = 4, (250, 262)
    mb = rng.random((-(-shape[0] // f), -(-shape[1] // f))) < 0.85
    full = np.repeat(np.repeat(mb, f, 0), f, 1)[:shape[0], :shape[1]]
    xy = Window(shape, mask=full).sample(2000, rng)
    a = pair_correlation(xy, image_shape=shape, mask=full, n_sim=9, max_sim_points=10**6)
    b = pair_correlation(xy, image_shape=shape, mask=mb, mask_bin_factor=f, n_sim=9, max_sim_points=10**6)
    assert a.as_dict(curves=True) == b.as_dict(curves=True)
    # The sub-window of a binned mask is aligned to its blocks (so it may sit
    # a few pixels apart from the full-resolution one's).
    c = pair_correlation(xy, image_shape=shape, mask=mb, mask_bin_factor=f, n_sim=9, max_sim_points=400)
    assert c.method == METHOD_SUBWINDOW and all(v % f == 0 for v in c.subwindow_px[:2])
    assert np.isfinite(c.L_minus_r_px).all() and 0 < c.L_p_value <= 1


def test_automatic_max_sim_points_follows_the_frame_size():
    rng = np.random.default_rng(9)
    small = pair_correlation(csr(rng, 1500, (512, 512)), image_shape=(512, 512), n_sim=9)
    assert small.method == METHOD_SUBWINDOW and small.n_sim_points <= 1100  # floor 1000 at 512²
    big = pair_correlation(csr(rng, 1500, (4096, 4096)), image_shape=(4096, 4096), n_sim=9)
    assert big.method == METHOD_EXACT  # 4096² / (9 · 100) > 1500


def test_r_max_is_capped_at_max_neighbors():
    rng = np.random.default_rng(0)
    t = pair_correlation(csr(rng, 5000, (512, 512)), image_shape=(512, 512), n_sim=3, max_neighbors=50)
    lam = 5000 / 512**2
    assert t.r_max_rule == "max_neighbors"
    assert t.test_range_px[1] == pytest.approx(math.sqrt(50 / (math.pi * lam)))


def test_summary_block_is_compact_json():
    rng = np.random.default_rng(1)
    t = pair_correlation(csr(rng, 500, (300, 300)), image_shape=(300, 300), n_sim=19, pixel_size_nm=0.03)
    d = t.as_dict(curves=True)
    json.dumps(d, allow_nan=False)
    assert len(d["curve_r_px"]) == 48 and len(d["curve_r_nm"]) == len(d["curve_g_global_hi"]) == 48
    assert d["curve_r_nm"][-1] == pytest.approx(t.r_px[-1] * 0.03, rel=1e-5)
    assert d["curve_L_minus_r_nm"][-1] == pytest.approx(t.L_minus_r_px[-1] * 0.03, rel=1e-5, abs=1e-9)
    assert d["pattern_n_sim"] == 19 and d["L_p_value"] == t.L_p_value and d["pattern_verdict"] == t.verdict
    assert "MAD" in d["pattern_test"] and d["pattern_method"] == METHOD_EXACT
    assert len(json.dumps(d)) < 12000
    assert pair_correlation(csr(rng, 50, (300, 300)), image_shape=(300, 300),
                            n_sim=3).as_dict(curves=True)["curve_r_nm"] is None


def test_saved_block_rebuilds_the_figure_input():
    from fastsac.result import pattern_from_dict

    rng = np.random.default_rng(2)
    t = pair_correlation(csr(rng, 300, (300, 300)), image_shape=(300, 300), n_sim=19, pixel_size_nm=0.03)
    back = pattern_from_dict(t.as_dict(curves=True))
    np.testing.assert_allclose(back.L_minus_r_px, t.L_minus_r_px, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(back.g_global_hi, t.g_global_hi, rtol=1e-5)
    assert back.L_p_value == t.L_p_value and back.n_sim == 19 and back.pixel_size_nm == 0.03


def test_frames_and_montages_store_it_in_the_summary():
    from fastsac.bench import synthetic_image
    from fastsac.montage import montage_statistics
    from fastsac.pipeline import analyze

    rng = np.random.default_rng(3)
    xy = thomas(rng, 25, 12, 4.0, (384, 384))
    _, _, _, summary = montage_statistics(xy, shape=(384, 384), pixel_size_nm=0.03,
                                          pair_correlation_params={"n_sim": 19})
    pc = summary["pair_correlation"]
    direct = pair_correlation(xy, image_shape=(384, 384), pixel_size_nm=0.03, n_sim=19)
    assert pc == direct.as_dict(curves=True) and pc["pattern_verdict"] == "clustering"
    img, _ = synthetic_image(256, seed=1)
    res = analyze(img, pixel_size_nm=0.03, detector="classical", support_mask=False,
                  pair_correlation_params={"n_sim": 19})
    pc = res.summary["pair_correlation"]
    assert pc["pattern_n_sim"] == 19 and pc["pattern_n_points"] == res.summary["n_atoms_in_support"]
    assert len(pc["curve_r_nm"]) == 48 and pc["L_p_value"] is not None


def test_validation():
    xy = [[1, 1], [5, 5], [9, 9]]
    with pytest.raises(ValueError, match="n_sim"):
        pair_correlation(xy, image_shape=(20, 20), n_sim=0)
    with pytest.raises(ValueError, match="alpha"):
        pair_correlation(xy, image_shape=(20, 20), alpha=1.5)
    with pytest.raises(ValueError, match="image_shape"):
        pair_correlation(xy)
    with pytest.raises(ValueError, match="NaN"):
        pair_correlation([[1, np.nan], [2, 2]], image_shape=(20, 20))
