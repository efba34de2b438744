"""Per-atom Gaussian fit on simulated frames across dose: how many atoms lack
an intensity, position error against the truth, the Cramér–Rao bound, and how
well the reported standard errors describe the actual error.

For each dose of ``fastsac simulate --dose`` (1024² frames, default
parameters otherwise, ``--seeds`` frames per dose) the default classical
detector runs on the frame; detections are matched one-to-one to the truth
within 3 px. Columns:

* ``no_intensity``: detections without a finite intensity (target ≤ 1 %);
* ``free/fixed/centroid``: shares of :class:`fastsac.peaks.FitStatus`;
* ``rms_px``: radial RMS position error of matched atoms; ``axis_px``: the
  per-axis RMS (x and y pooled);
* ``crb_axis_px``: the Cramér–Rao bound per axis for the model and window
  the detector fits (x, y, A, σ, b, bx, by — Gaussian on a tilted plane — in
  the (2r+1)² window of ``peaks.fit_radius``, 19×19 at 0.0293 nm/px) under
  the simulator's noise (Poisson electrons with pulse-height spread
  ``gain_cv`` and read noise: var = gain²·λ·(1 + gain_cv²) + read²), RMS
  over the matched atoms, from each atom's true amplitude, width and the
  expected image λ;
* ``crb_wide_axis_px``: the same bound for a Gaussian on a constant
  background in a 41×41 window (what an estimator that knew the background
  was flat could reach; a lower bound for any window);
* ``noisefree_axis_px``: per-axis RMS error on the same frame without noise
  (what the support texture, thickness gradients and scan jitter cost the
  model; the CRB does not include them);
* ``rep_err_px``: RMS of the reported ``x_err_px``/``y_err_px``;
* ``previous_axis_px`` / ``current_axis_px``: per-axis RMS of the previous
  fit (nominal σ = the DoG width 0.0586 nm, ⌈2σ⌉ = 4-px window, constant
  background) and of the current one (σ 0.1 nm, ⌈2.5σ⌉ = 9 px, plane) from
  the *same* integer maxima (``refine="none"``, no close-pair stage),
  matched atoms common to both.

    PYTHONPATH=src python benchmarks/fit_accuracy.py --seeds 3
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.spatial import cKDTree

DOSES = (1e4, 2e4, 4e4, 8e4, 1.6e5, 3.2e5)


def match(det_xy, truth_xy, tol=3.0):
    """One-to-one nearest matches within ``tol`` px: (det index, truth index)."""
    if not len(det_xy) or not len(truth_xy):
        return np.zeros(0, int), np.zeros(0, int)
    d, j = cKDTree(truth_xy).query(det_xy)
    back = cKDTree(det_xy).query(truth_xy)[1]
    i = np.arange(len(det_xy))
    ok = (d <= tol) & (back[j] == i)
    return i[ok], j[ok]


def crb_axis(fld, lam, xy, radius, p, plane=True):
    """Per-atom Cramér–Rao bound (px, per axis) of x and y for the Gaussian on a
    tilted plane (7 parameters) or, ``plane=False``, on a constant (5)."""
    gain, cv, read = p.gain, p.gain_cv, p.read_noise or 0.0
    tree = cKDTree(fld.xy_image)
    _, k = tree.query(xy)
    out = np.full(len(xy), np.nan)
    h, w = lam.shape
    for n, (x, y) in enumerate(xy):
        xi, yi = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        ys, xs = np.mgrid[max(yi - radius, 0):min(yi + radius + 1, h),
                          max(xi - radius, 0):min(xi + radius + 1, w)]
        var = gain ** 2 * lam[ys, xs] * (1 + cv ** 2) + read ** 2
        a, s = gain * fld.atom_peak[k[n]], fld.sigma_px[k[n]]
        r2 = (xs - x) ** 2 + (ys - y) ** 2
        g = np.exp(-r2 / (2 * s * s))
        cols = [a * g * (xs - x) / s ** 2, a * g * (ys - y) / s ** 2, g, a * g * r2 / s ** 3,
                np.ones_like(g)] + ([xs - xi, ys - yi] if plane else [])
        J = np.stack(cols, -1).reshape(-1, len(cols))
        F = J.T @ (J / var.reshape(-1, 1))
        try:
            C = np.linalg.inv(F)
            out[n] = np.sqrt(0.5 * (C[0, 0] + C[1, 1]))
        except np.linalg.LinAlgError:
            pass
    return out


def refine_variants(img, xy0, det, px):
    """The previous fit and the current default from the same integer maxima:
    {name: {"xy": (N, 2), "status": (N,) int, "sigma_px": (N,), "x_err_px": (N,)}}."""
    from fastsac import peaks

    pp = det.pixel_params(px)
    nms, dog, fit = pp["min_distance_px"], pp["dog_sigma_px"], pp["sigma_px"]
    # previous: the refinement as it was (centre of mass, then the fit may move up to the NMS distance)
    xy = peaks.refine_com(img, xy0, radius=peaks.com_radius(dog), iterations=2)
    moved = np.hypot(*(xy - xy0).T) > nms
    xy[moved] = xy0[moved]
    prev = peaks.refine_gaussian(img, xy, radius=peaks.fit_radius(dog, 2.0), sigma=dog,
                                 max_shift=nms, background="constant")
    cur, cols = peaks.refine_positions(img, xy0, min_distance_px=nms, sigma_px=fit,
                                       fit_radius_px=peaks.fit_radius(fit))
    c = dict(zip(peaks.FIT_COLUMNS, cols))
    return {"previous": {"xy": prev.xy, "status": prev.status.astype(int), "sigma_px": prev.sigma,
                         "x_err_px": prev.xy_err[:, 0]},
            "current": {"xy": cur, "status": c["fit_status"].astype(int), "sigma_px": c["sigma_px"],
                        "x_err_px": c["x_err_px"]}}


def run_dose(dose, seeds, size=1024):
    from fastsac import peaks
    from fastsac.detectors import ClassicalDetector, get_detector
    from fastsac.synth.params import SimulationParams
    from fastsac.synth.render import Field, to_dtype

    det = get_detector("classical")
    maxima = ClassicalDetector(refine="none", resolve_pairs=False)
    radius = peaks.fit_radius(det.pixel_params(0.0293)["sigma_px"])
    keys = ("n_truth", "n_det", "no_int", "status", "err", "crb", "crb_wide", "clean", "rep",
            "previous", "current")
    acc = {k: [] for k in keys}
    for seed in seeds:
        p = SimulationParams(size=size, dose=dose, seed=seed)
        fld = Field(p)
        img = to_dtype(fld.render(rng=np.random.default_rng([seed, 1])), p.dtype)
        lam = fld.expected()
        clean = (p.offset + p.gain * lam).astype(np.float32)
        truth = fld.xy_image
        d = det.detect(img.astype(np.float32), pixel_size_nm=p.pixel_size_nm)
        i, j = match(d.xy, truth)
        acc["n_truth"].append(len(truth))
        acc["n_det"].append(len(d))
        acc["no_int"].append(int((~np.isfinite(d.intensity)).sum()))
        acc["status"].append(np.bincount(d.fit_status, minlength=4))
        acc["err"].append(d.xy[i] - truth[j])
        acc["rep"].append(np.c_[d.x_err_px[i], d.y_err_px[i]])
        acc["crb"].append(crb_axis(fld, lam, truth[j], radius, p))
        acc["crb_wide"].append(crb_axis(fld, lam, truth[j], 20, p, plane=False))
        px = p.pixel_size_nm
        xy0 = maxima.detect(img.astype(np.float32), pixel_size_nm=px).xy
        fits = {k: f["xy"] for k, f in refine_variants(img.astype(np.float32), xy0, det, px).items()}
        ip, jp = match(fits["previous"], truth)
        ic, jc = match(fits["current"], truth)
        common = np.intersect1d(jp, jc)
        acc["previous"].append(fits["previous"][ip[np.isin(jp, common)]] - truth[jp[np.isin(jp, common)]])
        acc["current"].append(fits["current"][ic[np.isin(jc, common)]] - truth[jc[np.isin(jc, common)]])
        dc = det.detect(clean, pixel_size_nm=p.pixel_size_nm)
        ic, jc = match(dc.xy, truth)
        acc["clean"].append(dc.xy[ic] - truth[jc])
    err = np.concatenate(acc["err"])
    st = np.sum(acc["status"], axis=0)
    n_det = sum(acc["n_det"])
    rep = np.concatenate(acc["rep"])
    return {"dose": dose, "n_truth": sum(acc["n_truth"]), "n_det": n_det,
            "matched": len(err), "no_intensity": sum(acc["no_int"]) / max(n_det, 1),
            "free": st[0] / max(n_det, 1), "fixed": st[1] / max(n_det, 1),
            "centroid": st[2] / max(n_det, 1),
            "rms_px": float(np.sqrt((err ** 2).sum(1).mean())),
            "axis_px": float(np.sqrt((err ** 2).mean())),
            "crb_axis_px": float(np.sqrt(np.nanmean(np.concatenate(acc["crb"]) ** 2))),
            "crb_wide_axis_px": float(np.sqrt(np.nanmean(np.concatenate(acc["crb_wide"]) ** 2))),
            "noisefree_axis_px": float(np.sqrt((np.concatenate(acc["clean"]) ** 2).mean())),
            "rep_err_px": float(np.sqrt(np.nanmean(rep ** 2))),
            "previous_axis_px": float(np.sqrt((np.concatenate(acc["previous"]) ** 2).mean())),
            "current_axis_px": float(np.sqrt((np.concatenate(acc["current"]) ** 2).mean()))}


COLS = ("dose", "n_truth", "n_det", "matched", "no_intensity", "free", "fixed", "centroid",
        "rms_px", "axis_px", "crb_axis_px", "crb_wide_axis_px", "noisefree_axis_px", "rep_err_px",
        "previous_axis_px", "current_axis_px")


def fmt(row):
    out = []
    for c in COLS:
        v = row[c]
        if c == "dose":
            out.append(f"{v:.3g}")
        elif c in ("no_intensity", "free", "fixed", "centroid"):
            out.append(f"{100 * v:.1f} %")
        elif isinstance(v, float):
            out.append(f"{v:.3f}")
        else:
            out.append(str(v))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--doses", type=float, nargs="*", default=list(DOSES))
    ap.add_argument("--md", default=None, help="also write the table as Markdown here")
    a = ap.parse_args(argv)
    rows = [run_dose(dose, range(1, 1 + a.seeds)) for dose in a.doses]
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    lines += ["| " + " | ".join(fmt(r)) + " |" for r in rows]
    print("\n".join(lines))
    if a.md:
        from fastsac.io import atomic_write_text

        atomic_write_text(a.md, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
