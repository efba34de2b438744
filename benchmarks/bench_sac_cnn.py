"""Published SAC-CNN: one-pass dense map vs the published sliding window (batch 64), 512² image.

Both are timed in the same process on the same pre-processed real image, with
``torch.set_num_threads(2)`` and ``torch.inference_mode``; parity of the two
maps is asserted first on the windows that are timed.

As a script (prints the ratio)::

    PYTHONPATH=src python benchmarks/bench_sac_cnn.py                # full 512² sliding window (minutes)
    PYTHONPATH=src python benchmarks/bench_sac_cnn.py --windows 8192 # time a random subset, extrapolate

With pytest-benchmark (dense map and 2048 sliding windows)::

    PYTHONPATH=src python -m pytest benchmarks/bench_sac_cnn.py --benchmark-enable
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


def _setup():
    from fastsac import io
    from fastsac.detectors.learned import load_detector, sac_cnn_preprocess
    torch.set_num_threads(2)
    det = load_detector(CKPT)
    norm = sac_cnn_preprocess(io.read(IMAGE).data)
    return det, norm


def _positions(n, shape, seed=0):
    h, w = shape
    yy, xx = np.mgrid[10:h - 10, 10:w - 10]
    pos = np.stack([xx.ravel(), yy.ravel()], axis=1)
    if n is None or n >= len(pos):
        return pos
    return pos[np.sort(np.random.default_rng(seed).choice(len(pos), n, replace=False))]


def main(argv=None) -> int:
    from fastsac.detectors.learned import sliding_window_probabilities
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=None,
                    help="time this many random windows and extrapolate (default: all ~242k)")
    ap.add_argument("--repeat", type=int, default=5, help="dense-map repetitions (best is reported)")
    args = ap.parse_args(argv)
    det, norm = _setup()
    det.probability_map(norm)  # warm-up
    dense_t = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        with torch.inference_mode():
            dense = det.probability_map(norm)
        dense_t.append(time.perf_counter() - t)
    pos = _positions(args.windows, norm.shape)
    t = time.perf_counter()
    ref = sliding_window_probabilities(det.model, norm, positions=pos, batch_size=64)
    slide = time.perf_counter() - t
    n_all = (norm.shape[0] - 20) * (norm.shape[1] - 20)
    diff = float(np.abs(dense[pos[:, 1], pos[:, 0]] - ref).max())
    assert diff <= 1e-5, diff
    slide_full = slide * n_all / len(pos)
    best = min(dense_t)
    print(f"image {norm.shape[1]}x{norm.shape[0]}, torch threads {torch.get_num_threads()}")
    print(f"dense one-pass map    : {best * 1e3:8.1f} ms (best of {args.repeat}; median "
          f"{np.median(dense_t) * 1e3:.1f} ms)")
    what = "measured" if len(pos) == n_all else f"extrapolated from {len(pos)} windows"
    print(f"sliding window (b=64) : {slide_full:8.1f} s  ({what}; {len(pos) / slide:.0f} windows/s)")
    print(f"speed-up              : {slide_full / best:8.0f}x   (max |diff| {diff:.2e})")
    return 0


# -- pytest-benchmark ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup():
    if not (IMAGE.is_file() and CKPT.is_file()):
        pytest.skip("real data / SAC-CNN checkpoint not found (set FASTSAC_SHARED)")
    return _setup()


def test_bench_dense(benchmark, setup):
    det, norm = setup
    prob = benchmark(det.probability_map, norm)
    assert prob.shape == norm.shape


def test_bench_sliding_2048(benchmark, setup):
    from fastsac.detectors.learned import sliding_window_probabilities
    det, norm = setup
    pos = _positions(2048, norm.shape)
    ref = benchmark.pedantic(sliding_window_probabilities, args=(det.model, norm),
                             kwargs={"positions": pos, "batch_size": 64}, rounds=1, iterations=1)
    dense = det.probability_map(norm)
    assert np.abs(dense[pos[:, 1], pos[:, 0]] - ref).max() <= 1e-5


if __name__ == "__main__":
    sys.exit(main())
