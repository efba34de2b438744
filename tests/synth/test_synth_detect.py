"""The classical detector on simulated frames: near-perfect at high dose."""

from __future__ import annotations

import pytest

from fastsac.evaluate import match_points, pool
from fastsac.io import Micrograph
from fastsac.synth import simulate

detect = pytest.importorskip("fastsac.detectors")


def _inside(xy, size, border):
    return ((xy >= border) & (xy <= size - 1 - border)).all(axis=1)


@pytest.mark.parametrize("background_nm, min_f1", [
    # Default (no median background): at high dose the remaining misses are atoms
    # whose DoG response is capped by the support texture around them (SNR 3.4–3.7),
    # not by shot noise.
    (None, 0.92),
    # The published 40-px median in front recovers one or two of them here; on the
    # real images it does not help (held-out F1 0.690 with, 0.693 without).
    (40 * 0.0293, 0.945),
])
def test_classical_detector_f1_at_high_dose(background_nm, min_f1):
    det = detect.ClassicalDetector(background_nm=background_nm)
    size, border = 256, 3.0
    res = []
    for seed in (0, 1, 2, 3):
        img, truth = simulate(size=size, seed=seed, dose=2e6, loading_per_nm2=0.4)
        xy = det.detect(Micrograph.from_array(img, pixel_size_nm=0.0293)).xy
        # the outermost rows/columns are ignored: the detector's reflected
        # filters can fire on a single scan line there (see docs/synth.md)
        res.append(match_points(xy[_inside(xy, size, border)],
                                truth.xy[_inside(truth.xy, size, border)], tolerance_px=6.0))
    p = pool(res)
    assert p["tp"] + p["fn"] > 50
    assert p["precision"] >= 0.98, p
    assert p["f1"] >= min_f1, p
    assert p["mean_error_px"] < 1.5
