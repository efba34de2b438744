// Second-order statistics kernels: translation-corrected pair-distance
// histograms (Ripley's K, g(r)) on a uniform cell grid without a pair list,
// and the set covariance |W ∩ (W + u)| of a run-length-coded window for all
// integer lags |u_x|, |u_y| <= L (exact integers, no FFT of the whole image).
#include "common.hpp"
#include "grid.hpp"

#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

constexpr double kTwoPi = 6.283185307179586;

// Histograms over ordered pairs (i, j), i != j, i a reference point (ref[i] != 0,
// or every point when `ref` is empty), with b = floor(d * (1 / bin_width)) < n_bins,
// d = sqrt(dx*dx + dy*dy), u = x_j - x_i: hk[b] += w(u), hg[b] += w(u) / (2 pi
// max(d, 1e-12)), with the translation-correction weight w = area / gamma(u)
// (0 where gamma <= 0). With an empty `wtable`, gamma is the rectangle
// (rect_w - |dx|)+ (rect_h - |dy|)+; else w(u) = wtable[round(dy) + L, round(dx) + L]
// of a (2L+1, 2L+1) float32 table of area / gamma, precomputed by the caller
// (e.g. from the cross covariance of a reference sub-window; it must be
// symmetric when `ref` is empty, as every pair then counts twice).
py::tuple pair_histogram(f64_array xy_arr, double bin_width, int64_t n_bins, double area, double rect_w,
                         double rect_h, py::array_t<float, py::array::c_style | py::array::forcecast> table_arr,
                         py::array_t<uint8_t, py::array::c_style | py::array::forcecast> ref_arr) {
    require(xy_arr.ndim() == 2 && xy_arr.shape(1) == 2, "pair_histogram: xy must have shape (N, 2)");
    require(bin_width > 0 && std::isfinite(bin_width), "pair_histogram: bin_width must be > 0");
    require(n_bins >= 1, "pair_histogram: n_bins must be >= 1");
    const bool use_table = table_arr.size() > 0;
    int64_t lag = 0;
    if (use_table) {
        require(table_arr.ndim() == 2 && table_arr.shape(0) == table_arr.shape(1) && table_arr.shape(0) % 2 == 1,
                "pair_histogram: table must be (2L+1, 2L+1)");
        lag = (table_arr.shape(0) - 1) / 2;
        require(static_cast<double>(lag) >= bin_width * static_cast<double>(n_bins),
                "pair_histogram: table lag must cover bin_width * n_bins");
    }
    const int64_t n = xy_arr.shape(0);
    const bool use_ref = ref_arr.size() > 0;
    require(!use_ref || ref_arr.size() == n, "pair_histogram: ref must be empty or have N entries");
    const uint8_t* ref = use_ref ? ref_arr.data() : nullptr;
    const double* xy = xy_arr.data();
    const float* wtab = use_table ? table_arr.data() : nullptr;
    const int64_t tw = 2 * lag + 1;
    py::array_t<double> hk_arr(static_cast<py::ssize_t>(n_bins)), hg_arr(static_cast<py::ssize_t>(n_bins));
    double* hk = hk_arr.mutable_data();
    double* hg = hg_arr.mutable_data();
    std::fill(hk, hk + n_bins, 0.0);
    std::fill(hg, hg + n_bins, 0.0);
    if (n < 2) return py::make_tuple(hk_arr, hg_arr);
    const double reach = bin_width * static_cast<double>(n_bins);
    CellIndex ci;
    {
        py::gil_scoped_release release;
        // Cells of a quarter of the reach: a half stencil of ~40 cells covers
        // 2.5 reach^2 per point (against 4.5 with cells of the reach), and the
        // lags of one pair of cells stay within a small part of the weight table.
        ci.build(xy, n, make_grid(xy, n, reach * 0.25, 1.0),
                 [](int64_t m, auto&& f) { parallel_run(m, f); });
    }
    const Grid& g = ci.grid;
    const int nt = n_threads();
    // Half stencil: offsets (ox, oy) with oy > 0, or oy == 0 and ox > 0, whose
    // cells can hold points closer than the reach.
    std::vector<std::pair<int64_t, int64_t>> stencil;
    {
        const int64_t k = static_cast<int64_t>(std::ceil(reach / g.cell)) + 1;
        for (int64_t oy = 0; oy <= k; ++oy)
            for (int64_t ox = (oy == 0 ? 1 : -k); ox <= k; ++ox) {
                const double gx = static_cast<double>(std::max<int64_t>(0, std::llabs(ox) - 1)) * g.cell;
                const double gy = static_cast<double>(std::max<int64_t>(0, oy - 1)) * g.cell;
                if ((gx * gx + gy * gy) * (1 - 1e-9) <= reach * reach) stencil.emplace_back(ox, oy);
            }
    }
    std::vector<double> local(static_cast<size_t>(nt) * 2 * n_bins, 0.0);
    const double inv_bw = 1.0 / bin_width;
    const double nb = static_cast<double>(n_bins);
    // Candidates farther than the reach (with a margin for rounding) skip the sqrt.
    const double cut2 = reach * reach * (1 + 1e-9);
    auto weight = [&](double dx, double dy) {
        if (use_table) {
            int64_t ix = static_cast<int64_t>(std::nearbyint(dx)) + lag;
            int64_t iy = static_cast<int64_t>(std::nearbyint(dy)) + lag;
            ix = std::min<int64_t>(std::max<int64_t>(ix, 0), tw - 1);
            iy = std::min<int64_t>(std::max<int64_t>(iy, 0), tw - 1);
            return static_cast<double>(wtab[static_cast<size_t>(iy * tw + ix)]);
        }
        const double gamma = std::max(rect_w - std::fabs(dx), 0.0) * std::max(rect_h - std::fabs(dy), 0.0);
        return gamma > 0 ? area / std::max(gamma, 1e-12) : 0.0;
    };
    // Bucket positions p < q; u = x_q - x_p. Both orders of the pair.
    auto add_pair = [&](int64_t p, int64_t q, double dx, double dy, double* lk, double* lg) {
        const double d2 = dx * dx + dy * dy;
        if (d2 > cut2) return;
        const bool rp = !use_ref || ref[ci.idx[p]], rq = !use_ref || ref[ci.idx[q]];
        if (!rp && !rq) return;
        const double d = std::sqrt(d2);
        const double f = std::floor(d * inv_bw);
        if (!(f < nb)) return;
        const int64_t b = static_cast<int64_t>(f);
        double w;
        if (!use_ref) {
            w = 2.0 * weight(dx, dy);  // w(-u) = w(u): one table read
        } else {
            w = 0.0;
            if (rp) w += weight(dx, dy);
            if (rq) w += weight(-dx, -dy);
        }
        lk[b] += w;
        lg[b] += w / (kTwoPi * std::max(d, 1e-12));
    };
    auto cell_row = [&](int64_t cy) {
        double* lk = local.data() + static_cast<size_t>(thread_id()) * 2 * n_bins;
        double* lg = lk + n_bins;
        for (int64_t cx = 0; cx < g.nx; ++cx) {
            const int64_t cell = cy * g.nx + cx;
            const int64_t p0 = ci.start[cell], p1 = ci.start[cell + 1];
            if (p0 == p1) continue;
            for (int64_t p = p0; p < p1; ++p)  // the same cell: q > p
                for (int64_t q = p + 1; q < p1; ++q) add_pair(p, q, ci.sx[q] - ci.sx[p], ci.sy[q] - ci.sy[p], lk, lg);
            for (const auto& o : stencil) {
                const int64_t ox = cx + o.first, oy = cy + o.second;
                if (ox < 0 || ox >= g.nx || oy >= g.ny) continue;
                const int64_t other = oy * g.nx + ox;
                const int64_t q0 = ci.start[other], q1 = ci.start[other + 1];
                for (int64_t p = p0; p < p1; ++p) {
                    const double x = ci.sx[p], y = ci.sy[p];
                    for (int64_t q = q0; q < q1; ++q) add_pair(p, q, ci.sx[q] - x, ci.sy[q] - y, lk, lg);
                }
            }
        }
    };
    if (n < 50000) {
        // Small patterns (the Monte Carlo envelopes): waking a thread team on
        // a busy machine costs more than the work.
        py::gil_scoped_release release;
        for (int64_t cy = 0; cy < g.ny; ++cy) cell_row(cy);
    } else {
        const int64_t rows_per_task = std::max<int64_t>(1, 2048 / g.nx);
        parallel_for_grained(g.ny, rows_per_task, 64 * nt * rows_per_task, cell_row);
    }
    for (int t = 0; t < nt; ++t) {
        const double* lk = local.data() + static_cast<size_t>(t) * 2 * n_bins;
        for (int64_t b = 0; b < n_bins; ++b) {
            hk[b] += lk[b];
            hg[b] += lk[n_bins + b];
        }
    }
    return py::make_tuple(hk_arr, hg_arr);
}

