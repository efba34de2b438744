// Peak kernels: local maxima, radius NMS, centre-of-mass and Gaussian refinement.
// Each reproduces its numpy reference in src/fastsac/peaks.py (the spec).
#include "common.hpp"
#include "grid.hpp"

#include <array>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kTwoPi = 6.283185307179586;

// ------------------------------------------------------------------ local maxima
// 1-D running max over [i - r, i + r] with -inf outside [0, n) (van Herk /
// Gil-Werman: block prefix and suffix maxima, 3 comparisons per sample).
void running_max_1d(const float* in, int64_t n, int64_t r, float* out, std::vector<float>& pad,
                    std::vector<float>& g, std::vector<float>& hs) {
    const int64_t k = 2 * r + 1, L = n + 2 * r;
    pad.assign(L, kNegInf);
    std::copy(in, in + n, pad.begin() + r);
    g.resize(L);
    hs.resize(L);
    for (int64_t j = 0; j < L; ++j) g[j] = (j % k == 0) ? pad[j] : std::max(g[j - 1], pad[j]);
    for (int64_t j = L - 1; j >= 0; --j)
        hs[j] = (j % k == k - 1 || j == L - 1) ? pad[j] : std::max(hs[j + 1], pad[j]);
    for (int64_t i = 0; i < n; ++i) out[i] = std::max(hs[i], g[i + k - 1]);
}

struct StripPeaks {
    std::vector<int64_t> x, y;
    std::vector<float> v;
};

void maxima_strip(const float* img, int64_t h, int64_t w, float thr, int64_t r, int64_t border,
                  int64_t y0, int64_t y1, StripPeaks& res) {
    const int64_t k = 2 * r + 1, L = (y1 - y0) + 2 * r;
    const size_t W = static_cast<size_t>(w);
    // P: horizontal maxima of the cleaned rows y0 - r .. y1 + r - 1 (-inf outside).
    std::vector<float> P(L * W, kNegInf), clean(W), pad, g1, h1;
    for (int64_t j = 0; j < L; ++j) {
        const int64_t y = y0 - r + j;
        if (y < 0 || y >= h) continue;
        const float* row = img + y * w;
        for (int64_t x = 0; x < w; ++x) clean[x] = std::isfinite(row[x]) ? row[x] : kNegInf;
        running_max_1d(clean.data(), w, r, &P[j * W], pad, g1, h1);
    }
    // Vertical van Herk / Gil-Werman on whole rows.
    std::vector<float> G(L * W), Hs(L * W);
    for (int64_t j = 0; j < L; ++j) {
        float* gj = &G[j * W];
        const float* pj = &P[j * W];
        if (j % k == 0) {
            std::copy(pj, pj + W, gj);
        } else {
            const float* gp = &G[(j - 1) * W];
            for (size_t x = 0; x < W; ++x) gj[x] = std::max(gp[x], pj[x]);
        }
    }
    for (int64_t j = L - 1; j >= 0; --j) {
        float* hj = &Hs[j * W];
        const float* pj = &P[j * W];
        if (j % k == k - 1 || j == L - 1) {
            std::copy(pj, pj + W, hj);
        } else {
            const float* hn = &Hs[(j + 1) * W];
            for (size_t x = 0; x < W; ++x) hj[x] = std::max(hn[x], pj[x]);
        }
    }
    for (int64_t y = y0; y < y1; ++y) {
        if (border > 0 && (y < border || y >= h - border)) continue;
        const int64_t i = y - y0;
        const float* hi = &Hs[i * W];
        const float* gi = &G[(i + k - 1) * W];
        const float* row = img + y * w;
        const int64_t xlo = border > 0 ? border : 0, xhi = border > 0 ? w - border : w;
        for (int64_t x = xlo; x < xhi; ++x) {
            const float v = row[x];
            if (std::isfinite(v) && v > thr && v >= std::max(hi[x], gi[x])) {
                res.x.push_back(x);
                res.y.push_back(y);
                res.v.push_back(v);
            }
        }
    }
}

