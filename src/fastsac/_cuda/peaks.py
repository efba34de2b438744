"""numba CUDA kernels for :mod:`fastsac.peaks`: local maxima, NMS, centre-of-mass
and Gaussian least-squares refinement.

Agreement with the numpy references (the specs in :mod:`fastsac.peaks`):

* ``local_maxima``, ``nms``: identical integer output (same indices, same order).
* ``refine_com``: within 1e-9 px (sequential vs numpy's pairwise summation).
* ``fit_gaussian``: same status (free / fixed-σ / centroid / none) and
  parameters and errors within 1e-6 (relative) on well-posed fits, with a
  constant or a tilted-plane background; the Levenberg–Marquardt path,
  fallbacks and error model are the reference's step for step, only the
  7×7 solve (Gaussian elimination with partial pivoting vs LAPACK) and
  summation order differ in rounding.

NMS on the GPU: greedy NMS is sequential by nature. Here every point decides
in parallel rounds: a point is *suppressed* as soon as a higher-priority kept
point lies within the radius and *kept* once every higher-priority point
within the radius is suppressed. Decisions are final, so the result is the
greedy one exactly; the number of rounds is the longest chain of points
closer than the radius with decreasing scores (a handful in micrographs).
Neighbours come from a uniform cell grid (cell ≥ radius, 3×3 cells).
"""

from __future__ import annotations

import functools
import math

import numpy as np

cu = None  # numba.cuda, bound on first use by _kernels()

from . import as_torch, cuda, grid, launch, library, to_lib


# --------------------------------------------------------------------------- cell grid (device)
def cell_grid(xy, cell: float):
    """Sort points (torch (N, 2) float64) by uniform grid cell, on the glue device.

    Returns (perm, cellx, celly, start, nx, ny, cell): ``perm`` sorts points by
    cell; ``cellx/celly`` (int32) are the sorted points' cells; points of cell
    ``c`` are ``perm[start[c]:start[c+1]]``. ``cell`` is enlarged when the grid
    would have far more cells than points.
    """
    import torch

    n = len(xy)
    lo = xy.min(dim=0).values
    hi = xy.max(dim=0).values
    lx, ly, hx, hy = (float(v) for v in torch.cat([lo, hi]).tolist())  # one sync
    ext = (max(hx - lx, 0.0), max(hy - ly, 0.0))
    cell = float(cell)
    max_cells = 4 * n + 1024
    if cell <= 0 or (ext[0] / cell + 1) * (ext[1] / cell + 1) > max_cells:
        cell = max(cell, math.sqrt((ext[0] + 1e-9) * (ext[1] + 1e-9) / max(n, 1)),
                   max(ext[0], ext[1], 1e-9) / 1e4, 1e-9)
    nx = int(ext[0] / cell) + 1
    ny = int(ext[1] / cell) + 1
    cx = ((xy[:, 0] - lx) / cell).to(torch.int64).clamp_(0, nx - 1)
    cy = ((xy[:, 1] - ly) / cell).to(torch.int64).clamp_(0, ny - 1)
    cid = cy * nx + cx
    perm = torch.sort(cid, stable=True).indices
    start = torch.zeros(nx * ny + 1, dtype=torch.int64, device=xy.device)
    start[1:] = torch.cumsum(torch.bincount(cid, minlength=nx * ny), 0)
    return (perm, cx[perm].to(torch.int32).contiguous(), cy[perm].to(torch.int32).contiguous(),
            start, nx, ny, cell)


