"""fastsac's shipped heatmap detector: loads offline, beats the published SAC-CNN, behaves on edge cases.

Note: the shipped model was trained on these 11 real images, so the F1 here is
an in-sample number; the honest, cross-validated F1 is in docs/model.md
(``benchmarks/cv_detector.py``).
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from fastsac import io
from fastsac.detectors import get_detector
from fastsac.evaluate import match_points, pool
from fastsac.detectors.learned import HeatmapDetector, default_detector, load_detector
from fastsac.models import HeatmapUNet, save_checkpoint


@pytest.fixture(scope="module")
def det():
    torch.set_num_threads(2)
    d = default_detector()
    if d is None:
        pytest.skip("shipped weights not installed")
    return d


def test_default_loads_without_network(monkeypatch):
    def no_network(*a, **k):
        raise OSError("network access attempted")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    d = default_detector()
    assert isinstance(d, HeatmapDetector)
    assert d.source.endswith("fastsac_heatmap_v1.pt")
    assert isinstance(get_detector("heatmap"), HeatmapDetector)
    # "default" is the best cross-validated detector, which is still the classical one
    assert get_detector("default").name == "classical"


def test_shipped_model_on_real_images(det, ptnc_dir):
    stems = sorted(p.stem for p in (ptnc_dir / "images").glob("*.tif"))
    assert len(stems) == 11
    res = []
    for s in stems:
        mic = io.read(ptnc_dir / "images" / f"{s}.tif")
        d = det.detect(mic)
        assert np.isfinite(d.xy).all() and ((d.score >= det.threshold) & (d.score <= 1)).all()
        res.append(match_points(d.xy, io.read_points(ptnc_dir / "labels" / f"{s}.csv"), tolerance_px=6))
    p = pool(res)
    # In-sample (the model saw these images): measured pooled F1 0.613 at 6 px. The target
    # (0.75) is NOT reached; cross-validated numbers and the reasons are in docs/model.md.
    assert p["f1"] >= 0.58, p
    assert p["recall"] >= 0.6 and p["precision"] >= 0.5, p


def _synthetic(rng, shape=(192, 192), n=25, sigma=1.5, amp=60.0, bg=200.0, upsample=1):
    """Gaussian atoms on a sloped background with Poisson noise; positions [x, y] in output px."""
    h, w = shape
    xy = rng.uniform(15, np.array([w, h]) - 15, size=(n, 2))
    # keep atoms apart (≥ 8 px) so matching is unambiguous
    keep = [0]
    for i in range(1, n):
        if np.min(np.hypot(*(xy[keep] - xy[i]).T)) >= 8:
            keep.append(i)
    xy = xy[keep]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    lam = bg * (1 + 0.3 * xx / w)
    for x, y in xy:
        lam += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return rng.poisson(lam).astype(np.float32), xy


def test_detects_synthetic_atoms_and_leaves_input_unchanged(det, rng):
    img, truth = _synthetic(rng)
    before = img.copy()
    d = det.detect(img, pixel_size_nm=0.0293)
    np.testing.assert_array_equal(img, before)
    r = match_points(d.xy, truth, tolerance_px=3)
    assert r.f1 >= 0.9, r
    assert r.mean_error_px < 0.6


def test_resamples_to_working_scale(det, rng):
    # Same kind of scene imaged with 2x larger pixels: atoms half as wide in pixels, each pixel
    # collecting 4x the counts (same dose per nm²).
    img, truth = _synthetic(rng, shape=(192, 192), sigma=0.75, amp=240.0, bg=800.0)
    d = det.detect(img, pixel_size_nm=2 * 0.0293)
    assert d.params["pixel_size_nm_used"] == pytest.approx(2 * 0.0293)
    r = match_points(d.xy, truth, tolerance_px=2)
    assert r.recall >= 0.9 and r.precision >= 0.9, r
    assert r.mean_error_px < 0.4
    # Without the calibration the atoms are too small for the model: it misses many.
    r_nocal = match_points(det.detect(img).xy, truth, tolerance_px=2)
    assert r_nocal.recall < r.recall


def test_flat_and_tiny_images(det):
    assert len(det.detect(np.full((64, 64), 100, np.float32))) == 0
    assert len(det.detect(np.zeros((8, 8), np.uint16))) == 0


def test_load_detector_overrides_and_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = HeatmapUNet((4, 8, 8))
    p = save_checkpoint(tmp_path / "m.pt", net, arch={"name": "heatmap_unet", "widths": [4, 8, 8]},
                        detector={"threshold": 0.35, "min_distance_nm": 0.2}, meta={})
    d = load_detector(p, threshold=0.6)
    assert isinstance(d, HeatmapDetector)
    assert d.threshold == 0.6 and d.min_distance_nm == 0.2
    with pytest.raises(ValueError, match="threshold"):
        load_detector(p, threshold=1.5)


def test_train_is_seeded_and_writes_a_loadable_checkpoint(tmp_path):
    from dataclasses import replace

    from fastsac.training import TrainConfig, train
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for k in range(2):
        img, xy = _synthetic(rng, shape=(96, 96), n=8)
        io.write_tiff(tmp_path / "images" / f"s{k}.tif", img, pixel_size_nm=0.0293)
        rows = "\n".join(f"{i + 1},{x:.2f},{y:.2f}" for i, (x, y) in enumerate(xy))
        (tmp_path / "labels" / f"s{k}.csv").write_text(" ,X,Y\n" + rows + "\n")
    cfg = replace(TrainConfig(), steps=4, batch=4, patch=32)
    a = train(tmp_path / "images", config=cfg, out=tmp_path / "a.pt", progress=False)
    b = train(tmp_path / "images", config=cfg, progress=False)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.losses == b.losses and len(a.losses) == 4
    d = load_detector(tmp_path / "a.pt")
    assert isinstance(d, HeatmapDetector) and d.threshold == pytest.approx(a.threshold)


def test_predictor_matches_score_map(det, rng):
    from fastsac.detectors.learned import heatmap_preprocess
    img, _ = _synthetic(rng, shape=(96, 128))
    prep = heatmap_preprocess(img, pixel_size_nm=None)
    pred = det.as_predictor()
    assert pred.halo == HeatmapUNet.halo and pred.pad_multiple == 4
    # Any padding that keeps pixel (0, 0) on the 4-px pooling grid and covers the halo agrees.
    with torch.inference_mode():
        y = pred(torch.from_numpy(np.pad(prep.image, 32, mode="reflect"))[None, None])[0, 0, 32:-32, 32:-32]
    np.testing.assert_allclose(y.numpy(), det.score_map(img), atol=1e-5)


def test_simulated_training_frames_are_valid():
    from fastsac.training import TrainConfig, simulated_training_frames

    frames = simulated_training_frames(TrainConfig(synth_frames=2, seed=3), "auto")
    assert len(frames) == 2
    for inp, xy in frames:
        assert inp.shape == (512, 512) and np.isfinite(inp).all()
        assert len(xy) > 5
        assert ((xy >= 0) & (xy <= 511)).all()
        # input is in local-noise units: background pixels have roughly unit spread
        assert 0.3 < float(np.median(np.abs(inp - np.median(inp)))) * 1.4826 < 3.0
    again = simulated_training_frames(TrainConfig(synth_frames=2, seed=3), "auto")
    np.testing.assert_array_equal(frames[0][1], again[0][1])  # seeded