// Direct test for small radii: only pixels above the threshold are examined,
// and a pixel is rejected at the first finite neighbour larger than it (the
// 3x3 ring first), so background costs one comparison per pixel.
void maxima_strip_direct(const float* img, int64_t h, int64_t w, float thr, int64_t r,
                         int64_t border, int64_t y0, int64_t y1, StripPeaks& res) {
    // Window offsets sorted by Chebyshev distance: near neighbours reject fastest.
    std::vector<std::pair<int64_t, int64_t>> offs;
    for (int64_t k = 1; k <= r; ++k)
        for (int64_t dy = -k; dy <= k; ++dy)
            for (int64_t dx = -k; dx <= k; ++dx)
                if (std::max(std::abs(dx), std::abs(dy)) == k) offs.emplace_back(dy, dx);
    const int64_t xlo = border > 0 ? border : 0, xhi = border > 0 ? w - border : w;
    for (int64_t y = y0; y < y1; ++y) {
        if (border > 0 && (y < border || y >= h - border)) continue;
        const float* row = img + y * w;
        const bool inner_y = (y >= r && y + r < h);
        for (int64_t x = xlo; x < xhi; ++x) {
            // Skip runs of 16 pixels none of which is above the threshold
            // (a vectorised test; NaN compares false and is skipped too).
            while (x + 16 <= xhi) {
                int any = 0;
                for (int k = 0; k < 16; ++k) any |= (row[x + k] > thr);
                if (any) break;
                x += 16;
            }
            if (x >= xhi) break;
            const float v = row[x];
            if (!(v > thr) || !std::isfinite(v)) continue;
            bool is_max = true;
            if (inner_y && x >= r && x + r < w) {
                for (const auto& o : offs) {
                    const float u = row[o.first * w + x + o.second];
                    if (u > v && std::isfinite(u)) { is_max = false; break; }
                }
            } else {
                for (const auto& o : offs) {
                    const int64_t yy = y + o.first, xx = x + o.second;
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    const float u = img[yy * w + xx];
                    if (u > v && std::isfinite(u)) { is_max = false; break; }
                }
            }
            if (is_max) {
                res.x.push_back(x);
                res.y.push_back(y);
                res.v.push_back(v);
            }
        }
    }
}

// numpy compares a float32 array with a Python float in float32 (NEP 50).
float threshold_as_float32(double t) {
    if (std::isnan(t)) return std::numeric_limits<float>::quiet_NaN();
    if (t > static_cast<double>(FLT_MAX)) return std::numeric_limits<float>::infinity();
    if (t < -static_cast<double>(FLT_MAX)) return -std::numeric_limits<float>::infinity();
    return static_cast<float>(t);
}

py::tuple local_maxima(f32_array image, double threshold, int64_t radius, int64_t exclude_border) {
    require(image.ndim() == 2, "local_maxima: image must be 2-D");
    require(radius >= 1, "local_maxima: radius must be >= 1");
    const int64_t h = image.shape(0), w = image.shape(1);
    const float* img = image.data();
    const float thr = threshold_as_float32(threshold);
    radius = std::min<int64_t>(radius, std::max<int64_t>(h, w));  // wider windows change nothing
    // Small windows: direct test with early exit; large ones: separable
    // van Herk / Gil-Werman max filter (constant cost per pixel).
    const bool direct = radius <= 4;
    // Strips of at least ~256k pixels for the direct test (cheap per pixel).
    const int64_t strip = direct ? std::max<int64_t>(64, (int64_t{1} << 18) / std::max<int64_t>(w, 1))
                                 : std::max<int64_t>(16, 4 * radius);
    const int64_t n_strips = h > 0 ? (h + strip - 1) / strip : 0;
    std::vector<StripPeaks> parts(n_strips);
    if (w > 0)
        parallel_for(n_strips, 8 * n_threads(), [&](int64_t s) {
            const int64_t y0 = s * strip;
            const int64_t y1 = std::min(h, y0 + strip);
            if (direct)
                maxima_strip_direct(img, h, w, thr, radius, exclude_border, y0, y1, parts[s]);
            else
                maxima_strip(img, h, w, thr, radius, exclude_border, y0, y1, parts[s]);
        });
    size_t n = 0;
    for (const auto& p : parts) n += p.x.size();
    py::array_t<int64_t> xy({static_cast<py::ssize_t>(n), py::ssize_t{2}});
    py::array_t<float> values(static_cast<py::ssize_t>(n));
    int64_t* pxy = xy.mutable_data();
    float* pv = values.mutable_data();
    size_t o = 0;
    for (const auto& p : parts)
        for (size_t i = 0; i < p.x.size(); ++i, ++o) {
            pxy[2 * o] = p.x[i];
            pxy[2 * o + 1] = p.y[i];
            pv[o] = p.v[i];
        }
    return py::make_tuple(xy, values);
}

