"""Species assignment with errors and the Z-contrast prior; fixed-shape photometry."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.species import (assign_species, expected_intensity_ratio, photometry, species_of_atoms)


def mixture(rng, n, heavy_frac, ratio, rel_sd=0.12, err=0.05):
    heavy = rng.random(n) < heavy_frac
    mean = np.where(heavy, ratio, 1.0)
    x = rng.normal(mean, rel_sd * mean) + rng.normal(0, err, n)
    return x, np.full(n, err), heavy


def test_named_elements_pt_pd_accuracy_and_fraction():
    rng = np.random.default_rng(0)
    r_ptpd = expected_intensity_ratio("Pt", "Pd")
    accs, ferr = [], []
    for seed in range(5):
        x, e, heavy = mixture(rng, 200, 0.4, r_ptpd)
        r = assign_species(x, intensity_err=e, elements=["Pd", "Pt"])
        assert r.status == "ok" and r.names == ["Pd", "Pt"] and r.mode == "elements"
        truth = np.where(heavy, "Pt", "Pd")
        accs.append(np.mean(r.species == truth))
        ferr.append(abs(r.as_dict()["fractions"]["Pt"] - heavy.mean()))
        assert np.all((r.probability > 0.5) & (r.probability <= 1))
    assert np.mean(accs) > 0.97 and max(ferr) < 0.03
    d = r.as_dict()
    assert 1.4 <= d["fitted_haadf_exponent"] <= 2.2
    assert d["intensity_ratios_to_dimmest"][1] == pytest.approx(r_ptpd, rel=0.1)
    assert d["pairwise_accuracy_equal_amounts"][0] > 0.99 and d["intensity_errors_known"]


def test_pt_ir_is_not_separable_and_nothing_is_guessed():
    rng = np.random.default_rng(1)
    x, e, _ = mixture(rng, 300, 0.5, expected_intensity_ratio("Pt", "Ir"))
    r = assign_species(x, intensity_err=e, elements=["Pt", "Ir"])
    assert r.status == "not separable"
    assert set(r.species.tolist()) == {"Pt/Ir"} and np.isnan(r.probability).all()
    d = r.as_dict()
    assert d["fractions"] is None and d["counts"] == {"Pt/Ir": 300}
    assert d["pairwise_accuracy_equal_amounts"][0] < 0.6 and "Pt/Ir" in d["note"]


@pytest.mark.parametrize("seed", range(8))
def test_pure_frame_gives_one_class(seed):
    """A skewed single species (lognormal, 25 % spread, errors) is never split."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0, 0.25, 250) + rng.normal(0, 0.05, 250)
    r = assign_species(x, intensity_err=np.full(250, 0.05))
    assert r.status == "ok" and r.names == ["x1.00"] and set(r.species.tolist()) == {"x1.00"}
    one = assign_species(x, intensity_err=np.full(250, 0.05), elements=["Pt", "Pd"])
    assert one.status == "one intensity class" and set(one.species.tolist()) == {"Pt/Pd"}


def test_two_classes_found_and_named_by_ratio_without_elements():
    rng = np.random.default_rng(3)
    x, e, heavy = mixture(rng, 300, 0.5, expected_intensity_ratio("Pt", "Ni"))
    r = assign_species(x, intensity_err=e)
    assert r.n_classes == 2 and r.names[0] == "x1.00"
    assert float(r.names[1][1:]) == pytest.approx(expected_intensity_ratio("Pt", "Ni"), rel=0.05)
    assert np.mean((r.labels == 1) == heavy) > 0.99
    assert r.bic[2] < r.bic[1] - 10


def test_unknown_errors_nan_intensities_and_order():
    rng = np.random.default_rng(4)
    x, _, heavy = mixture(rng, 200, 0.5, 5.7)
    x[[3, 50]] = np.nan
    r = assign_species(x, elements=["Ni", "Pt"])
    assert not r.errors_known and r.status == "ok"
    assert r.species[3] == "" and np.isnan(r.probability[50]) and r.labels[3] == -1
    assert r.as_dict()["n_unassigned_no_intensity"] == 2
    perm = rng.permutation(len(x))
    rp = assign_species(x[perm], elements=["Pt", "Ni"])
    np.testing.assert_array_equal(rp.species, r.species[perm])
    np.testing.assert_allclose(rp.probability, r.probability[perm], rtol=1e-4, atol=1e-6)


