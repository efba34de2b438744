"""Peak finding, non-maximum suppression and sub-pixel refinement.

Each kernel has a plain numpy/scipy reference (``_*_numpy_ref``) that is its
specification; the C++ (``cpp``) and numba CUDA (``cuda``) implementations
must agree with it (exactly for integer outputs, within a stated tolerance for
fits). Positions are ``[x, y]`` = ``[column, row]`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ._backend import Backend, Kernel, core, on_device
from ._validate import as_float, as_points, check_image, check_positive

__all__ = ["local_maxima", "nms", "refine_com", "refine_gaussian", "refine_positions", "GaussianFit",
           "PeakCandidates"]


# --------------------------------------------------------------------------- maxima
def _local_maxima_numpy_ref(image: np.ndarray, threshold: float, radius: int,
                            exclude_border: int):
    """Spec. A pixel is a candidate when it is finite, strictly above
    ``threshold``, and ≥ every finite pixel in the (2r+1)² square around it
    (plateaus give every plateau pixel; NMS resolves them). Pixels closer than
    ``exclude_border`` to an edge are skipped. NaN is never a candidate and
    never suppresses a neighbour. Output order: row-major (y, then x)."""
    img = np.where(np.isfinite(image), image, -np.inf)
    size = 2 * radius + 1
    mx = ndi.maximum_filter(img, size=size, mode="constant", cval=-np.inf)
    mask = (img >= mx) & (img > threshold) & np.isfinite(image)
    if exclude_border > 0:
        b = exclude_border
        mask[:b, :] = False
        mask[-b:, :] = False
        mask[:, :b] = False
        mask[:, -b:] = False
    rows, cols = np.nonzero(mask)
    xy = np.stack([cols, rows], axis=1).astype(np.int64)
    return xy, image[rows, cols].astype(np.float32)


_maxima_kernel = Kernel("local_maxima", _local_maxima_numpy_ref)


@_maxima_kernel.register("cpp")
def _local_maxima_cpp(image, threshold, radius, exclude_border):
    xy, values = core().local_maxima(image, float(threshold), int(radius), int(exclude_border))
    return np.asarray(xy, np.int64).reshape(-1, 2), np.asarray(values, np.float32)


@dataclass(frozen=True)
class PeakCandidates:
    """Integer local maxima: ``xy`` (N, 2) int64 [x, y] and ``values`` (N,) float32."""

    xy: np.ndarray
    values: np.ndarray
    backend: str = "numpy"
    params: dict = field(default_factory=dict)


def local_maxima(image, *, threshold: float = -np.inf, radius: int = 1,
                 exclude_border: int = 0, backend: str = "auto") -> PeakCandidates:
    """Local-maximum candidates above a threshold.

    Parameters
    ----------
    image : (H, W) array
        Score map (NaN allowed: never a peak).
    threshold : float
        Candidates must be strictly above it.
    radius : int
        Half-width of the square neighbourhood.
    exclude_border : int
        Skip pixels closer than this to the image edge.
    """
    radius = int(radius)
    if radius < 1:
        raise ValueError(f"radius must be ≥ 1 pixel, got {radius}")
    if on_device(_maxima_kernel, backend, image):
        xy, vals = _maxima_kernel.impls[Backend.CUDA](image, float(threshold), radius,
                                                      int(exclude_border))
        return PeakCandidates(xy, vals, "cuda", {"threshold": float(threshold), "radius": radius,
                                                 "exclude_border": int(exclude_border)})
    img = as_float(check_image(image, allow_nan=True)).astype(np.float32, copy=False)
    b = _maxima_kernel.resolve(backend, data=image)
    xy, vals = _maxima_kernel.impls[b](img, float(threshold), radius, int(exclude_border))
    return PeakCandidates(xy, vals, b.value, {"threshold": float(threshold), "radius": radius,
                                               "exclude_border": int(exclude_border)})


# --------------------------------------------------------------------------- NMS
def _nms_numpy_ref(xy: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Spec. Greedy: visit points by descending score (ties: lower index
    first); keep a point unless a kept point lies within distance ≤ radius.
    NaN scores are dropped. Returns kept indices in visiting order."""
    order = np.lexsort((np.arange(len(scores)), -np.nan_to_num(scores, nan=-np.inf)))
    order = order[np.isfinite(scores[order])]
    kept: list[int] = []
    r2 = radius * radius
    for i in order:
        if kept:
            d2 = ((xy[kept] - xy[i]) ** 2).sum(axis=1)
            if (d2 <= r2).any():
                continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


