"""The per-atom Gaussian fit (``peaks.refine_gaussian``): every backend against
the numpy reference, fallbacks, error estimates and the derived-parameter helpers.

Tolerances (as before the rewrite): identical status per atom, positions
within 1e-4 px, every other column (amplitude … intensity error) within 1e-4
relative; only summation order, the 7×7 solve and the C++ exp differ in
rounding. Every parity test runs with both background models (constant and
tilted plane).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsac import _backend, peaks
from fastsac.peaks import FIT_TABLE, FitStatus, _fit_gaussian_numpy_ref, _gauss_kernel

from .test_kernels import backend_params, grid_centres, spots


@pytest.fixture(params=backend_params(_gauss_kernel))
def gauss_backend(request):
    if request.param not in _gauss_kernel.available():
        pytest.skip(f"{request.param} backend not available for {_gauss_kernel.name}")
    return request.param


@pytest.fixture(params=[False, True], ids=["constant", "plane"])
def plane(request):
    return request.param


def _run(backend, img, start, radius=4, sigma=1.5, lo=0.75, hi=3.75, shift=np.inf, it=50,
         plane=False):
    args = (np.ascontiguousarray(img, np.float32), np.asarray(start, np.float64), radius, sigma,
            lo, hi, shift, it, plane)
    ref, ref_st = _fit_gaussian_numpy_ref(*args)
    got, st = _gauss_kernel.impls[_backend.Backend(backend)](*args)
    got, st = np.asarray(got), np.asarray(st)
    assert got.shape == (len(start), len(FIT_TABLE)) and st.dtype == np.int8
    np.testing.assert_array_equal(st, ref_st)
    np.testing.assert_allclose(got[:, :2], ref[:, :2], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[:, 2:], ref[:, 2:], rtol=1e-4, atol=1e-9, equal_nan=True)
    return ref, ref_st


def test_parity_random(gauss_backend, plane, rng):
    centres = grid_centres(rng, (80, 96), spacing=13)
    img = spots((80, 96), centres, sigma=1.3, noise=2.0, rng=rng)
    yy, xx = np.mgrid[:80, :96]
    img = img + (0.2 * xx - 0.1 * yy).astype(np.float32)  # a support gradient
    start = np.round(centres) + rng.uniform(-0.6, 0.6, centres.shape)
    ref, st = _run(gauss_backend, img, start, plane=plane)
    assert (st == FitStatus.FREE).all()
    # Random windows of pure noise: every fallback occurs, the kernels still agree.
    noise = rng.normal(10, 2, (60, 60)).astype(np.float32)
    pts = rng.uniform(0, 59, (40, 2))
    _, st = _run(gauss_backend, noise, pts, radius=3, shift=2.0, plane=plane)
    assert len(set(st.tolist())) >= 2


def test_parity_adversarial(gauss_backend, plane, rng):
    img = spots((40, 48), [[2.2, 3.1], [45.6, 37.4], [20.0, 20.0], [22.1, 20.3]], sigma=1.4,
                noise=1.0, rng=rng)  # two touching atoms at (20, 20) and (22.1, 20.3)
    img[10:14, 30:34] = np.nan  # a NaN hole next to a spot
    img[12, 40] = np.inf
    img = img.copy()
    img += spots((40, 48), [[32.5, 12.2]], amplitude=60.0, sigma=1.2, background=0.0)
    flat = np.zeros((40, 48), np.float32)
    start = np.array([[0.0, 0.0], [2.0, 3.0], [47.0, 39.0], [45.4, 37.2], [20.0, 20.0],
                      [22.0, 20.0], [32.4, 12.0], [31.0, 11.0], [40.0, 12.0], [47.0, 0.0]])
    _run(gauss_backend, img, start, radius=3, shift=2.5, plane=plane)
    _, st = _run(gauss_backend, flat, start[:3], radius=3, plane=plane)
    assert (st == FitStatus.CENTROID).all()  # flat: no spot, linear amplitude 0
    dark = -spots((30, 30), [[15.2, 14.7]], background=0.0)  # a dark spot: A ≤ 0
    _, st = _run(gauss_backend, dark, [[15.0, 15.0]], radius=3, plane=plane)
    assert st[0] == FitStatus.CENTROID
    # A window whose finite pixels are collinear (one row left): no plane is
    # fitted there, the kernels agree on the fallback to a constant.
    line = np.full((12, 12), np.nan, np.float32)
    line[6, :] = 5.0 + 20 * np.exp(-((np.arange(12) - 6.2) ** 2) / 4.5)
    _run(gauss_backend, line, [[6.0, 6.0]], radius=3, plane=plane)


def test_recovers_parameters_and_errors_are_calibrated(gauss_backend, rng):
    """Free fits recover the spot; the reported standard errors match the
    scatter of the estimates over noise realisations (within 20 %)."""
    centres = grid_centres(rng, (112, 112), spacing=16, margin=8)
    truth_sigma, amp, bg = 1.4, 80.0, 10.0
    fits = []
    for _ in range(6):
        img = spots((112, 112), centres, amplitude=amp, sigma=truth_sigma, background=bg,
                    noise=4.0, rng=rng)
        fits.append(peaks.refine_gaussian(img, np.round(centres), radius=4, sigma=1.5,
                                          backend=gauss_backend))
    f0 = fits[0]
    assert f0.backend == gauss_backend and (f0.status == FitStatus.FREE).all()
    np.testing.assert_allclose(np.median(f0.sigma), truth_sigma, atol=0.05)
    np.testing.assert_allclose(np.median(f0.amplitude), amp, rtol=0.05)
    np.testing.assert_allclose(np.median(f0.intensity), 2 * np.pi * amp * truth_sigma ** 2,
                               rtol=0.05)
    err_x = np.concatenate([f.xy[:, 0] - centres[:, 0] for f in fits])
    err_i = np.concatenate([f.intensity for f in fits]) - 2 * np.pi * amp * truth_sigma ** 2
    rep_x = np.concatenate([f.xy_err[:, 0] for f in fits])
    rep_i = np.concatenate([f.intensity_err for f in fits])
    assert 0.8 < np.std(err_x) / np.sqrt(np.mean(rep_x ** 2)) < 1.25
    assert 0.8 < np.std(err_i) / np.sqrt(np.mean(rep_i ** 2)) < 1.25


def test_plane_removes_a_support_gradient(gauss_backend, rng):
    """A steep background gradient under wide atoms biases a constant-background
    fit towards the bright side; the plane model is unbiased and its
    ``background`` is the plane's value under the atom's centre."""
    centres = grid_centres(rng, (160, 160), spacing=26, margin=13)
    yy, xx = np.mgrid[:160, :160]
    ramp = (1.5 * xx + 0.8 * yy).astype(np.float32)
    img = spots((160, 160), centres, amplitude=60.0, sigma=3.4, background=0.0) + ramp
    start = np.round(centres)
    const = peaks.refine_gaussian(img, start, radius=9, sigma=3.4, background="constant",
                                  backend=gauss_backend)
    tilt = peaks.refine_gaussian(img, start, radius=9, sigma=3.4, backend=gauss_backend)
    assert (tilt.status == FitStatus.FREE).all()
    assert np.abs(tilt.xy - centres).max() < 1e-3
    assert np.abs(const.xy - centres).max() > 0.2
    np.testing.assert_allclose(tilt.background, 1.5 * centres[:, 0] + 0.8 * centres[:, 1],
                               rtol=1e-4)
    np.testing.assert_allclose(tilt.intensity, 2 * np.pi * 60.0 * 3.4 ** 2, rtol=1e-3)
    with pytest.raises(ValueError, match="background"):
        peaks.refine_gaussian(img, start, background="quadratic")


def test_signal_dependent_noise_model(rng):
    """Shot noise (variance ∝ signal): the error model sees the larger variance
    on the atom, the reported position error follows the actual scatter."""
    centres = grid_centres(rng, (128, 128), spacing=16, margin=8)
    clean = spots((128, 128), centres, amplitude=400.0, sigma=1.5, background=20.0)
    errs, reps = [], []
    for _ in range(4):
        img = rng.poisson(clean).astype(np.float32)
        f = peaks.refine_gaussian(img, np.round(centres), radius=4, sigma=1.5)
        errs.append(f.xy[:, 0] - centres[:, 0])
        reps.append(f.xy_err[:, 0])
    ratio = np.std(np.concatenate(errs)) / np.sqrt(np.mean(np.concatenate(reps) ** 2))
    assert 0.8 < ratio < 1.25


def test_fallbacks(gauss_backend, rng):
    img = spots((40, 60), [[10.3, 20.2], [30.0, 20.0], [50.2, 19.8]], sigma=1.3,
                amplitude=100.0)
    # A very broad spot (σ = 6 px) is outside the bounds [0.75, 3.75]: fixed σ.
    broad = spots((40, 60), [[30.0, 20.0]], sigma=6.0, amplitude=50.0)
    f = peaks.refine_gaussian(broad, [[30.2, 19.8]], radius=4, sigma=1.5, backend=gauss_backend)
    assert f.status[0] == FitStatus.FIXED_SIGMA
    assert f.sigma[0] == 1.5 and np.isnan(f.sigma_err[0]) and np.isfinite(f.intensity_err[0])
    assert np.abs(f.xy[0] - [30.0, 20.0]).max() < 0.05
    # A fit that must move further than max_shift is refused; position stays at the start.
    f = peaks.refine_gaussian(img, [[12.0, 20.0]], radius=4, sigma=1.5, max_shift=1.0,
                              backend=gauss_backend)
    assert f.status[0] == FitStatus.CENTROID
    np.testing.assert_array_equal(f.xy, [[12.0, 20.0]])
    assert np.isfinite(f.intensity[0]) and f.amplitude[0] > 0
    # Fewer than 6 finite pixels: no fit at all.
    tiny = np.ones((2, 2), np.float32)
    f = peaks.refine_gaussian(tiny, [[0.0, 0.0]], backend=gauss_backend)
    assert f.status[0] == FitStatus.NONE and np.isnan(f.intensity[0]) and not f.converged[0]
    np.testing.assert_array_equal(f.xy, [[0.0, 0.0]])


def test_every_atom_gets_an_intensity_on_a_noisy_frame(rng):
    """Issue 13: ≤ 1 % of atoms without an intensity (here: none)."""
    centres = grid_centres(rng, (200, 200), spacing=12, margin=6)
    img = spots((200, 200), centres, amplitude=15.0, sigma=2.5, background=40.0, noise=6.0,
                rng=rng)
    f = peaks.refine_gaussian(img, np.round(centres), radius=4, sigma=2.0)
    assert np.isfinite(f.intensity).all() and np.isfinite(f.intensity_err).all()
    assert set(np.unique(f.status)) <= {0, 1, 2}
    lo, hi = peaks.default_sigma_bounds(2.0)
    assert ((f.sigma >= lo) & (f.sigma <= hi)).all()


def test_inputs_validated_and_not_mutated(rng):
    img = spots((30, 30), [[15.3, 14.8]])
    xy = np.array([[15.0, 15.0]])
    img0, xy0 = img.copy(), xy.copy()
    peaks.refine_gaussian(img, xy)
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(xy, xy0)
    with pytest.raises(ValueError, match="NaN"):
        peaks.refine_gaussian(img, [[np.nan, 1.0]])
    with pytest.raises(ValueError, match="sigma_bounds"):
        peaks.refine_gaussian(img, xy, sigma=1.5, sigma_bounds=(2.0, 3.0))
    empty = peaks.refine_gaussian(img, np.zeros((0, 2)))
    assert empty.xy.shape == (0, 2) and empty.status.shape == (0,)


def test_refine_positions_columns(rng):
    img = spots((40, 40), [[20.3, 19.6]], sigma=1.2, noise=0.5, rng=rng)
    xy, cols = peaks.refine_positions(img, [[20.0, 20.0]], min_distance_px=3.0)
    assert len(cols) == len(peaks.FIT_COLUMNS)
    c = dict(zip(peaks.FIT_COLUMNS, cols))
    assert c["fit_status"][0] == FitStatus.FREE and np.abs(xy - [[20.3, 19.6]]).max() < 0.05
    assert 0 < c["x_err_px"][0] < 0.05
    xy, cols = peaks.refine_positions(img, [[20.0, 20.0]], min_distance_px=3.0, refine="com")
    c = dict(zip(peaks.FIT_COLUMNS, cols))
    assert c["fit_status"][0] == FitStatus.NONE and np.isnan(c["intensity"][0])


# ------------------------------------------------------------------ derived parameters
def test_derived_parameters_are_calibration_stable():
    # 0.0586 nm at a TIFF's 0.029299999999512 nm/px vs a Zarr's 0.0293 nm/px.
    s_tiff, s_zarr = 0.0586 / 0.029299999999512, 0.0586 / 0.0293
    assert int(np.ceil(2 * s_tiff)) == 5  # the bug: the raw float flips the window
    assert peaks.fit_radius(s_tiff, 2.0) == peaks.fit_radius(s_zarr, 2.0) == 4
    assert peaks.com_radius(s_tiff) == peaks.com_radius(s_zarr) == 3
    assert peaks.refine_reach(s_tiff, 4) == peaks.refine_reach(s_zarr, 4) == 2 * 3 + 4 + 2
    # The fit's physical σ (0.1 nm = 3.41 px): window ⌈2.5σ⌉ = 9, disc 5, reach 21.
    f_tiff, f_zarr = peaks.FIT_SIGMA_NM / 0.029299999999512, peaks.FIT_SIGMA_NM / 0.0293
    assert peaks.fit_radius(f_tiff) == peaks.fit_radius(f_zarr) == 9
    assert peaks.refine_reach(f_tiff, 9) == peaks.refine_reach(f_zarr, 9) == 2 * 5 + 9 + 2
    assert peaks.refine_reach(2.0, 4, "none") == 0
    assert peaks.stable_float(0.029299999999512) == 0.0293
    assert peaks.stable_float(0.0) == 0.0 and np.isnan(peaks.stable_float(np.nan))
