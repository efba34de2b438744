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
* ``peak_spread``   – IQR / median of the per-atom peak_rel;
* ``texture_dog2/4``– support structure at the atom scale: robust σ of a
                      difference of Gaussians (σ = 2/6 and 4/12 px) in
                      atom-free support blocks over the block mean;
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
    sol = least_squares(lambda p: res(p).ravel(), p0)
    return abs(float(sol.x[3]))


def _dog_texture(img: np.ndarray, amask: np.ndarray, s: float, bs: int = 32) -> float:
    """Background structure at the scale of an atom: robust σ of a
    difference of Gaussians (σ = s, 3 s px) in atom-free 32² blocks of the
    support (blocks brighter than midway between the 2nd and 60th intensity
    percentiles), divided by the block mean; median over blocks."""
    dog = ndi.gaussian_filter(img, s) - ndi.gaussian_filter(img, 3 * s)
    h, w = img.shape
    # support blocks: brighter than the midpoint between vacuum and support levels
    lo, hi = np.percentile(img, [2, 60])
    cut = 0.5 * (lo + hi)
    vals = []
    for by in range(0, h - bs + 1, bs):
        for bx in range(0, w - bs + 1, bs):
            m = ~amask[by:by + bs, bx:bx + bs]
            if m.sum() < bs * bs / 2:
                continue
            mu = img[by:by + bs, bx:bx + bs][m].mean()
            if mu < cut:
                continue
            v = dog[by:by + bs, bx:bx + bs][m]
            vals.append(1.4826 * np.median(np.abs(v - np.median(v))) / mu)
    return float(np.median(vals)) if vals else float("nan")


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
        amask[max(py - 8, 0):py + 9, max(px - 8, 0):px + 9] = True
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
        "peak_spread": float(np.subtract(*np.percentile(peaks[:, 0] / peaks[:, 1], [75, 25]))
                             / np.median(peaks[:, 0] / peaks[:, 1])),
        "texture_dog2": _dog_texture(img, amask, 2.0),
        "texture_dog4": _dog_texture(img, amask, 4.0),
    }
    out.update({f"p{p}": float(v) for p, v in zip(PCTS, np.percentile(img, PCTS))})
    return out


STATS = [("fwhm_nm", "spot FWHM (nm)", "{:.3f}"),
         ("peak_over_bg", "atom peak over 40×40 median background (counts)", "{:.3g}"),
         ("peak_rel", "atom peak / local background", "{:.3f}"),
         ("snr", "atom peak / local pixel noise σ", "{:.2f}"),
         ("noise_rel", "pixel noise σ / local mean", "{:.3f}"),
         ("noise_exponent", "noise exponent (var ∝ mean^k)", "{:.2f}"),
         ("texture_dog2", "support structure at atom scale (DoG σ 2/6 px, σ/mean)", "{:.4f}"),
         ("texture_dog4", "support structure at 2× atom scale (DoG σ 4/12 px, σ/mean)", "{:.4f}"),
         ("peak_spread", "atom-to-atom spread of peak/background (IQR/median)", "{:.2f}"),
         ("n_atoms", "atoms per frame", "{:.0f}")] + [
            (f"p{p}", f"intensity percentile {p} % (counts)", "{:.3g}") for p in PCTS]


def measure_real(real_dir: Path):
    import pandas as pd

    from fastsac import read, read_points

    rows, first = [], None
    for f in sorted((real_dir / "images").glob("*.tif")):
        m = read(f)
        pts = read_points(real_dir / "labels" / f"{f.stem}.csv")
        rows.append(measure(m.data, pts, pixel_size_nm=m.pixel_size_nm) | {"name": f.stem})
        first = first if first is not None else m.data
    return pd.DataFrame(rows).set_index("name")


def measure_sim(n: int, **kwargs):
    import pandas as pd

    from fastsac.synth import simulate

    rows, imgs = [], []
    for s in range(n):
        img, t = simulate(seed=s, **kwargs)
        imgs.append(img)
        rows.append(measure(img.astype(np.float32), t.xy, pixel_size_nm=t.params["pixel_size_nm"])
                    | {"name": f"sim{s}"})
    return pd.DataFrame(rows).set_index("name"), imgs


