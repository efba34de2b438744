"""Choosing the fit's window, background model and σ: per-axis position error
against the simulated truth for each combination, from the same starts.

For each dose (1024² ``fastsac simulate`` frames, ``--seeds`` per dose) the
classical detector's integer maxima (``refine="none"``, no close-pair stage)
that lie within 3 px of a true atom are refined by centre of mass (disc
``peaks.com_radius(σ₀)``) and ``peaks.refine_gaussian`` with nominal σ₀ =
0.1 nm (3.41 px), the window half-width r, a constant or a tilted-plane
background, and σ free (bounds [0.5, 2.5]σ₀, the default) or fixed at σ₀;
the fit may move ``peaks.fit_max_shift`` (σ₀). Printed: per-axis RMS error
of the same atoms with noise (``noisy``) and on the noise-free frame
(``clean``: the support-texture floor), and the share of free fits. The
first row per dose is the previous default (σ₀ = 2 px, r = 4, constant).

    PYTHONPATH=src python benchmarks/fit_window.py --seeds 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from fit_accuracy import match


def frames(dose, seeds):
    from fastsac.detectors import ClassicalDetector
    from fastsac.synth.params import SimulationParams
    from fastsac.synth.render import Field, to_dtype

    maxima = ClassicalDetector(refine="none", resolve_pairs=False)
    out = []
    for seed in seeds:
        p = SimulationParams(size=1024, dose=dose, seed=seed)
        fld = Field(p)
        noisy = to_dtype(fld.render(rng=np.random.default_rng([seed, 1])), p.dtype).astype(np.float32)
        clean = (p.offset + p.gain * fld.expected()).astype(np.float32)
        xy0 = maxima.detect(noisy, pixel_size_nm=p.pixel_size_nm).xy
        i, j = match(xy0, fld.xy_image)
        out.append((noisy, clean, xy0[i], fld.xy_image[j]))
    return out


def axis_error(data, sigma, radius, background, fixed):
    from fastsac import peaks

    bounds = (sigma * (1 - 1e-9), sigma * (1 + 1e-9)) if fixed else None
    res = {}
    for k, name in ((0, "noisy"), (1, "clean")):
        err, free = [], []
        for d in data:
            img, xy0, truth = d[k], d[2], d[3]
            xy = peaks.refine_com(img, xy0, radius=peaks.com_radius(sigma), iterations=2)
            f = peaks.refine_gaussian(img, xy, radius=radius, sigma=sigma, sigma_bounds=bounds,
                                      max_shift=peaks.fit_max_shift(6.0, sigma),
                                      background=background)
            err.append(f.xy - truth)
            free.append(f.status == 0)
        res[name] = float(np.sqrt((np.concatenate(err) ** 2).mean()))
        res[name + "_free"] = float(np.concatenate(free).mean())
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--doses", type=float, nargs="*", default=[1e4, 4e4, 1.6e5])
    ap.add_argument("--radii", type=int, nargs="*", default=[5, 7, 8, 9, 10, 12])
    a = ap.parse_args(argv)
    from fastsac import peaks

    s0 = peaks.FIT_SIGMA_NM / 0.0293
    print("| dose | σ₀ px | r | background | σ | atoms | noisy axis px | clean axis px | free |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dose in a.doses:
        data = frames(dose, range(1, 1 + a.seeds))
        n = sum(len(d[2]) for d in data)
        configs = [(2.0, 4, "constant", False)] + [
            (s0, r, bg, fixed) for r, bg, fixed in
            itertools.product(a.radii, ("constant", "plane"), (False, True))]
        for sigma, r, bg, fixed in configs:
            e = axis_error(data, sigma, r, bg, fixed)
            print(f"| {dose:.3g} | {sigma:.2f} | {r} | {bg} | {'fixed' if fixed else 'free'} | {n} "
                  f"| {e['noisy']:.3f} | {e['clean']:.3f} | {100 * e['noisy_free']:.0f} % |",
                  flush=True)


if __name__ == "__main__":
    main()
