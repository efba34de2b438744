"""The whole analysis of one micrograph: detect → neighbours → clusters → summary.

``analyze`` is what ``fastsac analyze`` runs per image; ``write_result``
writes its outputs atomically (atoms.csv, summary.json, overlay.png).
"""

from __future__ import annotations

import csv
import io as _stdio
import os
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
                "nn_dist_nm", "cluster_id", "cluster_size", "in_support", "species", "species_probability"]
#: atoms.csv columns written as text.
_TEXT_COLUMNS = ("species",)


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
    support: np.ndarray | None = field(default=None, repr=False)
    #: fastsac.species.SpeciesAssignment (None: species not run)
    species: object | None = field(default=None, repr=False)
    #: fastsac.spatial.clusters_table.ClusterTable
    cluster_table: object | None = field(default=None, repr=False)
    #: fastsac.spatial.stats.DispersionStats (for the figures)
    dispersion: object | None = field(default=None, repr=False)

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
            "in_support": self.in_support(),
            "species": (self.species.species if self.species is not None
                        else np.full(len(d), "", dtype=object)),
            "species_probability": (self.species.probability if self.species is not None
                                    else np.full(len(d), np.nan)),
        }

    def in_support(self) -> np.ndarray:
        """(N,) int 1/0: the atom lies on support (not vacuum); all 1 without a mask."""
        xy = self.detections.xy
        if self.support is None or not len(xy):
            return np.ones(len(xy), np.int64)
        h, w = self.support.shape
        r = np.clip(np.floor(xy[:, 1] + 0.5).astype(int), 0, h - 1)
        c = np.clip(np.floor(xy[:, 0] + 0.5).astype(int), 0, w - 1)
        return self.support[r, c].astype(np.int64)


