"""Constants and unit helpers shared by the point statistics."""

from __future__ import annotations

import math


__all__ = ["DEFAULT_MULTIMER_CUTOFF_NM", "MONTE_CARLO_MAX_POINTS", "CLUSTER_CLASSES", "to_nm", "json_float"]

DEFAULT_MULTIMER_CUTOFF_NM = 0.23
#: Pixel size used to convert nm defaults when an image is uncalibrated (ptnc-train).
#: With more points, Clark–Evans' "auto" correction on a mask is Donnelly's, not Monte Carlo.
MONTE_CARLO_MAX_POINTS = 20000
#: Cluster classes by size: 1, 2, 3 and ≥ 4 atoms.
CLUSTER_CLASSES = ("monomer", "dimer", "trimer", "4plus")


def to_nm(value_px, px_nm, power: int = 1):
    """Convert a px length (power 1), area (2) or density (-2) to nm; None when uncalibrated."""
    if px_nm is None or value_px is None:
        return None
    return float(value_px) * px_nm**power


def json_float(x) -> float | None:
    """JSON-ready float (NaN/inf → None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
