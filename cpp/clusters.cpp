// Distance-cutoff clusters (single linkage, dx*dx + dy*dy <= cutoff**2) with
// canonical labels, without a pair list.
//
// Why it is fast: the points are bucketed into rows of cells at least `cutoff`
// wide (a parallel, stable counting sort by row, then by cell inside each row
// while the row is in cache). Each row band (a run of consecutive rows) is
// owned by one thread, and the points of a band occupy one contiguous range of
// positions, so the union-find over positions needs no locks: a thread links
// each row with itself and with the next row of its band as soon as that row
// is sorted, so the pair search and the union run on cache-hot data and no
// pair is ever stored. The few links that cross band boundaries are made
// serially afterwards. Roots are always the lowest position of their set
// (union by minimum), so one ascending pass flattens a band, and canonical
// labels (clusters numbered by their lowest original index) come from one
// scatter of each root's lowest original index and a parallel prefix count.
#include "common.hpp"
#include "grid.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

// Average points per cell when the cutoff does not force wider cells.
constexpr double kPointsPerCell = 1.0;
constexpr double kPosInf = std::numeric_limits<double>::infinity();

// Cell of coordinate u (offset from the grid origin): floor(u / cell) clamped,
// by a multiplication with the inverse (every phase uses this one function, so
// the assignment is consistent; cells are >= cutoff * (1 + 1e-6) wide, far more
// than the rounding of u * inv, so linked pairs are in the same or adjacent cells).
inline int64_t cell_of(double u, double inv, int64_t n) {
    const double f = std::floor(u * inv);
    if (!(f > 0)) return 0;  // also NaN
    if (f >= static_cast<double>(n - 1)) return n - 1;
    return static_cast<int64_t>(f);
}

template <class Index>
struct Rec {
    double x, y;
    Index i;
};