// ------------------------------------------------------------------ NMS
py::array_t<int64_t> nms(f64_array xy_arr, f64_array scores_arr, double radius) {
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "nms: xy must have shape (N, 2)");
    require(scores_arr.ndim() == 1 && scores_arr.shape(0) == xy_arr.shape(0),
            "nms: scores must have shape (N,)");
    require(radius >= 0, "nms: radius must be >= 0");
    const int64_t n = xy_arr.shape(0);
    const double* xy = xy_arr.data();
    const double* s = scores_arr.data();
    std::vector<int64_t> kept;
    {
        py::gil_scoped_release release;
        std::vector<int64_t> order;
        order.reserve(n);
        for (int64_t i = 0; i < n; ++i)
            if (std::isfinite(s[i])) order.push_back(i);
        std::sort(order.begin(), order.end(), [s](int64_t a, int64_t b) {
            return s[a] > s[b] || (s[a] == s[b] && a < b);
        });
        // Cells at least radius wide: a kept point within radius is in the 3x3 block.
        const Grid g = make_grid(xy, n, radius * (1 + 1e-6), 1.0);
        std::vector<int64_t> head(g.n_cells(), -1), next(n, -1);
        const double r2 = radius * radius;
        for (const int64_t i : order) {
            const double x = xy[2 * i], y = xy[2 * i + 1];
            const int64_t cx = g.ix(x), cy = g.iy(y);
            bool suppressed = false;
            for (int64_t yy = std::max<int64_t>(cy - 1, 0); yy <= std::min(cy + 1, g.ny - 1) && !suppressed; ++yy)
                for (int64_t xx = std::max<int64_t>(cx - 1, 0); xx <= std::min(cx + 1, g.nx - 1) && !suppressed; ++xx)
                    for (int64_t j = head[yy * g.nx + xx]; j >= 0; j = next[j]) {
                        const double dx = xy[2 * j] - x, dy = xy[2 * j + 1] - y;
                        if (dx * dx + dy * dy <= r2) { suppressed = true; break; }
                    }
            if (suppressed) continue;
            const int64_t c = cy * g.nx + cx;
            next[i] = head[c];
            head[c] = i;
            kept.push_back(i);
        }
    }
    py::array_t<int64_t> out(static_cast<py::ssize_t>(kept.size()));
    std::copy(kept.begin(), kept.end(), out.mutable_data());
    return out;
}

// ------------------------------------------------------------------ refinement
inline int64_t round_clamp(double v, int64_t n) {
    // int(np.floor(v + 0.5)) clamped into [0, n - 1].
    const double f = std::floor(v + 0.5);
    if (!(f > 0)) return 0;
    if (f >= static_cast<double>(n - 1)) return n - 1;
    return static_cast<int64_t>(f);
}

