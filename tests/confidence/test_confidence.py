"""Calibrated detection probability (fastsac.confidence) and its summary keys."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from fastsac.confidence import (FEATURES, AtomProbability, atom_probability, confidence_summary,
                                default_model, expected_count, features, fit_logistic, load_model,
                                multimer_fraction_interval, poisson_binomial_interval)
from fastsac.detectors import Detections
from fastsac.errors import FastsacInputError


def _pmf_brute(p):
    pmf = np.zeros(len(p) + 1)
    for bits in itertools.product((0, 1), repeat=len(p)):
        pmf[sum(bits)] += np.prod([pi if b else 1 - pi for pi, b in zip(p, bits)])
    return pmf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_binomial_interval_equals_enumeration(seed):
    p = np.random.default_rng(seed).uniform(0, 1, 9)
    cdf = np.cumsum(_pmf_brute(p))
    lo, hi = poisson_binomial_interval(p, level=0.9)
    assert lo == int(np.searchsorted(cdf, 0.05 - 1e-12))
    assert hi == int(np.searchsorted(cdf, 0.95 - 1e-12))
    assert cdf[hi] >= 0.95 and (lo == 0 or cdf[lo - 1] < 0.05)


def test_poisson_binomial_edge_cases_and_normal_branch():
    assert poisson_binomial_interval([]) == (0, 0)
    assert poisson_binomial_interval(np.ones(7)) == (7, 7)
    assert poisson_binomial_interval(np.zeros(7)) == (0, 0)
    rng = np.random.default_rng(3)
    p = rng.uniform(0.2, 0.9, 3000)
    exact = poisson_binomial_interval(p)
    approx = poisson_binomial_interval(p, exact_max=10)
    assert abs(exact[0] - approx[0]) <= 2 and abs(exact[1] - approx[1]) <= 2


def test_expected_count_and_density():
    p = np.array([1.0, 0.5, 0.5, 0.0])
    e = expected_count(p, area_nm2=10.0)
    assert e["expected"] == 2.0 and e["sd"] == pytest.approx(np.sqrt(0.5))
    assert e["interval"] == [1, 3]
    assert e["density_per_nm2"] == 0.2 and e["density_interval_per_nm2"] == [0.1, 0.3]
    assert expected_count([np.nan])["expected"] is None
    assert expected_count([])["expected"] == 0.0


def test_fit_logistic_recovers_coefficients():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 2)) * [2.0, 0.5] + [1.0, -1.0]
    z = 1.5 * X[:, 0] - 2.0 * X[:, 1] + 0.3
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-z))).astype(float)
    m = fit_logistic(X, y, l2=0.0)
    coef = m.coef / m.scale
    np.testing.assert_allclose(coef, [1.5, -2.0], rtol=0.08)
    assert m.intercept - (m.coef / m.scale) @ m.mean == pytest.approx(0.3, abs=0.1)
    p = m.predict(X)
    assert ((p > 0) & (p < 1)).all()


def test_features_handle_failed_fits():
    X = features([5.0, 4.0], [100.0, np.nan], [3.0, np.nan], [10.0, np.nan], atom_sigma_px=3.0,
                 fill=np.array([0.0, 2.0, 0.1, 0.0]))
    assert X.shape == (2, len(FEATURES))
    np.testing.assert_allclose(X[0], [5.0, np.log(10.0), 0.0, 0.0])
    np.testing.assert_allclose(X[1], [4.0, 2.0, 0.1, 1.0])


def _dets(score, amp=None, name="classical"):
    n = len(score)
    amp = np.full(n, 2000.0) if amp is None else np.asarray(amp, float)
    return Detections(np.zeros((n, 2)), np.asarray(score, float), amp, np.full(n, 3.2),
                      np.zeros(n), amp * 60, np.full(n, 500.0), name)


def test_shipped_model_is_monotone_in_score_and_ordered():
    cal = default_model()
    assert cal is not None and "classical" in cal.models
    pr = atom_probability(_dets(np.linspace(3.9, 12, 30)), pixel_size_nm=0.0293)
    assert pr.calibrated and pr.detector == "classical"
    assert (np.diff(pr.probability) > 0).all() and (np.diff(pr.probability_expert) > 0).all()
    assert ((pr.probability > 0) & (pr.probability < 1)).all()
    # experts miss marginal atoms: they mark fewer than are real
    assert (pr.probability_expert <= pr.probability + 0.05).all()
    # a fit with a higher amplitude over the residual is more likely real
    lo, hi = atom_probability(_dets([5.0, 5.0], amp=[800.0, 4000.0]), pixel_size_nm=0.0293).probability
    assert hi > lo


def test_unknown_detector_gets_nan_and_empty_is_fine():
    pr = atom_probability(_dets([5.0, 6.0], name="heatmap"), pixel_size_nm=0.0293)
    assert np.isnan(pr.probability).all() and not pr.calibrated
    assert len(atom_probability(_dets([]), pixel_size_nm=None).probability) == 0


def test_load_model_bad_file_names_it(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(FastsacInputError, match="p.json"):
        load_model(bad)
    bad.write_text("{not json")
    with pytest.raises(FastsacInputError, match="cannot read probability calibration"):
        load_model(bad)


def test_multimer_fraction_interval():
    xy = np.array([[0.0, 0.0], [3.0, 0.0], [50.0, 50.0], [90.0, 10.0]])
    mean, (lo, hi) = multimer_fraction_interval(xy, np.ones(4), cutoff_px=5.0)
    assert mean == lo == hi == 0.5
    mean, (lo, hi) = multimer_fraction_interval(xy, [1.0, 0.5, 1.0, 1.0], cutoff_px=5.0)
    assert lo == 0.0 and hi == 0.5 and 0.1 < mean < 0.4
    assert multimer_fraction_interval(xy, [np.nan] * 4, cutoff_px=5.0) == (None, None)


def test_confidence_summary_block():
    pr = AtomProbability(np.array([0.9, 0.8, 0.5]), np.array([0.8, 0.5, 0.2]), "classical", True)
    s = confidence_summary(pr, xy=np.array([[0, 0], [4, 0], [40, 40.0]]), in_support=[1, 1, 0],
                           support_area_nm2=2.0, multimer_cutoff_px=5.0,
                           split_probability=np.array([0.9, 0.9, np.nan]))
    assert s["expected_atoms"]["expected"] == pytest.approx(2.2)
    assert s["expected_atoms_in_support"]["expected"] == pytest.approx(1.7)
    assert s["expected_atoms_in_support"]["density_per_nm2"] == pytest.approx(0.85)
    assert s["expected_marked_by_expert_in_support"]["expected"] == pytest.approx(1.3)
    assert s["close_pairs"] == {"atoms_with_one_or_two_decision": 2, "atoms_called_two": 2,
                                "atoms_called_one": 0}
    json.dumps(s)  # JSON-ready
