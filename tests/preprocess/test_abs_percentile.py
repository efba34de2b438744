"""abs_percentile: the C++ order-statistic selection equals np.percentile(|x|, q) exactly."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.preprocess import _abs_percentile_kernel, abs_percentile


@pytest.mark.parametrize("q", [0.0, 2.0, 50.0, 98.0, 99.5, 100.0])
def test_equals_numpy(rng, q):
    if "cpp" not in _abs_percentile_kernel.available():
        pytest.skip("C++ core not built")
    for trial in range(200):
        n = int(rng.integers(1, 3000))
        x = rng.normal(0, 10 ** rng.uniform(-4, 4), n).astype(np.float32)
        if trial % 4 == 1:
            x = np.round(x)                      # ties
        elif trial % 4 == 2:
            x[: n // 2] = 0                      # a block of zeros
        elif trial % 4 == 3:
            x = np.full(n, -3.25, np.float32)    # constant, negative
        img = x.reshape(1, -1)
        want = np.percentile(np.abs(img), q)
        got = abs_percentile(img, q, backend="cpp")
        assert got == want and np.asarray(got).dtype == np.asarray(want).dtype, (trial, n, got, want)


def test_large_image_and_checks(rng):
    img = rng.standard_t(3, (700, 900)).astype(np.float32)
    for backend in _abs_percentile_kernel.available():
        assert abs_percentile(img, 98, backend=backend) == np.percentile(np.abs(img), 98)
    with pytest.raises(ValueError, match="q must be"):
        abs_percentile(img, 101)
    with pytest.raises(ValueError, match="NaN"):
        abs_percentile(np.full((3, 3), np.nan), 50)
