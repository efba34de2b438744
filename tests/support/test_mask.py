"""Support mask: finds vacuum that is dark and flat, never invents it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fastsac.support import support_mask


def textured_support(rng, shape, mean=1000.0):
    tex = ndi.gaussian_filter(rng.normal(size=shape), 3.0)
    tex /= tex.std()
    img = mean * (1 + 0.15 * tex)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for x, y in rng.uniform(0, shape[1], (60, 2)):  # a few atoms
        img += 0.6 * mean * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    return img


def with_vacuum(rng, shape=(256, 256)):
    img = textured_support(rng, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    support = yy > 80 + 30 * np.sin(xx / 40.0)          # wavy edge, vacuum on top
    img = np.where(support, img, 40.0)
    img = rng.poisson(img).astype(np.float64) + 170.0     # shot noise + detector offset
    return img, support


def test_vacuum_is_found(rng):
    img, truth = with_vacuum(rng)
    r = support_mask(img, pixel_size_nm=0.03)
    iou = (r.mask & truth).sum() / (r.mask | truth).sum()
    assert r.has_vacuum and iou > 0.95
    assert r.vacuum_fraction == pytest.approx(1 - truth.mean(), abs=0.03)
    assert r.support_area_nm2 == pytest.approx(r.mask.sum() * 0.03**2)
    d = r.as_dict()
    assert d["vacuum_fraction"] == r.vacuum_fraction and d["support_area_px2"] == r.mask.sum()


def test_no_vacuum_is_invented_on_a_support_with_a_gradient(rng):
    img = textured_support(rng, (256, 256))
    ramp = np.linspace(0.35, 1.0, 256)[None, :]            # 3× darker on one side
    img = rng.poisson(img * ramp).astype(np.float64) + 170.0
    r = support_mask(img, pixel_size_nm=0.03)
    assert r.vacuum_fraction == 0.0 and r.mask.all() and not r.has_vacuum


@pytest.mark.parametrize("img", [np.full((32, 32), 5.0), np.ones((4, 4)), np.random.default_rng(0).normal(size=(64, 64))])
def test_degenerate_images_are_all_support(img):
    r = support_mask(img)
    assert r.mask.all() and r.vacuum_fraction == 0.0 and r.support_area_nm2 is None


def test_input_unchanged_and_dtypes(rng):
    img, _ = with_vacuum(rng, (128, 128))
    u16 = img.astype(np.uint16)
    keep = u16.copy()
    a = support_mask(u16, pixel_size_nm=0.03)
    np.testing.assert_array_equal(u16, keep)
    b = support_mask(u16.astype(np.float32), pixel_size_nm=0.03)
    np.testing.assert_array_equal(a.mask, b.mask)
    with pytest.raises(ValueError, match="2-D"):
        support_mask(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="pixel_size_nm"):
        support_mask(u16, pixel_size_nm=0)


def test_real_images(ptnc_dir):
    """Real Pt/N-C images: vacuum where it is obvious (021: the top-left 40 %),
    none on 047/048/049/051, and no labelled atom ever falls in vacuum."""
    import fastsac

    expect_vacuum = {"021": (0.3, 0.55), "025": (0.1, 0.3), "045": (0.15, 0.4)}
    no_vacuum = {"047", "048", "049", "051"}
    for img_path in sorted((ptnc_dir / "images").glob("*.tif")):
        m = fastsac.read(img_path)
        r = support_mask(m.data, pixel_size_nm=m.pixel_size_nm)
        xy = fastsac.read_points(ptnc_dir / "labels" / f"{img_path.stem}.csv")
        ij = np.clip(np.round(xy).astype(int), 0, np.array(m.shape)[::-1] - 1)
        assert r.mask[ij[:, 1], ij[:, 0]].all(), img_path.stem
        assert r.vacuum_fraction < 0.6
        if img_path.stem in expect_vacuum:
            lo, hi = expect_vacuum[img_path.stem]
            assert lo < r.vacuum_fraction < hi, (img_path.stem, r.vacuum_fraction)
        if img_path.stem in no_vacuum:
            assert r.vacuum_fraction < 0.02, (img_path.stem, r.vacuum_fraction)
