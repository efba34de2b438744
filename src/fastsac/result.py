"""The one result of an analysis and every view of it.

An analysis (a frame by :func:`fastsac.pipeline.analyze`, a montage by
:func:`fastsac.montage.analyze_montage`, a frame of a live session) is computed
once. Everything a user receives is a writer over that result, never a
recomputation: ``atoms.csv`` and ``atoms.parquet`` (one row per atom,
:data:`ATOM_COLUMNS`), ``summary.json`` (:func:`build_summary`: statistics,
support, pair correlation, provenance), ``support_mask.png``, ``overlay.png``,
the plots, ``report.html`` and the zip bundle (:func:`write_bundle`).

:func:`load_result` reads a saved result folder back (for ``fastsac report`` and
the web app): the statistics come from ``summary.json`` and the per-atom columns
from ``atoms.csv``; nothing is recomputed from the image, and a folder missing
what a view needs is one :class:`~fastsac.errors.FastsacInputError`.
"""

from __future__ import annotations

import csv
import hashlib
import io as _stdio
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__, figures
from .confidence import atom_probability, confidence_columns, confidence_row
from .detectors import Detections
from .errors import FastsacInputError
from .io import Micrograph, atomic_path, atomic_write_text, write_json
from .spatial.stats import ClarkEvans, ClusterStats, DispersionStats, PatternTest, cluster_extents

__all__ = ["ATOM_COLUMNS", "AnalysisResult", "atoms_table", "build_summary", "provenance",
           "write_result", "write_atoms_csv", "write_atoms_parquet", "read_atoms_parquet",
           "write_clusters_csv",
           "write_mask_png", "read_mask_png", "SUMMARY_COLUMNS", "summary_row", "write_summary_csv",
           "write_bundle", "SavedResult", "load_result", "RESULT_FILES"]

#: Columns of atoms.csv / atoms.parquet, in order (README documents each).
ATOM_COLUMNS = ["x_px", "y_px", "x_nm", "y_nm", "score", "amplitude", "sigma_px", "background",
                "intensity", "residual", "x_err_px", "y_err_px", "amplitude_err", "sigma_err_px",
                "background_err", "intensity_err", "fit_status", "nn_dist_px", "nn_dist_nm",
                "cluster_id", "cluster_size", "in_support", "probability", "probability_expert",
                "split_probability"]

#: Integer columns (written without decimals).
INT_COLUMNS = {"cluster_id", "cluster_size", "in_support", "tile", "fit_status", "species",
               "n_atoms"}

#: Files a result folder may hold, and what each is.
RESULT_FILES = {
    "atoms.csv": "one row per atom (ATOM_COLUMNS)",
    "atoms.parquet": "the same table as Parquet (typed, compressed)",
    "summary.json": "statistics, support, pair correlation, provenance",
    "support_mask.png": "support (white) and vacuum (black) at full resolution",
    "overlay.png": "the image with the atoms circled by cluster class",
    "nn_histogram.png": "nearest-neighbour distances against random placement",
    "clusters.csv": "one row per cluster: size in atoms, centroid, radius of gyration and extent in nm, "
                    "species composition (fastsac.spatial.clusters_table)",
    "cluster_sizes.png": "clusters by number of atoms and the cluster-size distribution in nm",
    "pair_correlation.png": "Ripley L(r) - r and g(r) with CSR envelopes",
}


