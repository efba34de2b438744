// Median filter equal to scipy.ndimage.median_filter(image, size=s, mode="reflect").
//
// scipy's window for output pixel i covers input i - s/2 .. i - s/2 + s - 1 on each
// axis (so even sizes reach one pixel further back than forward), borders are
// half-sample reflected (d c b a | a b c d | d c b a, repeated for windows larger
// than the image) and the result is the element of rank s*s/2 (0-based) of the
// window, i.e. the upper median for even counts, never an average.
//
// Algorithm. The image is cut into strips of output rows. For each strip the
// padded input region it needs is gathered (reflect indexing) and rank
// transformed with a radix sort: every region pixel gets a unique rank, and the
// k-th smallest rank in a window maps back to exactly the k-th smallest value.
// The window is then a bitset over ranks (each region pixel is in the window at
// most once), slid in a serpentine path (right along a row, one row down, left
// along the next ...) so each step flips only 2*s bits. The median is tracked
// incrementally: we keep the word holding it and the number of set bits below
// that word, and walk a few words when bits change. Strips run in parallel.
#include "common.hpp"

#include <cstring>
#include <vector>

namespace py = pybind11;

namespace fastsac {
namespace {

inline uint32_t float_key(float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    // Order-preserving map of IEEE floats onto unsigned integers.
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Stable LSD radix sort of indices 0..n-1 by 32-bit key (3 passes of 11 bits).
void radix_argsort(const std::vector<uint32_t>& key, std::vector<uint32_t>& order,
                   std::vector<uint32_t>& tmp) {
    const size_t n = key.size();
    order.resize(n);
    tmp.resize(n);
    for (size_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
    constexpr int kBits = 11;
    constexpr uint32_t kBuckets = 1u << kBits;
    std::vector<uint32_t> count(kBuckets);
    for (int shift = 0; shift < 32; shift += kBits) {
        std::fill(count.begin(), count.end(), 0u);
        for (size_t i = 0; i < n; ++i) ++count[(key[i] >> shift) & (kBuckets - 1)];
        // A pass where every key has the same digit changes nothing.
        bool trivial = false;
        for (uint32_t b = 0; b < kBuckets; ++b) {
            if (count[b] == n) { trivial = true; break; }
            if (count[b] != 0) break;
        }
        if (trivial) continue;
        uint32_t sum = 0;
        for (uint32_t b = 0; b < kBuckets; ++b) {
            const uint32_t c = count[b];
            count[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; ++i) {
            const uint32_t o = order[i];
            tmp[count[(key[o] >> shift) & (kBuckets - 1)]++] = o;
        }
        order.swap(tmp);
    }
}

// Position of the j-th (0-based) set bit of x (x must have more than j bits set).
inline int select_bit(uint64_t x, int j) {
    for (; j > 0; --j) x &= x - 1;
    return ctz64(x);
}

struct MedianWindow {
    std::vector<uint64_t> bits;
    int64_t word = 0;   // word holding the tracked median
    int64_t below = 0;  // set bits in words < word
    int64_t k = 0;      // 0-based rank of the median in the window

    void reset(size_t n_ranks, int64_t k_) {
        bits.assign((n_ranks + 63) / 64 + 1, 0);
        word = 0;
        below = 0;
        k = k_;
    }
    inline void add(uint32_t r) {
        bits[r >> 6] |= uint64_t{1} << (r & 63);
        below += (static_cast<int64_t>(r >> 6) < word);
    }
    inline void remove(uint32_t r) {
        bits[r >> 6] &= ~(uint64_t{1} << (r & 63));
        below -= (static_cast<int64_t>(r >> 6) < word);
    }
    inline uint32_t median() {
        int64_t pc;
        while (below + (pc = popcount64(bits[word])) <= k) {
            below += pc;
            ++word;
        }
        while (below > k) {
            --word;
            below -= popcount64(bits[word]);
        }
        return static_cast<uint32_t>(word * 64 + select_bit(bits[word], static_cast<int>(k - below)));
    }
};

// Filter output rows [y0, y1) of a (h, w) image into out.
void median_strip(const float* img, int64_t h, int64_t w, int64_t s, int64_t y0, int64_t y1,
                  float* out) {
    const int64_t a = s / 2;              // window reaches a pixels back ...
    const int64_t th = y1 - y0;
    const int64_t R = th + s - 1;         // region rows
    const int64_t C = w + s - 1;          // region cols
    const size_t n = static_cast<size_t>(R * C);

    // Region stored column-major (index c * R + r) so horizontal steps read
    // contiguous columns.
    std::vector<int64_t> src_col(C);
    for (int64_t c = 0; c < C; ++c) src_col[c] = reflect_index(c - a, w);
    std::vector<uint32_t> key(n);
    std::vector<float> val(n);
    for (int64_t r = 0; r < R; ++r) {
        const float* row = img + reflect_index(y0 + r - a, h) * w;
        for (int64_t c = 0; c < C; ++c) {
            const float v = row[src_col[c]];
            val[c * R + r] = v;
            key[c * R + r] = float_key(v);
        }
    }
    std::vector<uint32_t> order, rank(n);
    {
        std::vector<uint32_t> tmp;
        radix_argsort(key, order, tmp);
    }
    std::vector<float> sorted_val(n);
    for (size_t i = 0; i < n; ++i) {
        rank[order[i]] = static_cast<uint32_t>(i);
        sorted_val[i] = val[order[i]];
    }
    { std::vector<uint32_t>().swap(key); std::vector<float>().swap(val); }

    MedianWindow win;
    win.reset(n, (s * s) / 2);
    for (int64_t c = 0; c < s; ++c)
        for (int64_t r = 0; r < s; ++r) win.add(rank[c * R + r]);

    const uint32_t* rk = rank.data();
    int64_t x = 0;
    for (int64_t y = 0; y < th; ++y) {
        float* orow = out + (y0 + y) * w;
        const bool rightward = (y % 2 == 0);
        for (int64_t step = 0; step < w; ++step) {
            orow[x] = sorted_val[win.median()];
            if (step == w - 1) break;
            // Window covers region cols x .. x+s-1, rows y .. y+s-1.
            if (rightward) {
                const uint32_t* out_col = rk + x * R + y;
                const uint32_t* in_col = rk + (x + s) * R + y;
                for (int64_t r = 0; r < s; ++r) { win.remove(out_col[r]); win.add(in_col[r]); }
                ++x;
            } else {
                const uint32_t* out_col = rk + (x + s - 1) * R + y;
                const uint32_t* in_col = rk + (x - 1) * R + y;
                for (int64_t r = 0; r < s; ++r) { win.remove(out_col[r]); win.add(in_col[r]); }
                --x;
            }
        }
        if (y + 1 < th) {  // one row down: drop region row y, add row y + s
            for (int64_t c = x; c < x + s; ++c) {
                win.remove(rk[c * R + y]);
                win.add(rk[c * R + y + s]);
            }
        }
    }
}

py::array_t<float> median_filter(f32_array image, int64_t size) {
    require(image.ndim() == 2, "median_filter: image must be 2-D");
    require(size >= 1, "median_filter: size must be >= 1");
    const int64_t h = image.shape(0), w = image.shape(1);
    py::array_t<float> result({h, w});
    if (h == 0 || w == 0) return result;
    const float* img = image.data();
    float* out = result.mutable_data();
    // Strip height: taller strips amortise the (s - 1) extra region rows,
    // shorter ones keep the rank bitset in cache and give threads work.
    int64_t strip = std::max<int64_t>(16, std::min<int64_t>(256, 2 * size));
    const int64_t min_strips = 4 * n_threads();
    if (h / strip < min_strips) strip = std::max<int64_t>(8, h / min_strips);
    strip = std::min(strip, h);
    // Ranks are uint32: the padded region of one strip must have fewer than 2**32 pixels.
    require(static_cast<double>(strip + size - 1) * static_cast<double>(w + size - 1) < 4294967295.0,
            "median_filter: size too large for this image (the padded strip exceeds 2**32 pixels)");
    const int64_t n_strips = (h + strip - 1) / strip;
    parallel_for(n_strips, 4 * n_threads(), [&](int64_t i) {
        const int64_t y0 = i * strip;
        median_strip(img, h, w, size, y0, std::min(h, y0 + strip), out);
    });
    return result;
}

}  // namespace
}  // namespace fastsac

void bind_filters(py::module_& m) {
    m.def("median_filter", &fastsac::median_filter, py::arg("image"), py::arg("size"),
          "Square median filter of a C-contiguous float32 (H, W) image, equal to\n"
          "scipy.ndimage.median_filter(image, size=size, mode='reflect').");
}
