"""Where the real data lives (../shared beside the repo, or $FASTSAC_SHARED).

A uniquely named module rather than ``conftest`` so test files can import it
without clashing with per-directory conftest files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAC_SHARED", REPO.parent / "shared"))
PTNC = SHARED / "data" / "ptnc-train"
SAC_CNN_CKPT = SHARED / "models" / "sac_cnn_ptnc.ckpt"


def backend_params(kernel):
    """Every registered backend of a :class:`fastsac._backend.Kernel` as pytest params,
    CUDA under the ``gpu`` marker (parity fixtures of the kernel tests)."""
    import pytest

    from fastsac import _backend

    return [pytest.param(b.value, marks=pytest.mark.gpu) if b is _backend.Backend.CUDA else b.value
            for b in kernel.impls]


def ptnc_stems() -> list[str]:
    return sorted(p.stem for p in (PTNC / "images").glob("*.tif"))



def spots(shape=(1024, 1024), *, n=600, sigma=2.0, amp=60.0, seed=0, pairs=60):
    """A small stand-in for the simulator: Gaussian atoms on a smooth support with
    Poisson + read noise. uint16 image and the true [x, y] positions (some close
    pairs, so multimers and clusters exist, also across tile borders)."""
    rng = np.random.default_rng(seed)
    H, W = shape
    xy = rng.uniform([3, 3], [W - 4, H - 4], size=(n, 2))
    # close pairs (0.15–0.25 nm at 0.0293 nm/px = 5–8 px) so clusters exist, incl. across tiles
    base = rng.uniform([3, 3], [W - 12, H - 12], size=(pairs, 2))
    ang = rng.uniform(0, 2 * np.pi, pairs)
    dist = rng.uniform(6.5, 8.0, pairs)
    partner = base + np.stack([np.cos(ang), np.sin(ang)], 1) * dist[:, None]
    xy = np.concatenate([xy, base, np.clip(partner, 3, [W - 4, H - 4])])
    yy, xx = np.mgrid[0:H, 0:W]
    support = 400 + 80 * np.sin(xx / 97.0) * np.cos(yy / 131.0) + 0.05 * xx
    img = support.astype(np.float64)
    r = int(4 * sigma) + 1
    for x, y in xy:
        xi, yi = int(round(x)), int(round(y))
        y0, y1, x0, x1 = max(yi - r, 0), min(yi + r + 1, H), max(xi - r, 0), min(xi + r + 1, W)
        g = np.exp(-((xx[y0:y1, x0:x1] - x) ** 2 + (yy[y0:y1, x0:x1] - y) ** 2) / (2 * sigma**2))
        img[y0:y1, x0:x1] += amp * g
    img = rng.poisson(img).astype(np.float64) + rng.normal(0, 4, shape)
    return np.clip(img, 0, 65535).astype(np.uint16), xy
