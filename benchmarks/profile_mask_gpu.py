"""Profile the support mask on the GPU (2048² simulated frame with vacuum).

    python benchmarks/profile_mask_gpu.py [--device cuda] [--size 2048]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=2048)
    a = ap.parse_args()
    from fastsac.support.mask import support_mask
    from fastsac.synth import simulate

    img, _ = simulate(size=a.size, seed=1)
    img = img.astype(np.float32)
    for dev in ("cpu", a.device):
        support_mask(img, pixel_size_nm=0.0293, device=dev)  # warm-up
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            support_mask(img, pixel_size_nm=0.0293, device=dev)
            ts.append(time.perf_counter() - t0)
        print(f"support_mask device={dev}: median {1e3 * np.median(ts):.1f} ms, min {1e3 * min(ts):.1f} ms")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        support_mask(img, pixel_size_nm=0.0293, device=a.device)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
