"""Regenerate the example HTML report and its screenshot (docs/report_screenshot.png).

Analyses a few real ptnc-train images into a folder laid out like the output
of ``fastsac analyze`` (OUT/<stem>/atoms.csv, summary.json, overlay.png), then
rebuilds the report exactly as ``fastsac report OUT`` does and screenshots it
with headless chromium (when installed).

Positions come from the expert labels by default (``--detector labels``): the
classical detector is not tuned yet. ``--detector classical`` runs
``fastsac.detectors.get_detector("classical")`` instead. Per-atom intensity is a
background-subtracted aperture sum (disc of 3 px minus the median of an
annulus 5–8 px) when the detector gives none.

    PYTHONPATH=src python benchmarks/make_report_example.py --out /tmp/fastsac_report_example
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAC_SHARED", REPO.parent / "shared"))
if not (SHARED / "data").is_dir():
    SHARED = Path("/work/shared")


def aperture_intensity(image: np.ndarray, xy: np.ndarray, r_in: int = 3, r_bg: tuple = (5, 8)) -> np.ndarray:
    h, w = image.shape
    out = np.full(len(xy), np.nan)
    R = r_bg[1]
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    rr = np.hypot(xx, yy)
    disc, ann = rr <= r_in, (rr >= r_bg[0]) & (rr <= r_bg[1])
    for i, (x, y) in enumerate(np.round(xy).astype(int)):
        if R <= x < w - R and R <= y < h - R:
            win = image[y - R:y + R + 1, x - R:x + R + 1]
            out[i] = float(win[disc].sum() - np.median(win[ann]) * disc.sum())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", default=["021", "025", "048", "049"])
    ap.add_argument("--detector", default="labels", choices=["labels", "classical"])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "fastsac_report_example")
    ap.add_argument("--n-sim", type=int, default=99)
    ap.add_argument("--screenshot", type=Path, default=REPO / "docs" / "report_screenshot.png")
    args = ap.parse_args(argv)

    import fastsac
    from fastsac.io import write_json, atomic_write_text
    from fastsac.report import load_analysis_folder, save_overlay, write_html_report
    from fastsac.support import support_mask
    from fastsac.spatial.stats import dispersion

    ptnc = SHARED / "data" / "ptnc-train"
    args.out.mkdir(parents=True, exist_ok=True)
    for stem in args.images:
        img_path = ptnc / "images" / f"{stem}.tif"
        m = fastsac.read(img_path)
        px = m.pixel_size_nm
        if args.detector == "labels":
            xy = fastsac.read_points(ptnc / "labels" / f"{stem}.csv")
            score = np.ones(len(xy))
            amp = sig = np.full(len(xy), np.nan)
            inten = aperture_intensity(m.data, xy)
        else:
            from fastsac.detectors import get_detector

            det = get_detector("classical").detect(m)
            xy, score, amp, sig = det.xy, det.score, det.amplitude, det.sigma_px
            inten = np.where(np.isfinite(det.intensity), det.intensity, aperture_intensity(m.data, det.xy))
        mres = support_mask(m.data, pixel_size_nm=px)
        st = dispersion(xy, image_shape=m.shape, pixel_size_nm=px, mask=mres.mask if mres.has_vacuum else None)
        d = args.out / stem
        d.mkdir(exist_ok=True)
        lines = ["x_px,y_px,x_nm,y_nm,score,amplitude,sigma_px,intensity,nn_dist_nm,cluster_id,cluster_size"]
        for i in range(len(xy)):
            lines.append(",".join(f"{v:.6g}" for v in (
                xy[i, 0], xy[i, 1], xy[i, 0] * px, xy[i, 1] * px, score[i], amp[i], sig[i], inten[i],
                st.nn_distance_px[i] * px)) + f",{st.clusters.labels[i]},{st.clusters.sizes[i]}")
        atomic_write_text(d / "atoms.csv", "\n".join(lines) + "\n")
        write_json(d / "summary.json", {"source": str(img_path), "pixel_size_nm": px,
                                        "image_shape": list(m.shape), "detector": args.detector,
                                        "n_atoms": len(xy), **st.as_dict()})
        save_overlay(d / "overlay.png", m.data, xy, pixel_size_nm=px, mask=mres.mask,
                     cluster_sizes=st.clusters.sizes, title=stem)
        print(f"{stem}: {len(xy)} atoms, vacuum {mres.vacuum_fraction:.1%}")
    # Same as `fastsac report OUT --species`.
    reports = load_analysis_folder(args.out, n_sim=args.n_sim, classify=True)
    html_path = write_html_report(args.out / "report.html", reports, title="fastsac report: Pt/N-C (ptnc-train)",
                                  sample="ptnc-train " + ", ".join(args.images))
    print(html_path, f"{html_path.stat().st_size / 1e6:.1f} MB")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium and args.screenshot:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as prof:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", f"--user-data-dir={prof}", f"--screenshot={args.screenshot}",
                            "--window-size=1280,1800", f"file://{html_path.resolve()}"],
                           check=True, capture_output=True, timeout=120)
        print("screenshot:", args.screenshot)
    else:
        print("chromium not found: no screenshot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
