"""``fastsac report OUT_DIR``: rebuild the HTML report from an analyze output folder."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ._common import (add_deprecated_alias, check_writable_dir, fail,
                      positive_int)

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="rebuild the HTML report of a `fastsac analyze` output folder",
        description="Read what `fastsac analyze` saved in OUT_DIR/<name>/ (atoms.csv, summary.json, "
                    "support_mask.png, overlay and plots) and write a self-contained HTML report plus "
                    "report.json. Nothing is recomputed: every number is the analysis's own; a folder "
                    "missing something the report needs is named in one line.")
    p.add_argument("out_dir", type=Path, help="folder written by `fastsac analyze`")
    p.add_argument("-o", "--out", type=Path, dest="output", default=None,
                   help="HTML file (default OUT_DIR/report.html; report.json beside it)")
    add_deprecated_alias(p, "--output", "-o/--out", dest="output", type=Path)
    p.add_argument("--title", default="fastsac report", help="report title")
    p.add_argument("--sample", default=None, help="sample name shown in the header")
    p.add_argument("--compare", type=Path, default=None, metavar="OTHER_DIR",
                   help="another analyze folder (e.g. after reaction): add a two-sample comparison "
                        "(KS and permutation tests on NN distances and multimer share)")
    p.add_argument("--n-perm", type=positive_int, default=9999,
                   help="permutations of the comparison (default 9999)")
    p.add_argument("--seed", type=int, default=0, help="seed of the comparison's permutations")
    return p


def run(args) -> int:
    from ..errors import FastsacInputError
    from ..io import write_json
    from ..report import load_analysis_folder, write_html_report
    from ..spatial.stats import compare_samples, pool_dispersion

    if not args.out_dir.is_dir():
        return fail(f"{args.out_dir}: not a directory (expected a `fastsac analyze` output folder)")
    html_path = args.output or args.out_dir / "report.html"
    why = check_writable_dir(Path(html_path).parent, what="folder of the report")
    if why:
        return fail(why)
    try:
        reports = load_analysis_folder(args.out_dir)
    except FastsacInputError as exc:
        return fail(str(exc))
    comparison = None
    names = (args.sample or args.out_dir.name, None)
    if args.compare is not None:
        try:
            other = load_analysis_folder(args.compare)
            comparison = compare_samples([r.stats for r in reports], [r.stats for r in other],
                                         n_perm=args.n_perm, seed=args.seed)
        except (FastsacInputError, ValueError) as exc:
            print(f"error: cannot compare with {args.compare}: {exc}", file=sys.stderr)
            return 2
        names = (names[0], args.compare.name)
    write_html_report(html_path, reports, title=args.title, sample=args.sample, comparison=comparison,
                      comparison_names=names)
    pooled = pool_dispersion([r.stats for r in reports], names=[r.name for r in reports]).as_dict()
    pooled.pop("per_image")
    doc = {"images": [r.as_dict() for r in reports], "pooled": pooled}
    if comparison is not None:
        doc["comparison"] = comparison.as_dict() | {"sample_a": names[0], "sample_b": names[1]}
    write_json(Path(html_path).with_suffix(".json"), doc)
    print(f"{html_path} ({len(reports)} images, {sum(r.stats.n_atoms for r in reports)} atoms)")
    return 0
