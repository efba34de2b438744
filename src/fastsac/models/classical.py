"""The classical detector's score map as torch operations, for the tiled GPU engine.

:class:`ClassicalScoreNet` computes exactly what
:meth:`fastsac.detectors.ClassicalDetector.score_map` computes — a centre-surround
difference of Gaussians divided by the local noise of the filtered image — with
separable convolutions, so the default detector runs through
:func:`fastsac.infer.detect_tiled` on a GPU like any network:

* Gaussians use scipy's kernel (truncated at 4σ, normalised) and scipy's border
  (half-sample reflection, ``d c b a | a b c d``), so on a CPU the map equals the
  numpy/C++ one to float32 rounding (the C++ kernel accumulates in double, the
  convolutions in float32: ≤ 1e-5 relative).
* The local noise needs two *global* numbers of the image: ``cap``, the 98th
  percentile of ``|DoG|`` (the brightest 2 %, atoms, are clipped so they do not
  inflate the noise), and the RMS of the clipped DoG (a floor for flat vacuum).
  They are buffers of the module, set once per image by :func:`calibrate`
  before tiling, so every tile uses the whole image's values and the tiled map
  equals the whole-image map.
* TF32 and autocast are switched off inside ``forward``: a score in units of
  noise compared with a threshold of 3.9 needs float32 arithmetic.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from .._backend import resolve_device

__all__ = ["ClassicalScoreNet", "DogNet", "calibrate", "gaussian_reach"]

#: Histogram resolution of the streamed percentile: the top 16 bits of a
#: float32 (sign, exponent, 7 mantissa bits) → relative resolution 2⁻⁷.
_HIST_SHIFT = 16
_HIST_BINS = 1 << (31 - _HIST_SHIFT)


def gaussian_reach(sigma: float, truncate: float = 4.0) -> int:
    """Kernel radius scipy uses for ``sigma``: ``int(truncate·σ + ½)``."""
    return int(truncate * float(sigma) + 0.5)


def _half_weights(sigma: float) -> np.ndarray:
    from ..preprocess import gaussian_weights

    return gaussian_weights(sigma)


def _symmetric_index(n: int, r: int, device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``r`` with half-sample reflection
    (repeated when ``r`` exceeds ``n``), as scipy's ``mode="reflect"``."""
    i = torch.arange(-r, n + r, device=device)
    period = 2 * n
    m = torch.remainder(i, period)
    return torch.where(m < n, m, period - 1 - m)


def _fast_length(n: int) -> int:
    """Smallest 2^a·3^b ≥ n (fast FFT sizes)."""
    best = 1 << max(0, (n - 1).bit_length())
    p3 = 1
    while p3 < best:
        p2 = p3
        while p2 < n:
            p2 *= 2
        best = min(best, p2)
        p3 *= 3
    return best


