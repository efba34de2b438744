"""CUDA kernel tests run on a real GPU when there is one. Without one they run in
numba's CUDA simulator, in a *separate process* (``test_simulator.py`` starts
``pytest test_parity.py`` with ``NUMBA_ENABLE_CUDASIM=1``): the simulator must be
chosen before numba.cuda is imported and would otherwise make the CUDA backend
look available to every other test of the session.

Tests marked ``gpu`` (larger inputs, torch CUDA tensors) need a real device.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _real_gpu() -> bool:
    if IN_SIMULATOR or os.environ.get("FASTSAC_NO_GPU") == "1":
        return False
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    return shutil.which("nvidia-smi") is not None


REAL_GPU = _real_gpu()
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")


def pytest_configure(config):
    # numba-cuda's own warning classes live outside numba.core (not covered by pyproject).
    config.addinivalue_line("filterwarnings", "ignore:Grid size.*under-utilization")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:numba_cuda.*")


def _cuda_usable():
    from fastsac._backend import Backend, unavailable_reason

    unavailable_reason.cache_clear()
    return unavailable_reason(Backend.CUDA)


@pytest.fixture(scope="session")
def cuda_ok():
    if not (REAL_GPU or IN_SIMULATOR):
        pytest.skip("no GPU: these run in the simulator subprocess (test_simulator.py)")
    why = _cuda_usable()
    if why:
        pytest.skip(f"CUDA backend unusable here: {why}")
    return "gpu" if REAL_GPU else "sim"


@pytest.fixture(scope="session")
def real_gpu():
    if not REAL_GPU:
        pytest.skip("needs a real CUDA device")
    why = _cuda_usable()
    if why:
        pytest.skip(f"CUDA backend unusable: {why}")
    return True


@pytest.fixture(scope="session")
def needs_simulator_run():
    """Skip unless the parity tests must run in the simulator subprocess."""
    if REAL_GPU or IN_SIMULATOR:
        pytest.skip("the parity tests run directly in this process")