def table(real, sim) -> tuple[str, bool]:
    lines = ["| statistic | real min | real median | real max | sim min | sim median | sim max "
             "| sim within real spread |",
             "|---|---|---|---|---|---|---|---|"]
    all_ok = True
    for key, label, fmt in STATS:
        r, s = real[key], sim[key]
        ok_med = r.min() <= s.median() <= r.max()
        ok_all = bool(((s >= r.min()) & (s <= r.max())).all())
        all_ok &= ok_med
        flag = "yes (all)" if ok_all else ("median yes" if ok_med else "**no**")
        lines.append(f"| {label} | " + " | ".join(fmt.format(v) for v in (
            r.min(), r.median(), r.max(), s.min(), s.median(), s.max())) + f" | {flag} |")
    return "\n".join(lines), all_ok


def figure(real_img, sim_img, path: Path, real_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(real_img, [0.5, 99.8])
    fig, ax = plt.subplots(2, 3, figsize=(15, 10), gridspec_kw={"height_ratios": [1, 1]})
    for a, im, title in ((ax[0, 0], real_img, f"real ptnc-train {real_name}"),
                         (ax[0, 1], sim_img, "simulated (defaults, seed 0)")):
        a.imshow(im, cmap="gray", vmin=lo, vmax=hi)
        a.set_title(title)
        a.axis("off")
    sl = np.s_[200:328, 200:328]
    for a, im, title in ((ax[1, 0], real_img, "real, 128² crop"),
                         (ax[1, 1], sim_img, "simulated, 128² crop")):
        a.imshow(im[sl], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        a.set_title(title)
        a.axis("off")
    bins = np.linspace(0, 3e6, 121)
    ax[0, 2].hist(real_img.ravel(), bins, histtype="step", density=True, label="real")
    ax[0, 2].hist(sim_img.ravel(), bins, histtype="step", density=True, label="simulated")
    ax[0, 2].set_xlabel("counts (uint32)")
    ax[0, 2].set_title("intensity histograms")
    ax[0, 2].legend()
    ax[1, 2].axis("off")
    ax[1, 2].text(0, 0.9, "Same display scaling for all panels\n(0.5–99.8 % of the real frame).\n"
                  "15 nm field of view, 0.0293 nm/px.", va="top")
    fig.suptitle("fastsac.synth vs real HAADF-STEM (Pt on N-doped carbon)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=None,
                    help="ptnc-train folder (default: $FASTSAC_SHARED/data/ptnc-train or ../shared)")
    ap.add_argument("--n-sim", type=int, default=11)
    ap.add_argument("--show", default="025", help="real frame shown in the figure")
    ap.add_argument("--docs", default=str(REPO / "docs"))
    a = ap.parse_args(argv)
    from fastsac import read

    cands = [Path(a.real)] if a.real else [
        Path(os.environ.get("FASTSAC_SHARED", REPO.parent / "shared")) / "data" / "ptnc-train",
        REPO.parents[1] / "shared" / "data" / "ptnc-train"]
    real_dir = next((c for c in cands if (c / "images").is_dir()), None)
    if real_dir is None:
        ap.error(f"real images not found in {[str(c) for c in cands]}; pass --real DIR")
    real = measure_real(real_dir)
    sim, imgs = measure_sim(a.n_sim)
    tab, ok = table(real, sim)
    print(tab)
    print("all sim medians within the real spread:", ok)
    docs = Path(a.docs)
    docs.mkdir(parents=True, exist_ok=True)
    real_img = read(real_dir / "images" / f"{a.show}.tif").data
    figure(real_img, imgs[0], docs / "synth_vs_real.png", a.show)
    md = docs / "synth.md"
    start, end = "<!-- realism:start -->", "<!-- realism:end -->"
    block = (f"{start}\n_Generated by `benchmarks/synth_realism.py`: {len(real)} real frames vs "
             f"{a.n_sim} simulated frames (defaults, seeds 0–{a.n_sim - 1})._\n\n{tab}\n{end}")
    text = md.read_text() if md.exists() else "# fastsac.synth\n\n" + start + "\n" + end + "\n"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    from fastsac.io import atomic_write_text

    atomic_write_text(md, text)
    print(f"wrote {docs / 'synth_vs_real.png'} and the table in {md}")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
