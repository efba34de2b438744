"""``fastsac consensus DIR [DIR ...] -o OUT``: one consensus label set from several annotators."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser(
        "consensus", help="merge several annotators' labels into a consensus with probabilities",
        description="Each DIR holds one annotator's label CSVs (<stem>.csv, ImageJ X/Y or "
                    "atoms.csv). Clicks are grouped across annotators (Hungarian matching within "
                    "a tolerance); a Dawid-Skene EM estimates each annotator's sensitivity and "
                    "false-click rate jointly with each group's probability of being a real atom. "
                    "Writes OUT/<stem>.csv (X, Y, agreement, n_annotators, probability) and "
                    "OUT/agreement.json.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="one label folder per annotator")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--tolerance-px", type=float, default=3.0,
                   help="largest distance between clicks on the same spot (default: %(default)s)")
    p.add_argument("--method", choices=["auto", "em", "majority"], default="auto",
                   help="em: keep groups with probability >= --min-probability; majority: keep "
                        "groups with agreement >= --min-agreement; auto: em with 5 or more "
                        "annotators, majority with fewer (docs/annotation.md) (default: %(default)s)")
    p.add_argument("--classes", choices=["auto", "2", "3"], default="auto",
                   help="latent classes of the EM: 2 = real/spurious, 3 = easy real/hard real/"
                        "spurious; auto: 3 with 5 or more voters (default: %(default)s)")
    p.add_argument("--min-probability", type=float, default=0.5,
                   help="EM consensus threshold on P(real atom) (default: %(default)s)")
    p.add_argument("--min-agreement", type=float, default=0.5,
                   help="majority-vote threshold on the fraction of annotators (default: %(default)s)")
    p.add_argument("--detections", metavar="DIR", default=None,
                   help="a detector's <stem>.csv files (atoms.csv or X/Y) as one more voter; a "
                        "'probability' column (or a 'score' within [0, 1]) is its soft vote")
    p.add_argument("--names", default=None,
                   help="comma-separated annotator names (default: the folder names)")
    p.add_argument("--all-groups", action="store_true",
                   help="write every clicked spot with an in_consensus column, not only the consensus")
    return p


def read_detections(path):
    """``(xy, probability or None)`` of a detection CSV; one-line FastsacInputError if unreadable."""
    import csv
    import io as _stdio
    from pathlib import Path

    import numpy as np

    from ..errors import FastsacInputError
    from ..io import read_points

    xy = read_points(path)
    rows = [r for r in csv.reader(_stdio.StringIO(Path(path).read_text(encoding="utf-8-sig")))
            if any(c.strip() for c in r)]
    lower = [c.strip().lower() for c in rows[0]]
    for col in ("probability", "score"):
        if col in lower:
            k = lower.index(col)
            try:
                p = np.array([float(r[k]) for r in rows[1:]], dtype=np.float64)
            except (ValueError, IndexError):
                raise FastsacInputError(path, f"column {col!r} is not numeric") from None
            if len(p) and np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1:
                return xy, p
            if col == "probability":
                raise FastsacInputError(path, "column 'probability' must lie in [0, 1]")
    return xy, None


def _finite(obj):
    """JSON has no NaN: NaN/inf → null, numpy scalars → Python numbers."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def agreement_report(result, labels, *, pairwise) -> dict:
    """The content of agreement.json for a :class:`fastsac.consensus.Consensus`."""
    import numpy as np

    from ..consensus import annotator_summary

    per_image = {}
    for stem, im in result.images.items():
        counts = {a: (None if labels[stem][i] is None else len(labels[stem][i]))
                  for i, a in enumerate(result.annotators)}
        k = im.keep
        per_image[stem] = {
            "counts": counts,
            "n_annotators": im.n_annotators,
            "n_groups": len(im.groups),
            "n_consensus": int(k.sum()),
            "mean_agreement": float(im.agreement[k].mean()) if k.any() else None,
            "unanimous_share": float(np.mean(im.agreement[k] >= 1 - 1e-12)) if k.any() else None,
            "mean_probability": float(im.probability[k].mean()) if k.any() else None,
        }
    m = result.model
    return _finite({
        "method": result.method, "tolerance_px": result.tolerance_px,
        "min_probability": result.min_probability, "min_agreement": result.min_agreement,
        "annotators": list(result.annotators), "voters": list(result.voters),
        "model": {"classes": result.n_classes, "prior": m.prior, "n_unseen_atoms": m.n_unseen,
                  "n_iter": m.n_iter, "converged": m.converged,
                  "log_likelihood": m.log_likelihood},
        "per_annotator": annotator_summary(result),
        "pairwise_f1": {"annotators": list(result.annotators), "matrix": pairwise},
        "per_image": per_image,
    })


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from ..consensus import build_consensus, pairwise_f1
    from ..errors import FastsacInputError
    from ..io import atomic_write_text, read_points, write_json
    from ._common import report_bad

    dirs = [Path(d) for d in args.dirs]
    for d in dirs:
        if not d.is_dir():
            print(f"fastsac consensus: {d}: not a folder", file=sys.stderr)
            return 2
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(dirs):
            print(f"fastsac consensus: --names gives {len(names)} names for {len(dirs)} folders",
                  file=sys.stderr)
            return 2
    else:
        names = [d.resolve().name or str(d) for d in dirs]
        # Two folders with one name (a/labels, b/labels): tell them apart by position.
        if len(set(names)) < len(names):
            names = [f"{n}#{i}" for i, n in enumerate(names)]
    for name, val in (("--min-probability", args.min_probability), ("--min-agreement", args.min_agreement)):
        if not 0 <= val <= 1:
            print(f"fastsac consensus: {name} must lie in [0, 1], got {val}", file=sys.stderr)
            return 2
    if not args.tolerance_px > 0:
        print(f"fastsac consensus: --tolerance-px must be > 0, got {args.tolerance_px}", file=sys.stderr)
        return 2
    stems = sorted({f.stem for d in dirs for f in d.glob("*.csv")})
    if not stems:
        print(f"fastsac consensus: no <stem>.csv label files in {', '.join(map(str, dirs))}", file=sys.stderr)
        return 2
    bad = 0
    labels: dict[str, list] = {}
    for stem in stems:
        row = []
        for d in dirs:
            f = d / f"{stem}.csv"
            if not f.exists():
                row.append(None)
                continue
            try:
                row.append(read_points(f))
            except FastsacInputError as exc:
                bad += 1
                report_bad(f, exc)
                row.append(None)
        if any(r is not None for r in row):
            labels[stem] = row
    detections = None
    if args.detections:
        det_dir = Path(args.detections)
        if not det_dir.is_dir():
            print(f"fastsac consensus: --detections {det_dir}: not a folder", file=sys.stderr)
            return 2
        detections = {}
        for stem in labels:
            f = det_dir / f"{stem}.csv"
            if f.exists():
                try:
                    detections[stem] = read_detections(f)
                except FastsacInputError as exc:
                    bad += 1
                    report_bad(f, exc)
    result = build_consensus(labels, annotators=names, tolerance_px=args.tolerance_px,
                             method=args.method, min_probability=args.min_probability,
                             min_agreement=args.min_agreement, detections=detections,
                             n_classes=args.classes if args.classes == "auto" else int(args.classes))
    out = Path(args.out)
    for stem, im in result.images.items():
        sel = np.ones(len(im.groups), bool) if args.all_groups else im.keep
        header = "X,Y,agreement,n_annotators,probability" + (",in_consensus" if args.all_groups else "")
        lines = [header]
        for i in np.flatnonzero(sel):
            x, y = im.groups.xy[i]
            line = f"{x:.3f},{y:.3f},{im.agreement[i]:.4f},{im.n_annotators},{im.probability[i]:.6f}"
            lines.append(line + (f",{int(im.keep[i])}" if args.all_groups else ""))
        atomic_write_text(out / f"{stem}.csv", "\n".join(lines) + "\n")
    # Every clicked spot with its probability: what posterior sampling of the consensus needs
    # (fastsac evaluate --consensus), and per-atom weights for training.
    for stem, im in result.images.items():
        lines = ["X,Y,agreement,n_annotators,probability,in_consensus"]
        for i in range(len(im.groups)):
            x, y = im.groups.xy[i]
            lines.append(f"{x:.3f},{y:.3f},{im.agreement[i]:.4f},{im.n_annotators},"
                         f"{im.probability[i]:.6f},{int(im.keep[i])}")
        atomic_write_text(out / "groups" / f"{stem}.csv", "\n".join(lines) + "\n")
    report = agreement_report(result, labels,
                              pairwise=pairwise_f1(labels, tolerance_px=args.tolerance_px))
    report["annotator_dirs"] = [str(d.resolve()) for d in dirs]
    if args.detections:
        report["detections_dir"] = str(Path(args.detections).resolve())
    write_json(out / "agreement.json", report)
    n_kept = sum(int(im.keep.sum()) for im in result.images.values())
    print(f"consensus of {len(names)} annotators on {len(result.images)} images: {n_kept} atoms "
          f"-> {out}")
    for name, r in report["per_annotator"].items():
        fc = r["false_click_rate"]
        print(f"  {name:<20} sensitivity {r['sensitivity']:.3f}  false-click rate "
              f"{'n/a' if fc is None else f'{fc:.3f}'}  clicks {r['clicks']}")
    return 2 if bad else 0