class TorchGaussian(torch.nn.Module):
    """Separable Gaussian with scipy's kernel and borders on (B, 1, H, W) float32.

    Two implementations of the same operator: direct convolution (``"conv"``)
    and, for wide kernels, 1-D FFTs along each axis (``"fft"``: circular
    convolution of the reflected line zero-padded to a fast length, which
    equals the linear one on the line because the padding covers the kernel).
    ``"auto"`` uses FFTs from radius ``fft_min_radius`` on the CPU (the σ≈32 px
    noise window: 5.6× faster than the direct convolution, and more accurate)
    and from radius 8 on CUDA (H100, 2 × 4402² windows: σ = 2 / 6 / 32 px
    conv 7.2 / 4.0 / 18.4 ms, FFT 3.3 / 3.3 / 3.8 ms).
    """

    #: Implementation: "auto", "conv" or "fft" (class-wide; benchmarks switch it,
    #: or the environment variable FASTSAC_TORCH_GAUSSIAN).
    method = os.environ.get("FASTSAC_TORCH_GAUSSIAN", "auto")
    fft_min_radius = 48

    def __init__(self, sigma: float):
        super().__init__()
        half = torch.as_tensor(_half_weights(sigma), dtype=torch.float32)
        full = torch.cat([half.flip(0), half[1:]])
        self.r = len(half) - 1
        self.register_buffer("k_half", half, persistent=False)
        self.register_buffer("k_rows", full.view(1, 1, -1, 1), persistent=False)
        self.register_buffer("k_cols", full.view(1, 1, 1, -1), persistent=False)
        self._spectra: dict = {}

    def _use_fft(self, x) -> bool:
        m = self.method
        return m == "fft" or (m == "auto" and self.r >= (8 if x.is_cuda else self.fft_min_radius))

    def _spectrum(self, n: int, device) -> torch.Tensor:
        key = (n, str(device))
        if key not in self._spectra:
            k = torch.zeros(n, dtype=torch.float64, device=device)
            h = self.k_half.to(device=device, dtype=torch.float64)
            k[: self.r + 1] = h
            k[n - self.r:] = h[1:].flip(0)
            self._spectra[key] = torch.fft.rfft(k).to(torch.complex64)
        return self._spectra[key]

    def _fft_axis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        n, r = x.shape[dim], self.r
        xp = x.index_select(dim, _symmetric_index(n, r, x.device))
        L = _fast_length(n + 2 * r)
        y = torch.fft.irfft(torch.fft.rfft(xp, n=L, dim=dim) * self._spectrum(L, x.device).view(
            [-1 if d == dim % 4 else 1 for d in range(4)]), n=L, dim=dim)
        return y.narrow(dim, r, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.r
        if r == 0:
            return x * self.k_rows.reshape(())
        if self._use_fft(x):
            return self._fft_axis(self._fft_axis(x, 2), 3).contiguous()
        h, w = x.shape[-2:]
        x = x.index_select(2, _symmetric_index(h, r, x.device))
        x = F.conv2d(x, self.k_rows)
        x = x.index_select(3, _symmetric_index(w, r, x.device))
        return F.conv2d(x, self.k_cols)


class TorchBoxGaussian(torch.nn.Module):
    """:func:`fastsac.boxfilter.box_gaussian_filter` on (B, 1, H, W) float32, bit for
    bit: the same fixed-point integers, summed exactly in float64 by ``cumsum``
    (integers below 2^53 add exactly in any order, so a GPU scan gives the CPU's
    sums), the same per-pixel roundings (``torch.round`` is half-to-even like
    ``np.rint``). ``r`` is the support radius (the tiling halo)."""

    def __init__(self, sigma: float):
        super().__init__()
        from ..boxfilter import box_plan

        self.plan = box_plan(sigma)
        self.r = self.plan.reach

    def _pass(self, q: torch.Tensor, dim: int) -> torch.Tensor:
        p = self.plan
        n = q.shape[dim]
        z = q.index_select(dim, _symmetric_index(n, p.r + 1, q.device))
        c = torch.cumsum(z, dim=dim)
        c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim=dim)
        inner = c.narrow(dim, 2 * p.r + 2, n) - c.narrow(dim, 1, n)
        outer = z.narrow(dim, 0, n) + z.narrow(dim, 2 * p.r + 2, n)
        return torch.round((p.M * inner + p.a * outer) * (1.0 / p.norm))

    def forward(self, x: torch.Tensor, scale) -> torch.Tensor:
        """``scale``: a float, or a 0-d float64 tensor (no host sync on a GPU)."""
        from ..boxfilter import box_scales

        if isinstance(scale, torch.Tensor):
            # the same IEEE float64 operations as box_scales, on the device
            s = torch.where((scale > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))
            qf, dq = (2.0 ** self.plan.q_bits) / s, s / (2.0 ** self.plan.q_bits)
        else:
            qf, dq = box_scales(scale, self.plan)
        q = torch.clamp(torch.round(x.double() * qf), -2.0 ** 30, 2.0 ** 30)
        for dim in (2, 3):
            for _ in range(self.plan.passes):
                q = self._pass(q, dim)
        return (q * dq).float()


class _Float32:
    """Context: no autocast, no TF32 — the score is compared with a threshold."""

    def __init__(self, device_type: str):
        self.device_type = device_type

    def __enter__(self):
        self.autocast = torch.autocast(self.device_type, enabled=False)
        self.autocast.__enter__()
        self.tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.tf32
        return self.autocast.__exit__(*exc)