def analyze(micrograph: Micrograph | np.ndarray, *, detector="default",
            multimer_cutoff_nm: float = 0.23, pixel_size_nm: float | None = None,
            support_mask: bool = True, backend: str = "auto",
            detector_params: dict | None = None, mask_params: dict | None = None,
            stats_params: dict | None = None, elements=None,
            estimate_pixel_size: bool = True) -> AnalysisResult:
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
    support_mask : bool
        Find vacuum (dark and flat) and report densities and Clark–Evans per
        area of support (:func:`fastsac.spatial.mask.support_mask`).
    mask_params : dict, optional
        Keyword arguments for :func:`~fastsac.spatial.mask.support_mask`
        (e.g. ``working_px``). When the detector runs on a GPU the mask is
        computed at the same time (on the GPU too, unless ``mask_params`` says
        ``device="cpu"``).
    stats_params : dict, optional
        Keyword arguments for :func:`~fastsac.spatial.stats.dispersion` (e.g.
        ``mask_correction="donnelly"`` instead of Monte Carlo, for live frames).
    elements : sequence of str, optional
        Elements present (e.g. ``["Pt", "Pd"]``): species per atom by the
        Z-contrast mixture (:func:`fastsac.species.species_of_atoms`); None:
        intensity classes whose number comes from the data.
    estimate_pixel_size : bool
        Without a calibration, estimate the pixel size from the apparent atom
        size (:func:`fastsac.scale.estimate_atom_scale`; summary
        ``pixel_size_source: "estimated from atom size"``).

    Returns
    -------
    AnalysisResult
        ``summary`` holds the keys documented in docs/statistics.md
        (:meth:`fastsac.spatial.stats.DispersionStats.as_dict`) plus image,
        calibration, detector and timing information.
    """
    from .spatial.mask import require_support
    from .spatial.mask import support_mask as find_support
    from .spatial.stats import dispersion

    if not isinstance(micrograph, Micrograph):
        micrograph = Micrograph.from_array(micrograph, pixel_size_nm=pixel_size_nm)
    elif pixel_size_nm is not None:
        micrograph = Micrograph(micrograph.data, float(pixel_size_nm), "override",
                                micrograph.source, micrograph.metadata)
    scale_estimate = None
    if micrograph.pixel_size_nm is None and estimate_pixel_size:
        from .scale import estimate_atom_scale

        scale_estimate = estimate_atom_scale(micrograph.data)
        if np.isfinite(scale_estimate.pixel_size_nm) and not scale_estimate.at_edge:
            micrograph = Micrograph(micrograph.data, float(scale_estimate.pixel_size_nm),
                                    "estimated from atom size", micrograph.source, micrograph.metadata)
    det = get_detector(detector, **(detector_params or {}))
    px = micrograph.pixel_size_nm
    mask_job = None
    if support_mask and getattr(det, "device", "cpu") != "cpu":
        # GPU detection leaves the CPU idle: find the support meanwhile.
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsac-mask")
        mask_job = pool.submit(find_support, micrograph.data, pixel_size_nm=px,
                               **({"device": det.device} | (mask_params or {})))
        pool.shutdown(wait=False)
    t0 = time.perf_counter()
    found = det.detect(micrograph)
    t1 = time.perf_counter()
    cutoff_px = multimer_cutoff_nm / (px or DEFAULT_PIXEL_SIZE_NM)
    nn = nearest_neighbors(found.xy, backend=backend)
    cl = clusters(found.xy, cutoff=cutoff_px, backend=backend)
    if mask_job is not None:
        mask = mask_job.result()
    else:
        mask = (find_support(micrograph.data, pixel_size_nm=px, **(mask_params or {}))
                if support_mask else None)
    t2 = time.perf_counter()
    if mask is not None:
        require_support(mask, micrograph.source or micrograph.name)
    disp = dispersion(found.xy, image_shape=micrograph.shape, pixel_size_nm=px,
                      mask=None if mask is None else mask.mask,
                      multimer_cutoff_px=cutoff_px, backend=backend, **(stats_params or {}))
    t3 = time.perf_counter()
    from .spatial.clusters_table import cluster_table
    from .species import species_of_atoms

    species = species_of_atoms(micrograph.data, found.xy, pixel_size_nm=px, intensity=found.intensity,
                               intensity_err=getattr(found, "intensity_err", None), elements=elements)
    ctable = cluster_table(found.xy, cl.labels, pixel_size_nm=px,
                           species=species.species if species.status == "ok" else None)
    t4 = time.perf_counter()
    nn_dist = nn.distance * px if px else nn.distance
    summary = {
        "fastsac_version": __version__,
        "image": micrograph.name,
        "source": os.path.abspath(micrograph.source) if micrograph.source else None,
        "shape_px": list(micrograph.shape),
        "pixel_size_nm": px,
        "pixel_size_source": micrograph.pixel_size_source,
        **disp.as_dict(),
        "support": None if mask is None else mask.as_dict(),
        "detector": {"name": found.detector, "params": found.params},
        "pixel_size_estimate": None if scale_estimate is None else scale_estimate.as_dict(),
        "species": species.as_dict(),
        "cluster_size_distribution": ctable.size_distribution(),
        "timings_s": {**found.timings, "detect_total": t1 - t0, "neighbors_mask": t2 - t1,
                      "statistics": t3 - t2, "species_clusters": t4 - t3},
        "backend": {"nearest_neighbors": nn.backend, "clusters": cl.backend},
    }
    return AnalysisResult(micrograph.name, micrograph, found, nn_dist, nn.index, cl.labels,
                          cl.sizes, summary, None if mask is None else mask.mask, species, ctable, disp)


def _csv_text(columns: list, table: dict, n: int) -> str:
    buf = _stdio.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(columns)
    cols = [table[c] for c in columns]
    for i in range(n):
        row = []
        for col in cols:
            v = col[i]
            if isinstance(v, (str, bytes)) or v is None:
                row.append("" if v is None else str(v))
            elif isinstance(v, (int, np.integer)):
                row.append(int(v))
            else:
                row.append("" if not np.isfinite(v) else f"{float(v):.6g}")
        wr.writerow(row)
    return buf.getvalue()


def _atoms_csv(result: AnalysisResult) -> str:
    table = result.atoms_table()
    for c in ("cluster_id", "cluster_size", "in_support"):
        table[c] = np.asarray(table[c]).astype(np.int64)
    return _csv_text(ATOM_COLUMNS, table, len(result.detections))


def _clusters_csv(result: AnalysisResult) -> str:
    t = result.cluster_table
    cols = t.columns()
    return _csv_text(list(cols), cols, len(t))


def write_result(result: AnalysisResult, out_dir: str | Path, *, overlay: bool = True) -> dict:
    """Write ``out_dir/atoms.csv``, ``clusters.csv``, ``summary.json``, ``overlay.png``,
    ``nn_histogram.png`` and ``cluster_sizes.png`` atomically (figures unless ``overlay=False``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"atoms": atomic_write_text(out / "atoms.csv", _atoms_csv(result)),
             "summary": write_json(out / "summary.json", result.summary)}
    if result.cluster_table is not None:
        paths["clusters"] = atomic_write_text(out / "clusters.csv", _clusters_csv(result))
    if overlay and result.dispersion is not None:
        from .report import cluster_distribution_figure, nn_histogram_figure, save_figure

        paths["nn_histogram"] = save_figure(out / "nn_histogram.png", nn_histogram_figure(
            result.dispersion, title=f"{result.name}: nearest-neighbour distances"))
        if result.cluster_table is not None:
            paths["cluster_sizes"] = save_figure(out / "cluster_sizes.png", cluster_distribution_figure(
                result.cluster_table, title=f"{result.name}: cluster sizes"))
    if overlay:
        from .report import save_overlay

        paths["overlay"] = save_overlay(out / "overlay.png", result.micrograph.data,
                                        result.detections.xy,
                                        pixel_size_nm=result.pixel_size_nm,
                                        cluster_sizes=result.cluster_size,
                                        mask=result.support, title=result.name)
    return paths


#: Columns of summary.csv (lengths in nm when calibrated; see docs/statistics.md).
SUMMARY_COLUMNS = ["image", "status", "n_atoms", "n_atoms_in_support", "pixel_size_nm",
                   "pixel_size_source", "length_unit", "support_area_nm2", "vacuum_fraction",
                   "density_per_nm2", "density_per_px2", "nn_mean_nm", "nn_median_nm", "nn_mean_px",
                   "expected_nn_random_nm", "multimer_cutoff_nm", "multimer_fraction",
                   "clark_evans_R", "clark_evans_p_value", "n_monomers", "n_dimers", "n_trimers",
                   "n_clusters_4plus", "atoms_in_dimers", "atoms_in_trimers", "atoms_in_4plus",
                   "detector"]


def summary_row(summary: dict) -> dict:
    """One flat row of ``summary.csv`` from a summary dict."""
    row = {k: summary.get(k) for k in SUMMARY_COLUMNS}
    row["detector"] = summary["detector"]["name"]
    row["status"] = "ok"
    return row


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
