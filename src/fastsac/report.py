"""Figures and reports. (Minimal overlay; extended by the statistics work.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import atomic_path

__all__ = ["save_overlay"]

_CLASS_COLORS = {1: "#00e5ff", 2: "#ffd600", 3: "#ff6d00", 4: "#ff1744"}


def save_overlay(path, image, xy, *, pixel_size_nm=None, cluster_sizes=None, title=None,
                 dpi: int = 150) -> Path:
    """PNG of the image with atoms circled, coloured by cluster class, and a scale bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [0.5, 99.8])
    h, w = img.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h / w))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    xy = np.asarray(xy).reshape(-1, 2)
    sizes = np.ones(len(xy), int) if cluster_sizes is None else np.minimum(cluster_sizes, 4)
    for k, label in ((1, "monomer"), (2, "dimer"), (3, "trimer"), (4, "≥4")):
        sel = sizes == k
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=60, facecolors="none",
                       edgecolors=_CLASS_COLORS[k], linewidths=1.0, label=f"{label} ({sel.sum()})")
    if len(xy):
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    if pixel_size_nm:
        bar_nm = _nice_length(0.2 * w * pixel_size_nm)
        bar_px = bar_nm / pixel_size_nm
        y0 = h * 0.95
        ax.plot([w * 0.04, w * 0.04 + bar_px], [y0, y0], color="white", lw=3)
        ax.text(w * 0.04 + bar_px / 2, y0 - h * 0.015, f"{bar_nm:g} nm", color="white",
                ha="center", va="bottom", fontsize=9)
    ax.set_axis_off()
    if title:
        ax.set_title(f"{title}: {len(xy)} atoms", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def _nice_length(x: float) -> float:
    exp = np.floor(np.log10(x))
    for m in (5, 2, 1):
        if m * 10 ** exp <= x:
            return float(m * 10 ** exp)
    return float(10 ** exp)