py::array_t<double> refine_com(f32_array image, f64_array xy_arr, int64_t radius, int64_t iterations) {
    require(image.ndim() == 2, "refine_com: image must be 2-D");
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "refine_com: xy must have shape (N, 2)");
    const int64_t h = image.shape(0), w = image.shape(1), n = xy_arr.shape(0);
    const float* img = image.data();
    const double* xy = xy_arr.data();
    py::array_t<double> result({static_cast<py::ssize_t>(n), py::ssize_t{2}});
    double* out = result.mutable_data();
    // Half-width of the disc on each row offset: dx*dx + dy*dy <= r*r.
    std::vector<int64_t> half(2 * radius + 1);
    for (int64_t dy = -radius; dy <= radius; ++dy) {
        int64_t hw = 0;
        while ((hw + 1) * (hw + 1) + dy * dy <= radius * radius) ++hw;
        half[dy + radius] = hw;
    }
    parallel_for_grained(n, 2048, 1 << 16, [&](int64_t i) {
        double x = xy[2 * i], y = xy[2 * i + 1];
        if (std::isfinite(x) && std::isfinite(y)) {
            for (int64_t it = 0; it < iterations; ++it) {
                const int64_t xi = round_clamp(x, w), yi = round_clamp(y, h);
                const int64_t ylo = std::max<int64_t>(yi - radius, 0), yhi = std::min(yi + radius + 1, h);
                double vmin = std::numeric_limits<double>::infinity();
                int64_t count = 0;
                for (int64_t yy = ylo; yy < yhi; ++yy) {
                    const int64_t hw = half[yy - yi + radius];
                    const int64_t xlo = std::max<int64_t>(xi - hw, 0), xhi = std::min(xi + hw + 1, w);
                    const float* row = img + yy * w;
                    for (int64_t xx = xlo; xx < xhi; ++xx) {
                        const double v = row[xx];
                        if (!std::isfinite(v)) continue;
                        vmin = std::min(vmin, v);
                        ++count;
                    }
                }
                if (count == 0) break;
                double tot = 0, sx = 0, sy = 0;
                for (int64_t yy = ylo; yy < yhi; ++yy) {
                    const int64_t hw = half[yy - yi + radius];
                    const int64_t xlo = std::max<int64_t>(xi - hw, 0), xhi = std::min(xi + hw + 1, w);
                    const float* row = img + yy * w;
                    for (int64_t xx = xlo; xx < xhi; ++xx) {
                        const double v = row[xx];
                        if (!std::isfinite(v)) continue;
                        const double wgt = v - vmin;
                        tot += wgt;
                        sx += wgt * static_cast<double>(xx);
                        sy += wgt * static_cast<double>(yy);
                    }
                }
                if (tot <= 0) break;
                x = sx / tot;
                y = sy / tot;
            }
        }
        out[2 * i] = x;
        out[2 * i + 1] = y;
    });
    return result;
}

// Solve the 5x5 system M d = b by Gaussian elimination with partial pivoting
// (as LAPACK gesv); false when a pivot is exactly zero (numpy's LinAlgError).
bool solve5(std::array<double, 25> M, std::array<double, 5> b, std::array<double, 5>& x) {
    for (int c = 0; c < 5; ++c) {
        int piv = c;
        double best = std::fabs(M[c * 5 + c]);
        for (int r = c + 1; r < 5; ++r)
            if (std::fabs(M[r * 5 + c]) > best) { best = std::fabs(M[r * 5 + c]); piv = r; }
        if (M[piv * 5 + c] == 0.0) return false;
        if (piv != c) {
            for (int k = 0; k < 5; ++k) std::swap(M[c * 5 + k], M[piv * 5 + k]);
            std::swap(b[c], b[piv]);
        }
        for (int r = c + 1; r < 5; ++r) {
            const double f = M[r * 5 + c] / M[c * 5 + c];
            for (int k = c; k < 5; ++k) M[r * 5 + k] -= f * M[c * 5 + k];
            b[r] -= f * b[c];
        }
    }
    for (int r = 4; r >= 0; --r) {
        double acc = b[r];
        for (int k = r + 1; k < 5; ++k) acc -= M[r * 5 + k] * x[k];
        x[r] = acc / M[r * 5 + r];
    }
    return true;
}

