"""``fastsac montage INPUT -o OUT``: streamed detection and global statistics of a montage."""

from __future__ import annotations

import sys

from ._common import (add_detector_args, add_elements, add_multimer_cutoff, check_writable_dir,
                      describe_error, detector_from_args, elements_problem, environment_problem,
                      fail, pixel_size, positive_int, report_bad)

#: Default of --max-pixels: 2^34 px (131072², ~17 Gpx); above, a montage must be confirmed.
DEFAULT_MAX_PIXELS = 1 << 34


def add_parser(sub):
    p = sub.add_parser(
        "montage", help="analyse a gigapixel montage tile by tile (optionally on Dask)",
        description="Analyse a montage (BigTIFF, Zarr/OME-Zarr, .npy, or a folder of frames "
                    "with --positions). Writes OUT/atoms.parquet (global coordinates, species), "
                    "OUT/summary.json (global NN distances, clusters, counts, density per "
                    "support area, species, cluster-size distribution), OUT/clusters.csv (one "
                    "row per cluster), OUT/support_mask.png (binned support/vacuum mask) and "
                    "the plots nn_histogram.png, cluster_sizes.png, pair_correlation.png.")
    p.add_argument("input", metavar="INPUT", help="montage file/Zarr, or a folder of frames")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_detector_args(p, backend=False)
    # Exact tiling is implemented for the classical detector (see docs/montage.md).
    p.set_defaults(detector="classical")
    p.add_argument("--tile", type=positive_int, default=2048, metavar="N",
                   help="core edge in px; each core is read with a halo (default: %(default)s)")
    p.add_argument("--pixel-size", type=pixel_size, default=None, metavar="NM",
                   help="pixel size in nm (overrides the file's calibration)")
    add_multimer_cutoff(p)
    add_elements(p)
    p.add_argument("--no-species", action="store_true",
                   help="skip the species stage without --elements (its mixture fit takes "
                        "minutes for 10^6 atoms; see docs/montage.md)")
    p.add_argument("--no-plots", action="store_true",
                   help="skip nn_histogram.png, cluster_sizes.png and pair_correlation.png")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="run chunks on a local Dask cluster of N single-threaded processes")
    g.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="run chunks on an existing dask.distributed scheduler: its address "
                        "(tcp://host:8786) or its scheduler file (JSON)")
    p.add_argument("--scratch", default=None, metavar="DIR",
                   help="directory for the temporary DoG array (4 bytes/px; must be visible to "
                        "all workers; default: system temp)")
    p.add_argument("--positions", default=None, metavar="CSV",
                   help="folder mode: CSV of frame file and top-left x_px,y_px or x_nm,y_nm")
    p.add_argument("--dedup", default="ownership", choices=["ownership", "score"],
                   help="folder mode: how overlapping detections are deduplicated")
    p.add_argument("--no-support-mask", action="store_true",
                   help="no vacuum detection: densities per montage area")
    p.add_argument("--missing-chunks", default="error", choices=["error", "vacuum"],
                   help="Zarr chunks never written: an error naming them (default), or analysed "
                        "as vacuum and listed in summary.json")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse montages with more pixels than N unless raised (default: "
                        "%(default)s = 131072²): confirms an implausible size before hours of work")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from pathlib import Path

    from ..errors import FastsacInputError
    from ..montage import analyze_frames, analyze_montage, write_montage_result

    out = Path(args.out)
    src = Path(args.input)
    why = environment_problem(args) or elements_problem(args.elements) or check_writable_dir(out)
    if not why and args.scratch is not None:
        why = check_writable_dir(Path(args.scratch), what="--scratch directory")
    scheduler = None
    if not why and args.scheduler is not None:
        scheduler, why = scheduler_address(args.scheduler)
    if why:
        return fail(why)
    detector = detector_from_args(args)
    if detector is None:
        return 2
    progress = not args.no_progress
    opts = {"missing_chunks": args.missing_chunks, "max_pixels": args.max_pixels,
            "elements": args.elements, "species": not args.no_species}
    try:
        if src.is_dir() and args.positions is None and not _is_zarr(src):
            raise FastsacInputError(src, "a folder of frames needs --positions CSV")
        if args.positions is not None:
            if args.workers or args.scheduler:
                print("fastsac montage: folder mode runs in-process; --workers/--scheduler ignored")
            res = analyze_frames(src, args.positions, detector=detector,
                                 pixel_size_nm=args.pixel_size,
                                 multimer_cutoff_nm=args.multimer_cutoff_nm, dedup=args.dedup,
                                 progress=progress, support_mask=not args.no_support_mask,
                                 elements=args.elements, species=not args.no_species)
        elif args.workers or args.scheduler:
            from ..dask_runner import dask_runner

            try:
                ctx = dask_runner(workers=args.workers, scheduler=scheduler, progress=progress)
                runner = ctx.__enter__()
            except (OSError, TimeoutError, ValueError) as exc:
                return fail(f"cannot start Dask ({'--scheduler ' + scheduler if scheduler else '--workers'}): "
                            f"{describe_error(exc)}")
            try:
                res = analyze_montage(src, detector=detector, tile=args.tile,
                                      pixel_size_nm=args.pixel_size,
                                      multimer_cutoff_nm=args.multimer_cutoff_nm, runner=runner,
                                      scratch_dir=args.scratch, progress=progress,
                                      support_mask=not args.no_support_mask, **opts)
            finally:
                ctx.__exit__(None, None, None)
        else:
            res = analyze_montage(src, detector=detector, tile=args.tile,
                                  pixel_size_nm=args.pixel_size,
                                  multimer_cutoff_nm=args.multimer_cutoff_nm,
                                  scratch_dir=args.scratch, progress=progress,
                                  support_mask=not args.no_support_mask, **opts)
    except (FastsacInputError, NotImplementedError, MemoryError) as exc:
        report_bad(src, exc)
        return 2
    try:
        write_montage_result(res, out, plots=not args.no_plots)
    except OSError as exc:
        return fail(f"cannot write to {out}: {describe_error(exc)}")
    s = res.statistics
    if s.get("pixel_size_source") == "estimated from atom size":
        print(f"fastsac: note: {src} has no usable calibration; pixel size "
              f"{s['pixel_size_nm']:.4g} nm estimated from the atom size (give --pixel-size NM)",
              file=sys.stderr)
    elif s.get("pixel_size_nm") is None:
        print(f"fastsac: note: {src} has no usable calibration; lengths are in pixels "
              "(give --pixel-size NM)", file=sys.stderr)
    u = s["length_unit"]
    nn = s.get(f"nn_mean_{u}")
    dens = s.get(f"density_per_{u}2")
    sup = s.get("support")
    vac = "" if not sup else f", vacuum {sup['vacuum_fraction']:.1%}"
    sp = s.get("species") or {}
    frac = sp.get("fractions") if sp.get("mode") == "elements" else None
    species = (f", species {', '.join(f'{k} {v:.0%}' for k, v in frac.items())}" if frac
               else f", species: {sp['status']}" if sp.get("mode") == "elements" else "")
    print(f"{s['n_atoms']} atoms in {res.shape[1]}×{res.shape[0]} px{vac}, density "
          f"{'n/a' if dens is None else f'{dens:.4g}'}/{u}², mean NN "
          f"{'n/a' if nn is None else f'{nn:.4g} {u}'}{species} -> {out}")
    return 0