_nms_kernel = Kernel("nms", _nms_numpy_ref)


@_nms_kernel.register("cpp")
def _nms_cpp(xy, scores, radius):
    return np.asarray(core().nms(xy, scores, float(radius)), np.int64)


def nms(xy, scores, *, radius: float, backend: str = "auto") -> np.ndarray:
    """Non-maximum suppression by radius, keeping the higher score.

    Parameters
    ----------
    xy : (N, 2) array of [x, y]
    scores : (N,) array
    radius : float
        Points within this distance (≤) of a kept, higher-scoring point are removed.

    Returns
    -------
    keep : (K,) int64 ndarray
        Indices into ``xy``, highest score first.
    """
    if on_device(_nms_kernel, backend, xy):
        return _nms_kernel.impls[Backend.CUDA](xy, scores, float(radius))
    pts = as_points(xy)
    s = np.ascontiguousarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(pts):
        raise ValueError(f"scores has {len(s)} entries but xy has {len(pts)} points")
    check_positive(radius, name="radius", allow_zero=True)
    if len(pts) == 0:
        return np.zeros(0, np.int64)
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions")
    return _nms_kernel(pts, s, float(radius), backend=backend)


# --------------------------------------------------------------------------- refinement
def _disc_window(image, x0: int, y0: int, radius: int):
    h, w = image.shape
    y_lo, y_hi = max(y0 - radius, 0), min(y0 + radius + 1, h)
    x_lo, x_hi = max(x0 - radius, 0), min(x0 + radius + 1, w)
    yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi]
    inside = (xx - x0) ** 2 + (yy - y0) ** 2 <= radius * radius
    return xx[inside], yy[inside], image[yy[inside], xx[inside]].astype(np.float64)


def _refine_com_numpy_ref(image: np.ndarray, xy: np.ndarray, radius: int,
                          iterations: int) -> np.ndarray:
    """Spec. For each point: take the disc of ``radius`` around the rounded
    position (clipped at the borders, NaN pixels ignored), weights = value −
    min over the disc, position = weighted mean. Repeat ``iterations`` times,
    re-centring on the rounded new position (clamped into the image). A point
    whose weights sum to 0 keeps its position."""
    out = xy.astype(np.float64).copy()
    h, w = image.shape
    for i in range(len(out)):
        x, y = out[i]
        for _ in range(iterations):
            xi = min(max(int(np.floor(x + 0.5)), 0), w - 1)
            yi = min(max(int(np.floor(y + 0.5)), 0), h - 1)
            xx, yy, v = _disc_window(image, xi, yi, radius)
            ok = np.isfinite(v)
            if not ok.any():
                break
            xx, yy, v = xx[ok], yy[ok], v[ok]
            wgt = v - v.min()
            tot = wgt.sum()
            if tot <= 0:
                break
            x, y = float((wgt * xx).sum() / tot), float((wgt * yy).sum() / tot)
        out[i] = (x, y)
    return out


_com_kernel = Kernel("refine_com", _refine_com_numpy_ref)


@_com_kernel.register("cpp")
def _refine_com_cpp(image, xy, radius, iterations):
    return np.asarray(core().refine_com(image, xy, int(radius), int(iterations)), np.float64)


def refine_com(image, xy, *, radius: int = 3, iterations: int = 2,
               backend: str = "auto") -> np.ndarray:
    """Sub-pixel positions by intensity-weighted centre of mass in a disc.

    Returns
    -------
    (N, 2) float64 ndarray of refined [x, y].
    """
    img = as_float(check_image(image, allow_nan=True)).astype(np.float32, copy=False)
    pts = as_points(xy)
    if len(pts) == 0:
        return pts
    if int(radius) < 1 or int(iterations) < 1:
        raise ValueError("radius and iterations must be ≥ 1")
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions; drop them first")
    return _com_kernel(img, pts, int(radius), int(iterations), backend=backend)


