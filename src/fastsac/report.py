"""The self-contained HTML report of a batch of results.

The report is a view of saved results (:func:`load_analysis_folder` reads what
``fastsac analyze`` wrote through :func:`fastsac.result.load_result`): it shows
the statistics, overlay and plots the analysis produced and recomputes nothing,
so ``fastsac report OUT`` reproduces ``summary.json`` whether or not the images
are still where they were. Every image is embedded as a base64 PNG and there are
no external assets, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import FastsacInputError
from .figures import (cluster_size_figure, nn_histogram_figure, overlay_figure, pair_correlation_figure,
                      png_bytes)
from .html_page import fmt, img_tag, page, table
from .io import atomic_write_text
from .result import SavedResult, json_default, load_result
from .spatial.ripley import pair_correlation
from .spatial.stats import DEFAULT_MULTIMER_CUTOFF_NM, DispersionStats, PatternTest, dispersion, pool_dispersion

__all__ = ["ImageReport", "build_image_report", "write_html_report", "load_analysis_folder",
           "result_folders"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- per-image bundle


@dataclass(frozen=True)
class ImageReport:
    """Everything the HTML report shows about one image.

    Attributes
    ----------
    name : str
    stats : DispersionStats
    image : (H, W) array or None
        For the overlay; when None, ``overlay_png`` (pre-rendered) or a plain
        scatter plot is used.
    mask : (H, W) bool or None
    pattern : PatternTest or None
    species : SpeciesResult or None
    species_labels : (N,) int or None
        Per-atom species when no SpeciesResult is available (e.g. read back from atoms.csv).
    score : (N,) float or None
    overlay_png : bytes or None
    summary : dict
        Extra key/values shown for the image (e.g. from summary.json: detector, timings).
    """

    name: str
    stats: DispersionStats
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    pattern: PatternTest | None = None
    species: object | None = None
    species_labels: np.ndarray | None = None
    score: np.ndarray | None = None
    overlay_png: bytes | None = None
    summary: dict = field(default_factory=dict)
    plots_png: dict = field(default_factory=dict)

    @classmethod
    def from_saved(cls, saved: SavedResult) -> "ImageReport":
        """The report of a result folder read back by :func:`fastsac.result.load_result`:
        the saved statistics, overlay and plots as they are (nothing recomputed)."""
        cols = saved.atoms
        species = cols.get("species")
        labels = None
        if species is not None and species.dtype != object:
            labels = np.nan_to_num(species, nan=-1).astype(int)
        plots = {k: (saved.folder / f"{k}.png").read_bytes()
                 for k in ("nn_histogram", "cluster_sizes", "pair_correlation")
                 if (saved.folder / f"{k}.png").is_file()}
        return cls(saved.name, saved.stats, None, saved.mask, saved.pattern, None, labels,
                   cols.get("score"), saved.overlay_png, _flat_summary(saved.summary), plots)

    def as_dict(self) -> dict:
        """JSON-ready: dispersion keys, pattern-test keys and species keys."""
        d = {"name": self.name, **self.stats.as_dict()}
        if self.pattern is not None:
            d.update(self.pattern.as_dict())
        if self.species is not None:
            d.update(self.species.as_dict())
        return d


def build_image_report(name: str, xy, *, image=None, image_shape=None, pixel_size_nm: float | None = None,
                       mask="auto", intensity=None, amplitude=None, score=None, elements=None,
                       n_species: int | None = None, classify: bool = True, multimer_cutoff_nm: float = DEFAULT_MULTIMER_CUTOFF_NM,
                       n_sim: int = 99, seed: int = 0, backend: str = "auto",
                       summary: dict | None = None) -> ImageReport:
    """Compute every statistic of one image's detections.

    Parameters
    ----------
    name : str
    xy : (N, 2) array
        Atom positions, px.
    image : (H, W) array, optional
        The micrograph (for the support mask and the overlay).
    image_shape : (H, W), optional
        Needed when ``image`` is not given.
    mask : "auto", None or (H, W) bool
        ``"auto"``: :func:`fastsac.support.support_mask` of ``image`` (no mask
        without an image); None: the whole image is support.
    intensity, amplitude : (N,) arrays, optional
        Gaussian-fit intensity/amplitude: species are classified when given and
        ``classify`` (``elements`` / ``n_species`` as in
        :func:`fastsac.species.classify_species`; neither → number by BIC).
    n_sim : int
        Monte Carlo simulations for the pattern test (0: skip it).
    """
    if image is not None:
        image_shape = np.shape(image)
    if image_shape is None:
        raise ValueError("give image= or image_shape=")
    if isinstance(mask, str):
        if mask != "auto":
            raise ValueError(f"mask must be 'auto', None or a bool array, got {mask!r}")
        mask = None
        if image is not None:
            from .support import support_mask

            mres = support_mask(image, pixel_size_nm=pixel_size_nm)
            mask = mres.mask if mres.has_vacuum else None
    st = dispersion(xy, image_shape=image_shape, pixel_size_nm=pixel_size_nm, mask=mask,
                    multimer_cutoff_nm=multimer_cutoff_nm, seed=seed, backend=backend)
    pat = None
    if n_sim and st.n_atoms >= 3:
        pat = pair_correlation(st.xy, image_shape=image_shape, mask=mask, pixel_size_nm=pixel_size_nm,
                               n_sim=n_sim, seed=seed)
    sp = None
    if classify and intensity is not None and np.isfinite(np.asarray(intensity, float)).sum() >= 4:
        from .species import classify_species

        try:
            sp = classify_species(intensity, amplitude=amplitude, elements=elements, n_species=n_species,
                                  seed=seed)
        except ValueError as exc:  # too few atoms: the report goes on without species
            log.warning("%s: no species classification (%s)", name, exc)
    return ImageReport(name, st, None if image is None else np.asarray(image), mask, pat, sp,
                       score=None if score is None else np.asarray(score, float), summary=dict(summary or {}))


# --------------------------------------------------------------------------- HTML

def _row_values(d: dict, u: str) -> list:
    return [d.get("n_atoms"), d.get(f"support_area_{u}2"), d.get(f"density_per_{u}2"), d.get(f"nn_mean_{u}"),
            d.get(f"nn_median_{u}"), d.get(f"expected_nn_random_{u}"), d.get("multimer_fraction"),
            d.get("clark_evans_R"), d.get("clark_evans_z"), ("p", d.get("clark_evans_p_value")),
            d.get("n_monomers"), d.get("n_dimers"), d.get("n_trimers"), d.get("n_clusters_4plus"),
            ("p", d.get("L_p_value")), d.get("pattern_verdict")]


def _render_overlay(rep: ImageReport) -> bytes:
    st = rep.stats
    if rep.overlay_png is not None:
        return rep.overlay_png
    labels = None
    names = None
    if rep.species is not None and rep.species.n_species > 1:
        labels, names = rep.species.labels, rep.species.names()
    elif rep.species_labels is not None and len(set(np.asarray(rep.species_labels).tolist()) - {-1}) > 1:
        labels = rep.species_labels
    image = rep.image
    if image is None:  # no micrograph: atoms on a blank field of the image's size
        image = np.zeros(st.image_shape)
        image[0, 0] = 1.0
    fig = overlay_figure(image, st.xy, pixel_size_nm=st.pixel_size_nm, color_by="cluster-class",
                         cluster_sizes=st.clusters.sizes, mask=rep.mask, title=f"{rep.name}: cluster classes")
    png = png_bytes(fig)
    if labels is not None:
        fig2 = overlay_figure(image, st.xy, pixel_size_nm=st.pixel_size_nm, color_by="species", species=labels,
                              species_names=names, mask=rep.mask, title=f"{rep.name}: species")
        png = [png, png_bytes(fig2)]
    return png


def write_html_report(path, results: Sequence[ImageReport], *, title: str = "fastsac report",
                      sample: str | None = None, include_pooled: bool = True,
                      comparison=None, comparison_names: tuple = ("A", "B")) -> Path:
    """Write a self-contained HTML report of a batch of images, atomically.

    Parameters
    ----------
    path : path-like
        Output ``.html``.
    results : sequence of ImageReport
        One per image (see :func:`build_image_report`).
    title : str
    sample : str, optional
        Sample name shown in the header.
    include_pooled : bool
        Add pooled (all images as one sample) values and plots.
    comparison : SampleComparison, optional
        Result of :func:`fastsac.spatial.compare_samples` (e.g. this batch
        against another sample), shown as its own section.
    comparison_names : (str, str)
        Names of samples A and B in that section.

    Returns
    -------
    Path

    Notes
    -----
    All plots are embedded as base64 PNGs; there are no external assets.
    Tables use nm when every image is calibrated, else px.
    """
    from . import __version__

    results = list(results)
    calibrated = bool(results) and all(r.stats.pixel_size_nm for r in results)
    u = "nm" if calibrated else "px"
    header = ["image", "atoms", f"support area ({u}²)", f"density (/{u}²)", f"mean NN ({u})",
              f"median NN ({u})", f"random NN 1/(2√λ) ({u})", "multimer share", "Clark–Evans R", "CE z",
              "CE p", "monomers", "dimers", "trimers", "≥4 clusters", "L-test p", "pattern"]
    dicts = [r.as_dict() for r in results]
    rows = [[r.name] + _row_values(d, u) for r, d in zip(results, dicts)]
    pooled = None
    pooled_row = None
    if include_pooled and results:
        pooled = pool_dispersion([r.stats for r in results], names=[r.name for r in results])
        pd = pooled.as_dict()
        pooled_row = ["pooled", pd["n_atoms"], pd[f"support_area_{u}2"], pd[f"density_per_{u}2"],
                      pd[f"nn_mean_{u}"], pd[f"nn_median_{u}"],
                      0.5 / math.sqrt(pooled.density) if pooled.density > 0 else None,
                      pd["multimer_fraction"], pd["clark_evans_R"], pd["clark_evans_z"],
                      ("p", pd["clark_evans_p_value"]), pd["n_monomers"], pd["n_dimers"], pd["n_trimers"],
                      pd["n_clusters_4plus"], None, None]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{'Sample <b>' + html.escape(sample) + '</b> · ' if sample else ''}"
             f"{len(results)} image(s) · {sum(r.stats.n_atoms for r in results)} atoms · "
             f"generated {now} by fastsac {html.escape(__version__)}</p>"]
    parts.append("<h2>Summary</h2>")
    parts.append(table(header, rows, pooled_row))
    mcut = {round(r.stats.multimer_cutoff_px * r.stats.scale, 6) for r in results}
    parts.append(
        "<p class='note'>Density is per area of support (vacuum excluded when a support mask was found). "
        f"Multimer share: fraction of atoms whose nearest neighbour is closer than "
        f"{', '.join(f'{c:g}' for c in sorted(mcut))} {u}. "
        "Clark–Evans R = mean NN / expected NN under complete spatial randomness (edge-corrected; "
        "R &lt; 1 clustered, R &gt; 1 dispersed); z and two-sided p test R = 1. "
        "L-test: global MAD envelope test of Ripley's L against random placement on the support. "
        "p &lt; 0.05 in red. Keys and formulas: docs/statistics.md.</p>")
    if pooled is not None and len(results) > 1:
        parts.append("<h2>Pooled over all images</h2><div class='grid'>")
        parts.append(img_tag(png_bytes(nn_histogram_figure(pooled, title="Pooled NN distances")), "pooled NN"))
        parts.append(img_tag(png_bytes(cluster_size_figure(pooled, title="Pooled cluster sizes")),
                              "pooled clusters"))
        parts.append("</div>")
    sp_rows = []
    for r in results:
        if r.species is not None:
            for s in r.species.species_stats:
                sp_rows.append([r.name, s["name"], s["n_atoms"], s["fraction"], s["intensity_mean"],
                                s["intensity_sd"], s["mean_confidence"], r.species.intensity_ratio
                                if s["species"] == r.species.n_species - 1 else None,
                                r.species.expected_ratio if s["species"] == r.species.n_species - 1 else None])
    if sp_rows:
        parts.append("<h2>Species (Gaussian mixture of integrated intensities)</h2>")
        parts.append(table(["image", "species", "atoms", "fraction", "mean intensity", "sd", "mean confidence",
                             "ratio brightest/dimmest", "expected Z^1.7 ratio"], sp_rows))
    if comparison is not None:
        c = comparison.as_dict()
        cu = c["length_unit"]
        na, nb = (html.escape(str(x)) for x in comparison_names)
        parts.append(f"<h2>Comparison: {na} vs {nb}</h2>")
        parts.append(table(["quantity", na, nb, f"difference ({nb} − {na})", "p-value", "test"], [
            ["atoms", c["n_atoms_a"], c["n_atoms_b"], None, None, ""],
            [f"density (/{cu}²)", c[f"density_a_per_{cu}2"], c[f"density_b_per_{cu}2"], None, None, ""],
            [f"mean NN ({cu})", c[f"nn_mean_a_{cu}"], c[f"nn_mean_b_{cu}"], c[f"nn_mean_diff_{cu}"],
             ("p", c["nn_mean_p_value"]), f"permutation ({c['n_perm']})"],
            ["NN distribution", None, None, c["ks_statistic"], ("p", c["ks_p_value"]), "Kolmogorov–Smirnov (D)"],
            ["multimer share", c["multimer_fraction_a"], c["multimer_fraction_b"], c["multimer_fraction_diff"],
             ("p", c["multimer_p_value"]), f"permutation ({c['n_perm']})"]]))
        parts.append("<p class='note'>NN distances shrink as 1/√density: read a shift of the NN distribution "
                     "together with the densities and the Clark–Evans R of each sample.</p>")
    parts.append("<h2>Images</h2>")
    for r, d in zip(results, dicts):
        parts.append(f"<h3 id='{html.escape(r.name)}'>{html.escape(r.name)}</h3>")
        info = {k: v for k, v in r.summary.items() if isinstance(v, (str, int, float, bool)) and v is not None}
        mask_note = (f"support mask: {d['vacuum_fraction']:.1%} vacuum excluded" if d["vacuum_fraction"] > 0
                     else "no vacuum found: whole image is support")
        parts.append(f"<p class='meta'>{html.escape(mask_note)}; pixel size "
                     f"{fmt(r.stats.pixel_size_nm, 4)} nm"
                     + "".join(f"; {html.escape(str(k))}: {fmt(v)}" for k, v in list(info.items())[:8])
                     + "</p>")
        parts.append("<div class='grid'>")
        ov = _render_overlay(r)
        for png in (ov if isinstance(ov, list) else [ov]):
            parts.append(img_tag(png, f"{r.name} overlay"))
        saved = r.plots_png
        parts.append(img_tag(saved.get("nn_histogram") or png_bytes(nn_histogram_figure(r.stats)),
                              f"{r.name} NN histogram"))
        parts.append(img_tag(saved.get("cluster_sizes") or png_bytes(cluster_size_figure(r.stats)),
                              f"{r.name} cluster sizes"))
        if r.pattern is not None:
            parts.append(img_tag(saved.get("pair_correlation") or png_bytes(pair_correlation_figure(r.pattern)),
                                  f"{r.name} g(r)", "wide"))
        parts.append("</div>")
    parts.append("<h2>Machine-readable values</h2><details><summary>JSON (per image and pooled)</summary><pre>"
                 + html.escape(json.dumps({"images": dicts, "pooled": pooled.as_dict() | {"per_image": None}
                                           if pooled is not None else None}, indent=1, default=json_default))
                 + "</pre></details>")
    return atomic_write_text(path, page(title, parts))


# --------------------------------------------------------------------------- analyze folders


def result_folders(out_dir) -> list[Path]:
    """The result folders (``<name>/summary.json`` + ``atoms.csv``) under an analyze output folder."""
    out = Path(out_dir)
    return sorted(p.parent for p in out.glob("*/atoms.csv") if (p.parent / "summary.json").is_file())


def load_analysis_folder(out_dir, *, progress: bool = True) -> list[ImageReport]:
    """:class:`ImageReport` objects of a ``fastsac analyze`` output folder, from what
    the analysis saved (see :func:`fastsac.result.load_result`).

    Raises
    ------
    FastsacInputError
        When ``out_dir`` holds no result folder, or one lacks what the report needs.
    """
    folders = result_folders(out_dir)
    if not folders:
        raise FastsacInputError(out_dir, "no <name>/atoms.csv with summary.json found; is this a "
                                         "`fastsac analyze` output folder?")
    it = folders
    if progress and len(folders) > 3:
        from tqdm.auto import tqdm
        it = tqdm(folders, desc="report", leave=False)
    return [ImageReport.from_saved(load_result(f)) for f in it]


def _flat_summary(summ: dict) -> dict:
    keep = ("detector", "n_atoms", "pixel_size_source", "source")
    summ = dict(summ)
    if isinstance(summ.get("detector"), dict):  # pipeline.analyze writes {"name", "params"}
        summ["detector"] = summ["detector"].get("name")
    out = {k: summ[k] for k in keep if k in summ and isinstance(summ[k], (str, int, float))}
    if "source" in out:
        out["source"] = os.path.basename(str(out["source"]))
    return out
