"""``fastsac simulate``: write simulated HAADF-STEM frames with exact truth.

Each image ``synth_NNNN.tif`` (calibrated, read back by ``fastsac.read``)
gets ``synth_NNNN.csv`` (``X,Y,element,cluster_id,...`` px, the convention of
the real labels), so ``fastsac evaluate --images DIR --labels DIR`` scores any
detector on the output. ``--montage N`` writes one N×N tiled BigTIFF (and/or
Zarr) montage plus ``montage_truth.parquet`` instead.
"""

from __future__ import annotations

import argparse
import logging

from ._common import (add_deprecated_alias, check_writable_dir, fail, nonnegative_float,
                      pixel_size, positive_float, positive_int)

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "simulate", help="write simulated HAADF-STEM images with ground truth",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", dest="output", required=True, help="output directory")
    add_deprecated_alias(p, "--output", "-o/--out", dest="output")
    p.add_argument("--size", type=positive_int, default=512, help="image edge, px (default 512)")
    p.add_argument("--count", type=positive_int, default=1, help="number of images (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the first image; image k uses seed + k (default 0)")
    p.add_argument("--element", dest="elements", action="append", metavar="SYMBOL",
                   help="metal element (repeat for several; default Pt)")
    p.add_argument("--loading", type=positive_float, default=None, metavar="PER_NM2",
                   help="atoms per nm² of support (default 0.3)")
    p.add_argument("--pattern", choices=["random", "clustered", "nanoclusters"], default=None,
                   help="placement of the atoms (default random)")
    p.add_argument("--dimer-fraction", type=nonnegative_float, default=None,
                   help="fraction of atoms in dimers")
    p.add_argument("--trimer-fraction", type=nonnegative_float, default=None,
                   help="fraction of atoms in trimers")
    p.add_argument("--dose", type=positive_float, default=None,
                   help="electrons per Å² (default 4e4)")
    p.add_argument("--pixel-size", type=pixel_size, default=None, metavar="NM",
                   help="pixel size, nm (default 0.0293)")
    p.add_argument("--vacuum", choices=["edge", "holes", "none"], default=None,
                   help="vacuum regions in the frame (default edge)")
    p.add_argument("--fringes", action="store_true", help="add crystalline lattice fringes")
    p.add_argument("--dtype", choices=["uint16", "uint32", "float32"], default=None,
                   help="output dtype (default uint32; montage uint16)")
    p.add_argument("--montage", type=positive_int, default=None, metavar="N",
                   help="write one N×N montage (tiled BigTIFF) instead of single frames")
    p.add_argument("--tile", type=positive_int, default=1024,
                   help="montage tile edge, px (default 1024)")
    p.add_argument("--montage-format", choices=["tiff", "zarr", "both"], default="tiff",
                   help="montage file format (default tiff)")
    return p


def _params(args) -> dict:
    kw = {}
    for arg, name in (("loading", "loading_per_nm2"), ("pattern", "pattern"),
                      ("dimer_fraction", "dimer_fraction"), ("trimer_fraction", "trimer_fraction"),
                      ("dose", "dose"), ("pixel_size", "pixel_size_nm"), ("vacuum", "vacuum"),
                      ("dtype", "dtype")):
        v = getattr(args, arg)
        if v is not None:
            kw[name] = v
    if args.elements:
        kw["elements"] = tuple(args.elements)
    if args.fringes:
        kw["fringes"] = True
    return kw


def run(args) -> int:
    from pathlib import Path

    from ..io import write_json, write_tiff
    from ..synth import simulate, write_montage

    out = Path(args.output)
    why = check_writable_dir(out)
    if why:
        return fail(why)
    try:
        kw = _params(args)
        if args.montage:
            formats = ("tiff", "zarr") if args.montage_format == "both" else (args.montage_format,)
            r = write_montage(out / "montage", size=args.montage, tile=args.tile, formats=formats,
                              seed=args.seed, **kw)
            for k, v in r.paths.items():
                print(f"{k}: {v}")
            print(f"{r.n_atoms} atoms, {r.seconds:.1f} s")
            return 0
        if args.count < 1:
            raise ValueError(f"--count must be ≥ 1, got {args.count}")
        for k in range(args.count):
            img, truth = simulate(size=args.size, seed=args.seed + k, **kw)
            stem = f"synth_{args.seed + k:04d}"
            # ImageJ TIFFs cannot hold uint32: write those tiled, calibrated by
            # the standard resolution tags (fastsac.read understands both).
            tile = (256, 256) if img.dtype.itemsize == 4 and img.dtype.kind == "u" else None
            write_tiff(out / f"{stem}.tif", img, pixel_size_nm=truth.params["pixel_size_nm"],
                       tile=tile)
            truth.write_csv(out / f"{stem}.csv")
            print(f"{out / stem}.tif: {len(truth)} atoms")
        write_json(out / "simulation.json", {"count": args.count, "first_seed": args.seed,
                                             "params": truth.params})
    except (ValueError, TypeError) as exc:
        return fail(f"simulate: {exc}")
    return 0
