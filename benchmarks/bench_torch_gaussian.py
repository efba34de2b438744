"""Direct convolution vs FFT for the torch Gaussians of the default detector's
GPU score map (fastsac.models.classical.TorchGaussian), on one batch of tile windows.

    PYTHONPATH=src python benchmarks/bench_torch_gaussian.py [--device cuda] [--window 4402] [--batch 2]

Prints ms per batch for σ = 2, 6, 32 px (the DoG centre/surround and the noise
window at 0.0293 nm/px) and the max difference between the two methods.
"""

from __future__ import annotations

import argparse
import time

import torch

from fastsac.models.classical import TorchGaussian


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--window", type=int, default=4402)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    dev = torch.device(a.device)
    x = torch.rand((a.batch, 1, a.window, a.window), device=dev) * 100
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    print(f"device {name}  batch {a.batch} × {a.window}²")
    torch.backends.cudnn.benchmark = True
    for sigma in (2.0, 6.0, 32.0):
        g = TorchGaussian(sigma).to(dev)
        outs, row = {}, []
        for method in ("conv", "fft"):
            TorchGaussian.method = method
            with torch.inference_mode():
                outs[method] = g(x)  # warm-up (cuDNN autotune, cuFFT plans)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                ts = []
                for _ in range(a.repeat):
                    t0 = time.perf_counter()
                    g(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t0)
            row.append(f"{method} {1e3 * min(ts):8.2f} ms ({a.batch * a.window**2 / min(ts) / 1e9:6.2f} Gpx/s)")
        diff = float((outs["conv"] - outs["fft"]).abs().max())
        print(f"σ={sigma:4.1f} r={g.r:3d}  " + "  ".join(row) + f"  max|conv-fft| {diff:.2e}")
    TorchGaussian.method = "auto"


if __name__ == "__main__":
    main()
