// Per-atom Gaussian fit with fallbacks and standard errors: the C++ version of
// peaks._fit_gaussian_numpy_ref (the spec; same start, damping, acceptance
// and fallback rules). Where it is fast (issue 17):
//  * fixed layout: the window's finite pixels are packed into x, y, v arrays
//    padded to a multiple of 4 with zero-weight pixels, so every pass is a
//    branch-free loop over 4-pixel vectors (AVX2 clone + SSE2 baseline);
//  * analytic Jacobian and J^T J / J^T r / cost accumulated in one pass;
//  * a vector exp (Cody-Waite reduction + degree-12 Taylor by Estrin's scheme,
//    ~1 ulp on the model's range x <= 0) instead of the scalar libm call;
//  * a linear least-squares start for (A, b) at the nominal sigma, so
//    Levenberg-Marquardt starts next to the optimum (~4-6 iterations);
//  * OpenMP over atoms.
#include "common.hpp"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace py = pybind11;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTSAC_FIT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTSAC_FIT_CLONES
#endif

namespace fastsac {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kPi = 3.141592653589793;
constexpr int kLanes = 4;
constexpr int kCols = 13;  // peaks.FIT_TABLE
enum Status : int8_t { kFree = 0, kFixedSigma = 1, kCentroid = 2, kNone = 3 };

// Packed window: m finite pixels, padded to mp (multiple of kLanes) with w = 0.
struct Window {
    std::vector<double> x, y, v, w;
    int64_t m = 0, mp = 0;
    double xc = 0, yc = 0;  // centre pixel: origin of the background plane
};

// Sums of one pass at parameters p = (x, y, A, sigma, b, bx, by): cost = sum r^2,
// and when `jac`: H = J^T J (np x np) and grad = J^T r for the np fitted
// columns (x, y, A, [sigma], b, [bx, by]).
constexpr int kParams = 7;
struct Pass {
    double cost;
    double H[kParams][kParams];
    double grad[kParams];
};

// Four pixels at a time in GCC/Clang vector extensions: AVX2 registers in
// the avx2 clone, two SSE2 registers in the baseline one. (Auto-vectorising
// the scalar loop left the exp polynomial scalar and latency-bound.)
typedef double v4d __attribute__((vector_size(32)));
typedef long long v4i __attribute__((vector_size(32)));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector helpers are always inlined: no vector ABI crosses a call

__attribute__((always_inline)) inline v4d load4(const double* a) {
    v4d v;
    __builtin_memcpy(&v, a, sizeof v);  // unaligned vector load, no aliasing questions
    return v;
}

__attribute__((always_inline)) inline v4d exp4_nonpos(v4d x) {
    const v4d lo = {-700.0, -700.0, -700.0, -700.0};
    x = x < lo ? lo : x;
    const double kShift = 6755399441055744.0;
    const v4d t = x * 1.4426950408889634 + kShift;
    const v4d n = t - kShift;
    const v4d r = (x - n * 0.6931471805599453) - n * 2.3190468138462996e-17;
    // exp(r) = sum r^i / i!, i = 0..12, by Estrin's scheme: a dependency chain
    // of depth ~8 instead of Horner's 24, so the pass is not latency-bound.
    const v4d r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const v4d q0 = 1.0 + r, q1 = 0.5 + r * (1.0 / 6.0), q2 = (1.0 / 24.0) + r * (1.0 / 120.0),
              q3 = (1.0 / 720.0) + r * (1.0 / 5040.0), q4 = (1.0 / 40320.0) + r * (1.0 / 362880.0),
              q5 = (1.0 / 3628800.0) + r * (1.0 / 39916800.0);
    const v4d s0 = q0 + q1 * r2, s1 = q2 + q3 * r2, s2 = q4 + q5 * r2;
    const v4d t0 = s0 + s1 * r4, t1 = s2 + r4 * (1.0 / 479001600.0);
    const v4d p = t0 + t1 * r8;
    // 2^n from the integer in t's low mantissa bits (vector casts reinterpret the bits).
    const v4i sb = ((v4i)t - 0x4338000000000000LL + 1023) << 52;
    return p * (v4d)sb;
}

__attribute__((always_inline)) inline double hsum(v4d a) { return (a[0] + a[1]) + (a[2] + a[3]); }

// Model background b + bx (x - xc) + by (y - yc) (Plane) or b.
template <bool Plane>
__attribute__((always_inline)) inline v4d background4(const double* p, v4d dxc, v4d dyc) {
    if constexpr (Plane) return p[4] + p[5] * dxc + p[6] * dyc;
    else return (v4d){p[4], p[4], p[4], p[4]};
}

template <bool Plane>
FASTSAC_FIT_CLONES
double cost_pass(const double* __restrict xs, const double* __restrict ys,
                 const double* __restrict vs, const double* __restrict ws, int64_t mp,
                 const double* p, double xc, double yc) {
    const double px = p[0], py = p[1], A = p[2];
    const double c = -1.0 / (2.0 * p[3] * p[3]);
    v4d cost = {};
    for (int64_t k = 0; k < mp; k += kLanes) {
        const v4d x = load4(xs + k), y = load4(ys + k);
        const v4d dx = x - px;
        const v4d dy = y - py;
        const v4d g = exp4_nonpos((dx * dx + dy * dy) * c);
        const v4d r = (background4<Plane>(p, x - xc, y - yc) + A * g - load4(vs + k)) *
                      load4(ws + k);
        cost += r * r;
    }
    return hsum(cost);
}

// J^T J, J^T r and the cost in one pass, four pixels at a time. Columns in
// the order x, y, A, [sigma if FitSigma], b, [bx, by if Plane].
template <bool FitSigma, bool Plane>
FASTSAC_FIT_CLONES
void jac_pass(const double* __restrict xs, const double* __restrict ys,
              const double* __restrict vs, const double* __restrict ws, int64_t mp,
              const double* p, double xc, double yc, Pass& out) {
    constexpr int NP = 4 + (FitSigma ? 1 : 0) + (Plane ? 2 : 0);
    constexpr int kB = FitSigma ? 4 : 3;  // column of b
    const double px = p[0], py = p[1], A = p[2], s = p[3];
    const double c = -1.0 / (2.0 * s * s), is2 = 1.0 / (s * s), is3 = is2 / s;
    v4d h[NP][NP] = {};
    v4d gs[NP] = {};
    v4d cs = {};
    for (int64_t k = 0; k < mp; k += kLanes) {
        const v4d wk = load4(ws + k);
        const v4d x = load4(xs + k), y = load4(ys + k);
        const v4d dx = x - px;
        const v4d dy = y - py;
        const v4d r2 = dx * dx + dy * dy;
        const v4d e = exp4_nonpos(r2 * c);
        const v4d dxc = x - xc, dyc = y - yc;
        const v4d r = (background4<Plane>(p, dxc, dyc) + A * e - load4(vs + k)) * wk;  // padded: 0
        const v4d g = e * wk;
        const v4d ag = A * g;
        v4d j[NP];
        j[0] = ag * dx * is2;
        j[1] = ag * dy * is2;
        j[2] = g;
        if constexpr (FitSigma) j[3] = ag * r2 * is3;
        j[kB] = wk;
        if constexpr (Plane) {
            j[kB + 1] = dxc * wk;
            j[kB + 2] = dyc * wk;
        }
#pragma GCC unroll 8
        for (int a = 0; a < NP; ++a) {
            gs[a] += j[a] * r;
#pragma GCC unroll 8
            for (int q = a; q < NP; ++q) h[a][q] += j[a] * j[q];
        }
        cs += r * r;
    }
    for (int a = 0; a < NP; ++a) {
        out.grad[a] = hsum(gs[a]);
        for (int q = a; q < NP; ++q) out.H[a][q] = out.H[q][a] = hsum(h[a][q]);
    }
    out.cost = hsum(cs);
}


// g[k] = w[k] exp(-((x-x0)^2 + (y-y0)^2) / 2 sigma^2) over the padded window.
FASTSAC_FIT_CLONES
void gauss_profile(const double* __restrict xs, const double* __restrict ys,
                   const double* __restrict ws, int64_t mp, double x0, double y0, double sigma,
                   double* __restrict g) {
    const double c = -1.0 / (2.0 * sigma * sigma);
    for (int64_t k = 0; k < mp; k += kLanes) {
        const v4d dx = load4(xs + k) - x0, dy = load4(ys + k) - y0;
        const v4d e = exp4_nonpos((dx * dx + dy * dy) * c) * load4(ws + k);
        __builtin_memcpy(g + k, &e, sizeof e);
    }
}

// Solve M d = b (n x n, row-major in a kParams^2 array) by Gaussian
// elimination with partial pivoting (as peaks._solve_small and LAPACK gesv);
// false when a pivot is exactly zero.
template <int N>
bool solve(double M[kParams][kParams], double b[kParams], double x[kParams]) {
    for (int c = 0; c < N; ++c) {
        int piv = c;
        double best = std::fabs(M[c][c]);
        for (int r = c + 1; r < N; ++r)
            if (std::fabs(M[r][c]) > best) { best = std::fabs(M[r][c]); piv = r; }
        if (M[piv][c] == 0.0) return false;
        if (piv != c) {
            for (int k = 0; k < N; ++k) std::swap(M[c][k], M[piv][k]);
            std::swap(b[c], b[piv]);
        }
        for (int r = c + 1; r < N; ++r) {
            const double f = M[r][c] / M[c][c];
            for (int k = c; k < N; ++k) M[r][k] -= f * M[c][k];
            b[r] -= f * b[c];
        }
    }
    for (int r = N - 1; r >= 0; --r) {
        double acc = b[r];
        for (int k = r + 1; k < N; ++k) acc -= M[r][k] * x[k];
        x[r] = acc / M[r][r];
    }
    return true;
}

// Index in p = (x, y, A, sigma, b, bx, by) of fitted parameter a (peaks._free_params).
template <bool FitSigma>
constexpr int param_of(int a) {
    return FitSigma ? a : (a < 3 ? a : a + 1);
}

// Levenberg-Marquardt as peaks._lm. Returns ok; p and cost updated in place.
template <bool FitSigma, bool Plane>
bool lm(const Window& W, double p[kParams], double& cost, double sigma_lo, double sigma_hi,
        int64_t max_iter) {
    constexpr int NP = 4 + (FitSigma ? 1 : 0) + (Plane ? 2 : 0);
    const double *xs = W.x.data(), *ys = W.y.data(), *vs = W.v.data(), *ws = W.w.data();
    double lam = 1e-3, rel = 0;
    int pinned = 0;  // consecutive accepted steps with sigma on a bound
    Pass ps;
    if (max_iter <= 0) cost = cost_pass<Plane>(xs, ys, vs, ws, W.mp, p, W.xc, W.yc);
    for (int64_t it = 0; it < max_iter; ++it) {
        jac_pass<FitSigma, Plane>(xs, ys, vs, ws, W.mp, p, W.xc, W.yc, ps);
        if (it == 0) cost = ps.cost;
        bool step_taken = false;
        while (lam < 1e10) {
            double M[kParams][kParams], g[kParams], d[kParams];
            for (int a = 0; a < NP; ++a) {
                for (int q = 0; q < NP; ++q) M[a][q] = ps.H[a][q];
                M[a][a] += lam * (ps.H[a][a] + 1e-12);
                g[a] = ps.grad[a];
            }
            if (!solve<NP>(M, g, d)) {
                lam *= 10;
                continue;
            }
            double pn[kParams];
            for (int a = 0; a < kParams; ++a) pn[a] = p[a];
            for (int a = 0; a < NP; ++a) pn[param_of<FitSigma>(a)] -= d[a];
            if (FitSigma) pn[3] = std::min(std::max(std::fabs(pn[3]), sigma_lo), sigma_hi);
            const double cn = cost_pass<Plane>(xs, ys, vs, ws, W.mp, pn, W.xc, W.yc);
            if (cn < cost) {
                rel = (cost - cn) / std::max(cost, 1e-300);
                for (int a = 0; a < kParams; ++a) p[a] = pn[a];
                cost = cn;
                lam = std::max(lam / 10, 1e-7);
                step_taken = true;
                pinned = (FitSigma && (p[3] == sigma_lo || p[3] == sigma_hi)) ? pinned + 1 : 0;
                break;
            }
            lam *= 10;
        }
        if (pinned >= 3) return false;
        if (!step_taken || rel < 1e-9) return true;
    }
    return false;
}

// True unless the window's pixels are collinear (peaks._plane_determined):
// integer sums of integer coordinates, exact in double.
bool plane_determined(const Window& W) {
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    for (int64_t k = 0; k < W.m; ++k) {
        sx += W.x[k];
        sy += W.y[k];
        sxx += W.x[k] * W.x[k];
        syy += W.y[k] * W.y[k];
        sxy += W.x[k] * W.y[k];
    }
    const double m = static_cast<double>(W.m);
    const double vx = m * sxx - sx * sx, vy = m * syy - sy * sy, cxy = m * sxy - sx * sy;
    return vx * vy - cxy * cxy > 0;
}

// Linear (A, b, bx, by) for a Gaussian of width sigma at (x0, y0)
// (peaks._linear_amplitude): p[2], p[4], p[5], p[6] set.
void linear_amplitude(const Window& W, double x0, double y0, double sigma, bool plane,
                      bool contrast, double p[kParams]) {
    p[5] = p[6] = 0.0;
    if (!contrast) {  // a constant window: exactly no spot and no slope
        p[2] = 0;
        p[4] = W.v[0];
        return;
    }
    thread_local std::vector<double> gbuf;
    gbuf.resize(W.mp);
    gauss_profile(W.x.data(), W.y.data(), W.w.data(), W.mp, x0, y0, sigma, gbuf.data());
    double sg = 0, sgg = 0, sv = 0, sgv = 0;
    for (int64_t k = 0; k < W.m; ++k) {
        const double g = gbuf[k];
        sg += g;
        sgg += g * g;
        sv += W.v[k];
        sgv += g * W.v[k];
    }
    const double m = static_cast<double>(W.m);
    const double det = m * sgg - sg * sg;
    const bool degenerate = !(det > 1e-12 * m * std::max(sgg, 1e-300));
    if (!plane) {
        if (!degenerate) {
            p[2] = (m * sgv - sg * sv) / det;
            p[4] = (sgg * sv - sg * sgv) / det;
        } else {
            p[2] = 0;
            p[4] = sv / m;
        }
        return;
    }
    // Normal equations of the basis [g,] 1, x - xc, y - yc.
    const int off = degenerate ? 1 : 0, n = 4 - off;
    double N[kParams][kParams] = {}, rhs[kParams] = {}, sol[kParams] = {};
    for (int64_t k = 0; k < W.m; ++k) {
        const double phi[4] = {gbuf[k], 1.0, W.x[k] - W.xc, W.y[k] - W.yc};
        for (int a = 0; a < n; ++a) {
            rhs[a] += phi[a + off] * W.v[k];
            for (int q = 0; q < n; ++q) N[a][q] += phi[a + off] * phi[q + off];
        }
    }
    const bool ok = degenerate ? solve<3>(N, rhs, sol) : solve<4>(N, rhs, sol);
    if (!ok) {
        p[2] = 0;
        p[4] = sv / m;
        return;
    }
    p[2] = degenerate ? 0.0 : sol[0];
    p[4] = sol[1 - off];
    p[5] = sol[2 - off];
    p[6] = sol[3 - off];
}

// Standard errors (peaks._fit_errors): errs[kParams] (NaN if not fitted),
// the intensity error and the error of the background at the fitted centre.
template <bool FitSigma, bool Plane>
void fit_errors(const Window& W, const double p[kParams], double errs[kParams], double& ierr,
                double& berr) {
    constexpr int NP = 4 + (FitSigma ? 1 : 0) + (Plane ? 2 : 0);
    constexpr int kB = FitSigma ? 4 : 3;
    for (int a = 0; a < kParams; ++a) errs[a] = kNaN;
    ierr = berr = kNaN;
    const int64_t m = W.m;
    const double is2 = 1.0 / (p[3] * p[3]), is3 = is2 / p[3];
    thread_local std::vector<double> g, q;
    g.resize(W.mp);
    q.resize(m);
    gauss_profile(W.x.data(), W.y.data(), W.w.data(), W.mp, p[0], p[1], p[3], g.data());
    double sg = 0, sgg = 0, sq = 0, sgq = 0;
    for (int64_t k = 0; k < m; ++k) {
        double bg = p[4];
        if (Plane) bg += p[5] * (W.x[k] - W.xc) + p[6] * (W.y[k] - W.yc);
        const double r = bg + p[2] * g[k] - W.v[k];
        q[k] = r * r;
        sg += g[k];
        sgg += g[k] * g[k];
        sq += q[k];
        sgq += g[k] * q[k];
    }
    const double md = static_cast<double>(m);
    double c0, c1;
    const double det = md * sgg - sg * sg;
    if (det > 1e-12 * md * std::max(sgg, 1e-300)) {
        c0 = (sgg * sq - sg * sgq) / det;
        c1 = (md * sgq - sg * sq) / det;
        if (!(c0 >= 0 && c1 >= 0)) {
            if (c1 < 0) {
                c0 = sq / md;
                c1 = 0;
            } else {
                c0 = 0;
                c1 = sgg > 0 ? sgq / sgg : 0.0;
            }
        }
    } else {
        c0 = sq / md;
        c1 = 0;
    }
    const double dof = md / static_cast<double>(std::max<int64_t>(m - NP, 1));
    double H[kParams][kParams] = {}, B[kParams][kParams] = {};
    for (int64_t k = 0; k < m; ++k) {
        const double dx = W.x[k] - p[0], dy = W.y[k] - p[1];
        const double ag = p[2] * g[k];
        double j[kParams];
        j[0] = ag * dx * is2;
        j[1] = ag * dy * is2;
        j[2] = g[k];
        if (FitSigma) j[3] = ag * (dx * dx + dy * dy) * is3;
        j[kB] = 1.0;
        if (Plane) {
            j[kB + 1] = W.x[k] - W.xc;
            j[kB + 2] = W.y[k] - W.yc;
        }
        const double var = (c0 + c1 * g[k]) * dof;
        for (int a = 0; a < NP; ++a)
            for (int b = a; b < NP; ++b) {
                const double jj = j[a] * j[b];
                H[a][b] += jj;
                B[a][b] += jj * var;
            }
    }
    for (int a = 0; a < NP; ++a)
        for (int b = 0; b < a; ++b) {
            H[a][b] = H[b][a];
            B[a][b] = B[b][a];
        }
    // Hi = H^-1 column by column.
    double Hi[kParams][kParams];
    for (int col = 0; col < NP; ++col) {
        double M[kParams][kParams], e[kParams] = {}, x[kParams];
        for (int a = 0; a < NP; ++a)
            for (int b = 0; b < NP; ++b) M[a][b] = H[a][b];
        e[col] = 1.0;
        if (!solve<NP>(M, e, x)) return;
        for (int a = 0; a < NP; ++a) Hi[a][col] = x[a];
    }
    double T[kParams][kParams] = {}, C[kParams][kParams] = {};
    for (int a = 0; a < NP; ++a)
        for (int b = 0; b < NP; ++b)
            for (int k = 0; k < NP; ++k) T[a][b] += Hi[a][k] * B[k][b];
    for (int a = 0; a < NP; ++a)
        for (int b = 0; b < NP; ++b)
            for (int k = 0; k < NP; ++k) C[a][b] += T[a][k] * Hi[k][b];
    for (int a = 0; a < NP; ++a) errs[param_of<FitSigma>(a)] = std::sqrt(std::max(C[a][a], 0.0));
    double gi[kParams] = {}, gb[kParams] = {};
    gi[2] = 2 * kPi * p[3] * p[3];
    if (FitSigma) gi[3] = 4 * kPi * p[2] * p[3];
    gb[kB] = 1.0;
    if (Plane) {
        gb[kB + 1] = p[0] - W.xc;
        gb[kB + 2] = p[1] - W.yc;
    }
    double vi = 0, vb = 0;
    for (int a = 0; a < NP; ++a)
        for (int b = 0; b < NP; ++b) {
            vi += gi[a] * C[a][b] * gi[b];
            vb += gb[a] * C[a][b] * gb[b];
        }
    ierr = std::sqrt(std::max(vi, 0.0));
    berr = std::sqrt(std::max(vb, 0.0));
}

// One atom's fits with the background model fixed at compile time: the free
// fit, the fixed-sigma fallback, the centroid fallback and the errors. Sets
// p, cost, errs, ierr, berr; returns the status.
template <bool Plane>
Status fit_one(const Window& W, double x0, double y0, int64_t xi, int64_t yi, int64_t radius,
               double sigma, double sigma_lo, double sigma_hi, double max_shift, int64_t max_iter,
               double vmin, double vmax, double p[kParams], double& cost, double errs[kParams],
               double& ierr, double& berr) {
    double lin[kParams] = {x0, y0, 0, sigma, 0, 0, 0};
    linear_amplitude(W, x0, y0, sigma, Plane, vmax > vmin, lin);
    const double a0 = std::max({lin[2], 1e-3 * (vmax - vmin), 1e-12});
    auto accept = [&](const double* q, bool good) {
        const bool inside = std::fabs(q[0] - static_cast<double>(xi)) <= static_cast<double>(radius) &&
                            std::fabs(q[1] - static_cast<double>(yi)) <= static_cast<double>(radius);
        const double ddx = q[0] - x0, ddy = q[1] - y0;
        const bool near = ddx * ddx + ddy * ddy <= max_shift * max_shift;
        return good && inside && near && q[2] > 0 && vmax > vmin;
    };
    auto start = [&](double* q) {
        for (int a = 0; a < kParams; ++a) q[a] = lin[a];
        q[2] = a0;
    };
    start(p);
    bool good = lm<true, Plane>(W, p, cost, sigma_lo, sigma_hi, max_iter);
    if (accept(p, good) && sigma_lo < p[3] && p[3] < sigma_hi) {
        fit_errors<true, Plane>(W, p, errs, ierr, berr);
        return kFree;
    }
    start(p);
    good = lm<false, Plane>(W, p, cost, sigma_lo, sigma_hi, max_iter);
    Status st = kFixedSigma;
    if (!accept(p, good)) {
        st = kCentroid;
        for (int a = 0; a < kParams; ++a) p[a] = lin[a];
        cost = cost_pass<Plane>(W.x.data(), W.y.data(), W.v.data(), W.w.data(), W.mp, p, W.xc,
                                W.yc);
    }
    fit_errors<false, Plane>(W, p, errs, ierr, berr);
    return st;
}

py::tuple fit_gaussian(f32_array image, f64_array xy_arr, int64_t radius, double sigma,
                       double sigma_lo, double sigma_hi, double max_shift, int64_t max_iter,
                       bool plane) {
    require(image.ndim() == 2, "fit_gaussian: image must be 2-D");
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "fit_gaussian: xy must have shape (N, 2)");
    require(radius >= 1, "fit_gaussian: radius must be >= 1");
    require(sigma > 0 && sigma_lo < sigma_hi, "fit_gaussian: need sigma > 0 and sigma_lo < sigma_hi");
    const int64_t h = image.shape(0), w = image.shape(1), n = xy_arr.shape(0);
    const float* img = image.data();
    const double* xy = xy_arr.data();
    py::array_t<double> table({static_cast<py::ssize_t>(n), py::ssize_t{kCols}});
    py::array_t<int8_t> status(static_cast<py::ssize_t>(n));
    double* out = table.mutable_data();
    int8_t* st = status.mutable_data();
    const int64_t side = 2 * radius + 1;
    const int64_t cap = ((side * side + kLanes - 1) / kLanes) * kLanes;
    parallel_for_grained(n, 64, 1 << 14, [&](int64_t i) {
        thread_local Window W;
        if (static_cast<int64_t>(W.x.size()) < cap) {
            W.x.assign(cap, 0.0);
            W.y.assign(cap, 0.0);
            W.v.assign(cap, 0.0);
            W.w.assign(cap, 0.0);
        }
        double* o = out + kCols * i;
        const double x0 = xy[2 * i], y0 = xy[2 * i + 1];
        for (int k = 0; k < kCols; ++k) o[k] = kNaN;
        o[0] = x0;
        o[1] = y0;
        st[i] = kNone;
        if (!std::isfinite(x0) || !std::isfinite(y0)) return;
        const double fx = std::floor(x0 + 0.5), fy = std::floor(y0 + 0.5);
        const int64_t xi = fx <= 0 ? 0 : (fx >= static_cast<double>(w - 1) ? w - 1 : static_cast<int64_t>(fx));
        const int64_t yi = fy <= 0 ? 0 : (fy >= static_cast<double>(h - 1) ? h - 1 : static_cast<int64_t>(fy));
        const int64_t ylo = std::max<int64_t>(yi - radius, 0), yhi = std::min(yi + radius + 1, h);
        const int64_t xlo = std::max<int64_t>(xi - radius, 0), xhi = std::min(xi + radius + 1, w);
        int64_t m = 0;
        double vmin = std::numeric_limits<double>::infinity(), vmax = -vmin;
        for (int64_t y = ylo; y < yhi; ++y)
            for (int64_t x = xlo; x < xhi; ++x) {
                const double val = img[y * w + x];
                if (!std::isfinite(val)) continue;
                W.x[m] = static_cast<double>(x);
                W.y[m] = static_cast<double>(y);
                W.v[m] = val;
                W.w[m] = 1.0;
                vmin = std::min(vmin, val);
                vmax = std::max(vmax, val);
                ++m;
            }
        W.m = m;
        W.mp = ((m + kLanes - 1) / kLanes) * kLanes;
        W.xc = static_cast<double>(xi);
        W.yc = static_cast<double>(yi);
        for (int64_t k = m; k < W.mp; ++k) {
            W.x[k] = W.xc;
            W.y[k] = W.yc;
            W.v[k] = 0.0;
            W.w[k] = 0.0;
        }
        if (m < 6) return;
        double p[kParams], cost = 0, errs[kParams], ierr, berr;
        const bool tilt = plane && plane_determined(W);
        st[i] = tilt ? fit_one<true>(W, x0, y0, xi, yi, radius, sigma, sigma_lo, sigma_hi,
                                     max_shift, max_iter, vmin, vmax, p, cost, errs, ierr, berr)
                     : fit_one<false>(W, x0, y0, xi, yi, radius, sigma, sigma_lo, sigma_hi,
                                      max_shift, max_iter, vmin, vmax, p, cost, errs, ierr, berr);
        o[0] = p[0];
        o[1] = p[1];
        o[2] = p[2];
        o[3] = p[3];
        o[4] = p[4] + p[5] * (p[0] - W.xc) + p[6] * (p[1] - W.yc);
        o[5] = 2 * kPi * p[2] * (p[3] * p[3]);
        o[6] = std::sqrt(cost / static_cast<double>(m));
        for (int a = 0; a < 4; ++a) o[7 + a] = errs[a];
        o[11] = berr;
        o[12] = ierr;
    });
    return py::make_tuple(table, status);
}

}  // namespace
}  // namespace fastsac

void bind_fit(py::module_& m) {
    m.def("fit_gaussian", &fastsac::fit_gaussian, py::arg("image"), py::arg("xy"), py::arg("radius"),
          py::arg("sigma"), py::arg("sigma_lo"), py::arg("sigma_hi"), py::arg("max_shift"),
          py::arg("max_iter"), py::arg("plane") = false,
          "Per-atom Gaussian fit on a constant or (plane=True) tilted-plane background, with\n"
          "fixed-sigma and centroid fallbacks and standard errors\n"
          "-> (table float64 (N, 13) in the order of peaks.FIT_TABLE, status int8 (N,)).");
}
