"""Reports: overlay images, statistics plots and a self-contained HTML report.

Plots use matplotlib's Agg backend through its object-oriented API (no
pyplot state, safe in threads and without a display). Every file is written
atomically. The HTML report embeds every image as a base64 PNG and has no
external assets, so it can be mailed or archived as one file.

Typical use (the ``fastsac analyze`` pipeline does this per image)::

    rep = build_image_report("img01", det.xy, image=img, pixel_size_nm=px,
                             intensity=det.intensity, score=det.score)
    save_overlay("overlay.png", img, det.xy, pixel_size_nm=px, mask=rep.mask,
                 cluster_sizes=rep.stats.clusters.sizes)
    write_html_report("report.html", [rep, ...])
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io as _stdio
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_path, atomic_write_text
from .spatial.stats import (CLUSTER_CLASSES, DEFAULT_MULTIMER_CUTOFF_NM, DispersionStats, PatternTest,
                            PooledStats, dispersion, pair_correlation_test, pool_dispersion)

__all__ = ["ImageReport", "build_image_report", "save_overlay", "overlay_figure", "nn_histogram_figure",
           "cluster_size_figure", "cluster_distribution_figure", "pair_correlation_figure", "save_figure", "write_html_report",
           "load_analysis_folder", "CLUSTER_COLORS", "COLOR_BY"]

log = logging.getLogger(__name__)

#: Marker colours of the cluster classes (colour-blind safe on a grey image).
CLUSTER_COLORS = {"monomer": "#33bbee", "dimer": "#ffdd00", "trimer": "#ff7700", "4plus": "#ee3377"}
_CLASS_LABEL = {"monomer": "monomer", "dimer": "dimer", "trimer": "trimer", "4plus": "≥4 atoms"}
COLOR_BY = ("cluster-class", "species", "score", "none")
_SPECIES_COLORS = ["#33bbee", "#ee3377", "#ffdd00", "#00dd88", "#aa66ff", "#ff7700"]


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _png_bytes(fig, dpi: int = 100) -> bytes:
    buf = _stdio.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(path, fig, *, dpi: int = 100) -> Path:
    """Write a matplotlib figure to ``path`` (format from the suffix) atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


# --------------------------------------------------------------------------- overlay


def _nice_length(target: float) -> float:
    """1, 2 or 5 × 10^k closest below ``target``."""
    if target <= 0:
        return 1.0
    k = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**k <= target:
            return m * 10**k
    return 10**k


def _add_scale_bar(ax, shape, pixel_size_nm):
    from matplotlib.patches import Rectangle

    h, w = shape
    if pixel_size_nm:
        length_nm = _nice_length(0.2 * w * pixel_size_nm)
        length_px = length_nm / pixel_size_nm
        label = f"{length_nm:g} nm"
    else:
        length_px = _nice_length(0.2 * w)
        label = f"{length_px:g} px (uncalibrated)"
    x0, y0 = 0.04 * w, h - 0.05 * h
    thick = max(2.0, 0.012 * h)
    ax.add_patch(Rectangle((x0, y0 - thick), length_px, thick, facecolor="white", edgecolor="black", lw=0.8))
    ax.text(x0 + length_px / 2, y0 - thick - 0.01 * h, label, color="white", ha="center", va="bottom",
            fontsize=11, fontweight="bold",
            path_effects=_outline())


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.5, foreground="black")]


