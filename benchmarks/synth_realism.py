"""Compare simulated HAADF-STEM frames with the real ptnc-train images.

Measures, with one procedure for both, on every image:

* ``fwhm_nm``       – spot FWHM: 2.355 σ of a Gaussian fitted to the mean
                      background-subtracted patch around the atoms
                      (atoms re-centred on the maximum of a σ = 1 px smoothed
                      image within 3 px of the label);
* ``peak_over_bg``  – atom peak height over the 40×40 median background,
                      read on the σ = 1 px smoothed image, median over atoms;
* ``peak_rel``      – the same divided by the local background level;
* ``noise_rel``     – pixel noise σ (robust, from the high-pass residual in
                      atom-free support) over the background level, median;
* ``noise_exponent``– slope of log variance vs log mean (binned);
* ``snr``           – peak_over_bg / local noise σ, median over atoms;
* ``p1 … p99``      – intensity histogram percentiles (raw detector units).

Run::

    PYTHONPATH=src python benchmarks/synth_realism.py [--real DIR] [--n-sim 11]

It writes ``docs/synth.md`` (table) and ``docs/synth_vs_real.png`` (figure).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

log = logging.getLogger("synth_realism")

PCTS = (1, 5, 25, 50, 75, 95, 99)


def _gauss2d_fit(patch: np.ndarray) -> float:
    """σ (px) of an isotropic Gaussian + constant fitted to a square patch."""
    from scipy.optimize import least_squares

    n = patch.shape[0]
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n] - c

    def res(p):
        x0, y0, a, s, b = p
        return b + a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) - patch

    p0 = [0, 0, patch.max() - np.median(patch), 1.5, np.median(patch)]
    sol = least_squares(res.__call__ if False else (lambda p: res(p).ravel()), p0)
    return abs(float(sol.x[3]))


def measure(image: np.ndarray, points: np.ndarray, *, pixel_size_nm: float,
            half: int = 8) -> dict:
    """Realism statistics of one frame (see module docstring)."""
    from fastsac.preprocess import median_filter

    img = np.asarray(image, np.float64)
    h, w = img.shape
    bg = median_filter(img.astype(np.float32), size=40).astype(np.float64)
    sm = ndi.gaussian_filter(img, 1.0)
    resid_s = sm - bg
    hp = img - ndi.gaussian_filter(img, 2.0)  # pixel noise (high-pass)
    # atom mask so the noise is measured on bare support
    amask = np.zeros(img.shape, bool)
    pts = np.asarray(points, float).reshape(-1, 2)
    peaks, pos = [], []
    for x, y in pts:
        xi, yi = int(round(x)), int(round(y))
        y0, y1, x0, x1 = max(yi - 3, 0), min(yi + 4, h), max(xi - 3, 0), min(xi + 4, w)
        win = resid_s[y0:y1, x0:x1]
        if win.size == 0:
            continue
        j = np.unravel_index(np.argmax(win), win.shape)
        py, px = y0 + j[0], x0 + j[1]
        peaks.append((resid_s[py, px], bg[py, px]))
        pos.append((px, py))
        amask[max(py - 6, 0):py + 7, max(px - 6, 0):px + 7] = True
    peaks = np.asarray(peaks).reshape(-1, 2)
    # local noise: robust σ of the high-pass residual in 32×32 blocks of bare support
    bs = 32
    sig, mean = [], []
    for by in range(0, h - bs + 1, bs):
        for bx in range(0, w - bs + 1, bs):
            m = ~amask[by:by + bs, bx:bx + bs]
            if m.sum() < bs * bs / 2:
                continue
            v = hp[by:by + bs, bx:bx + bs][m]
            # Gaussian high-pass with σ=2 keeps ≈ 0.92 of white-noise σ; correct for it
            sig.append(1.4826 * np.median(np.abs(v - np.median(v))) / 0.92)
            mean.append(img[by:by + bs, bx:bx + bs][m].mean())
    sig, mean = np.asarray(sig), np.asarray(mean)
    offset = float(np.percentile(img, 0.1)) * 0.0
    ok = mean > 0
    slope = float(np.polyfit(np.log(mean[ok]), np.log(sig[ok] ** 2), 1)[0]) if ok.sum() > 3 else np.nan
    # stacked mean patch of the raw image minus background → spot width
    stack = []
    for px, py in pos:
        if half <= px < w - half and half <= py < h - half:
            stack.append((img - bg)[py - half:py + half + 1, px - half:px + half + 1])
    sigma_px = _gauss2d_fit(np.mean(stack, axis=0)) if stack else np.nan
    # SNR: peak height over the noise of the block the atom sits in
    noise_at = np.interp(peaks[:, 1], np.sort(mean), sig[np.argsort(mean)]) if len(sig) else np.nan
    out = {
        "n_atoms": len(pts),
        "fwhm_nm": 2.3548 * sigma_px * pixel_size_nm,
        "peak_over_bg": float(np.median(peaks[:, 0])),
        "peak_rel": float(np.median(peaks[:, 0] / peaks[:, 1])),
        "noise_rel": float(np.median(sig / mean)),
        "noise_exponent": slope,
        "snr": float(np.median(peaks[:, 0] / noise_at)),
    }
    out.update({f"p{p}": float(v) for p, v in zip(PCTS, np.percentile(img, PCTS))})
    return out
