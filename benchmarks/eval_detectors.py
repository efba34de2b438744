"""Per-image and pooled P/R/F1 (Hungarian matching at 6 px) of the published SAC-CNN
(threshold 0.89, component centroids) and fastsac's shipped heatmap detector on the
11 real ptnc-train images. In-sample for both models (see cv_detector.py for CV).

    PYTHONPATH=src python benchmarks/eval_detectors.py --out eval_detectors.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from fastsac import io
from fastsac.evaluate import match_points, pool
from fastsac.detectors.learned import default_detector, load_detector


def main(argv=None) -> int:
    shared = Path(os.environ.get("FASTSAC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=shared / "data" / "ptnc-train")
    ap.add_argument("--sac-cnn", type=Path, default=shared / "models" / "sac_cnn_ptnc.ckpt")
    ap.add_argument("--out", type=Path, default=Path("eval_detectors.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    dets = {"sac_cnn_0.89": load_detector(args.sac_cnn)}
    d = default_detector()
    if d is not None:
        dets["fastsac_heatmap_v1"] = d
    stems = sorted(p.stem for p in (args.data / "labels").glob("*.csv"))
    report = {}
    for name, det in dets.items():
        per = {}
        for s in stems:
            mic = io.read(args.data / "images" / f"{s}.tif")
            per[s] = match_points(det.detect(mic).xy, io.read_points(args.data / "labels" / f"{s}.csv"),
                                  tolerance_px=6)
        report[name] = {"pooled": pool(per.values()), "per_image": {s: r.as_dict() for s, r in per.items()},
                        "params": {k: v for k, v in det.params().items() if k != "weights"}}
        p = report[name]["pooled"]
        print(f"{name:20s} pooled P {p['precision']:.3f} R {p['recall']:.3f} F1 {p['f1']:.3f} "
              f"(tp {p['tp']} fp {p['fp']} fn {p['fn']})")
        for s, r in per.items():
            print(f"  {s}: P {r.precision:.3f} R {r.recall:.3f} F1 {r.f1:.3f} (tp {r.tp} fp {r.fp} fn {r.fn})")
    io.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
