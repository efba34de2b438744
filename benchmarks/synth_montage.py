"""Time and peak memory of writing a large simulated montage.

Run::

    PYTHONPATH=src python benchmarks/synth_montage.py --size 32768 --tile 1024 \
        --out /tmp/montage [--formats tiff zarr]

Prints wall time, chunks/s, megapixels/s and the peak resident set size of
the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``); the output is
deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32768)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--out", default="/tmp/fastsac-montage")
    ap.add_argument("--formats", nargs="+", default=["tiff"])
    ap.add_argument("--dtype", default="uint16")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    from fastsac.synth import write_montage

    out = Path(a.out)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    r = write_montage(out / "montage", size=a.size, tile=a.tile, formats=tuple(a.formats),
                      dtype=a.dtype, seed=0, progress=True)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = {k: sum(f.stat().st_size for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
             for k, p in r.paths.items()}
    print(f"montage {a.size}x{a.size} {a.dtype} tile {a.tile} formats {a.formats}: "
          f"{dt:.1f} s, {a.size * a.size / dt / 1e6:.1f} Mpx/s, atoms {r.n_atoms}, "
          f"peak RSS {rss:.0f} MiB (after imports {rss0:.0f} MiB), "
          f"files {', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in sizes.items())}")
    if not a.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
