"""``fastsac analyze INPUT... -o OUT``: detect atoms and write tables, summaries and overlays."""

from __future__ import annotations

import logging
import sys

from ._common import (EXIT_BAD_INPUT, EXIT_OK, add_detector_args, add_elements,
                      add_multimer_cutoff, describe_error, detector_from_args, elements_problem,
                      environment_problem, expand_inputs,
                      fail, output_names, pixel_size, positive_int, prepare_output_dir,
                      report_bad, write_manifest)

log = logging.getLogger(__name__)

#: Default of --max-pixels (equals fastsac.io.MAX_PIXELS; not imported so --help stays instant).
DEFAULT_MAX_PIXELS = 8192 * 8192


def add_parser(sub):
    p = sub.add_parser(
        "analyze", help="detect atoms and quantify their dispersion",
        description="Analyse micrographs: writes OUT/<name>/atoms.csv, atoms.parquet, summary.json, "
                    "support_mask.png, overlay.png and plots, "
                    "OUT/summary.csv (one row per image, with its file), OUT/report.html and "
                    "OUT/manifest.json (what the run wrote). <name> is the file stem, qualified "
                    "by its folder when two inputs share a stem; each frame of a 3-D stack gets "
                    "<stem>_f000, <stem>_f001, … A bad input is one line on stderr, the rest "
                    "of the batch completes, and the exit status is 2.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or directories")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_detector_args(p)
    p.add_argument("--pixel-size", type=pixel_size, default=None, metavar="NM",
                   help="pixel size in nm, 1e-4 to 1e3 (overrides the files' calibration)")
    add_multimer_cutoff(p)
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse frames with more pixels than N, judged from the file header "
                        "before decoding (default: %(default)s = 8192²); analyse bigger images "
                        "with `fastsac montage`")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in OUT (default: refuse)")
    add_elements(p)
    p.add_argument("--no-overlay", action="store_true", help="skip overlay PNGs")
    p.add_argument("--no-report", action="store_true",
                   help="skip the batch HTML report OUT/report.html (g(r), envelopes, histograms)")
    p.add_argument("--no-pair-correlation", action="store_true",
                   help="skip Ripley L / g(r) with CSR envelopes (summary.json pair_correlation)")
    p.add_argument("--zip", action="store_true",
                   help="also write OUT/<name>.zip per image and OUT/batch.zip (CSV, Parquet, JSON, "
                        "PNGs, report.html)")
    return p


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    out = Path(args.out)
    why = environment_problem(args)
    if why:
        return fail(why)
    files = expand_inputs(args.inputs)
    if not files:
        return fail(f"no input images found in {' '.join(args.inputs)}")
    detector = detector_from_args(args)
    if detector is None:
        return EXIT_BAD_INPUT
    why = elements_problem(args.elements)
    if why:
        return fail(why)
    why = prepare_output_dir(out, overwrite=args.overwrite)
    if why:
        return fail(why)

    from ..io import DEFAULT_PIXEL_SIZE_NM, image_info, read
    from ..pipeline import analyze
    from ..result import summary_row, write_bundle, write_result, write_summary_csv

    rows: list[dict] = []
    done: list[Path] = []
    entries: list[dict] = []
    outputs: list[str] = []
    bad = ok = 0
    argv = getattr(args, "_argv", None)

    def write_index() -> str | None:
        """summary.csv and the manifest, rewritten after every image: a crash later
        keeps the finished rows, and the manifest lets a later --overwrite remove
        exactly this run. The one-line reason when they cannot be written."""
        try:
            write_summary_csv(out / "summary.csv", rows)
            write_manifest(out, command="analyze", argv=argv, entries=entries, outputs=outputs)
        except OSError as exc:
            return f"cannot write to {out}: {describe_error(exc)}"
        return None

    # No progress bar unless stderr is a terminal: the one-line messages stay lines.
    for path, name in tqdm(list(zip(files, output_names(files))), desc="analyze", unit="img",
                           disable=None if len(files) > 1 else True):
        try:
            n_frames = image_info(path, max_pixels=args.max_pixels).n_frames
        except Exception as exc:  # noqa: BLE001 - any failure of one input is one line
            n_frames = 0
            bad += 1
            _skip(path, name, exc, rows, entries)
        for k in range(n_frames):
            frame = None if n_frames == 1 else k
            fname = name if frame is None else f"{name}_f{k:03d}"
            try:
                m = read(path, pixel_size_nm=args.pixel_size, max_pixels=args.max_pixels,
                         frame=frame)
                res = analyze(m, detector=detector, multimer_cutoff_nm=args.multimer_cutoff_nm,
                              backend=args.backend, elements=args.elements,
                              pair_correlation=not args.no_pair_correlation)
                where = f"{path}{'' if frame is None else f' frame {k}'}"
                if res.summary["pixel_size_source"] == "estimated from atom size":
                    print(f"fastsac: note: {where} has no usable calibration; pixel size "
                          f"{res.summary['pixel_size_nm']:.4g} nm estimated from the atom size "
                          "(give --pixel-size NM)", file=sys.stderr)
                elif m.pixel_size_nm is None:
                    print(f"fastsac: note: {where} has no usable calibration; lengths assume "
                          f"{DEFAULT_PIXEL_SIZE_NM} nm/px (give --pixel-size NM)", file=sys.stderr)
                res.summary["input_file"] = str(path)
                res.summary["output_name"] = fname
                res.summary["frame"] = frame
                res.summary["pixel_size_assumed_nm"] = (None if res.summary["pixel_size_nm"]
                                                        else DEFAULT_PIXEL_SIZE_NM)
                if "calibration_rejected_nm" in m.metadata:
                    res.summary["calibration_rejected_nm"] = m.metadata["calibration_rejected_nm"]
                outputs.append(fname)
                write_result(res, out / fname, overlay=not args.no_overlay)
                done.append(out / fname)
                row = summary_row(res.summary)
                row["image"] = fname
                row["file"] = str(path)
                row["pixel_size_assumed_nm"] = res.summary["pixel_size_assumed_nm"]
                rows.append(row)
                entries.append({"file": str(path), "frame": frame, "output": fname,
                                "status": "ok"})
                ok += 1
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of one input is one line
                bad += 1
                _skip(path, fname, exc, rows, entries, frame=frame)
            why = write_index()
            if why:
                return fail(why)
        if n_frames == 0:
            why = write_index()
            if why:
                return fail(why)
    report_failed = False
    if ok and not args.no_report:
        try:
            from ..report import ImageReport, write_html_report
            from ..result import load_result

            # Built from the result folders just written (nothing recomputed), exactly
            # as `fastsac report OUT` would.
            write_html_report(out / "report.html",
                              [ImageReport.from_saved(load_result(d)) for d in done])
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - the tables are written; say why the report is not
            report_failed = True
            log.debug("report failed", exc_info=True)
            print(f"fastsac: {out / 'report.html'} not written: {describe_error(exc)}",
                  file=sys.stderr)
    if ok and args.zip:
        for d in done:
            write_bundle(out / f"{d.name}.zip", [d])
        write_bundle(out / "batch.zip", done,
                     batch_files=[out / "summary.csv", out / "report.html"])
        outputs += [f"{d.name}.zip" for d in done] + ["batch.zip"]
        write_manifest(out, command="analyze", argv=argv, entries=entries, outputs=outputs)
    n = ok + bad
    print(f"analysed {ok}/{n} images -> {out}")
    return EXIT_BAD_INPUT if (bad or report_failed) else EXIT_OK


def _skip(path, name, exc, rows, entries, *, frame=None) -> None:
    log.debug("skipped %s", path, exc_info=True)
    report_bad(path, exc)
    reason = getattr(exc, "reason", None) or describe_error(exc)
    rows.append({"image": name, "status": f"error: {reason}", "file": str(path)})
    entries.append({"file": str(path), "frame": frame, "output": None, "status": f"error: {reason}"})
