"""Tests of the HAADF-STEM simulator: reproducibility, exact truth, patterns,
vacuum, noise physics, calibration and montage seams."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from fastsac.synth import SimulationParams, demo_image, element, simulate
from fastsac.synth import _noise
from fastsac.synth.render import Field

FLAT = dict(vacuum="none", thickness_variation=0.0, texture=0.0, fine_texture=0.0, atomic_texture=0.0,
            line_jitter_px=0.0, line_gain_jitter=0.0, noise=False, dtype="float32")


def test_same_seed_same_image_and_truth():
    a, ta = simulate(size=128, seed=7, pattern="clustered", dimer_fraction=0.3)
    b, tb = simulate(size=128, seed=7, pattern="clustered", dimer_fraction=0.3)
    assert a.dtype == np.uint32 and np.array_equal(a, b)
    assert np.array_equal(ta.xy, tb.xy) and np.array_equal(ta.cluster_id, tb.cluster_id)
    c, tc = simulate(size=128, seed=8, pattern="clustered", dimer_fraction=0.3)
    assert not np.array_equal(a, c)
    assert len(tc) != len(ta) or not np.allclose(tc.xy, ta.xy)


def test_params_are_recorded_and_validated():
    _, t = simulate(size=64, seed=1, dose=1e5, elements=("pt",))
    assert t.params["dose"] == 1e5 and t.params["elements"] == ("Pt",) and t.params["seed"] == 1
    with pytest.raises(ValueError, match="pattern"):
        SimulationParams(pattern="clusterd")
    with pytest.raises(ValueError, match="Ptt|unknown element"):
        SimulationParams(elements=("Ptt",))
    with pytest.raises(ValueError, match="dose"):
        SimulationParams(dose=-1)
    with pytest.raises(ValueError, match="dimer_fraction"):
        SimulationParams(dimer_fraction=0.8, trimer_fraction=0.5)


@pytest.mark.parametrize("drift", [(0.0, 0.0), (3.0, -2.0)])
def test_truth_sits_on_noiseless_intensity_maxima(drift):
    from fastsac.peaks import refine_com, refine_gaussian

    # atoms only (no support), isolated, with per-atom blur/intensity spread and drift
    img, t = simulate(size=256, seed=3, loading_per_nm2=0.4, min_separation_nm=1.0,
                      support_thickness_nm=0.0, vacuum_haadf=0.0, drift_px=drift, **FLAT)
    assert len(t) > 8
    bg = t.params["offset"]
    xy = t.xy[(t.xy > 10).all(1) & (t.xy < 245).all(1)]
    start = np.floor(xy + 0.5)
    fit = refine_gaussian(img - bg, start, radius=6, sigma=3.0)
    assert fit.converged.all()
    assert np.abs(fit.xy - xy).max() < 0.1
    com = refine_com(img - bg, start, radius=10, iterations=4)
    assert np.abs(com - xy).max() < 0.1


@pytest.mark.parametrize("vacuum", ["edge", "holes", "none"])
def test_loading_matches_poisson_expectation(vacuum):
    n, expect = 0, 0.0
    for seed in range(4):
        _, t = simulate(size=1024, seed=seed, loading_per_nm2=0.4, vacuum=vacuum, noise=False)
        n += len(t)
        expect += 0.4 * t.support_area_nm2
    # Poisson count; the support area is estimated on a grid and atoms near the
    # frame border can be shifted out by drift: allow 4σ plus 2 %
    assert abs(n - expect) < 4 * np.sqrt(expect) + 0.02 * expect, (n, expect)


def test_clustered_dimer_trimer_fractions_and_geometry():
    fd, ft = 0.3, 0.15
    sizes, n_atoms = [], 0
    pairs_ok = []
    for seed in range(3):
        p = SimulationParams(size=1024, seed=seed, pattern="clustered", dimer_fraction=fd,
                             trimer_fraction=ft, loading_per_nm2=0.3, noise=False)
        fld = Field(p)
        a = fld.atoms
        u, first = np.unique(a.unit_id, return_index=True)
        sizes.append(a.unit_size[first])
        n_atoms += len(a.xy)
        # bond lengths inside dimers: Pt 0.277 nm ± a few %
        for uid in u[a.unit_size[first] == 2][:50]:
            d = np.diff(a.xy[a.unit_id == uid], axis=0)[0]
            pairs_ok.append(abs(np.hypot(*d) * p.pixel_size_nm - 0.277) < 0.03)
        # hard core between atoms of different units
        pr = cKDTree(a.xy).query_pairs(0.2 / p.pixel_size_nm - 1e-9, output_type="ndarray")
        assert (a.unit_id[pr[:, 0]] == a.unit_id[pr[:, 1]]).all()
    sizes = np.concatenate(sizes)
    U = len(sizes)
    w = np.array([1 - fd - ft, fd / 2, ft / 3])
    pk = w / w.sum()  # unit-type probabilities that give the asked atom fractions
    for k, pkk in zip((1, 2, 3), pk):
        nk = (sizes == k).sum()
        assert abs(nk - U * pkk) < 4 * np.sqrt(U * pkk * (1 - pkk)), (k, nk, U * pkk)
    atom_frac2 = 2 * (sizes == 2).sum() / sizes.sum()
    assert abs(atom_frac2 - fd) < 0.05
    assert np.mean(pairs_ok) == 1.0


def test_nanoclusters_sizes_in_range():
    p = SimulationParams(size=512, seed=2, pattern="nanoclusters", nanocluster_size=(5, 9),
                         nanocluster_fraction=0.6, noise=False)
    a = Field(p).atoms
    _, first = np.unique(a.unit_id, return_index=True)
    k = a.unit_size[first]
    assert set(np.unique(k)) <= {1, 5, 6, 7, 8, 9} and (k >= 5).any()
    frac = k[k >= 5].sum() / k.sum()
    assert 0.4 < frac < 0.8


@pytest.mark.parametrize("vacuum", ["edge", "holes"])
def test_no_atoms_in_vacuum(vacuum):
    p = SimulationParams(size=512, seed=5, vacuum=vacuum, vacuum_fraction=0.35, loading_per_nm2=1.0)
    fld = Field(p)
    mask = fld.support_mask()
    assert 0.55 < mask.mean() < 0.75
    ij = np.floor(fld.xy_image + 0.5).astype(int)
    ij = ij[(ij >= 0).all(1) & (ij < 512).all(1)]
    assert len(ij) > 100 and mask[ij[:, 1], ij[:, 0]].all()
    assert (fld.support_nm(fld.atoms.xy) > p.surface_margin_nm).all()
    # the vacuum is dark: its expectation is far below the support's
    lam = fld.expected()
    assert np.median(lam[~mask]) < 0.3 * np.median(lam[mask])


def test_noise_statistics_follow_detector_model():
    p = SimulationParams(size=256, seed=0, **{**FLAT, "noise": True}, loading_per_nm2=0.0)
    img, _ = simulate(p)
    lam = Field(p).expected()
    expected_mean = p.offset + p.gain * lam.mean()
    expected_var = p.gain ** 2 * lam.mean() * (1 + p.gain_cv ** 2) + p.read_noise ** 2
    assert abs(img.mean() - expected_mean) < 0.01 * expected_mean
    assert abs(img.var() / expected_var - 1) < 0.05


def test_z_contrast_and_dose_scaling():
    p = SimulationParams(size=256, seed=0, elements=("Pt", "Fe"), atom_intensity_cv=0.0,
                         loading_per_nm2=0.5, noise=False)
    f = Field(p)
    pt = f.atom_electrons[f.atoms.element == "Pt"]
    fe = f.atom_electrons[f.atoms.element == "Fe"]
    assert len(pt) and len(fe)
    assert np.allclose(pt.mean() / fe.mean(), (78 / 26) ** 1.7)
    f2 = Field(p.replace(dose=2 * p.dose))
    assert np.allclose(f2.atom_electrons, 2 * f.atom_electrons)
    assert element("pd").z == 46


def test_dtypes_and_ranges():
    a, _ = simulate(size=128, seed=1)
    assert a.dtype == np.uint32 and 1.5e5 < np.median(a) < 3e6
    b, _ = simulate(size=128, seed=1, dtype="uint16")
    assert b.dtype == np.uint16 and b.max() < 65535 and np.median(b) > 2000
    c, _ = simulate(size=128, seed=1, dtype="float32")
    assert c.dtype == np.float32


def test_hash_noise_numba_matches_numpy_and_is_translation_consistent():
    y, x = np.mgrid[0:64, 0:64].astype(float) * 1.7 - 30
    ref = _noise.fbm(4, 3, x, y, [20.0, 5.0], [1.0, 0.5])
    fast = _noise.fbm_fast(4, 3, x, y, [20.0, 5.0], [1.0, 0.5])
    assert np.allclose(ref, fast, atol=1e-12)
    part = _noise.fbm_fast(4, 3, x[10:20, 5:30], y[10:20, 5:30], [20.0, 5.0], [1.0, 0.5])
    assert np.array_equal(part, fast[10:20, 5:30])
    assert 0.5 < ref.std() < 1.6


def test_demo_image():
    m, t = demo_image(seed=0)
    assert m.data.shape == (512, 512) and m.data.dtype == np.float32
    assert m.pixel_size_nm == pytest.approx(0.0293)
    assert len(t) > 20 and (t.cluster_size == 2).any()
    assert (~Field(SimulationParams(**t.params)).support_mask()).mean() > 0.1  # has vacuum


def test_lattice_fringes_have_the_asked_spacing():
    kw = dict(size=256, seed=2, loading_per_nm2=0.0, noise=False, vacuum="none", dtype="float32",
              fringe_amplitude=0.3)
    plain, _ = simulate(fringes=False, **kw)
    fr, _ = simulate(fringes=True, **kw)
    diff = fr.astype(float) - plain
    assert np.abs(diff).max() > 0
    spec = np.abs(np.fft.fftshift(np.fft.fft2(diff)))
    spec[128, 128] = 0
    ky, kx = np.unravel_index(np.argmax(spec), spec.shape)
    f = np.hypot(kx - 128, ky - 128) / 256  # cycles per px
    assert abs(1 / f * 0.0293 - 0.34) < 0.03