def overlay_figure(image, xy, *, pixel_size_nm: float | None = None, color_by: str = "cluster-class",
                   cluster_sizes=None, species=None, species_names: Sequence[str] | None = None, score=None,
                   mask=None, cluster_cutoff_nm: float = DEFAULT_MULTIMER_CUTOFF_NM, title: str | None = None,
                   size_in: float = 6.0, max_display_px: int | None = 1200):
    """The image (1–99.7 percentile grey scale) with atoms as coloured circles,
    vacuum shaded blue and a scale bar. See :func:`save_overlay`.

    ``max_display_px``: images larger than this are shown block-averaged by
    the smallest integer factor that fits (atoms, scale bar and axes stay in
    full-resolution pixels). A 2048² frame drawn into a 600-px figure gains
    nothing from its full resolution, and drawing it costs more than analysing
    it; None draws every pixel.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    h, w = img.shape
    f = 1 if not max_display_px else max(1, -(-max(h, w) // int(max_display_px)))
    if f > 1:
        from .spatial.mask import bin_mean

        shown = bin_mean(img, f).astype(np.float64)
    else:
        shown = img.astype(np.float64)
    # Blocks cover whole pixels: the last ragged row/column of blocks reaches past
    # the image and is cropped by the axis limits below.
    extent = (-0.5, shown.shape[1] * f - 0.5, shown.shape[0] * f - 0.5, -0.5)
    fig = _figure(size_in, size_in * h / w + (0.35 if title else 0) + 0.3)
    ax = fig.add_subplot()
    lo, hi = np.percentile(shown, [1, 99.7])
    ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest",
              extent=extent)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != img.shape:
            raise ValueError(f"mask must have the image shape {img.shape}, got {m.shape}")
        if not m.all():
            m_shown = m[::f, ::f] if f > 1 else m  # the mask is smooth on this scale
            shade = np.zeros(m_shown.shape + (4,), np.float32)
            shade[~m_shown] = (0.15, 0.35, 1.0, 0.35)
            ax.imshow(shade, interpolation="nearest", extent=extent)
            yy = np.arange(m_shown.shape[0]) * f + (f - 1) / 2
            xx = np.arange(m_shown.shape[1]) * f + (f - 1) / 2
            ax.contour(xx, yy, m_shown.astype(float), levels=[0.5], colors=["#6699ff"], linewidths=1.0)
    r = max(3.0, 0.012 * max(h, w))
    handles = []
    from matplotlib.lines import Line2D

    def circles(p, color, label=None):
        if len(p):
            ax.scatter(p[:, 0], p[:, 1], s=(2 * r) ** 2 * 0.35, facecolors="none", edgecolors=color,
                       linewidths=1.3)
        if label is not None:
            handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=color, mew=1.5,
                                  label=f"{label} ({len(p)})"))

    if color_by == "cluster-class":
        if cluster_sizes is None:
            from .spatial.neighbors import clusters

            cut = cluster_cutoff_nm / (pixel_size_nm or 0.0293)
            cluster_sizes = clusters(pts, cutoff=cut).sizes if len(pts) else np.zeros(0, int)
        cls = np.minimum(np.asarray(cluster_sizes, int), 4)
        for k, name in enumerate(CLUSTER_CLASSES, start=1):
            circles(pts[cls == k], CLUSTER_COLORS[name], _CLASS_LABEL[name])
    elif color_by == "species":
        if species is None:
            raise ValueError("color_by='species' needs species= (one label per atom, −1 = unassigned)")
        lab = np.asarray(species, int)
        ks = sorted(set(lab.tolist()) - {-1}) or [0]
        for k in range(max(ks) + 1):
            name = species_names[k] if species_names is not None and k < len(species_names) else f"species {k}"
            circles(pts[lab == k], _SPECIES_COLORS[k % len(_SPECIES_COLORS)], name)
        if (lab < 0).any():
            circles(pts[lab < 0], "#bbbbbb", "unassigned")
    elif color_by == "score":
        if score is None:
            raise ValueError("color_by='score' needs score= (one value per atom)")
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        v = np.asarray(score, float)
        norm = Normalize(np.nanmin(v) if len(v) else 0, np.nanmax(v) if len(v) else 1)
        sm = ScalarMappable(norm=norm, cmap=colormaps["viridis"])
        ax.scatter(pts[:, 0], pts[:, 1], s=(2 * r) ** 2 * 0.35, facecolors="none",
                   edgecolors=sm.to_rgba(v), linewidths=1.3)
        fig.colorbar(sm, ax=ax, shrink=0.7, label="detector score")
    else:
        circles(pts, "#33bbee", "atoms")
    if mask is not None and len(pts):
        # Atoms over vacuum stay in the NN and cluster analysis but not in the
        # densities: cross them out so the reader sees which ones those are.
        ix = np.clip(np.floor(pts[:, 0] + 0.5).astype(np.int64), 0, w - 1)
        iy = np.clip(np.floor(pts[:, 1] + 0.5).astype(np.int64), 0, h - 1)
        off = ~np.asarray(mask, bool)[iy, ix]
        if off.any():
            ax.scatter(pts[off, 0], pts[off, 1], s=(2 * r) ** 2 * 0.2, marker="x", c="#dddddd",
                       linewidths=1.2)
            handles.append(Line2D([], [], ls="", marker="x", mec="#999999", mew=1.5,
                                  label=f"on vacuum ({int(off.sum())}, not in densities)"))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=9, framealpha=0.75)
    _add_scale_bar(ax, img.shape, pixel_size_nm)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def save_overlay(path, image, xy, *, pixel_size_nm: float | None = None, color_by: str = "cluster-class",
                 mask=None, cluster_sizes=None, species=None, species_names=None, score=None,
                 cluster_cutoff_nm: float = DEFAULT_MULTIMER_CUTOFF_NM, title: str | None = None,
                 dpi: int = 100) -> Path:
    """Save the image with the atoms marked, atomically.

    Parameters
    ----------
    path : path-like
        Output file (.png, .svg, .pdf …).
    image : (H, W) array
        The micrograph (raw intensities).
    xy : (N, 2) array
        Atom positions [x, y], px.
    pixel_size_nm : float, optional
        For the scale bar (in px, labelled uncalibrated, without it).
    color_by : {"cluster-class", "species", "score", "none"}
        Colour of the circles: cluster class (monomer, dimer, trimer, ≥4; from
        ``cluster_sizes`` or computed at ``cluster_cutoff_nm``), species
        (``species`` labels, ``species_names``) or detector ``score``.
    mask : (H, W) bool, optional
        Support mask; vacuum (False) is shaded blue.

    Returns
    -------
    Path
    """
    fig = overlay_figure(image, xy, pixel_size_nm=pixel_size_nm, color_by=color_by,
                         cluster_sizes=cluster_sizes, species=species, species_names=species_names,
                         score=score, mask=mask, cluster_cutoff_nm=cluster_cutoff_nm, title=title,
                         max_display_px=2 * int(6.0 * dpi))  # twice the figure's pixels
    return save_figure(path, fig, dpi=dpi)


# --------------------------------------------------------------------------- plots


def _nn_values(stats):
    if isinstance(stats, PooledStats):
        scale = 1.0
        unit = stats.unit
        nn = stats.nn_distance
        lam = stats.density
        cuts = {s.multimer_cutoff_px * (s.scale if unit == "nm" else 1.0) for s in stats.per_image}
        cut = cuts.pop() if len(cuts) == 1 else None
        expected_ce = None
    else:
        scale = stats.scale
        unit = stats.unit
        nn = stats.finite_nn_px * scale
        lam = stats.density_px2 / scale**2
        cut = stats.multimer_cutoff_px * scale
        ce = stats.clark_evans
        expected_ce = ce.expected_nn * scale if np.isfinite(ce.expected_nn) else None
    return nn, unit, lam, cut, expected_ce


def nn_histogram_figure(stats, *, title: str | None = None):
    """Histogram and KDE of first-NN distances with the CSR expectation:
    the Poisson NN density 2πλr·exp(−λπr²), its mean 1/(2√λ), the
    edge-corrected expectation and the multimer cutoff."""
    nn, unit, lam, cut, expected_ce = _nn_values(stats)
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    if len(nn):
        top = max(np.percentile(nn, 99), 0.5 / math.sqrt(lam) * 2.5 if lam > 0 else 0)
        bins = np.linspace(0, top * 1.05, min(40, max(8, len(nn) // 3)) + 1)
        ax.hist(nn, bins=bins, density=True, color="#8899bb", edgecolor="white", label=f"observed (n={len(nn)})")
        rr = np.linspace(0, bins[-1], 300)
        if len(nn) >= 5 and np.ptp(nn) > 0:
            from scipy.stats import gaussian_kde

            ax.plot(rr, gaussian_kde(nn)(rr), color="#223366", lw=1.8, label="KDE")
        if lam > 0:
            ax.plot(rr, 2 * np.pi * lam * rr * np.exp(-lam * np.pi * rr**2), color="#cc4444", lw=1.5, ls="--",
                    label="random (Poisson)")
            ax.axvline(0.5 / math.sqrt(lam), color="#cc4444", lw=1.2,
                       label=f"random mean 1/(2√λ) = {0.5 / math.sqrt(lam):.3g} {unit}")
        if expected_ce:
            ax.axvline(expected_ce, color="#cc4444", lw=1.2, ls=":", label="edge-corrected random mean")
        if cut:
            ax.axvline(cut, color="#ff9900", lw=1.4, ls="-.", label=f"multimer cutoff {cut:.3g} {unit}")
        ax.axvline(nn.mean(), color="#223366", lw=1.2, ls=":", label=f"observed mean {nn.mean():.3g} {unit}")
        ax.set_xlim(0, bins[-1])
    else:
        ax.text(0.5, 0.5, "fewer than 2 atoms", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"nearest-neighbour distance ({unit})")
    ax.set_ylabel(f"density (1/{unit})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or "Nearest-neighbour distances", fontsize=10)
    return fig


def cluster_size_figure(stats, *, title: str | None = None):
    """Bar chart: number of clusters and of atoms per cluster class."""
    counts = stats.cluster_counts if isinstance(stats, PooledStats) else stats.clusters.counts()
    names = list(CLUSTER_CLASSES)
    ncl = [counts["n_monomers"], counts["n_dimers"], counts["n_trimers"], counts["n_clusters_4plus"]]
    nat = [counts["atoms_in_monomers"], counts["atoms_in_dimers"], counts["atoms_in_trimers"],
           counts["atoms_in_4plus"]]
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    x = np.arange(4)
    colors = [CLUSTER_COLORS[n] for n in names]
    b1 = ax.bar(x - 0.2, ncl, 0.4, color=colors, edgecolor="black", label="clusters")
    b2 = ax.bar(x + 0.2, nat, 0.4, color=colors, edgecolor="black", hatch="//", alpha=0.6, label="atoms")
    for bars in (b1, b2):
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, [_CLASS_LABEL[n] for n in names])
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    ax.set_ylim(0, max(nat + [1]) * 1.18)
    ax.set_title(title or "Cluster sizes", fontsize=10)
    return fig


def cluster_distribution_figure(table, *, title: str | None = None):
    """Cluster-size distribution of a :class:`~fastsac.spatial.clusters_table.ClusterTable`:
    clusters by number of atoms (left) and the maximum extent and radius of
    gyration of multi-atom clusters in nm (px without calibration, right)."""
    dist = table.size_distribution()
    unit = dist["unit"]
    fig = _figure(8.0, 3.3)
    ax1, ax2 = fig.subplots(1, 2)
    by = {int(k): v for k, v in dist["by_n_atoms"].items()}
    if by:
        cap = 10
        keys = list(range(1, min(max(by), cap) + 1))
        vals = [by.get(k, 0) for k in keys]
        if max(by) > cap:
            keys.append(cap + 1)
            vals.append(sum(v for k, v in by.items() if k > cap))
        colors = [CLUSTER_COLORS[list(CLUSTER_CLASSES)[min(k, 4) - 1]] for k in keys]
        bars = ax1.bar(range(len(keys)), vals, color=colors, edgecolor="black")
        ax1.bar_label(bars, fontsize=7)
        ax1.set_xticks(range(len(keys)), [str(k) if k <= cap else f">{cap}" for k in keys])
        ax1.set_ylim(0, max(vals) * 1.18)
    else:
        ax1.text(0.5, 0.5, "no atoms", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_xlabel("atoms per cluster")
    ax1.set_ylabel("clusters")
    ax1.set_title(f"{dist['n_clusters']} clusters", fontsize=9)
    multi = dist["multi_atom"]
    if multi["n_clusters"]:
        ext = multi["max_extent"]["histogram"]
        rg = multi["radius_of_gyration"]["histogram"]
        e = np.asarray(ext["edges"])
        ax2.stairs(ext["counts"], e, fill=True, color="#ee3377", alpha=0.6, label="maximum extent")
        ax2.stairs(rg["counts"], np.asarray(rg["edges"]), color="#223366", lw=1.6,
                   label="radius of gyration")
        ax2.axvline(multi["max_extent"]["median"], color="#ee3377", ls=":", lw=1.2,
                    label=f"median extent {multi['max_extent']['median']:.3g} {unit}")
        ax2.legend(fontsize=7)
    else:
        ax2.text(0.5, 0.5, "no multi-atom clusters", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel(f"cluster size ({unit})")
    ax2.set_ylabel("clusters of ≥ 2 atoms")
    ax2.set_title(f"{multi['n_clusters']} clusters of ≥ 2 atoms", fontsize=9)
    fig.suptitle(title or "Cluster sizes", fontsize=10)
    return fig


def pair_correlation_figure(test: PatternTest, *, title: str | None = None):
    """L(r) − r and g(r), observed against pointwise and global CSR envelopes."""
    px = test.pixel_size_nm
    s, unit = (px, "nm") if px else (1.0, "px")
    r = test.r_px * s
    fig = _figure(8.0, 3.3)
    axes = fig.subplots(1, 2)
    for ax, obs, mean, lo, hi, glo, ghi, name, base, p in (
            (axes[0], test.L_minus_r_px * s, test.L_mean * s, test.L_lo * s, test.L_hi * s,
             test.L_global_lo * s, test.L_global_hi * s, f"L(r) − r ({unit})", 0.0, test.L_p_value),
            (axes[1], test.g, test.g_mean, test.g_lo, test.g_hi, test.g_global_lo, test.g_global_hi,
             "g(r)", 1.0, test.g_p_value)):
        if base == 1.0:  # g ≥ 0: an envelope below zero carries no information
            lo, glo = np.maximum(lo, 0), np.maximum(glo, 0)
        ax.fill_between(r, lo, hi, color="#cccccc", label=f"pointwise {1 - test.alpha:.0%} envelope")
        ax.plot(r, glo, color="#777777", ls="--", lw=1, label="global envelope")
        ax.plot(r, ghi, color="#777777", ls="--", lw=1)
        ax.plot(r, mean, color="#555555", lw=1, ls=":", label="random (mean)")
        ax.axhline(base, color="black", lw=0.5)
        ax.plot(r, obs, color="#cc3333", lw=1.8, label="observed")
        ax.axvspan(r[0], test.test_range_px[0] * s, color="#f4f4f4", zorder=-1)
        ax.set_xlabel(f"r ({unit})")
        ax.set_ylabel(name)
        ax.set_title(f"{name.split(' (')[0]}: global test p = {p:.3g}", fontsize=9)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title or f"Pair statistics vs {test.n_sim} random placements (verdict: {test.verdict})",
                 fontsize=10)
    return fig


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
        ``"auto"``: :func:`fastsac.spatial.support_mask` of ``image`` (no mask
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
            from .spatial.mask import support_mask

            mres = support_mask(image, pixel_size_nm=pixel_size_nm)
            mask = mres.mask if mres.has_vacuum else None
    st = dispersion(xy, image_shape=image_shape, pixel_size_nm=pixel_size_nm, mask=mask,
                    multimer_cutoff_nm=multimer_cutoff_nm, seed=seed, backend=backend)
    pat = None
    if n_sim and st.n_atoms >= 3:
        pat = pair_correlation_test(st.xy, image_shape=image_shape, mask=mask, pixel_size_nm=pixel_size_nm,
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

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1240px;color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0.1em}h2{border-bottom:2px solid #dde;padding-bottom:4px;margin-top:1.6em}
h3{margin-bottom:0.3em}.meta{color:#666;font-size:0.9em}
table{border-collapse:collapse;font-size:0.85em;margin:8px 0}
th,td{border:1px solid #ccd;padding:3px 7px;text-align:right}
th{background:#eef0f6;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f8f9fc}tr.pooled td{font-weight:bold;background:#fff6dd}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:10px;align-items:start}
.grid img{width:100%;border:1px solid #dde}.wide{grid-column:1/-1}.wide img{max-width:820px}
.scroll{overflow-x:auto}.note{font-size:0.85em;color:#444;background:#f6f7fa;padding:8px 12px;
border-left:3px solid #99a}.sig{color:#b00;font-weight:bold}
"""


