"""The classical detector's score map as torch ops (the GPU path) equals the
C++/numpy one, and tiling it through the engine changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastsac_testdata import PTNC, spots

from fastsac import infer, read
from fastsac.detectors import ClassicalDetector
from fastsac.models.classical import ClassicalScoreNet, calibrate

PX = 0.0293


@pytest.fixture(scope="module")
def real():
    path = PTNC / "images" / "021.tif"   # has vacuum, thick carbon and atoms
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set FASTSAC_SHARED)")
    m = read(path)
    return m.data, m.pixel_size_nm


def _map(net, img):
    with torch.inference_mode():
        return net(torch.as_tensor(np.asarray(img, np.float32))[None, None])[0, 0].numpy()


@pytest.mark.parametrize("method", ["conv", "fft"])
@pytest.mark.parametrize("shape", [(2, 1, 90, 70), (1, 1, 7, 9), (1, 1, 1, 30)])
def test_torch_gaussian_equals_scipy(method, shape, monkeypatch):
    from scipy import ndimage as ndi

    from fastsac.models.classical import TorchGaussian

    monkeypatch.setattr(TorchGaussian, "method", method)
    x = np.random.default_rng(2).gamma(2.0, 50.0, shape).astype(np.float32)
    x[0, 0, 0, 0] = 5e3  # a bright corner pixel: borders are reflected, not zero
    for sigma in (0.4, 2.0, 6.0, 32.0):   # radius 2 … 128, wider than these images
        got = TorchGaussian(sigma)(torch.as_tensor(x)).numpy()
        ref = np.stack([ndi.gaussian_filter(x[i, 0], sigma, mode="reflect")
                        for i in range(shape[0])])[:, None]
        np.testing.assert_allclose(got, ref, atol=2e-6 * x.max(), err_msg=f"σ={sigma}")


@pytest.mark.parametrize("shape", [(2, 1, 90, 70), (1, 1, 7, 9)])
def test_dog_by_one_2d_fft_equals_scipy(shape, monkeypatch):
    from scipy import ndimage as ndi

    from fastsac.models.classical import DogNet, TorchGaussian

    x = np.random.default_rng(4).gamma(2.0, 50.0, shape).astype(np.float32)
    net = DogNet(2.0, 6.0)
    monkeypatch.setattr(TorchGaussian, "method", "fft")   # what CUDA uses
    got = net(torch.as_tensor(x)).numpy()
    ref = np.stack([ndi.gaussian_filter(x[i, 0], 2.0) - ndi.gaussian_filter(x[i, 0], 6.0)
                    for i in range(shape[0])])[:, None]
    np.testing.assert_allclose(got, ref, atol=3e-6 * x.max())


def test_score_map_equals_the_cpu_detector(real):
    img, px = real
    det = ClassicalDetector()
    net = ClassicalScoreNet.from_detector(det, px).eval()
    info = calibrate(img, net, device="cpu")
    assert info["method"] == "exact"
    dog = det.dog(img, pixel_size_nm=px)
    assert info["cap"] == pytest.approx(float(np.percentile(np.abs(dog), 98)), rel=1e-5)
    got, ref = _map(net, img), det.score_map(img, pixel_size_nm=px)
    assert got.shape == ref.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, atol=2e-4 * np.abs(ref).max())
    # and the whole detection (maxima → NMS → Gaussian fit) is the same atoms
    a = det.detect(img, pixel_size_nm=px)
    b = det.detect_tiled(img, pixel_size_nm=px, device="cpu", tile=512)
    assert len(a) == len(b) > 10
    np.testing.assert_allclose(_sorted_rows(b.xy), _sorted_rows(a.xy), atol=1e-6)
    np.testing.assert_allclose(np.sort(b.score), np.sort(a.score), rtol=1e-4)


def test_tiles_equal_the_whole_frame(real):
    img, px = real
    det = ClassicalDetector()
    whole = det.detect_tiled(img, pixel_size_nm=px, device="cpu", tile=512)
    tiled = det.detect_tiled(img, pixel_size_nm=px, device="cpu", tile=160)
    assert len(tiled.plan) == 16 and tiled.plan.halo >= 24 + 96 + 1
    assert len(tiled) == len(whole) > 10
    # same atoms; near-equal scores may come out in another order
    np.testing.assert_allclose(_sorted_rows(tiled.xy), _sorted_rows(whole.xy), atol=1e-6)
    np.testing.assert_allclose(np.sort(tiled.score), np.sort(whole.score), rtol=1e-5)
    net = det.as_predictor(px)
    m_whole = infer.predict_tiled(img, net, tile=512, halo=net.receptive_field, device="cpu").scores
    m_tiled = infer.predict_tiled(img, net, tile=160, halo=net.receptive_field, device="cpu").scores
    assert np.abs(m_tiled - m_whole).max() <= 1e-4


def test_streamed_histogram_calibration(rng):
    img, truth = spots((600, 700), n=500, seed=3)
    det = ClassicalDetector()
    net = det.as_predictor(PX)
    exact = calibrate(img, net, device="cpu")
    streamed = calibrate(img, net, device="cpu", exact_max_px=0, tile=256)
    assert streamed["method"] == "histogram"
    # 16-bit histogram: the percentile is resolved to 2^-7 of its value
    assert abs(streamed["cap"] - exact["cap"]) <= 2**-7 * exact["cap"]
    assert streamed["global_rms"] == pytest.approx(exact["global_rms"], rel=2e-3)
    # a streamed (gigapixel-style) run: same calibration for every tile, so
    # tiled = whole frame with that calibration, and ~ the exact detections
    a = det.detect_tiled(img, pixel_size_nm=PX, device="cpu", tile=700, exact_max_px=0)
    b = det.detect_tiled(img, pixel_size_nm=PX, device="cpu", tile=200, exact_max_px=0)
    assert len(a) == len(b)
    np.testing.assert_allclose(_sorted_rows(a.xy), _sorted_rows(b.xy), atol=1e-6)
    c = det.detect(img, pixel_size_nm=PX)
    assert abs(len(c) - len(b)) <= 2 and len(c) > 300


def test_exact_percentile_by_radix_select():
    from fastsac.models.classical import _percentile_exact

    rng = np.random.default_rng(7)
    cases = [rng.gamma(1.5, 3.0, 100_001).astype(np.float32),
             np.abs(rng.standard_normal(5)).astype(np.float32),
             np.zeros(10, np.float32), np.ones(1, np.float32),
             np.repeat(np.float32([0.5, 2.0, 7.0]), [50, 1, 3]),          # ties
             np.float32([0, 1e-38, 3e38, 1.0, 1.0000001])]               # denormal, huge
    for a in cases:
        for q in (98.0, 50.0, 0.0, 100.0):
            assert _percentile_exact(torch.as_tensor(a), q) == float(np.percentile(a, q)), (a[:5], q)


def _sorted_rows(xy):
    return xy[np.lexsort((xy[:, 0], xy[:, 1]))]


@pytest.mark.parametrize("dtype, method", [(np.uint16, "auto"), (np.float32, "auto"),
                                           (np.uint16, "fft")])
def test_resident_mode_equals_streamed(dtype, method, monkeypatch):
    """Image and DoG kept on the device: same atoms as the streamed engine and as
    the C++ detector, with an exact percentile at any size. ``fft``: the
    convolutions CUDA uses (one 2-D FFT for the DoG, 1-D FFTs for the noise)."""
    from fastsac.models.classical import TorchGaussian, detect_resident

    monkeypatch.setattr(TorchGaussian, "method", method)

    img, _ = spots((700, 650), n=600, seed=8)
    img = img.astype(dtype)
    det = ClassicalDetector()
    net = det.as_predictor(PX)
    tail = det._tail_params(PX)
    res = detect_resident(img, net, device="cpu", tile=256, **tail)
    assert res.params["resident"] and len(res.plan) == 9
    streamed = det.detect_tiled(img, pixel_size_nm=PX, device="cpu", tile=256, resident=False)
    assert res.params["calibration"]["cap"] == pytest.approx(
        streamed.params["calibration"]["cap"], rel=1e-6)
    assert len(res) == len(streamed) > 300
    np.testing.assert_allclose(_sorted_rows(res.xy), _sorted_rows(streamed.xy), atol=1e-6)
    cpu = det.detect(img, pixel_size_nm=PX)
    assert len(cpu) == len(res)
    np.testing.assert_allclose(_sorted_rows(res.xy), _sorted_rows(cpu.xy), atol=1e-6)
    # one window holding the whole frame gives the same atoms
    whole = detect_resident(img, net, device="cpu", tile=700, **tail)
    np.testing.assert_allclose(_sorted_rows(whole.xy), _sorted_rows(res.xy), atol=1e-6)


def test_tiny_frame_and_bad_configuration():
    rng = np.random.default_rng(1)
    img = rng.poisson(100, (40, 37)).astype(np.float32)  # smaller than the noise kernel (257 px)
    det = ClassicalDetector(threshold=0.5)
    net = det.as_predictor(PX)
    calibrate(img, net, device="cpu")
    np.testing.assert_allclose(_map(net, img), det.score_map(img, pixel_size_nm=PX), atol=1e-4)
    with pytest.raises(RuntimeError, match="calibrate"):
        _map(ClassicalScoreNet(2.0, 6.0, 32.0), img)
    with pytest.raises(ValueError, match="background_nm=None"):
        ClassicalDetector(background_nm=1.17).as_predictor(PX)
    with pytest.raises(ValueError, match="device"):
        ClassicalDetector(device="tpu")


def test_autocast_does_not_touch_the_score(real):
    img, px = real
    det = ClassicalDetector()
    net = det.as_predictor(px)
    calibrate(img, net, device="cpu")
    fp32 = infer.predict_tiled(img, net, tile=512, halo=net.receptive_field, device="cpu").scores
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = _map(net, img)
    np.testing.assert_array_equal(bf16, fp32)


@pytest.mark.gpu
def test_cuda_detections_equal_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from fastsac.synth import simulate

    img, _ = simulate(size=1024, seed=4)
    px = PX
    cpu = ClassicalDetector().detect(img, pixel_size_nm=px)
    gpu = ClassicalDetector(device="cuda").detect(img, pixel_size_nm=px)
    assert gpu.params["device"].startswith("cuda")
    assert len(cpu) > 50
    # float32 convolutions on the GPU vs double accumulation in C++: an atom whose
    # score sits within ~1e-5 of the threshold may flip
    assert abs(len(gpu) - len(cpu)) <= 1
    if len(gpu) == len(cpu):
        np.testing.assert_allclose(_sorted_rows(gpu.xy), _sorted_rows(cpu.xy), atol=1e-3)
    big, _ = spots((3000, 2500), n=3000, seed=5)
    det = ClassicalDetector(device="cuda")
    a = det.detect_tiled(big, pixel_size_nm=PX, device="cuda", tile=1024)    # resident
    assert a.params.get("resident")
    b = det.detect_tiled(big, pixel_size_nm=PX, device="cuda", tile=1024, resident=False)
    assert b.params["calibration"]["method"] == "exact"
    assert abs(len(a) - len(b)) <= 1
    if len(a) == len(b):
        np.testing.assert_allclose(_sorted_rows(a.xy), _sorted_rows(b.xy), atol=1e-4)
    c = ClassicalDetector().detect(big, pixel_size_nm=PX)
    assert abs(len(c) - len(a)) <= 3


@pytest.mark.gpu
def test_cuda_live_session_and_mask_equal_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from fastsac.live import LiveSession
    from fastsac.support.mask import support_mask
    from fastsac.synth import simulate

    img, _ = simulate(size=1024, seed=1)   # has vacuum
    a = support_mask(img, pixel_size_nm=PX)
    b = support_mask(img, pixel_size_nm=PX, device="cuda")
    assert b.params["device"].startswith("cuda") and a.has_vacuum == b.has_vacuum
    assert (a.mask & b.mask).sum() / (a.mask | b.mask).sum() >= 0.999
    # 16-bit frames cross the bus as 16 bits; an unbinned mask (the montage case)
    u16 = np.clip(img, 0, 65535).astype(np.uint16)
    a16, b16 = support_mask(u16, pixel_size_nm=PX), support_mask(u16, pixel_size_nm=PX, device="cuda")
    assert (a16.mask & b16.mask).sum() / (a16.mask | b16.mask).sum() >= 0.999
    a1 = support_mask(img, pixel_size_nm=PX * 2, working_px=np.inf)
    b1 = support_mask(img, pixel_size_nm=PX * 2, working_px=np.inf, device="cuda")
    assert b1.params["bin_factor"] == 1 and a1.has_vacuum == b1.has_vacuum
    assert (a1.mask & b1.mask).sum() / (a1.mask | b1.mask).sum() >= 0.999
    cpu = LiveSession(pixel_size_nm=PX).process(img)
    gpu = LiveSession(pixel_size_nm=PX, device="cuda").process(img)
    assert abs(len(gpu.detections) - len(cpu.detections)) <= 1
    assert gpu.stats["support_area_px2"] == pytest.approx(cpu.stats["support_area_px2"], rel=1e-3)
