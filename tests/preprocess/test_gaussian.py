"""Gaussian filter: the C++ kernel equals scipy.ndimage.gaussian_filter bit for bit.

Bit-exactness (not a tolerance) is what lets tiled montages reproduce the
whole-image classical score map exactly, so these tests use assert_array_equal.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fastsac.preprocess import _gaussian_kernel, gaussian_filter, gaussian_weights


@pytest.fixture(params=[b.value for b in _gaussian_kernel.impls])
def backend(request):
    if request.param not in _gaussian_kernel.available():
        pytest.skip(f"{request.param} backend not available here")
    return request.param


def scipy_ref(img, sigma, truncate=4.0):
    return ndi.gaussian_filter(img, sigma, mode="reflect", truncate=truncate)


def test_weights_are_scipys():
    from scipy.ndimage._filters import _gaussian_kernel1d  # private, but this is what scipy uses

    for s in (0.3, 1.0, 2.0, 5.86, 32.1):
        r = int(4.0 * s + 0.5)
        np.testing.assert_array_equal(gaussian_weights(s), _gaussian_kernel1d(s, 0, r)[r:])


@pytest.mark.parametrize("sigma", [0.2, 0.5, 1.0, 2.0, 6.0, 32.0])
def test_random_images_bit_identical(backend, rng, sigma):
    for shape in [(64, 80), (129, 37), (300, 7)]:
        img = (rng.standard_normal(shape) * 100 + 50).astype(np.float32)
        got = _gaussian_kernel(img, sigma, 4.0, backend=backend)
        assert got.dtype == np.float32 and got.shape == img.shape
        np.testing.assert_array_equal(got, scipy_ref(img, sigma), err_msg=f"{shape} σ={sigma}")


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 3), (5, 5)])
@pytest.mark.parametrize("sigma", [0.7, 3.0, 40.0])
def test_tiny_images_kernel_wider_than_image(backend, rng, shape, sigma):
    # The reflection repeats (d c b a | a b c d | d c b a …) when the radius exceeds the image.
    img = rng.random(shape, dtype=np.float32)
    np.testing.assert_array_equal(_gaussian_kernel(img, sigma, 4.0, backend=backend),
                                  scipy_ref(img, sigma))


def test_adversarial_values(backend, rng):
    cases = {
        "constant": np.full((20, 30), 7.5, np.float32),
        "impulse at corner": np.pad(np.ones((1, 1), np.float32), ((0, 19), (0, 29))),
        "ties/plateau": rng.integers(0, 3, (25, 25)).astype(np.float32),
        "huge": (rng.standard_normal((16, 17)) * 1e30).astype(np.float32),
        "nan": np.where(rng.random((24, 24)) < 0.02, np.nan, 1.0).astype(np.float32),
        "inf": np.where(rng.random((24, 24)) < 0.02, np.inf, 1.0).astype(np.float32),
    }
    for name, img in cases.items():
        for sigma in (1.0, 4.5):
            np.testing.assert_array_equal(_gaussian_kernel(img, sigma, 4.0, backend=backend),
                                          scipy_ref(img, sigma), err_msg=name)


def test_truncate_changes_radius(backend, rng):
    img = rng.random((50, 60), dtype=np.float32)
    for t in (1.0, 2.5, 6.0):
        np.testing.assert_array_equal(_gaussian_kernel(img, 2.3, t, backend=backend),
                                      scipy_ref(img, 2.3, t))


def test_public_wrapper(rng):
    img16 = rng.integers(0, 60000, (40, 50)).astype(np.uint16)
    out = gaussian_filter(img16, 1.5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, scipy_ref(img16.astype(np.float32), 1.5))
    # non-contiguous input, input not modified
    base = rng.random((60, 80), dtype=np.float32)
    view, before = base[::2, 1::3], base.copy()
    np.testing.assert_array_equal(gaussian_filter(view, 2.0), scipy_ref(np.ascontiguousarray(view), 2.0))
    np.testing.assert_array_equal(base, before)
    # a flat image stays flat, mass is conserved away from nothing (reflect borders)
    np.testing.assert_allclose(gaussian_filter(np.full((30, 30), 3.0), 5.0), 3.0, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_filter(img16, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_filter(img16, -1.0)
