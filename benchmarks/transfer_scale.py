"""Transfer without calibration: detection F1 on ptnc-train resampled by 0.5–2×.

Each labelled frame is resampled by a factor s (s < 1: area-averaging
downsampling, as a coarser scan would record; s > 1: cubic-spline
upsampling), its labels move with it (x' = (x + 0.5)·s − 0.5) and the
matching tolerance is 6·s px. Three ways to run ``fastsac.pipeline.analyze``
on the resampled frame:

* ``calibrated``: the true pixel size 0.0293/s nm is given;
* ``estimated``: no calibration, the pixel size is estimated from the apparent
  atom size (the default of ``analyze`` for uncalibrated images);
* ``default px``: no calibration and no estimate (every nm parameter converted
  at 0.0293 nm/px: what fastsac did before).

Counts are pooled over the 11 frames. Run::

    FASTSAC_SHARED=/work/shared PYTHONPATH=src python benchmarks/transfer_scale.py \
        [--scales 0.5 0.75 1 1.5 2] [--json docs/transfer_scale.json] [--reference]

``--reference`` prints the median atom scale of the unscaled frames (the
constant :data:`fastsac.scale.REFERENCE_SCALE_PX`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fastsac.evaluate import match_points  # noqa: E402
from fastsac.io import Micrograph, read, read_points  # noqa: E402
from fastsac.pipeline import analyze  # noqa: E402
from fastsac.scale import REFERENCE_PIXEL_SIZE_NM, estimate_atom_scale  # noqa: E402


def rescale_image(img: np.ndarray, s: float) -> np.ndarray:
    """Resample by ``s`` on the pixel-centre grid (area-averaging down, cubic up)."""
    img = np.asarray(img, np.float64)
    if s < 1 and abs(1 / s - round(1 / s)) < 1e-9:  # integer binning: exact block means
        b = int(round(1 / s))
        h, w = (img.shape[0] // b) * b, (img.shape[1] // b) * b
        return img[:h, :w].reshape(h // b, b, w // b, b).mean((1, 3))
    if s < 1:
        img = ndi.gaussian_filter(img, 0.5 * (1 / s - 1) + 1e-9)
    return ndi.zoom(img, s, order=1 if s < 1 else 3, grid_mode=True, mode="nearest")


def rescale_points(xy: np.ndarray, s: float) -> np.ndarray:
    return (np.asarray(xy, np.float64) + 0.5) * s - 0.5


def frames(shared: Path):
    d = shared / "data" / "ptnc-train"
    for img_path in sorted((d / "images").glob("*.tif")):
        lab = d / "labels" / f"{img_path.stem}.csv"
        if lab.is_file():
            yield img_path.stem, read(img_path), read_points(lab)


def run(scales, shared: Path) -> dict:
    data = list(frames(shared))
    out = {"scales": list(scales), "n_images": len(data), "conditions": {}}
    for cond in ("calibrated", "estimated", "default px"):
        out["conditions"][cond] = {}
    t0 = time.perf_counter()
    for s in scales:
        counts = {c: [0, 0, 0] for c in out["conditions"]}
        px_est = []
        for stem, m, labels in data:
            img = rescale_image(m.data, s).astype(np.float32)
            truth = rescale_points(labels, s)
            tol = 6.0 * s
            for cond in counts:
                if cond == "calibrated":
                    mic = Micrograph(img, REFERENCE_PIXEL_SIZE_NM / s, "override", stem, {})
                    res = analyze(mic, detector="classical", support_mask=False)
                else:
                    mic = Micrograph(img, None, "none", stem, {})
                    res = analyze(mic, detector="classical", support_mask=False,
                                  estimate_pixel_size=(cond == "estimated"))
                    if cond == "estimated":
                        px_est.append(res.summary["pixel_size_nm"] or float("nan"))
                r = match_points(res.detections.xy, truth, tolerance_px=tol)
                c = counts[cond]
                c[0] += r.tp
                c[1] += r.fp
                c[2] += r.fn
        for cond, (tp, fp, fn) in counts.items():
            p = tp / (tp + fp) if tp + fp else 0.0
            rc = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
            out["conditions"][cond][str(s)] = {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": rc,
                                               "f1": f1}
        rel = np.asarray(px_est) / (REFERENCE_PIXEL_SIZE_NM / s) - 1
        out["conditions"]["estimated"][str(s)]["pixel_size_rel_error"] = {
            "median": float(np.median(rel)), "min": float(rel.min()), "max": float(rel.max()),
            "median_abs": float(np.median(np.abs(rel)))}
        print(f"scale {s}: " + "  ".join(f"{c} F1 {out['conditions'][c][str(s)]['f1']:.3f}"
                                         for c in out["conditions"])
              + f"  px est. error median {np.median(rel):+.1%} (range {rel.min():+.1%} … {rel.max():+.1%})",
              flush=True)
    base = out["conditions"]["calibrated"].get("1.0", out["conditions"]["calibrated"].get("1"))
    if base:
        out["unscaled_calibrated_f1"] = base["f1"]
        out["max_abs_f1_change_estimated"] = max(abs(v["f1"] - base["f1"])
                                                 for v in out["conditions"]["estimated"].values())
    out["seconds"] = time.perf_counter() - t0
    return out


def reference(shared: Path) -> float:
    vals = []
    for stem, m, _ in frames(shared):
        v = estimate_atom_scale(m.data).scale_px
        vals.append(v)
        print(f"{stem}: atom scale {v:.3f} px")
    med = float(np.median(vals))
    print(f"median {med:.3f} px (range {min(vals):.2f} … {max(vals):.2f})")
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reference", action="store_true")
    args = ap.parse_args(argv)
    shared = Path(os.environ.get("FASTSAC_SHARED", ROOT.parent / "shared"))
    if args.reference:
        reference(shared)
        return 0
    out = run(args.scales, shared)
    print(json.dumps({k: v for k, v in out.items() if k != "conditions"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
