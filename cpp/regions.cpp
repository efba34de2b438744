// Binary-region kernels for the support mask.
//
// drop_small_regions: remove 4-connected components of a boolean image that
// have fewer than `min_px` pixels (optionally sparing those touching the image
// border); the numpy reference is scipy.ndimage.label + bincount. We label
// *runs* (maximal horizontal segments) instead of pixels: a mask has orders of
// magnitude fewer runs than pixels, so the union-find is tiny and the cost is
// one read of the image and one write of the output.
//
// expand_blocks: nearest-neighbour upsampling of a binned mask by an integer
// factor, cropped to (h, w) (reference: np.repeat on both axes).
//
// near_disk: pixels within a Euclidean distance of a region, i.e. the region
// dilated by a disk, equal to (distance_transform_edt(~region) * scale <=
// radius). Two passes like an exact distance transform, cut at the radius:
// per row the distance to the nearest region pixel on that row (capped), then
// per pixel an OR over the rows within reach of "row distance <= the disk's
// half-width at that row offset". O(H·W·(2r+1)) with r = radius/scale small.
//
// bin_mean: f×f block means (ragged last blocks by edge replication), summed
// in double in the reference's order per block, (0,0) then row-major, divided
// by f² and stored as float32 — bit-identical to fastsac.spatial.mask's numpy
// reference, and reading 16-bit montages without a float32 copy.
#include "common.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

struct Run {
    int64_t y, x0, x1;  // [x0, x1) on row y
};

int64_t find_root(std::vector<int64_t>& parent, int64_t i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];  // path halving
        i = parent[i];
    }
    return i;
}

void unite(std::vector<int64_t>& parent, int64_t a, int64_t b) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    if (a < b) std::swap(a, b);
    parent[a] = b;  // the older run is the root: roots stay the first run of a component
}

py::array_t<bool> drop_small_regions(py::array region_in, double min_px, bool keep_touching_border) {
    if (region_in.ndim() != 2) throw std::invalid_argument("drop_small_regions: region must be 2-D");
    auto region = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(region_in);
    if (!region) throw std::invalid_argument("drop_small_regions: region must be a boolean array");
    const int64_t h = region.shape(0), w = region.shape(1);
    py::array_t<bool> out({h, w});
    const uint8_t* in = region.data();
    bool* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        std::vector<Run> runs;
        std::vector<int64_t> row_start(static_cast<size_t>(h) + 1, 0);
        for (int64_t y = 0; y < h; ++y) {
            row_start[y] = static_cast<int64_t>(runs.size());
            const uint8_t* row = in + y * w;
            int64_t x = 0;
            while (x < w) {
                while (x < w && !row[x]) ++x;
                if (x == w) break;
                const int64_t x0 = x;
                while (x < w && row[x]) ++x;
                runs.push_back({y, x0, x});
            }
        }
        row_start[h] = static_cast<int64_t>(runs.size());
        const int64_t n = static_cast<int64_t>(runs.size());
        std::vector<int64_t> parent(n);
        for (int64_t i = 0; i < n; ++i) parent[i] = i;
        // 4-connectivity: runs on consecutive rows touch when their column ranges overlap.
        for (int64_t y = 1; y < h; ++y) {
            int64_t a = row_start[y - 1], b = row_start[y];
            const int64_t a_end = row_start[y], b_end = row_start[y + 1];
            while (a < a_end && b < b_end) {
                if (runs[a].x0 < runs[b].x1 && runs[b].x0 < runs[a].x1) unite(parent, a, b);
                if (runs[a].x1 < runs[b].x1) ++a; else ++b;
            }
        }
        std::vector<int64_t> size(n, 0);
        std::vector<uint8_t> border(n, 0);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t r = find_root(parent, i);
            parent[i] = r;
            size[r] += runs[i].x1 - runs[i].x0;
            if (runs[i].y == 0 || runs[i].y == h - 1 || runs[i].x0 == 0 || runs[i].x1 == w) border[r] = 1;
        }
        std::memcpy(dst, in, static_cast<size_t>(h * w));  // bool and uint8 share their layout
        for (int64_t i = 0; i < n; ++i) {
            const int64_t r = parent[i];
            const bool small = static_cast<double>(size[r]) < min_px;
            if (small && !(keep_touching_border && border[r]))
                std::memset(dst + runs[i].y * w + runs[i].x0, 0, static_cast<size_t>(runs[i].x1 - runs[i].x0));
        }
    }
    return out;
}