def atoms_table(detections: Detections, *, pixel_size_nm: float | None, nn_dist_px: np.ndarray,
                cluster_id: np.ndarray, cluster_size: np.ndarray, in_support: np.ndarray,
                extra: dict | None = None) -> dict[str, np.ndarray]:
    """The per-atom table (:data:`ATOM_COLUMNS`, then the keys of ``extra``) of
    frames, montages and live frames alike. ``nn_dist_nm`` and the ``*_nm``
    positions are NaN without a calibration."""
    d = detections
    scale = pixel_size_nm if pixel_size_nm else np.nan
    nn = np.asarray(nn_dist_px, np.float64)
    table = {"x_px": d.xy[:, 0], "y_px": d.xy[:, 1],
             "x_nm": d.xy[:, 0] * scale, "y_nm": d.xy[:, 1] * scale,
             "score": d.score, "amplitude": d.amplitude, "sigma_px": d.sigma_px,
             "background": d.background, "intensity": d.intensity, "residual": d.residual,
             "x_err_px": d.x_err_px, "y_err_px": d.y_err_px, "amplitude_err": d.amplitude_err,
             "sigma_err_px": d.sigma_err_px, "background_err": d.background_err,
             "intensity_err": d.intensity_err, "fit_status": np.asarray(d.fit_status, np.int64),
             "nn_dist_px": nn, "nn_dist_nm": nn * scale,
             "cluster_id": np.asarray(cluster_id, np.int64),
             "cluster_size": np.asarray(cluster_size, np.int64),
             "in_support": np.asarray(in_support, np.int64),
             # a pure function of the detections (docs/confidence.md)
             **confidence_columns(atom_probability(d, pixel_size_nm=pixel_size_nm),
                                  d.split_probability, len(d))}
    table.update(extra or {})
    return table


def in_support_of(xy: np.ndarray, mask: np.ndarray | None, bin_factor: int = 1) -> np.ndarray:
    """(N,) int 1/0: the atom's pixel lies on the support (all 1 without a mask)."""
    if mask is None or not len(xy):
        return np.ones(len(xy), np.int64)
    h, w = mask.shape
    r = np.clip(np.floor(xy[:, 1] + 0.5).astype(np.int64) // bin_factor, 0, h - 1)
    c = np.clip(np.floor(xy[:, 0] + 0.5).astype(np.int64) // bin_factor, 0, w - 1)
    return mask[r, c].astype(np.int64)


def provenance(source: str | os.PathLike | None, *, detector: dict | None = None,
               parameters: dict | None = None, hash_limit_bytes: int = 1 << 30) -> dict:
    """Who made this result from what: fastsac version, detector and its parameters,
    analysis parameters, and the input file's size and SHA-256 (skipped, with the
    reason, above ``hash_limit_bytes`` or for directories such as Zarr stores)."""
    prov: dict = {"fastsac_version": __version__, "detector": detector, "parameters": parameters or {}}
    if source:
        p = Path(source)
        prov["input"] = os.path.abspath(p)
        if p.is_file():
            size = p.stat().st_size
            prov["input_bytes"] = size
            if size <= hash_limit_bytes:
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 22), b""):
                        h.update(chunk)
                prov["input_sha256"] = h.hexdigest()
            else:
                prov["input_sha256"] = None
                prov["input_sha256_skipped"] = f"larger than {hash_limit_bytes} bytes"
    return prov


def build_summary(stats: DispersionStats, *, name: str, source, shape, pixel_size_nm,
                  pixel_size_source: str, mask_info: dict | None, pattern: PatternTest | None,
                  detector: dict | None, timings: dict, backends: dict,
                  parameters: dict | None = None, extra: dict | None = None) -> dict:
    """``summary.json`` of frames and montages alike: image, calibration, the
    dispersion statistics (docs/statistics.md), the support, the pair-correlation
    test with its curves (``pair_correlation``), detector, timings and provenance."""
    summary = {
        "fastsac_version": __version__,
        "image": name,
        "source": os.path.abspath(source) if source else None,
        "shape_px": [int(s) for s in shape],
        "pixel_size_nm": pixel_size_nm,
        "pixel_size_source": pixel_size_source,
        **stats.as_dict(),
        "support": mask_info,
        "pair_correlation": None if pattern is None else pattern.as_dict(curves=True),
        "detector": detector,
        "timings_s": timings,
        "backend": backends,
        "provenance": provenance(source, detector=detector, parameters=parameters),
    }
    summary.update(extra or {})
    return summary