struct GaussFit {
    std::array<double, 5> p;  // x, y, A, sigma, b
    double rms;
    bool ok;
};

// Residuals r = b + A g - v of the model at p; returns the cost r.r.
double gauss_resid(const std::vector<double>& xx, const std::vector<double>& yy,
                   const std::vector<double>& v, const std::array<double, 5>& p,
                   std::vector<double>& r, std::vector<double>& g, std::vector<double>& r2) {
    const double two_s2 = 2 * (p[3] * p[3]);
    double cost = 0;
    for (size_t k = 0; k < v.size(); ++k) {
        const double dx = xx[k] - p[0], dy = yy[k] - p[1];
        r2[k] = dx * dx + dy * dy;
        g[k] = std::exp(-r2[k] / two_s2);
        r[k] = p[4] + p[2] * g[k] - v[k];
        cost += r[k] * r[k];
    }
    return cost;
}

// Levenberg-Marquardt exactly as peaks._fit_one (same start, damping and
// acceptance rules).
GaussFit fit_one(const std::vector<double>& xx, const std::vector<double>& yy,
                 const std::vector<double>& v, double x0, double y0, double sigma0, int64_t max_iter) {
    const size_t m = v.size();
    const double b0 = *std::min_element(v.begin(), v.end());
    const double vmax = *std::max_element(v.begin(), v.end());
    std::array<double, 5> p = {x0, y0, std::max(vmax - b0, 1e-12), sigma0, b0};
    double lam = 1e-3;
    std::vector<double> r(m), g(m), r2(m), rn(m), gn(m), r2n(m);
    double cost = gauss_resid(xx, yy, v, p, r, g, r2);
    bool ok = false;
    double rel = 0;
    for (int64_t it = 0; it < max_iter; ++it) {
        const double s2 = p[3] * p[3];
        std::array<double, 25> A{};
        std::array<double, 5> grad{};
        for (size_t k = 0; k < m; ++k) {
            const double pg = p[2] * g[k];
            const double J[5] = {pg * (xx[k] - p[0]) / s2, pg * (yy[k] - p[1]) / s2, g[k],
                                 pg * r2[k] / (s2 * p[3]), 1.0};
            for (int a = 0; a < 5; ++a) {
                grad[a] += J[a] * r[k];
                for (int b = a; b < 5; ++b) A[a * 5 + b] += J[a] * J[b];
            }
        }
        for (int a = 0; a < 5; ++a)
            for (int b = 0; b < a; ++b) A[a * 5 + b] = A[b * 5 + a];
        bool step_taken = false;
        while (lam < 1e10) {
            std::array<double, 25> M = A;
            for (int a = 0; a < 5; ++a) M[a * 5 + a] += lam * (A[a * 5 + a] + 1e-12);
            std::array<double, 5> delta{};
            if (!solve5(M, grad, delta)) {
                lam *= 10;
                continue;
            }
            std::array<double, 5> pn;
            for (int a = 0; a < 5; ++a) pn[a] = p[a] - delta[a];
            pn[3] = std::fabs(pn[3]);
            const double cn = gauss_resid(xx, yy, v, pn, rn, gn, r2n);
            if (cn < cost) {
                rel = (cost - cn) / std::max(cost, 1e-300);
                p = pn;
                r.swap(rn);
                g.swap(gn);
                r2.swap(r2n);
                cost = cn;
                lam = std::max(lam / 10, 1e-7);
                step_taken = true;
                break;
            }
            lam *= 10;
        }
        if (!step_taken || rel < 1e-9) {
            ok = true;
            break;
        }
    }
    return {p, std::sqrt(cost / static_cast<double>(m)), ok};
}