def _is_zarr(p) -> bool:
    return p.suffix == ".zarr" or (p / "zarr.json").exists() or (p / ".zarray").exists() \
        or (p / ".zgroup").exists()


def scheduler_address(text: str, *, timeout_s: float = 5.0) -> tuple[str | None, str | None]:
    """``(address, None)`` for a reachable scheduler given by address or by its
    scheduler file, else ``(None, one-line reason)``; tried before any work."""
    import json
    import re
    import socket
    from pathlib import Path

    addr = text.strip()
    p = Path(addr)
    if p.is_file():
        try:
            addr = str(json.loads(p.read_text(encoding="utf-8"))["address"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, (f"--scheduler {text}: not a Dask scheduler file (JSON with an "
                          f"\"address\"; {type(exc).__name__})")
    m = re.fullmatch(r"(?:(tcp|tls)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})", addr)
    if not m:
        return None, (f"--scheduler {text}: expected a scheduler address such as "
                      "tcp://host:8786, or a scheduler file")
    host, port = m.group(2).strip("[]"), int(m.group(3))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = (f"no answer in {timeout_s:g} s" if isinstance(exc, TimeoutError)
               else exc.strerror or type(exc).__name__)
        return None, f"--scheduler {text}: cannot connect to {host}:{port} ({why})"
    return (addr if "://" in addr else f"tcp://{addr}"), None
