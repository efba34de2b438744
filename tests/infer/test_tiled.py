"""Tiled inference equals whole-image inference; streamed detection equals
whole-image post-processing (ownership: no duplicates, no misses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from fastsac import infer
from fastsac.detectors import postprocess_scores

torch.manual_seed(0)


def _net(rf_layers=(5, 3, 3), ch=6, out=1, seed=0):
    """Random-weight conv net with zero padding; receptive-field radius = sum(k // 2)."""
    g = torch.Generator().manual_seed(seed)
    layers, cin = [], 1
    for i, k in enumerate(rf_layers):
        cout = out if i == len(rf_layers) - 1 else ch
        conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.4)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
        layers += [conv, torch.nn.Tanh()] if i < len(rf_layers) - 1 else [conv]
        cin = cout
    return torch.nn.Sequential(*layers).eval()


def _whole(net, img):
    with torch.inference_mode():
        return net(torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None])[0].numpy()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).random((213, 178), dtype=np.float32)


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("tile,batch", [(64, 1), (48, 5), ((50, 90), 3), (1000, 1)])
def test_tiled_equals_whole_conv_net(image, tile, batch):
    net = _net()
    ref = _whole(net, image)[0]
    res = infer.predict_tiled(image, net, tile=tile, halo=4, device="cpu", batch_size=batch)
    assert res.scores.shape == image.shape
    assert np.abs(res.scores - ref).max() <= 1e-4
    assert len(res.plan) == int(np.ceil(213 / res.plan.tile[0]) * np.ceil(178 / res.plan.tile[1]))


def test_multichannel_output(image):
    net = _net(out=3)
    res = infer.predict_tiled(image, net, tile=70, halo=4, device="cpu", batch_size=2)
    assert res.scores.shape == (3,) + image.shape
    assert np.abs(res.scores - _whole(net, image)).max() <= 1e-4


def test_cores_partition_the_image(image):
    plan = infer.plan_tiles(image.shape, tile=(64, 50), halo=7)
    cover = np.zeros(image.shape, int)
    for (y0, y1, x0, x1), (wy0, wy1, wx0, wx1) in zip(plan.cores, plan.windows):
        cover[y0:y1, x0:x1] += 1
        assert wy1 - wy0 == plan.window[0] and wx1 - wx0 == plan.window[1]
        assert wy0 <= max(y0 - 7, 0) and wy1 >= min(y1 + 7, image.shape[0])
        assert wx0 <= max(x0 - 7, 0) and wx1 >= min(x1 + 7, image.shape[1])
    assert (cover == 1).all()


# --------------------------------------------------------------------------- oracles (MONAI style)
class _PlusOne:
    receptive_field = 0

    def __call__(self, x):
        return x + 1


class _Box:
    def __init__(self, r):
        self.r = r
        self.receptive_field = r

    def __call__(self, x):
        k = 2 * self.r + 1
        return F.avg_pool2d(x, k, stride=1, padding=self.r, count_include_pad=True)


@pytest.mark.parametrize("pred,halo", [(_PlusOne(), 0), (_Box(1), 1), (_Box(3), 3), (_Box(3), 9)])
@pytest.mark.parametrize("shape", [(1, 1), (5, 130), (97, 101)])
def test_oracles(pred, halo, shape):
    img = np.random.default_rng(2).random(shape, dtype=np.float32)
    res = infer.predict_tiled(img, pred, tile=16, halo=halo, device="cpu", batch_size=3)
    expect = _whole(lambda x: pred(x), img)[0]
    if isinstance(pred, _PlusOne):
        np.testing.assert_array_equal(res.scores, img + 1)
    np.testing.assert_allclose(res.scores, expect, atol=1e-6)


def test_box_filter_equals_scipy():
    img = np.random.default_rng(3).random((60, 45))
    res = infer.predict_tiled(img, _Box(2), tile=13, halo=2, device="cpu")
    ref = ndi.uniform_filter(img, 5, mode="constant", cval=0.0)
    np.testing.assert_allclose(res.scores, ref, atol=1e-5)