class DogNet(torch.nn.Module):
    """Stage 1 only: the centre-surround difference of Gaussians (float32)."""

    def __init__(self, sigma_px: float, surround_px: float):
        super().__init__()
        self.centre = TorchGaussian(sigma_px)
        self.surround = TorchGaussian(surround_px)
        self.receptive_field = max(self.centre.r, self.surround.r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _Float32(x.device.type):
            x = x.float().contiguous()
            m = TorchGaussian.method
            if m == "fft" or (m == "auto" and x.is_cuda):
                return self._fft2(x)
            return self.centre(x) - self.surround(x)

    def _fft2(self, x: torch.Tensor) -> torch.Tensor:
        """Both Gaussians in one 2-D FFT pair: the transform of the reflected
        window (padded by the wider kernel's radius, zero-filled to a fast size)
        times Ĝ_centre − Ĝ_surround. Half the FFT work of two separable passes."""
        h, w = x.shape[-2:]
        r = self.receptive_field
        xp = x.index_select(2, _symmetric_index(h, r, x.device))
        xp = xp.index_select(3, _symmetric_index(w, r, x.device))
        lh, lw = _fast_length(h + 2 * r), _fast_length(w + 2 * r)
        key = (lh, lw, str(x.device))
        k = self._spectra2.get(key) if hasattr(self, "_spectra2") else None
        if k is None:
            def spec(g, n, real):
                kern = torch.zeros(n, dtype=torch.float64, device=x.device)
                hw = g.k_half.to(device=x.device, dtype=torch.float64)
                kern[: g.r + 1] = hw
                if g.r:
                    kern[n - g.r:] = hw[1:].flip(0)
                return (torch.fft.rfft(kern) if real else torch.fft.fft(kern)).real
            k = (spec(self.centre, lh, False)[:, None] * spec(self.centre, lw, True)[None, :]
                 - spec(self.surround, lh, False)[:, None] * spec(self.surround, lw, True)[None, :])
            k = k.to(torch.float32)
            self._spectra2 = getattr(self, "_spectra2", {})
            self._spectra2[key] = k
        y = torch.fft.irfft2(torch.fft.rfft2(xp, s=(lh, lw)) * k, s=(lh, lw))
        return y[..., r:r + h, r:r + w].contiguous()


class ClassicalScoreNet(torch.nn.Module):
    """(B, 1, H, W) raw counts → (B, 1, H, W) local signal-to-noise of the DoG.

    Parameters are the pixel values of :meth:`ClassicalDetector.pixel_params`
    (no median background: use ``ClassicalDetector(background_nm=None)``, the
    default). ``cap``/``global_rms`` must be set (:func:`calibrate`) before use.
    """

    def __init__(self, sigma_px: float, surround_px: float, noise_sigma_px: float,
                 floor_fraction: float = 1e-3, noise_window: str = "box"):
        super().__init__()
        self.dog = DogNet(sigma_px, surround_px)
        if noise_window not in ("box", "gaussian"):
            raise ValueError(f"noise_window must be 'box' or 'gaussian', got {noise_window!r}")
        self.noise_window = noise_window
        self.noise = TorchBoxGaussian(noise_sigma_px) if noise_window == "box" else TorchGaussian(noise_sigma_px)
        self.floor_fraction = float(floor_fraction)
        #: Chebyshev radius of the input a score pixel depends on (tiling halo).
        self.receptive_field = self.dog.receptive_field + self.noise.r
        self.register_buffer("cap", torch.tensor(float("nan")), persistent=False)
        self.register_buffer("global_rms", torch.tensor(float("nan")), persistent=False)

    @classmethod
    def from_detector(cls, detector, pixel_size_nm: float | None = None) -> "ClassicalScoreNet":
        p = detector.pixel_params(pixel_size_nm)
        if p["background_px"] is not None:
            raise ValueError("the GPU score map has no median background; use "
                             "ClassicalDetector(background_nm=None) (the default)")
        return cls(p["dog_sigma_px"], p["surround_px"], p["noise_sigma_px"],
                   noise_window=getattr(detector, "noise_window", "gaussian"))

    def set_statistics(self, cap: float, global_rms: float) -> "ClassicalScoreNet":
        # Python copies too: reading a device buffer in forward would sync the GPU.
        self._cap = float(np.float32(cap))
        self._floor = float((self.floor_fraction * (float(global_rms) or 1.0)) ** 2)
        self.cap.fill_(self._cap)
        self.global_rms.fill_(float(global_rms) or 1.0)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.snr_from_dog(self.dog(x))

    def snr_from_dog(self, d: torch.Tensor) -> torch.Tensor:
        """Stage 2 alone: (B, 1, H, W) DoG → local signal-to-noise."""
        if getattr(self, "_cap", None) is None:
            raise RuntimeError("ClassicalScoreNet: call calibrate(image, net) (or "
                               "set_statistics) before running it")
        with _Float32(d.device.type):
            d = d.float()
            cap = torch.tensor(self._cap, dtype=torch.float32)
            cap2 = float(cap * cap)                          # cap² rounded as float32
            sq = torch.clamp(d * d, max=cap2)
            var = self.noise(sq, cap2) if self.noise_window == "box" else self.noise(sq)
            noise = torch.sqrt(torch.clamp(var, min=self._floor))
            return d / noise


def _kth_smallest(a: torch.Tensor, ranks, chunk: int = 1 << 26) -> list[float]:
    """Exact order statistics (0-based ``ranks``) of a flat non-negative float32
    tensor by a two-level radix select: a histogram of the top 16 bits finds
    each rank's bin, then only that bin's values are sorted. Non-negative floats
    order like their bit patterns. O(n) on the device in chunks of ``chunk``
    values; ``kthvalue``/sorting the whole array costs ~30× more on a GPU."""
    a = a.reshape(-1)
    n = a.numel()
    counts = torch.zeros(_HIST_BINS, dtype=torch.int64, device=a.device)
    for i in range(0, n, chunk):
        key = (a[i:i + chunk].view(torch.int32) >> _HIST_SHIFT).long()
        counts += torch.bincount(key, minlength=_HIST_BINS)
    cum = torch.cumsum(counts, 0).cpu().numpy()
    out = []
    for k in ranks:
        b = int(np.searchsorted(cum, k, side="right"))
        below = int(cum[b - 1]) if b > 0 else 0
        parts = [c[(c.view(torch.int32) >> _HIST_SHIFT) == b]
                 for c in (a[i:i + chunk] for i in range(0, n, chunk))]
        vals = torch.sort(torch.cat(parts)).values
        out.append(float(vals[k - below]))
    return out


def _percentile_exact(a: torch.Tensor, q: float) -> float:
    """``np.percentile(a, q)`` (linear) of a flat non-negative float32 tensor, from
    its two neighbouring order statistics; numpy interpolates them, so rounding matches."""
    n = a.numel()
    virtual = (n - 1) * np.float64(q / 100.0)
    lo = int(np.floor(virtual))
    v_lo, v_hi = _kth_smallest(a.contiguous(), [lo, min(lo + 1, n - 1)])
    frac = float(virtual - np.floor(virtual))
    return float(np.quantile(np.array([v_lo, v_hi], np.float32), frac))


def _exact_statistics(d: torch.Tensor, rows: int = 4096) -> tuple[float, float]:
    """(cap, rms) of a DoG held whole on the device: numpy's 98th percentile of
    |d| (exact, radix select) and the RMS of min(d², cap²), summed in float64 in
    row blocks so the scratch stays bounded for gigapixel arrays."""
    cap = _percentile_exact(d.abs().reshape(-1), 98.0)
    cap2 = torch.tensor(cap, device=d.device, dtype=torch.float32) ** 2
    d2 = d.reshape(-1, d.shape[-1])
    total = 0.0
    for y0 in range(0, d2.shape[0], rows):
        blk = d2[y0:y0 + rows]
        total += float(torch.minimum(blk * blk, cap2).double().sum())
    return cap, math.sqrt(total / max(d.numel(), 1))


def calibrate(image, net: ClassicalScoreNet, *, device="auto", exact_max_px: int = 1 << 26,
              tile=None, batch_size=None, progress: bool = False) -> dict:
    """Set ``net.cap`` and ``net.global_rms`` from the whole image.

    Images up to ``exact_max_px`` pixels that fit in memory are filtered whole
    and get numpy's exact 98th percentile (then the map equals
    :meth:`ClassicalDetector.score_map` to float32 rounding). Larger images or
    sources are streamed tile by tile through the engine (one DoG pass) into a
    histogram of the top 16 bits of ``|DoG|``; the percentile is interpolated
    inside its bin (relative error < 2⁻⁷, which moves scores by < 0.1 %), and
    the RMS of the clipped DoG comes from the bin centres. Returns what was used.
    """
    from .. import infer

    dev = resolve_device(device)
    arr = image if isinstance(image, np.ndarray) else None
    net = net.to(dev)
    if arr is not None and arr.ndim == 2 and arr.size <= exact_max_px:
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(arr, np.float32), device=dev)[None, None]
            cap, rms = _exact_statistics(net.dog(x)[0, 0])
        net.set_statistics(cap, rms)
        return {"cap": cap, "global_rms": rms, "method": "exact"}
    counts = torch.zeros(_HIST_BINS, dtype=torch.int64, device=dev)
    dog = net.dog
    src, dev, amp, plan, bs = infer.prepare_tiles(image, dog, tile=tile, halo=dog.receptive_field,
                                            device=dev, batch_size=batch_size, dtype=None,
                                            check_halo=False)
    eng = infer._Engine(src, dog, plan=plan, batch_size=bs, device=dev, dtype=None,
                        preprocess=None, keep_raw=False, compile=False, channels_last=False,
                        prefetch=2, progress=progress)
    with torch.inference_mode():
        for b in eng.batches():
            y, _ = eng.forward(b)
            for j, t in enumerate(b.tiles):
                y0, y1, x0, x1 = plan.cores[t]
                wy0, _, wx0, _ = plan.windows[t]
                core = y[j, 0, y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0].reshape(-1)
                a = core.abs()
                key = (a.view(torch.int32) >> _HIST_SHIFT).long()
                counts += torch.bincount(key, minlength=_HIST_BINS)
            eng.release(b)
    src.close()
    n = int(counts.sum())
    cum = torch.cumsum(counts, 0)
    pos = 0.98 * (n - 1)
    b = int(torch.searchsorted(cum, torch.tensor(int(math.floor(pos)) + 1, device=dev)))
    below = int(cum[b - 1]) if b > 0 else 0
    in_bin = int(counts[b])
    lo_bits, hi_bits = b << _HIST_SHIFT, (b + 1) << _HIST_SHIFT
    lo_v = float(np.array([lo_bits], np.int32).view(np.float32)[0])
    hi_v = float(np.array([min(hi_bits, 0x7F7FFFFF)], np.int32).view(np.float32)[0])
    cap = lo_v + (hi_v - lo_v) * ((pos - below + 0.5) / max(in_bin, 1))
    cap = float(np.float32(min(max(cap, lo_v), hi_v)))
    # RMS of min(d², cap²) from the histogram (bin centres below the cap's bin,
    # cap² from there on): within 2⁻⁷ relative, and it only sets the noise floor
    # (10⁻³ of it) in flat vacuum. Per-bin sums by atomics cost more than the DoG.
    c = counts[:b].double()
    edges = (torch.arange(b + 1, device=dev, dtype=torch.int64) << _HIST_SHIFT).to(torch.int32)
    vals = edges.view(torch.float32).double()
    centre = 0.5 * (vals[:-1] + vals[1:])
    total = float((c * centre * centre).sum()) + (n - below) * cap * cap
    rms = math.sqrt(total / max(n, 1))
    net.set_statistics(cap, rms)
    return {"cap": cap, "global_rms": rms, "method": "histogram", "bins": _HIST_BINS}


