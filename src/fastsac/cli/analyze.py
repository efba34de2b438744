"""``fastsac analyze INPUT... -o OUT``: detect atoms and write tables, summaries and overlays."""

from __future__ import annotations

from ._common import add_detector_args, detector_from_args, expand_inputs, report_bad


def add_parser(sub):
    p = sub.add_parser("analyze", help="detect atoms and quantify their dispersion",
                       description="Analyse micrographs: writes OUT/<stem>/atoms.csv, "
                                   "summary.json, overlay.png and OUT/summary.csv.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or directories")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_detector_args(p)
    p.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                   help="pixel size in nm (overrides the files' calibration)")
    p.add_argument("--multimer-cutoff", type=float, default=0.23, metavar="NM",
                   help="NN distance below which an atom is in a multimer (default: %(default)s nm)")
    p.add_argument("--elements", nargs="+", default=None, metavar="SYMBOL",
                   help="elements present, e.g. --elements Pt Pd: species per atom from the "
                        "Z^1.7 intensity contrast (default: intensity classes found in the data)")
    p.add_argument("--no-overlay", action="store_true",
                   help="skip the PNGs (overlay, nn_histogram, cluster_sizes)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the batch HTML report OUT/report.html (g(r), envelopes, histograms)")
    return p


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from ..errors import FastsacInputError
    from ..io import read
    from ..pipeline import analyze, summary_row, write_result, write_summary_csv

    out = Path(args.out)
    files = expand_inputs(args.inputs)
    if not files:
        print("fastsac analyze: no input images found")
        return 2
    detector = detector_from_args(args)
    if detector is None:
        return 2
    if args.elements:
        from ..species import atomic_number

        try:
            zs = [atomic_number(e) for e in args.elements]
        except ValueError as exc:
            print(f"fastsac analyze: --elements: {exc}")
            return 2
        if len(set(zs)) != len(zs):
            print(f"fastsac analyze: --elements: name each element once, got {' '.join(args.elements)}")
            return 2
    rows, bad = [], 0
    for path in tqdm(files, desc="analyze", unit="img", disable=len(files) < 2):
        try:
            m = read(path, pixel_size_nm=args.pixel_size)
            res = analyze(m, detector=detector, multimer_cutoff_nm=args.multimer_cutoff,
                          backend=args.backend, elements=args.elements)
            write_result(res, out / path.stem, overlay=not args.no_overlay)
            rows.append(summary_row(res.summary))
        except FastsacInputError as exc:
            bad += 1
            report_bad(path, exc)
            rows.append({"image": path.stem, "status": f"error: {exc.reason}"})
        # Rewritten after every image: a crash later keeps the finished rows.
        write_summary_csv(out / "summary.csv", rows)
    ok = len(files) - bad
    if ok and not args.no_report:
        from ..report import load_analysis_folder, write_html_report

        # Built from the files just written, exactly as `fastsac report OUT` would.
        write_html_report(out / "report.html", load_analysis_folder(
            out, multimer_cutoff_nm=args.multimer_cutoff))
    print(f"analysed {ok}/{len(files)} images -> {out}")
    return 2 if bad else 0