@dataclass(frozen=True)
class AnalysisResult:
    """Detections of one image with per-atom neighbour/cluster data, the statistics
    and the summary: computed once by :func:`fastsac.pipeline.analyze`.

    ``nn_dist`` is in nm when the pixel size is known, else in pixels (then
    ``summary["length_unit"] == "px"``); ``stats`` holds the dispersion
    statistics the summary was made from and ``pattern`` the pair-correlation
    test (None when skipped or with fewer than 3 atoms).
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
    stats: DispersionStats | None = field(default=None, repr=False)
    pattern: PatternTest | None = field(default=None, repr=False)
    extra_columns: dict = field(default_factory=dict, repr=False)
    #: fastsac.spatial.clusters_table.ClusterTable (clusters.csv); None for results without one
    cluster_table: object | None = field(default=None, repr=False)
    #: fastsac.species.SpeciesAssignment (atoms columns species, species_probability; summary species)
    species: object | None = field(default=None, repr=False)

    @property
    def pixel_size_nm(self) -> float | None:
        return self.micrograph.pixel_size_nm

    def in_support(self) -> np.ndarray:
        """(N,) int 1/0: the atom lies on support (not vacuum); all 1 without a mask."""
        return in_support_of(self.detections.xy, self.support)

    def atoms_table(self) -> dict[str, np.ndarray]:
        """Per-atom columns (:data:`ATOM_COLUMNS` and any extra columns)."""
        px = self.pixel_size_nm
        nn_px = self.nn_dist / px if px else self.nn_dist
        return atoms_table(self.detections, pixel_size_nm=px, nn_dist_px=nn_px,
                           cluster_id=self.cluster_id, cluster_size=self.cluster_size,
                           in_support=self.in_support(), extra=self.extra_columns)


# --------------------------------------------------------------------------- writers


def _csv_cells(name: str, col: np.ndarray) -> list:
    """One column as CSV cells: strings as they are, integer columns without
    decimals, floats to 6 significant digits and NaN/inf as empty cells."""
    if col.dtype.kind in "USO":
        return [str(v) for v in col.tolist()]
    if name in INT_COLUMNS:
        return [int(v) for v in col.tolist()]
    return [f"{v:.6g}" if math.isfinite(v) else "" for v in col.astype(np.float64).tolist()]


def _csv_text(table: dict[str, np.ndarray], columns: Sequence[str], *, block: int = 1 << 16) -> str:
    # Column by column (no per-cell numpy scalars) and in row blocks (the cells of
    # one block at a time): a million-row clusters.csv in seconds, memory ≈ the text.
    buf = _stdio.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(columns)
    cols = [np.asarray(table[c]) for c in columns]
    n = len(cols[0]) if cols else 0
    for b0 in range(0, n, block):
        wr.writerows(zip(*[_csv_cells(c, col[b0:b0 + block]) for c, col in zip(columns, cols)]))
    return buf.getvalue()


def write_atoms_csv(path, table: dict[str, np.ndarray]) -> Path:
    """``atoms.csv`` (6 significant digits, empty cells for NaN), atomically."""
    return atomic_write_text(path, _csv_text(table, list(table)))


def write_clusters_csv(path, cluster_table) -> Path:
    """``clusters.csv`` of a :class:`~fastsac.spatial.clusters_table.ClusterTable`
    (frames and montages alike; same number format as atoms.csv), atomically."""
    cols = cluster_table.columns()
    return atomic_write_text(path, _csv_text(cols, list(cols)))


def write_atoms_parquet(path, table: dict[str, np.ndarray], summary: dict | None = None) -> Path:
    """The per-atom table as Parquet (int64 for integer columns, float64 else, strings
    as strings), with ``summary`` as JSON in the key-value metadata, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for c, v in table.items():
        v = np.asarray(v)
        if v.dtype.kind in "USO":
            arrays.append(pa.array(v.astype(str)))
        else:
            arrays.append(pa.array(v, type=pa.int64() if c in INT_COLUMNS else pa.float64()))
    t = pa.Table.from_arrays(arrays, names=list(table))
    if summary is not None:
        t = t.replace_schema_metadata({b"fastsac.summary": json.dumps(summary, default=json_default)
                                       .encode()})
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp, compression="zstd")
    return Path(path)