@dataclass(frozen=True)
class GaussianFit:
    """Per-atom isotropic 2-D Gaussian fit ``b + A exp(-r²/2σ²)`` (arrays of length N).

    ``intensity`` = 2π A σ² is the integrated (background-free) intensity;
    ``residual`` the RMS fit residual; ``converged`` whether the fit met its
    tolerance within the iteration budget and stayed inside its window (failed
    fits keep the input position and report NaN parameters).
    """

    xy: np.ndarray
    amplitude: np.ndarray
    sigma: np.ndarray
    background: np.ndarray
    intensity: np.ndarray
    residual: np.ndarray
    converged: np.ndarray
    backend: str = "numpy"


def _fit_one(xx, yy, v, x0, y0, sigma0, max_iter):
    """Levenberg–Marquardt for (x, y, A, sigma, b). Returns params, rms, ok."""
    b0 = float(np.min(v))
    p = np.array([x0, y0, max(float(np.max(v)) - b0, 1e-12), sigma0, b0])
    lam = 1e-3

    def resid(p):
        r2 = (xx - p[0]) ** 2 + (yy - p[1]) ** 2
        g = np.exp(-r2 / (2 * p[3] ** 2))
        return p[4] + p[2] * g - v, g, r2

    r, g, r2 = resid(p)
    cost = float(r @ r)
    ok = False
    for _ in range(max_iter):
        s2 = p[3] ** 2
        J = np.empty((len(v), 5))
        J[:, 0] = p[2] * g * (xx - p[0]) / s2
        J[:, 1] = p[2] * g * (yy - p[1]) / s2
        J[:, 2] = g
        J[:, 3] = p[2] * g * r2 / (s2 * p[3])
        J[:, 4] = 1.0
        A = J.T @ J
        grad = J.T @ r
        step_taken = False
        while lam < 1e10:
            M = A + lam * np.diag(np.diag(A) + 1e-12)
            try:
                delta = -np.linalg.solve(M, grad)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            pn = p + delta
            pn[3] = abs(pn[3])
            rn, gn, r2n = resid(pn)
            cn = float(rn @ rn)
            if cn < cost:
                rel = (cost - cn) / max(cost, 1e-300)
                p, r, g, r2, cost = pn, rn, gn, r2n, cn
                lam = max(lam / 10, 1e-7)
                step_taken = True
                break
            lam *= 10
        if not step_taken or rel < 1e-9:
            ok = True
            break
    return p, float(np.sqrt(cost / len(v))), ok


def _refine_gaussian_numpy_ref(image: np.ndarray, xy: np.ndarray, radius: int,
                               sigma: float, max_iter: int) -> tuple:
    """Spec. Fit ``b + A exp(-((x-x0)²+(y-y0)²)/2σ²)`` by Levenberg–Marquardt
    to the (2r+1)² square (clipped at borders, NaN pixels skipped) around the
    rounded start. Start: x0,y0 = input, σ = ``sigma``, b = window min, A =
    window max − b. Accept when the relative cost drop < 1e-9 or no step
    lowers the cost. A fit is marked failed (NaN parameters, input position)
    if fewer than 6 pixels, σ outside (0.2, 2r], A ≤ 0, or the centre moves
    out of the window."""
    n = len(xy)
    out = np.full((n, 7), np.nan)
    conv = np.zeros(n, bool)
    h, w = image.shape
    for i, (x0, y0) in enumerate(xy):
        xi = min(max(int(np.floor(x0 + 0.5)), 0), w - 1)
        yi = min(max(int(np.floor(y0 + 0.5)), 0), h - 1)
        y_lo, y_hi = max(yi - radius, 0), min(yi + radius + 1, h)
        x_lo, x_hi = max(xi - radius, 0), min(xi + radius + 1, w)
        yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi]
        v = image[y_lo:y_hi, x_lo:x_hi].astype(np.float64).ravel()
        xx, yy = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
        ok = np.isfinite(v)
        out[i, 0:2] = x0, y0
        if ok.sum() < 6:
            continue
        p, rms, good = _fit_one(xx[ok], yy[ok], v[ok], float(x0), float(y0), sigma, max_iter)
        inside = (abs(p[0] - xi) <= radius) and (abs(p[1] - yi) <= radius)
        if good and inside and 0.2 < p[3] <= 2 * radius and p[2] > 0:
            out[i] = (p[0], p[1], p[2], p[3], p[4], 2 * np.pi * p[2] * p[3] ** 2, rms)
            conv[i] = True
    return out, conv


