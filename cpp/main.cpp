// fastsac._core: the pybind11 module. Each cpp/<stage>.cpp defines one bind_<stage>().
#include <pybind11/pybind11.h>
#ifdef FASTSAC_HAVE_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

void bind_filters(py::module_& m);
void bind_gaussian(py::module_& m);
void bind_peaks(py::module_& m);
void bind_spatial(py::module_& m);
void bind_regions(py::module_& m);
void bind_pairs(py::module_& m);

static int openmp_threads() {
#ifdef FASTSAC_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastsac C++ kernels (private; use the fastsac API)";
    m.def("openmp_threads", &openmp_threads, "Threads OpenMP will use (1 when built without OpenMP).");
    bind_filters(m);
    bind_gaussian(m);
    bind_peaks(m);
    bind_spatial(m);
    bind_regions(m);
    bind_pairs(m);
}