# --------------------------------------------------------------------------- assumption checks
def test_halo_smaller_than_declared_receptive_field_raises(image):
    with pytest.raises(ValueError, match="receptive field"):
        infer.predict_tiled(image, _Box(3), tile=64, halo=2, device="cpu")


def test_halo_smaller_than_measured_receptive_field_raises(image):
    with pytest.raises(ValueError, match="measured receptive field.*4"):
        infer.predict_tiled(image, _net(), tile=64, halo=3, device="cpu")


def test_receptive_field_probe():
    assert infer.receptive_field(_net((5, 3, 3))) == 4
    assert infer.receptive_field(_net((7, 7, 7, 7))) == 12
    assert infer.receptive_field(_Box(5)) == 5


def test_halo_auto_measures(image):
    res = infer.predict_tiled(image, _net(), tile=64, halo="auto", device="cpu")
    assert res.plan.halo == 4
    assert np.abs(res.scores - _whole(_net(), image)[0]).max() <= 1e-4


def test_valid_convolution_net_is_rejected_then_wrapped(image):
    valid = torch.nn.Conv2d(1, 1, 5)  # shrinks by 4
    with pytest.raises(ValueError, match="PadToSame"):
        infer.predict_tiled(image, valid, tile=64, halo=2, device="cpu", check_halo=False)
    wrapped = infer.PadToSame(valid, 2, mode="constant")
    res = infer.predict_tiled(image, wrapped, tile=64, halo=2, device="cpu")
    assert np.abs(res.scores - _whole(wrapped, image)[0]).max() <= 1e-5


def test_bad_arguments(image):
    with pytest.raises(TypeError, match="halo is required"):
        infer.predict_tiled(image, _PlusOne(), halo=None, device="cpu")
    with pytest.raises(ValueError, match="device"):
        infer.predict_tiled(image, _PlusOne(), halo=0, device="tpu")
    with pytest.raises(ValueError, match="2-D"):
        infer.predict_tiled(np.zeros((3, 4, 5)), _PlusOne(), halo=0, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        infer.predict_tiled(image, _PlusOne(), halo=0, batch_size=0, device="cpu")


def test_input_unchanged_and_out_param(image, tmp_path):
    before = image.copy()
    out = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32,
                                    shape=image.shape)
    res = infer.predict_tiled(image, _net(), tile=80, halo=4, device="cpu", out=out)
    assert res.scores is out
    np.testing.assert_array_equal(image, before)
    assert np.abs(np.asarray(out) - _whole(_net(), image)[0]).max() <= 1e-4


def test_auto_tile_and_batch(image):
    res = infer.predict_tiled(image, _net(), halo=4, device="cpu")
    assert 1 <= res.batch_size <= 2 and res.plan.tile[0] >= 32


# --------------------------------------------------------------------------- lazy sources
class _CountingSource(infer.ArraySource):
    def __init__(self, a):
        super().__init__(a)
        self.max_read = 0

    def read(self, y0, y1, x0, x1):
        self.max_read = max(self.max_read, (y1 - y0) * (x1 - x0))
        return super().read(y0, y1, x0, x1)


def test_sources_stream_by_window(image, tmp_path):
    from fastsac.io import write_tiff

    ref = infer.predict_tiled(image, _net(), tile=64, halo=4, device="cpu").scores
    counting = _CountingSource(image)
    r = infer.predict_tiled(counting, _net(), tile=64, halo=4, device="cpu")
    assert counting.max_read == 72 * 72  # one window at a time, never the image
    np.testing.assert_array_equal(r.scores, ref)
    np.save(tmp_path / "a.npy", image)
    write_tiff(tmp_path / "big.tif", image, pixel_size_nm=0.03, bigtiff=True, tile=(256, 256))
    sources = [np.load(tmp_path / "a.npy", mmap_mode="r"), tmp_path / "big.tif"]
    tifffile = pytest.importorskip("tifffile")
    try:
        import zarr
        sources.append(tifffile.imread(tmp_path / "big.tif", aszarr=True))
        sources.append(zarr.zeros(image.shape, chunks=(50, 50), dtype="f4"))
        sources[-1][:] = image
    except ImportError:
        pass
    for src in sources:
        r = infer.predict_tiled(src, _net(), tile=112, halo=4, device="cpu", batch_size=2)
        np.testing.assert_array_equal(r.scores, ref)


