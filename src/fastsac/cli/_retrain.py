"""``fastsac train IMAGES --model rescore --consensus DIR``: retrain on a consensus, evaluated first."""

from __future__ import annotations

import sys
from pathlib import Path


def run_consensus_retrain(args) -> int:
    import json

    from ..detectors import get_detector
    from ..detectors.rescore import candidate_features
    from ..errors import FastsacInputError
    from ..io import SUPPORTED_SUFFIXES, read, write_json
    from ..retrain import retrain_on_consensus
    from ._consensus_eval import read_consensus_groups
    from ._common import report_bad

    cdir = Path(args.consensus)
    if not (cdir / "groups").is_dir():
        print(f"fastsac train: --consensus {cdir}: no groups/ folder (output of `fastsac consensus`)",
              file=sys.stderr)
        return 2
    images = sorted(f for f in Path(args.images).iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES) \
        if Path(args.images).is_dir() else []
    pairs = [(im, cdir / "groups" / f"{im.stem}.csv") for im in images]
    pairs = [(im, g) for im, g in pairs if g.exists()]
    if len(pairs) < 2:
        print(f"fastsac train: need at least 2 images in {args.images} with a consensus in {cdir}/groups",
              file=sys.stderr)
        return 2
    try:
        baseline = get_detector(args.baseline)
    except (FastsacInputError, ValueError) as exc:
        report_bad(None, exc)
        return 2
    data, base_xy, bad = {}, {}, 0
    for im, g in pairs:
        try:
            m = read(im)
            groups = read_consensus_groups(g)
            tab = candidate_features(m.data, pixel_size_nm=m.pixel_size_nm)
            base_xy[im.stem] = baseline.detect(m).xy
        except FastsacInputError as exc:
            bad += 1
            report_bad(im, exc)
            continue
        data[im.stem] = (tab, *groups)
    try:
        rep = retrain_on_consensus(data, baseline_xy=base_xy, folds=args.folds)
    except ValueError as exc:
        print(f"fastsac train: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("fastsac_rescore_consensus.json")
    rep.model.save(out)
    report = {"model": str(out), "baseline": args.baseline, **rep.as_dict()}
    write_json(Path(out).with_suffix(".eval.json"), json.loads(json.dumps(report)))
    verdict = ("better than the current detector: it may become the default "
               f"(fastsac analyze --detector {out})") if rep.better else \
        "not better than the current detector: keep the current default"
    print(f"wrote {out}: held-out F1 vs consensus {rep.f1_new:.3f} ({rep.folds}-fold over {len(data)} images) "
          f"vs {args.baseline} {rep.f1_baseline:.3f}; {verdict}")
    return 2 if bad else 0
