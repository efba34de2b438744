"""The whole analysis of one micrograph: detect → neighbours → clusters → summary.

``analyze`` is what ``fastsac analyze`` runs per image; ``write_result``
writes its outputs atomically (atoms.csv, summary.json, overlay.png).
"""

from __future__ import annotations

import csv
import io as _stdio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .detect import DEFAULT_PIXEL_SIZE_NM, Detections, get_detector
from .io import Micrograph, atomic_write_text, write_json
from .spatial import clusters, nearest_neighbors

__all__ = ["analyze", "AnalysisResult", "write_result", "ATOM_COLUMNS", "write_summary_csv"]

#: Columns of atoms.csv, in order.
ATOM_COLUMNS = ["x_px", "y_px", "x_nm", "y_nm", "score", "amplitude", "sigma_px", "intensity",
                "nn_dist_nm", "cluster_id", "cluster_size"]


@dataclass(frozen=True)
class AnalysisResult:
    """Detections of one image with per-atom neighbour/cluster data and a summary.

    ``nn_dist_nm`` is in nm when the pixel size is known, else in pixels (then
    ``summary["length_unit"] == "px"``).
    """

    name: str
    micrograph: Micrograph
    detections: Detections
    nn_dist: np.ndarray
    nn_index: np.ndarray
    cluster_id: np.ndarray
    cluster_size: np.ndarray
    summary: dict = field(default_factory=dict)

    @property
    def pixel_size_nm(self) -> float | None:
        return self.micrograph.pixel_size_nm

    def atoms_table(self) -> dict[str, np.ndarray]:
        """Per-atom columns (see :data:`ATOM_COLUMNS`)."""
        d = self.detections
        px = self.pixel_size_nm
        scale = px if px else np.nan
        return {
            "x_px": d.xy[:, 0], "y_px": d.xy[:, 1],
            "x_nm": d.xy[:, 0] * scale, "y_nm": d.xy[:, 1] * scale,
            "score": d.score, "amplitude": d.amplitude, "sigma_px": d.sigma_px,
            "intensity": d.intensity,
            "nn_dist_nm": self.nn_dist if px else np.full(len(d), np.nan),
            "cluster_id": self.cluster_id, "cluster_size": self.cluster_size,
        }


def _finite_stats(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"mean": None, "median": None, "std": None, "min": None, "max": None}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std()),
            "min": float(v.min()), "max": float(v.max())}


def analyze(micrograph: Micrograph | np.ndarray, *, detector="default",
            multimer_cutoff_nm: float = 0.23, pixel_size_nm: float | None = None,
            backend: str = "auto", detector_params: dict | None = None) -> AnalysisResult:
    """Detect atoms and compute their organisation on one image.

    Parameters
    ----------
    micrograph : Micrograph or (H, W) array
    detector : "default", "classical", a checkpoint path or a Detector
    multimer_cutoff_nm : float
        An atom whose nearest neighbour is closer than this belongs to a
        multimer; clusters join atoms closer than it (single linkage). The
        published workflow uses 0.22–0.23 nm. Without calibration it is
        converted with :data:`~fastsac.detect.DEFAULT_PIXEL_SIZE_NM`.
    pixel_size_nm : float, optional
        Overrides the micrograph's calibration.

    Returns
    -------
    AnalysisResult
    """
    if not isinstance(micrograph, Micrograph):
        micrograph = Micrograph.from_array(micrograph, pixel_size_nm=pixel_size_nm)
    elif pixel_size_nm is not None:
        micrograph = Micrograph(micrograph.data, float(pixel_size_nm), "override",
                                micrograph.source, micrograph.metadata)
    det = get_detector(detector, **(detector_params or {}))
    t0 = time.perf_counter()
    found = det.detect(micrograph)
    t1 = time.perf_counter()
    px = micrograph.pixel_size_nm
    unit_px = px if px else None
    cutoff_px = multimer_cutoff_nm / (px or DEFAULT_PIXEL_SIZE_NM)
    nn = nearest_neighbors(found.xy, backend=backend)
    cl = clusters(found.xy, cutoff=cutoff_px, backend=backend)
    t2 = time.perf_counter()
    nn_dist = nn.distance * unit_px if unit_px else nn.distance
    summary = _summary(micrograph, found, nn_dist, cl.labels, cl.sizes, multimer_cutoff_nm,
                       cutoff_px)
    summary["detector"] = {"name": found.detector, "params": found.params}
    summary["timings_s"] = {**found.timings, "detect_total": t1 - t0, "spatial": t2 - t1}
    summary["backend"] = {"nearest_neighbors": nn.backend, "clusters": cl.backend}
    return AnalysisResult(micrograph.name, micrograph, found, nn_dist, nn.index, cl.labels,
                          cl.sizes, summary)


