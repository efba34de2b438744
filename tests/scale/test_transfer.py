"""Transfer without calibration on real frames: ptnc-train resampled 0.5× and 2×,
calibration removed, pixel size estimated from the atoms. The full 11-frame,
0.5–2× table is ``benchmarks/transfer_scale.py`` (docs/species.md: F1 within
0.011 of the unscaled 0.693 at 0.5, 0.75, 1, 1.5, 2×); this runs the two ends."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fastsac.evaluate import match_points
from fastsac.io import Micrograph, read, read_points
from fastsac.pipeline import analyze

_spec = importlib.util.spec_from_file_location(
    "transfer_scale", Path(__file__).resolve().parents[2] / "benchmarks" / "transfer_scale.py")
transfer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(transfer)


def pooled_f1(results):
    tp, fp, fn = (sum(getattr(r, k) for r in results) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn)


@pytest.mark.slow
def test_f1_without_calibration_on_rescaled_frames(ptnc_dir):
    frames = [(read(p), read_points(ptnc_dir / "labels" / f"{p.stem}.csv"))
              for p in sorted((ptnc_dir / "images").glob("*.tif"))]
    base = pooled_f1([match_points(analyze(m, detector="classical", support_mask=False).detections.xy,
                                   lab, tolerance_px=6) for m, lab in frames])
    for s in (0.5, 2.0):
        res = []
        for m, lab in frames:
            img = transfer.rescale_image(m.data, s).astype(np.float32)
            r = analyze(Micrograph(img, None, "none", "x", {}), detector="classical", support_mask=False)
            assert r.summary["pixel_size_source"] == "estimated from atom size"
            assert r.summary["pixel_size_nm"] == pytest.approx(0.0293 / s, rel=0.35)
            res.append(match_points(r.detections.xy, transfer.rescale_points(lab, s), tolerance_px=6 * s))
        assert abs(pooled_f1(res) - base) <= 0.03, (s, pooled_f1(res), base)


def test_rescale_points_keeps_pixel_centres():
    np.testing.assert_allclose(transfer.rescale_points([[0.5, 1.5]], 0.5), [[0.0, 0.5]])
    img = np.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(transfer.rescale_image(img, 0.5), [[2.5, 4.5], [10.5, 12.5]])
