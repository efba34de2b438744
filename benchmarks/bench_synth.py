"""pytest-benchmark timings of the simulator (run with --benchmark-enable).

    PYTHONPATH=src python -m pytest benchmarks/bench_synth.py --benchmark-enable -q

Parity is asserted before timing: the numba noise kernel equals the numpy
reference that specifies it.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.synth import _noise, simulate
from fastsac.synth.render import Field
from fastsac.synth.params import SimulationParams


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_simulate(benchmark, size):
    simulate(size=64)  # numba warm-up
    img, truth = benchmark(simulate, size=size, seed=0)
    assert img.shape == (size, size) and len(truth) > 0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_perlin_octave_1mpx(benchmark, backend):
    y, x = np.mgrid[0:1024, 0:1024].astype(np.float64)
    ref = _noise.fbm(1, 1, x[:64, :64], y[:64, :64], [20.0], [1.0])
    out = np.zeros((64, 64))
    _noise.octave_add(out, 1, 64, x[:64, :64], y[:64, :64], 20.0, 1.0, backend=backend)
    assert np.allclose(out, ref, atol=1e-12)

    def run():
        o = np.zeros_like(x)
        _noise.octave_add(o, 1, 64, x, y, 20.0, 1.0, backend=backend)
        return o

    benchmark(run)


def test_montage_chunk_1024(benchmark):
    fld = Field(SimulationParams(size=4096, vacuum="holes", dtype="uint16", seed=0))
    fld.render(0, 0, 64, 64)
    out = benchmark(fld.render, 1024, 1024, 1024, 1024, rng=np.random.default_rng(0))
    assert out.shape == (1024, 1024)
