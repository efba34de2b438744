"""The extended-box cascade: C++ and torch equal the numpy spec bit for bit, its
variance is σ², its support is finite (tiles equal the whole image), and it
behaves like the Gaussian it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fastsac import boxfilter as bf
from fastsac.boxfilter import _box_kernel, box_gaussian_filter, box_plan, box_reach


@pytest.fixture(params=[b for b in ("numpy", "cpp")])
def backend(request):
    if request.param not in _box_kernel.available():
        pytest.skip(f"{request.param} not available")
    return request.param


def images(rng):
    yield "random", rng.random((61, 47)).astype(np.float32)
    yield "signed", rng.normal(0, 3, (40, 70)).astype(np.float32)
    yield "1x1", np.array([[2.5]], np.float32)
    yield "row", rng.random((1, 90)).astype(np.float32)
    yield "column", rng.random((90, 1)).astype(np.float32)
    yield "narrower-than-kernel", rng.random((3, 5)).astype(np.float32)
    yield "constant", np.full((33, 33), 7.0, np.float32)
    yield "impulse", np.pad(np.ones((1, 1), np.float32), 40)
    yield "dynamic-range", (rng.random((50, 50)) ** 20 * 1e6).astype(np.float32)
    yield "zeros", np.zeros((20, 30), np.float32)


@pytest.mark.parametrize("sigma", [0.5, 1.5, 4.0, 12.0, 32.0])
def test_cpp_equals_spec_bit_for_bit(rng, sigma):
    if "cpp" not in _box_kernel.available():
        pytest.skip("C++ core not built")
    for name, x in images(rng):
        ref = box_gaussian_filter(x, sigma, backend="numpy")
        got = box_gaussian_filter(x, sigma, backend="cpp")
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_array_equal(got, ref, err_msg=f"{name} sigma {sigma}")


def test_torch_equals_spec_bit_for_bit(rng):
    torch = pytest.importorskip("torch")
    from fastsac.models.classical import TorchBoxGaussian

    for sigma in (1.5, 9.0, 32.0):
        net = TorchBoxGaussian(sigma)
        assert net.r == box_reach(sigma)
        for name, x in images(rng):
            scale = float(np.abs(x).max())
            ref = box_gaussian_filter(x, sigma, scale=scale, backend="numpy")
            got = net(torch.as_tensor(x)[None, None], scale)[0, 0].numpy()
            np.testing.assert_array_equal(got, ref, err_msg=f"{name} sigma {sigma}")


def test_plan_matches_variance_and_reach():
    for sigma in (0.8, 2.0, 6.0, 16.0, 32.0, 64.0, 150.0):
        p = box_plan(sigma)
        assert p.variance == pytest.approx(sigma ** 2, rel=2e-3 if sigma >= 2 else 1e-2)  # a/256
        assert p.reach == 3 * (p.r + 1) if p.a else 3 * p.r
        assert p.reach < 4 * sigma + 1          # narrower than the truncated Gaussian
    p = box_plan(32.0)
    assert (p.r, p.reach) == (31, 96)
    # the measured second moment of the impulse response is σ² per axis
    img = np.zeros((401, 401), np.float32)
    img[200, 200] = 1.0
    out = box_gaussian_filter(img, 32.0, scale=1.0).astype(np.float64)
    y = np.arange(401) - 200.0
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    assert (out.sum(1) * y ** 2).sum() == pytest.approx(1024.0, rel=2e-3)
    assert (out.sum(0) * y ** 2).sum() == pytest.approx(1024.0, rel=2e-3)
    # finite support: nothing beyond the reach, something at it
    nz = np.flatnonzero(out[200] > 0)
    assert nz.min() == 200 - 96 and nz.max() == 200 + 96


def test_close_to_the_gaussian(rng):
    x = ndi.gaussian_filter(rng.random((256, 256)), 3).astype(np.float32)
    g = ndi.gaussian_filter(x, 12.0, mode="reflect")
    b = box_gaussian_filter(x, 12.0)
    assert np.abs(g - b).max() < 0.02 * (x.max() - x.min())


def test_tiles_equal_the_whole_image(rng, backend):
    x = rng.random((300, 260)).astype(np.float32) ** 3
    sigma, scale = 9.0, float(x.max())
    whole = box_gaussian_filter(x, sigma, scale=scale, backend=backend)
    h = box_reach(sigma)
    for (y0, y1, x0, x1) in [(0, 100, 0, 90), (100, 220, 90, 200), (220, 300, 200, 260), (37, 38, 41, 42)]:
        wy0, wy1, wx0, wx1 = max(y0 - h, 0), min(y1 + h, 300), max(x0 - h, 0), min(x1 + h, 260)
        tile = box_gaussian_filter(x[wy0:wy1, wx0:wx1], sigma, scale=scale, backend=backend)
        np.testing.assert_array_equal(tile[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0], whole[y0:y1, x0:x1])
    # one pixel less of halo is not enough in general
    y0, y1, x0, x1 = 100, 200, 100, 160
    tile = box_gaussian_filter(x[y0 - h + 1:y1 + h - 1, x0 - h + 1:x1 + h - 1], sigma, scale=scale,
                               backend=backend)
    assert not np.array_equal(tile[h - 1:h - 1 + 100, h - 1:h - 1 + 60], whole[y0:y1, x0:x1])


def test_input_checks_and_not_mutated(rng, backend):
    x = rng.random((20, 20)).astype(np.float32)
    before = x.copy()
    a = box_gaussian_filter(x, 2.0, backend=backend)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(box_gaussian_filter(x.astype(np.float64), 2.0, backend=backend), a)
    np.testing.assert_array_equal(box_gaussian_filter(np.asfortranarray(x), 2.0, backend=backend), a)
    np.testing.assert_array_equal(box_gaussian_filter((x * 1000).astype(np.uint16), 2.0, backend=backend),
                                  box_gaussian_filter((x * 1000).astype(np.uint16).astype(np.float32), 2.0,
                                                      backend="numpy"))
    with pytest.raises(ValueError, match="NaN"):
        box_gaussian_filter(np.full((4, 4), np.nan), 2.0, backend=backend)
    with pytest.raises(ValueError, match="sigma"):
        box_gaussian_filter(x, 0.0, backend=backend)
    with pytest.raises(ValueError, match="scale"):
        box_gaussian_filter(x, 2.0, scale=-1.0, backend=backend)
    with pytest.raises(ValueError, match="empty"):
        box_gaussian_filter(np.zeros((0, 5), np.float32), 2.0, backend=backend)
    # values beyond the given scale are clipped to it (the spec's fixed-point range)
    big = box_gaussian_filter(np.full((8, 8), 5.0, np.float32), 2.0, scale=1.0, backend=backend)
    np.testing.assert_allclose(big, 1.0)


def test_threads_give_the_same_result(rng):
    if "cpp" not in _box_kernel.available():
        pytest.skip("C++ core not built")
    from concurrent.futures import ThreadPoolExecutor

    xs = [rng.random((128, 96)).astype(np.float32) for _ in range(4)]
    refs = [box_gaussian_filter(x, 5.0, backend="numpy") for x in xs]
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda x: box_gaussian_filter(x, 5.0, backend="cpp"), xs))
    for o, r in zip(outs, refs):
        np.testing.assert_array_equal(o, r)


def test_scales_guard_zero_scale():
    qf, dq = bf.box_scales(0.0, box_plan(2.0))
    assert qf == 2.0 ** 30 and dq == 2.0 ** -30


def test_torch_tensor_scale_equals_float_scale(rng):
    torch = pytest.importorskip("torch")
    from fastsac.models.classical import TorchBoxGaussian

    x = rng.random((50, 40)).astype(np.float32) * 300
    net = TorchBoxGaussian(6.0)
    t = torch.as_tensor(x)[None, None]
    a = net(t, float(np.abs(x).max()))
    b = net(t, t.abs().amax().double())
    assert torch.equal(a, b)
    np.testing.assert_array_equal(a[0, 0].numpy(), box_gaussian_filter(x, 6.0, backend="numpy"))
    zero = torch.zeros_like(t)
    assert torch.equal(net(zero, zero.amax().double()), zero)


def test_fused_local_noise_equals_its_spec_and_the_unfused_chain(rng, backend):
    from fastsac.boxfilter import box_local_noise
    from fastsac.preprocess import local_noise

    for name, x in images(rng):
        r = (x - x.mean()).astype(np.float32)
        cap = np.float32(np.percentile(np.abs(r), 98)) if np.abs(r).max() > 0 else np.float32(0)
        floor = np.float32(1e-6)
        got = box_local_noise(r, 7.0, cap2=cap * cap, floor=floor, backend=backend)
        sq = np.minimum(r * r, cap * cap)
        var = box_gaussian_filter(sq, 7.0, scale=float(cap * cap), backend="numpy")
        np.testing.assert_array_equal(got, np.sqrt(np.maximum(var, floor)), err_msg=name)
    # local_noise(window="box"): the same whether the global RMS is given or computed
    r = rng.normal(0, 2, (120, 90)).astype(np.float32)
    a = local_noise(r, sigma_px=9.0, window="box", backend=backend)
    cap = np.float32(np.percentile(np.abs(r), 98))
    rms = float(np.sqrt(np.mean(np.minimum(r * r, cap * cap))))
    b = local_noise(r, sigma_px=9.0, window="box", cap=cap, global_rms=rms, backend=backend)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.isfinite(a).all() and (a > 0).all()
