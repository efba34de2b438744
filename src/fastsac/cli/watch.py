"""``fastsac watch DIR -o OUT``: analyse frames live as the microscope writes them."""

from __future__ import annotations

from ._common import (add_detector_args, add_multimer_cutoff, check_writable_dir,
                      detector_from_args, environment_problem, fail, nonnegative_float,
                      pixel_size, positive_float, positive_int, report_bad)


def add_parser(sub):
    p = sub.add_parser(
        "watch", help="analyse new frames in a folder as they are acquired",
        description="Poll DIR for new, complete frames (size and mtime unchanged for --settle "
                    "seconds and readable; *.tmp/*.part and dot-files are ignored until renamed; "
                    "a frame that does not read is reported once and retried when it changes; "
                    "a frame that changes after analysis is analysed again, its new row in "
                    "frames.csv naming the row it supersedes) and keep "
                    "OUT/atoms.csv, frames.csv, stats.json, overlay.png and a self-refreshing "
                    "OUT/index.html dashboard up to date. Ctrl-C stops cleanly.")
    p.add_argument("folder", metavar="DIR", help="folder the microscope writes frames into")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_detector_args(p, backend=False)
    p.add_argument("--pixel-size", type=pixel_size, default=None, metavar="NM",
                   help="pixel size in nm for frames without calibration")
    add_multimer_cutoff(p)
    p.add_argument("--poll", type=positive_float, default=1.0, metavar="S",
                   help="seconds between folder scans (default: %(default)s)")
    p.add_argument("--settle", type=nonnegative_float, default=1.0, metavar="S",
                   help="seconds a frame's size and mtime must stay unchanged before it is "
                        "read (default: %(default)s)")
    p.add_argument("--once", action="store_true",
                   help="process the frames present now, then exit")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                   help="stop after N analysed frames")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay PNG (faster)")
    return p


def run(args) -> int:
    from pathlib import Path

    from ..errors import FastsacInputError
    from ..live import watch

    folder = Path(args.folder)
    if not folder.is_dir():
        report_bad(folder, FastsacInputError(folder, "not a directory"))
        return 2
    why = environment_problem(args) or check_writable_dir(Path(args.out))
    if why:
        return fail(why)
    detector = detector_from_args(args)
    if detector is None:
        return 2

    def on_frame(r):
        print(f"[{r.index}] {r.name}: {len(r.detections)} atoms in {r.latency_s:.2f} s", flush=True)

    if not args.once:
        print(f"watching {folder} (Ctrl-C to stop) -> {args.out}/index.html", flush=True)
    rep = watch(folder, args.out, detector=detector, pixel_size_nm=args.pixel_size,
                multimer_cutoff_nm=args.multimer_cutoff_nm, poll_s=args.poll, once=args.once,
                max_frames=args.max_frames, settle_s=args.settle, overlay=not args.no_overlay,
                on_bad=lambda p, reason: report_bad(p, FastsacInputError(p, reason)),
                on_frame=on_frame)
    tail = " (interrupted)" if rep.interrupted else ""
    print(f"analysed {len(rep.processed)} frames, {len(rep.bad)} bad -> {args.out}{tail}")
    return 2 if rep.bad else 0