def test_few_atoms_and_bad_arguments():
    r = assign_species([1.0, 2.0, np.nan], elements=["Pt", "Pd"])
    assert r.status == "too few atoms" and r.as_dict()["fractions"] is None
    assert assign_species(np.zeros(0)).status == "too few atoms"
    with pytest.raises(ValueError, match="intensity_err"):
        assign_species(np.ones(10), intensity_err=np.ones(3))
    with pytest.raises(ValueError, match="different"):
        assign_species(np.ones(10), elements=["Pt", "pt"])
    with pytest.raises(ValueError, match="unknown element"):
        assign_species(np.ones(10), elements=["Pt", "Xx"])
    with pytest.raises(ValueError, match="exponent_range"):
        assign_species(np.ones(10), elements=["Pt", "Pd"], exponent_range=(2.0, 1.0))


def test_photometry_exact_unbiased_and_errors_match_the_scatter():
    yy, xx = np.mgrid[0:64, 0:64]
    pos = np.array([[20.3, 30.6], [44.8, 12.1], [0.2, 63.0]])
    clean = 50.0 + sum(a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2))
                       for a, (x, y) in zip([10, 20, 15], pos))
    p = photometry(clean, pos[:2], sigma_px=2.5)
    np.testing.assert_allclose(p.intensity, 2 * np.pi * 2.5**2 * np.array([10, 20]), rtol=2e-3)
    np.testing.assert_allclose(p.background, 50.0, atol=0.05)
    assert np.isfinite(photometry(clean, pos[2:], sigma_px=2.5).intensity).all()  # at the corner
    rng = np.random.default_rng(0)
    vals, errs = [], []
    for _ in range(300):
        q = photometry(clean + rng.normal(0, 1.0, clean.shape), pos[:1], sigma_px=2.5)
        vals.append(q.intensity[0])
        errs.append(q.intensity_err[0])
    assert np.mean(vals) == pytest.approx(2 * np.pi * 2.5**2 * 10, rel=0.01)
    assert np.std(vals) == pytest.approx(np.mean(errs), rel=0.15)
    img = clean.copy()
    img[30, 20] = np.nan
    assert np.isfinite(photometry(img, pos[:1], sigma_px=2.5).intensity).all()
    before = clean.copy()
    photometry(clean, pos, sigma_px=2.5)
    np.testing.assert_array_equal(clean, before)
    with pytest.raises(ValueError, match="sigma_px"):
        photometry(clean, pos, sigma_px=0)


def test_species_on_simulated_frames_at_true_positions():
    from fastsac.synth import simulate

    img, tr = simulate(size=384, elements=("Pt", "Ni"), dose=4e4, seed=5, loading_per_nm2=0.4)
    r = species_of_atoms(img, tr.xy, pixel_size_nm=0.0293, elements=["Pt", "Ni"])
    assert r.status == "ok" and np.mean(r.species == tr.element) >= 0.9
    assert r.feature.startswith("fixed-shape photometry")
    img, tr = simulate(size=384, elements=("Pt",), dose=4e4, seed=6, loading_per_nm2=0.4)
    assert species_of_atoms(img, tr.xy, pixel_size_nm=0.0293).names == ["x1.00"]


def test_species_of_atoms_uses_fit_intensities_with_errors():
    rng = np.random.default_rng(7)
    x, e, heavy = mixture(rng, 120, 0.5, 5.7)
    img = np.zeros((64, 64))
    xy = rng.uniform(5, 59, (120, 2))
    r = species_of_atoms(img, xy, pixel_size_nm=0.0293, intensity=x, intensity_err=e, elements=["Pt", "Ni"])
    assert r.feature == "gaussian fit intensity" and np.mean((r.species == "Pt") == heavy) > 0.97


