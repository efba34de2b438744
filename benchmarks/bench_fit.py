"""Gaussian-fit throughput: today's kernel vs the new one, on the same atoms, same run.

The atoms: every detection (CoM-refined, as ``refine_positions`` feeds the
fit) of simulated frames at the default dose, tiled to ``--atoms`` points.
"Old" is the C++ ``refine_gaussian`` of fastsac ≤ 0.x (5-parameter LM, no
fallback or errors, kept in ``_core`` as this baseline); "new" is
``fit_gaussian`` (``peaks.refine_gaussian``). Both at the detector's default
window (radius 4 → 9×9, σ₀ = 2 px, bounds [0.7, 4] px), best of
``--repeat`` runs, all OpenMP threads. Also prints the mean LM iterations
per atom (numpy reference on a subsample) for the FLOP count of
docs/performance.md.

    PYTHONPATH=src python benchmarks/bench_fit.py --atoms 200000 --repeat 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def atoms(n: int, seed: int = 1):
    from fastsac import peaks
    from fastsac.detect import get_detector
    from fastsac.synth import simulate

    img, _ = simulate(size=2048, seed=seed)
    img = img.astype(np.float32)
    det = get_detector("classical", refine="none").detect(img, pixel_size_nm=0.0293)
    xy = peaks.refine_com(img, det.xy, radius=3, iterations=2)
    reps = int(np.ceil(n / len(xy)))
    return img, np.tile(xy, (reps, 1))[:n]


def best(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--radius", type=int, default=4)
    ap.add_argument("--sigma", type=float, default=2.0)
    a = ap.parse_args(argv)
    from fastsac import peaks
    from fastsac._backend import core

    img, xy = atoms(a.atoms)
    lo, hi = peaks.default_sigma_bounds(a.sigma)
    c = core()
    print(f"{len(xy)} atoms, window {2 * a.radius + 1}², sigma0 {a.sigma} px, bounds "
          f"[{lo:.2f}, {hi:.2f}], {c.openmp_threads()} OpenMP threads")
    old = lambda: c.refine_gaussian(img, xy, a.radius, a.sigma, 50)  # noqa: E731
    new = lambda: c.fit_gaussian(img, xy, a.radius, a.sigma, lo, hi, 3.0, 50)  # noqa: E731
    old(), new()  # warm-up (thread pool, pages)
    t_old, m_old = best(old, a.repeat)
    t_new, m_new = best(new, a.repeat)
    print(f"old refine_gaussian : {len(xy) / t_old / 1e3:8.1f} k atoms/s (best; median "
          f"{len(xy) / m_old / 1e3:.1f} k)")
    print(f"new fit_gaussian    : {len(xy) / t_new / 1e3:8.1f} k atoms/s (best; median "
          f"{len(xy) / m_new / 1e3:.1f} k)  ratio new/old {t_old / t_new:.2f}x")
    # Agreement with the old kernel where both accept a free fit.
    p_old, ok_old = c.refine_gaussian(img, xy[:20000], a.radius, a.sigma, 50)
    tab, st = c.fit_gaussian(img, xy[:20000], a.radius, a.sigma, lo, hi, 3.0, 50)
    p_old, tab = np.asarray(p_old), np.asarray(tab)
    both = np.asarray(ok_old) & (np.asarray(st) == 0)
    d = np.hypot(*(p_old[both, :2] - tab[both, :2]).T)
    print(f"status counts (free, fixed-σ, centroid, none): {np.bincount(st, minlength=4).tolist()}; "
          f"old converged {np.mean(ok_old):.3f}")
    print(f"both free: {both.sum()} atoms, position difference old-new median {np.median(d):.2e} px, "
          f"99th pct {np.percentile(d, 99):.2e} px")
    _iterations(img, xy[:400], a.radius, a.sigma, lo, hi)


def _iterations(img, xy, radius, sigma, lo, hi):
    """Mean LM iterations and cost passes per atom (numpy reference, instrumented)."""
    from fastsac import peaks

    counts = {"jac": 0, "cost": 0}
    orig_jac, orig_exp = peaks._jacobian, np.exp

    def jac(*args):
        counts["jac"] += 1
        return orig_jac(*args)

    peaks._jacobian = jac
    try:
        n_exp = [0]

        class CountingExp:
            def __call__(self, x, *args, **kw):
                n_exp[0] += 1
                return orig_exp(x, *args, **kw)

        peaks.np.exp = CountingExp()
        peaks._fit_gaussian_numpy_ref(img, xy, radius, sigma, lo, hi, 3.0, 50)
    finally:
        peaks._jacobian = orig_jac
        peaks.np.exp = orig_exp
    print(f"per atom (numpy reference, {len(xy)} atoms): {counts['jac'] / len(xy):.2f} Jacobian "
          f"passes (incl. 2 for errors and fallbacks), {n_exp[0] / len(xy):.2f} window exp passes")


if __name__ == "__main__":
    main()