# --------------------------------------------------------------------------- kernels
@functools.lru_cache(maxsize=None)
def _kernels():
    # Kernels must see numba.cuda as a module global (the simulator swaps globals).
    global cu
    cu = cuda()

    @cu.jit
    def maxima_mask(img, thr, radius, border, mask):
        y, x = cu.grid(2)
        h, w = img.shape
        if y >= h or x >= w:
            return
        mask[y, x] = 0
        v = img[y, x]
        if math.isnan(v) or math.isinf(v) or not (v > thr):
            return
        if y < border or x < border or y >= h - border or x >= w - border:
            return
        for yy in range(max(y - radius, 0), min(y + radius + 1, h)):
            for xx in range(max(x - radius, 0), min(x + radius + 1, w)):
                u = img[yy, xx]
                if not (math.isnan(u) or math.isinf(u)) and u > v:
                    return
        mask[y, x] = 1

    @cu.jit
    def nms_round(xs, ys, rank, status, cellx, celly, start, nx, ny, k, r2, remaining):
        i = cu.grid(1)
        n = xs.shape[0]
        if i >= n or status[i] != 0:
            return
        decided = True
        cxi, cyi = cellx[i], celly[i]
        for gy in range(max(cyi - k, 0), min(cyi + k, ny - 1) + 1):
            for gx in range(max(cxi - k, 0), min(cxi + k, nx - 1) + 1):
                c = gy * nx + gx
                for j in range(start[c], start[c + 1]):
                    if rank[j] < rank[i]:
                        dx = xs[j] - xs[i]
                        dy = ys[j] - ys[i]
                        if dx * dx + dy * dy <= r2:
                            s = status[j]
                            if s == 1:
                                status[i] = 2
                                return
                            if s == 0:
                                decided = False
        if decided:
            status[i] = 1
        else:
            cu.atomic.add(remaining, 0, 1)

    @cu.jit
    def com(img, img_idx, xy, radius, iterations):
        i = cu.grid(1)
        if i >= xy.shape[0]:
            return
        b = img_idx[i]
        h, w = img.shape[1], img.shape[2]
        x = xy[i, 0]
        y = xy[i, 1]
        r2 = radius * radius
        for _ in range(iterations):
            xi = min(max(int(math.floor(x + 0.5)), 0), w - 1)
            yi = min(max(int(math.floor(y + 0.5)), 0), h - 1)
            y_lo, y_hi = max(yi - radius, 0), min(yi + radius + 1, h)
            x_lo, x_hi = max(xi - radius, 0), min(xi + radius + 1, w)
            vmin = math.inf
            found = False
            for yy in range(y_lo, y_hi):
                for xx in range(x_lo, x_hi):
                    if (xx - xi) * (xx - xi) + (yy - yi) * (yy - yi) <= r2:
                        v = float(img[b, yy, xx])
                        if not (math.isnan(v) or math.isinf(v)):
                            found = True
                            vmin = min(vmin, v)
            if not found:
                break
            tot = 0.0
            sx = 0.0
            sy = 0.0
            for yy in range(y_lo, y_hi):
                for xx in range(x_lo, x_hi):
                    if (xx - xi) * (xx - xi) + (yy - yi) * (yy - yi) <= r2:
                        v = float(img[b, yy, xx])
                        if not (math.isnan(v) or math.isinf(v)):
                            wgt = v - vmin
                            tot += wgt
                            sx += wgt * xx
                            sy += wgt * yy
            if tot <= 0:
                break
            x = sx / tot
            y = sy / tot
        xy[i, 0] = x
        xy[i, 1] = y

    # Fit parameters p = [x, y, A, σ, b, bx, by] (peaks._free_params order);
    # the background plane b + bx (X − xc) + by (Y − yc) is around the
    # window's centre pixel. Small systems are solved in M (7, 8): the
    # right-hand side in column 7.
    @cu.jit(device=True)
    def g_cost(img, b, y_lo, y_hi, x_lo, x_hi, p, xc, yc):
        c = 0.0
        inv = 1.0 / (2.0 * p[3] * p[3])
        for yy in range(y_lo, y_hi):
            for xx in range(x_lo, x_hi):
                v = float(img[b, yy, xx])
                if math.isnan(v) or math.isinf(v):
                    continue
                r2 = (xx - p[0]) * (xx - p[0]) + (yy - p[1]) * (yy - p[1])
                r = p[4] + p[5] * (xx - xc) + p[6] * (yy - yc) + p[2] * math.exp(-r2 * inv) - v
                c += r * r
        return c

    @cu.jit(device=True)
    def f_solve(M, n, x):
        # Solve M[:n, :n] x = M[:n, 7] by Gaussian elimination with partial pivoting.
        for col in range(n):
            piv = col
            best = abs(M[col, col])
            for rr in range(col + 1, n):
                if abs(M[rr, col]) > best:
                    best = abs(M[rr, col])
                    piv = rr
            if best == 0.0:
                return False
            if piv != col:
                for cc in range(8):
                    tmp = M[col, cc]
                    M[col, cc] = M[piv, cc]
                    M[piv, cc] = tmp
            for rr in range(col + 1, n):
                f = M[rr, col] / M[col, col]
                for cc in range(col, n):
                    M[rr, cc] -= f * M[col, cc]
                M[rr, 7] -= f * M[col, 7]
        for a in range(n - 1, -1, -1):
            acc = M[a, 7]
            for cc in range(a + 1, n):
                acc -= M[a, cc] * x[cc]
            x[a] = acc / M[a, a]
        return True

    @cu.jit(device=True)
    def f_free(fit_sigma, plane, idx):
        # Fitted parameter indices (peaks._free_params) into idx; returns their count.
        n = 0
        for a in range(7):
            if (a == 3 and not fit_sigma) or (a >= 5 and not plane):
                continue
            idx[n] = a
            n += 1
        return n

    @cu.jit(device=True)
    def f_jac(xx, yy, p, xc, yc, g, r2, s2, idx, np_, jr):
        # Jacobian row of the fitted parameters (peaks._jacobian columns idx[:np_]).
        for a in range(np_):
            k = idx[a]
            if k == 0:
                jr[a] = p[2] * g * (xx - p[0]) / s2
            elif k == 1:
                jr[a] = p[2] * g * (yy - p[1]) / s2
            elif k == 2:
                jr[a] = g
            elif k == 3:
                jr[a] = p[2] * g * r2 / (s2 * p[3])
            elif k == 4:
                jr[a] = 1.0
            elif k == 5:
                jr[a] = xx - xc
            else:
                jr[a] = yy - yc

    @cu.jit(device=True)
    def f_lm(img, b, y_lo, y_hi, x_lo, x_hi, p, fit_sigma, plane, xc, yc, s_lo, s_hi, max_iter,
             cost0, A, M, gr, jr, pn, idx):
        # Levenberg–Marquardt as peaks._lm; p updated in place. Returns (ok, cost).
        np_ = f_free(fit_sigma, plane, idx)
        lam = 1e-3
        cost = cost0
        rel = 0.0
        pinned = 0
        for _ in range(max_iter):
            s2 = p[3] * p[3]
            for a in range(7):
                gr[a] = 0.0
                for c in range(7):
                    A[a, c] = 0.0
            for yy in range(y_lo, y_hi):
                for xx in range(x_lo, x_hi):
                    v = float(img[b, yy, xx])
                    if math.isnan(v) or math.isinf(v):
                        continue
                    r2 = (xx - p[0]) * (xx - p[0]) + (yy - p[1]) * (yy - p[1])
                    g = math.exp(-r2 / (2 * s2))
                    res = p[4] + p[5] * (xx - xc) + p[6] * (yy - yc) + p[2] * g - v
                    f_jac(xx, yy, p, xc, yc, g, r2, s2, idx, np_, jr)
                    for a in range(np_):
                        gr[a] += jr[a] * res
                        for c in range(np_):
                            A[a, c] += jr[a] * jr[c]
            step_taken = False
            while lam < 1e10:
                for a in range(np_):
                    for c in range(np_):
                        M[a, c] = A[a, c]
                    M[a, a] += lam * (A[a, a] + 1e-12)
                    M[a, 7] = gr[a]
                if not f_solve(M, np_, jr):
                    lam *= 10
                    continue
                for a in range(7):
                    pn[a] = p[a]
                for a in range(np_):
                    pn[idx[a]] -= jr[a]
                if fit_sigma:
                    pn[3] = min(max(abs(pn[3]), s_lo), s_hi)
                cn = g_cost(img, b, y_lo, y_hi, x_lo, x_hi, pn, xc, yc)
                if cn < cost:
                    rel = (cost - cn) / max(cost, 1e-300)
                    for a in range(7):
                        p[a] = pn[a]
                    cost = cn
                    lam = max(lam / 10, 1e-7)
                    step_taken = True
                    if fit_sigma and (p[3] == s_lo or p[3] == s_hi):
                        pinned += 1
                    else:
                        pinned = 0
                    break
                lam *= 10
            if pinned >= 3:
                return False, cost
            if not step_taken or rel < 1e-9:
                return True, cost
        return False, cost

    @cu.jit(device=True)
    def f_errors(img, b, y_lo, y_hi, x_lo, x_hi, p, fit_sigma, plane, xc, yc, H, B, M, Hi, jr,
                 x, idx, errs):
        # Standard errors as peaks._fit_errors: errs[0:7] (x, y, A, σ, b, bx, by),
        # errs[7] intensity, errs[8] background at the fitted centre.
        for a in range(9):
            errs[a] = math.nan
        np_ = f_free(fit_sigma, plane, idx)
        s2 = p[3] * p[3]
        m = 0
        sg = 0.0
        sgg = 0.0
        sq = 0.0
        sgq = 0.0
        for yy in range(y_lo, y_hi):
            for xx in range(x_lo, x_hi):
                v = float(img[b, yy, xx])
                if math.isnan(v) or math.isinf(v):
                    continue
                g = math.exp(-((xx - p[0]) * (xx - p[0]) + (yy - p[1]) * (yy - p[1])) / (2 * s2))
                r = p[4] + p[5] * (xx - xc) + p[6] * (yy - yc) + p[2] * g - v
                m += 1
                sg += g
                sgg += g * g
                sq += r * r
                sgq += g * r * r
        det = m * sgg - sg * sg
        if det > 1e-12 * m * max(sgg, 1e-300):
            c0 = (sgg * sq - sg * sgq) / det
            c1 = (m * sgq - sg * sq) / det
            if not (c0 >= 0 and c1 >= 0):
                if c1 < 0:
                    c0 = sq / m
                    c1 = 0.0
                else:
                    c0 = 0.0
                    c1 = sgq / sgg if sgg > 0 else 0.0
        else:
            c0 = sq / m
            c1 = 0.0
        dof = m / max(m - np_, 1)
        for a in range(7):
            for c in range(7):
                H[a, c] = 0.0
                B[a, c] = 0.0
        for yy in range(y_lo, y_hi):
            for xx in range(x_lo, x_hi):
                v = float(img[b, yy, xx])
                if math.isnan(v) or math.isinf(v):
                    continue
                r2 = (xx - p[0]) * (xx - p[0]) + (yy - p[1]) * (yy - p[1])
                g = math.exp(-r2 / (2 * s2))
                f_jac(xx, yy, p, xc, yc, g, r2, s2, idx, np_, jr)
                var = (c0 + c1 * g) * dof
                for a in range(np_):
                    for c in range(np_):
                        H[a, c] += jr[a] * jr[c]
                        B[a, c] += jr[a] * jr[c] * var
        for col in range(np_):
            for a in range(np_):
                for c in range(np_):
                    M[a, c] = H[a, c]
                M[a, 7] = 1.0 if a == col else 0.0
            if not f_solve(M, np_, x):
                return
            for a in range(np_):
                Hi[a, col] = x[a]
        # C = Hi B Hi (reuse M for Hi B, H for C)
        for a in range(np_):
            for c in range(np_):
                acc = 0.0
                for k in range(np_):
                    acc += Hi[a, k] * B[k, c]
                M[a, c] = acc
        for a in range(np_):
            for c in range(np_):
                acc = 0.0
                for k in range(np_):
                    acc += M[a, k] * Hi[k, c]
                H[a, c] = acc
        for a in range(np_):
            errs[idx[a]] = math.sqrt(max(H[a, a], 0.0))
        # gradients of the intensity 2πAσ² (jr) and of the background at the centre (x)
        for a in range(np_):
            k = idx[a]
            jr[a] = 0.0
            x[a] = 0.0
            if k == 2:
                jr[a] = 2 * math.pi * p[3] * p[3]
            elif k == 3:
                jr[a] = 4 * math.pi * p[2] * p[3]
            elif k == 4:
                x[a] = 1.0
            elif k == 5:
                x[a] = p[0] - xc
            elif k == 6:
                x[a] = p[1] - yc
        vi = 0.0
        vb = 0.0
        for a in range(np_):
            for c in range(np_):
                vi += jr[a] * H[a, c] * jr[c]
                vb += x[a] * H[a, c] * x[c]
        errs[7] = math.sqrt(max(vi, 0.0))
        errs[8] = math.sqrt(max(vb, 0.0))

    @cu.jit(device=True)
    def f_linear(img, b, y_lo, y_hi, x_lo, x_hi, x0, y0, sigma0, plane, contrast, xc, yc, M,
                 sol, lin):
        # peaks._linear_amplitude: lin[2] = A, lin[4:7] = b, bx, by.
        lin[5] = 0.0
        lin[6] = 0.0
        if not contrast:  # a constant window: exactly no spot and no slope
            lin[2] = 0.0
            for yy in range(y_lo, y_hi):
                for xx in range(x_lo, x_hi):
                    v = float(img[b, yy, xx])
                    if not (math.isnan(v) or math.isinf(v)):
                        lin[4] = v
                        return
        npx = 0
        sg = 0.0
        sgg = 0.0
        sv = 0.0
        sgv = 0.0
        for yy in range(y_lo, y_hi):
            for xx in range(x_lo, x_hi):
                v = float(img[b, yy, xx])
                if not (math.isnan(v) or math.isinf(v)):
                    npx += 1
                    g = math.exp(-((xx - x0) * (xx - x0) + (yy - y0) * (yy - y0))
                                 / (2 * sigma0 * sigma0))
                    sg += g
                    sgg += g * g
                    sv += v
                    sgv += g * v
        det = npx * sgg - sg * sg
        degenerate = not (det > 1e-12 * npx * max(sgg, 1e-300))
        if not plane:
            if not degenerate:
                lin[2] = (npx * sgv - sg * sv) / det
                lin[4] = (sgg * sv - sg * sgv) / det
            else:
                lin[2] = 0.0
                lin[4] = sv / npx
            return
        off = 1 if degenerate else 0
        n = 4 - off
        for a in range(7):
            for c in range(8):
                M[a, c] = 0.0
        for yy in range(y_lo, y_hi):
            for xx in range(x_lo, x_hi):
                v = float(img[b, yy, xx])
                if math.isnan(v) or math.isinf(v):
                    continue
                g = math.exp(-((xx - x0) * (xx - x0) + (yy - y0) * (yy - y0))
                             / (2 * sigma0 * sigma0))
                for a in range(n):
                    ka = a + off
                    pa = g if ka == 0 else (1.0 if ka == 1 else (xx - xc if ka == 2 else yy - yc))
                    M[a, 7] += pa * v
                    for c in range(n):
                        kc = c + off
                        pc = g if kc == 0 else (1.0 if kc == 1 else (xx - xc if kc == 2
                                                                    else yy - yc))
                        M[a, c] += pa * pc
        if not f_solve(M, n, sol):
            lin[2] = 0.0
            lin[4] = sv / npx
            return
        lin[2] = 0.0 if degenerate else sol[0]
        lin[4] = sol[1 - off]
        lin[5] = sol[2 - off]
        lin[6] = sol[3 - off]

    @cu.jit
    def fit(img, img_idx, xy, radius, sigma0, s_lo, s_hi, max_shift, max_iter, plane, out,
            status):
        i = cu.grid(1)
        if i >= xy.shape[0]:
            return
        b = img_idx[i]
        h, w = img.shape[1], img.shape[2]
        x0 = xy[i, 0]
        y0 = xy[i, 1]
        for k in range(13):
            out[i, k] = math.nan
        out[i, 0] = x0
        out[i, 1] = y0
        status[i] = 3
        xi = min(max(int(math.floor(x0 + 0.5)), 0), w - 1)
        yi = min(max(int(math.floor(y0 + 0.5)), 0), h - 1)
        y_lo, y_hi = max(yi - radius, 0), min(yi + radius + 1, h)
        x_lo, x_hi = max(xi - radius, 0), min(xi + radius + 1, w)
        npx = 0
        vmin = math.inf
        vmax = -math.inf
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        syy = 0.0
        sxy = 0.0
        for yy in range(y_lo, y_hi):
            for xx in range(x_lo, x_hi):
                v = float(img[b, yy, xx])
                if not (math.isnan(v) or math.isinf(v)):
                    npx += 1
                    vmin = min(vmin, v)
                    vmax = max(vmax, v)
                    sx += xx
                    sy += yy
                    sxx += xx * xx
                    syy += yy * yy
                    sxy += xx * yy
        if npx < 6:
            return
        # peaks._plane_determined: no plane over collinear pixels
        vx = npx * sxx - sx * sx
        vy = npx * syy - sy * sy
        cxy = npx * sxy - sx * sy
        tilt = plane and vx * vy - cxy * cxy > 0
        xc = float(xi)
        yc = float(yi)
        p = cu.local.array(7, np.float64)
        pn = cu.local.array(7, np.float64)
        lin = cu.local.array(7, np.float64)
        A = cu.local.array((7, 7), np.float64)
        B = cu.local.array((7, 7), np.float64)
        Hi = cu.local.array((7, 7), np.float64)
        M = cu.local.array((7, 8), np.float64)
        gr = cu.local.array(7, np.float64)
        jr = cu.local.array(7, np.float64)
        idx = cu.local.array(7, np.int64)
        errs = cu.local.array(9, np.float64)
        f_linear(img, b, y_lo, y_hi, x_lo, x_hi, x0, y0, sigma0, tilt, vmax > vmin, xc, yc, M,
                 gr, lin)
        lin[0] = x0
        lin[1] = y0
        lin[3] = sigma0
        a0 = max(lin[2], 1e-3 * (vmax - vmin), 1e-12)
        for k in range(7):
            p[k] = lin[k]
        p[2] = a0
        c_start = g_cost(img, b, y_lo, y_hi, x_lo, x_hi, p, xc, yc)
        ok, cost = f_lm(img, b, y_lo, y_hi, x_lo, x_hi, p, True, tilt, xc, yc, s_lo, s_hi,
                        max_iter, c_start, A, M, gr, jr, pn, idx)
        inside = abs(p[0] - xi) <= radius and abs(p[1] - yi) <= radius
        near = (p[0] - x0) ** 2 + (p[1] - y0) ** 2 <= max_shift * max_shift
        st = 0
        contrast = vmax > vmin
        if not (ok and inside and near and p[2] > 0 and contrast and s_lo < p[3] and p[3] < s_hi):
            for k in range(7):
                p[k] = lin[k]
            p[2] = a0
            ok, cost = f_lm(img, b, y_lo, y_hi, x_lo, x_hi, p, False, tilt, xc, yc, s_lo, s_hi,
                            max_iter, c_start, A, M, gr, jr, pn, idx)
            inside = abs(p[0] - xi) <= radius and abs(p[1] - yi) <= radius
            near = (p[0] - x0) ** 2 + (p[1] - y0) ** 2 <= max_shift * max_shift
            st = 1
            if not (ok and inside and near and p[2] > 0 and contrast):
                st = 2
                for k in range(7):
                    p[k] = lin[k]
                cost = g_cost(img, b, y_lo, y_hi, x_lo, x_hi, p, xc, yc)
        f_errors(img, b, y_lo, y_hi, x_lo, x_hi, p, st == 0, tilt, xc, yc, A, B, M, Hi, jr, gr,
                 idx, errs)
        out[i, 0] = p[0]
        out[i, 1] = p[1]
        out[i, 2] = p[2]
        out[i, 3] = p[3]
        out[i, 4] = p[4] + p[5] * (p[0] - xc) + p[6] * (p[1] - yc)
        out[i, 5] = 2 * math.pi * p[2] * p[3] * p[3]
        out[i, 6] = math.sqrt(cost / npx)
        for k in range(4):
            out[i, 7 + k] = errs[k]
        out[i, 11] = errs[8]
        out[i, 12] = errs[7]
        status[i] = st

    return {"maxima_mask": maxima_mask, "nms_round": nms_round, "com": com, "fit": fit}