py::tuple refine_gaussian(f32_array image, f64_array xy_arr, int64_t radius, double sigma,
                          int64_t max_iter) {
    require(image.ndim() == 2, "refine_gaussian: image must be 2-D");
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "refine_gaussian: xy must have shape (N, 2)");
    require(radius >= 1, "refine_gaussian: radius must be >= 1");
    const int64_t h = image.shape(0), w = image.shape(1), n = xy_arr.shape(0);
    const float* img = image.data();
    const double* xy = xy_arr.data();
    py::array_t<double> params({static_cast<py::ssize_t>(n), py::ssize_t{7}});
    py::array_t<bool> conv(static_cast<py::ssize_t>(n));
    double* out = params.mutable_data();
    bool* cv = conv.mutable_data();
    parallel_for_grained(n, 64, 1 << 14, [&](int64_t i) {
        double* o = out + 7 * i;
        const double x0 = xy[2 * i], y0 = xy[2 * i + 1];
        std::fill(o, o + 7, kNaN);
        o[0] = x0;
        o[1] = y0;
        cv[i] = false;
        if (!std::isfinite(x0) || !std::isfinite(y0)) return;
        const int64_t xi = round_clamp(x0, w), yi = round_clamp(y0, h);
        const int64_t ylo = std::max<int64_t>(yi - radius, 0), yhi = std::min(yi + radius + 1, h);
        const int64_t xlo = std::max<int64_t>(xi - radius, 0), xhi = std::min(xi + radius + 1, w);
        std::vector<double> xx, yy, v;
        const size_t cap = static_cast<size_t>((yhi - ylo) * (xhi - xlo));
        xx.reserve(cap);
        yy.reserve(cap);
        v.reserve(cap);
        for (int64_t y = ylo; y < yhi; ++y)
            for (int64_t x = xlo; x < xhi; ++x) {
                const double val = img[y * w + x];
                if (!std::isfinite(val)) continue;
                xx.push_back(static_cast<double>(x));
                yy.push_back(static_cast<double>(y));
                v.push_back(val);
            }
        if (v.size() < 6) return;
        const GaussFit f = fit_one(xx, yy, v, x0, y0, sigma, max_iter);
        const auto& p = f.p;
        const bool inside = std::fabs(p[0] - static_cast<double>(xi)) <= static_cast<double>(radius) &&
                            std::fabs(p[1] - static_cast<double>(yi)) <= static_cast<double>(radius);
        if (f.ok && inside && 0.2 < p[3] && p[3] <= 2.0 * static_cast<double>(radius) && p[2] > 0) {
            o[0] = p[0];
            o[1] = p[1];
            o[2] = p[2];
            o[3] = p[3];
            o[4] = p[4];
            o[5] = kTwoPi * p[2] * (p[3] * p[3]);
            o[6] = f.rms;
            cv[i] = true;
        }
    });
    return py::make_tuple(params, conv);
}

}  // namespace
}  // namespace fastsac

void bind_peaks(py::module_& m) {
    m.def("local_maxima", &fastsac::local_maxima, py::arg("image"), py::arg("threshold"),
          py::arg("radius"), py::arg("exclude_border"),
          "Local maxima of a float32 (H, W) image -> (xy int64 (N, 2) [x, y], values float32 (N,)).");
    m.def("nms", &fastsac::nms, py::arg("xy"), py::arg("scores"), py::arg("radius"),
          "Greedy radius NMS -> kept indices int64 in visiting order.");
    m.def("refine_com", &fastsac::refine_com, py::arg("image"), py::arg("xy"), py::arg("radius"),
          py::arg("iterations"), "Iterated centre of mass in a disc -> float64 (N, 2).");
    m.def("refine_gaussian", &fastsac::refine_gaussian, py::arg("image"), py::arg("xy"),
          py::arg("radius"), py::arg("sigma"), py::arg("max_iter"),
          "Per-atom LM Gaussian fit -> (params float64 (N, 7), converged bool (N,)).");
}