# --------------------------------------------------------------------------- resident mode
def upload_frame(image: np.ndarray, device, rows: int = 2048) -> torch.Tensor:
    """(H, W) float32 tensor on ``device`` from a host array, in row strips (16-bit
    frames cross as 16 bits and are widened on the device)."""
    h, w = image.shape
    out = torch.empty((h, w), dtype=torch.float32, device=device)
    for y0 in range(0, h, rows):
        strip = np.ascontiguousarray(image[y0:y0 + rows])
        if strip.dtype == np.uint16:
            t = torch.from_numpy(strip.view(np.int16)).to(device)
            out[y0:y0 + rows] = (t.to(torch.int32) & 0xFFFF).float()
        elif strip.dtype in (np.int16, np.uint8, np.float32):
            out[y0:y0 + rows] = torch.from_numpy(strip).to(device).float()
        else:
            out[y0:y0 + rows] = torch.from_numpy(strip.astype(np.float32)).to(device)
    return out


def _stack_windows(arr: torch.Tensor, windows) -> torch.Tensor:
    return torch.stack([arr[y0:y1, x0:x1] for (y0, y1, x0, x1) in windows])


def resident_bytes(shape) -> int:
    """Device memory :func:`detect_resident` holds for an image of ``shape``
    (raw and DoG as float32), without the per-window work buffers."""
    return 8 * int(shape[0]) * int(shape[1])


