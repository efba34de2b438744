"""Timings of the dispersion statistics: sizes × kernel backend.

    PYTHONPATH=src python -m pytest benchmarks/bench_stats.py --benchmark-enable -q

Parity with the numpy reference is asserted before timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.spatial import neighbors
from fastsac.spatial.stats import dispersion, pair_correlation_test

BACKENDS = sorted(set(neighbors._nn_kernel.available()) & set(neighbors._cluster_kernel.available()))


def _pattern(n, size=2048, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, size, (n, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [100, 2000, 20000])
def test_dispersion(benchmark, n, backend):
    xy = _pattern(n)
    ref = dispersion(xy, image_shape=(2048, 2048), pixel_size_nm=0.03, backend="numpy").as_dict()
    got = dispersion(xy, image_shape=(2048, 2048), pixel_size_nm=0.03, backend=backend).as_dict()
    ref.pop("backend"), got.pop("backend")
    assert ref == pytest.approx(got)
    benchmark(dispersion, xy, image_shape=(2048, 2048), pixel_size_nm=0.03, backend=backend)


@pytest.mark.parametrize("n", [50, 500])
def test_pair_correlation_test(benchmark, n):
    xy = _pattern(n, 512)
    benchmark.pedantic(pair_correlation_test, args=(xy,), kwargs={"image_shape": (512, 512), "n_sim": 99},
                       rounds=3, iterations=1)