_gauss_kernel = Kernel("refine_gaussian", _refine_gaussian_numpy_ref)


@_gauss_kernel.register("cpp")
def _refine_gaussian_cpp(image, xy, radius, sigma, max_iter):
    params, conv = core().refine_gaussian(image, xy, int(radius), float(sigma), int(max_iter))
    return np.asarray(params, np.float64).reshape(-1, 7), np.asarray(conv, bool)


def refine_gaussian(image, xy, *, radius: int = 4, sigma: float = 1.5, max_iter: int = 50,
                    backend: str = "auto") -> GaussianFit:
    """Sub-pixel 2-D Gaussian least-squares fit per atom, in parallel over atoms.

    Parameters
    ----------
    image : (H, W) array
        Raw or background-subtracted intensities (fit includes a local background).
    xy : (N, 2) array
        Start positions [x, y].
    radius : int
        Half-width of the fitted square window, pixels.
    sigma : float
        Starting Gaussian sigma, pixels.
    """
    img = as_float(check_image(image, allow_nan=True)).astype(np.float32, copy=False)
    pts = as_points(xy)
    check_positive(sigma, name="sigma")
    if int(radius) < 1:
        raise ValueError(f"radius must be ≥ 1, got {radius}")
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions; drop them first")
    b = _gauss_kernel.resolve(backend, data=image)
    if len(pts) == 0:
        params, conv = np.zeros((0, 7)), np.zeros(0, bool)
    else:
        params, conv = _gauss_kernel.impls[b](img, pts, int(radius), float(sigma), int(max_iter))
    xy_out = np.where(conv[:, None], params[:, :2], pts)
    return GaussianFit(xy_out, params[:, 2], params[:, 3], params[:, 4], params[:, 5],
                       params[:, 6], conv, b.value)


def refine_positions(raw, xy0, *, min_distance_px: float, refine: str = "gaussian",
                     fit_radius_px: int = 4, sigma_px: float = 1.5, backend: str = "auto"):
    """The detectors' refinement step: centre of mass, then a Gaussian fit.

    A centroid or fit that moved further than ``min_distance_px`` from its
    integer maximum has wandered onto another feature and is discarded (the
    earlier position is kept); fit parameters of failed or discarded fits are
    NaN. Points are independent, so the result for a point does not depend on
    which other points are refined with it (tiled engines rely on this).

    Returns
    -------
    xy : (N, 2) float64
    fit_columns : list of five (N,) float64 arrays
        amplitude, sigma, background, intensity, residual.
    """
    xy0 = np.asarray(xy0, np.float64).reshape(-1, 2)
    n = len(xy0)
    cols = [np.full(n, np.nan) for _ in range(5)]
    xy = xy0
    if n and refine in ("com", "gaussian"):
        xy = refine_com(raw, xy0, radius=max(2, int(round(sigma_px * 1.5))), iterations=2,
                        backend=backend)
        moved = np.hypot(*(xy - xy0).T) > min_distance_px
        xy[moved] = xy0[moved]
    if n and refine == "gaussian":
        fit = refine_gaussian(raw, xy, radius=fit_radius_px, sigma=sigma_px, backend=backend)
        good = fit.converged & (np.hypot(*(fit.xy - xy).T) <= min_distance_px)
        xy = np.where(good[:, None], fit.xy, xy)
        cols = [fit.amplitude.copy(), fit.sigma.copy(), fit.background.copy(),
                fit.intensity.copy(), fit.residual.copy()]
        for a in cols:
            a[~good] = np.nan
    return np.asarray(xy, np.float64), cols


# CUDA implementations, by dotted path: imported (with numba.cuda) only when first used.
for _kernel, _fn in ((_maxima_kernel, "local_maxima_cuda"), (_nms_kernel, "nms_cuda"),
                    (_com_kernel, "refine_com_cuda"), (_gauss_kernel, "refine_gaussian_cuda")):
    _kernel.register_path("cuda", f"fastsac._cuda.peaks:{_fn}")