template <class Index>
void run_clusters(const double* xy, int64_t n, double cutoff, int64_t* out_label, int64_t* out_size) {
    const int T = std::max(1, n_threads());
    const double r2 = cutoff * cutoff;  // linked when dx*dx + dy*dy <= cutoff**2 (as cKDTree)

    // Bounds, in parallel chunks of the input.
    const int64_t chunk = (n + T - 1) / T;
    std::vector<double> bx0(T, kPosInf), bx1(T, -kPosInf), by0(T, kPosInf), by1(T, -kPosInf);
    parallel_run(T, [&](int64_t t) {
        const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
        double a = kPosInf, b = -kPosInf, c = kPosInf, d = -kPosInf;
        for (int64_t i = lo; i < hi; ++i) {
            a = std::min(a, xy[2 * i]);
            b = std::max(b, xy[2 * i]);
            c = std::min(c, xy[2 * i + 1]);
            d = std::max(d, xy[2 * i + 1]);
        }
        bx0[t] = a; bx1[t] = b; by0[t] = c; by1[t] = d;
    });
    const double xmin = *std::min_element(bx0.begin(), bx0.end());
    const double xmax = *std::max_element(bx1.begin(), bx1.end());
    const double ymin = *std::min_element(by0.begin(), by0.end());
    const double ymax = *std::max_element(by1.begin(), by1.end());
    const Grid g = make_grid_bounds(xmin, xmax, ymin, ymax, n, cutoff * (1 + 1e-6), kPointsPerCell);
    const int64_t nx = g.nx, ny = g.ny;
    const double inv = 1.0 / g.cell;
    auto row_of = [&](double y) { return cell_of(y - g.y0, inv, ny); };
    auto col_of = [&](double x) { return cell_of(x - g.x0, inv, nx); };

    // Row bands of ~32k points (at least 16 per thread for balance): one
    // thread sorts and links a band in cache.
    int64_t n_bands = std::min<int64_t>(ny, std::max<int64_t>(16 * T, n / 32768));
    const int64_t band_rows = (ny + n_bands - 1) / n_bands;
    n_bands = (ny + band_rows - 1) / band_rows;

    // Stable counting sort of the records by band: per-thread counts over
    // contiguous input chunks, so original indices ascend within a band.
    std::vector<std::vector<int64_t>> cursor(T, std::vector<int64_t>(n_bands, 0));
    std::unique_ptr<Index[]> owner(new Index[n]);  // lowest original index -> root position
    parallel_run(T, [&](int64_t t) {
        const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
        auto& c = cursor[t];
        for (int64_t i = lo; i < hi; ++i) ++c[row_of(xy[2 * i + 1]) / band_rows];
        std::fill(owner.get() + lo, owner.get() + hi, Index(-1));
    });
    std::vector<int64_t> band_start(n_bands + 1, 0);
    {
        int64_t pos = 0;
        for (int64_t b = 0; b < n_bands; ++b) {
            band_start[b] = pos;
            for (int t = 0; t < T; ++t) {
                const int64_t c = cursor[t][b];
                cursor[t][b] = pos;
                pos += c;
            }
        }
        band_start[n_bands] = pos;
    }
    std::unique_ptr<Rec<Index>[]> recs(new Rec<Index>[n]);
    parallel_run(T, [&](int64_t t) {
        const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
        auto& cur = cursor[t];
        for (int64_t i = lo; i < hi; ++i) {
            const double x = xy[2 * i], y = xy[2 * i + 1];
            recs[cur[row_of(y) / band_rows]++] = Rec<Index>{x, y, static_cast<Index>(i)};
        }
    });

    std::unique_ptr<double[]> sx(new double[n]), sy(new double[n]);
    std::unique_ptr<Index[]> idx(new Index[n]), comp(new Index[n]);
    std::unique_ptr<Index[]> size(new Index[n]), low(new Index[n]);
    std::vector<int64_t> row_first(ny + 1, n);  // first position of each row
    auto find = [&](Index a) {
        while (comp[a] != a) {
            comp[a] = comp[comp[a]];
            a = comp[a];
        }
        return a;
    };
    // Union by minimum: the root of a set is its lowest position. Returns the
    // root that was re-parented, or -1.
    auto unite = [&](Index a, Index b) -> Index {
        a = find(a);
        b = find(b);
        if (a == b) return -1;
        if (a < b) std::swap(a, b);
        comp[a] = b;
        return a;
    };
    // Link p with positions [q0, q1).
    auto link_range = [&](int64_t p, int64_t q0, int64_t q1) {
        const double x = sx[p], y = sy[p];
        for (int64_t q = q0; q < q1; ++q) {
            const double dx = sx[q] - x, dy = sy[q] - y;
            if (dx * dx + dy * dy <= r2) unite(static_cast<Index>(p), static_cast<Index>(q));
        }
    };

    // Per band: sort by cell (row-major) in cache, link every pair inside the
    // band with a half stencil (same cell after p, right cell, three cells of
    // the next row: each a contiguous position range), flatten, and collect
    // per-root size and lowest original index. Bands own disjoint position
    // ranges: no locks.
    parallel_run(n_bands, [&](int64_t b) {
        const int64_t p0 = band_start[b], p1 = band_start[b + 1], m = p1 - p0;
        const int64_t y0 = b * band_rows, rows = std::min(ny, y0 + band_rows) - y0;
        std::vector<int64_t> st(rows * nx + 1, 0);
        std::vector<int32_t> key(m);
        for (int64_t k = 0; k < m; ++k) {
            const Rec<Index>& r = recs[p0 + k];
            key[k] = static_cast<int32_t>((row_of(r.y) - y0) * nx + col_of(r.x));
            ++st[key[k] + 1];
        }
        st[0] = p0;
        for (int64_t c = 0; c < rows * nx; ++c) st[c + 1] += st[c];
        {
            std::vector<int64_t> fill(st.begin(), st.end() - 1);
            for (int64_t k = 0; k < m; ++k) {
                const Rec<Index>& r = recs[p0 + k];
                const int64_t q = fill[key[k]]++;
                sx[q] = r.x;
                sy[q] = r.y;
                idx[q] = r.i;
            }
        }
        for (int64_t yy = 0; yy < rows; ++yy) row_first[y0 + yy] = st[yy * nx];
        for (int64_t p = p0; p < p1; ++p) comp[p] = static_cast<Index>(p);
        for (int64_t yy = 0; yy < rows; ++yy) {
            const int64_t* row = st.data() + yy * nx;
            const int64_t* nxt = (yy + 1 < rows) ? row + nx : nullptr;
            for (int64_t c = 0; c < nx; ++c) {
                const int64_t a0 = row[c], a1 = row[c + 1];
                if (a0 == a1) continue;
                const int64_t b1 = row[std::min(c + 2, nx)];
                for (int64_t p = a0; p < a1; ++p) {
                    link_range(p, p + 1, b1);
                    if (nxt) link_range(p, nxt[std::max<int64_t>(c - 1, 0)], nxt[std::min(c + 2, nx)]);
                }
            }
        }
        // Parents are lower positions and every root of a band is in it, so one
        // ascending pass points everything at its root.
        for (int64_t p = p0; p < p1; ++p) {
            const Index r = comp[p] = comp[comp[p]];
            if (r == p) {
                size[p] = 1;
                low[p] = idx[p];
            } else {
                ++size[r];
                low[r] = std::min(low[r], idx[p]);
            }
        }
        for (int64_t p = p0; p < p1; ++p)
            if (comp[p] == p) owner[low[p]] = static_cast<Index>(p);
    });
    recs.reset();

    // Links across band boundaries (last row of a band, first row of the next),
    // serially. Only band roots are re-parented.
    {
        // Cell starts of row y (its positions are contiguous: row_first).
        auto row_starts = [&](int64_t y, std::vector<int64_t>& out) {
            out.assign(nx + 1, 0);
            for (int64_t p = row_first[y]; p < row_first[y + 1]; ++p) ++out[col_of(sx[p]) + 1];
            out[0] = row_first[y];
            for (int64_t c = 0; c < nx; ++c) out[c + 1] += out[c];
        };
        std::vector<Index> moved;
        std::vector<int64_t> st_a, st_b;
        for (int64_t b = 1; b < n_bands; ++b) {
            const int64_t y = b * band_rows;
            row_starts(y - 1, st_a);
            row_starts(y, st_b);
            for (int64_t c = 0; c < nx; ++c) {
                const int64_t q0 = st_b[std::max<int64_t>(c - 1, 0)], q1 = st_b[std::min(c + 2, nx)];
                for (int64_t p = st_a[c]; p < st_a[c + 1]; ++p) {
                    const double x = sx[p], yy = sy[p];
                    for (int64_t q = q0; q < q1; ++q) {
                        const double dx = sx[q] - x, dy = sy[q] - yy;
                        if (dx * dx + dy * dy <= r2) {
                            const Index r = unite(static_cast<Index>(p), static_cast<Index>(q));
                            if (r >= 0) moved.push_back(r);
                        }
                    }
                }
            }
        }
        // Fold each moved root's size and lowest index into its parent,
        // children first (a parent is always a lower position), then compress.
        std::sort(moved.begin(), moved.end());
        for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
            const Index r = *it, q = comp[r];
            size[q] += size[r];
            owner[low[r]] = -1;
            if (low[r] < low[q]) {
                owner[low[q]] = -1;
                low[q] = low[r];
                owner[low[q]] = q;
            }
        }
        for (Index r : moved) comp[r] = comp[comp[r]];
    }

    // Canonical labels: clusters numbered in order of their lowest original
    // index, by a prefix count over `owner` (parallel in chunks).
    const int64_t n_chunks = 4 * T;
    const int64_t lchunk = (n + n_chunks - 1) / n_chunks;
    std::vector<int64_t> base(n_chunks + 1, 0);
    parallel_run(n_chunks, [&](int64_t k) {
        const int64_t lo = k * lchunk, hi = std::min(n, lo + lchunk);
        int64_t c = 0;
        for (int64_t i = lo; i < hi; ++i) c += owner[i] >= 0;
        base[k + 1] = c;
    });
    for (int64_t k = 0; k < n_chunks; ++k) base[k + 1] += base[k];
    parallel_run(n_chunks, [&](int64_t k) {
        const int64_t lo = k * lchunk, hi = std::min(n, lo + lchunk);
        Index next = static_cast<Index>(base[k]);
        for (int64_t i = lo; i < hi; ++i)
            if (owner[i] >= 0) low[owner[i]] = next++;  // low[root] now holds the label
    });
    // Out in original order: a point's band root, or that root's final root.
    // The scatter to original order is the one random-access pass; with 32-bit
    // labels and sizes both travel in one 64-bit word (one cache line touched
    // per point instead of two), split afterwards by a sequential pass.
    if (sizeof(Index) == 4) {
        uint64_t* packed = reinterpret_cast<uint64_t*>(out_label);
        parallel_run(n_bands, [&](int64_t b) {
            for (int64_t p = band_start[b]; p < band_start[b + 1]; ++p) {
                const Index r = comp[comp[p]];
                packed[idx[p]] = (static_cast<uint64_t>(static_cast<uint32_t>(size[r])) << 32) |
                                 static_cast<uint32_t>(low[r]);
            }
        });
        parallel_run(n_chunks, [&](int64_t k) {
            const int64_t lo = k * lchunk, hi = std::min(n, lo + lchunk);
            for (int64_t i = lo; i < hi; ++i) {
                const uint64_t v = packed[i];
                out_size[i] = static_cast<int64_t>(v >> 32);
                out_label[i] = static_cast<int64_t>(v & 0xFFFFFFFFu);
            }
        });
    } else {
        parallel_run(n_bands, [&](int64_t b) {
            for (int64_t p = band_start[b]; p < band_start[b + 1]; ++p) {
                const Index r = comp[comp[p]];
                const int64_t i = idx[p];
                out_label[i] = low[r];
                out_size[i] = size[r];
            }
        });
    }
}