py::array_t<bool> expand_blocks(py::array small_in, int64_t factor, int64_t h, int64_t w) {
    if (small_in.ndim() != 2) throw std::invalid_argument("expand_blocks: mask must be 2-D");
    if (factor < 1) throw std::invalid_argument("expand_blocks: factor must be >= 1");
    auto small = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(small_in);
    if (!small) throw std::invalid_argument("expand_blocks: mask must be a boolean array");
    const int64_t hb = small.shape(0), wb = small.shape(1);
    if (h < 0 || w < 0 || h > hb * factor || w > wb * factor)
        throw std::invalid_argument("expand_blocks: (h, w) larger than the expanded mask");
    py::array_t<bool> out({h, w});
    const uint8_t* src = small.data();
    uint8_t* dst = reinterpret_cast<uint8_t*>(out.mutable_data());
    // One task per block row: its first output row is built from the source, the
    // others (same source row) are copies of it, written by the same thread.
    const int64_t n_groups = (h + factor - 1) / factor;
    std::vector<int64_t> column(static_cast<size_t>(w));
    for (int64_t x = 0; x < w; ++x) column[x] = x / factor;
    // Memory-bound: up to ~4 MB of output a single thread is faster than waking a team.
    const int64_t grain = std::max<int64_t>(1, (int64_t{4} << 20) / std::max<int64_t>(1, w * factor));
    parallel_for_grained(n_groups, grain, int64_t{1} << 30, [&](int64_t g) {
        const uint8_t* s = src + g * wb;
        const int64_t y0 = g * factor, y1 = std::min(h, y0 + factor);
        uint8_t* first = dst + y0 * w;
        if (factor == 2) {  // the usual bin factor: one 16-bit store per source pixel
            const int64_t pairs = w / 2;
            for (int64_t xb = 0; xb < pairs; ++xb) {
                const uint16_t v = static_cast<uint16_t>(s[xb] * 0x0101u);
                std::memcpy(first + 2 * xb, &v, 2);
            }
            if (w % 2) first[w - 1] = s[pairs];
        } else {
            for (int64_t x = 0; x < w; ++x) first[x] = s[column[x]];
        }
        for (int64_t y = y0 + 1; y < y1; ++y) std::memcpy(dst + y * w, first, static_cast<size_t>(w));
    });
    return out;
}

py::array_t<bool> near_disk(py::array region_in, double radius, double scale) {
    if (region_in.ndim() != 2) throw std::invalid_argument("near_disk: region must be 2-D");
    if (!(scale > 0)) throw std::invalid_argument("near_disk: scale must be > 0");
    auto region = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(region_in);
    if (!region) throw std::invalid_argument("near_disk: region must be a boolean array");
    const int64_t h = region.shape(0), w = region.shape(1);
    py::array_t<bool> out({h, w});
    uint8_t* dst = reinterpret_cast<uint8_t*>(out.mutable_data());
    if (h == 0 || w == 0) return out;
    const uint8_t* in = region.data();
    // Half-width of the disk at each row offset: the largest dx with
    // sqrt(dx² + dy²) * scale <= radius (the reference's arithmetic), -1 if none.
    const int64_t r = radius >= 0 ? static_cast<int64_t>(std::floor(radius / scale)) + 1 : -1;
    std::vector<int64_t> half(static_cast<size_t>(2 * std::max<int64_t>(r, 0) + 1), -1);
    for (int64_t dy = -r; dy <= r; ++dy) {
        int64_t best = -1;
        for (int64_t dx = 0; dx <= r; ++dx)
            if (std::sqrt(static_cast<double>(dx * dx + dy * dy)) * scale <= radius) best = dx;
        half[dy + r] = best;
    }
    // Pass 1: per row, the distance to the nearest region pixel on it, capped at r + 1.
    const int64_t cap = std::max<int64_t>(r, 0) + 1;
    std::vector<int32_t> row_dist(static_cast<size_t>(h * w));
    parallel_for_grained(h, 64, int64_t{1} << 30, [&](int64_t y) {
        const uint8_t* a = in + y * w;
        int32_t* d = row_dist.data() + y * w;
        int64_t last = -(cap + 1);
        for (int64_t x = 0; x < w; ++x) {
            if (a[x]) last = x;
            d[x] = static_cast<int32_t>(std::min(cap, x - last));
        }
        last = w + cap + 1;
        for (int64_t x = w - 1; x >= 0; --x) {
            if (a[x]) last = x;
            d[x] = static_cast<int32_t>(std::min<int64_t>(d[x], std::min(cap, last - x)));
        }
    });
    // Pass 2: OR over the rows in reach.
    parallel_for_grained(h, 64, int64_t{1} << 30, [&](int64_t y) {
        uint8_t* o = dst + y * w;
        std::memset(o, 0, static_cast<size_t>(w));
        for (int64_t dy = -r; dy <= r; ++dy) {
            const int64_t hw = half[dy + r], yy = y + dy;
            if (hw < 0 || yy < 0 || yy >= h) continue;
            const int32_t* d = row_dist.data() + yy * w;
            const int32_t lim = static_cast<int32_t>(hw);
            for (int64_t x = 0; x < w; ++x) o[x] |= static_cast<uint8_t>(d[x] <= lim);
        }
    });
    return out;
}

