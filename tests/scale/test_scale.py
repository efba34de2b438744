"""Atom size from the image itself: scale-space estimate moves with the image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fastsac.scale import REFERENCE_PIXEL_SIZE_NM, REFERENCE_SCALE_PX, estimate_atom_scale


def blobs(sigma, size=256, n=60, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = rng.normal(0, noise, (size, size)) + 0.2 * ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 12)
    for x, y in rng.uniform(10, size - 10, (n, 2)):
        img += rng.lognormal(0, 0.2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img


def test_scale_grows_with_the_atom_size():
    """The scale is where the brightest blobs stand out most from the noise: near
    σ (√3 σ for small blobs in white noise), increasing with it."""
    est = []
    for sigma in (1.5, 2.5, 4.0):
        r = estimate_atom_scale(blobs(sigma, noise=0.25))
        assert 0.85 * sigma < r.scale_px < 1.75 * sigma and not r.at_edge
        assert r.pixel_size_nm == pytest.approx(REFERENCE_PIXEL_SIZE_NM * REFERENCE_SCALE_PX / r.scale_px)
        est.append(r.scale_px)
    assert est[0] < est[1] < est[2]


def test_resampled_image_gives_a_proportional_scale():
    img = blobs(2.0, size=320, noise=0.15, seed=1)
    base = estimate_atom_scale(img).scale_px
    down = img.reshape(160, 2, 160, 2).mean((1, 3))
    up = ndi.zoom(img, 2, order=3, grid_mode=True, mode="nearest")
    assert estimate_atom_scale(down).scale_px == pytest.approx(base / 2, rel=0.08)
    assert estimate_atom_scale(up).scale_px == pytest.approx(base * 2, rel=0.08)


def test_real_frame_scale_is_near_the_reference(ptnc_dir):
    from fastsac.io import read

    m = read(ptnc_dir / "images" / "034.tif")
    r = estimate_atom_scale(m.data)
    assert 2.5 < r.scale_px < 4.5
    assert r.pixel_size_nm == pytest.approx(m.pixel_size_nm, rel=0.3)


def test_flat_small_and_nan_images():
    assert np.isnan(estimate_atom_scale(np.zeros((64, 64))).scale_px)
    with pytest.raises(ValueError, match="32"):
        estimate_atom_scale(np.zeros((16, 64)))
    img = blobs(2.0, size=128)
    img[5, 5] = np.nan
    assert np.isfinite(estimate_atom_scale(img).scale_px)
    with pytest.raises(ValueError, match="sigma_range_px"):
        estimate_atom_scale(img, sigma_range_px=(5, 2))