def detect_resident(image: np.ndarray, net: ClassicalScoreNet, *, device, tile: int = 4096,
                    batch: int = 2, threshold: float, min_distance_px: float, refine: str,
                    fit_radius_px: int, sigma_px: float, exclude_border_px: int,
                    peaks_backend: str = "auto", progress: bool = False,
                    pairs: dict | None = None):
    """Classical detection with the whole image resident on the device.

    The frame is uploaded once (16-bit as 16 bits); pass 1 computes the DoG of
    every core (windows with the DoG's halo) into a device array; the global
    98th percentile of |DoG| and the RMS come from that array *exactly* (radix
    select); pass 2 scores windows of the resident DoG (halo = noise kernel + 1
    and the refinement reach) and runs the peak step on the device
    (:class:`fastsac.infer._PeakCollector`), then one NMS. Nothing is read from
    the host twice, which is what bounds the streamed engine on large images.
    Equals :func:`fastsac.infer.detect_tiled` with the same net (tests).
    Returns :class:`fastsac.infer.TiledDetections`.
    """
    import time

    from .. import infer
    from .._backend import Backend
    from .._validate import resolve_option

    t_start = time.perf_counter()
    dev = resolve_device(device)
    net = net.to(dev).eval()
    H, W = image.shape
    with torch.inference_mode():
        raw = upload_frame(image, dev)
        t_up = time.perf_counter()
        dog_net = net.dog
        plan1 = infer.plan_tiles((H, W), tile=tile, halo=dog_net.receptive_field)
        D = torch.empty((H, W), dtype=torch.float32, device=dev)
        for i in range(0, len(plan1), batch):
            idx = range(i, min(i + batch, len(plan1)))
            d = dog_net(_stack_windows(raw, [plan1.windows[t] for t in idx])[:, None])[:, 0]
            for j, t in enumerate(idx):
                y0, y1, x0, x1 = plan1.cores[t]
                wy0, _, wx0, _ = plan1.windows[t]
                D[y0:y1, x0:x1] = d[j, y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
        t_dog = time.perf_counter()
        cap, rms = _exact_statistics(D)
        net.set_statistics(cap, rms)
        t_cal = time.perf_counter()
        from .. import peaks

        reach = peaks.refine_reach(sigma_px, fit_radius_px, refine)
        plan2 = infer.plan_tiles((H, W), tile=tile, halo=max(net.noise.r + 1, reach))
        pb = resolve_option(peaks_backend, Backend, "peaks_backend")
        collector = infer._PeakCollector(
            plan2, gpu=dev.type == "cuda" and pb in (Backend.AUTO, Backend.CUDA),
            peaks_backend=pb, threshold=threshold, min_distance_px=min_distance_px,
            refine=refine, fit_radius_px=fit_radius_px, sigma_px=sigma_px,
            exclude_border_px=exclude_border_px)
        t_score = 0.0
        for i in range(0, len(plan2), batch):
            t0 = time.perf_counter()
            idx = list(range(i, min(i + batch, len(plan2))))
            wins = [plan2.windows[t] for t in idx]
            s = net.snr_from_dog(_stack_windows(D, wins)[:, None])[:, 0]
            r = _stack_windows(raw, wins) if refine != "none" else None
            t_score += time.perf_counter() - t0
            collector.add(s, r, np.asarray(idx))
        out = collector.finish()
    total = time.perf_counter() - t_start
    timings = {"upload": t_up - t_start, "dog": t_dog - t_up, "calibrate": t_cal - t_dog,
               "inference": t_score, "peaks": collector.t_peaks, "nms": collector.t_nms,
               "read": t_up - t_start, "preprocess": 0.0, "total": total}
    return infer.resolve_close_pairs(infer.TiledDetections(
        *out, n_candidates=collector.n_candidates, plan=plan2, device=str(dev),
        peaks_backend=collector.backend_name,
        params={"threshold": float(threshold), "min_distance_px": float(min_distance_px),
                "refine": refine, "fit_radius_px": int(fit_radius_px), "sigma_px": float(sigma_px),
                "exclude_border_px": int(exclude_border_px), "halo": plan2.halo,
                "tile": list(plan2.tile), "batch_size": batch, "resident": True,
                "calibration": {"cap": cap, "global_rms": float(net.global_rms),
                                "method": "exact (resident)"}},
        timings=timings), image, pairs)
