// Uniform cell grid over 2-D points, shared by NMS, nearest neighbours and
// clustering. Cells are at least `min_cell` wide (so all points within that
// distance lie in the 3x3 neighbourhood) and the grid never has more than about
// 4 N cells, whatever the spread of the points.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace fastsac {

struct Grid {
    double x0 = 0, y0 = 0, cell = 1;
    int64_t nx = 1, ny = 1;

    inline int64_t clamp_cell(double u, int64_t n) const {
        const double f = std::floor(u / cell);
        if (!(f > 0)) return 0;  // also NaN
        if (f >= static_cast<double>(n - 1)) return n - 1;
        return static_cast<int64_t>(f);
    }
    inline int64_t ix(double x) const { return clamp_cell(x - x0, nx); }
    inline int64_t iy(double y) const { return clamp_cell(y - y0, ny); }
    inline int64_t id(double x, double y) const { return iy(y) * nx + ix(x); }
    int64_t n_cells() const { return nx * ny; }
};

// xy: (n, 2) row-major [x, y]. points_per_cell: wanted average occupancy.
inline Grid make_grid(const double* xy, int64_t n, double min_cell, double points_per_cell) {
    Grid g;
    if (n == 0) return g;
    double xmin = xy[0], xmax = xy[0], ymin = xy[1], ymax = xy[1];
    for (int64_t i = 1; i < n; ++i) {
        xmin = std::min(xmin, xy[2 * i]);
        xmax = std::max(xmax, xy[2 * i]);
        ymin = std::min(ymin, xy[2 * i + 1]);
        ymax = std::max(ymax, xy[2 * i + 1]);
    }
    const double wx = xmax - xmin, wy = ymax - ymin;
    const double nd = static_cast<double>(n);
    double c;
    if (wx > 0 && wy > 0)
        c = std::sqrt(wx * wy * points_per_cell / nd);
    else
        c = std::max(wx, wy) * points_per_cell / nd;
    c = std::max(c, min_cell);
    if (!(c > 0) || !std::isfinite(c)) c = 1.0;
    const double max_cells = 4.0 * nd + 64.0;
    while (true) {
        const double fx = std::floor(wx / c) + 1, fy = std::floor(wy / c) + 1;
        if (fx * fy <= max_cells) {
            g.nx = static_cast<int64_t>(fx);
            g.ny = static_cast<int64_t>(fy);
            break;
        }
        c *= 1.5;
    }
    g.x0 = xmin;
    g.y0 = ymin;
    g.cell = c;
    return g;
}

// Points bucketed by cell (counting sort, stable: indices ascend within a cell),
// with coordinates copied in bucket order for cache-friendly scans.
struct CellIndex {
    Grid grid;
    std::vector<int64_t> start;  // n_cells + 1
    std::vector<int64_t> idx;    // original index, bucket order
    std::vector<double> sx, sy;  // coordinates, bucket order

    void build(const double* xy, int64_t n, const Grid& g) {
        grid = g;
        const int64_t nc = g.n_cells();
        std::vector<int64_t> cid(n);
        for (int64_t i = 0; i < n; ++i) cid[i] = g.id(xy[2 * i], xy[2 * i + 1]);
        start.assign(nc + 1, 0);
        for (int64_t i = 0; i < n; ++i) ++start[cid[i] + 1];
        for (int64_t c = 0; c < nc; ++c) start[c + 1] += start[c];
        std::vector<int64_t> fill(start.begin(), start.end() - 1);
        idx.resize(n);
        sx.resize(n);
        sy.resize(n);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t p = fill[cid[i]]++;
            idx[p] = i;
            sx[p] = xy[2 * i];
            sy[p] = xy[2 * i + 1];
        }
    }
};

}  // namespace fastsac
