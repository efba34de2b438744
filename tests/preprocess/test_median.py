"""Median filter: every backend equals the reference (scipy's reflect median) exactly."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fastsac_testdata import backend_params
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi

from fastsac import _backend
from fastsac.preprocess import _median_filter_numpy_ref, _median_kernel, median_filter



@pytest.fixture(params=backend_params(_median_kernel))
def backend(request):
    name = request.param
    if name not in _median_kernel.available():
        pytest.skip(f"{name} backend not available here")
    return name


def brute_median(image: np.ndarray, size: int) -> np.ndarray:
    """Independent oracle: repeated half-sample reflection, window i - size//2 …,
    element of rank size²//2."""
    a, b = size // 2, size - 1 - size // 2
    padded = np.pad(image, ((a, b), (a, b)), mode="symmetric")
    win = sliding_window_view(padded, (size, size)).reshape(*image.shape, -1)
    k = size * size // 2
    return np.partition(win, k, axis=-1)[..., k]


def images(rng):
    yield "random", rng.random((37, 53), dtype=np.float32)
    yield "ties", rng.integers(0, 4, (29, 31)).astype(np.float32)
    yield "wide-range", (rng.standard_normal((23, 41)) * 1e30).astype(np.float32)
    yield "constant", np.full((17, 19), 3.25, np.float32)
    yield "signed-zero", rng.choice(np.array([-0.0, 0.0, -1.0, 1.0], np.float32), (15, 16))
    yield "extremes", rng.choice(np.array([-3e38, 3e38, 0, 1], np.float32), (12, 13))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8, 11])
def test_parity_with_scipy(backend, rng, size):
    for name, img in images(rng):
        ref = ndi.median_filter(img, size=size, mode="reflect")
        got = _median_kernel(img, size, backend=backend)
        assert got.dtype == np.float32 and got.shape == img.shape
        np.testing.assert_array_equal(got, ref, err_msg=f"{name}, size {size}")


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), (2, 7), (3, 3), (5, 64)])
@pytest.mark.parametrize("size", [1, 2, 6, 9, 21, 40])
def test_small_and_thin_images(backend, rng, shape, size):
    img = rng.random(shape, dtype=np.float32)
    got = _median_kernel(img, size, backend=backend)
    np.testing.assert_array_equal(got, brute_median(img, size))
    np.testing.assert_array_equal(got, _median_filter_numpy_ref(img, size))


def test_reference_avoids_scipy_uninitialised_border():
    # scipy reads uninitialised memory when the reflected border is ≥ 4× the
    # image extent; the reference pads itself there (see its docstring).
    img = np.array([[10.0, 11.0]] * 5, np.float32)
    np.testing.assert_array_equal(_median_filter_numpy_ref(img, 21), brute_median(img, 21))
    assert np.isin(_median_filter_numpy_ref(img, 21), img).all()


def test_random_sizes_vs_oracle(backend, rng):
    for _ in range(20):
        h, w = rng.integers(1, 48, 2)
        size = int(rng.integers(1, 30))
        img = rng.integers(0, 6, (h, w)).astype(np.float32) + rng.random() * (rng.random((h, w)) < 0.3)
        img = img.astype(np.float32)
        np.testing.assert_array_equal(_median_kernel(img, size, backend=backend),
                                      brute_median(img, size), err_msg=f"{(h, w)} size {size}")


def test_size_40_on_larger_image(backend, rng):
    # Several strips and threads, reflect borders on every side.
    img = rng.gamma(2.0, 10.0, (150, 133)).astype(np.float32)
    np.testing.assert_array_equal(_median_kernel(img, 40, backend=backend),
                                  ndi.median_filter(img, size=40, mode="reflect"))


def test_public_api_dtypes_noncontiguous_and_no_mutation(backend, rng):
    base = rng.integers(0, 255, (40, 60)).astype(np.uint8)
    ref = ndi.median_filter(base.astype(np.float32), size=5, mode="reflect")
    for img in (base, base.astype(np.float64), np.asfortranarray(base.astype(np.float32))):
        before = img.copy()
        out = median_filter(img, size=5, backend=backend)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(img, before)
    view = base.astype(np.float32)[::2, ::3]  # non-contiguous view
    np.testing.assert_array_equal(median_filter(view, size=4, backend=backend),
                                  ndi.median_filter(np.ascontiguousarray(view), size=4, mode="reflect"))


def test_nan_rejected():
    img = np.ones((8, 8), np.float32)
    img[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        median_filter(img, size=3)
    with pytest.raises(ValueError, match="size"):
        median_filter(np.ones((4, 4)), size=0)


def test_threads_give_identical_results(backend, rng):
    img = rng.random((120, 90), dtype=np.float32)
    ref = ndi.median_filter(img, size=7, mode="reflect")
    results = [None] * 4

    def work(i):
        results[i] = median_filter(img, size=7, backend=backend)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, ref)


def test_cpp_explicitly_when_built(rng):
    if _backend._core() is None:
        pytest.skip("fastsac._core not built")
    img = rng.random((30, 30), dtype=np.float32)
    np.testing.assert_array_equal(median_filter(img, size=6, backend="cpp"),
                                  ndi.median_filter(img, size=6, mode="reflect"))
    assert _median_kernel.resolve("auto") is _backend.Backend.CPP


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match=r"backend must be one of .*'cpp'.*'numpy'"):
        median_filter(np.ones((4, 4)), size=3, backend="fortran")
