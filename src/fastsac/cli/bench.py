"""``fastsac bench``: throughput benchmark (Mpx/s per stage, end to end, peak RSS)."""

from __future__ import annotations

import argparse

from ._common import add_deprecated_alias, environment_problem, fail, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="measure throughput (Mpx/s) per stage and end to end",
        description="Throughput of the tiled pipeline on simulated montages, with baselines "
                    "(trackpy, scikit-image, cKDTree, sliding-window SAC-CNN) and a "
                    "CUDA-vs-host kernel comparison. Prints a table; --json writes the numbers.")
    p.add_argument("--quick", action="store_true",
                   help="one 1024² image, no baselines or kernel comparison (smoke test)")
    p.add_argument("--size", type=positive_int, nargs="+", default=None, metavar="PX",
                   help="image edge lengths (default 2048 8192; add 32768 for the montage)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the detector runs (default: %(default)s)")
    p.add_argument("--detector", dest="model", default="default",
                   choices=["default", "classical", "builtin"],
                   help="default/classical: fastsac's default detector; builtin: a stand-in "
                        "network with a light CNN's compute profile (default: %(default)s)")
    add_deprecated_alias(p, "--model", "--detector", dest="model")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                   help="autocast dtype on CUDA (default bf16)")
    p.add_argument("--tile", type=positive_int, default=None,
                   help="core size (default: from free memory)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="tiles per batch on the GPU (default: from free memory)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the baselines (trackpy, scikit-image, cKDTree, SAC-CNN)")
    p.add_argument("--no-kernels", action="store_true",
                   help="skip the CUDA-vs-host kernel comparison")
    p.add_argument("--synth", action="store_true", help="images from fastsac.synth if installed")
    p.add_argument("-o", "--out", dest="json", default=None, metavar="PATH",
                   help="write the results as JSON to PATH")
    add_deprecated_alias(p, "--json", "-o/--out", dest="json")
    return p


def run(args) -> int:
    from ..bench import BenchConfig, format_table, run_bench
    from ..io import write_json

    why = environment_problem(args)
    if why:
        return fail(why)
    sizes = tuple(args.size) if args.size else ((1024,) if args.quick else (2048, 8192))
    cfg = BenchConfig(sizes=sizes, device=args.device, model=args.model,
                      dtype=None if args.dtype in (None, "fp32") else args.dtype,
                      baselines=not (args.quick or args.no_baselines),
                      kernels=not (args.quick or args.no_kernels), synth=args.synth,
                      tile=args.tile, batch_size=args.batch_size)
    if args.dtype == "fp32":
        cfg = BenchConfig(**{**cfg.__dict__, "dtype": "fp32"})
    result = run_bench(cfg)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