# --------------------------------------------------------------------------- wrappers
def local_maxima_cuda(image, threshold, radius, exclude_border):
    """CUDA ``local_maxima``: same candidates, row-major order. Host input →
    numpy tables; device input (torch/cupy/numba) → tables on the device."""
    import torch

    lib = library(image)
    img = as_torch(image, np.float32)
    h, w = img.shape
    mask = torch.empty((h, w), dtype=torch.uint8, device=img.device)
    launch(_kernels()["maxima_mask"], ((h + 15) // 16, (w + 15) // 16), (16, 16),
           (img, np.float32(threshold), int(radius), int(exclude_border), mask), writes=(4,))
    rows, cols = torch.nonzero(mask, as_tuple=True)  # row-major, like np.nonzero
    xy = torch.stack([cols, rows], dim=1).to(torch.int64)
    return to_lib(xy, lib), to_lib(img[rows, cols].contiguous(), lib)


def nms_cuda(xy, scores, radius):
    """CUDA ``nms``: identical kept indices and order to the numpy reference."""
    import torch

    lib = library(xy)
    pts = as_torch(xy, np.float64).reshape(-1, 2)
    s = as_torch(scores, np.float64).reshape(-1)
    dev = pts.device
    n = len(s)
    fin = torch.nonzero(torch.isfinite(s)).flatten()
    if len(fin) == 0:
        return to_lib(torch.zeros(0, dtype=torch.int64, device=dev), lib)
    # Visiting order: descending score, ties by lower index (stable sort of an ascending index).
    order = fin[torch.sort(-s[fin], stable=True).indices]
    rank_all = torch.empty(n, dtype=torch.int64, device=dev)
    rank_all[order] = torch.arange(len(order), device=dev)
    p = pts[fin]
    r = float(radius)
    # Cell slightly larger than r: neighbours within r are then always in the 3×3 cells,
    # whatever the rounding of the cell coordinates.
    perm, cx, cy, start, nx, ny, _ = cell_grid(p, r * (1 + 1e-12) if r > 0 else 1.0)
    kring = 1 if r > 0 else 0  # cell ≥ r: the 3×3 block (the own cell when r = 0)
    idx = fin[perm]
    xs, ys = p[perm, 0].contiguous(), p[perm, 1].contiguous()
    rank = rank_all[idx].contiguous()
    status = torch.zeros(len(idx), dtype=torch.int8, device=dev)
    remaining = torch.zeros(1, dtype=torch.int64, device=dev)
    kern = _kernels()["nms_round"]
    g = grid(len(idx))
    args = (xs, ys, rank, status, cx, cy, start, nx, ny, kring, r * r, remaining)
    if dev.type == "cuda":  # convert once; two rounds per host check (rounds are cheap)
        cu = cuda()
        dargs = [cu.as_cuda_array(a) if isinstance(a, torch.Tensor) else a for a in args]
        while True:
            remaining.zero_()
            kern[g[0], g[1]](*dargs)
            kern[g[0], g[1]](*dargs)
            if int(remaining.item()) == 0:
                break
    else:
        while True:
            remaining.zero_()
            launch(kern, g[0], g[1], args, writes=(3, 11))
            if int(remaining.item()) == 0:
                break
    kept = idx[status == 1]
    kept = kept[torch.sort(rank_all[kept]).indices]
    return to_lib(kept, lib)


_ZEROS: dict = {}


def _zero_index(n: int, device):
    """(n,) int64 zeros on ``device`` without a fresh allocation per call (a slice
    of a cached, growing buffer): the single-image case of the stacked kernels."""
    import torch

    key = str(device)
    buf = _ZEROS.get(key)
    if buf is None or len(buf) < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int64, device=device)
        _ZEROS[key] = buf
    return buf[:n]