py::tuple clusters(f64_array xy_arr, double cutoff) {
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "clusters: xy must have shape (N, 2)");
    require(cutoff >= 0, "clusters: cutoff must be >= 0");
    const int64_t n = xy_arr.shape(0);
    py::array_t<int64_t> labels(static_cast<py::ssize_t>(n));
    py::array_t<int64_t> sizes(static_cast<py::ssize_t>(n));
    if (n == 0) return py::make_tuple(labels, sizes);
    const double* xy = xy_arr.data();
    int64_t* pl = labels.mutable_data();
    int64_t* ps = sizes.mutable_data();
    {
        py::gil_scoped_release release;
        // 32-bit positions halve the memory traffic of the union-find and the
        // scatters whenever they can hold every index.
        if (n < (int64_t{1} << 31) - 1)
            run_clusters<int32_t>(xy, n, cutoff, pl, ps);
        else
            run_clusters<int64_t>(xy, n, cutoff, pl, ps);
    }
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    return py::make_tuple(labels, sizes);
}

}  // namespace
}  // namespace fastsac

void bind_clusters(py::module_& m) {
    m.def("clusters", &fastsac::clusters, py::arg("xy"), py::arg("cutoff"),
          "Single-linkage clusters at distance <= cutoff -> (labels int64 (N,), sizes int64 (N,)).\n"
          "Labels are canonical (clusters numbered by their lowest point index).");
}
