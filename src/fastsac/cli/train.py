"""``fastsac train``: train one of fastsac's learned detectors from scratch (seeded, CPU).

With the defaults it reproduces the shipped weights from the 11 ptnc-train images::

    fastsac train /path/to/ptnc-train/images -o fastsac_heatmap_v1.pt                    # heatmap U-Net
    fastsac train /path/to/ptnc-train/images --model rescore -o fastsac_rescore_v1.json  # two-stage re-scorer
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import EXIT_BAD_INPUT, EXIT_OK

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the learned atom detector from labelled images",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, help="folder of calibrated images <stem>.tif")
    p.add_argument("--labels", type=Path, default=None,
                   help="folder of <stem>.csv labels with X, Y columns (default: IMAGES/../labels)")
    p.add_argument("--model", choices=("heatmap", "rescore"), default="heatmap",
                   help="heatmap: the U-Net (minutes); rescore: the two-stage detector's classifier (seconds)")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="checkpoint to write (default fastsac_heatmap.pt / fastsac_rescore.json)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the shipped recipe)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--widths", type=str, default=None,
                   help="U-Net channels at full, 1/2, 1/4 resolution, e.g. 8,16,32")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="torch device (shipped weights: cpu)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache of pre-processed inputs")
    return p


def run(args) -> int:
    from dataclasses import replace

    from ..errors import FastsacInputError
    from ..training import TrainConfig, train
    if args.model == "rescore":
        return _run_rescore(args)
    if args.out is None:
        args.out = Path("fastsac_heatmap.pt")
    cfg = TrainConfig()
    over = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("threads", args.threads))
            if v is not None}
    if args.widths:
        over["widths"] = tuple(int(w) for w in args.widths.split(","))
    cfg = replace(cfg, **over)
    try:
        res = train(args.images, args.labels, config=cfg, out=args.out, cache_dir=args.cache_dir,
                    device=args.device)
    except FastsacInputError as exc:
        log.error("%s", exc)
        print(f"error: {exc}")
        return EXIT_BAD_INPUT
    print(f"wrote {args.out}: {len(res.images)} images, {cfg.steps} steps in {res.seconds:.0f} s; "
          f"threshold {res.threshold:.2f} (training-image pooled F1 {res.train_f1:.3f})")
    return EXIT_OK


def _run_rescore(args) -> int:
    import time

    from ..errors import FastsacInputError
    from ..training import train_rescore
    out = args.out or Path("fastsac_rescore.json")
    t0 = time.perf_counter()
    try:
        model = train_rescore(args.images, args.labels, out=out)
    except FastsacInputError as exc:
        log.error("%s", exc)
        print(f"error: {exc}")
        return EXIT_BAD_INPUT
    print(f"wrote {out}: {len(model.meta['train_images'])} images, {model.meta['n_candidates']} candidates "
          f"in {time.perf_counter() - t0:.1f} s; threshold {model.threshold:.2f} "
          f"(out-of-fold pooled F1 {model.meta['out_of_fold_f1']:.3f})")
    return EXIT_OK