def read_atoms_parquet(path) -> tuple[dict[str, np.ndarray], dict]:
    """Columns and summary written by :func:`write_atoms_parquet`."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    meta = t.schema.metadata or {}
    summary = json.loads(meta.get(b"fastsac.summary", b"{}"))
    return {c: t.column(c).to_numpy() for c in t.column_names}, summary


def write_mask_png(path, mask: np.ndarray) -> Path:
    """A bool mask as a 1-bit PNG (support white), atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(mask, bool)).save(tmp, format="PNG", optimize=True)
    return Path(path)


def read_mask_png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("1"), bool)


def write_result(result: AnalysisResult, out_dir: str | os.PathLike, *, overlay: bool = True,
                 plots: bool = True, parquet: bool = True) -> dict:
    """Write every view of one result into ``out_dir`` atomically (see
    :data:`RESULT_FILES`); nothing is recomputed. Returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = result.atoms_table()
    paths = {"atoms": write_atoms_csv(out / "atoms.csv", table),
             "summary": write_json(out / "summary.json", result.summary)}
    if parquet:
        paths["parquet"] = write_atoms_parquet(out / "atoms.parquet", table, result.summary)
    if result.cluster_table is not None:
        paths["clusters"] = write_clusters_csv(out / "clusters.csv", result.cluster_table)
    if result.support is not None:
        paths["support_mask"] = write_mask_png(out / "support_mask.png", result.support)
    if overlay:
        paths["overlay"] = figures.save_overlay(out / "overlay.png", result.micrograph.data,
                                                result.detections.xy,
                                                pixel_size_nm=result.pixel_size_nm,
                                                cluster_sizes=result.cluster_size,
                                                mask=result.support, title=result.name)
    if plots and result.stats is not None:
        paths.update(figures.save_statistics_plots(out, result.stats, result.pattern,
                                                   cluster_table=result.cluster_table))
    return paths


#: Columns of summary.csv (lengths in nm when calibrated; see docs/statistics.md).
SUMMARY_COLUMNS = ["image", "input", "status", "n_atoms", "n_atoms_in_support", "pixel_size_nm",
                   "pixel_size_source", "length_unit", "support_area_nm2", "vacuum_fraction",
                   "density_per_nm2", "density_per_px2", "nn_mean_nm", "nn_median_nm", "nn_mean_px",
                   "expected_nn_random_nm", "multimer_cutoff_nm", "multimer_fraction",
                   "clark_evans_R", "clark_evans_p_value", "L_p_value", "pattern_verdict",
                   "n_monomers", "n_dimers", "n_trimers", "n_clusters_4plus", "atoms_in_dimers",
                   "atoms_in_trimers", "atoms_in_4plus", "expected_atoms_in_support",
                   "expected_atoms_in_support_lo", "expected_atoms_in_support_hi",
                   "expected_density_per_nm2", "multimer_fraction_lo", "multimer_fraction_hi",
                   "detector"]


def summary_row(summary: dict) -> dict:
    """One flat row of ``summary.csv`` from a summary dict."""
    row = {k: summary.get(k) for k in SUMMARY_COLUMNS}
    pc = summary.get("pair_correlation") or {}
    row.update(confidence_row(summary.get("confidence")))
    row["L_p_value"] = pc.get("L_p_value")
    row["pattern_verdict"] = pc.get("pattern_verdict")
    row["input"] = summary.get("source")
    det = summary.get("detector")
    row["detector"] = det.get("name") if isinstance(det, dict) else det
    row["status"] = "ok"
    return row


def write_summary_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
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


def write_bundle(zip_path, image_dirs: Sequence[str | os.PathLike], *,
                 batch_files: Sequence[str | os.PathLike] = ()) -> Path:
    """The zip bundle: every file of each result folder under ``<folder name>/``
    and the batch files (summary.csv, report.html …) at the top, atomically.

    This is the published workflow's export (CSV, JSON, PNGs) plus fastsac's
    Parquet and HTML; it packs what was written, it computes nothing.
    """
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for d in image_dirs:
                d = Path(d)
                for f in sorted(d.rglob("*")):
                    if f.is_file() and not f.name.startswith("."):
                        zf.write(f, f"{d.name}/{f.relative_to(d).as_posix()}")
            for f in batch_files:
                f = Path(f)
                if f.is_file():
                    zf.write(f, f.name)
    return Path(zip_path)


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class SavedResult:
    """A result folder read back: its summary, per-atom columns, the dispersion
    statistics rebuilt from them (no recomputation), the pattern test, the
    support mask and the saved overlay."""

    name: str
    folder: Path
    summary: dict
    atoms: dict
    stats: DispersionStats
    pattern: PatternTest | None
    mask: np.ndarray | None
    overlay_png: bytes | None


def json_default(o):
    """``json.dumps(default=...)`` for numpy values (anything else as its text)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        rows = list(reader)
    if header is None:
        return {}
    cols = {}
    for j, k in enumerate(h.strip() for h in header):
        vals = [r[j] if j < len(r) else "" for r in rows]
        try:
            cols[k] = np.array([float(v) if v not in ("",) else np.nan for v in vals], np.float64)
        except ValueError:
            cols[k] = np.array(vals, dtype=object)
    return cols


