"""Time and peak memory of the montage support mask (read + bin + mask) on a
montage file, e.g. the 32768² BigTIFF of ``benchmarks/synth_montage.py``::

    PYTHONPATH=src python benchmarks/synth_montage.py --size 32768 --out /tmp/m --keep
    PYTHONPATH=src python benchmarks/montage_mask.py /tmp/m/montage.tif [--max-binned-px N]

Run it in a fresh process: ``ru_maxrss`` is the process-wide peak. Prints one
JSON object (bin factor, binned shape, stage times, vacuum fraction, peak RSS).
The whole analysis with the mask is ``fastsac montage`` (docs/montage.md)::

    /usr/bin/time -v fastsac montage /tmp/m/montage.tif -o out --tile 2048 --scratch /tmp/m
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


class _Times(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.msgs = []

    def emit(self, record):
        self.msgs.append(record.getMessage())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("montage")
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--max-binned-px", type=int, default=None)
    ap.add_argument("--bin-factor", type=int, default=None)
    ap.add_argument("--pixel-size", type=float, default=None)
    a = ap.parse_args(argv)
    from fastsac.montage import MAX_BINNED_PX, montage_support_mask, open_montage

    h = _Times()
    logging.getLogger("fastsac.montage").addHandler(h)
    logging.getLogger("fastsac.montage").setLevel(logging.INFO)
    src = open_montage(a.montage, pixel_size_nm=a.pixel_size)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    m, f = montage_support_mask(src, tile=a.tile, bin_factor=a.bin_factor,
                                max_binned_px=a.max_binned_px or MAX_BINNED_PX, progress=False)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"montage": a.montage, "shape": list(src.shape), "bin_factor": f,
                      "binned_shape": list(m.mask.shape), "mask_s": dt, "log": h.msgs,
                      "vacuum_fraction": m.vacuum_fraction, "has_vacuum": m.has_vacuum,
                      "support_area_nm2": m.support_area_nm2, "peak_rss_mb": rss,
                      "rss_before_mb": rss0}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