def test_missing_file_is_input_error(tmp_path):
    from fastsac.errors import FastsacInputError

    with pytest.raises(FastsacInputError, match="not found"):
        infer.predict_tiled(tmp_path / "nope.tif", _PlusOne(), halo=0, device="cpu")


# --------------------------------------------------------------------------- detection
def _atoms_image(rng, shape=(300, 260), n=90, sigma=1.4):
    """Gaussian spots on a noisy, sloped background; pairs straddle tile borders."""
    h, w = shape
    pos = list(zip(rng.uniform(2, w - 3, n), rng.uniform(2, h - 3, n)))
    for b in (64, 128, 192):  # close pairs across the core borders of tile=64
        pos += [(b - 0.6, 40.3), (b + 1.1, 41.0), (100.2, b - 1.2), (101.0, b + 0.9)]
    yy, xx = np.mgrid[0:h, 0:w]
    img = rng.normal(0, 0.08, shape) + 0.002 * xx
    for x, y in pos:
        img += rng.uniform(0.6, 1.2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img.astype(np.float32)


class _MatchedFilter(torch.nn.Module):
    """Fixed Gaussian matched filter (radius 4) followed by a random 3×3 conv mix."""

    receptive_field = 5

    def __init__(self):
        super().__init__()
        r = torch.arange(-4, 5, dtype=torch.float32)
        g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 1.4**2))
        self.f = torch.nn.Conv2d(1, 2, 9, padding=4, bias=False)
        self.m = torch.nn.Conv2d(2, 1, 3, padding=1)
        with torch.no_grad():
            self.f.weight[0, 0] = g / g.sum()
            self.f.weight[1, 0] = torch.randn(9, 9, generator=torch.Generator().manual_seed(5)) * 1e-3
            self.m.weight.zero_()
            self.m.weight[0, 0, 1, 1] = 8.0
            self.m.weight[0, 1] = 0.1
            self.m.bias.fill_(0.01)

    def forward(self, x):
        return self.m(self.f(x))


def _pre(w):
    return (w - ndi.uniform_filter(w, 7, mode="reflect")).astype(np.float32)


@pytest.mark.parametrize("refine", ["gaussian", "com", "none"])
def test_detect_tiled_equals_whole_image_postprocess(refine):
    rng = np.random.default_rng(11)
    img = _atoms_image(rng)
    net = _MatchedFilter().eval()
    kw = dict(threshold=1.2, min_distance_px=4.0, refine=refine, fit_radius_px=4,
              sigma_px=1.4, exclude_border_px=2)
    score = _whole(net, _pre(img))[0]
    ref = postprocess_scores(score, img, backend="numpy", **kw)
    halo = infer.required_halo(receptive_field=5, preprocess_radius=3,
                               refine_radius=2 * 2 + 4 + 2)
    got = infer.detect_tiled(img, net, preprocess=_pre, tile=64, halo=halo, device="cpu",
                             batch_size=3, peaks_backend="numpy", **kw)
    assert 60 < len(ref["xy"]) and got.n_candidates >= len(got)
    # Same points in the same order with the same scores; refined values agree to
    # rounding (the tiles refine in window coordinates, then add the window origin).
    np.testing.assert_array_equal(np.round(got.xy - ref["xy"], 9), 0)
    np.testing.assert_array_equal(got.score, ref["score"])
    for k in ("amplitude", "sigma_px", "intensity"):
        np.testing.assert_allclose(getattr(got, k), ref[k], rtol=1e-9, equal_nan=True)
    # Ownership: every integer maximum appears once.
    keys = {tuple(p) for p in np.round(got.xy).astype(int)}
    assert len(got) == len(ref["xy"])
    assert len(keys) >= len(got) - 2  # refined positions may round together; maxima cannot


