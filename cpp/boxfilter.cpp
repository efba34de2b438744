// Cascade of extended box filters on fixed-point integers: a Gaussian-like
// smoothing at O(1) cost per pixel whatever its width, equal bit for bit to
// fastsac.boxfilter._box_gaussian_numpy_ref (the spec; see that module).
//
// Why the arithmetic is exact: values are integers |q| <= 2^30 held in int32
// between passes and summed in double; every window sum stays below 2^53, so
// running sums (axis 0) and prefix sums (axis 1) give the same integers as any
// other summation order. The only roundings are per pixel (quantise, normalise
// each pass, dequantise), so a pixel's value never depends on where its line
// starts: tiles with a halo >= passes * (r + 1) equal the whole image.
#include "common.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTSAC_BOX_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTSAC_BOX_CLONES
#endif

constexpr double kQMax = 1073741824.0;  // 2^30

// Round half to even for |x| < 2^51 (the default rounding mode), as np.rint:
// adding and removing 1.5 * 2^52 leaves the nearest integer. Vectorises, unlike
// std::nearbyint without -ffast-math. Needs FP contraction off (the build sets it).
inline double rint_small(double x) {
    constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
    return (x + kMagic) - kMagic;
}

struct BoxParams {
    int64_t r, a, M, passes;
    double inv_norm;
};

// out[y][i] = rint((M * sum_{|j|<=r} in[y+j][i] + a * (in[y-r-1][i] + in[y+r+1][i])) * inv_norm)
// for i in [0, n) and all rows y, by a running sum down a column strip (rows
// `in_stride` / `out_stride` elements apart).
FASTSAC_BOX_CLONES
void box_rows_strip(const int32_t* in, int64_t in_stride, int32_t* out, int64_t out_stride, int64_t h,
                    int64_t n, const BoxParams& p, double* acc) {
    const int64_t r = p.r;
    const double M = static_cast<double>(p.M), a = static_cast<double>(p.a), inv = p.inv_norm;
    for (int64_t i = 0; i < n; ++i) acc[i] = 0.0;
    for (int64_t j = -r; j <= r; ++j) {
        const int32_t* row = in + reflect_index(j, h) * in_stride;
        for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<double>(row[i]);
    }
    for (int64_t y = 0; y < h; ++y) {
        if (y > 0) {
            const int32_t* add = in + reflect_index(y + r, h) * in_stride;
            const int32_t* sub = in + reflect_index(y - r - 1, h) * in_stride;
            for (int64_t i = 0; i < n; ++i)
                acc[i] += static_cast<double>(add[i]) - static_cast<double>(sub[i]);
        }
        const int32_t* lo = in + reflect_index(y - r - 1, h) * in_stride;
        const int32_t* hi = in + reflect_index(y + r + 1, h) * in_stride;
        int32_t* o = out + y * out_stride;
        for (int64_t i = 0; i < n; ++i) {
            const double s = M * acc[i] + a * (static_cast<double>(lo[i]) + static_cast<double>(hi[i]));
            o[i] = static_cast<int32_t>(rint_small(s * inv));
        }
    }
}

// Quantise columns [x0, x0 + n) of every row into a strip (clipped to +-2^30,
// the spec's range). With `square`, the value quantised is min(x * x, cap2) in
// float32 first (the local-noise input: the squared residual, atoms clipped).
FASTSAC_BOX_CLONES
void quantise_strip(const float* src, int64_t w, int64_t h, int64_t x0, int64_t n, double qscale,
                    bool square, float cap2, int32_t* q) {
    for (int64_t y = 0; y < h; ++y) {
        const float* s = src + y * w + x0;
        int32_t* o = q + y * n;
        if (square) {
            for (int64_t i = 0; i < n; ++i) {
                const float v = std::min(s[i] * s[i], cap2);
                o[i] = static_cast<int32_t>(
                    rint_small(std::min(std::max(static_cast<double>(v) * qscale, -kQMax), kQMax)));
            }
        } else {
            for (int64_t i = 0; i < n; ++i)
                o[i] = static_cast<int32_t>(
                    rint_small(std::min(std::max(static_cast<double>(s[i]) * qscale, -kQMax), kQMax)));
        }
    }
}

// kG rows at once through `passes` boxes along axis 1, in place on double
// lines (integers): a reflected copy, prefix sums, then the windows. The kG
// prefix-sum chains are independent, so they run at add throughput rather than
// add latency (one row alone is latency-bound: the horizontal pass dominated).
constexpr int kG = 4;

FASTSAC_BOX_CLONES
void box_window_line(const double* c, const double* z, double* out, int64_t w, int64_t r, double M,
                     double a, double inv) {
    for (int64_t i = 0; i < w; ++i) {
        const double s = M * (c[i + 2 * r + 2] - c[i + 1]) + a * (z[i] + z[i + 2 * r + 2]);
        out[i] = rint_small(s * inv);
    }
}

