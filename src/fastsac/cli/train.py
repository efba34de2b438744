"""``fastsac train``: train one of fastsac's learned detectors from scratch (seeded, CPU).

With the defaults it reproduces the shipped weights from the 11 ptnc-train images::

    fastsac train /path/to/ptnc-train/images -o fastsac_heatmap_v1.pt                    # heatmap U-Net
    fastsac train /path/to/ptnc-train/images --model rescore -o fastsac_rescore_v1.json  # two-stage re-scorer
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ._common import (EXIT_OK, environment_problem, fail,
                      positive_int)

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the learned atom detector from labelled images",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, nargs="?", default=None, metavar="IMAGES",
                   help="folder of calibrated images <stem>.tif (or give --images)")
    p.add_argument("--images", type=Path, dest="images_opt", default=None, metavar="DIR",
                   help="folder of calibrated images (same as the positional IMAGES)")
    p.add_argument("--labels", type=Path, default=None,
                   help="folder of <stem>.csv labels with X, Y columns (default: IMAGES/../labels, "
                        "or IMAGES itself when the labels lie beside the images, as "
                        "`fastsac simulate` writes them)")
    p.add_argument("--model", choices=("heatmap", "rescore"), default="heatmap",
                   help="heatmap: the U-Net (minutes); rescore: the two-stage detector's classifier (seconds)")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="checkpoint to write (default fastsac_heatmap.pt / fastsac_rescore.json)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="optimiser steps (default: the shipped recipe)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the recipe's)")
    p.add_argument("--widths", type=str, default=None,
                   help="U-Net channels at full, 1/2, 1/4 resolution, e.g. 8,16,32")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="torch device (shipped weights: cpu)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache of pre-processed inputs")
    p.add_argument("--consensus", type=Path, default=None, metavar="DIR",
                   help="with --model rescore: train on the output of `fastsac consensus`, each atom "
                        "weighted by its consensus probability; evaluated against the consensus on "
                        "held-out images and compared with --baseline before it may become the default")
    p.add_argument("--baseline", default="default",
                   help="with --consensus: the current detector to beat (default: %(default)s)")
    p.add_argument("--folds", type=int, default=4, help="with --consensus: image folds (default: %(default)s)")
    return p


def run(args) -> int:
    from dataclasses import replace

    from ..errors import FastsacInputError
    from ..training import TrainConfig, train

    why = _resolve_folders(args) or environment_problem(args)
    if why:
        return fail(why)
    if args.consensus is not None:
        if args.model != "rescore":
            return fail("--consensus trains the re-scorer: add --model rescore")
        from ._retrain import run_consensus_retrain

        return run_consensus_retrain(args)
    if args.model == "rescore":
        return _run_rescore(args)
    if args.out is None:
        args.out = Path("fastsac_heatmap.pt")
    cfg = TrainConfig()
    over = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("threads", args.threads))
            if v is not None}
    if args.widths:
        try:
            over["widths"] = tuple(int(w) for w in args.widths.split(","))
        except ValueError:
            return fail(f"--widths: expected integers like 8,16,32, got {args.widths!r}")
    cfg = replace(cfg, **over)
    try:
        res = train(args.images, args.labels, config=cfg, out=args.out, cache_dir=args.cache_dir,
                    device=args.device)
    except FastsacInputError as exc:
        return fail(str(exc))
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
        return fail(str(exc))
    print(f"wrote {out}: {len(model.meta['train_images'])} images, {model.meta['n_candidates']} candidates "
          f"in {time.perf_counter() - t0:.1f} s; threshold {model.threshold:.2f} "
          f"(out-of-fold pooled F1 {model.meta['out_of_fold_f1']:.3f})")
    return EXIT_OK


def _resolve_folders(args) -> str | None:
    """IMAGES from the positional or --images; labels beside the images (the
    layout `fastsac simulate` writes) when IMAGES/../labels does not exist."""
    if args.images is not None and args.images_opt is not None and args.images != args.images_opt:
        return "give the image folder once (IMAGES or --images)"
    args.images = args.images or args.images_opt
    if args.images is None:
        return "train: the image folder is required (IMAGES or --images DIR)"
    if not args.images.is_dir():
        return f"{args.images}: not a directory"
    if args.labels is None and not (args.images.parent / "labels").is_dir() \
            and any(args.images.glob("*.csv")):
        args.labels = args.images
    if args.labels is not None and not args.labels.is_dir():
        return f"--labels {args.labels}: not a directory"
    return None
