"""Shared fixtures: the real data in ../shared (override with FASTSAC_SHARED)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastsac_testdata import PTNC, SAC_CNN_CKPT, SHARED, ptnc_stems  # noqa: F401


@pytest.fixture(scope="session")
def ptnc_dir() -> Path:
    if not (PTNC / "images").is_dir():
        pytest.skip(f"real data not found at {PTNC} (set FASTSAC_SHARED)")
    return PTNC


@pytest.fixture(scope="session")
def sac_cnn_ckpt() -> Path:
    if not SAC_CNN_CKPT.is_file():
        pytest.skip(f"SAC-CNN checkpoint not found at {SAC_CNN_CKPT} (set FASTSAC_SHARED)")
    return SAC_CNN_CKPT


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
