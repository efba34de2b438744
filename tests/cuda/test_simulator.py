"""Without a GPU, run the CUDA parity tests in numba's CUDA simulator, in a
subprocess (see conftest.py for why not in this process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_parity_in_cuda_simulator(needs_simulator_run):
    pytest.importorskip("numba")
    src = HERE.parents[1] / "src"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "addopts=", str(HERE / "test_parity.py")],
                          cwd=HERE.parents[1], env=env, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert " passed" in out and "failed" not in out, out[-2000:]
