"""CUDA kernel tests run on a real GPU when there is one, else in numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``, set here before numba.cuda is imported).

Tests marked ``gpu`` (larger inputs, torch CUDA tensors) need a real device.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest


def _real_gpu() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    return shutil.which("nvidia-smi") is not None and os.environ.get("FASTSAC_NO_GPU") != "1"


REAL_GPU = _real_gpu()
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
if not REAL_GPU and "numba.cuda" not in sys.modules:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    try:
        from numba.core import config as _config

        _config.reload_config()
    except ImportError:
        pass


def _cuda_usable():
    from fastsac._backend import Backend, unavailable_reason

    unavailable_reason.cache_clear()
    return unavailable_reason(Backend.CUDA)


@pytest.fixture(scope="session")
def cuda_ok():
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


def pytest_configure(config):
    # numba-cuda's own warning classes live outside numba.core (not covered by pyproject).
    config.addinivalue_line("filterwarnings", "ignore:Grid size.*under-utilization")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:numba_cuda.*")
