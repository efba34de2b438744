"""Full 512² analysis time of the two-stage detector (``--detector rescore``) vs classical.

Median wall time of ``detect`` on a real 512² frame (stage-1 SNR map, candidates,
Gaussian fits of every candidate, features, logistic re-scoring) next to the classical
detector (``background_nm=None``) in the same process, and the stage timings::

    PYTHONPATH=src python benchmarks/bench_rescore.py [--repeat 9] [--image PATH]

pytest-benchmark: ``python -m pytest benchmarks/bench_rescore.py --benchmark-enable``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("FASTSAC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
IMAGE = SHARED / "data" / "ptnc-train" / "images" / "021.tif"


def _median_time(fn, repeat):
    fn()  # warm-up
    ts, last = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        last = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), last


def main(argv=None) -> int:
    from fastsac import io
    from fastsac.detectors import ClassicalDetector, get_detector
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--image", type=Path, default=IMAGE)
    args = ap.parse_args(argv)
    mic = io.read(args.image)
    res = get_detector("rescore")
    cl = ClassicalDetector(background_nm=None)
    t_cl, d_cl = _median_time(lambda: cl.detect(mic), args.repeat)
    t_rs, d_rs = _median_time(lambda: res.detect(mic), args.repeat)
    print(f"image {args.image.name} {mic.data.shape[1]}×{mic.data.shape[0]}, median of {args.repeat}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"classical detect: {1e3 * t_cl:7.1f} ms  ({len(d_cl)} atoms)")
    print(f"rescore   detect: {1e3 * t_rs:7.1f} ms  ({len(d_rs)} atoms; ratio {t_rs / t_cl:.2f}× classical)")
    print("  stages (last run): " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in d_rs.timings.items()))
    return 0


@pytest.mark.skipif(not IMAGE.is_file(), reason="real data not found (set FASTSAC_SHARED)")
def test_bench_rescore_detect(benchmark):
    from fastsac import io
    from fastsac.detectors import get_detector
    mic = io.read(IMAGE)
    det = get_detector("rescore")
    out = benchmark(det.detect, mic)
    assert len(out) > 10


if __name__ == "__main__":
    sys.exit(main())
