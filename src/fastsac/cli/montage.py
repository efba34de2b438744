"""``fastsac montage INPUT -o OUT``: streamed detection and global statistics of a montage."""

from __future__ import annotations

from ._common import add_detector_args, detector_from_args, report_bad


def add_parser(sub):
    p = sub.add_parser(
        "montage", help="analyse a gigapixel montage tile by tile (optionally on Dask)",
        description="Analyse a montage (BigTIFF, Zarr/OME-Zarr, .npy, or a folder of frames "
                    "with --positions). Writes OUT/atoms.parquet (global coordinates), "
                    "OUT/summary.json (global NN distances, clusters, counts, density per "
                    "support area) and OUT/support_mask.png (binned support/vacuum mask).")
    p.add_argument("input", metavar="INPUT", help="montage file/Zarr, or a folder of frames")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_detector_args(p)
    # Exact tiling is implemented for the classical detector (see docs/montage.md).
    p.set_defaults(detector="classical")
    p.add_argument("--tile", type=int, default=2048, metavar="N",
                   help="core edge in px; each core is read with a halo (default: %(default)s)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                   help="pixel size in nm (overrides the file's calibration)")
    p.add_argument("--multimer-cutoff", type=float, default=0.23, metavar="NM",
                   help="NN distance below which an atom is in a multimer (default: %(default)s nm)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run chunks on a local Dask cluster of N single-threaded processes")
    g.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="run chunks on an existing dask.distributed scheduler (tcp://host:8786)")
    p.add_argument("--scratch", default=None, metavar="DIR",
                   help="directory for the temporary DoG array (4 bytes/px; must be visible to "
                        "all workers; default: system temp)")
    p.add_argument("--positions", default=None, metavar="CSV",
                   help="folder mode: CSV of frame file and top-left x_px,y_px or x_nm,y_nm")
    p.add_argument("--dedup", default="ownership", choices=["ownership", "score"],
                   help="folder mode: how overlapping detections are deduplicated")
    p.add_argument("--no-support-mask", action="store_true",
                   help="no vacuum detection: densities per montage area")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from pathlib import Path

    from ..errors import FastsacInputError
    from ..io import write_json
    from ..montage import analyze_frames, analyze_montage, support_png, write_parquet

    out = Path(args.out)
    src = Path(args.input)
    detector = detector_from_args(args)
    if detector is None:
        return 2
    progress = not args.no_progress
    try:
        if src.is_dir() and args.positions is None and not _is_zarr(src):
            raise FastsacInputError(src, "a folder of frames needs --positions CSV")
        if args.positions is not None:
            if args.workers or args.scheduler:
                print("fastsac montage: folder mode runs in-process; --workers/--scheduler ignored")
            res = analyze_frames(src, args.positions, detector=detector,
                                 pixel_size_nm=args.pixel_size,
                                 multimer_cutoff_nm=args.multimer_cutoff, dedup=args.dedup,
                                 progress=progress, support_mask=not args.no_support_mask)
        elif args.workers or args.scheduler:
            from ..dask_runner import dask_runner

            with dask_runner(workers=args.workers, scheduler=args.scheduler,
                             progress=progress) as runner:
                res = analyze_montage(src, detector=detector, tile=args.tile,
                                      pixel_size_nm=args.pixel_size,
                                      multimer_cutoff_nm=args.multimer_cutoff, runner=runner,
                                      scratch_dir=args.scratch, progress=progress,
                                      support_mask=not args.no_support_mask)
        else:
            res = analyze_montage(src, detector=detector, tile=args.tile,
                                  pixel_size_nm=args.pixel_size,
                                  multimer_cutoff_nm=args.multimer_cutoff,
                                  scratch_dir=args.scratch, progress=progress,
                                  support_mask=not args.no_support_mask)
    except (FastsacInputError, NotImplementedError) as exc:
        report_bad(src, exc)
        return 2
    write_parquet(out / "atoms.parquet", res)
    write_json(out / "summary.json", res.statistics)
    if res.support is not None:
        support_png(out / "support_mask.png", res.support)
    else:  # not a stale mask from an earlier run
        (out / "support_mask.png").unlink(missing_ok=True)
    s = res.statistics
    u = s["length_unit"]
    nn = s.get(f"nn_mean_{u}")
    dens = s.get(f"density_per_{u}2")
    sup = s.get("support")
    vac = "" if not sup else f", vacuum {sup['vacuum_fraction']:.1%}"
    print(f"{s['n_atoms']} atoms in {res.shape[1]}×{res.shape[0]} px{vac}, density "
          f"{'n/a' if dens is None else f'{dens:.4g}'}/{u}², mean NN "
          f"{'n/a' if nn is None else f'{nn:.4g} {u}'} -> {out}")
    return 0


def _is_zarr(p) -> bool:
    return p.suffix == ".zarr" or (p / "zarr.json").exists() or (p / ".zarray").exists() \
        or (p / ".zgroup").exists()
