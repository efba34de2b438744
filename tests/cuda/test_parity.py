"""CUDA kernels vs the numpy references (the specs).

Small inputs run everywhere (numba's simulator without a GPU); ``gpu``-marked
tests repeat them at realistic sizes on a real device.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastsac import peaks
from fastsac._backend import Backend
from fastsac.spatial import neighbors as nb


def _blobs(rng, shape, n, sigma=1.3, noise=0.05, amp=1.0):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = rng.normal(0.2, noise, shape)
    pos = np.column_stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)])
    for x, y in pos:
        img += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img.astype(np.float32), pos


# --------------------------------------------------------------------------- maxima
@pytest.mark.parametrize("radius,border", [(1, 0), (2, 3)])
def test_local_maxima_exact(cuda_ok, rng, radius, border):
    img = np.round(rng.random((14, 17)) * 6).astype(np.float32)  # plateaus and ties
    img[3, 4] = np.nan
    img[7, 9] = np.inf
    ref = peaks._local_maxima_numpy_ref(img, 2.0, radius, border)
    got = peaks._maxima_kernel.impls[Backend.CUDA](img, 2.0, radius, border)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert len(ref[0]) > 3


def test_local_maxima_public_backend(cuda_ok, rng):
    img, _ = _blobs(rng, (16, 16), 3)
    a = peaks.local_maxima(img, threshold=0.5, backend="cuda")
    b = peaks.local_maxima(img, threshold=0.5, backend="numpy")
    assert a.backend == "cuda"
    np.testing.assert_array_equal(a.xy, b.xy)


# --------------------------------------------------------------------------- NMS
@pytest.mark.parametrize("radius", [0.0, 1.5, 3.0, 7.0])
def test_nms_exact(cuda_ok, rng, radius):
    xy = rng.integers(0, 20, (40, 2)).astype(np.float64)
    xy[5] = xy[6]  # coincident points
    scores = np.round(rng.random(40), 1)  # many ties: lower index first
    scores[3] = np.nan
    ref = peaks._nms_numpy_ref(xy, scores, radius)
    got = peaks.nms(xy, scores, radius=radius, backend="cuda")
    np.testing.assert_array_equal(got, ref)
    assert 3 not in got


def test_nms_long_chain(cuda_ok):
    # Points 1 px apart with decreasing scores: greedy keeps every other one.
    xy = np.column_stack([np.arange(12.0), np.zeros(12)])
    s = np.linspace(1, 0.1, 12)
    got = peaks.nms(xy, s, radius=1.0, backend="cuda")
    np.testing.assert_array_equal(got, np.arange(0, 12, 2))


def test_nms_empty_and_single(cuda_ok):
    assert len(peaks.nms(np.zeros((0, 2)), np.zeros(0), radius=2, backend="cuda")) == 0
    np.testing.assert_array_equal(peaks.nms([[1.0, 2.0]], [0.3], radius=2, backend="cuda"), [0])


# --------------------------------------------------------------------------- refinement
def _refine_points(rng, shape, n):
    img, pos = _blobs(rng, shape, n)
    start = np.round(pos) + rng.uniform(-0.4, 0.4, pos.shape)
    start[0] = (0.0, 0.0)  # corner: clipped windows
    return img, start


def test_refine_com_parity(cuda_ok, rng):
    img, start = _refine_points(rng, (20, 22), 5)
    img[10, 10] = np.nan
    ref = peaks._refine_com_numpy_ref(img, start, 3, 2)
    got = peaks.refine_com(img, start, radius=3, iterations=2, backend="cuda")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    assert np.abs(got - start).max() > 0.05  # it did move the points


def test_refine_com_input_unchanged(cuda_ok, rng):
    img, start = _refine_points(rng, (12, 12), 2)
    before = start.copy()
    peaks.refine_com(img, start, radius=2, iterations=1, backend="cuda")
    np.testing.assert_array_equal(start, before)


def test_fit_gaussian_parity(cuda_ok, rng):
    """Status, parameters and errors as the reference, on windows clipped at
    the corner, with NaN, on a flat image, on touching spots and on noise."""
    img, start = _refine_points(rng, (20, 20), 4)
    img[3, 12] = np.nan
    img[:, 17] += 60 * np.exp(-((np.arange(20) - 10.0) ** 2) / 4)  # a ridge next to a spot
    noise = rng.normal(5, 1, (20, 20)).astype(np.float32)
    flat = np.full((20, 20), 2.0, np.float32)
    line = np.full((12, 12), np.nan, np.float32)  # collinear pixels: no plane there
    line[6, :] = 5.0 + 20 * np.exp(-((np.arange(12) - 6.2) ** 2) / 4.5)
    cases = ((img, start), (noise, rng.uniform(0, 19, (6, 2))), (flat, start[:2]),
             (line, np.array([[6.0, 6.0]])))
    for (im, pts), background in itertools.product(cases, peaks.BACKGROUND_MODELS):
        ref, ref_st = peaks._fit_gaussian_numpy_ref(im, pts, 3, 1.5, 0.75, 3.75, 2.0, 30,
                                                    background == "plane")
        fit = peaks.refine_gaussian(im, pts, radius=3, sigma=1.5, max_shift=2.0, max_iter=30,
                                    background=background, backend="cuda")
        np.testing.assert_array_equal(fit.status, ref_st)
        np.testing.assert_allclose(fit.xy, ref[:, :2], rtol=0, atol=1e-6)
        got = np.column_stack([fit.amplitude, fit.sigma, fit.background, fit.intensity,
                               fit.residual, fit.xy_err, fit.amplitude_err, fit.sigma_err,
                               fit.background_err, fit.intensity_err])
        np.testing.assert_allclose(got, ref[:, 2:], rtol=1e-6, atol=1e-12, equal_nan=True)
        if im is flat:
            assert (fit.status == peaks.FitStatus.CENTROID).all()  # flat: no spot


# --------------------------------------------------------------------------- spatial
def test_nearest_neighbors_parity(cuda_ok, rng):
    xy = rng.uniform(0, 30, (40, 2))
    xy[7] = xy[3]  # a coincident pair: distance 0
    xy[20] = xy[3]  # a third one: ties go to the lower index
    ref_d, ref_i = nb._nearest_neighbors_numpy_ref(xy)
    res = nb.nearest_neighbors(xy, backend="cuda")
    assert res.backend == "cuda"
    np.testing.assert_array_equal(res.index, ref_i)
    np.testing.assert_allclose(res.distance, ref_d, rtol=1e-12, atol=0)


def test_nearest_neighbors_small(cuda_ok):
    r = nb.nearest_neighbors(np.array([[1.0, 1.0]]), backend="cuda")
    assert r.index.tolist() == [-1] and np.isinf(r.distance[0])
    r = nb.nearest_neighbors(np.array([[0.0, 0.0], [3.0, 4.0]]), backend="cuda")
    assert r.index.tolist() == [1, 0] and r.distance.tolist() == [5.0, 5.0]


@pytest.mark.parametrize("cutoff", [0.0, 2.0, 4.5])
def test_clusters_parity(cuda_ok, rng, cutoff):
    xy = rng.uniform(0, 25, (45, 2))
    xy[10] = xy[2]
    ref_l, ref_s = nb._clusters_numpy_ref(xy, cutoff)
    res = nb.clusters(xy, cutoff=cutoff, backend="cuda")
    np.testing.assert_array_equal(res.labels, ref_l)
    np.testing.assert_array_equal(res.sizes, ref_s)


def test_clusters_chain_crosses_cells(cuda_ok):
    # A long chain 0.9 apart with cutoff 1: one cluster however the grid cuts it.
    xy = np.column_stack([np.arange(20) * 0.9, np.zeros(20)])[::-1].copy()
    res = nb.clusters(xy, cutoff=1.0, backend="cuda")
    assert res.n_clusters == 1 and res.sizes.tolist() == [20] * 20


# --------------------------------------------------------------------------- dispatch
def test_dispatch_device_data_picks_cuda(cuda_ok):
    from numba import cuda

    from fastsac._backend import is_device_array

    d = cuda.to_device(np.zeros((3, 2)))
    if is_device_array(d):  # the simulator's arrays carry no __cuda_array_interface__
        assert nb._nn_kernel.resolve("auto", data=d) is Backend.CUDA
    assert nb._nn_kernel.resolve("auto", data=np.zeros((3, 2))) is not Backend.CUDA
    assert peaks._nms_kernel.resolve("cuda") is Backend.CUDA
    dist, idx = nb._nn_kernel.impls[nb._nn_kernel.resolve("cuda")](d)  # device input
    np.testing.assert_array_equal(idx, [1, 0, 0])


def test_detect_batch_matches_host(cuda_ok, rng):
    """GPU peak extraction (max-pool maxima + CUDA refinement) vs host peaks."""
    import torch

    from fastsac._cuda import peaks as gp
    from fastsac.infer import _refine_host

    img, _ = _blobs(rng, (24, 26), 4, noise=0.02)
    score = img.copy()
    lims = [(2, 22, 3, 24)]
    tab = gp.detect_batch(torch.from_numpy(score)[None], torch.from_numpy(img)[None], lims,
                          threshold=0.6, min_distance_px=2.0, refine="gaussian",
                          fit_radius_px=3, sigma_px=1.3, com_radius=2,
                          sigma_bounds=peaks.default_sigma_bounds(1.3),
                          max_shift=peaks.fit_max_shift(2.0, 1.3),
                          n_fit_columns=len(peaks.FIT_COLUMNS), no_fit_status=int(peaks.FitStatus.NONE))
    tab = [t.cpu().numpy() for t in tab]
    assert (tab[0] == 0).all()  # window index
    tab = tab[1:]
    cand = peaks.local_maxima(score, threshold=0.6, backend="numpy")
    own = ((cand.xy[:, 1] >= 2) & (cand.xy[:, 1] < 22) & (cand.xy[:, 0] >= 3)
           & (cand.xy[:, 0] < 24))
    xy0 = cand.xy[own].astype(float)
    xy, cols = _refine_host(img, xy0, min_distance_px=2.0, refine="gaussian", fit_radius_px=3,
                            sigma_px=1.3, backend="numpy")
    assert len(xy0) >= 2
    order = np.lexsort((tab[0][:, 0], tab[0][:, 1]))
    np.testing.assert_array_equal(tab[0][order], xy0)
    np.testing.assert_array_equal(tab[1][order], cand.values[own])
    np.testing.assert_allclose(tab[2][order], xy, atol=1e-6)
    np.testing.assert_allclose(tab[6][order], cols[3], rtol=1e-6, equal_nan=True)


# --------------------------------------------------------------------------- real GPU, bigger
@pytest.mark.gpu
def test_gpu_large_parity(real_gpu):
    rng = np.random.default_rng(7)
    img, _ = _blobs(rng, (384, 384), 300)
    ref = peaks._local_maxima_numpy_ref(img, 0.5, 1, 0)
    got = peaks.local_maxima(img, threshold=0.5, backend="cuda")
    np.testing.assert_array_equal(got.xy, ref[0])
    keep_ref = peaks._nms_numpy_ref(ref[0].astype(float), ref[1].astype(float), 4.0)
    keep = peaks.nms(ref[0], ref[1], radius=4.0, backend="cuda")
    np.testing.assert_array_equal(keep, keep_ref)
    xy0 = ref[0][keep_ref].astype(float)
    np.testing.assert_allclose(peaks.refine_com(img, xy0, radius=3, backend="cuda"),
                               peaks._refine_com_numpy_ref(img, xy0, 3, 2), atol=1e-9)
    p_ref, st_ref = peaks._fit_gaussian_numpy_ref(img, xy0, 4, 1.3, 0.65, 3.25, np.inf, 50)
    fit = peaks.refine_gaussian(img, xy0, radius=4, sigma=1.3, backend="cuda")
    assert (fit.status == st_ref).mean() > 0.99
    both = fit.status == st_ref
    np.testing.assert_allclose(fit.xy[both], p_ref[both, :2], atol=1e-5)
    pts = rng.uniform(0, 2000, (20000, 2))
    d_ref, i_ref = nb._nearest_neighbors_numpy_ref(pts)
    r = nb.nearest_neighbors(pts, backend="cuda")
    np.testing.assert_array_equal(r.index, i_ref)
    np.testing.assert_allclose(r.distance, d_ref, rtol=1e-12)
    l_ref, s_ref = nb._clusters_numpy_ref(pts, 12.0)
    c = nb.clusters(pts, cutoff=12.0, backend="cuda")
    np.testing.assert_array_equal(c.labels, l_ref)
    np.testing.assert_array_equal(c.sizes, s_ref)


@pytest.mark.gpu
def test_gpu_torch_tensors(real_gpu):
    import torch

    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 100, (500, 2))
    t = torch.as_tensor(pts, device="cuda")
    assert nb._nn_kernel.resolve("auto", data=t) is Backend.CUDA
    d, i = nb._nn_kernel(t)
    assert isinstance(i, torch.Tensor) and i.device.type == "cuda"  # stays on the device
    np.testing.assert_array_equal(i.cpu().numpy(), nb._nearest_neighbors_numpy_ref(pts)[1])
    img, _ = _blobs(rng, (64, 64), 10)
    xy = torch.as_tensor(np.round(rng.uniform(5, 58, (10, 2))), device="cuda")
    before = xy.clone()
    out = peaks._com_kernel.impls[Backend.CUDA](torch.as_tensor(img, device="cuda"), xy, 3, 2)
    assert isinstance(out, torch.Tensor) and out.device.type == "cuda"
    assert torch.equal(xy, before)
    np.testing.assert_allclose(out.cpu().numpy(),
                               peaks._refine_com_numpy_ref(img, before.cpu().numpy(), 3, 2),
                               atol=1e-9)


@pytest.mark.gpu
def test_gpu_detect_tiled_equals_whole_image(real_gpu):
    """The device pipeline (max-pool maxima, CUDA refinement, device NMS) vs the
    whole-image numpy post-processing, with an exact predictor (x + 1)."""
    from fastsac import infer
    from fastsac.detectors import postprocess_scores

    class PlusOne:
        receptive_field = 0

        def __call__(self, x):
            return x + 1

    rng = np.random.default_rng(21)
    img, _ = _blobs(rng, (700, 650), 600, noise=0.03)
    kw = dict(threshold=1.6, min_distance_px=3.0, refine="gaussian", fit_radius_px=3,
              sigma_px=1.3)
    ref = postprocess_scores(img + 1, img, backend="numpy", **kw)
    got = infer.detect_tiled(img, PlusOne(), tile=128, halo=12, device="cuda", **kw)
    assert got.peaks_backend == "cuda" and len(ref["xy"]) > 300
    np.testing.assert_array_equal(got.score, ref["score"])
    np.testing.assert_allclose(got.xy, ref["xy"], atol=1e-5)
    np.testing.assert_allclose(got.intensity, ref["intensity"], rtol=1e-5, equal_nan=True)
