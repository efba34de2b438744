// Uniform cell grid over 2-D points, shared by NMS, nearest neighbours and
// clustering. Cells are at least `min_cell` wide (so all points within that
// distance lie in the 3x3 neighbourhood) and the grid never has more than about
// 4 N cells, whatever the spread of the points.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
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

// Grid over the bounding box [xmin, xmax] x [ymin, ymax] of n points.
// points_per_cell: wanted average occupancy.
inline Grid make_grid_bounds(double xmin, double xmax, double ymin, double ymax, int64_t n,
                             double min_cell, double points_per_cell) {
    Grid g;
    if (n == 0) return g;
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

// xy: (n, 2) row-major [x, y]. points_per_cell: wanted average occupancy.
inline Grid make_grid(const double* xy, int64_t n, double min_cell, double points_per_cell) {
    if (n == 0) return Grid{};
    double xmin = xy[0], xmax = xy[0], ymin = xy[1], ymax = xy[1];
    for (int64_t i = 1; i < n; ++i) {
        xmin = std::min(xmin, xy[2 * i]);
        xmax = std::max(xmax, xy[2 * i]);
        ymin = std::min(ymin, xy[2 * i + 1]);
        ymax = std::max(ymax, xy[2 * i + 1]);
    }
    return make_grid_bounds(xmin, xmax, ymin, ymax, n, min_cell, points_per_cell);
}

// Points bucketed by cell (stable: indices ascend within a cell), with
// coordinates copied in bucket order for cache-friendly scans. Built with a
// two-level counting sort (coarse buckets of consecutive cells first, written
// as a few thousand sequential streams, then cells inside each bucket in
// cache) because a one-level scatter of millions of points into millions of
// cells is dominated by cache misses.
struct CellIndex {
    Grid grid;
    // Uninitialised buffers (every entry is written by build()).
    std::unique_ptr<int64_t[]> start;  // n_cells + 1
    std::unique_ptr<int64_t[]> idx;    // original index, bucket order
    std::unique_ptr<double[]> sx, sy;  // coordinates, bucket order

    template <class ParallelFor>
    void build(const double* xy, int64_t n, const Grid& g, ParallelFor&& pfor) {
        grid = g;
        const int64_t nc = g.n_cells();
        int shift = 0;
        while (((nc - 1) >> shift) >= 4096) ++shift;
        const int64_t nb = ((nc - 1) >> shift) + 1;
        struct Rec { double x, y; int64_t i; };
        std::vector<int64_t> boff(nb + 1, 0);
        for (int64_t i = 0; i < n; ++i) ++boff[(g.id(xy[2 * i], xy[2 * i + 1]) >> shift) + 1];
        for (int64_t b = 0; b < nb; ++b) boff[b + 1] += boff[b];
        std::unique_ptr<Rec[]> recs(new Rec[n]);
        {
            std::vector<int64_t> fill(boff.begin(), boff.end() - 1);
            for (int64_t i = 0; i < n; ++i) {
                const double x = xy[2 * i], y = xy[2 * i + 1];
                recs[fill[g.id(x, y) >> shift]++] = Rec{x, y, i};
            }
        }
        start.reset(new int64_t[nc + 1]);
        idx.reset(new int64_t[n]);
        sx.reset(new double[n]);
        sy.reset(new double[n]);
        start[nc] = n;
        auto per_bucket = [&](int64_t b) {
            const int64_t c0 = b << shift, c1 = std::min(nc, (b + 1) << shift);
            std::vector<int64_t> cnt(c1 - c0 + 1, 0);
            for (int64_t p = boff[b]; p < boff[b + 1]; ++p) ++cnt[g.id(recs[p].x, recs[p].y) - c0 + 1];
            for (int64_t k = 0; k < c1 - c0; ++k) cnt[k + 1] += cnt[k];
            for (int64_t k = 0; k < c1 - c0; ++k) start[c0 + k] = boff[b] + cnt[k];
            for (int64_t p = boff[b]; p < boff[b + 1]; ++p) {
                const int64_t q = boff[b] + cnt[g.id(recs[p].x, recs[p].y) - c0]++;
                idx[q] = recs[p].i;
                sx[q] = recs[p].x;
                sy[q] = recs[p].y;
            }
        };
        if (n < 200000) {  // small inputs: not worth a thread team
            for (int64_t b = 0; b < nb; ++b) per_bucket(b);
        } else {
            pfor(nb, per_bucket);
        }
    }
};

}  // namespace fastsac
