// Shared helpers for the fastsac C++ kernels: OpenMP-optional parallel loops that
// release the GIL, check for Ctrl-C between blocks and carry exceptions out of
// the parallel region.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>

#ifdef FASTSAC_HAVE_OPENMP
#include <omp.h>
#endif

namespace fastsac {

namespace py = pybind11;

inline int n_threads() {
#ifdef FASTSAC_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef FASTSAC_HAVE_OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Run body(i) for i in [0, n) in parallel (dynamic schedule) without touching
// the GIL (call it with the GIL released). The first exception thrown by body
// is rethrown after the loop.
template <class F>
void parallel_run(int64_t n, F&& body) {
    std::exception_ptr err = nullptr;
    std::mutex err_mutex;
#ifdef FASTSAC_HAVE_OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
#endif
    for (int64_t i = 0; i < n; ++i) {
        try {
            body(i);
        } catch (...) {
            std::lock_guard<std::mutex> lock(err_mutex);
            if (!err) err = std::current_exception();
        }
    }
    if (err) std::rethrow_exception(err);
}

// Run body(i) for i in [0, n) in parallel (dynamic schedule), `block` items at
// a time. Must be called with the GIL held: the GIL is released while a block
// runs and re-acquired between blocks to check for signals (KeyboardInterrupt
// raises py::error_already_set). The first exception thrown by body is
// rethrown after the block; body must not touch Python objects.
template <class F>
void parallel_for(int64_t n, int64_t block, F&& body) {
    if (block < 1) block = 1;
    for (int64_t start = 0; start < n; start += block) {
        const int64_t stop = std::min(n, start + block);
        {
            py::gil_scoped_release release;
            parallel_run(stop - start, [&](int64_t j) { body(start + j); });
        }
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
}

// Same, for cheap per-item work: items are grouped into chunks of `grain`
// consecutive indices so scheduling overhead stays small (and inputs of at
// most one chunk run on the calling thread: waking a team costs more than the
// work, especially on a busy machine).
template <class F>
void parallel_for_grained(int64_t n, int64_t grain, int64_t block, F&& body) {
    if (grain < 1) grain = 1;
    const int64_t n_chunks = (n + grain - 1) / grain;
    parallel_for(n_chunks, std::max<int64_t>(1, block / grain), [&](int64_t c) {
        const int64_t lo = c * grain, hi = std::min(n, lo + grain);
        for (int64_t i = lo; i < hi; ++i) body(i);
    });
}

// Portable 64-bit popcount / count-trailing-zeros.
inline int popcount64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(x);
#else
    int c = 0;
    for (; x; x &= x - 1) ++c;
    return c;
#endif
}

inline int ctz64(uint64_t x) {  // x != 0
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int c = 0;
    while (!(x & 1)) { x >>= 1; ++c; }
    return c;
#endif
}

// Half-sample reflection of index i into [0, n) (d c b a | a b c d | d c b a),
// repeated for any distance: scipy.ndimage's mode="reflect".
inline int64_t reflect_index(int64_t i, int64_t n) {
    const int64_t period = 2 * n;
    int64_t m = i % period;
    if (m < 0) m += period;
    return m < n ? m : period - 1 - m;
}

// Shape checks (the Python wrappers coerce; these catch misuse of _core).
inline void require(bool ok, const char* msg) {
    if (!ok) throw py::value_error(msg);
}

using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using f64_array = py::array_t<double, py::array::c_style | py::array::forcecast>;

}  // namespace fastsac
