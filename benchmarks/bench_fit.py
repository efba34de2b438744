"""Gaussian-fit throughput: today's kernel vs the new one, same atoms, same run.

Two sets of atoms, both at the detector's default window (radius 4 → 9×9):

* ``spots``: the spot scene of ``throughput_kernels.py`` (σ = 1.2 px spots on
  a background of 10 with signal-dependent noise), start = rounded truth,
  σ₀ = 1.5 px — a well-posed fit;
* ``simulated``: every classical detection (CoM-refined, as
  ``refine_positions`` feeds the fit) of a 2048² ``fastsac.synth`` frame at
  the default dose, σ₀ = 2 px (the detector's), atoms of σ ≈ 3.6 px: half of
  the free fits fail and fall back — the hard case.

"Old" is the C++ ``refine_gaussian`` of fastsac before issue 13 (5-parameter
LM, no fallback, no errors; kept in ``_core`` as this baseline); "new" is
``fit_gaussian`` (``peaks.refine_gaussian``: free fit, fixed-σ and centroid
fallbacks, standard errors). Printed per kernel: wall-clock atoms/s (best of
``--repeat``, all OpenMP threads) and CPU µs per atom (process time, which
the other jobs on a shared box inflate less than wall time), and the mean
number of window passes per atom of the new fit (numpy reference on a
subsample) for the operation count in docs/performance.md.

    PYTHONPATH=src python benchmarks/bench_fit.py --atoms 200000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))


def simulated_atoms(n: int, seed: int = 1):
    from fastsac import peaks
    from fastsac.detectors import get_detector
    from fastsac.synth import simulate

    img, _ = simulate(size=2048, seed=seed)
    img = img.astype(np.float32)
    det = get_detector("classical", refine="none").detect(img, pixel_size_nm=0.0293)
    xy = peaks.refine_com(img, det.xy, radius=3, iterations=2)
    return img, np.tile(xy, (int(np.ceil(n / len(xy))), 1))[:n], 2.0


def spot_atoms(n: int, seed: int = 3):
    from throughput_kernels import spot_image

    side = int(np.ceil(np.sqrt(n)) * 16) + 16
    img, xy = spot_image(min(side, 8192), np.random.default_rng(seed))
    xy = np.round(xy)
    return img, np.tile(xy, (int(np.ceil(n / len(xy))), 1))[:n], 1.5


def timed(fn, repeat):
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def passes(img, xy, radius, sigma, lo, hi):
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
        peaks._fit_gaussian_numpy_ref(img, xy, radius, sigma, lo, hi, 3.0, 50)
    finally:
        peaks._jacobian, peaks.np.exp = orig_jac, orig_exp
    n = len(xy)
    return counts["jac"] / n, (counts["exp"] - counts["jac"]) / n


def run(name, img, xy, sigma, radius, repeat):
    from fastsac import peaks
    from fastsac._backend import core

    c = core()
    lo, hi = peaks.default_sigma_bounds(sigma)
    old = lambda: c.refine_gaussian(img, xy, radius, sigma, 50)  # noqa: E731
    new = lambda: c.fit_gaussian(img, xy, radius, sigma, lo, hi, 3.0, 50)  # noqa: E731
    old(), new()  # warm-up (thread pool, pages)
    (w_old, c_old), (w_new, c_new) = timed(old, repeat), timed(new, repeat)
    n = len(xy)
    print(f"[{name}] {n} atoms, window {2 * radius + 1}², σ0 {sigma} px, bounds [{lo:.2f}, {hi:.2f}]")
    print(f"  old refine_gaussian: {n / w_old / 1e3:8.1f} k atoms/s wall, {c_old / n * 1e6:6.2f} µs CPU/atom")
    print(f"  new fit_gaussian   : {n / w_new / 1e3:8.1f} k atoms/s wall, {c_new / n * 1e6:6.2f} µs CPU/atom"
          f"   (new/old: {w_old / w_new:.2f}x wall, {c_old / c_new:.2f}x CPU)")
    m = min(n, 20000)
    p_old, ok_old = (np.asarray(a) for a in c.refine_gaussian(img, xy[:m], radius, sigma, 50))
    tab, st = (np.asarray(a) for a in c.fit_gaussian(img, xy[:m], radius, sigma, lo, hi, 3.0, 50))
    both = ok_old & (st == 0)
    d = np.hypot(*(p_old[both, :2] - tab[both, :2]).T)
    print(f"  status (free, fixed-σ, centroid, none): {np.bincount(st, minlength=4).tolist()}; "
          f"old: {ok_old.mean():.1%} converged, rest NaN")
    if both.any():
        print(f"  where both fit freely ({both.sum()}): |Δxy| old-new median {np.median(d):.1e} px, "
              f"max {d.max():.1e} px")
    jac, cost = passes(img, xy[:300], radius, sigma, lo, hi)
    print(f"  new, per atom: {jac:.1f} Jacobian passes + {cost:.1f} cost passes over the window")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--radius", type=int, default=4)
    a = ap.parse_args(argv)
    from fastsac._backend import core

    print(f"{core().openmp_threads()} OpenMP threads, load average {os.getloadavg()[0]:.1f}")
    for name, make in (("spots", spot_atoms), ("simulated", simulated_atoms)):
        img, xy, sigma = make(a.atoms)
        run(name, img, xy, sigma, a.radius, a.repeat)


if __name__ == "__main__":
    main()
