"""Full 512² analysis time of fastsac's shipped heatmap detector (2 threads, inference mode).

Reports the median wall time of ``detect`` (pre-processing + network + peaks
+ Gaussian refinement) and of each stage, next to the published SAC-CNN's
one-pass ``detect`` in the same process::

    PYTHONPATH=src python benchmarks/bench_learned.py [--repeat 7]

pytest-benchmark: ``python -m pytest benchmarks/bench_learned.py --benchmark-enable``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("FASTSAC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
IMAGE = SHARED / "data" / "ptnc-train" / "images" / "021.tif"
CKPT = SHARED / "models" / "sac_cnn_ptnc.ckpt"


def _time(fn, repeat):
    fn()  # warm-up (JIT, allocator, thread pool)
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        with torch.inference_mode():
            r = fn()
        out.append((time.perf_counter() - t, r))
    return out


def main(argv=None) -> int:
    from fastsac import io, preprocess
    from fastsac.detectors.learned import run_heatmap, default_detector, heatmap_preprocess, load_detector
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    mic = io.read(IMAGE)
    det = default_detector()
    if det is None:
        print("no shipped weights")
        return 1
    runs = _time(lambda: det.detect(mic), args.repeat)
    tot = np.median([t for t, _ in runs])
    stages = {k: np.median([r.timings[k] for _, r in runs]) for k in runs[0][1].timings}
    prep = heatmap_preprocess(mic.data, pixel_size_nm=mic.pixel_size_nm)
    t_med = np.median([t for t, _ in _time(lambda: preprocess.median_filter(mic.data, size=40), args.repeat)])
    t_net = np.median([t for t, _ in _time(lambda: run_heatmap(det.model, prep.image), args.repeat)])
    print(f"fastsac heatmap detect, 512x512, {torch.get_num_threads()} threads: {tot * 1e3:.1f} ms "
          f"(median of {args.repeat}; {len(runs[0][1])} atoms)")
    for k, v in stages.items():
        print(f"  {k:10s} {v * 1e3:8.1f} ms")
    print(f"  of which median background (40x40) {t_med * 1e3:.1f} ms, network {t_net * 1e3:.1f} ms")
    if CKPT.is_file():
        sac = load_detector(CKPT)
        ts = np.median([t for t, _ in _time(lambda: sac.detect(mic), args.repeat)])
        print(f"published SAC-CNN detect (one pass): {ts * 1e3:.1f} ms  -> ratio {ts / tot:.1f}x")
    return 0


@pytest.fixture(scope="module")
def det():
    from fastsac.detectors.learned import default_detector
    d = default_detector()
    if d is None or not IMAGE.is_file():
        pytest.skip("shipped weights or real data missing")
    torch.set_num_threads(2)
    return d


def test_bench_detect_512(benchmark, det):
    from fastsac import io
    mic = io.read(IMAGE)
    r = benchmark(det.detect, mic)
    assert len(r) > 10


if __name__ == "__main__":
    sys.exit(main())