def _img_tag(png: bytes, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (f'<div{c}><img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></div>')


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits, int(math.log10(abs(v))) + 1)}g}"
    return html.escape(str(v))


def _pval(v) -> str:
    s = _fmt(v)
    return f'<span class="sig">{s}</span>' if v is not None and np.isfinite(v) and v < 0.05 else s


def _row_values(d: dict, u: str) -> list:
    return [d.get("n_atoms"), d.get(f"support_area_{u}2"), d.get(f"density_per_{u}2"), d.get(f"nn_mean_{u}"),
            d.get(f"nn_median_{u}"), d.get(f"expected_nn_random_{u}"), d.get("multimer_fraction"),
            d.get("clark_evans_R"), d.get("clark_evans_z"), ("p", d.get("clark_evans_p_value")),
            d.get("n_monomers"), d.get("n_dimers"), d.get("n_trimers"), d.get("n_clusters_4plus"),
            ("p", d.get("L_p_value")), d.get("pattern_verdict")]


def _table(header: list, rows: list, pooled_row=None) -> str:
    out = ['<div class="scroll"><table><tr>' + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for r, cls in [(r, "") for r in rows] + ([(pooled_row, "pooled")] if pooled_row else []):
        cells = []
        for v in r:
            cells.append(_pval(v[1]) if isinstance(v, tuple) else _fmt(v))
        out.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</table></div>"


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
    png = _png_bytes(fig)
    if labels is not None:
        fig2 = overlay_figure(image, st.xy, pixel_size_nm=st.pixel_size_nm, color_by="species", species=labels,
                              species_names=names, mask=rep.mask, title=f"{rep.name}: species")
        png = [png, _png_bytes(fig2)]
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
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{'Sample <b>' + html.escape(sample) + '</b> · ' if sample else ''}"
             f"{len(results)} image(s) · {sum(r.stats.n_atoms for r in results)} atoms · "
             f"generated {now} by fastsac {html.escape(__version__)}</p>"]
    parts.append("<h2>Summary</h2>")
    parts.append(_table(header, rows, pooled_row))
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
        parts.append(_img_tag(_png_bytes(nn_histogram_figure(pooled, title="Pooled NN distances")), "pooled NN"))
        parts.append(_img_tag(_png_bytes(cluster_size_figure(pooled, title="Pooled cluster sizes")),
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
        parts.append(_table(["image", "species", "atoms", "fraction", "mean intensity", "sd", "mean confidence",
                             "ratio brightest/dimmest", "expected Z^1.7 ratio"], sp_rows))
    if comparison is not None:
        c = comparison.as_dict()
        cu = c["length_unit"]
        na, nb = (html.escape(str(x)) for x in comparison_names)
        parts.append(f"<h2>Comparison: {na} vs {nb}</h2>")
        parts.append(_table(["quantity", na, nb, f"difference ({nb} − {na})", "p-value", "test"], [
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
                     f"{_fmt(r.stats.pixel_size_nm, 4)} nm"
                     + "".join(f"; {html.escape(str(k))}: {_fmt(v)}" for k, v in list(info.items())[:8])
                     + "</p>")
        parts.append("<div class='grid'>")
        ov = _render_overlay(r)
        for png in (ov if isinstance(ov, list) else [ov]):
            parts.append(_img_tag(png, f"{r.name} overlay"))
        parts.append(_img_tag(_png_bytes(nn_histogram_figure(r.stats)), f"{r.name} NN histogram"))
        parts.append(_img_tag(_png_bytes(cluster_size_figure(r.stats)), f"{r.name} cluster sizes"))
        if r.pattern is not None:
            parts.append(_img_tag(_png_bytes(pair_correlation_figure(r.pattern)), f"{r.name} g(r)", "wide"))
        parts.append("</div>")
    parts.append("<h2>Machine-readable values</h2><details><summary>JSON (per image and pooled)</summary><pre>"
                 + html.escape(json.dumps({"images": dicts, "pooled": pooled.as_dict() | {"per_image": None}
                                           if pooled is not None else None}, indent=1, default=_json_default))
                 + "</pre></details></body></html>")
    return atomic_write_text(path, "\n".join(parts))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# --------------------------------------------------------------------------- analyze folders


def _find(d: dict, *keys):
    """First value of ``keys`` in ``d`` or in its nested dicts (one level)."""
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    for v in d.values():
        if isinstance(v, dict):
            for k in keys:
                if k in v and v[k] is not None:
                    return v[k]
    return None


def _read_atoms_csv(path: Path) -> dict:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict = {}
    if rows:
        for k in rows[0]:
            vals = [r[k] for r in rows]
            try:
                cols[k.strip()] = np.array([float(v) if v not in ("", "nan", "NaN") else np.nan for v in vals])
            except ValueError:
                cols[k.strip()] = np.array(vals, dtype=object)
    return cols


def load_analysis_folder(out_dir, *, n_sim: int = 99, seed: int = 0, recompute_mask: bool = True,
                         multimer_cutoff_nm: float | None = None, elements=None, n_species: int | None = None,
                         classify: bool = False, progress: bool = True) -> list[ImageReport]:
    """Rebuild :class:`ImageReport` objects from a ``fastsac analyze`` output folder.

    Reads ``OUT_DIR/<stem>/atoms.csv`` (columns ``x_px``, ``y_px`` and
    optionally ``score``, ``intensity``, ``amplitude``, ``species``) and
    ``OUT_DIR/<stem>/summary.json`` (looks for ``pixel_size_nm``, the image
    shape as ``shape_px``/``image_shape``/``shape`` or ``height_px``/``width_px``, and the
    image path as ``source``/``image``/``path``/``input``). Species are
    classified from the ``intensity`` column when ``elements``, ``n_species``
    or ``classify`` is given; a ``species`` column is shown as is. When the image
    file can be read, the support mask is recomputed and the overlay drawn
    from it; otherwise an existing ``overlay.png`` is embedded.

    Raises
    ------
    FastsacInputError
        When ``out_dir`` holds no ``*/atoms.csv``.
    """
    from .errors import FastsacInputError
    from .io import read as read_image

    out = Path(out_dir)
    folders = sorted(p.parent for p in out.glob("*/atoms.csv"))
    if not folders:
        raise FastsacInputError(out, "no <stem>/atoms.csv found; is this a `fastsac analyze` output folder?")
    it = folders
    if progress and len(folders) > 3:
        from tqdm.auto import tqdm
        it = tqdm(folders, desc="report", leave=False)
    reports = []
    for f in it:
        cols = _read_atoms_csv(f / "atoms.csv")
        summ = {}
        if (f / "summary.json").is_file():
            try:
                summ = json.loads((f / "summary.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise FastsacInputError(f / "summary.json", f"not valid JSON ({exc})") from exc
        if "x_px" not in cols or "y_px" not in cols:
            if cols:
                raise FastsacInputError(f / "atoms.csv", f"needs x_px and y_px columns, found {list(cols)}")
            cols = {"x_px": np.zeros(0), "y_px": np.zeros(0)}
        xy = np.column_stack([cols["x_px"], cols["y_px"]]).astype(np.float64)
        px = _find(summ, "pixel_size_nm")
        px = float(px) if px else None
        image = None
        src = _find(summ, "source", "image", "path", "input", "image_path")
        if isinstance(src, str) and recompute_mask:
            p = Path(src)
            if not p.is_absolute():
                p = (out / p) if (out / p).exists() else (f / p)
            if p.is_file():
                try:
                    m = read_image(p, pixel_size_nm=px)
                    image, px = m.data, px or m.pixel_size_nm
                except FastsacInputError as exc:
                    log.warning("%s: cannot re-read the image (%s); no support mask", f.name, exc)
        shape = None
        if image is not None:
            shape = image.shape
        else:
            s = _find(summ, "shape_px", "image_shape", "shape")
            if s is not None and len(s) == 2:
                shape = (int(s[0]), int(s[1]))
            else:
                hh, ww = _find(summ, "height_px", "image_height_px", "height"), _find(
                    summ, "width_px", "image_width_px", "width")
                if hh and ww:
                    shape = (int(hh), int(ww))
        if shape is None:
            shape = (int(np.ceil(xy[:, 1].max())) + 1, int(np.ceil(xy[:, 0].max())) + 1) if len(xy) else (1, 1)
            log.warning("%s: image shape unknown; using the atoms' bounding box %s", f.name, shape)
        kw: dict = {}
        if multimer_cutoff_nm is None:
            mc = _find(summ, "multimer_cutoff_nm")
            multimer_cutoff_nm = float(mc) if mc else DEFAULT_MULTIMER_CUTOFF_NM
        rep = build_image_report(f.name, xy, image=image, image_shape=shape, pixel_size_nm=px,
                                 mask="auto" if image is not None else None,
                                 intensity=cols.get("intensity"), amplitude=None, elements=elements,
                                 n_species=n_species,
                                 classify=bool(classify or elements or n_species),
                                 score=cols.get("score"), multimer_cutoff_nm=multimer_cutoff_nm,
                                 n_sim=n_sim, seed=seed, summary=_flat_summary(summ), **kw)
        if image is None and (f / "overlay.png").is_file():
            rep = _replace(rep, overlay_png=(f / "overlay.png").read_bytes())
        if "species" in cols and cols["species"].dtype != object:
            rep = _replace(rep, species_labels=np.nan_to_num(cols["species"], nan=-1).astype(int))
        reports.append(rep)
    return reports


def _replace(rep, **kw):
    from dataclasses import replace

    return replace(rep, **kw)


def _flat_summary(summ: dict) -> dict:
    keep = ("detector", "n_atoms", "pixel_size_source", "source")
    summ = dict(summ)
    if isinstance(summ.get("detector"), dict):  # pipeline.analyze writes {"name", "params"}
        summ["detector"] = summ["detector"].get("name")
    out = {k: summ[k] for k in keep if k in summ and isinstance(summ[k], (str, int, float))}
    if "source" in out:
        out["source"] = os.path.basename(str(out["source"]))
    return out
