"""Peak kernels: every backend against the numpy reference (the spec).

Tolerances: local_maxima and nms must match exactly (integer outputs, same
order); refine_com within 1e-9 px (only the summation order differs);
refine_gaussian: identical converged flags, positions within 1e-4 px and the
other parameters within 1e-4 relative on converged fits.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastsac_testdata import backend_params

from fastsac import _backend, peaks
from fastsac.peaks import (_com_kernel, _gauss_kernel, _local_maxima_numpy_ref, _maxima_kernel,
                           _nms_kernel, _nms_numpy_ref, _refine_com_numpy_ref,
                           _refine_gaussian_numpy_ref)




def _need(kernel, name):
    if name not in kernel.available():
        pytest.skip(f"{name} backend not available for {kernel.name}")
    return name


@pytest.fixture(params=backend_params(_maxima_kernel))
def maxima_backend(request):
    return _need(_maxima_kernel, request.param)


@pytest.fixture(params=backend_params(_nms_kernel))
def nms_backend(request):
    return _need(_nms_kernel, request.param)


@pytest.fixture(params=backend_params(_com_kernel))
def com_backend(request):
    return _need(_com_kernel, request.param)


@pytest.fixture(params=backend_params(_gauss_kernel))
def gauss_backend(request):
    return _need(_gauss_kernel, request.param)


def spots(shape, centres, *, amplitude=100.0, sigma=1.2, background=10.0, noise=0.0, rng=None):
    """Gaussian spots ``background + amplitude exp(-r²/2σ²)`` at [x, y] centres (float32)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.full(shape, background, np.float64)
    for x, y in centres:
        img += amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    if noise:
        img += noise * rng.standard_normal(shape)
    return img.astype(np.float32)


def grid_centres(rng, shape, spacing=14, margin=10):
    ys = np.arange(margin, shape[0] - margin, spacing)
    xs = np.arange(margin, shape[1] - margin, spacing)
    c = np.array([[x, y] for y in ys for x in xs], float)
    return c + rng.uniform(-0.5, 0.5, c.shape)


# ------------------------------------------------------------------ local maxima
def maxima_cases(rng):
    yield "random", rng.random((41, 57), dtype=np.float32), 0.5
    yield "plateaus", rng.integers(0, 4, (33, 29)).astype(np.float32), 0.0
    img = rng.random((30, 31), dtype=np.float32)
    img[rng.random(img.shape) < 0.15] = np.nan
    img[rng.random(img.shape) < 0.03] = np.inf
    img[rng.random(img.shape) < 0.03] = -np.inf
    yield "nan-inf", img, -np.inf
    yield "all-nan", np.full((5, 6), np.nan, np.float32), -np.inf
    yield "constant", np.full((9, 11), 2.0, np.float32), 1.0
    yield "constant-at-threshold", np.full((9, 11), 2.0, np.float32), 2.0
    yield "row", rng.random((1, 50), dtype=np.float32), -np.inf
    yield "column", rng.random((50, 1), dtype=np.float32), -np.inf
    yield "pixel", np.array([[3.0]], np.float32), 0.0
    yield "float32-threshold", np.full((4, 4), np.float32(0.1)), 0.1  # 0.1f > 0.1 only in float64


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("border", [0, 1, 3, 30])
def test_local_maxima_parity(maxima_backend, rng, radius, border):
    for name, img, thr in maxima_cases(rng):
        ref_xy, ref_v = _local_maxima_numpy_ref(img, thr, radius, border)
        xy, v = _maxima_kernel.impls[_backend.Backend(maxima_backend)](img, thr, radius, border)
        np.testing.assert_array_equal(xy, ref_xy, err_msg=name)
        np.testing.assert_array_equal(v, ref_v, err_msg=name)
        assert xy.dtype == np.int64 and v.dtype == np.float32 and xy.shape == (len(v), 2)


