"""``fastsac evaluate --images DIR --labels DIR``: precision/recall/F1 against labels
(or ``--consensus DIR``: against a consensus, with intervals from annotation disagreement)."""

from __future__ import annotations

from ._common import (add_detector_args, check_writable_dir, describe_error, detector_from_args,
                      environment_problem, fail, pixel_size, positive_float, report_bad)


def add_parser(sub):
    p = sub.add_parser("evaluate", help="score a detector against labelled images",
                       description="Pairs images and label CSVs (ImageJ X/Y, atoms.csv or "
                                   "simulator truth) by file stem; Hungarian matching within a "
                                   "distance tolerance.")
    p.add_argument("--images", required=True, help="directory of images")
    p.add_argument("--labels", default=None, help="directory of label CSVs named <stem>.csv")
    p.add_argument("--consensus", default=None, metavar="DIR",
                   help="output folder of `fastsac consensus` (instead of --labels): score against the "
                        "consensus with a bootstrap interval and against each annotator, and give density "
                        "and multimer share intervals from annotation disagreement")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="with --consensus: image resamples for the F1 interval, and posterior "
                        "samples of the consensus (default: %(default)s)")
    p.add_argument("--annotator-resamples", type=int, default=200, metavar="N",
                   help="with --consensus: annotator-panel resamples for the statistics interval "
                        "(0 = skip; default: %(default)s)")
    add_detector_args(p, backend=False)
    p.add_argument("--tolerance-px", type=positive_float, default=6.0,
                   help="match distance tolerance in pixels, > 0 (default: %(default)s)")
    p.add_argument("--pixel-size", type=pixel_size, default=None, metavar="NM",
                   help="pixel size in nm (overrides the files' calibration)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("-o", "--out", default=None, metavar="PATH",
                   help="also write the JSON object (pooled and per image) to PATH")
    return p


def run(args) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from ..evaluate import match_points, pool
    from ..io import SUPPORTED_SUFFIXES, read, read_points

    why = environment_problem(args)
    if why:
        return fail(why)
    if (args.labels is None) == (args.consensus is None):
        return fail("evaluate: give one of --labels DIR or --consensus DIR")
    for opt, d in (("--images", args.images), ("--labels" if args.labels else "--consensus",
                                               args.labels or args.consensus)):
        if not Path(d).is_dir():
            return fail(f"{opt} {d}: not a directory")
    if args.out is not None:
        why = check_writable_dir(Path(args.out).parent or Path("."), what="folder of -o")
        if why:
            return fail(why)
    images = sorted(f for f in Path(args.images).iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES)
    label_dir = Path(args.labels or args.consensus)
    pairs = [(im, label_dir / f"{im.stem}.csv") for im in images]
    pairs = [(im, lb) for im, lb in pairs if lb.exists()]
    if not pairs:
        return fail(f"evaluate: no image in {args.images} has a label file <stem>.csv in {label_dir}")
    detector = detector_from_args(args)
    if detector is None:
        return 2
    results, per_image, bad, seen = [], {}, 0, {}
    for im, lb in tqdm(pairs, desc="evaluate", unit="img", disable=True if (args.json or len(pairs) < 2) else None):
        try:
            m = read(im, pixel_size_nm=args.pixel_size)
            truth = read_points(lb)
            det = detector.detect(m)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of one input is one line
            bad += 1
            report_bad(im, exc)
            continue
        r = match_points(det.xy, truth, tolerance_px=args.tolerance_px)
        results.append(r)
        per_image[im.stem] = r.as_dict()
        seen[im.stem] = (det.xy, m.data.shape, m.pixel_size_nm)
    pooled = pool(results)
    doc = {**pooled, "tolerance_px": args.tolerance_px,
           "detector": getattr(detector, "name", str(args.detector)), "per_image": per_image}
    extra = None
    if args.consensus:
        from ._consensus_eval import consensus_evaluation

        extra = consensus_evaluation(args, per_image, seen)
        if extra is None:
            return 2
        doc["consensus"] = extra
    if args.out is not None:
        from ..io import write_json

        try:
            write_json(args.out, doc)
        except OSError as exc:
            return fail(f"cannot write {args.out}: {describe_error(exc)}")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'image':<16}{'TP':>5}{'FP':>5}{'FN':>5}{'P':>8}{'R':>8}{'F1':>8}")
        for stem, d in per_image.items():
            print(f"{stem:<16}{d['tp']:>5}{d['fp']:>5}{d['fn']:>5}"
                  f"{d['precision']:>8.3f}{d['recall']:>8.3f}{d['f1']:>8.3f}")
        print(f"{'pooled':<16}{pooled['tp']:>5}{pooled['fp']:>5}{pooled['fn']:>5}"
              f"{pooled['precision']:>8.3f}{pooled['recall']:>8.3f}{pooled['f1']:>8.3f}")
        if extra:
            from ._consensus_eval import print_consensus_evaluation

            print_consensus_evaluation(extra)
    return 2 if bad else 0