def _stack3(image):
    t = as_torch(image, np.float32)
    return t.reshape((1,) + tuple(t.shape)) if t.ndim == 2 else t


def refine_com_cuda(image, xy, radius, iterations, *, img_idx=None):
    """CUDA ``refine_com``; ``image`` may be a (B, H, W) stack with ``img_idx`` (N,)."""

    lib = library(xy)
    img = _stack3(image)
    pts = as_torch(xy, np.float64).reshape(-1, 2).clone()  # in place on a copy
    n = len(pts)
    ii = (_zero_index(n, pts.device) if img_idx is None
          else as_torch(img_idx, np.int64))
    if n:
        g = grid(n)
        launch(_kernels()["com"], g[0], g[1], (img, ii, pts, int(radius), int(iterations)),
               writes=(2,))
    return to_lib(pts, lib)


def fit_gaussian_cuda(image, xy, radius, sigma, sigma_lo, sigma_hi, max_shift, max_iter,
                      plane=False, *, img_idx=None):
    """CUDA ``fit_gaussian``: (table (N, 13), status (N,) int8) like the reference."""
    import torch

    lib = library(xy)
    img = _stack3(image)
    pts = as_torch(xy, np.float64).reshape(-1, 2)
    n = len(pts)
    dev = pts.device
    ii = (_zero_index(n, dev) if img_idx is None
          else as_torch(img_idx, np.int64))
    out = torch.empty((n, 13), dtype=torch.float64, device=dev)
    status = torch.empty(n, dtype=torch.int8, device=dev)
    if n:
        g = grid(n, 64)
        launch(_kernels()["fit"], g[0], g[1],
               (img, ii, pts, int(radius), float(sigma), float(sigma_lo), float(sigma_hi),
                float(max_shift), int(max_iter), bool(plane), out, status), writes=(10, 11))
    return to_lib(out, lib), to_lib(status, lib)




