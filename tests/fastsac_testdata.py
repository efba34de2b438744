"""Where the real data lives (../shared beside the repo, or $FASTSAC_SHARED).

A uniquely named module rather than ``conftest`` so test files can import it
without clashing with per-directory conftest files.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAC_SHARED", REPO.parent / "shared"))
PTNC = SHARED / "data" / "ptnc-train"
SAC_CNN_CKPT = SHARED / "models" / "sac_cnn_ptnc.ckpt"


def ptnc_stems() -> list[str]:
    return sorted(p.stem for p in (PTNC / "images").glob("*.tif"))
