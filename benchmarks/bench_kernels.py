"""pytest-benchmark for the C++ kernels vs their numpy references (sizes × backend).

Run::

    PYTHONPATH=src python -m pytest benchmarks/bench_kernels.py --benchmark-enable \
        --benchmark-json=bench_kernels.json

Every benchmark first asserts parity with the numpy reference on a small input.
The numpy references of the median filter and the Python-loop kernels are only
timed at the small sizes (scipy's 40×40 median takes minutes at 2048²; see
``benchmarks/throughput_kernels.py`` for the large-size ratios).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsac import peaks, preprocess
from fastsac.spatial import neighbors
from throughput_kernels import spot_image  # the same spot scene as the throughput script

BACKENDS = ["numpy", "cpp"]


def _need(kernel, backend):
    if backend not in kernel.available():
        pytest.skip(f"{backend} not available for {kernel.name}")


@pytest.mark.parametrize("n", [128, 512, 2048])
@pytest.mark.parametrize("backend", BACKENDS)
def test_median_filter_40(benchmark, backend, n):
    _need(preprocess._median_kernel, backend)
    if backend == "numpy" and n > 128:
        pytest.skip("scipy's median takes minutes here; see throughput_kernels.py")
    rng = np.random.default_rng(0)
    img = rng.gamma(2.0, 10.0, (n, n)).astype(np.float32)
    small = img[:96, :96].copy()
    assert np.array_equal(preprocess.median_filter(small, size=40, backend=backend),
                          preprocess._median_filter_numpy_ref(small, 40))
    benchmark.pedantic(preprocess.median_filter, args=(img,), kwargs={"size": 40, "backend": backend},
                       rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("n", [512, 2048])
@pytest.mark.parametrize("backend", BACKENDS)
def test_local_maxima(benchmark, backend, n):
    _need(peaks._maxima_kernel, backend)
    img, _ = spot_image(n, np.random.default_rng(1))
    ref = peaks._local_maxima_numpy_ref(img[:200, :200].copy(), 40.0, 2, 0)
    got = peaks.local_maxima(img[:200, :200], threshold=40.0, radius=2, backend=backend)
    assert np.array_equal(got.xy, ref[0])
    benchmark.pedantic(peaks.local_maxima, args=(img,),
                       kwargs={"threshold": 40.0, "radius": 2, "backend": backend}, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("n", [2000, 20000])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nms(benchmark, backend, n):
    _need(peaks._nms_kernel, backend)
    if backend == "numpy" and n > 2000:
        pytest.skip("the Python-loop reference is quadratic")
    rng = np.random.default_rng(2)
    xy = rng.random((n, 2)) * np.sqrt(n) * 4
    s = rng.random(n)
    assert np.array_equal(peaks.nms(xy[:500], s[:500], radius=3.0, backend=backend),
                          peaks._nms_numpy_ref(xy[:500], s[:500], 3.0))
    benchmark.pedantic(peaks.nms, args=(xy, s), kwargs={"radius": 3.0, "backend": backend},
                       rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("n", [1000, 16000])
@pytest.mark.parametrize("method", ["com", "gaussian"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_refinement(benchmark, backend, method, n):
    kernel = peaks._com_kernel if method == "com" else peaks._gauss_kernel
    _need(kernel, backend)
    if backend == "numpy" and n > 1000:
        pytest.skip("the Python-loop reference takes too long")
    rng = np.random.default_rng(3)
    img, xy = spot_image(2048, rng)
    start = np.round(xy[:n])
    if method == "com":
        fn, kw = peaks.refine_com, {"radius": 3, "iterations": 2}
        np.testing.assert_allclose(fn(img, start[:50], backend=backend, **kw),
                                   peaks._refine_com_numpy_ref(img, start[:50], 3, 2), atol=1e-9)
    else:
        fn, kw = peaks.refine_gaussian, {"radius": 4, "sigma": 1.5}
        ref, st = peaks._fit_gaussian_numpy_ref(img, start[:50], 4, 1.5, 0.75, 3.75, np.inf, 50)
        got = fn(img, start[:50], backend=backend, **kw)
        assert np.array_equal(got.status, st)
        np.testing.assert_allclose(got.xy, ref[:, :2], atol=1e-4)
    benchmark.pedantic(fn, args=(img, start), kwargs={**kw, "backend": backend}, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000])
@pytest.mark.parametrize("what", ["nearest_neighbors", "clusters"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_spatial(benchmark, backend, what, n):
    kernel = neighbors._nn_kernel if what == "nearest_neighbors" else neighbors._cluster_kernel
    _need(kernel, backend)
    if backend == "numpy" and n > 100_000:
        pytest.skip("reference too slow at this size")
    rng = np.random.default_rng(4)
    xy = rng.random((n, 2)) * np.sqrt(n)
    small = xy[:5000]
    if what == "nearest_neighbors":
        fn, kw = neighbors.nearest_neighbors, {}
        got, ref = fn(small, backend=backend), neighbors._nearest_neighbors_numpy_ref(small)
        assert np.array_equal(got.index, ref[1]) and np.array_equal(got.distance, ref[0])
    else:
        fn, kw = neighbors.clusters, {"cutoff": 0.5}
        got, ref = fn(small, cutoff=0.5, backend=backend), neighbors._clusters_numpy_ref(small, 0.5)
        assert np.array_equal(got.labels, ref[0])
    benchmark.pedantic(fn, args=(xy,), kwargs={**kw, "backend": backend}, rounds=3, warmup_rounds=1)


# ----------------------------------------------------------------------------- support-mask kernels
def _vacuum_like(n: int, seed: int = 4) -> np.ndarray:
    """A smooth vacuum region with specks: what the mask's region kernels see."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random((n, n)), n / 64) > 0.5
    return smooth ^ (rng.random((n, n)) < 0.01)


