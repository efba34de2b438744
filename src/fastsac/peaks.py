"""Peak finding, non-maximum suppression and sub-pixel refinement.

Each kernel has a plain numpy/scipy reference (``_*_numpy_ref``) that is its
specification; the C++ (``cpp``) and numba CUDA (``cuda``) implementations
must agree with it (exactly for integer outputs, within a stated tolerance for
fits). Positions are ``[x, y]`` = ``[column, row]`` pixels.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ._backend import Backend, Kernel, core, on_device
from ._validate import as_float, as_points, check_image, check_positive, stable_float

__all__ = ["local_maxima", "nms", "refine_com", "refine_gaussian", "refine_positions", "GaussianFit",
           "PeakCandidates", "FitStatus", "FIT_COLUMNS", "FIT_TABLE", "empty_fit_columns",
           "com_radius", "fit_radius", "refine_reach", "stable_float", "default_sigma_bounds",
           "FIT_SIGMA_NM", "BACKGROUND_MODELS", "fit_max_shift"]


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


class FitStatus(enum.IntEnum):
    """How an atom's Gaussian parameters were obtained (``fit_status`` column).

    FREE (0)
        Free fit of x, y, A, σ and the background (b, or the plane b, bx, by)
        converged with σ strictly inside its bounds, A > 0 and the centre
        within ``max_shift`` of the start.
    FIXED_SIGMA (1)
        The free fit failed; x, y, A and the background fitted with σ fixed
        at the nominal atom size (``sigma_err`` is NaN).
    CENTROID (2)
        Both fits failed; the position is the start (the centre of mass in
        :func:`refine_positions`), A and the background are the linear
        least-squares values for a Gaussian of the nominal σ there (A may be ≤ 0: the spot
        is not brighter than its surroundings).
    NONE (3)
        Fewer than 6 finite pixels in the window, or no fit was asked for
        (``refine`` ≠ "gaussian"): parameters are NaN.
    """

    FREE = 0
    FIXED_SIGMA = 1
    CENTROID = 2
    NONE = 3


#: Columns of the fit table (``(N, 13)`` float64) every fit backend returns, in order.
FIT_TABLE = ("x", "y", "amplitude", "sigma", "background", "intensity", "residual",
             "x_err", "y_err", "amplitude_err", "sigma_err", "background_err", "intensity_err")

#: Parameters of the fit model, in order: centre, amplitude, σ, background at
#: the window centre and the background plane's slopes (per px in x and y).
#: The plane is ``b + bx·(X − xc) + by·(Y − yc)`` around the window's centre
#: pixel (xc, yc); without a plane bx = by = 0 and they are not fitted.
N_PARAMS = 7


def _free_params(fit_sigma: bool, plane: bool) -> list[int]:
    """Indices of the fitted parameters in p = [x, y, A, σ, b, bx, by]."""
    return [0, 1, 2] + ([3] if fit_sigma else []) + [4] + ([5, 6] if plane else [])


def _model(xx, yy, p, xc, yc):
    """(model, g, r²) of ``b + bx (X − xc) + by (Y − yc) + A g`` at the pixels."""
    r2 = (xx - p[0]) ** 2 + (yy - p[1]) ** 2
    g = np.exp(-r2 / (2 * p[3] ** 2))
    return p[4] + p[5] * (xx - xc) + p[6] * (yy - yc) + p[2] * g, g, r2


def _lm(xx, yy, v, p, fit_sigma, sigma_lo, sigma_hi, max_iter, plane=False, xc=0.0, yc=0.0):
    """Levenberg–Marquardt for p = [x, y, A, σ, b, bx, by] (σ held fixed unless
    ``fit_sigma``, the slopes unless ``plane``; fitted σ is projected into
    [sigma_lo, sigma_hi] after each step, and the fit fails once σ sat on a
    bound after 3 consecutive accepted steps). Converged (ok) when the
    relative cost drop of an accepted step is < 1e-9 or no damped step (λ up
    to 1e10) lowers the cost. Returns (p, cost, ok)."""
    free = _free_params(fit_sigma, plane)
    p = p.astype(np.float64).copy()

    def resid(p):
        m, g, r2 = _model(xx, yy, p, xc, yc)
        return m - v, g, r2

    r, g, r2 = resid(p)
    cost = float(r @ r)
    lam = 1e-3
    rel = 0.0
    pinned = 0  # consecutive accepted steps with σ on a bound
    for _ in range(max_iter):
        J = _jacobian(xx, yy, p, g, r2, xc, yc)[:, free]
        A = J.T @ J
        grad = J.T @ r
        step_taken = False
        while lam < 1e10:
            M = A + lam * np.diag(np.diag(A) + 1e-12)
            try:
                delta = np.linalg.solve(M, grad)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            pn = p.copy()
            pn[free] -= delta
            if fit_sigma:
                pn[3] = min(max(abs(pn[3]), sigma_lo), sigma_hi)
            rn, gn, r2n = resid(pn)
            cn = float(rn @ rn)
            if cn < cost:
                rel = (cost - cn) / max(cost, 1e-300)
                p, r, g, r2, cost = pn, rn, gn, r2n, cn
                lam = max(lam / 10, 1e-7)
                step_taken = True
                pinned = pinned + 1 if fit_sigma and p[3] in (sigma_lo, sigma_hi) else 0
                break
            lam *= 10
        if pinned >= 3:  # σ wants to leave its physical range: the free fit failed
            return p, cost, False
        if not step_taken or rel < 1e-9:
            return p, cost, True
    return p, cost, False


def _jacobian(xx, yy, p, g, r2, xc=0.0, yc=0.0):
    """∂model/∂[x, y, A, σ, b, bx, by] (N, 7)."""
    s2 = p[3] ** 2
    ag = p[2] * g
    return np.stack([ag * (xx - p[0]) / s2, ag * (yy - p[1]) / s2, g, ag * r2 / (s2 * p[3]),
                     np.ones_like(g), xx - xc, yy - yc], axis=1)


def _fit_errors(xx, yy, v, p, free, xc=0.0, yc=0.0):
    """Standard errors of p[free], of the intensity and of the background at
    the fitted centre, with a per-atom, signal-dependent noise model measured
    from the residuals.

    The squared residuals are regressed on the model's shape,
    ``r² ≈ c0 + c1·g`` (background noise + shot noise growing with the atom's
    signal), with c1 ≥ 0 and c0 ≥ 0 enforced (a negative coefficient is
    dropped and the other refitted), then scaled by m/(m − k) for the k fitted
    parameters. The fit is unweighted, so the covariance is the sandwich
    H⁻¹ (Jᵀ diag(var) J) H⁻¹ with H = JᵀJ. Returns (errors of the 7
    parameters (NaN where not fitted), intensity error, error of the
    background b + bx (x − xc) + by (y − yc) at the fitted centre from the
    covariance of (b, bx, by))."""
    m, k = len(v), len(free)
    model, g, r2 = _model(xx, yy, p, xc, yc)
    res = model - v
    q = res * res
    c0, c1 = _noise_model(g, q)
    var = (c0 + c1 * g) * (m / max(m - k, 1))
    J = _jacobian(xx, yy, p, g, r2, xc, yc)[:, free]
    H = J.T @ J
    errs = np.full(N_PARAMS, np.nan)
    try:
        Hi = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return errs, np.nan, np.nan
    C = Hi @ ((J * var[:, None]).T @ J) @ Hi
    d = np.sqrt(np.maximum(np.diag(C), 0.0))
    errs[free] = d
    # intensity 2πAσ²: gradient (2πσ², 4πAσ) in (A, σ)
    gi = np.zeros(k)
    gi[free.index(2)] = 2 * np.pi * p[3] ** 2
    if 3 in free:
        gi[free.index(3)] = 4 * np.pi * p[2] * p[3]
    # background at the centre: gradient (1, x − xc, y − yc) in (b, bx, by)
    gb = np.zeros(k)
    gb[free.index(4)] = 1.0
    if 5 in free:
        gb[free.index(5)] = p[0] - xc
        gb[free.index(6)] = p[1] - yc
    return (errs, float(np.sqrt(max(gi @ C @ gi, 0.0))),
            float(np.sqrt(max(gb @ C @ gb, 0.0))))


def _noise_model(g, q):
    """Least-squares (c0, c1) of q ≈ c0 + c1 g with c0, c1 ≥ 0."""
    m = len(g)
    sg, sgg, sq, sgq = g.sum(), (g * g).sum(), q.sum(), (g * q).sum()
    det = m * sgg - sg * sg
    if det > 1e-12 * m * max(sgg, 1e-300):
        c0 = (sgg * sq - sg * sgq) / det
        c1 = (m * sgq - sg * sq) / det
        if c0 >= 0 and c1 >= 0:
            return c0, c1
        if c1 < 0:
            return sq / m, 0.0
        return 0.0, (sgq / sgg if sgg > 0 else 0.0)
    return sq / m, 0.0


def _plane_determined(xx, yy) -> bool:
    """True unless the pixels are collinear (then no plane is fitted). Exact:
    integer sums of integer coordinates."""
    m = len(xx)
    sx, sy = xx.sum(), yy.sum()
    vx = m * (xx * xx).sum() - sx * sx
    vy = m * (yy * yy).sum() - sy * sy
    cxy = m * (xx * yy).sum() - sx * sy
    return vx * vy - cxy * cxy > 0


def _linear_amplitude(xx, yy, v, x0, y0, sigma, plane=False, xc=0.0, yc=0.0):
    """(A, b, bx, by) minimising Σ(b + bx (X − xc) + by (Y − yc) + A g − v)² for
    the Gaussian of width ``sigma`` at (x0, y0) (bx = by = 0 unless ``plane``).
    When the Gaussian is indistinguishable from the background (constant g)
    A = 0 and the background is fitted alone; with a plane, the 4×4 normal
    equations are solved by Gaussian elimination with partial pivoting
    (:func:`_solve_small`, as the kernels). A constant window gives A = 0,
    b = its value and no slope exactly (rounding would leave a ~1e-15
    amplitude whose singular covariance differs between kernels)."""
    if v.max() == v.min():
        return 0.0, float(v[0]), 0.0, 0.0
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma * sigma))
    m = len(v)
    sg, sgg, sv, sgv = g.sum(), (g * g).sum(), v.sum(), (g * v).sum()
    det = m * sgg - sg * sg
    degenerate = not det > 1e-12 * m * max(sgg, 1e-300)
    if not plane:
        if not degenerate:
            return (m * sgv - sg * sv) / det, (sgg * sv - sg * sgv) / det, 0.0, 0.0
        return 0.0, sv / m, 0.0, 0.0
    cols = [np.ones_like(g), xx - xc, yy - yc] if degenerate else [g, np.ones_like(g), xx - xc,
                                                                    yy - yc]
    Phi = np.stack(cols, axis=1)
    sol = _solve_small(Phi.T @ Phi, Phi.T @ v)
    if sol is None:
        return 0.0, sv / m, 0.0, 0.0
    if degenerate:
        return 0.0, float(sol[0]), float(sol[1]), float(sol[2])
    return tuple(float(s) for s in sol)


def _solve_small(M, rhs):
    """Solve M x = rhs (n ≤ 7) by Gaussian elimination with partial pivoting
    (row order as the C++/CUDA kernels); None when a pivot is exactly 0."""
    M = np.array(M, np.float64)
    b = np.array(rhs, np.float64)
    n = len(b)
    for c in range(n):
        piv = c + int(np.argmax(np.abs(M[c:, c])))
        if M[piv, c] == 0.0:
            return None
        if piv != c:
            M[[c, piv]] = M[[piv, c]]
            b[[c, piv]] = b[[piv, c]]
        for r in range(c + 1, n):
            f = M[r, c] / M[c, c]
            M[r, c:] -= f * M[c, c:]
            b[r] -= f * b[c]
    x = np.zeros(n)
    for r in range(n - 1, -1, -1):
        x[r] = (b[r] - M[r, r + 1:] @ x[r + 1:]) / M[r, r]
    return x


def _fit_gaussian_numpy_ref(image: np.ndarray, xy: np.ndarray, radius: int, sigma: float,
                            sigma_lo: float, sigma_hi: float, max_shift: float,
                            max_iter: int, plane: bool = False) -> tuple:
    """Spec. Per point: the (2r+1)² square around the rounded start (xc, yc)
    (clipped at the borders, non-finite pixels skipped; fewer than 6 → NONE).
    The background is a constant b, or with ``plane`` the tilted plane
    b + bx (X − xc) + by (Y − yc) (dropped for an atom whose finite pixels
    are collinear).

    1. Linear start: (A, b[, bx, by]) by least squares for a Gaussian of the
       nominal ``sigma`` at the start (:func:`_linear_amplitude`).
    2. Free fit (x, y, A, σ, b[, bx, by]) by Levenberg–Marquardt from
       (start, A′, σ, b[, bx, by]) with A′ = max(A, 1e-3 (max − min), 1e-12),
       σ projected into [sigma_lo, sigma_hi] after every step; accepted (FREE)
       when converged (relative cost drop < 1e-9, or no damped step lowers the
       cost, within ``max_iter`` iterations), A > 0, sigma_lo < σ < sigma_hi,
       the centre within the window and within ``max_shift`` of the start,
       and the window not constant.
    3. Else fixed-σ fit (x, y, A, b[, bx, by]) from the same start; same
       acceptance (FIXED_SIGMA).
    4. Else CENTROID: the start position with the linear parameters of step 1.

    ``background`` is the background at the fitted centre (b + bx (x − xc)
    + by (y − yc)). Errors: :func:`_fit_errors` for the accepted model (σ not
    fitted for FIXED_SIGMA and CENTROID). Returns ``(table (N, 13) float64 in
    the order of FIT_TABLE, status (N,) int8)``."""
    n = len(xy)
    out = np.full((n, len(FIT_TABLE)), np.nan)
    status = np.full(n, int(FitStatus.NONE), np.int8)
    h, w = image.shape
    for i, (x0, y0) in enumerate(xy):
        out[i, 0:2] = x0, y0
        xi = min(max(int(np.floor(x0 + 0.5)), 0), w - 1)
        yi = min(max(int(np.floor(y0 + 0.5)), 0), h - 1)
        y_lo, y_hi = max(yi - radius, 0), min(yi + radius + 1, h)
        x_lo, x_hi = max(xi - radius, 0), min(xi + radius + 1, w)
        yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi]
        v = image[y_lo:y_hi, x_lo:x_hi].astype(np.float64).ravel()
        ok = np.isfinite(v)
        if ok.sum() < 6:
            continue
        xx, yy, v = xx.ravel()[ok].astype(np.float64), yy.ravel()[ok].astype(np.float64), v[ok]
        tilt = bool(plane) and _plane_determined(xx, yy)
        xc, yc = float(xi), float(yi)
        a_lin, b_lin, bx_lin, by_lin = _linear_amplitude(xx, yy, v, x0, y0, sigma, tilt, xc, yc)
        contrast = float(v.max()) > float(v.min())  # a constant window holds no spot
        a0 = max(a_lin, 1e-3 * (float(v.max()) - float(v.min())), 1e-12)
        start = np.array([x0, y0, a0, sigma, b_lin, bx_lin, by_lin])

        def accept(p, good):
            inside = abs(p[0] - xi) <= radius and abs(p[1] - yi) <= radius
            near = (p[0] - x0) ** 2 + (p[1] - y0) ** 2 <= max_shift * max_shift
            return good and inside and near and p[2] > 0 and contrast

        p, cost, good = _lm(xx, yy, v, start, True, sigma_lo, sigma_hi, max_iter, tilt, xc, yc)
        if accept(p, good) and sigma_lo < p[3] < sigma_hi:
            st, free = FitStatus.FREE, _free_params(True, tilt)
        else:
            p, cost, good = _lm(xx, yy, v, start, False, sigma_lo, sigma_hi, max_iter, tilt,
                                xc, yc)
            free = _free_params(False, tilt)
            if accept(p, good):
                st = FitStatus.FIXED_SIGMA
            else:
                st = FitStatus.CENTROID
                p = np.array([x0, y0, a_lin, sigma, b_lin, bx_lin, by_lin])
                rr = _model(xx, yy, p, xc, yc)[0] - v
                cost = float(rr @ rr)
        errs, i_err, b_err = _fit_errors(xx, yy, v, p, free, xc, yc)
        bg = p[4] + p[5] * (p[0] - xc) + p[6] * (p[1] - yc)
        out[i, :7] = (p[0], p[1], p[2], p[3], bg, 2 * np.pi * p[2] * p[3] ** 2,
                      np.sqrt(cost / len(v)))
        out[i, 7:11] = errs[[0, 1, 2, 3]]
        out[i, 11] = b_err
        out[i, 12] = i_err
        status[i] = int(st)
    return out, status


@dataclass(frozen=True)
class GaussianFit:
    """Per-atom isotropic 2-D Gaussian fit ``background + A exp(-r²/2σ²)`` (arrays
    of length N), the background a constant or a tilted plane.

    ``background`` is the background level under the fitted centre (for a
    plane: its value there); ``intensity`` = 2π A σ² is the integrated (background-free) intensity;
    ``residual`` the RMS fit residual; ``*_err`` the standard errors (see
    :func:`_fit_errors`); ``status`` the :class:`FitStatus` of each atom
    (every atom with ≥ 6 finite window pixels gets an amplitude and an
    intensity; only ``FitStatus.NONE`` rows are NaN).
    """

    xy: np.ndarray
    amplitude: np.ndarray
    sigma: np.ndarray
    background: np.ndarray
    intensity: np.ndarray
    residual: np.ndarray
    xy_err: np.ndarray
    amplitude_err: np.ndarray
    sigma_err: np.ndarray
    background_err: np.ndarray
    intensity_err: np.ndarray
    status: np.ndarray
    backend: str = "numpy"

    @property
    def converged(self) -> np.ndarray:
        """(N,) bool: the free fit was accepted (``status == FitStatus.FREE``)."""
        return self.status == FitStatus.FREE


_gauss_kernel = Kernel("fit_gaussian", _fit_gaussian_numpy_ref)


@_gauss_kernel.register("cpp")
def _fit_gaussian_cpp(image, xy, radius, sigma, sigma_lo, sigma_hi, max_shift, max_iter,
                      plane=False):
    table, status = core().fit_gaussian(image, xy, int(radius), float(sigma), float(sigma_lo),
                                        float(sigma_hi), float(max_shift), int(max_iter),
                                        bool(plane))
    return (np.asarray(table, np.float64).reshape(-1, len(FIT_TABLE)),
            np.asarray(status, np.int8))


#: Physical Gaussian σ of one metal atom's image (probe + blur), nm: the
#: nominal σ of the per-atom fit. ~0.1 nm is what free fits give on ptnc-train
#: and what ``fastsac.synth`` simulates (σ ≈ 0.105 nm); it is not the
#: detectors' filter width (the classical DoG centre is 0.0586 nm).
FIT_SIGMA_NM = 0.1

#: Background models of :func:`refine_gaussian`: a constant, or a tilted plane
#: b + bx·(X − xc) + by·(Y − yc) that absorbs the support's gradient under an
#: atom (docs/fit.md: it halves the support-texture floor of the position).
BACKGROUND_MODELS = ("plane", "constant")


def default_sigma_bounds(sigma_px: float) -> tuple[float, float]:
    """Physical range of a fitted atom σ around the nominal one: [0.5, 2.5] × σ.

    For the nominal :data:`FIT_SIGMA_NM` (0.1 nm) that is 0.05–0.25 nm:
    a sharp atom of FWHM 0.12 nm (σ 0.05 nm) up to a strongly blurred one.
    """
    return 0.5 * float(sigma_px), 2.5 * float(sigma_px)


def refine_gaussian(image, xy, *, radius: int = 4, sigma: float = 1.5,
                    sigma_bounds: tuple[float, float] | None = None,
                    max_shift: float | None = None, max_iter: int = 50,
                    background: str = "plane", backend: str = "auto") -> GaussianFit:
    """Sub-pixel 2-D Gaussian least-squares fit per atom, in parallel over atoms,
    with a fixed-σ and a centroid fallback and standard errors.

    Parameters
    ----------
    image : (H, W) array
        Raw or background-subtracted intensities (the fit includes a local background).
    xy : (N, 2) array
        Start positions [x, y] (the centroid of the ``CENTROID`` fallback).
    radius : int
        Half-width of the fitted square window, pixels.
    sigma : float
        Nominal Gaussian σ, pixels: the start of the free fit and the σ of
        the fixed-σ and centroid fallbacks.
    sigma_bounds : (lo, hi), optional
        Physical range of the fitted σ (default :func:`default_sigma_bounds`);
        a free fit that ends on a bound falls back to fixed σ.
    max_shift : float, optional
        A fit whose centre moved further than this from the start has
        wandered onto another feature and is not accepted (default: no limit
        beyond the window).
    max_iter : int
        Levenberg–Marquardt iterations per fit.
    background : {"plane", "constant"}
        Background under the atom: a tilted plane b + bx·(X − xc) + by·(Y − yc)
        around the window's centre pixel (default; needs a window wider than
        the atom, ``radius`` ≳ 2.5σ, or the plane and the Gaussian's tails
        trade off), or a constant b.

    Returns
    -------
    GaussianFit
    """
    img = as_float(check_image(image, allow_nan=True)).astype(np.float32, copy=False)
    pts = as_points(xy)
    check_positive(sigma, name="sigma")
    if int(radius) < 1:
        raise ValueError(f"radius must be ≥ 1, got {radius}")
    lo, hi = default_sigma_bounds(sigma) if sigma_bounds is None else map(float, sigma_bounds)
    if not 0 < lo < sigma < hi:
        raise ValueError(f"sigma_bounds must satisfy 0 < lo < sigma < hi; got lo={lo}, "
                         f"sigma={sigma}, hi={hi}")
    shift = np.inf if max_shift is None else check_positive(max_shift, name="max_shift")
    if background not in BACKGROUND_MODELS:
        raise ValueError(f"background must be one of {BACKGROUND_MODELS}, got {background!r}")
    if not np.isfinite(pts).all():
        raise ValueError("xy contains NaN or inf positions; drop them first")
    b = _gauss_kernel.resolve(backend, data=image)
    if len(pts) == 0:
        table, status = np.zeros((0, len(FIT_TABLE))), np.zeros(0, np.int8)
    else:
        table, status = _gauss_kernel.impls[b](img, pts, int(radius), float(sigma), lo, hi,
                                               float(shift), int(max_iter),
                                               background == "plane")
    t = table
    return GaussianFit(t[:, :2].copy(), t[:, 2], t[:, 3], t[:, 4], t[:, 5], t[:, 6],
                       t[:, 7:9].copy(), t[:, 9], t[:, 10], t[:, 11], t[:, 12],
                       np.asarray(status, np.int8), b.value)


#: Per-atom fit columns of :func:`refine_positions` (and of ``Detections``), in order.
FIT_COLUMNS = ("amplitude", "sigma_px", "background", "intensity", "residual", "x_err_px",
               "y_err_px", "amplitude_err", "sigma_err_px", "background_err", "intensity_err",
               "fit_status")


def empty_fit_columns(n: int) -> list[np.ndarray]:
    """Fit columns of ``n`` atoms that were not fitted: NaN, status NONE (float64)."""
    cols = [np.full(n, np.nan) for _ in FIT_COLUMNS]
    cols[-1][:] = float(FitStatus.NONE)
    return cols


def com_radius(sigma_px: float) -> int:
    """Disc radius of the centre-of-mass step of :func:`refine_positions`, px."""
    return max(2, int(round(stable_float(sigma_px) * 1.5)))


def fit_radius(sigma_px: float, factor: float = 2.5) -> int:
    """Half-width of the Gaussian-fit window for atoms of σ ``sigma_px``: ⌈factor·σ⌉ ≥ 2.

    2.5σ (9 px for the 0.1 nm fit σ at 0.0293 nm/px) was the best window for
    the plane background across dose on simulated truth (docs/fit.md): a
    narrower one lets the plane trade off against the atom's tails, a wider
    one takes in more support texture and neighbours."""
    return max(2, int(np.ceil(stable_float(factor * sigma_px))))


def fit_max_shift(min_distance_px: float, sigma_px: float) -> float:
    """How far (px) the fit of :func:`refine_positions` may move from the
    centroid: the NMS distance, and at most the atom's σ. A fit that moved
    further has locked onto a neighbour or the support's texture (on
    ptnc-train the 9-px window let 1 % of atoms move 5–6 px, costing 0.01 in
    held-out F1; docs/fit.md)."""
    return max(min(float(min_distance_px), float(sigma_px)), 1e-9)


def refine_reach(sigma_px: float, fit_radius_px: int, refine: str = "gaussian") -> int:
    """How far (px) the refinement of :func:`refine_positions` reads raw pixels
    around an integer maximum: two centre-of-mass steps (each may move the
    point by up to the disc radius) plus the fit window, plus 2 for rounding.
    Tiled engines need at least this halo to be exact; 0 for ``refine="none"``."""
    if refine == "none":
        return 0
    return 2 * com_radius(sigma_px) + int(fit_radius_px) + 2


def refine_positions(raw, xy0, *, min_distance_px: float, refine: str = "gaussian",
                     fit_radius_px: int = 4, sigma_px: float = 1.5,
                     sigma_bounds: tuple[float, float] | None = None, background: str = "plane",
                     backend: str = "auto"):
    """The detectors' refinement step: centre of mass, then a Gaussian fit on a
    tilted-plane background (:func:`refine_gaussian`; ``background="constant"``
    only for a caller whose downstream model was trained on that fit).

    ``sigma_px`` is the physical atom σ (:data:`FIT_SIGMA_NM` in pixels), not a
    detector's filter width: it sets the centre-of-mass disc
    (:func:`com_radius`), the fit's start and fallback σ and its bounds;
    ``fit_radius_px`` is normally :func:`fit_radius` of it.

    A centroid that moved further than ``min_distance_px`` from its integer
    maximum has wandered onto another feature and is discarded (the integer
    position is kept); a fit moving further than :func:`fit_max_shift` (that
    distance, at most σ) from the centroid is not accepted (:func:`refine_gaussian` falls back to fixed σ, then to the
    centroid). Points are independent, so the result for a point does not
    depend on which other points are refined with it (tiled engines rely on
    this).

    Returns
    -------
    xy : (N, 2) float64
    fit_columns : list of (N,) float64 arrays
        In the order of :data:`FIT_COLUMNS` (``fit_status`` as float: a
        :class:`FitStatus` value; NONE for ``refine`` ≠ "gaussian").
    """
    xy0 = np.asarray(xy0, np.float64).reshape(-1, 2)
    n = len(xy0)
    cols = empty_fit_columns(n)
    xy = xy0
    if n and refine in ("com", "gaussian"):
        xy = refine_com(raw, xy0, radius=com_radius(sigma_px), iterations=2, backend=backend)
        moved = np.hypot(*(xy - xy0).T) > min_distance_px
        xy[moved] = xy0[moved]
    if n and refine == "gaussian":
        fit = refine_gaussian(raw, xy, radius=fit_radius_px, sigma=sigma_px,
                              sigma_bounds=sigma_bounds, max_shift=fit_max_shift(min_distance_px,
                                                                                 sigma_px),
                              background=background, backend=backend)
        xy = fit.xy
        cols = [fit.amplitude, fit.sigma, fit.background, fit.intensity, fit.residual,
                fit.xy_err[:, 0].copy(), fit.xy_err[:, 1].copy(), fit.amplitude_err,
                fit.sigma_err, fit.background_err, fit.intensity_err,
                fit.status.astype(np.float64)]
    return np.asarray(xy, np.float64), cols


# CUDA implementations, by dotted path: imported (with numba.cuda) only when first used.
for _kernel, _fn in ((_maxima_kernel, "local_maxima_cuda"), (_nms_kernel, "nms_cuda"),
                    (_com_kernel, "refine_com_cuda"), (_gauss_kernel, "fit_gaussian_cuda")):
    _kernel.register_path("cuda", f"fastsac._cuda.peaks:{_fn}")
