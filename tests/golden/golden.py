"""The golden values of tests/golden/test_golden.py: the whole pipeline on one real
and one simulated frame. Regenerate after an intended change of the analysis:

    FASTSAC_SHARED=../shared PYTHONPATH=src python tests/golden/golden.py > tests/golden/golden.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastsac_testdata import PTNC  # noqa: E402

#: Summary keys compared, and how: "exact" or a relative tolerance.
KEYS = {"n_atoms": "exact", "n_atoms_in_support": "exact", "n_dimers": "exact", "n_trimers": "exact",
        "n_clusters_4plus": "exact", "density_per_nm2": 1e-6, "vacuum_fraction": 1e-6,
        "nn_mean_nm": 1e-5, "nn_median_nm": 1e-5, "multimer_fraction": 1e-9, "clark_evans_R": 1e-5}


def frames():
    """(name, Micrograph) of the two golden frames."""
    from fastsac import read
    from fastsac.synth import demo_image

    return [("ptnc-021", read(PTNC / "images" / "021.tif")), ("synth-demo", demo_image()[0])]


def values(summary: dict) -> dict:
    out = {k: summary[k] for k in KEYS}
    out["L_p_value"] = (summary.get("pair_correlation") or {}).get("L_p_value")
    return out


def main() -> None:
    from fastsac.pipeline import analyze

    print(json.dumps({name: values(analyze(m).summary) for name, m in frames()}, indent=1))


if __name__ == "__main__":
    main()
