"""Gaussian-fit throughput: the previous default fit vs the current one, same
atoms, same run.

Two sets of atoms:

* ``spots``: the spot scene of ``throughput_kernels.py`` (σ = 1.2 px spots on
  a background of 10 with signal-dependent noise), start = rounded truth,
  σ₀ = 1.5 px in a 9×9 window — a well-posed fit; constant vs plane
  background isolates the cost of the two extra parameters;
* ``simulated``: every classical detection of a 2048² ``fastsac.synth`` frame
  at the default dose (atoms of σ ≈ 3.6 px), each configuration from its own
  centre-of-mass start (as ``refine_positions`` feeds the fit):
  ``previous`` = σ₀ 2 px (the DoG width), 9×9 window, constant background;
  ``constant 19²`` = σ₀ 3.41 px (0.1 nm), 19×19, constant;
  ``current`` = σ₀ 3.41 px, 19×19, plane (the default since the physical
  fit size).

All through ``_core.fit_gaussian`` (free fit, fixed-σ and centroid
fallbacks, standard errors). Printed per configuration: wall-clock atoms/s
(best of ``--repeat``, all OpenMP threads), CPU µs per atom (process time,
which the other jobs on a shared box inflate less than wall time), statuses,
and the mean number of window passes per atom (numpy reference on a
subsample).

    PYTHONPATH=src python benchmarks/bench_fit.py --atoms 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))


def simulated_atoms(n: int, seed: int = 1):
    """Image and integer maxima (tiled to ``n``) of the classical detector."""
    from fastsac.detectors import get_detector
    from fastsac.synth import simulate

    img, _ = simulate(size=2048, seed=seed)
    img = img.astype(np.float32)
    det = get_detector("classical", refine="none").detect(img, pixel_size_nm=0.0293)
    return img, np.tile(det.xy, (int(np.ceil(n / len(det.xy))), 1))[:n]


def spot_atoms(n: int, seed: int = 3):
    from throughput_kernels import spot_image

    side = int(np.ceil(np.sqrt(n)) * 16) + 16
    img, xy = spot_image(min(side, 8192), np.random.default_rng(seed))
    xy = np.round(xy)
    return img, np.tile(xy, (int(np.ceil(n / len(xy))), 1))[:n]


def timed(fn, repeat):
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def passes(img, xy, radius, sigma, lo, hi, plane):
    """Mean Jacobian and cost passes over the window per atom (numpy reference)."""
    from fastsac import peaks

    counts = {"jac": 0, "exp": 0}
    orig_jac, orig_exp = peaks._jacobian, np.exp

    def jac(*args):
        counts["jac"] += 1
        return orig_jac(*args)

    class CountingExp:  # every window-sized exp is one pass over the window
        def __call__(self, x, *args, **kw):
            counts["exp"] += 1
            return orig_exp(x, *args, **kw)

    peaks._jacobian, peaks.np.exp = jac, CountingExp()
    try:
        peaks._fit_gaussian_numpy_ref(img, xy, radius, sigma, lo, hi, 3.0, 50, plane)
    finally:
        peaks._jacobian, peaks.np.exp = orig_jac, orig_exp
    n = len(xy)
    return counts["jac"] / n, (counts["exp"] - counts["jac"]) / n


def run(name, img, xy, configs, repeat, com):
    """Time each (label, σ₀, radius, plane) configuration on the same atoms."""
    from fastsac import peaks
    from fastsac._backend import core

    c = core()
    print(f"[{name}] {len(xy)} atoms")
    base = None
    for label, sigma, radius, plane in configs:
        start = peaks.refine_com(img, xy, radius=peaks.com_radius(sigma), iterations=2) if com else xy
        lo, hi = peaks.default_sigma_bounds(sigma)
        shift = peaks.fit_max_shift(6.0, sigma)
        def fn(start=start, radius=radius, sigma=sigma, lo=lo, hi=hi, shift=shift, plane=plane):
            return c.fit_gaussian(img, start, radius, sigma, lo, hi, shift, 50, plane)

        fn()  # warm-up (thread pool, pages)
        w, cpu = timed(fn, repeat)
        n = len(xy)
        base = base or w
        _, st = (np.asarray(a) for a in fn())
        shares = np.bincount(st, minlength=4) / n
        jac, cost = passes(img, start[:300], radius, sigma, lo, hi, plane)
        print(f"  {label:14s} σ0 {sigma:.2f} px, {2 * radius + 1}², {'plane   ' if plane else 'constant'}: "
              f"{n / w / 1e3:7.1f} k atoms/s wall, {cpu / n * 1e6:6.2f} µs CPU/atom "
              f"({base / w:.2f}× the first), free/fixed/centroid "
              f"{shares[0]:.0%}/{shares[1]:.0%}/{shares[2]:.0%}, "
              f"{jac:.1f} Jacobian + {cost:.1f} cost passes")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    from fastsac import peaks
    from fastsac._backend import core

    print(f"{core().openmp_threads()} OpenMP threads, load average {os.getloadavg()[0]:.1f}")
    img, xy = spot_atoms(a.atoms)
    run("spots", img, xy, [("constant", 1.5, 4, False), ("plane", 1.5, 4, True)], a.repeat,
        com=False)
    img, xy = simulated_atoms(a.atoms)
    fit = peaks.FIT_SIGMA_NM / 0.0293
    run("simulated", img, xy, [("previous", 2.0, 4, False),
                               ("constant 19²", fit, peaks.fit_radius(fit), False),
                               ("current", fit, peaks.fit_radius(fit), True)], a.repeat, com=True)


if __name__ == "__main__":
    main()
