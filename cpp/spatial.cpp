// Spatial kernels: first nearest neighbours on a uniform cell grid (clusters:
// clusters.cpp) (O(N) expected for micrograph-like point densities).
#include "common.hpp"
#include "grid.hpp"

#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Nearest other point of (x, y) (original index `self`): distance
// sqrt(dx*dx + dy*dy) in float64 and the lowest index among equal distances,
// exactly as the reference. Rings of cells are scanned outwards until the
// best distance is strictly below the distance to any unscanned cell.
inline void nearest_one(const CellIndex& ci, double x, double y, int64_t self, double& best,
                        int64_t& best_j) {
    const Grid& g = ci.grid;
    const int64_t cx = g.ix(x), cy = g.iy(y);
    const double ux = x - g.x0, uy = y - g.y0, c = g.cell;
    best = kInf;
    best_j = -1;
    // Candidates whose squared distance exceeds best_d2 by more than a few
    // ulps cannot round to a square root <= best: skip their sqrt.
    double best_d2_cut = kInf;
    const int64_t kmax = std::max({cx, g.nx - 1 - cx, cy, g.ny - 1 - cy});
    for (int64_t k = 0; k <= kmax; ++k) {
        const int64_t ylo = cy - k, yhi = cy + k, xlo = cx - k, xhi = cx + k;
        for (int64_t yy = std::max<int64_t>(ylo, 0); yy <= std::min(yhi, g.ny - 1); ++yy) {
            const bool edge_row = (yy == ylo || yy == yhi);
            const int64_t step = edge_row ? 1 : (xhi - xlo);
            for (int64_t xx = xlo; xx <= xhi; xx += (step > 0 ? step : 1)) {
                if (xx < 0 || xx >= g.nx) continue;
                const int64_t cell = yy * g.nx + xx;
                for (int64_t p = ci.start[cell]; p < ci.start[cell + 1]; ++p) {
                    const int64_t j = ci.idx[p];
                    if (j == self) continue;
                    const double dx = ci.sx[p] - x, dy = ci.sy[p] - y;
                    const double d2 = dx * dx + dy * dy;
                    if (d2 > best_d2_cut) continue;
                    const double d = std::sqrt(d2);
                    if (d < best || (d == best && j < best_j)) {
                        best = d;
                        best_j = j;
                        best_d2_cut = d2 * (1 + 1e-14);
                    }
                }
            }
        }
        // Distance from the point to the nearest cell outside the scanned block
        // (infinite on sides where the grid ends).
        double bound = kInf;
        if (cx - k - 1 >= 0) bound = std::min(bound, ux - static_cast<double>(cx - k) * c);
        if (cx + k + 1 < g.nx) bound = std::min(bound, static_cast<double>(cx + k + 1) * c - ux);
        if (cy - k - 1 >= 0) bound = std::min(bound, uy - static_cast<double>(cy - k) * c);
        if (cy + k + 1 < g.ny) bound = std::min(bound, static_cast<double>(cy + k + 1) * c - uy);
        // Margin for the rounding of ux, uy and the cell edges (relative to their size).
        const double margin = 1e-9 * (c * static_cast<double>(k + 2) + std::fabs(ux) + std::fabs(uy));
        if (best < bound - margin) return;
    }
}

py::tuple nearest_neighbors(f64_array xy_arr) {
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "nearest_neighbors: xy must have shape (N, 2)");
    const int64_t n = xy_arr.shape(0);
    const double* xy = xy_arr.data();
    py::array_t<double> dist(static_cast<py::ssize_t>(n));
    py::array_t<int64_t> index(static_cast<py::ssize_t>(n));
    double* pd = dist.mutable_data();
    int64_t* pi = index.mutable_data();
    if (n < 2) {
        for (int64_t i = 0; i < n; ++i) { pd[i] = kInf; pi[i] = -1; }
        return py::make_tuple(dist, index);
    }
    CellIndex ci;
    {
        py::gil_scoped_release release;
        ci.build(xy, n, make_grid(xy, n, 0.0, 2.0),
                 [](int64_t m, auto&& f) { parallel_run(m, f); });
    }
    // Queries in bucket order so consecutive queries touch the same cells;
    // results are written in that order and permuted back in one tight pass
    // (interleaving the random writes with the queries was twice as slow).
    std::unique_ptr<double[]> bd(new double[n]);
    std::unique_ptr<int64_t[]> bj(new int64_t[n]);
    parallel_for_grained(n, 8192, 1 << 20, [&](int64_t p) {
        nearest_one(ci, ci.sx[p], ci.sy[p], ci.idx[p], bd[p], bj[p]);
    });
    {
        py::gil_scoped_release release;
        for (int64_t p = 0; p < n; ++p) {
            const int64_t i = ci.idx[p];
            pd[i] = bd[p];
            pi[i] = bj[p];
        }
    }
    return py::make_tuple(dist, index);
}

}  // namespace
}  // namespace fastsac

void bind_spatial(py::module_& m) {
    m.def("nearest_neighbors", &fastsac::nearest_neighbors, py::arg("xy"),
          "First nearest neighbour of each point -> (distance float64 (N,), index int64 (N,)).");
}