@pytest.mark.parametrize("n", [1024, 4096])
@pytest.mark.parametrize("backend", BACKENDS)
def test_drop_small_regions(benchmark, backend, n):
    from fastsac.spatial import mask as M

    _need(M._drop_small_kernel, backend)
    region = _vacuum_like(n)
    assert np.array_equal(M._drop_small(region[:300, :300], 50, True, backend=backend),
                          M._drop_small_regions_numpy_ref(region[:300, :300], 50, True))
    benchmark.pedantic(M._drop_small, args=(region, 146.0, True), kwargs={"backend": backend},
                       rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("n", [1024, 4096])
@pytest.mark.parametrize("backend", BACKENDS)
def test_near_disk(benchmark, backend, n):
    from fastsac.spatial import mask as M

    _need(M._near_disk_kernel, backend)
    region = _vacuum_like(n)
    assert np.array_equal(M._near_disk(region[:300, :300], 6.0, backend=backend),
                          M._near_disk_numpy_ref(region[:300, :300], 6.0))
    benchmark.pedantic(M._near_disk, args=(region, 6.0), kwargs={"backend": backend},
                       rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("f", [2, 8])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bin_mean(benchmark, backend, f):
    from fastsac.spatial import mask as M

    _need(M._bin_mean_kernel, backend)
    img = np.random.default_rng(5).integers(0, 60000, (4096, 4096)).astype(np.uint16)
    assert np.array_equal(M.bin_mean(img[:301, :299], f, backend=backend),
                          M._bin_mean_numpy_ref(img[:301, :299], f))
    benchmark.pedantic(M.bin_mean, args=(img, f), kwargs={"backend": backend}, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_expand_blocks(benchmark, backend):
    from fastsac.spatial import mask as M

    _need(M._expand_kernel, backend)
    small = _vacuum_like(1024)
    assert np.array_equal(M._expand(small[:50, :70], 3, 149, 208, backend=backend),
                          M._expand_blocks_numpy_ref(small[:50, :70], 3, 149, 208))
    benchmark.pedantic(M._expand, args=(small, 2, 2047, 2048), kwargs={"backend": backend},
                       rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("n", [512, 2048])
@pytest.mark.parametrize("method", ["gaussian-cpp", "box-numpy", "box-cpp"])
def test_local_noise_window(benchmark, method, n):
    """The σ = 32 px local-noise window: scipy-exact Gaussian (C++) vs the extended-box
    cascade (numpy spec, C++): the box's cost does not grow with σ."""
    from fastsac import boxfilter

    window, backend = method.split("-")
    _need(boxfilter._box_kernel if window == "box" else preprocess._gaussian_kernel, backend)
    rng = np.random.default_rng(5)
    img = (rng.standard_normal((n, n)) ** 2).astype(np.float32)
    scale = float(img.max())
    small = img[:96, :80].copy()
    if window == "box":
        assert np.array_equal(boxfilter.box_gaussian_filter(small, 32.0, scale=scale, backend=backend),
                              boxfilter.box_gaussian_filter(small, 32.0, scale=scale, backend="numpy"))
        benchmark(boxfilter.box_gaussian_filter, img, 32.0, scale=scale, backend=backend)
    else:
        assert np.array_equal(preprocess.gaussian_filter(small, 32.0, backend=backend),
                              preprocess.gaussian_filter(small, 32.0, backend="numpy"))
        benchmark(preprocess.gaussian_filter, img, 32.0, backend=backend)