// Row runs [start, end) in full-resolution columns of a (binned) mask; rows of
// one block row share a list (run_ptr indexed by block row).
struct Runs {
    std::vector<int64_t> ptr, start, end;
    Runs(const uint8_t* m, int64_t hb, int64_t wb, int64_t f, int64_t w) : ptr(static_cast<size_t>(hb) + 1, 0) {
        for (int64_t r = 0; r < hb; ++r) {
            const uint8_t* row = m + r * wb;
            int64_t c = 0;
            while (c < wb) {
                while (c < wb && !row[c]) ++c;
                if (c == wb) break;
                const int64_t c0 = c;
                while (c < wb && row[c]) ++c;
                start.push_back(c0 * f);
                end.push_back(std::min(c * f, w));
            }
            ptr[static_cast<size_t>(r) + 1] = static_cast<int64_t>(start.size());
        }
    }
};

using u8_array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// gamma(dx, dy) = #{pixels p : a(p) and b(p + (dx, dy))} for |dx|, |dy| <= L
// (a = b: the set covariance |W ∩ (W + u)|; a inside b: the cross covariance
// of a reference sub-window). Masks: True pixels, or with bin_factor F > 1 the
// F x F blocks of binned masks cropped to (h, w). For two runs the overlap as a
// function of dx is a trapezoid, written as four ramps max(dx - p, 0); ramps
// are accumulated per dy as integer slope increments and summed at the end:
// O(L * h * runs per row) time, O(L^2) memory, exact integers.
py::array_t<double> set_covariance_table(u8_array a_arr, u8_array b_arr, int64_t bin_factor, int64_t h, int64_t w,
                                         int64_t lag) {
    require(lag >= 0, "set_covariance_table: lag must be >= 0");
    require(bin_factor >= 1 && h >= 1 && w >= 1, "set_covariance_table: bad shape or bin_factor");
    const int64_t f = bin_factor;
    const int64_t hb = (h + f - 1) / f, wb = (w + f - 1) / f;
    for (const auto* arr : {&a_arr, &b_arr})
        require(arr->ndim() == 2 && arr->shape(0) == hb && arr->shape(1) == wb,
                "set_covariance_table: masks must have shape (ceil(h/F), ceil(w/F))");
    const int64_t tw = 2 * lag + 1;
    py::array_t<double> out({tw, tw});
    double* tab = out.mutable_data();
    const uint8_t* ma = a_arr.data();
    const uint8_t* mb = b_arr.data();
    // Serial: tens of ms even for 8192^2 masks, and a thread team on a busy
    // machine costs more than that.
    py::gil_scoped_release release;
    const Runs ra(ma, hb, wb, f, w), rb(mb, hb, wb, f, w);
    std::vector<int64_t> acc(static_cast<size_t>(tw) + 1);  // slope increments at t = index - L
    for (int64_t dy = -lag; dy <= lag; ++dy) {
        std::fill(acc.begin(), acc.end(), 0);
        int64_t c0 = 0, c1 = 0;  // ramps starting at or left of -L: c0 + c1 * t
        auto ramp = [&](int64_t p, int64_t sign) {
            if (p >= lag) return;
            if (p <= -lag) {
                c0 -= sign * p;
                c1 += sign;
            } else {
                acc[static_cast<size_t>(p + 1 + lag)] += sign;
            }
        };
        for (int64_t y = std::max<int64_t>(0, -dy); y < std::min(h, h - dy); ++y) {
            const int64_t ka = y / f, kb = (y + dy) / f;
            int64_t j0 = rb.ptr[kb];
            const int64_t j1 = rb.ptr[kb + 1];
            for (int64_t i = ra.ptr[ka]; i < ra.ptr[ka + 1]; ++i) {
                const int64_t s1 = ra.start[i], e1 = ra.end[i];
                // Runs of row b ending at or before s1 - L never overlap this or later runs of row a.
                while (j0 < j1 && rb.end[j0] - s1 <= -lag) ++j0;
                for (int64_t j = j0; j < j1 && rb.start[j] - e1 < lag; ++j) {
                    const int64_t s2 = rb.start[j], e2 = rb.end[j];
                    ramp(s2 - e1, 1);
                    ramp(std::min(s2 - s1, e2 - e1), -1);
                    ramp(std::max(s2 - s1, e2 - e1), -1);
                    ramp(e2 - s1, 1);
                }
            }
        }
        int64_t slope = c1, value = c0 - c1 * (lag + 1);  // value at t = -L - 1
        double* row = tab + (lag + dy) * tw;
        for (int64_t k = 0; k < tw; ++k) {  // t = k - L
            slope += acc[static_cast<size_t>(k)];
            value += slope;
            row[k] = static_cast<double>(value);
        }
    }
    return out;
}

}  // namespace
}  // namespace fastsac

void bind_pairs(py::module_& m) {
    m.def("pair_histogram", &fastsac::pair_histogram, py::arg("xy"), py::arg("bin_width"), py::arg("n_bins"),
          py::arg("area"), py::arg("rect_w"), py::arg("rect_h"), py::arg("table"), py::arg("ref"),
          "Translation-weighted ordered-pair distance histograms -> (sum w (n_bins,), sum w/(2 pi d) (n_bins,)).");
    m.def("set_covariance_table", &fastsac::set_covariance_table, py::arg("mask_a"), py::arg("mask_b"),
          py::arg("bin_factor"), py::arg("h"), py::arg("w"), py::arg("lag"),
          "#{p: a(p), b(p + u)} at integer lags |u| <= L -> float64 (2L+1, 2L+1) [dy + L, dx + L].");
}
