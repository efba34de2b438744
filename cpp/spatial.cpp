// Spatial kernels: first nearest neighbours and distance-cutoff clusters on a
// uniform cell grid (O(N) expected for micrograph-like point densities).
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

// Union-find with path halving; union by smaller root index keeps it simple.
struct DisjointSet {
    std::vector<int64_t> parent;
    explicit DisjointSet(int64_t n) : parent(n) { std::iota(parent.begin(), parent.end(), int64_t{0}); }
    int64_t find(int64_t a) {
        while (parent[a] != a) {
            parent[a] = parent[parent[a]];
            a = parent[a];
        }
        return a;
    }
    void unite(int64_t a, int64_t b) {
        a = find(a);
        b = find(b);
        if (a == b) return;
        if (a < b) parent[b] = a; else parent[a] = b;
    }
};

py::tuple clusters(f64_array xy_arr, double cutoff) {
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "clusters: xy must have shape (N, 2)");
    require(cutoff >= 0, "clusters: cutoff must be >= 0");
    const int64_t n = xy_arr.shape(0);
    const double* xy = xy_arr.data();
    py::array_t<int64_t> labels(static_cast<py::ssize_t>(n));
    py::array_t<int64_t> sizes(static_cast<py::ssize_t>(n));
    if (n == 0) return py::make_tuple(labels, sizes);
    int64_t* pl = labels.mutable_data();
    int64_t* ps = sizes.mutable_data();
    CellIndex ci;
    {
        py::gil_scoped_release release;
        ci.build(xy, n, make_grid(xy, n, cutoff * (1 + 1e-6), 1.0),
                 [](int64_t m, auto&& f) { parallel_run(m, f); });
    }
    const Grid& g = ci.grid;
    const double r2 = cutoff * cutoff;  // linked when dx*dx + dy*dy <= cutoff**2 (as cKDTree)
    // Linked pairs (positions in bucket order, which keeps the union-find
    // below cache-friendly), found in parallel over rows of cells with a half
    // stencil: same cell q > p, the right neighbour and three cells of the next row.
    std::vector<std::vector<std::pair<int64_t, int64_t>>> pairs(g.ny);
    const int64_t rows_per_task = std::max<int64_t>(1, 8192 / g.nx);  // ~8k cells per task
    parallel_for_grained(g.ny, rows_per_task, 64 * n_threads() * rows_per_task, [&](int64_t cy) {
        auto& out = pairs[cy];
        for (int64_t cx = 0; cx < g.nx; ++cx) {
            const int64_t cell = cy * g.nx + cx;
            const int64_t nb[4][2] = {{cx + 1, cy}, {cx - 1, cy + 1}, {cx, cy + 1}, {cx + 1, cy + 1}};
            for (int64_t p = ci.start[cell]; p < ci.start[cell + 1]; ++p) {
                const double x = ci.sx[p], y = ci.sy[p];
                for (int64_t q = p + 1; q < ci.start[cell + 1]; ++q) {
                    const double dx = ci.sx[q] - x, dy = ci.sy[q] - y;
                    if (dx * dx + dy * dy <= r2) out.emplace_back(p, q);
                }
                for (const auto& c2 : nb) {
                    if (c2[0] < 0 || c2[0] >= g.nx || c2[1] >= g.ny) continue;
                    const int64_t other = c2[1] * g.nx + c2[0];
                    for (int64_t q = ci.start[other]; q < ci.start[other + 1]; ++q) {
                        const double dx = ci.sx[q] - x, dy = ci.sy[q] - y;
                        if (dx * dx + dy * dy <= r2) out.emplace_back(p, q);
                    }
                }
            }
        }
    });
    {
        py::gil_scoped_release release;
        DisjointSet ds(n);
        for (auto& v : pairs) {
            for (const auto& pq : v) ds.unite(pq.first, pq.second);
            std::vector<std::pair<int64_t, int64_t>>().swap(v);
        }
        // Roots are the lowest position of their cluster and precede its members,
        // so one ascending pass flattens the forest and gathers per-root data.
        std::vector<int64_t>& comp = ds.parent;
        std::unique_ptr<int64_t[]> min_orig(new int64_t[n]), csize(new int64_t[n]);
        for (int64_t p = 0; p < n; ++p) {
            const int64_t r = comp[p] = comp[comp[p]];
            if (r == p) {
                min_orig[p] = ci.idx[p];
                csize[p] = 1;
            } else {
                min_orig[r] = std::min(min_orig[r], ci.idx[p]);
                ++csize[r];
            }
        }
        // Canonical labels: clusters numbered in order of their lowest original index.
        std::vector<int64_t> owner(n, -1);  // lowest original index -> root position
        for (int64_t p = 0; p < n; ++p)
            if (comp[p] == p) owner[min_orig[p]] = p;
        int64_t next = 0;
        for (int64_t i = 0; i < n; ++i)
            if (owner[i] >= 0) min_orig[owner[i]] = next++;  // min_orig now holds the label
        for (int64_t p = 0; p < n; ++p) {
            const int64_t r = comp[p], i = ci.idx[p];
            pl[i] = min_orig[r];
            ps[i] = csize[r];
        }
    }
    return py::make_tuple(labels, sizes);
}

}  // namespace
}  // namespace fastsac

void bind_spatial(py::module_& m) {
    m.def("nearest_neighbors", &fastsac::nearest_neighbors, py::arg("xy"),
          "First nearest neighbour of each point -> (distance float64 (N,), index int64 (N,)).");
    m.def("clusters", &fastsac::clusters, py::arg("xy"), py::arg("cutoff"),
          "Single-linkage clusters at distance <= cutoff -> (labels int64 (N,), sizes int64 (N,)).");
}
