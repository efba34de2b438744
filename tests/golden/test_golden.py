"""The whole pipeline on one real (ptnc-train 021) and one simulated (the demo) frame:
summary values against tests/golden/golden.json (regenerate with golden.py after an
intended change, and say why in the commit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastsac_testdata import PTNC

from .golden import KEYS, frames, values

GOLDEN = json.loads((Path(__file__).parent / "golden.json").read_text())


@pytest.fixture(scope="module")
def summaries():
    if not (PTNC / "images" / "021.tif").is_file():
        pytest.skip(f"real data not found at {PTNC} (set FASTSAC_SHARED)")
    from fastsac.pipeline import analyze

    return {name: values(analyze(m).summary) for name, m in frames()}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_summary_matches_golden(summaries, name):
    got, want = summaries[name], GOLDEN[name]
    for key, how in KEYS.items():
        if how == "exact":
            assert got[key] == want[key], key
        else:
            assert got[key] == pytest.approx(want[key], rel=how, abs=1e-12), key
    assert got["L_p_value"] == pytest.approx(want["L_p_value"], abs=1e-12)
    assert 0 < got["n_atoms"] and got["n_atoms_in_support"] <= got["n_atoms"]
