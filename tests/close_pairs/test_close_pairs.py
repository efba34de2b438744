"""Close pairs: one atom or two (fastsac.close_pairs), and the stage in every detection path."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.detectors import ClassicalDetector, postprocess_scores
from fastsac.close_pairs import PairDecisions, apply_pair_decisions, decide_pair, resolve_pairs

SIGMA = 3.2


def _frame(atoms, *, shape=(64, 64), noise=2.0, seed=0, bg=50.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.full(shape, bg)
    for x, y, a in atoms:
        img += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA ** 2))
    return img + np.random.default_rng(seed).normal(0, noise, shape)


def test_single_atom_detected_twice_is_merged():
    img = _frame([(32.0, 30.0, 100.0)])
    xy = np.array([[30.0, 30.0], [34.5, 30.5]])
    dec = resolve_pairs(img, xy, score=[5.0, 4.0], max_separation_px=9.0, atom_sigma_px=SIGMA)
    assert isinstance(dec, PairDecisions)
    assert dec.keep.tolist() == [True, False]
    assert dec.merged.tolist() == [True]
    assert (dec.split_probability < 0.5).all()  # both carry the decision's probability
    # the survivor moves to the one-atom fit: the true centre
    np.testing.assert_allclose(dec.xy[0], [32.0, 30.0], atol=0.3)
    assert dec.one_atom_fit[0, 1] == pytest.approx(SIGMA, rel=0.15)


def test_resolved_dimer_stays_two():
    img = _frame([(26.0, 30.0, 100.0), (36.0, 31.0, 90.0)])  # 10 px ≈ 0.29 nm
    xy = np.array([[26.2, 30.1], [35.8, 31.0]])
    dec = resolve_pairs(img, xy, score=[6.0, 5.5], max_separation_px=11.0, atom_sigma_px=SIGMA)
    assert dec.keep.all() and not dec.merged.any()
    assert dec.p_two[0] > 0.99 and dec.delta_bic[0] > 20
    np.testing.assert_array_equal(dec.xy, xy)


def test_the_weaker_detection_is_dropped_and_ties_go_to_the_lower_index():
    img = _frame([(32.0, 30.0, 100.0)])
    xy = np.array([[34.5, 30.5], [30.0, 30.0]])
    d1 = resolve_pairs(img, xy, score=[4.0, 5.0], max_separation_px=9.0, atom_sigma_px=SIGMA)
    assert d1.keep.tolist() == [False, True]
    d2 = resolve_pairs(img, xy, score=[5.0, 5.0], max_separation_px=9.0, atom_sigma_px=SIGMA)
    assert d2.keep.tolist() == [True, False]


def test_far_points_are_not_examined_and_input_is_unchanged():
    img = _frame([(15.0, 15.0, 100.0), (45.0, 45.0, 100.0)])
    img0 = img.copy()
    xy = np.array([[15.0, 15.0], [45.0, 45.0]])
    xy0 = xy.copy()
    dec = resolve_pairs(img, xy, score=[5.0, 5.0], max_separation_px=9.0, atom_sigma_px=SIGMA)
    assert dec.keep.all() and len(dec.pairs) == 0
    assert np.isnan(dec.split_probability).all()
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(xy, xy0)


def test_empty_one_point_and_bad_arguments():
    img = _frame([])
    for xy in (np.zeros((0, 2)), np.array([[10.0, 10.0]])):
        dec = resolve_pairs(img, xy, score=np.ones(len(xy)), max_separation_px=9.0,
                            atom_sigma_px=SIGMA)
        assert dec.keep.all() and len(dec.pairs) == 0
    with pytest.raises(ValueError, match="score has 1 entries"):
        resolve_pairs(img, np.zeros((2, 2)), score=[1.0], max_separation_px=9.0,
                      atom_sigma_px=SIGMA)
    with pytest.raises(ValueError, match="atom_sigma_px"):
        resolve_pairs(img, np.zeros((2, 2)), score=[1.0, 1.0], max_separation_px=9.0,
                      atom_sigma_px=0.0)
    with pytest.raises(ValueError, match="2-D"):
        resolve_pairs(img[None], np.zeros((2, 2)), score=[1.0, 1.0], max_separation_px=9.0,
                      atom_sigma_px=SIGMA)


def test_flat_or_nan_window_gives_no_decision():
    img = np.full((40, 40), 7.0)
    dbic, p, fit = decide_pair(img, [19.0, 20.0], [23.0, 20.0], atom_sigma_px=SIGMA)
    assert np.isnan(dbic) and np.isnan(p) and np.isnan(fit).all()
    img = np.full((40, 40), np.nan)
    dec = resolve_pairs(img, [[19.0, 20.0], [23.0, 20.0]], score=[2, 1], max_separation_px=9,
                        atom_sigma_px=SIGMA)
    assert dec.keep.all()  # no evidence either way: nothing is merged


def test_triple_chain_is_resolved_pairwise():
    # one atom detected three times
    img = _frame([(32.0, 30.0, 120.0)], seed=4)
    xy = np.array([[29.0, 30.0], [32.5, 30.0], [35.5, 30.5]])
    dec = resolve_pairs(img, xy, score=[4.5, 6.0, 4.2], max_separation_px=9.0,
                        atom_sigma_px=SIGMA)
    assert dec.keep.tolist() == [False, True, False]
    assert len(dec.pairs) == 2 and dec.merged.all()


def test_apply_pair_decisions_dict_and_dataclass():
    img = _frame([(32.0, 30.0, 100.0), (10.0, 50.0, 100.0)])
    cols = {"xy": np.array([[30.0, 30.0], [34.5, 30.5], [10.0, 50.0]]),
            "score": np.array([5.0, 4.0, 7.0]), "amplitude": np.array([1.0, 2.0, 3.0]),
            "sigma_px": np.ones(3), "background": np.zeros(3), "intensity": np.ones(3),
            "residual": np.ones(3), "extra": "kept"}
    dec = resolve_pairs(img, cols["xy"], score=cols["score"], max_separation_px=9.0,
                        atom_sigma_px=SIGMA)
    out = apply_pair_decisions(cols, dec)
    assert len(out["xy"]) == 2 and out["extra"] == "kept"
    np.testing.assert_array_equal(out["score"], [5.0, 7.0])
    assert out["amplitude"][0] == pytest.approx(100.0, rel=0.15)  # the one-atom fit
    assert out["amplitude"][1] == 3.0
    assert out["split_probability"][0] < 0.5 and np.isnan(out["split_probability"][1])
    assert len(cols["xy"]) == 3  # input unchanged


def test_detector_applies_the_stage_and_can_turn_it_off():
    img = _frame([(32.0, 30.0, 60.0)], shape=(96, 96), noise=3.0, seed=2)
    det = ClassicalDetector()
    on = det.detect(img.astype(np.float32), pixel_size_nm=0.0293)
    off = ClassicalDetector(resolve_pairs=False).detect(img.astype(np.float32),
                                                       pixel_size_nm=0.0293)
    assert on.split_probability is not None and len(on.split_probability) == len(on)
    assert off.split_probability is None
    assert len(on) <= len(off)
    assert det.pair_params(0.0293)["max_separation_px"] == pytest.approx(0.30 / 0.0293)
    assert ClassicalDetector(resolve_pairs=False).pair_params(0.0293) is None


def test_postprocess_scores_with_pairs_merges_double_maxima():
    img = _frame([(32.0, 30.0, 100.0)], noise=0.5)
    score = np.zeros_like(img)
    score[30, 30] = 5.0
    score[30, 35] = 4.0   # two maxima 5 px apart on one atom
    kw = dict(threshold=1.0, min_distance_px=3.0, fit_radius_px=6, sigma_px=SIGMA)
    off = postprocess_scores(score, img, **kw)
    on = postprocess_scores(score, img, pairs={"max_separation_px": 9.0, "atom_sigma_px": SIGMA},
                            **kw)
    assert len(off["xy"]) == 2 and len(on["xy"]) == 1
    assert "pairs" in on["timings"] and on["split_probability"][0] < 0.5


def test_separation_prior_follows_projection_geometry():
    from fastsac.close_pairs import separation_prior

    b = 9.45  # Pt–Pt 0.277 nm at 0.0293 nm/px
    assert separation_prior(5.0, None) == 0.0
    d = np.linspace(0.5, 12, 40)
    pr = np.array([separation_prior(x, b) for x in d])
    assert (np.diff(pr) >= 0).all()  # closer pairs are less likely two atoms
    p = 1 - np.sqrt(1 - (4.4 / b) ** 2)
    assert separation_prior(4.4, b) == pytest.approx(np.log(p / (1 - p)))
    assert separation_prior(b, b) == 2.0 and separation_prior(1e-9, b) == -4.0


def test_effective_pixels_shrink_for_correlated_noise():
    from fastsac.close_pairs import effective_pixels

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:30, 0:30]
    white = rng.normal(size=(30, 30))
    from scipy import ndimage as ndi
    smooth = ndi.gaussian_filter(rng.normal(size=(30, 30)), 1.5)
    lims = (0, 30, 0, 30)
    n_w = effective_pixels(white.ravel(), xx.ravel(), yy.ravel(), lims)
    n_s = effective_pixels(smooth.ravel(), xx.ravel(), yy.ravel(), lims)
    assert 700 < n_w <= 900 and n_s < 0.2 * n_w