def _summary(m: Micrograph, d: Detections, nn_dist, labels, sizes, cutoff_nm, cutoff_px) -> dict:
    h, w = m.shape
    px = m.pixel_size_nm
    n = len(d)
    unit = "nm" if px else "px"
    area = h * w * (px * px if px else 1.0)
    density = n / area
    finite_nn = nn_dist[np.isfinite(nn_dist)]
    cutoff = cutoff_nm if px else cutoff_px
    multimer = int(np.sum(finite_nn < cutoff))
    random_nn = 1.0 / (2.0 * math.sqrt(density)) if density > 0 else None
    counts = np.bincount(labels) if n else np.zeros(0, int)
    size_hist = {"monomers": int(np.sum(counts == 1)), "dimers": int(np.sum(counts == 2)),
                 "trimers": int(np.sum(counts == 3)), "larger": int(np.sum(counts >= 4))}
    atoms_in = {"monomer": int(np.sum(sizes == 1)), "dimer": int(np.sum(sizes == 2)),
                "trimer": int(np.sum(sizes == 3)), "larger": int(np.sum(sizes >= 4))}
    mean_nn = float(finite_nn.mean()) if len(finite_nn) else None
    return {
        "fastsac_version": __version__,
        "image": m.name,
        "source": m.source,
        "shape_px": [h, w],
        "pixel_size_nm": px,
        "pixel_size_source": m.pixel_size_source,
        "length_unit": unit,
        "n_atoms": n,
        f"field_area_{unit}2": area,
        f"density_per_{unit}2": density,
        f"nn_dist_{unit}": _finite_stats(nn_dist),
        f"multimer_cutoff_{unit}": cutoff,
        "multimer_atoms": multimer,
        "multimer_share": multimer / n if n else None,
        f"random_nn_expectation_{unit}": random_nn,
        "clark_evans_ratio_uncorrected": (mean_nn / random_nn) if (mean_nn and random_nn) else None,
        "clusters": size_hist,
        "atoms_in_clusters": atoms_in,
    }


def _atoms_csv(result: AnalysisResult) -> str:
    table = result.atoms_table()
    buf = _stdio.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(ATOM_COLUMNS)
    cols = [table[c] for c in ATOM_COLUMNS]
    for i in range(len(result.detections)):
        row = []
        for c, col in zip(ATOM_COLUMNS, cols):
            v = col[i]
            if c in ("cluster_id", "cluster_size"):
                row.append(int(v))
            else:
                row.append("" if not np.isfinite(v) else f"{float(v):.6g}")
        wr.writerow(row)
    return buf.getvalue()


def write_result(result: AnalysisResult, out_dir: str | Path, *, overlay: bool = True) -> dict:
    """Write ``out_dir/atoms.csv``, ``summary.json`` and ``overlay.png`` atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"atoms": atomic_write_text(out / "atoms.csv", _atoms_csv(result)),
             "summary": write_json(out / "summary.json", result.summary)}
    if overlay:
        from .report import save_overlay

        paths["overlay"] = save_overlay(out / "overlay.png", result.micrograph.data,
                                        result.detections.xy,
                                        pixel_size_nm=result.pixel_size_nm,
                                        cluster_sizes=result.cluster_size,
                                        title=result.name)
    return paths


SUMMARY_COLUMNS = ["image", "n_atoms", "pixel_size_nm", "pixel_size_source", "length_unit",
                   "density", "nn_mean", "nn_median", "multimer_share", "random_nn_expectation",
                   "clark_evans_ratio_uncorrected", "monomers", "dimers", "trimers", "larger",
                   "detector", "status"]


def summary_row(summary: dict) -> dict:
    """One flat row of ``summary.csv`` from a summary dict."""
    u = summary["length_unit"]
    nn = summary[f"nn_dist_{u}"]
    return {"image": summary["image"], "n_atoms": summary["n_atoms"],
            "pixel_size_nm": summary["pixel_size_nm"],
            "pixel_size_source": summary["pixel_size_source"], "length_unit": u,
            "density": summary[f"density_per_{u}2"], "nn_mean": nn["mean"],
            "nn_median": nn["median"], "multimer_share": summary["multimer_share"],
            "random_nn_expectation": summary[f"random_nn_expectation_{u}"],
            "clark_evans_ratio_uncorrected": summary["clark_evans_ratio_uncorrected"],
            **summary["clusters"], "detector": summary["detector"]["name"], "status": "ok"}


def write_summary_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write the batch table atomically (one row per image; failed images have status=error)."""
    buf = _stdio.StringIO()
    cols = list(SUMMARY_COLUMNS)
    for r in rows:
        cols += [k for k in r if k not in cols]
    wr = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", restval="")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())