def _need(summary: dict, key: str, where: Path):
    if key not in summary:
        raise FastsacInputError(where, f"summary.json has no {key!r}: it was written by an older "
                                       "fastsac or edited; re-run `fastsac analyze` to rebuild it")
    return summary[key]


def _clark_evans(summary: dict, prefix: str, where: Path) -> ClarkEvans | None:
    if f"{prefix}R" not in summary:
        return None
    g = (lambda k, default=float("nan"): summary.get(f"{prefix}{k}", default))
    num = (lambda v: float("nan") if v is None else float(v))
    return ClarkEvans(R=num(g("R")), R_naive=num(g("R_naive")), mean_nn=num(g("mean_nn_px")),
                      expected_nn=num(g("expected_nn_px")), expected_nn_naive=num(g("expected_nn_naive_px")),
                      se=num(g("se_px")), z=num(g("z")), p_value=num(g("p_value")),
                      n_used=int(g("n_used", 0) or 0), n_points=int(g("n_points", 0) or 0),
                      area=num(g("area_px2")), correction=str(g("correction", "")))


def pattern_from_dict(d: dict | None) -> PatternTest | None:
    """The :class:`PatternTest` saved by :func:`build_summary` (``curves=True``)."""
    if not d or "curve_r_px" not in d:
        return None
    arr = (lambda k: np.array([np.nan if v is None else v for v in d[f"curve_{k}"]], np.float64))
    num = (lambda v: float("nan") if v is None else float(v))
    return PatternTest(
        r_px=arr("r_px"), L_minus_r_px=arr("L_minus_r_px"), L_mean=arr("L_mean"), L_lo=arr("L_lo"),
        L_hi=arr("L_hi"), L_global_lo=arr("L_global_lo"), L_global_hi=arr("L_global_hi"), g=arr("g"),
        g_mean=arr("g_mean"), g_lo=arr("g_lo"), g_hi=arr("g_hi"), g_global_lo=arr("g_global_lo"),
        g_global_hi=arr("g_global_hi"), L_p_value=num(d.get("L_p_value")),
        L_p_clustering=num(d.get("L_p_clustering")), L_p_repulsion=num(d.get("L_p_repulsion")),
        g_p_value=num(d.get("g_p_value")), verdict=str(d.get("pattern_verdict")),
        n_points=int(d.get("pattern_n_points", 0)), n_sim=int(d.get("pattern_n_sim", 0)),
        seed=int(d.get("pattern_seed", 0)), alpha=float(d.get("pattern_alpha", 0.05)),
        bandwidth_px=float(d.get("g_bandwidth_px", 0.0)),
        test_range_px=(float(d.get("pattern_test_rmin_px", 0.0)), float(d.get("pattern_test_rmax_px", 0.0))),
        pixel_size_nm=d.get("pixel_size_nm"))