def test_detect_tiled_cross_tile_nms():
    """Two maxima 2 px apart on either side of a core border: the weaker one must
    be suppressed by the stronger one owned by the neighbouring tile."""
    img = np.zeros((64, 64), np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    for x, a in ((31.0, 0.8), (33.0, 1.0)):  # core border at x = 32 (tile 32)
        img += a * np.exp(-((xx - x) ** 2 + (yy - 20) ** 2) / 0.5)
    got = infer.detect_tiled(img, _PlusOne(), threshold=1.3, min_distance_px=3.0, refine="none",
                             tile=32, halo=3, device="cpu", peaks_backend="numpy")
    ref = postprocess_scores(img + 1, img, threshold=1.3, min_distance_px=3.0, refine="none")
    assert got.n_candidates == 2
    np.testing.assert_array_equal(got.xy, [[33.0, 20.0]])
    np.testing.assert_array_equal(got.xy, ref["xy"])


def test_detect_tiled_halo_too_small_raises():
    img = np.zeros((40, 40), np.float32)
    with pytest.raises(ValueError, match="refinement reach"):
        infer.detect_tiled(img, _PlusOne(), threshold=0.5, min_distance_px=3, tile=16, halo=3,
                           device="cpu")


def test_detect_tiled_bf16_autocast_matches_fp32():
    rng = np.random.default_rng(4)
    img = _atoms_image(rng, (200, 180), 50)
    net = _MatchedFilter().eval()
    kw = dict(preprocess=_pre, threshold=1.2, min_distance_px=4.0, tile=64, halo=10,
              device="cpu", peaks_backend="numpy")
    a = infer.detect_tiled(img, net, **kw)
    b = infer.detect_tiled(img, net, dtype="bf16", **kw)
    # bf16 scores shift by ~1 %; the refined positions come from the raw image.
    from fastsac.evaluate import match_points

    m = match_points(a.xy, b.xy, tolerance_px=0.5)
    assert len(a) > 40 and abs(len(a) - len(b)) <= 2
    assert m.tp >= len(a) - 2
    d = np.hypot(*(a.xy[:, None, :] - b.xy[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert np.mean(d < 0.05) >= 0.95


def test_detect_tiled_streams_bigtiff(tmp_path):
    from fastsac.io import write_tiff

    rng = np.random.default_rng(8)
    img = _atoms_image(rng, (280, 300), 60)
    write_tiff(tmp_path / "m.tif", img, pixel_size_nm=0.03, bigtiff=True, tile=(256, 256))
    net = _MatchedFilter().eval()
    kw = dict(threshold=1.2, min_distance_px=4.0, tile=96, halo=10, device="cpu",
              peaks_backend="numpy", refine="com")
    a = infer.detect_tiled(img, net, **kw)
    b = infer.detect_tiled(tmp_path / "m.tif", net, **kw)
    np.testing.assert_array_equal(a.xy, b.xy)
    assert len(a) > 40


# --------------------------------------------------------------------------- padding and alignment
class _MiniUNet(torch.nn.Module):
    """Downsamples by 4 (needs aligned windows); receptive field < 16 px."""

    pad_multiple = 4
    receptive_field = 16

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(9)
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.c = torch.nn.Conv2d(4, 1, 3, padding=1)
        for m in (self.a, self.b, self.c):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)

    def forward(self, x):
        e = torch.relu(self.a(x))
        m = torch.relu(self.b(F.max_pool2d(F.max_pool2d(e, 2), 2)))
        return self.c(F.interpolate(m, scale_factor=4, mode="nearest") + e)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_pad_mode_and_alignment_equal_padded_whole_image(mode):
    img = np.random.default_rng(5).random((150, 131), dtype=np.float32)
    net = _MiniUNet().eval()
    h, w, p = 150, 131, 16
    ph, pw = p + (-(h + 2 * p)) % 4, p + (-(w + 2 * p)) % 4
    padded = F.pad(torch.from_numpy(img)[None, None], (p, pw, p, ph), mode=mode)
    with torch.inference_mode():
        ref = net(padded)[0, 0, p:p + h, p:p + w].numpy()
    res = infer.predict_tiled(img, net, tile=40, halo=16, device="cpu", pad_mode=mode,
                              batch_size=2)
    assert ((res.plan.windows[:, [0, 2]] + p) % 4 == 0).all() and res.plan.window[0] % 4 == 0
    assert np.abs(res.scores - ref).max() <= 1e-5
    with pytest.raises(ValueError, match="multiples of 4"):
        infer.predict_tiled(img, net, tile=40, halo=16, device="cpu")


def test_detect_tiled_with_padding_equals_whole_image():
    rng = np.random.default_rng(12)
    img = _atoms_image(rng, (130, 150), 40)
    net = _MatchedFilter().eval()
    p = 12
    padded = np.pad(img, p, mode="reflect")
    score = _whole(net, padded)[0][p:-p, p:-p]
    kw = dict(threshold=1.2, min_distance_px=4.0, refine="gaussian", fit_radius_px=4, sigma_px=1.4)
    ref = postprocess_scores(score, img, backend="numpy", **kw)
    got = infer.detect_tiled(img, net, tile=48, halo=p, device="cpu", pad_mode="reflect",
                             peaks_backend="numpy", **kw)
    assert len(ref["xy"]) > 20
    np.testing.assert_array_equal(np.round(got.xy - ref["xy"], 9), 0)
    np.testing.assert_array_equal(got.score, ref["score"])


def test_receptive_field_declared_as_halo_and_probe_respects_multiple():
    class Declared:
        halo = 22  # fastsac U-Net convention

        def __call__(self, x):
            return x

    assert infer.receptive_field(Declared()) == 22

    class NeedsMultipleOf4(_MiniUNet):
        receptive_field = None

        def forward(self, x):
            if x.shape[-1] % 4 or x.shape[-2] % 4:
                raise ValueError("sides must be multiples of 4")
            return super().forward(x)

    r = infer.receptive_field(NeedsMultipleOf4().eval())
    assert 4 <= r <= 16


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_16bit_staging_equals_float32(monkeypatch, dtype):
    """16-bit frames cross to the device as 16 bits and are widened there; the
    result must be what float32 staging gives (values above 32767 included)."""
    from fastsac import infer

    rng = np.random.default_rng(11)
    lo, hi = (0, 65535) if dtype == np.uint16 else (-32768, 32767)
    img = rng.integers(lo, hi, (150, 170), endpoint=True).astype(dtype)
    net = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    torch.nn.init.constant_(net.weight, 1.0 / 9)
    ref = infer.predict_tiled(img, net, tile=64, halo=2, device="cpu").scores
    monkeypatch.setattr(infer, "_U16_STAGING_ON_CPU", True)
    got = infer.predict_tiled(img, net, tile=64, halo=2, device="cpu").scores
    np.testing.assert_array_equal(got, ref)
    whole = net(torch.as_tensor(img.astype(np.float32))[None, None])[0, 0].detach().numpy()
    np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-2)
    # detection refines on the raw windows: those are widened the same way
    kw = dict(threshold=float(np.percentile(ref, 99)), min_distance_px=3, refine="com", halo=12,
              tile=64, device="cpu")
    got_det = infer.detect_tiled(img, net, **kw)
    monkeypatch.setattr(infer, "_U16_STAGING_ON_CPU", False)
    ref_det = infer.detect_tiled(img, net, **kw)
    assert len(ref_det) > 20
    np.testing.assert_array_equal(got_det.xy, ref_det.xy)
