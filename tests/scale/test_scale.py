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


def test_sampled_estimate_equals_the_whole_image_up_to_one_crop():
    from fastsac.scale import estimate_atom_scale_sampled

    img = blobs(2.5, noise=0.2, seed=4)
    whole = estimate_atom_scale(img)
    got = estimate_atom_scale_sampled(lambda y0, y1, x0, x1: img[y0:y1, x0:x1], img.shape)
    assert got.scale_px == whole.scale_px and got.at_edge == whole.at_edge
    np.testing.assert_array_equal(got.response, whole.response)


def test_sampled_estimate_finds_the_atoms_when_the_centre_is_vacuum():
    """A montage whose centre is empty (vacuum, a hole): the centre crop alone has
    no atom scale; the quadrant crops do, and the best one is used."""
    from fastsac.scale import estimate_atom_scale_sampled

    rng = np.random.default_rng(5)
    big = rng.normal(0, 0.05, (768, 768))
    for k, (y, x) in enumerate(((0, 0), (0, 512), (512, 0), (512, 512))):
        big[y:y + 256, x:x + 256] = blobs(3.0, noise=0.2, seed=10 + k)
    reads = []

    def read(y0, y1, x0, x1):
        reads.append((y0, y1, x0, x1))
        return big[y0:y1, x0:x1]

    centre = estimate_atom_scale(big[256:512, 256:512])
    got = estimate_atom_scale_sampled(read, big.shape, side_px=256)
    assert len(reads) == 5 and all(y1 - y0 == 256 and x1 - x0 == 256 for y0, y1, x0, x1 in reads)
    assert not (np.isfinite(centre.scale_px) and not centre.at_edge
                and 0.85 * 3.0 < centre.scale_px < 1.75 * 3.0)
    assert 0.85 * 3.0 < got.scale_px < 1.75 * 3.0 and not got.at_edge