def load_result(folder: str | os.PathLike) -> SavedResult:
    """Read a result folder written by :func:`write_result`.

    The dispersion statistics are rebuilt from ``summary.json`` (Clark–Evans,
    areas, cutoffs) and ``atoms.csv`` (positions, NN distances, clusters,
    ``in_support``) without touching the image; missing pieces raise
    :class:`~fastsac.errors.FastsacInputError` naming the file and what is missing.
    """
    f = Path(folder)
    sj, ac = f / "summary.json", f / "atoms.csv"
    for p in (sj, ac):
        if not p.is_file():
            raise FastsacInputError(p, "missing; is this a `fastsac analyze` result folder?")
    try:
        summary = json.loads(sj.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FastsacInputError(sj, f"not valid JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise FastsacInputError(sj, "not a fastsac summary (expected a JSON object)")
    cols = _read_csv_columns(ac)
    n = len(next(iter(cols.values()))) if cols else 0
    needed = ("x_px", "y_px", "nn_dist_px", "cluster_id", "cluster_size", "in_support")
    missing = [c for c in needed if c not in cols]
    if missing and n:
        raise FastsacInputError(ac, f"has no column(s) {', '.join(missing)}: written by an older fastsac; "
                                    "re-run `fastsac analyze`")
    if not n:
        cols = {c: np.zeros(0) for c in needed} | cols
    for k in ("image_height_px", "image_width_px", "image_area_px2", "support_area_px2",
              "multimer_cutoff_px", "cluster_cutoff_px"):
        _need(summary, k, sj)
    px = summary.get("pixel_size_nm")
    xy = np.column_stack([cols["x_px"], cols["y_px"]]).astype(np.float64)
    nn = np.where(np.isnan(cols["nn_dist_px"]), np.inf, cols["nn_dist_px"])
    labels = cols["cluster_id"].astype(np.int64)
    sizes = cols["cluster_size"].astype(np.int64)
    n_clusters = int(labels.max()) + 1 if n else 0
    cluster_size = np.bincount(labels, minlength=n_clusters).astype(np.int64) if n else np.zeros(0, np.int64)
    extent = cluster_extents(xy, labels, cluster_size)
    cut = float(summary["multimer_cutoff_px"])
    ce_img = _clark_evans(summary, "ce_image_", sj)
    if ce_img is None:
        raise FastsacInputError(sj, "has no Clark–Evans values (ce_image_*); re-run `fastsac analyze`")
    stats = DispersionStats(
        xy=xy, nn_distance_px=nn, nn_index=np.full(n, -1, np.int64), multimer=nn < cut,
        multimer_cutoff_px=cut, in_support=cols["in_support"].astype(bool),
        image_shape=(int(summary["image_height_px"]), int(summary["image_width_px"])),
        image_area_px2=float(summary["image_area_px2"]), support_area_px2=float(summary["support_area_px2"]),
        pixel_size_nm=float(px) if px else None, clark_evans_image=ce_img,
        clark_evans_support=_clark_evans(summary, "ce_support_", sj),
        clusters=ClusterStats(labels, sizes, cluster_size, extent, float(summary["cluster_cutoff_px"])),
        backend=str(summary.get("backend", "")), params={})
    mask = read_mask_png(f / "support_mask.png") if (f / "support_mask.png").is_file() else None
    sup = summary.get("support") or {}
    if mask is None and sup.get("has_vacuum"):
        raise FastsacInputError(f / "support_mask.png", "missing, but summary.json says the image has "
                                                        "vacuum; re-run `fastsac analyze`")
    overlay = (f / "overlay.png").read_bytes() if (f / "overlay.png").is_file() else None
    return SavedResult(f.name, f, summary, cols, stats, pattern_from_dict(summary.get("pair_correlation")),
                       mask, overlay)
