"""Region kernels of the support mask: the C++ run-length labelling and block
expansion against their numpy references (scipy.ndimage.label, np.repeat)."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.support.regions import drop_small_regions, expand_blocks

BACKENDS = ["numpy", "cpp"]


def _cases(rng):
    yield np.zeros((0, 5), bool)
    yield np.zeros((4, 0), bool)
    yield np.zeros((7, 9), bool)
    yield np.ones((7, 9), bool)
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    yield one
    corner = np.zeros((5, 6), bool)
    corner[0, 0] = True
    yield corner
    yield np.indices((9, 11)).sum(0) % 2 == 0           # checkerboard: diagonals are not 4-connected
    yield rng.random((1, 40)) < 0.6                      # a single row
    yield rng.random((40, 1)) < 0.6                      # a single column
    ring = np.zeros((15, 15), bool)
    ring[3:12, 3:12] = True
    ring[5:10, 5:10] = False                              # a hole inside a region
    yield ring
    snake = np.zeros((21, 21), bool)                      # one long component that U-turns
    snake[::4, :20] = True
    snake[1::4, 19] = snake[2::4, 19] = snake[3::4, 19] = True
    snake[3::8, 0] = snake[4::8, 0] = snake[5::8, 0] = True
    yield snake
    for p in (0.2, 0.45, 0.6, 0.9):
        yield rng.random((int(rng.integers(20, 70)), int(rng.integers(20, 70)))) < p


@pytest.mark.parametrize("backend", BACKENDS)
def test_drop_small_matches_label_reference(rng, backend):
    for region in _cases(rng):
        before = region.copy()
        for min_px in (0, 1, 2, 3.5, 4, 9, 1e9):
            for keep in (False, True):
                want = drop_small_regions(region, min_px, keep, backend="numpy")
                got = drop_small_regions(region, min_px, keep, backend=backend)
                assert got.dtype == bool and got.shape == region.shape
                np.testing.assert_array_equal(got, want, err_msg=f"min_px={min_px} keep={keep}")
        np.testing.assert_array_equal(region, before)  # input untouched


def test_drop_small_values():
    r = np.zeros((6, 8), bool)
    r[1:3, 1:3] = True       # 4 px, inside
    r[0, 5:8] = True         # 3 px, touching the border
    r[4, 1] = r[5, 2] = True  # two 1-px components (diagonal, not connected)
    got = drop_small_regions(r, 4, backend="cpp")
    assert got[1:3, 1:3].all() and not got[0].any() and not got[4:].any()  # size == min_px stays
    kept = drop_small_regions(r, 4, keep_touching_border=True, backend="cpp")
    assert kept[0, 5:8].all() and kept[5, 2] and not kept[4, 1]  # (5, 2) is on the bottom edge


def test_drop_small_non_contiguous_and_int_input(rng):
    big = rng.random((60, 80)) < 0.5
    view = big[::2, 1::3]
    np.testing.assert_array_equal(drop_small_regions(view, 3, backend="cpp"), drop_small_regions(view, 3, backend="numpy"))
    as_int = view.astype(np.uint8)
    np.testing.assert_array_equal(drop_small_regions(as_int.astype(bool), 3, backend="cpp"),
                                  drop_small_regions(view, 3, backend="numpy"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_expand_matches_repeat(rng, backend):
    for _ in range(60):
        hb, wb = int(rng.integers(0, 12)), int(rng.integers(0, 12))
        small = rng.random((hb, wb)) < 0.5
        f = int(rng.integers(1, 5))
        h, w = int(rng.integers(0, hb * f + 1)), int(rng.integers(0, wb * f + 1))
        want = np.repeat(np.repeat(small, f, 0), f, 1)[:h, :w]
        got = expand_blocks(small, f, h, w, backend=backend)
        assert got.shape == (h, w)
        np.testing.assert_array_equal(got, want)


def test_expand_rejects_oversized_crop():
    with pytest.raises(ValueError, match="larger"):
        expand_blocks(np.ones((3, 3), bool), 2, 7, 6, backend="cpp")


def test_bin_mean_equals_reshaped_mean(rng):
    from fastsac.support.mask import bin_mean

    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        f = int(rng.integers(1, 5))
        img = rng.normal(100, 30, (h, w)).astype(np.float32)
        hb, wb = -(-h // f), -(-w // f)
        ref = np.pad(img, ((0, hb * f - h), (0, wb * f - w)), mode="edge")
        ref = ref.reshape(hb, f, wb, f).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
        got = bin_mean(img, f)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)


def test_open_disk_equals_scipy(rng):
    from scipy import ndimage as ndi

    from fastsac.support.mask import _open_disk

    for r in (1, 2, 3, 5):
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = xx * xx + yy * yy <= r * r
        for shape, p in (((30, 41), 0.7), ((64, 64), 0.85), ((5, 3), 0.9), ((1, 20), 1.0), ((20, 20), 0.0)):
            region = rng.random(shape) < p
            np.testing.assert_array_equal(_open_disk(region, r), ndi.binary_opening(region, structure=disk))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int16, np.uint8, np.uint32])
def test_bin_mean_cpp_matches_reference(rng, dtype):
    from fastsac.support.mask import bin_mean

    for _ in range(25):
        h, w = (int(v) for v in rng.integers(1, 45, 2))
        f = int(rng.integers(1, 9))
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            img = rng.integers(info.min, min(info.max, 1 << 24), (h, w), endpoint=True).astype(dtype)
        else:
            img = (rng.normal(0, 1, (h, w)) * 10.0 ** rng.integers(-20, 20, (h, w))).astype(dtype)
        want = bin_mean(img, f, backend="numpy")
        got = bin_mean(img, f, backend="cpp")
        assert got.dtype == np.float32 and got.shape == (-(-h // f), -(-w // f))
        np.testing.assert_array_equal(got, want)


def test_bin_mean_nan_inf_and_views(rng):
    from fastsac.support.mask import bin_mean

    img = rng.normal(100, 5, (33, 47)).astype(np.float32)
    img[3, 4], img[20, 46], img[32, 0] = np.nan, np.inf, -np.inf
    np.testing.assert_array_equal(bin_mean(img, 4, backend="cpp"), bin_mean(img, 4, backend="numpy"))
    view = rng.integers(0, 60000, (80, 90)).astype(np.uint16)[5::2, ::3]
    np.testing.assert_array_equal(bin_mean(view, 3, backend="cpp"), bin_mean(view, 3, backend="numpy"))
    for shape in ((0, 4), (5, 0), (0, 0)):
        empty = np.zeros(shape, np.float32)
        assert bin_mean(empty, 2, backend="cpp").shape == bin_mean(empty, 2, backend="numpy").shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_disk_matches_distance_transform(rng, backend):
    from scipy import ndimage as ndi

    from fastsac.support.mask import _near_disk

    for region in _cases(rng):
        for radius, scale in ((0.0, 1.0), (1.0, 1.0), (1.5, 1.0), (5.0, 1.0), (6.9, 1.0),
                              (np.sqrt(50.0), 1.0), (11.3, 4.0), (29.657, 4.0), (-1.0, 1.0)):
            got = _near_disk(region, radius, scale, backend=backend)
            if region.any():
                want = ndi.distance_transform_edt(~region) * scale <= radius
            else:
                want = np.zeros(region.shape, bool)
            assert got.dtype == bool and got.shape == region.shape
            np.testing.assert_array_equal(got, want, err_msg=f"radius={radius} scale={scale}")
