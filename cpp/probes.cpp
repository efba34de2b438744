// Machine probes for the roofline (benchmarks/roofline.py): STREAM-like copy and
// triad over all OpenMP threads, and a peak floating-point rate from
// independent chains of fused multiply-adds (AVX2 + FMA when the CPU has them,
// scalar FMA otherwise). Not used by the pipeline.
#include "common.hpp"

#include <chrono>
#include <cmath>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FASTSAC_X86 1
#endif

namespace py = pybind11;

namespace fastsac {
namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// c[i] = a[i] (copy) or a[i] = b[i] + s * c[i] (triad) over float64 arrays of n
// elements, statically split over the threads (each thread touches its own
// pages first, so pages sit near the core that streams them). Returns the best
// seconds per sweep over `repeat` sweeps.
double stream(int kind, int64_t n, int repeat) {
    std::unique_ptr<double[]> a(new double[n]), b(new double[n]), c(new double[n]);
    double best = 1e300;
    {
        py::gil_scoped_release release;
#ifdef FASTSAC_HAVE_OPENMP
#pragma omp parallel for schedule(static)
#endif
        for (int64_t i = 0; i < n; ++i) {
            a[i] = 1.0;
            b[i] = 2.0;
            c[i] = 0.5;
        }
        const double s = 3.0;
        for (int k = 0; k < repeat; ++k) {
            const double t0 = now();
            if (kind == 0) {
#ifdef FASTSAC_HAVE_OPENMP
#pragma omp parallel for schedule(static)
#endif
                for (int64_t i = 0; i < n; ++i) c[i] = a[i];
            } else {
#ifdef FASTSAC_HAVE_OPENMP
#pragma omp parallel for schedule(static)
#endif
                for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
            }
            best = std::min(best, now() - t0);
        }
    }
    volatile double sink = a[n / 2] + c[n / 3];
    (void)sink;
    return best;
}

#ifdef FASTSAC_X86
// 12 independent 4-wide FMA chains (enough to cover the FMA latency on two
// pipes): 2 flops x 4 lanes x 12 per iteration.
__attribute__((target("avx2,fma"))) double fma_f64(int64_t iters, double seed) {
    __m256d acc[12];
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_pd(seed + j);
    const __m256d m = _mm256_set1_pd(0.999999), add = _mm256_set1_pd(1e-7);
    for (int64_t i = 0; i < iters; ++i)
        for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_pd(acc[j], m, add);
    __m256d s = acc[0];
    for (int j = 1; j < 12; ++j) s = _mm256_add_pd(s, acc[j]);
    double out[4];
    _mm256_storeu_pd(out, s);
    return out[0] + out[1] + out[2] + out[3];
}

__attribute__((target("avx2,fma"))) double fma_f32(int64_t iters, double seed) {
    __m256 acc[12];
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(static_cast<float>(seed + j));
    const __m256 m = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; ++i)
        for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], m, add);
    __m256 s = acc[0];
    for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    double t = 0;
    for (float v : out) t += v;
    return t;
}

bool have_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

// Scalar fallback: 8 independent chains of std::fma.
double fma_scalar(int64_t iters, double seed) {
    double acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = seed + j;
    for (int64_t i = 0; i < iters; ++i)
        for (int j = 0; j < 8; ++j) acc[j] = std::fma(acc[j], 0.999999, 1e-7);
    double s = 0;
    for (double v : acc) s += v;
    return s;
}

// Peak flop rate over all threads: each thread runs `iters` iterations; returns
// (flops, seconds, "isa").
py::tuple peak_flops(int64_t iters, bool single) {
    const int T = n_threads();
    std::vector<double> sink(T, 0.0);
    std::string isa = "scalar-fma";
    int64_t per_iter = 2 * 8;
#ifdef FASTSAC_X86
    const bool simd = have_avx2_fma();
    if (simd) {
        isa = single ? "avx2-fma-f32" : "avx2-fma-f64";
        per_iter = single ? 2 * 8 * 12 : 2 * 4 * 12;
    }
#else
    const bool simd = false;
#endif
    double t0, t1;
    {
        py::gil_scoped_release release;
        t0 = now();
        parallel_run(T, [&](int64_t t) {
#ifdef FASTSAC_X86
            if (simd) {
                sink[t] = single ? fma_f32(iters, 1.0 + t) : fma_f64(iters, 1.0 + t);
                return;
            }
#endif
            sink[t] = fma_scalar(iters, 1.0 + t);
        });
        t1 = now();
    }
    volatile double keep = sink[0];
    (void)keep;
    (void)simd;
    return py::make_tuple(static_cast<double>(per_iter) * static_cast<double>(iters) * T, t1 - t0, isa);
}

}  // namespace
}  // namespace fastsac

void bind_probes(py::module_& m) {
    m.def("stream_seconds", &fastsac::stream, py::arg("kind"), py::arg("n"), py::arg("repeat"),
          "Best seconds of one STREAM sweep over float64 arrays of n elements on all OpenMP\n"
          "threads: kind 0 = copy (16 B/element), 1 = triad a = b + s*c (24 B/element).");
    m.def("peak_flops", &fastsac::peak_flops, py::arg("iters"), py::arg("single") = false,
          "(flops, seconds, isa) of independent FMA chains on every OpenMP thread (AVX2+FMA\n"
          "when available; single=True for float32 lanes).");
}