template <class T>
py::array_t<float> bin_mean_t(py::array_t<T, py::array::c_style | py::array::forcecast> img, int64_t f) {
    const int64_t h = img.shape(0), w = img.shape(1);
    const int64_t hb = (h + f - 1) / f, wb = (w + f - 1) / f;
    py::array_t<float> out({hb, wb});
    const T* src = img.data();
    float* dst = out.mutable_data();
    const double inv_count = static_cast<double>(f * f);
    std::vector<int64_t> col(static_cast<size_t>(wb * f));
    for (int64_t x = 0; x < wb * f; ++x) col[x] = std::min(x, w - 1);  // edge replication
    parallel_for_grained(hb, std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, w * f)),
                         int64_t{1} << 30, [&](int64_t by) {
        std::vector<double> acc(static_cast<size_t>(wb));
        for (int64_t i = 0; i < f; ++i) {
            const T* row = src + std::min(by * f + i, h - 1) * w;
            for (int64_t j = 0; j < f; ++j) {
                const int64_t* c = col.data() + j;
                if (i == 0 && j == 0) {
                    for (int64_t bx = 0; bx < wb; ++bx) acc[bx] = static_cast<double>(static_cast<float>(row[c[bx * f]]));
                } else {
                    for (int64_t bx = 0; bx < wb; ++bx) acc[bx] += static_cast<double>(static_cast<float>(row[c[bx * f]]));
                }
            }
        }
        float* o = dst + by * wb;
        for (int64_t bx = 0; bx < wb; ++bx) o[bx] = static_cast<float>(acc[bx] / inv_count);
    });
    return out;
}

py::array bin_mean(py::array img, int64_t f) {
    if (img.ndim() != 2) throw std::invalid_argument("bin_mean: image must be 2-D");
    if (f < 1) throw std::invalid_argument("bin_mean: factor must be >= 1");
    if (img.shape(0) < 1 || img.shape(1) < 1)  // empty in, empty out (as the reference)
        return py::array_t<float>({(img.shape(0) + f - 1) / f, (img.shape(1) + f - 1) / f});
    const auto dt = img.dtype();
    if (dt.is(py::dtype::of<uint16_t>())) return bin_mean_t<uint16_t>(img, f);
    if (dt.is(py::dtype::of<int16_t>())) return bin_mean_t<int16_t>(img, f);
    if (dt.is(py::dtype::of<uint8_t>())) return bin_mean_t<uint8_t>(img, f);
    return bin_mean_t<float>(img, f);  // anything else: rounded to float32 first, like the reference
}

}  // namespace
}  // namespace fastsac

void bind_regions(py::module_& m) {
    m.def("drop_small_regions", &fastsac::drop_small_regions, py::arg("region"), py::arg("min_px"),
          py::arg("keep_touching_border") = false,
          "Remove 4-connected components with fewer than min_px pixels (bool array in, new bool array out).");
    m.def("expand_blocks", &fastsac::expand_blocks, py::arg("mask"), py::arg("factor"), py::arg("h"),
          py::arg("w"), "Nearest-neighbour upsampling of a binned bool mask by `factor`, cropped to (h, w).");
    m.def("near_disk", &fastsac::near_disk, py::arg("region"), py::arg("radius"), py::arg("scale") = 1.0,
          "Pixels p with a region pixel q at sqrt(|p - q|^2) * scale <= radius (bool array).");
    m.def("bin_mean", &fastsac::bin_mean, py::arg("image"), py::arg("factor"),
          "f x f block means as float32 (ragged blocks edge-replicated), summed in double.");
}