def test_local_maxima_semantics(maxima_backend):
    img = np.zeros((7, 9), np.float32)
    img[3, 4] = 5.0          # isolated peak
    img[1, 1] = img[1, 2] = 2.0  # plateau: both pixels are candidates
    img[5, 7] = np.nan       # NaN never suppresses a neighbour ...
    img[5, 6] = 1.0          # ... so this is a peak
    res = peaks.local_maxima(img, threshold=0.5, radius=1, backend=maxima_backend)
    assert res.xy.tolist() == [[1, 1], [2, 1], [4, 3], [6, 5]]
    assert res.values.tolist() == [2.0, 2.0, 5.0, 1.0]
    assert res.backend == maxima_backend
    border = peaks.local_maxima(img, threshold=0.5, radius=1, exclude_border=2, backend=maxima_backend)
    assert border.xy.tolist() == [[4, 3]]


def test_local_maxima_dtypes_views_no_mutation(maxima_backend, rng):
    base = rng.integers(0, 200, (40, 44)).astype(np.uint8)
    ref_xy, ref_v = _local_maxima_numpy_ref(base.astype(np.float32), 100.0, 2, 1)
    for img in (base, base.astype(np.float64), np.asfortranarray(base)):
        before = img.copy()
        res = peaks.local_maxima(img, threshold=100, radius=2, exclude_border=1, backend=maxima_backend)
        np.testing.assert_array_equal(res.xy, ref_xy)
        np.testing.assert_array_equal(res.values, ref_v)
        np.testing.assert_array_equal(img, before)
    view = base[::2, 1::3]
    res = peaks.local_maxima(view, threshold=50, radius=1, backend=maxima_backend)
    ref_xy, _ = _local_maxima_numpy_ref(np.ascontiguousarray(view, np.float32), 50.0, 1, 0)
    np.testing.assert_array_equal(res.xy, ref_xy)


def test_local_maxima_finds_spots(maxima_backend, rng):
    centres = grid_centres(rng, (96, 128))
    img = spots((96, 128), centres, noise=1.0, rng=rng)
    res = peaks.local_maxima(img, threshold=50, radius=3, backend=maxima_backend)
    assert len(res.xy) == len(centres)
    assert np.abs(res.xy - centres).max() <= 1.0


# ------------------------------------------------------------------ NMS
def nms_cases(rng):
    yield "random", rng.random((300, 2)) * 40, rng.random(300), 2.5
    yield "score-ties", rng.random((200, 2)) * 20, rng.integers(0, 3, 200).astype(float), 1.5
    pts = rng.integers(0, 5, (120, 2)).astype(float)  # many coincident points
    yield "coincident", pts, rng.random(120), 0.0
    yield "lattice-at-radius", np.array([[x, y] for x in range(8) for y in range(8)], float), \
        np.ones(64), 1.0  # neighbours exactly at distance == radius are suppressed
    s = rng.random(80)
    s[::7] = np.nan
    s[3] = np.inf
    s[5] = -np.inf
    yield "nan-inf-scores", rng.random((80, 2)) * 10, s, 1.0
    yield "one", np.array([[1.0, 2.0]]), np.array([0.3]), 1.0
    yield "one-nan", np.array([[1.0, 2.0]]), np.array([np.nan]), 1.0
    yield "collinear", np.c_[np.arange(50) * 0.7, np.zeros(50)], rng.random(50), 1.0
    yield "tiny-radius-wide-spread", rng.random((100, 2)) * 1e6, rng.random(100), 1e-3
    yield "huge-radius", rng.random((60, 2)), rng.random(60), 1e3


def test_nms_parity(nms_backend, rng):
    for name, xy, s, r in nms_cases(rng):
        ref = _nms_numpy_ref(xy, s, r)
        got = _nms_kernel.impls[_backend.Backend(nms_backend)](np.ascontiguousarray(xy), s, r)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref, err_msg=name)


def test_nms_semantics(nms_backend):
    xy = np.array([[0, 0], [1, 0], [2, 0], [0, 3.0]])
    s = np.array([1.0, 2.0, 1.0, 0.5])
    assert peaks.nms(xy, s, radius=1.0, backend=nms_backend).tolist() == [1, 3]
    assert peaks.nms(xy, np.ones(4), radius=1.0, backend=nms_backend).tolist() == [0, 2, 3]
    assert peaks.nms(np.zeros((0, 2)), np.zeros(0), radius=1.0, backend=nms_backend).tolist() == []