def test_pt_pd_at_the_default_dose_true_positions_reach_90_percent():
    """Issue 13 item 4 target: ≥ 90 % per-atom accuracy on Pt+Pd at 4e4 e/Å² (two 512²
    frames, 110 atoms; the benchmark pools 6 frames: 94 %)."""
    from fastsac.synth import simulate

    right = total = 0
    for seed in (1, 2):
        img, tr = simulate(size=512, elements=("Pt", "Pd"), dose=4e4, seed=seed, loading_per_nm2=0.3)
        r = species_of_atoms(img, tr.xy, pixel_size_nm=0.0293, elements=["Pt", "Pd"])
        assert r.status == "ok"
        right += int(np.sum(r.species == tr.element))
        total += len(tr.element)
        assert abs(r.as_dict()["fractions"]["Pt"] - np.mean(tr.element == "Pt")) < 0.1
    assert right / total >= 0.9


def test_support_noise_is_the_photometry_error_on_white_noise():
    from fastsac.species import support_noise

    rng = np.random.default_rng(0)
    img = 100 + rng.normal(0, 5, (256, 256))
    atoms = rng.uniform(20, 236, (10, 2))
    noise = support_noise(img, atoms, sigma_px=3.31)
    err = np.median(photometry(img, rng.uniform(20, 236, (500, 2)), sigma_px=3.31).intensity_err)
    assert abs(noise / err - 1) < 0.15
    assert np.isnan(support_noise(img[:20, :20], atoms, sigma_px=3.31))  # too few positions


def test_lightest_element_flag_says_when_light_atoms_cannot_be_found():
    from fastsac.species import MIN_DETECTABLE_SNR
    from fastsac.synth import simulate

    img, tr = simulate(size=512, elements=("Pt", "Ni"), dose=4e4, seed=1, loading_per_nm2=0.3)
    d = species_of_atoms(img, tr.xy, pixel_size_nm=0.0293, elements=["Pt", "Ni"]).as_dict()
    assert d["lightest_element_snr"] < MIN_DETECTABLE_SNR and d["lightest_element_detectable"] is False
    assert "Ni fraction is underestimated" in d["warning"]
    img, tr = simulate(size=512, elements=("Pt", "Ir"), dose=4e4, seed=1, loading_per_nm2=0.3)
    d = species_of_atoms(img, tr.xy, pixel_size_nm=0.0293, elements=["Pt", "Ir"]).as_dict()
    assert d["lightest_element_detectable"] is True and "warning" not in d
    assert species_of_atoms(img, tr.xy, pixel_size_nm=0.0293).as_dict()["lightest_element_snr"] is None


def test_end_to_end_elements_path_labels_the_light_atoms_it_finds():
    """On a support without texture at high dose the Pd atoms stand out (flag: detectable):
    analyze(elements=...) finds most of them and labels the matched atoms right."""
    from fastsac.evaluate import match_points
    from fastsac.io import Micrograph
    from fastsac.pipeline import analyze
    from fastsac.synth import simulate

    img, tr = simulate(size=512, elements=("Pt", "Pd"), dose=1.6e5, seed=2, loading_per_nm2=0.3,
                       texture=0.0, atomic_texture=0.0, fine_texture=0.0, thickness_variation=0.0)
    res = analyze(Micrograph(img.astype(np.float32), 0.0293, "synth", "sim", {}), elements=["Pt", "Pd"],
                  support_mask=False, pair_correlation=False)
    d = res.summary["species"]
    assert d["status"] == "ok" and d["lightest_element_detectable"] is True
    m = match_points(res.detections.xy, tr.xy, tolerance_px=6)
    found = tr.element[m.pairs[:, 1]]
    assert np.sum(found == "Pd") >= 0.5 * np.sum(tr.element == "Pd")
    assert np.mean(res.species.species[m.pairs[:, 0]] == found) >= 0.9
    assert list(res.atoms_table()["species"][m.pairs[:, 0]]) == list(res.species.species[m.pairs[:, 0]])


