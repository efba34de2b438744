"""``fastsac evaluate --consensus DIR``: scores and statistics with annotation uncertainty."""

from __future__ import annotations

import sys


def read_consensus_groups(path):
    """(xy, probability, keep) of OUT/groups/<stem>.csv written by ``fastsac consensus``."""
    import csv

    import numpy as np

    from ..errors import FastsacInputError

    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        xy = np.array([[float(r["X"]), float(r["Y"])] for r in rows], dtype=np.float64).reshape(-1, 2)
        p = np.array([float(r["probability"]) for r in rows], dtype=np.float64)
        keep = np.array([r["in_consensus"].strip() == "1" for r in rows], dtype=bool)
    except (KeyError, ValueError, AttributeError) as exc:
        raise FastsacInputError(path, f"not a consensus groups table ({exc})") from None
    return xy, p, keep


def consensus_evaluation(args, per_image: dict, seen: dict) -> dict | None:
    """F1 vs the consensus (bootstrap over images), vs each annotator, and statistics with
    intervals from annotation disagreement. None after a one-line error."""
    import json
    from pathlib import Path

    import numpy as np

    from ..consensus import (annotator_bootstrap_statistics, bootstrap_f1, point_statistics,
                             posterior_statistics)
    from ..errors import FastsacInputError
    from ..evaluate import match_points
    from ..io import DEFAULT_PIXEL_SIZE_NM, read_points
    from ._common import report_bad

    cdir = Path(args.consensus)
    try:
        rep = json.loads((cdir / "agreement.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"fastsac evaluate: --consensus {cdir}: not a `fastsac consensus` output "
              f"(agreement.json: {exc.__class__.__name__})", file=sys.stderr)
        return None
    stems = list(per_image)
    n_boot = max(int(args.bootstrap), 1)
    counts = np.array([[per_image[s][k] for k in ("tp", "fp", "fn")] for s in stems]).reshape(-1, 3)
    out: dict = {"images": len(stems),
                 "f1_vs_consensus": bootstrap_f1(*counts.T, n_resamples=n_boot).as_dict()}
    # Against each annotator, on the images that annotator labelled.
    dirs = [Path(d) for d in rep.get("annotator_dirs", [])]
    names = rep.get("annotators", [])
    per_ann, labels = {}, {s: [] for s in stems}
    for name, d in zip(names, dirs):
        rows = []
        for s in stems:
            f = d / f"{s}.csv"
            pts = None
            if f.exists():
                try:
                    pts = read_points(f)
                except FastsacInputError as exc:
                    report_bad(f, exc)
            labels[s].append(pts)
            if pts is not None:
                r = match_points(seen[s][0], pts, tolerance_px=args.tolerance_px)
                rows.append((r.tp, r.fp, r.fn))
        per_ann[name] = (bootstrap_f1(*np.array(rows).T, n_resamples=n_boot).as_dict() | {"images": len(rows)}
                         if rows else {"images": 0, "note": f"no labels found in {d}"})
    out["f1_vs_annotators"] = per_ann
    # Statistics: the consensus's density and multimer share, with intervals.
    px_assumed = False
    px, area = {}, {}
    for s in stems:
        _, shape, p_nm = seen[s]
        if p_nm is None:
            p_nm, px_assumed = DEFAULT_PIXEL_SIZE_NM, True
        px[s], area[s] = p_nm, shape[0] * shape[1] * p_nm ** 2
    groups = {}
    for s in stems:
        f = cdir / "groups" / f"{s}.csv"
        if f.exists():
            try:
                groups[s] = read_consensus_groups(f)
            except FastsacInputError as exc:
                report_bad(f, exc)
    stats: dict = {"area": "whole image", "pixel_size_assumed_nm": DEFAULT_PIXEL_SIZE_NM if px_assumed else None}
    if groups:
        stats["consensus_posterior"] = posterior_statistics(
            groups, areas_nm2=area, pixel_sizes_nm=px, n_samples=min(n_boot, 1000))
    if args.annotator_resamples > 0 and dirs and all(len(v) == len(dirs) for v in labels.values()):
        have = {s: v for s, v in labels.items() if any(x is not None for x in v)}
        if have:
            stats["annotator_bootstrap"] = annotator_bootstrap_statistics(
                have, areas_nm2=area, pixel_sizes_nm=px, n_resamples=args.annotator_resamples,
                tolerance_px=rep.get("tolerance_px", 3.0), method=rep.get("method", "auto"),
                n_classes=(rep.get("model") or {}).get("classes", "auto"),
                min_probability=rep.get("min_probability", 0.5), min_agreement=rep.get("min_agreement", 0.5))
    stats["detector"] = point_statistics([seen[s][0] for s in stems], areas_nm2=[area[s] for s in stems],
                                         pixel_sizes_nm=[px[s] for s in stems])
    out["statistics"] = stats
    return out


def print_consensus_evaluation(extra: dict) -> None:
    def iv(d, fmt="{:.3f}"):
        if d.get("low") is None or d["low"] != d["low"]:
            return fmt.format(d["estimate"])
        return (fmt + " [" + fmt + ", " + fmt + "]").format(d["estimate"], d["low"], d["high"])

    f = extra["f1_vs_consensus"]
    print(f"\nF1 vs consensus: {iv(f)} ({int(f['level'] * 100)}% bootstrap over {extra['images']} images)")
    for name, d in extra["f1_vs_annotators"].items():
        print(f"F1 vs {name:<14} " + (iv(d) + f" ({d['images']} images)" if d["images"] else d["note"]))
    st = extra["statistics"]
    if st.get("pixel_size_assumed_nm"):
        print(f"(no calibration in some images: {st['pixel_size_assumed_nm']} nm/px assumed)")
    for key, label in (("consensus_posterior", "consensus, posterior samples"),
                       ("annotator_bootstrap", "consensus, annotators resampled")):
        if key in st:
            d = st[key]
            print(f"{label:<32} density {iv(d['density_per_nm2'], '{:.4f}')} /nm²  "
                  f"multimer share {iv(d['multimer_share'])}")
    d = st["detector"]
    print(f"{'detector':<32} density {d['density_per_nm2']:.4f} /nm²  multimer share {d['multimer_share']:.3f}")
