"""The published SAC-CNN workflow on a real image: one-pass map == sliding windows, same detections.

The full 512² sliding window (~242k windows) takes minutes on the shared
2-core CPU, so the dense map of the *full* image is compared with the sliding
window at 5000 pixel positions (4800 random + the 200 most atom-like), and
the full map and the detections are compared on a 64×64 crop (always) and a
128×128 crop (``FASTSAC_SLOW=1``; ~20 s of CPU).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fastsac import io
from fastsac.errors import FastsacInputError
from fastsac.evaluate import match_points
from fastsac.detectors.learned import SacCnnDetector, load_detector, sac_cnn_preprocess, sliding_window_probabilities


@pytest.fixture(scope="module")
def sac(sac_cnn_ckpt):
    torch.set_num_threads(2)
    det = load_detector(sac_cnn_ckpt)
    assert isinstance(det, SacCnnDetector) and det.threshold == 0.89
    return det


@pytest.fixture(scope="module")
def real(ptnc_dir):
    mic = io.read(ptnc_dir / "images" / "021.tif")
    return mic, io.read_points(ptnc_dir / "labels" / "021.csv"), sac_cnn_preprocess(mic.data)


def test_dense_map_equals_sliding_window_full_image_sampled(sac, real):
    _, _, norm = real
    dense = sac.probability_map(norm)
    assert dense.shape == norm.shape
    assert not dense[:10].any() and not dense[-10:].any() and not dense[:, :10].any() and not dense[:, -10:].any()
    rng = np.random.default_rng(0)
    pos = rng.integers(10, 512 - 10, size=(4800, 2))
    # Include the brightest (atom) pixels so high probabilities are compared too.
    top = np.argsort(dense.ravel())[-200:]
    pos = np.concatenate([pos, np.stack([top % 512, top // 512], axis=1)])
    ref = sliding_window_probabilities(sac.model, norm, positions=pos, batch_size=64)
    np.testing.assert_allclose(dense[pos[:, 1], pos[:, 0]], ref, rtol=0, atol=1e-5)
    assert ref.max() > 0.99 and ref.min() < 0.01


SLOW = pytest.mark.skipif(not os.environ.get("FASTSAC_SLOW"), reason="~20 s; set FASTSAC_SLOW=1")


@pytest.mark.parametrize("size", [64, pytest.param(128, marks=[pytest.mark.slow, SLOW])])
def test_dense_map_and_detections_equal_sliding_window_on_crop(sac, real, size):
    _, _, norm = real
    # A region of image 021 with several labelled atoms.
    crop = np.ascontiguousarray(norm[382:382 + size, 314:314 + size])  # 3 labelled atoms inside
    dense = sac.probability_map(crop)
    ref = sliding_window_probabilities(sac.model, crop, batch_size=64)
    assert np.abs(dense - ref).max() <= 1e-5
    xy_d, s_d, a_d = sac.components(dense)
    xy_r, s_r, a_r = sac.components(ref)
    assert len(xy_d) >= 2
    np.testing.assert_array_equal(a_d, a_r)
    np.testing.assert_allclose(xy_d, xy_r, atol=1e-9)


def test_published_workflow_on_real_image(sac, real):
    mic, truth, norm = real
    xy, score, _ = sac.components(sac.probability_map(norm))   # published centres
    r = match_points(xy, truth, tolerance_px=6)
    # Published model, threshold 0.89, component centroids (measured: see docs/model.md).
    assert r.f1 >= 0.5, r
    assert (score > 0.89).all()
    refined = SacCnnDetector(sac.model, refine="gaussian").detect(mic)
    assert len(refined) == len(xy)
    np.testing.assert_array_equal(refined.score, score)
    assert np.hypot(*(refined.xy - xy).T).max() <= 5.0
    assert np.isfinite(refined.amplitude).mean() >= 0.5


def test_load_detector_rejects_other_files(tmp_path):
    p = tmp_path / "weights.pt"
    torch.save({"model": {"x": torch.zeros(1)}}, p)
    with pytest.raises(FastsacInputError, match="weights.pt"):
        load_detector(p)


def test_get_detector_resolves_checkpoint_path(sac_cnn_ckpt):
    from fastsac.detectors import get_detector
    det = get_detector(str(sac_cnn_ckpt), threshold=0.5)
    assert isinstance(det, SacCnnDetector) and det.threshold == 0.5
