"""Figures of a result: the overlay and the statistics plots.

Plots use matplotlib's Agg backend through its object-oriented API (no
pyplot state, safe in threads and without a display). Every file is written
atomically. They draw what the analysis computed (a
:class:`~fastsac.spatial.stats.DispersionStats`, a
:class:`~fastsac.spatial.stats.PatternTest`), they compute no statistic.
"""

from __future__ import annotations

import io as _stdio
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import DEFAULT_PIXEL_SIZE_NM, atomic_path
from .spatial.stats import CLUSTER_CLASSES, DEFAULT_MULTIMER_CUTOFF_NM, PatternTest, PooledStats

__all__ = ["save_overlay", "overlay_figure", "nn_histogram_figure", "cluster_size_figure",
           "cluster_distribution_figure",
           "pair_correlation_figure", "save_figure", "save_statistics_plots", "png_bytes",
           "CLUSTER_COLORS", "COLOR_BY", "SPECIES_COLORS"]

log = logging.getLogger(__name__)

#: Marker colours of the cluster classes (colour-blind safe on a grey image).
CLUSTER_COLORS = {"monomer": "#33bbee", "dimer": "#ffdd00", "trimer": "#ff7700", "4plus": "#ee3377"}
_CLASS_LABEL = {"monomer": "monomer", "dimer": "dimer", "trimer": "trimer", "4plus": "≥4 atoms"}
COLOR_BY = ("cluster-class", "species", "score", "none")
SPECIES_COLORS = ["#33bbee", "#ee3377", "#ffdd00", "#00dd88", "#aa66ff", "#ff7700"]


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def png_bytes(fig, dpi: int = 100) -> bytes:
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
        from .support import bin_mean

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

            cut = cluster_cutoff_nm / (pixel_size_nm or DEFAULT_PIXEL_SIZE_NM)
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
            circles(pts[lab == k], SPECIES_COLORS[k % len(SPECIES_COLORS)], name)
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
        ax2.stairs(ext["counts"], np.asarray(ext["edges"]), fill=True, color="#ee3377", alpha=0.6,
                   label="maximum extent")
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


def save_statistics_plots(out_dir, stats, pattern: PatternTest | None = None, *, dpi: int = 100,
                          cluster_table=None) -> dict:
    """``nn_histogram.png``, ``cluster_sizes.png`` (the size distribution in nm
    of ``cluster_table`` when given, else the cluster classes) and (with a
    pattern test) ``pair_correlation.png`` in ``out_dir``, atomically. Returns {name: path}."""
    out = Path(out_dir)
    sizes = (cluster_size_figure(stats) if cluster_table is None
             else cluster_distribution_figure(cluster_table))
    paths = {"nn_histogram": save_figure(out / "nn_histogram.png", nn_histogram_figure(stats), dpi=dpi),
             "cluster_sizes": save_figure(out / "cluster_sizes.png", sizes, dpi=dpi)}
    if pattern is not None:
        paths["pair_correlation"] = save_figure(out / "pair_correlation.png",
                                                pair_correlation_figure(pattern), dpi=dpi)
    return paths
