"""The support mask with its pixel work on a GPU (torch), for live analysis.

Same algorithm and parameters as :func:`fastsac.support.mask.support_mask`
(see there). Everything up to the final mask stays on the device, and the
host waits for it only twice: once for the seven numbers that decide whether
there is vacuum at all, once for the small binned vacuum mask, whose small
regions are then removed by the C++ run-length labelling (~1 ms for 1024²).
The order statistics numpy takes from ``np.percentile`` and ``np.median``
come from one sort per quantity (class medians by a class-major sort key);
the histogram reproduces ``np.histogram``'s bin edges and corrections, Otsu
runs on the device, and the "near vacuum" band is a convolution of the cell
grid with a disk instead of a distance transform. Agreement with the CPU
version is tested on the real and simulated frames (here torch runs on the
CPU).
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext as _nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ..io import DEFAULT_PIXEL_SIZE_NM
from .regions import MaskResult, drop_small_regions, expand_blocks


@functools.lru_cache(maxsize=32)
def _disk(radius: float, f: int, device: str, scaled: bool = False) -> torch.Tensor:
    """(1, 1, 2k+1, 2k+1) float32 disk on ``device``, built once: a host-to-device
    copy would make the host wait for the queued GPU work.

    ``scaled``: offsets d with ``sqrt(d²) * f <= radius`` in float64 (the
    distance-transform test of :func:`fastsac.support.mask._near`); otherwise
    ``d² <= radius²`` with integer ``radius`` (scipy's disk structuring element).
    """
    k = int(radius // f) if scaled else int(radius)
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    if scaled:
        disk = np.sqrt((dy * dy + dx * dx).astype(np.float64)) * f <= radius
    else:
        disk = dy * dy + dx * dx <= radius * radius
    return torch.from_numpy(disk.astype(np.float32)).to(device)[None, None]


@functools.lru_cache(maxsize=32)
def _gaussian(sigma: float, device: str):
    # One module per (σ, device): its FFT spectra are cached inside and reused
    # frame after frame.
    from ..models.classical import TorchGaussian

    return TorchGaussian(sigma).to(device)


@functools.lru_cache(maxsize=32)
def _box(sigma: float, device: str):
    from ..models.classical import TorchBoxGaussian

    return TorchBoxGaussian(sigma).to(device)


def _orderable(x: torch.Tensor) -> torch.Tensor:
    """int64 keys that sort like the float32 values ``x`` (negatives included)."""
    bits = x.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF) - 1, bits) + (1 << 31)


def _class_medians(values: torch.Tensor, key: torch.Tensor, first: torch.Tensor):
    """Medians of ``values[first]`` and of ``values[~first]`` as numpy computes them, by
    one sort of the class-major key ``(not first, key)``; all on the device, no host sync.

    ``key``: orderable keys of ``values`` (or of anything sorting the same way);
    returns two 0-d float64 tensors (nan for an empty class)."""
    flat_first = first.reshape(-1)
    n = flat_first.numel()
    order = torch.sort((~flat_first).to(torch.int64) * (1 << 33) + key.reshape(-1)).indices
    n0 = flat_first.sum()
    v = values.reshape(-1)
    out = []
    for start, count in ((torch.zeros_like(n0), n0), (n0, n - n0)):
        lo = (start + torch.clamp(count - 1, min=0) // 2).clamp(max=n - 1)
        hi = (start + count // 2).clamp(max=n - 1)
        # gathers with 1-element index tensors: indexing by a 0-d tensor would read
        # it on the host (a sync)
        a, b = v.gather(0, order.gather(0, torch.stack([lo, hi]))).unbind(0)
        # np.median of an even count: the mean of the two middle values, in the
        # array's precision ((a + b) / 2: float32 for float32 data).
        m = ((a + b) / 2).double()
        out.append(torch.where(count > 0, m, torch.full_like(m, float("nan"))))
    return out[0], out[1]


def _lerp_percentile(sorted_values: torch.Tensor, q: float) -> torch.Tensor:
    """``np.percentile(values, q)`` (linear) of sorted float values, in float64 (0-d tensor)."""
    n = sorted_values.numel()
    virtual = (n - 1) * np.float64(q / 100.0)
    lo = int(np.floor(virtual))
    t = float(virtual - lo)
    a = sorted_values[lo].double()
    b = sorted_values[min(lo + 1, n - 1)].double()
    d = b - a
    # numpy's _lerp: from the nearer end
    return b - d * (1.0 - t) if t >= 0.5 else a + d * t


def _histogram(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int):
    """``np.histogram(x, bins, range=(lo, hi))`` of float64 values in [lo, hi] with 0-d
    tensor bounds: numpy's bin computation and its edge corrections. Returns (counts, edges)."""
    step = (hi - lo) / bins
    edges = torch.arange(bins + 1, device=x.device, dtype=torch.float64) * step + lo
    edges = torch.cat([edges[:-1], hi.reshape(1)])
    denom = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    idx = (((x - lo) / denom) * bins).to(torch.int64).clamp(0, bins)
    idx = torch.where(idx == bins, idx - 1, idx)
    idx = torch.where(x < edges[idx], idx - 1, idx)
    idx = torch.where((x >= edges[(idx + 1).clamp(max=bins)]) & (idx != bins - 1), idx + 1, idx)
    counts = torch.bincount(idx.reshape(-1).clamp(0, bins - 1), minlength=bins)
    return counts, edges


def _otsu(counts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """:func:`fastsac.support.mask._otsu_from_hist` on the device (0-d tensor)."""
    centers = 0.5 * (edges[1:] + edges[:-1])
    h = counts.double()
    w0 = torch.cumsum(h, 0)
    w1 = w0[-1] - w0
    m = torch.cumsum(h * centers, 0)
    mu0 = m / torch.clamp(w0, min=1)
    mu1 = (m[-1] - m) / torch.clamp(w1, min=1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return centers.gather(0, torch.argmax(between[:-1]).reshape(1))[0]


def _near(region: torch.Tensor, radius: float) -> torch.Tensor:
    """:func:`fastsac.support.mask._near` on the device: the same cells and the same
    ``distance * f <= reach`` test, as a convolution of the cell grid with a disk."""
    f = max(1, int(radius // 6))
    h, w = region.shape
    reach = radius if f == 1 else radius + f * np.sqrt(2.0)
    cells = region[None, None].float()
    if f > 1:
        cells = F.max_pool2d(cells, f, ceil_mode=True)
    kern = _disk(reach, f, str(region.device), scaled=True)
    k = kern.shape[-1] // 2
    near_cells = F.conv2d(cells, kern, padding=k)[0, 0] > 0.5
    if f > 1:
        near_cells = near_cells.repeat_interleave(f, 0).repeat_interleave(f, 1)[:h, :w]
    return near_cells


def support_mask_torch(image, *, pixel_size_nm: float | None = None, smooth_nm: float = 0.35,
                       min_contrast: float = 0.75, max_texture_ratio: float = 0.6,
                       min_region_nm2: float = 0.5, opening_nm: float = 0.1,
                       working_px: float = 6.0, device="cuda") -> MaskResult:
    """:func:`fastsac.support.mask.support_mask` with the pixel work on ``device``.

    ``image``: (H, W) numpy array or torch tensor (already on the device is best).
    """
    dev = torch.device(device)
    h, w = image.shape
    px = float(pixel_size_nm) if pixel_size_nm else DEFAULT_PIXEL_SIZE_NM
    sigma_full = smooth_nm / px
    f = max(1, int(round(sigma_full / working_px))) if math.isfinite(working_px) else 1
    if min(h, w) < 8 * f:
        f = 1
    pxb = px * f
    sigma = smooth_nm / pxb
    min_region_px = min_region_nm2 / pxb**2
    open_r = int(round(opening_nm / pxb))
    params = {"smooth_sigma_px": sigma, "min_region_px2": min_region_px, "opening_radius_px": open_r,
              "min_contrast": min_contrast, "max_texture_ratio": max_texture_ratio,
              "bin_factor": f, "device": str(dev)}

    def result(support, has_vac, contrast, texture):
        full = expand_blocks(support, f, h, w)
        area = float(np.count_nonzero(full))
        return MaskResult(full, area, area * pixel_size_nm**2 if pixel_size_nm else None,
                          1.0 - area / (h * w), pixel_size_nm, has_vac, float(contrast),
                          float(texture), params)

    def all_support(contrast=0.0, texture=float("nan")):
        hb, wb = -(-h // f), -(-w // f)
        return result(np.ones((hb, wb), bool), False, contrast, texture)

    # A side stream on CUDA: this often runs in a thread next to GPU detection, and
    # its host reads would otherwise wait for the detection's kernels.
    side = None
    if dev.type == "cuda":
        side = torch.cuda.Stream(device=dev)
        if isinstance(image, torch.Tensor) and image.is_cuda:  # produced on another stream
            side.wait_stream(torch.cuda.current_stream(image.device))
    ctx = torch.cuda.stream(side) if side is not None else _nullcontext()
    with torch.inference_mode(), ctx:
        if isinstance(image, torch.Tensor):
            x = image.to(device=dev, dtype=torch.float32)
        elif dev.type == "cuda":
            from ..models.classical import upload_frame

            x = upload_frame(image, dev)  # 16-bit frames cross the bus as 16 bits
        else:
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        if f > 1:
            # Block means in float64, as numpy's: the sum of f² float32 values is
            # exact in float64, so the binned frame is bit-identical to the CPU one.
            ph, pw = (-h) % f, (-w) % f
            xb = x.double()[None, None]
            if ph or pw:
                xb = F.pad(xb, (0, pw, 0, ph), mode="replicate")
            img = F.avg_pool2d(xb, f).float()
        else:
            img = x[None, None]
        hb, wb = img.shape[-2:]
        if min(hb, wb) < 8:
            return all_support()
        gdev = str(img.device)
        smooth = _box(sigma, gdev)(img, img.abs().amax().double())[0, 0]
        smooth_key = _orderable(smooth)
        s_sorted = torch.sort(smooth.reshape(-1)).values
        s_min, s_max = s_sorted[0].double(), s_sorted[-1].double()
        span = _lerp_percentile(s_sorted, 99.5) - s_min
        # Everything below is computed unconditionally and discarded after the
        # one decision sync when the frame is constant or has no vacuum: guards
        # keep the arithmetic finite meanwhile.
        safe_span = torch.where(span > 0, span, torch.ones_like(span))
        floor = s_min - 0.02 * safe_span
        lin = smooth.double() - floor
        logi = torch.log(lin)
        counts, edges = _histogram(logi, torch.log(s_min - floor), torch.log(s_max - floor), 256)
        thr = _otsu(counts, edges)
        dark = logi < thr
        mu_d, mu_b = _class_medians(lin, smooth_key, dark)
        fine = max(2.0, sigma / 3)
        g_fine = _gaussian(fine, gdev)
        hp = img - _gaussian(1.5, gdev)(img)
        local_sd = torch.sqrt(g_fine(hp * hp))[0, 0]
        sd_d, sd_b = _class_medians(local_sd, _orderable(local_sd), dark)
        img_flat = (img.amax() == img.amin()).double()
        n_dark = dark.sum().double()
        decide = torch.stack([img_flat, span, n_dark, mu_d, mu_b, sd_d, sd_b]).cpu().tolist()
        img_flat, span_v, n_dark, mu_d, mu_b, sd_d, sd_b = decide
        if img_flat or not span_v > 0 or n_dark in (0, hb * wb):
            return all_support()
        contrast = (mu_b - mu_d) / mu_b
        # local_sd is float32: numpy's median is a float32 too
        sd_d, sd_b = float(np.float32(sd_d)), float(np.float32(sd_b))
        texture = sd_d / sd_b if sd_b > 0 else 1.0
        if contrast < min_contrast or texture > max_texture_ratio:
            return all_support(contrast, texture)
        coarse = dark & (local_sd.double() < math.sqrt(sd_d * sd_b))
        near = _near(coarse, 4 * sigma)
        fine_log = torch.log(torch.clamp(g_fine(img)[0, 0].double() - floor, min=1e-12 * span_v))
        vac = coarse | (near & (fine_log < thr))
        if open_r > 0:
            disk = _disk(open_r, 1, gdev)
            yy, xx = np.mgrid[-open_r:open_r + 1, -open_r:open_r + 1]
            k = float(np.count_nonzero(xx * xx + yy * yy <= open_r * open_r))  # pixels in the disk
            p = open_r + 1
            v = F.pad(vac.float()[None, None], (p, p, p, p), mode="replicate")
            # erosion: every disk pixel set (outside the padded array counts as unset,
            # as scipy's default border); dilation: any disk pixel set
            er = F.conv2d(v, disk, padding=open_r) >= k - 0.5
            di = F.conv2d(er.float(), disk, padding=open_r) > 0.5
            vac = di[0, 0, p:-p, p:-p]
        vac_np = vac.cpu().numpy()
    vac_np = drop_small_regions(vac_np, min_region_px)
    support = drop_small_regions(~vac_np, min_region_px, keep_touching_border=True)
    if not support.any():
        return result(support, True, contrast, texture)
    return result(support, not support.all(), contrast, texture)
