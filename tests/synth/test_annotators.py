"""Simulated annotators: click curve, jitter, slips, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.synth.annotators import (EXPERT, EXPERT_CURVE_RATE, EXPERT_CURVE_SNR, PROFILES,
                                      AnnotatorProfile, click_probability, random_panel,
                                      simulate_annotator)


def test_expert_curve_is_the_measured_one():
    np.testing.assert_allclose(click_probability(EXPERT_CURVE_SNR), EXPERT_CURVE_RATE)
    p = click_probability(np.linspace(2, 10, 50))
    assert np.all(np.diff(p) >= 0)
    # Conservative annotators click less at every SNR, liberal ones more.
    s = np.linspace(3, 6, 13)
    assert np.all(click_probability(s, PROFILES["careful"]) <= click_probability(s) + 1e-12)
    assert np.all(click_probability(s, PROFILES["liberal"]) >= click_probability(s) - 1e-12)


def _spots(rng, n_real=400, n_fake=300):
    truth = rng.uniform(10, 1000, (n_real, 2))
    sxy = np.concatenate([truth + rng.normal(0, 0.3, truth.shape), rng.uniform(10, 1000, (n_fake, 2))])
    snr = np.concatenate([rng.uniform(3, 9, n_real), rng.uniform(2.5, 4.5, n_fake)])
    idx = np.r_[np.arange(n_real), np.full(n_fake, -1)]
    return truth, sxy, snr, idx


def test_simulated_click_rates_follow_the_curve(rng):
    truth, sxy, snr, idx = _spots(rng, 3000, 3000)
    prof = AnnotatorProfile(jitter_px=2.0, slips_per_image=0.0)
    ann = simulate_annotator(sxy, snr, idx, truth_xy=truth, shape=(1024, 1024), profile=prof, rng=1)
    clicked_truth = set(ann.truth_index[ann.truth_index >= 0].tolist())
    hit = np.array([i in clicked_truth for i in range(len(truth))])
    for lo, hi in ((3.0, 4.0), (4.0, 5.0), (6.0, 9.0)):
        k = (snr[:len(truth)] >= lo) & (snr[:len(truth)] < hi)
        expected = click_probability(snr[:len(truth)][k]).mean()
        assert abs(hit[k].mean() - expected) < 0.05
    # Clicks on real atoms are jittered around the truth with the profile's sd per axis.
    real = ann.kind == 0
    d = ann.xy[real] - truth[ann.truth_index[real]]
    assert np.std(d) == pytest.approx(2.0, rel=0.1)
    assert np.all(ann.truth_index[ann.kind > 0] == -1)


def test_slips_and_bounds(rng):
    truth, sxy, snr, idx = _spots(rng, 10, 0)
    prof = AnnotatorProfile(slips_per_image=50.0)
    ann = simulate_annotator(sxy, snr, idx, truth_xy=truth, shape=(64, 128), profile=prof, rng=3)
    assert 25 < (ann.kind == 2).sum() < 80
    assert np.all((ann.xy >= 0) & (ann.xy <= [127, 63]))
    a1 = simulate_annotator(sxy, snr, idx, truth_xy=truth, shape=(64, 128), profile=prof, rng=3)
    np.testing.assert_array_equal(a1.xy, ann.xy)  # a seed gives the same clicks


def test_empty_and_bad_input():
    ann = simulate_annotator(np.zeros((0, 2)), [], [], truth_xy=np.zeros((0, 2)), shape=(10, 10),
                             profile=AnnotatorProfile(slips_per_image=0), rng=0)
    assert len(ann) == 0 and ann.xy.shape == (0, 2)
    with pytest.raises(ValueError, match="one entry per spot"):
        simulate_annotator([[1, 1]], [3.0, 4.0], [0], truth_xy=[[1, 1]], shape=(10, 10))
    with pytest.raises(ValueError, match="lapse"):
        AnnotatorProfile(lapse=1.5)
    with pytest.raises(ValueError, match="scale"):
        AnnotatorProfile(scale=0)


def test_random_panel_differs_in_skill():
    panel = random_panel(6, rng=0)
    assert len(panel) == 6 and len({p.snr_shift for p in panel}) == 6
    assert all(0 <= p.lapse <= 0.05 and 1.1 <= p.jitter_px <= 1.7 for p in panel)
    assert random_panel(6, rng=0) == panel
    assert EXPERT.snr_shift == 0 and EXPERT.scale == 1
