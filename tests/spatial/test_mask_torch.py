"""The GPU (torch) support mask equals the CPU one; here torch runs on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from fastsac_testdata import PTNC  # noqa: E402

from fastsac.spatial._mask_torch import _median, support_mask_torch  # noqa: E402
from fastsac.spatial.mask import support_mask  # noqa: E402

from .test_mask import textured_support, with_vacuum  # noqa: E402


def _same(a, b):
    assert a.has_vacuum == b.has_vacuum
    assert a.mask.shape == b.mask.shape
    iou = (a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1)
    assert iou >= 0.999, iou
    assert b.vacuum_fraction == pytest.approx(a.vacuum_fraction, abs=1e-3)
    if a.has_vacuum:
        assert b.contrast == pytest.approx(a.contrast, rel=1e-4)
        assert b.texture_ratio == pytest.approx(a.texture_ratio, rel=1e-3)


def test_median_matches_numpy():
    import torch

    rng = np.random.default_rng(3)
    for v in (rng.normal(5, 3, 1001), rng.normal(-2, 1, 1000), np.array([4.0]), np.array([1.0, 3.0])):
        assert _median(torch.as_tensor(v, dtype=torch.float32)) == pytest.approx(
            float(np.median(v.astype(np.float32))), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("working_px", [6.0, np.inf])
def test_synthetic_vacuum_gradient_and_flat(rng, working_px):
    img, _ = with_vacuum(rng, (256, 256))
    _same(support_mask(img, pixel_size_nm=0.03, working_px=working_px),
          support_mask_torch(img, pixel_size_nm=0.03, working_px=working_px, device="cpu"))
    tex = textured_support(rng, (256, 256))
    grad = rng.poisson(tex * np.linspace(0.35, 1.0, 256)[None, :]).astype(np.float64) + 170.0
    b = support_mask_torch(grad, pixel_size_nm=0.03, working_px=working_px, device="cpu")
    assert b.mask.all() and not b.has_vacuum
    _same(support_mask(grad, pixel_size_nm=0.03, working_px=working_px), b)
    flat = support_mask_torch(np.full((64, 64), 5.0), device="cpu")
    assert flat.mask.all() and flat.support_area_nm2 is None


def test_real_images():
    paths = sorted((PTNC / "images").glob("*.tif"))
    if not paths:
        pytest.skip("real data not available")
    import fastsac

    for p in paths[:6]:
        m = fastsac.read(p)
        _same(support_mask(m.data, pixel_size_nm=m.pixel_size_nm),
              support_mask_torch(m.data, pixel_size_nm=m.pixel_size_nm, device="cpu"))
