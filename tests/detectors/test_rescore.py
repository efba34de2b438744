"""The two-stage detector (classical candidates + learned re-scorer): shipped model, training, files.

The shipped re-scorer was trained on these 11 real images, so the F1 asserted here is
in-sample; the honest leave-images-out numbers are in docs/model.md
(``benchmarks/cv_rescore.py``, docs/cv_rescore.json).
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from fastsac import io
from fastsac.detectors import ClassicalDetector, get_detector
from fastsac.errors import FastsacInputError
from fastsac.evaluate import match_points, pool
from fastsac.detectors.rescore import FEATURES, RescoreDetector, RescoreModel, candidate_features, default_rescore, load_rescore
from fastsac.training import choose_threshold, fit_logistic, train_rescore


@pytest.fixture(scope="module")
def det():
    d = default_rescore()
    if d is None:
        pytest.skip("shipped re-scorer not installed")
    return d


@pytest.fixture(scope="module")
def real(ptnc_dir):
    stems = sorted(p.stem for p in (ptnc_dir / "images").glob("*.tif"))
    return {s: (io.read(ptnc_dir / "images" / f"{s}.tif"), io.read_points(ptnc_dir / "labels" / f"{s}.csv"))
            for s in stems}


def test_shipped_model_loads_offline_and_by_name(monkeypatch):
    def no_network(*a, **k):
        raise OSError("network access attempted")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    d = get_detector("rescore")
    assert isinstance(d, RescoreDetector)
    assert d.source.endswith("fastsac_rescore_v1.json")
    assert d.model.features == FEATURES and 0.05 <= d.threshold <= 0.95
    # Not better than the classical detector under cross-validation → not the default.
    assert get_detector("default").name == "classical"
    assert get_detector("rescore", threshold=0.5).threshold == 0.5


def test_shipped_model_on_real_images(det, real):
    res, n_cand = [], 0
    for s, (mic, lab) in real.items():
        d = det.detect(mic)
        assert np.isfinite(d.xy).all() and ((d.score >= det.threshold) & (d.score <= 1)).all()
        res.append(match_points(d.xy, lab, tolerance_px=6))
    p = pool(res)
    # In-sample: measured P 0.659 R 0.765 F1 0.708 (cross-validated: 0.691 LOO, 0.697 4-fold).
    assert p["f1"] >= 0.69, p
    assert p["recall"] >= 0.72 and p["precision"] >= 0.62, p


def test_stage1_is_the_classical_detector(real):
    mic, _ = real["021"]
    tab = candidate_features(mic.data, pixel_size_nm=mic.pixel_size_nm, candidate_threshold=2.5)
    # The candidates are the classical detector's before its close-pair stage (which
    # decides on final detections, not on 2.5-SNR candidates).
    cl = ClassicalDetector(background_nm=None, threshold=2.5, resolve_pairs=False).detect(mic)
    # Same candidates, same scores and the same refined positions as the classical detector.
    order_t, order_c = np.lexsort(tab.xy.T), np.lexsort(cl.xy.T)
    np.testing.assert_allclose(tab.xy[order_t], cl.xy[order_c], atol=1e-9)
    np.testing.assert_allclose(tab.score[order_t], cl.score[order_c], rtol=1e-6)
    assert tab.features.shape == (len(cl), len(FEATURES)) and np.isfinite(tab.features).all()
    # Recall ceiling of stage 1 on this image: ≥ 90 % of the labels have a candidate.
    r = match_points(tab.xy, real["021"][1], tolerance_px=6)
    assert r.recall >= 0.9


def test_features_follow_the_pixel_size(real):
    """A 2× upsampled frame with half the pixel size gives nearly the same features."""
    from scipy import ndimage as ndi
    mic, _ = real["037"]
    a = candidate_features(mic.data, pixel_size_nm=mic.pixel_size_nm)
    up = ndi.zoom(mic.data.astype(np.float32)[:256, :256], 2, order=1)
    b = candidate_features(up, pixel_size_nm=mic.pixel_size_nm / 2)
    strong_a = a.xy[(a.score > 5) & (a.xy < 250).all(1) & (a.xy > 6).all(1)]
    d = np.hypot(*(b.xy[:, None, :] / 2 - strong_a[None]).transpose(2, 0, 1))
    assert (d.min(0) < 1.5).mean() >= 0.8      # the strong atoms are found again at the same place


def test_training_is_deterministic_and_round_trips(tmp_path, ptnc_dir):
    stems = ["021", "037", "048"]
    m1 = train_rescore(ptnc_dir / "images", stems=stems, out=tmp_path / "a.json", inner_folds=3)
    m2 = train_rescore(ptnc_dir / "images", stems=stems, out=tmp_path / "b.json", inner_folds=3)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert m1.meta["train_images"] == stems and m1.meta["n_labels"] == 33 + 48 + 63
    d = load_rescore(tmp_path / "a.json")
    np.testing.assert_array_equal(d.model.coef, m1.coef)
    assert d.threshold == m1.threshold
    assert m1.coef[FEATURES.index("score")] > 0     # more signal → more likely an atom
    assert isinstance(get_detector(tmp_path / "a.json"), RescoreDetector)


def test_fit_logistic_recovers_a_known_model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    w_true = np.array([1.5, -0.5, 0.0])
    z = (X - X.mean(0)) / X.std(0) @ w_true - 0.3
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(float)
    mean, scale, coef, b = fit_logistic(X, y, l2=1e-3)
    np.testing.assert_allclose(coef, w_true, atol=0.12)
    assert abs(b + 0.3) < 0.1
    with pytest.raises(ValueError, match="X must be"):
        fit_logistic(X[:0], y[:0])


def test_choose_threshold_maximises_pooled_f1():
    probs = [np.array([0.9, 0.8, 0.3, 0.2]), np.array([0.7, 0.1])]
    targets = [np.array([1, 1, 0, 1.0]), np.array([1, 0.0])]
    thr, f1 = choose_threshold(probs, targets, [3, 1])
    # Keeping ≥ 0.7: tp 3 of 3 kept, 4 labels → F1 6/7; ≥ 0.2 adds a tp and an fp → 2·4/(5 + 4) = 8/9;
    # ≥ 0.1 adds another fp → 8/10.
    assert 0.11 <= thr <= 0.2 and f1 == pytest.approx(8 / 9)


@pytest.mark.parametrize("content, match", [
    ("not json", "cannot read"),
    (json.dumps({"format": "something-else"}), "not a fastsac re-scorer"),
    (json.dumps({"format": "fastsac-rescore", "features": list(FEATURES)}), "malformed"),
    (json.dumps({"format": "fastsac-rescore", "features": ["score"], "mean": [0], "scale": [1], "coef": [1],
                 "intercept": 0, "threshold": 0.5}), "differ"),
    (json.dumps({"format": "fastsac-rescore", "features": list(FEATURES), "mean": [0] * len(FEATURES),
                 "scale": [0] * len(FEATURES), "coef": [1] * len(FEATURES), "intercept": 0,
                 "threshold": 0.5}), "scale > 0"),
])
def test_bad_model_file_names_the_file(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(FastsacInputError, match=match) as exc:
        load_rescore(p)
    assert "bad.json" in str(exc.value)
    with pytest.raises(FastsacInputError):
        get_detector(tmp_path / "missing.json")


def test_edge_cases():
    model = RescoreModel(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), np.zeros(len(FEATURES)), 0.0, 0.5)
    det = RescoreDetector(model)
    flat = np.full((64, 64), 100.0, np.float32)
    out = det.detect(flat)
    assert len(out) == 0 and out.xy.shape == (0, 2)
    with pytest.raises(ValueError, match="threshold"):
        RescoreDetector(model, threshold=1.5)
    with pytest.raises(TypeError, match="RescoreModel"):
        RescoreDetector("model.json")


def test_cli_train_reproduces_the_shipped_model(tmp_path, ptnc_dir, det, capsys):
    from fastsac.cli import main
    out = tmp_path / "rescore.json"
    assert main(["train", str(ptnc_dir / "images"), "--model", "rescore", "-o", str(out)]) == 0
    assert "11 images" in capsys.readouterr().out
    m = load_rescore(out).model
    ref = det.model
    assert m.threshold == ref.threshold and m.meta["train_images"] == ref.meta["train_images"]
    for a, b in ((m.mean, ref.mean), (m.scale, ref.scale), (m.coef, ref.coef)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert main(["train", str(tmp_path), "--model", "rescore", "-o", str(tmp_path / "x.json")]) == 2