# ------------------------------------------------------------------ centre of mass
def test_refine_com_parity(com_backend, rng):
    img = rng.random((50, 64), dtype=np.float32)
    img[rng.random(img.shape) < 0.05] = np.nan
    xy = np.r_[rng.uniform(-5, 70, (300, 2)),          # includes points outside the image
               [[0, 0], [63, 49], [0.5, 0.5], [-0.5, 49.5]]]
    for radius, iters in [(1, 1), (3, 2), (4, 5)]:
        ref = _refine_com_numpy_ref(img, xy, radius, iters)
        got = _com_kernel.impls[_backend.Backend(com_backend)](img, xy, radius, iters)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_refine_com_degenerate_windows(com_backend):
    flat = np.full((10, 10), 4.0, np.float32)  # weights sum to 0: position kept
    xy = np.array([[3.3, 4.6], [9.0, 0.0]])
    np.testing.assert_array_equal(peaks.refine_com(flat, xy, backend=com_backend), xy)
    nan = np.full((10, 10), np.nan, np.float32)  # no finite pixel: position kept
    np.testing.assert_array_equal(peaks.refine_com(nan, xy, backend=com_backend), xy)
    one_row = np.array([[0, 1, 5, 1, 0]], np.float32)
    np.testing.assert_allclose(peaks.refine_com(one_row, [[1.0, 0.0]], backend=com_backend),
                               [[2.0, 0.0]])


def test_refine_com_recovers_subpixel_centres(com_backend, rng):
    centres = grid_centres(rng, (96, 128), spacing=16)
    img = spots((96, 128), centres, sigma=1.0)
    got = peaks.refine_com(img, np.round(centres), radius=4, iterations=3, backend=com_backend)
    assert np.abs(got - centres).max() < 0.05


# ------------------------------------------------------------------ Gaussian fit
def test_refine_gaussian_parity(gauss_backend, rng):
    centres = grid_centres(rng, (80, 96), spacing=13)
    img = spots((80, 96), centres, sigma=1.3, noise=2.0, rng=rng)
    start = np.round(centres) + rng.uniform(-0.3, 0.3, centres.shape)
    ref, ref_ok = _refine_gaussian_numpy_ref(img, start, 4, 1.5, 50)
    got, ok = _gauss_kernel.impls[_backend.Backend(gauss_backend)](img, start, 4, 1.5, 50)
    assert ok.dtype == bool and got.shape == (len(start), 7)
    np.testing.assert_array_equal(ok, ref_ok)
    assert ref_ok.all()
    np.testing.assert_allclose(got[:, :2], ref[:, :2], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[:, 2:], ref[:, 2:], rtol=1e-4, atol=1e-6)


def test_refine_gaussian_recovers_subpixel_centres(gauss_backend, rng):
    centres = grid_centres(rng, (96, 128), spacing=15)
    img = spots((96, 128), centres, amplitude=80.0, sigma=1.4, noise=0.5, rng=rng)
    fit = peaks.refine_gaussian(img, np.round(centres), radius=4, sigma=1.5, backend=gauss_backend)
    assert fit.converged.all()
    assert np.abs(fit.xy - centres).max() < 0.05
    np.testing.assert_allclose(fit.sigma, 1.4, atol=0.05)
    np.testing.assert_allclose(fit.amplitude, 80.0, rtol=0.05)
    np.testing.assert_allclose(fit.background, 10.0, atol=0.5)
    np.testing.assert_allclose(fit.intensity, 2 * np.pi * 80.0 * 1.4 ** 2, rtol=0.06)
    assert fit.backend == gauss_backend


