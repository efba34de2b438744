"""A support mask given on a binned grid (``Window(..., bin_factor=F)``, used by
montages) behaves exactly as the expanded full-resolution mask."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.spatial.stats import Window, dispersion


def _expand(mb, f, shape):
    return np.repeat(np.repeat(mb, f, 0), f, 1)[:shape[0], :shape[1]]


def test_binned_window_equals_expanded_mask():
    rng = np.random.default_rng(1)
    checked = 0
    for trial in range(150):
        f = int(rng.integers(2, 6))
        h, w = int(rng.integers(f, 70)), int(rng.integers(f, 70))
        mb = rng.random((-(-h // f), -(-w // f))) < rng.uniform(0.2, 0.95)
        full = _expand(mb, f, (h, w))
        if not full.any() or full.all():
            continue
        a, b = Window((h, w), mask=full), Window((h, w), mask=mb, bin_factor=f)
        assert a.area == b.area and a.perimeter == b.perimeter
        xy = rng.uniform(-0.5, [w - 0.5, h - 0.5], (300, 2))
        np.testing.assert_array_equal(a.contains(xy), b.contains(xy))
        # Monte Carlo patterns: the same points from the same generator state
        np.testing.assert_array_equal(a.sample(400, np.random.default_rng(trial)),
                                      b.sample(400, np.random.default_rng(trial)))
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("correction", ["monte_carlo", "donnelly", "none"])
def test_dispersion_with_binned_mask_equals_full_mask(correction):
    rng = np.random.default_rng(3)
    shape, f = (203, 157), 3
    mb = np.ones((-(-shape[0] // f), -(-shape[1] // f)), bool)
    mb[10:40, 5:30] = False   # a hole
    mb[:, -1] = False         # vacuum along the ragged last column of blocks
    full = _expand(mb, f, shape)
    xy = rng.uniform(-0.5, [shape[1] - 0.5, shape[0] - 0.5], (120, 2))
    kw = dict(image_shape=shape, pixel_size_nm=0.03, mask_correction=correction, n_sim=30)
    ref = dispersion(xy, mask=full, **kw)
    got = dispersion(xy, mask=mb, mask_bin_factor=f, **kw)
    assert got.as_dict() == ref.as_dict()
    np.testing.assert_array_equal(got.in_support, ref.in_support)
    assert (~ref.in_support).sum() > 5


def test_binned_window_checks():
    mb = np.ones((4, 4), bool)
    mb[0, 0] = False
    with pytest.raises(ValueError, match="binned shape"):
        Window((10, 10), mask=mb, bin_factor=2)
    with pytest.raises(ValueError, match="bin_factor"):
        Window((10, 10), mask=mb, bin_factor=0)
    win = Window((8, 8), mask=mb, bin_factor=2)
    with pytest.raises(NotImplementedError, match="full-resolution"):
        win.border_distance(np.array([[3.0, 3.0]]))