@pytest.mark.slow
def test_capped_fit_labels_like_the_full_fit_on_many_atoms():
    # 2e5 atoms: the mixture fitted on MAX_FIT_ATOMS of them labels every atom as
    # the fit on all of them does, and as the simulated truth.
    from fastsac.species import MAX_FIT_ATOMS

    rng = np.random.default_rng(3)
    x, e, heavy = mixture(rng, 200_000, 0.3, expected_intensity_ratio("Pt", "Pd"))
    capped = assign_species(x, intensity_err=e, elements=["Pt", "Pd"])
    full = assign_species(x, intensity_err=e, elements=["Pt", "Pd"], max_fit_atoms=None)
    assert MAX_FIT_ATOMS < 200_000 and capped.status == full.status == "ok"
    assert np.mean(capped.species == full.species) >= 0.999
    assert np.mean(capped.species == np.where(heavy, "Pt", "Pd")) >= np.mean(
        full.species == np.where(heavy, "Pt", "Pd")) - 0.001 > 0.97
    np.testing.assert_allclose(capped.means, full.means, rtol=0.01)
    assert abs(capped.as_dict()["fractions"]["Pt"] - full.as_dict()["fractions"]["Pt"]) < 0.002
    # Without elements (cap scaled down with the set to keep the test short): same classes.
    x, e, heavy = mixture(rng, 20_000, 0.3, 2.45)
    capped = assign_species(x, intensity_err=e, max_fit_atoms=2000)
    full = assign_species(x, intensity_err=e, max_fit_atoms=None)
    assert capped.status == full.status == "ok" and capped.n_classes == full.n_classes == 2
    np.testing.assert_allclose(capped.means, full.means, rtol=0.02)  # names: x2.43 vs x2.45
    assert np.mean(capped.labels == full.labels) >= 0.999
    assert np.mean(capped.labels == heavy) > 0.97


def test_below_the_cap_every_atom_is_fitted_and_the_draw_is_reproducible():
    rng = np.random.default_rng(4)
    x, e, _ = mixture(rng, 400, 0.4, expected_intensity_ratio("Pt", "Pd"))
    for els in (["Pt", "Pd"], None):
        a = assign_species(x, intensity_err=e, elements=els)
        b = assign_species(x, intensity_err=e, elements=els, max_fit_atoms=None)
        np.testing.assert_array_equal(a.probability, b.probability)
        np.testing.assert_array_equal(a.species, b.species)
        assert a.as_dict() == b.as_dict()
        assert a.as_dict()["n_fit_atoms"] == np.isfinite(x).sum() == 400
    # Above the cap: the same atoms give the same draw, hence identical results.
    a = assign_species(x, intensity_err=e, elements=["Pt", "Pd"], max_fit_atoms=150)
    b = assign_species(x.copy(), intensity_err=e.copy(), elements=["Pt", "Pd"], max_fit_atoms=150)
    np.testing.assert_array_equal(a.probability, b.probability)
    assert a.n_fit_atoms == a.as_dict()["n_fit_atoms"] == 150
    assert np.mean(a.species == assign_species(x, intensity_err=e, elements=["Pt", "Pd"]).species) > 0.98
    with pytest.raises(ValueError, match="max_fit_atoms must be ≥ 100"):
        assign_species(x, max_fit_atoms=10)
    with pytest.raises(TypeError, match="max_fit_atoms must be an int or None"):
        assign_species(x, max_fit_atoms="1000")


def test_support_grid_is_bounded_and_keeps_away_from_atoms():
    from fastsac.species import support_grid, support_noise_of

    atoms = np.array([[500.0, 500.0], [1200.5, 300.2]])
    grid = support_grid((2000, 3000), atoms, sigma_px=3.31, max_positions=4000)
    r = int(np.ceil(2.5 * 3.31))
    assert 3500 <= len(grid) <= 4000 and np.all(grid == np.round(grid))
    assert np.min(np.hypot(*(grid[:, None, :] - atoms[None]).transpose(2, 0, 1))) > 2 * r
    assert grid[:, 0].min() >= r and grid[:, 0].max() < 3000 - r and grid[:, 1].max() < 2000 - r
    # the robust statistic: 1.4826·MAD, vacuum (background below the atoms' 5th percentile) dropped
    v = np.random.default_rng(5).normal(0, 2.0, 5000)
    assert support_noise_of(v, np.ones(5000), atom_background=np.ones(10)) == pytest.approx(2.0, rel=0.05)
    assert np.isnan(support_noise_of(v, np.zeros(5000), atom_background=np.ones(10)))
