"""The classical detector on simulated frames: near-perfect at high dose."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.evaluate import match_points, pool
from fastsac.io import Micrograph
from fastsac.synth import simulate

detect = pytest.importorskip("fastsac.detect")


def _inside(xy, size, border):
    return ((xy >= border) & (xy <= size - 1 - border)).all(axis=1)


def test_classical_detector_f1_at_high_dose():
    det = detect.get_detector("classical")
    size, border = 256, 3.0
    res = []
    for seed in (0, 1):
        img, truth = simulate(size=size, seed=seed, dose=2e6, loading_per_nm2=0.4)
        xy = det.detect(Micrograph.from_array(img, pixel_size_nm=0.0293)).xy
        # the outermost rows/columns are ignored: the detector's reflected
        # filters can fire on a single scan line there (see docs/synth.md)
        res.append(match_points(xy[_inside(xy, size, border)],
                                truth.xy[_inside(truth.xy, size, border)], tolerance_px=6.0))
    p = pool(res)
    assert p["tp"] + p["fn"] > 20
    assert p["f1"] >= 0.95, p
    assert p["mean_error_px"] < 1.5