void box_cols_lines(double* const* line, int g, int64_t w, const BoxParams& p, std::vector<double>& zbuf,
                    std::vector<double>& cbuf) {
    const int64_t r = p.r, pad = r + 1, L = w + 2 * pad;
    const double M = static_cast<double>(p.M), a = static_cast<double>(p.a), inv = p.inv_norm;
    zbuf.resize(static_cast<size_t>(kG * L));
    cbuf.resize(static_cast<size_t>(kG * (L + 1)));
    double* z[kG];
    double* c[kG];
    for (int j = 0; j < kG; ++j) {
        z[j] = zbuf.data() + j * L;
        c[j] = cbuf.data() + j * (L + 1);
    }
    for (int pass = 0; pass < p.passes; ++pass) {
        for (int j = 0; j < g; ++j) {
            // Reflected copy: the interior as is, only the pads through reflect_index.
            for (int64_t k = 0; k < pad; ++k) {
                z[j][k] = line[j][reflect_index(k - pad, w)];
                z[j][L - 1 - k] = line[j][reflect_index(w + pad - 1 - k, w)];
            }
            std::copy(line[j], line[j] + w, z[j] + pad);
            c[j][0] = 0.0;
        }
        if (g == kG) {
            double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int64_t k = 0; k < L; ++k) {
                c[0][k + 1] = s0 += z[0][k];
                c[1][k + 1] = s1 += z[1][k];
                c[2][k + 1] = s2 += z[2][k];
                c[3][k + 1] = s3 += z[3][k];
            }
        } else {
            for (int j = 0; j < g; ++j)
                for (int64_t k = 0; k < L; ++k) c[j][k + 1] = c[j][k] + z[j][k];
        }
        for (int j = 0; j < g; ++j) box_window_line(c[j], z[j], line[j], w, r, M, a, inv);
    }
}

// o = sqrt(max(float32(q * dequant), floor)). No errno for sqrt (its argument
// is >= floor >= 0), so the loop vectorises; the result is the correctly
// rounded float32 square root either way.
FASTSAC_BOX_CLONES __attribute__((optimize("no-math-errno")))
void sqrt_floor_line(const double* q, float* o, int64_t w, double dequant, float floor) {
    for (int64_t x = 0; x < w; ++x) o[x] = std::sqrt(std::max(static_cast<float>(q[x] * dequant), floor));
}

// The cascade; with `noise`, the input is min(x*x, cap2) and the output
// sqrt(max(var, floor)) (float32 throughout, as the numpy spec).
py::array_t<float> box_core(f32_array image, int64_t r, int64_t a, int64_t M, int64_t passes,
                            double qscale, double inv_norm, double dequant, bool noise, float cap2,
                            float floor) {
    require(image.ndim() == 2, "box_gaussian: image must be 2-D");
    require(r >= 0 && a >= 0 && M >= 1 && passes >= 1, "box_gaussian: bad box parameters");
    const int64_t h = image.shape(0), w = image.shape(1);
    py::array_t<float> result({h, w});
    if (h == 0 || w == 0) return result;
    const BoxParams p{r, a, M, passes, inv_norm};
    const float* src = image.data();
    float* dst = result.mutable_data();
    // Axis 0: every pass of one column strip at a time (the strip stays in
    // cache between passes), parallel over strips; only the last pass writes
    // the full-size buffer the row passes read. Running sums vectorise across
    // the strip's columns.
    std::unique_ptr<int32_t[]> rows_out(new int32_t[static_cast<size_t>(h * w)]);
    constexpr int64_t kStrip = 128;
    const int64_t n_strips = (w + kStrip - 1) / kStrip;
    parallel_for(n_strips, 1 << 20, [&](int64_t s) {
        const int64_t x0 = s * kStrip, n = std::min(kStrip, w - x0);
        thread_local std::vector<int32_t> s0, s1;
        thread_local std::vector<double> acc;
        s0.resize(static_cast<size_t>(h * kStrip));
        s1.resize(static_cast<size_t>(h * kStrip));
        acc.resize(kStrip);
        quantise_strip(src, w, h, x0, n, qscale, noise, cap2, s0.data());
        int32_t* cur_s = s0.data();
        int32_t* nxt_s = s1.data();
        for (int64_t pass = 0; pass < passes; ++pass) {
            if (pass + 1 == passes) {
                box_rows_strip(cur_s, n, rows_out.get() + x0, w, h, n, p, acc.data());
            } else {
                box_rows_strip(cur_s, n, nxt_s, n, h, n, p, acc.data());
                std::swap(cur_s, nxt_s);
            }
        }
    });
    const int32_t* cur = rows_out.get();
    // Axis 1: all passes on each group of rows while it is in cache, then dequantise.
    const int64_t n_groups = (h + kG - 1) / kG;
    parallel_for_grained(n_groups, 4, 1 << 18, [&](int64_t grp) {
        thread_local std::vector<double> lines, zbuf, cbuf;
        const int64_t y0 = grp * kG;
        const int g = static_cast<int>(std::min<int64_t>(kG, h - y0));
        lines.resize(static_cast<size_t>(kG * w));
        double* ln[kG];
        for (int j = 0; j < kG; ++j) ln[j] = lines.data() + j * w;
        for (int j = 0; j < g; ++j) {
            const int32_t* q = cur + (y0 + j) * w;
            for (int64_t x = 0; x < w; ++x) ln[j][x] = static_cast<double>(q[x]);
        }
        box_cols_lines(ln, g, w, p, zbuf, cbuf);
        for (int j = 0; j < g; ++j) {
            float* o = dst + (y0 + j) * w;
            if (noise) {
                sqrt_floor_line(ln[j], o, w, dequant, floor);
            } else {
                for (int64_t x = 0; x < w; ++x) o[x] = static_cast<float>(ln[j][x] * dequant);
            }
        }
    });
    return result;
}

