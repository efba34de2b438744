"""Species from intensities: GMM against the Bayes-optimal classifier."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from fastsac.species import Z, classify_species, expected_intensity_ratio, fit_gmm


def two_species(rng, n, w_heavy, m_light, s_light, m_heavy, s_heavy):
    heavy = rng.random(n) < w_heavy
    x = np.where(heavy, rng.normal(m_heavy, s_heavy, n), rng.normal(m_light, s_light, n))
    return x, heavy.astype(int)


def bayes_accuracy(w_heavy, m1, s1, m2, s2):
    f = lambda x: max((1 - w_heavy) * stats.norm.pdf(x, m1, s1), w_heavy * stats.norm.pdf(x, m2, s2))
    lo, hi = min(m1 - 8 * s1, m2 - 8 * s2), max(m1 + 8 * s1, m2 + 8 * s2)
    return integrate.quad(f, lo, hi, points=[m1, m2], limit=400)[0]


@pytest.mark.parametrize("heavy,light,rel_sd", [("Pt", "Ni", 0.45), ("Pt", "Pd", 0.25), ("Au", "Cu", 0.4)])
def test_two_species_reach_bayes_optimal_accuracy(heavy, light, rel_sd):
    """Intensities drawn from two Gaussians with the Z^1.7 ratio (relative
    width rel_sd): the fitted mixture classifies within 3 % of the Bayes
    classifier that knows the true parameters."""
    rng = np.random.default_rng(0)
    ratio = expected_intensity_ratio(heavy, light)
    m1, s1, m2, s2, w = 1.0, rel_sd, ratio, rel_sd * ratio, 0.35
    bayes = bayes_accuracy(w, m1, s1, m2, s2)
    accs, ratios = [], []
    for seed in range(12):
        x, truth = two_species(rng, 400, w, m1, s1, m2, s2)
        r = classify_species(x, elements=[light, heavy], seed=seed)
        accs.append(np.mean(r.labels == truth))
        ratios.append(r.intensity_ratio)
    assert 0.8 < bayes < 0.999
    assert np.mean(accs) >= bayes - 0.03
    assert np.mean(accs) <= bayes + 0.02      # cannot beat the optimum beyond sampling noise
    assert r.elements == [light, heavy] and r.names() == [light, heavy]
    assert r.expected_ratio == pytest.approx(ratio)
    assert np.mean(ratios) == pytest.approx(ratio, rel=0.1)


def test_bic_chooses_the_number_of_species():
    rng = np.random.default_rng(1)
    one = rng.normal(5.0, 1.0, 400)
    assert classify_species(one, max_species=3).n_species == 1
    two, _ = two_species(rng, 400, 0.4, 1.0, 0.2, 5.7, 0.9)
    r = classify_species(two, max_species=3)
    assert r.n_species == 2 and set(r.bic) == {1, 2, 3} and min(r.bic, key=r.bic.get) == 2
    three = np.concatenate([rng.normal(m, 0.15, 200) for m in (1, 3, 6)])
    assert classify_species(three, max_species=4).n_species == 3


def test_species_are_ordered_by_brightness_and_confident():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(10, 1, 100), rng.normal(2, 0.3, 150)])
    r = classify_species(x, n_species=2)
    assert r.labels[:100].tolist() == [1] * 100 and r.labels[100:].tolist() == [0] * 150
    assert r.species_stats[0]["intensity_mean"] < r.species_stats[1]["intensity_mean"]
    assert np.all(r.confidence > 0.99) and r.posterior.shape == (250, 2)
    np.testing.assert_allclose(r.posterior.sum(1), 1.0)
    assert r.intensity_ratio == pytest.approx(5.0, rel=0.05) and r.expected_ratio is None
    d = r.as_dict()
    assert d["n_species"] == 2 and d["species_stats"][1]["n_atoms"] == 100 and d["n_unassigned"] == 0


def test_nan_intensities_are_unassigned_and_order_does_not_matter():
    rng = np.random.default_rng(3)
    x, _ = two_species(rng, 300, 0.3, 1.0, 0.2, 4.0, 0.6)
    x[[5, 17]] = np.nan
    r = classify_species(x, elements=["Ni", "Pt"])
    assert r.labels[5] == -1 and r.labels[17] == -1 and np.isnan(r.confidence[5])
    assert r.as_dict()["n_unassigned"] == 2
    perm = rng.permutation(len(x))
    rp = classify_species(x[perm], elements=["Ni", "Pt"])
    np.testing.assert_array_equal(rp.labels, r.labels[perm])
    np.testing.assert_allclose(rp.confidence, r.confidence[perm], rtol=1e-6)


def test_two_features_intensity_and_amplitude():
    rng = np.random.default_rng(4)
    inten, truth = two_species(rng, 400, 0.4, 1.0, 0.3, 5.7, 1.5)
    amp = inten / (2 * np.pi * 1.5**2) * rng.normal(1, 0.1, len(inten))
    r = classify_species(inten, amplitude=amp, elements=["Pt", "Ni"])
    assert r.features == ["intensity", "amplitude"] and np.mean(r.labels == truth) > 0.95
    assert "amplitude_mean" in r.species_stats[0]
    with pytest.raises(ValueError, match="amplitude"):
        classify_species(inten, amplitude=amp[:10])


def test_fit_gmm_recovers_parameters():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(-2, 0.5, 3000), rng.normal(3, 1.0, 1000)])
    g = fit_gmm(x, n_components=2, seed=1)
    np.testing.assert_allclose(g.means[:, 0], [-2, 3], atol=0.08)
    np.testing.assert_allclose(np.sqrt(g.covariances[:, 0, 0]), [0.5, 1.0], atol=0.06)
    np.testing.assert_allclose(g.weights, [0.75, 0.25], atol=0.02)
    assert g.converged and g.n_parameters == 5
    x2 = np.column_stack([x, 2 * x + rng.normal(0, 0.3, len(x))])
    g2 = fit_gmm(x2, n_components=2)
    np.testing.assert_allclose(g2.means[:, 1], [-4, 6], atol=0.2)
    with pytest.raises(ValueError, match="NaN"):
        fit_gmm([1.0, np.nan, 2.0], n_components=1)
    with pytest.raises(ValueError, match="samples"):
        fit_gmm([1.0], n_components=2)


def test_z_table_and_ratios():
    for el in "Fe Co Ni Cu Zn Ru Rh Pd Ag Ir Pt Au".split():
        assert el in Z
    assert Z["Pt"] == 78 and Z["Ni"] == 28 and Z["Au"] == 79
    assert expected_intensity_ratio("Pt", "Ni") == pytest.approx((78 / 28) ** 1.7)
    assert expected_intensity_ratio(78, 46, exponent=2) == pytest.approx((78 / 46) ** 2)
    assert expected_intensity_ratio("pt", "ni") == pytest.approx((78 / 28) ** 1.7)
    with pytest.raises(ValueError, match="unknown element"):
        expected_intensity_ratio("Xx", "Pt")
    with pytest.raises(ValueError, match="n_species"):
        classify_species(np.arange(10.0), elements=["Pt", "Ni"], n_species=3)
