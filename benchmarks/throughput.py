"""Throughput benchmark script: ``python benchmarks/throughput.py [--size 2048 8192 32768]
[--device cuda] [--json out.json]``. Same options as ``fastsac bench`` (see
fastsac.bench for what each stage measures)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    from fastsac.cli import bench

    parser = argparse.ArgumentParser(prog="throughput.py")
    sub = parser.add_subparsers(dest="cmd")
    p = bench.add_parser(sub)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return bench.run(args)


if __name__ == "__main__":
    sys.exit(main())
