// Separable Gaussian filter equal, bit for bit, to
// scipy.ndimage.gaussian_filter(image_f32, sigma, mode="reflect", truncate=t).
//
// Why bit-exact is possible: scipy filters axis 0 then axis 1; each 1-D pass
// reads the line into double, accumulates, for a symmetric kernel,
//     acc = x[i]*w[0];  for j = r .. 1:  acc += (x[i-j] + x[i+j]) * w[j]
// in double, and stores the result as float32 (the output dtype) before the
// next pass. We do the same operations in the same order per pixel, only
// vectorised across pixels (which does not change any pixel's arithmetic) and
// parallel over rows; the build has FMA contraction off. Weights come from
// Python (scipy's formula), borders are half-sample reflections
// (d c b a | a b c d | d c b a), repeated when the kernel is wider than the image.
#include "common.hpp"

#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

// acc[i] += (a[i] + b[i]) * w — the inner loop of both passes. Compiled for
// AVX2 and baseline; without FMA contraction both give identical results.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTSAC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTSAC_CLONES
#endif

FASTSAC_CLONES
void add_pair_f32(double* __restrict acc, const float* __restrict a, const float* __restrict b,
                  double w, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        acc[i] += (static_cast<double>(a[i]) + static_cast<double>(b[i])) * w;
}

FASTSAC_CLONES
void add_pair_f64(double* __restrict acc, const double* __restrict a, const double* __restrict b,
                  double w, int64_t n) {
    for (int64_t i = 0; i < n; ++i) acc[i] += (a[i] + b[i]) * w;
}

FASTSAC_CLONES
void start_f32(double* __restrict acc, const float* __restrict a, double w, int64_t n) {
    for (int64_t i = 0; i < n; ++i) acc[i] = static_cast<double>(a[i]) * w;
}

FASTSAC_CLONES
void start_f64(double* __restrict acc, const double* __restrict a, double w, int64_t n) {
    for (int64_t i = 0; i < n; ++i) acc[i] = a[i] * w;
}

// Axis 0 (columns): output row y from input rows y-r .. y+r, in column strips
// so the rows of one strip stay in cache.
void pass_rows(const float* in, float* out, int64_t h, int64_t w, const std::vector<double>& wt) {
    const int64_t r = static_cast<int64_t>(wt.size()) - 1;
    constexpr int64_t kStrip = 512, kRows = 32;
    const int64_t n_strips = (w + kStrip - 1) / kStrip;
    const int64_t n_blocks = (h + kRows - 1) / kRows;
    parallel_for(n_strips * n_blocks, 1 << 20, [&](int64_t task) {
        const int64_t x0 = (task % n_strips) * kStrip, n = std::min(kStrip, w - x0);
        const int64_t y0 = (task / n_strips) * kRows, y1 = std::min(h, y0 + kRows);
        std::vector<double> acc(n);
        for (int64_t y = y0; y < y1; ++y) {
            start_f32(acc.data(), in + y * w + x0, wt[0], n);
            for (int64_t j = r; j >= 1; --j)
                add_pair_f32(acc.data(), in + reflect_index(y - j, h) * w + x0,
                             in + reflect_index(y + j, h) * w + x0, wt[j], n);
            float* o = out + y * w + x0;
            for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(acc[i]);
        }
    });
}

// Axis 1 (rows): each row is copied into a reflected double line first.
void pass_cols(const float* in, float* out, int64_t h, int64_t w, const std::vector<double>& wt) {
    const int64_t r = static_cast<int64_t>(wt.size()) - 1;
    constexpr int64_t kRows = 16;
    const int64_t n_blocks = (h + kRows - 1) / kRows;
    parallel_for(n_blocks, 1 << 20, [&](int64_t b) {
        std::vector<double> line(w + 2 * r), acc(w);
        for (int64_t y = b * kRows; y < std::min(h, (b + 1) * kRows); ++y) {
            const float* row = in + y * w;
            for (int64_t i = 0; i < w + 2 * r; ++i) line[i] = row[reflect_index(i - r, w)];
            start_f64(acc.data(), line.data() + r, wt[0], w);
            for (int64_t j = r; j >= 1; --j)
                add_pair_f64(acc.data(), line.data() + r - j, line.data() + r + j, wt[j], w);
            float* o = out + y * w;
            for (int64_t i = 0; i < w; ++i) o[i] = static_cast<float>(acc[i]);
        }
    });
}

// weights: the kernel's centre and right half, w[0] .. w[r] (symmetric).
py::array_t<float> gaussian_filter(f32_array image, f64_array weights0, f64_array weights1) {
    require(image.ndim() == 2, "gaussian_filter: image must be 2-D");
    require(weights0.ndim() == 1 && weights0.size() >= 1 && weights1.ndim() == 1 && weights1.size() >= 1,
            "gaussian_filter: weights must be non-empty 1-D arrays (centre first)");
    const int64_t h = image.shape(0), w = image.shape(1);
    py::array_t<float> result({h, w});
    if (h == 0 || w == 0) return result;
    std::vector<double> w0(weights0.data(), weights0.data() + weights0.size());
    std::vector<double> w1(weights1.data(), weights1.data() + weights1.size());
    std::vector<float> tmp(static_cast<size_t>(h * w));
    pass_rows(image.data(), tmp.data(), h, w, w0);
    pass_cols(tmp.data(), result.mutable_data(), h, w, w1);
    return result;
}

}  // namespace
}  // namespace fastsac

void bind_gaussian(py::module_& m) {
    m.def("gaussian_filter", &fastsac::gaussian_filter, py::arg("image"), py::arg("weights_axis0"),
          py::arg("weights_axis1"),
          "Separable symmetric filter of a C-contiguous float32 (H, W) image with reflected\n"
          "borders; weights are the half kernels (centre first). With Gaussian weights equal\n"
          "to scipy.ndimage.gaussian_filter(image, sigma, mode='reflect').");
}