def test_refine_gaussian_failures(gauss_backend, rng):
    img = spots((40, 40), [[20.2, 19.7]], sigma=1.2)
    img[0:5, 0:4] = np.nan  # window of (1, 1) at radius 3 keeps 5 finite pixels
    flat = np.full((12, 12), 3.0, np.float32)
    start = np.array([[20.0, 20.0], [1.0, 1.0], [0.0, 39.0]])
    ref, ref_ok = _refine_gaussian_numpy_ref(img, start, 3, 1.5, 50)
    got, ok = _gauss_kernel.impls[_backend.Backend(gauss_backend)](img, start, 3, 1.5, 50)
    np.testing.assert_array_equal(ok, ref_ok)
    assert ok[0] and not ok[1]  # the NaN corner leaves < 6 finite pixels around (1, 1)
    np.testing.assert_array_equal(got[1, :2], start[1])
    assert np.isnan(got[1, 2:]).all()
    np.testing.assert_allclose(got[ok, :2], ref[ok, :2], atol=1e-4)
    # A flat window cannot give A > 0 and σ in range, or converges to a flat fit: same verdict.
    ref_f, ref_fok = _refine_gaussian_numpy_ref(flat, np.array([[6.0, 6.0]]), 3, 1.5, 50)
    got_f, fok = _gauss_kernel.impls[_backend.Backend(gauss_backend)](flat, np.array([[6.0, 6.0]]), 3, 1.5, 50)
    np.testing.assert_array_equal(fok, ref_fok)
    tiny = np.ones((2, 2), np.float32)  # only 4 pixels
    fit = peaks.refine_gaussian(tiny, [[0.0, 0.0]], backend=gauss_backend)
    assert not fit.converged[0] and np.isnan(fit.sigma[0])
    np.testing.assert_array_equal(fit.xy, [[0.0, 0.0]])


def test_refine_inputs_not_mutated_and_nan_positions_rejected(com_backend, rng):
    img = spots((30, 30), [[15.3, 14.8]])
    xy = np.array([[15.0, 15.0]])
    img0, xy0 = img.copy(), xy.copy()
    peaks.refine_com(img, xy, backend=com_backend)
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(xy, xy0)
    with pytest.raises(ValueError, match="NaN"):
        peaks.refine_com(img, [[np.nan, 1.0]], backend=com_backend)
    with pytest.raises(ValueError, match="NaN"):
        peaks.refine_gaussian(img, [[np.nan, 1.0]])
    assert peaks.refine_com(img, np.zeros((0, 2)), backend=com_backend).shape == (0, 2)
    assert peaks.refine_gaussian(img, np.zeros((0, 2))).xy.shape == (0, 2)


# ------------------------------------------------------------------ dispatch
def test_cpp_explicitly_when_built(rng):
    if _backend._core() is None:
        pytest.skip("fastsac._core not built")
    img = spots((40, 40), [[20.3, 19.6]], sigma=1.2)
    cand = peaks.local_maxima(img, threshold=50, backend="cpp")
    assert cand.backend == "cpp" and cand.xy.tolist() == [[20, 20]]
    assert peaks.nms(cand.xy, cand.values, radius=3, backend="cpp").tolist() == [0]
    com = peaks.refine_com(img, cand.xy, radius=4, iterations=3, backend="cpp")
    assert np.abs(com - [[20.3, 19.6]]).max() < 0.05
    fit = peaks.refine_gaussian(img, cand.xy, backend="cpp")
    assert fit.backend == "cpp" and np.abs(fit.xy - [[20.3, 19.6]]).max() < 1e-3


@pytest.mark.parametrize("call", [
    lambda b: peaks.local_maxima(np.ones((3, 3)), backend=b),
    lambda b: peaks.nms(np.ones((2, 2)), np.ones(2), radius=1, backend=b),
    lambda b: peaks.refine_com(np.ones((3, 3)), [[1.0, 1.0]], backend=b),
    lambda b: peaks.refine_gaussian(np.ones((3, 3)), [[1.0, 1.0]], backend=b),
])
def test_unknown_backend_lists_valid_names(call):
    with pytest.raises(ValueError, match=r"backend must be one of .*'cpp'.*'numpy'"):
        call("fortran")