py::array_t<float> box_gaussian(f32_array image, int64_t r, int64_t a, int64_t M, int64_t passes,
                                double qscale, double inv_norm, double dequant) {
    return box_core(image, r, a, M, passes, qscale, inv_norm, dequant, false, 0.0f, 0.0f);
}

py::array_t<float> box_local_noise(f32_array residual, int64_t r, int64_t a, int64_t M, int64_t passes,
                                   double qscale, double inv_norm, double dequant, float cap2,
                                   float floor) {
    return box_core(residual, r, a, M, passes, qscale, inv_norm, dequant, true, cap2, floor);
}

// The k-th smallest |x| (0-based) for each k in `ks` (ascending not required),
// exactly: |x| as float32 orders like its bit pattern, so a histogram of the
// top 16 bits finds each k's bin (one parallel pass) and only that bin's values
// are selected (a second pass, then nth_element on a few thousand values).
py::array_t<float> kth_abs(f32_array x, py::array_t<int64_t, py::array::c_style | py::array::forcecast> ks) {
    const int64_t n = x.size();
    const int64_t nk = ks.size();
    require(n > 0, "kth_abs: empty input");
    const float* v = x.data();
    const int64_t* kk = ks.data();
    for (int64_t j = 0; j < nk; ++j) require(kk[j] >= 0 && kk[j] < n, "kth_abs: rank out of range");
    constexpr int kBins = 1 << 15;  // |x| has a clear sign bit: 31 bits, top 15 after >> 16
    auto bin_of = [](float f) {
        uint32_t b;
        std::memcpy(&b, &f, 4);
        return static_cast<int>((b & 0x7FFFFFFFu) >> 16);
    };
    py::array_t<float> out(static_cast<py::ssize_t>(nk));
    float* o = out.mutable_data();
    std::vector<int64_t> ranks(kk, kk + nk);
    {
        py::gil_scoped_release release;
        const int T = std::max(1, n_threads());
        const int64_t chunk = (n + T - 1) / T;
        std::vector<std::vector<int64_t>> hist(T);
        parallel_run(T, [&](int64_t t) {
            auto& h = hist[t];
            h.assign(kBins, 0);
            const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
            for (int64_t i = lo; i < hi; ++i) ++h[bin_of(v[i])];
        });
        std::vector<int64_t> cum(kBins + 1, 0);
        for (int b = 0; b < kBins; ++b) {
            int64_t c = 0;
            for (int t = 0; t < T; ++t) c += hist[t][b];
            cum[b + 1] = cum[b] + c;
        }
        for (int64_t j = 0; j < nk; ++j) {
            const int64_t k = ranks[j];
            const int b = static_cast<int>(std::upper_bound(cum.begin(), cum.end(), k) - cum.begin()) - 1;
            std::vector<float> sel;
            sel.reserve(static_cast<size_t>(cum[b + 1] - cum[b]));
            for (int64_t i = 0; i < n; ++i)
                if (bin_of(v[i]) == b) sel.push_back(std::fabs(v[i]));
            const int64_t r = k - cum[b];
            std::nth_element(sel.begin(), sel.begin() + r, sel.end());
            o[j] = sel[static_cast<size_t>(r)];
        }
    }
    return out;
}

}  // namespace
}  // namespace fastsac

void bind_boxfilter(py::module_& m) {
    m.def("box_gaussian", &fastsac::box_gaussian, py::arg("image"), py::arg("r"), py::arg("a"),
          py::arg("M"), py::arg("passes"), py::arg("qscale"), py::arg("inv_norm"), py::arg("dequant"),
          "Cascade of `passes` extended boxes (inner weight M, outer weight a at r+1) per axis on\n"
          "fixed-point integers rint(x * qscale), reflected borders; returns float32 q * dequant.\n"
          "Equal bit for bit to fastsac.boxfilter._box_gaussian_numpy_ref.");
    m.def("kth_abs", &fastsac::kth_abs, py::arg("x"), py::arg("ranks"),
          "The k-th smallest |x| (0-based) of a float32 array for each k in ranks, exactly.");
    m.def("box_local_noise", &fastsac::box_local_noise, py::arg("residual"), py::arg("r"), py::arg("a"),
          py::arg("M"), py::arg("passes"), py::arg("qscale"), py::arg("inv_norm"), py::arg("dequant"),
          py::arg("cap2"), py::arg("floor"),
          "sqrt(max(box cascade of min(residual**2, cap2), floor)) in float32, fused; equal bit for\n"
          "bit to fastsac.boxfilter._box_local_noise_numpy_ref.");
}