# --------------------------------------------------------------------------- engine helper
def detect_batch(s, raw, lims, *, threshold, min_distance_px, refine, fit_radius_px,
                 sigma_px, com_radius, sigma_bounds, max_shift, n_fit_columns, no_fit_status):
    """Peaks of a batch of score windows on the GPU; nothing leaves the device.

    Parameters
    ----------
    s : (n, h, w) float32 torch tensor
        Score windows (CUDA; CPU works for tests under the simulator).
    raw : (n, h, w) float32 torch tensor or None
        Raw windows for refinement.
    lims : list of (y0, y1, x0, x1)
        Owned core of each window in window coordinates.

    Returns
    -------
    tuple of torch tensors (window, xy0, score, xy, *fit columns)
        Fit columns as :data:`fastsac.peaks.FIT_COLUMNS` (status as float64).
        Candidates owned by the cores, before NMS, on the tensors' device, in
        *window* coordinates (``window`` indexes the batch); refinement as in
        :func:`fastsac.detectors.postprocess_scores`.
    """
    import torch
    import torch.nn.functional as F

    n, h, w = s.shape
    dev = s.device
    fin = torch.isfinite(s)
    s2 = torch.where(fin, s, torch.full_like(s, -math.inf))
    mp = F.max_pool2d(s2[:, None], 3, stride=1, padding=1)[:, 0]
    # Core masks by slicing (no host-to-device copy: a pageable copy would
    # synchronise the stream and stall the pipeline).
    core = torch.zeros((n, h, w), dtype=torch.bool, device=dev)
    for j, (y0, y1, x0, x1) in enumerate(lims):
        core[j, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    mask = (s2 >= mp) & (s > threshold) & fin & core
    b, yy, xx = torch.nonzero(mask, as_tuple=True)
    vals = s[b, yy, xx].to(torch.float64)
    xy0 = torch.stack([xx, yy], 1).to(torch.float64)
    m = len(b)
    nanc = [torch.full((m,), math.nan, dtype=torch.float64, device=dev)
            for _ in range(int(n_fit_columns) - 1)]
    nanc.append(torch.full((m,), float(no_fit_status), dtype=torch.float64, device=dev))
    if m == 0 or refine == "none":
        return (b, xy0, vals, xy0, *nanc)
    k = _kernels()
    img = raw.to(torch.float32).contiguous()
    xy = xy0.clone()
    g = grid(m)
    launch(k["com"], g[0], g[1], (img, b, xy, int(com_radius), 2), writes=(2,))
    moved = torch.hypot(*(xy - xy0).T) > min_distance_px
    xy = torch.where(moved[:, None], xy0, xy)
    if refine == "gaussian":
        # As peaks.refine_positions: the fit may move at most max_shift
        # (peaks.fit_max_shift); the background is the tilted plane.
        lo, hi = (float(v) for v in sigma_bounds)
        out = torch.empty((m, 13), dtype=torch.float64, device=dev)
        status = torch.empty(m, dtype=torch.int8, device=dev)
        g = grid(m, 64)
        launch(k["fit"], g[0], g[1], (img, b, xy.contiguous(), int(fit_radius_px),
                                      float(sigma_px), lo, hi, float(max_shift),
                                      50, True, out, status), writes=(10, 11))
        xy = out[:, :2].contiguous()
        nanc = [out[:, c].contiguous() for c in range(2, 13)] + [status.to(torch.float64)]
    return (b, xy0, vals, xy, *nanc)
