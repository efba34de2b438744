"""The support mask with its pixel work on a GPU (torch), for live analysis.

Same algorithm and parameters as :func:`fastsac.spatial.mask.support_mask`
(see there): the frame is binned on the device, smoothed with the detector's
scipy-equivalent torch Gaussians, thresholded (Otsu on a 256-bin histogram,
class medians by exact radix select), opened with a disk by two exact binary
convolutions; only the small binned masks come back to the host for the
"near vacuum" band (a distance transform on cells) and the removal of small
regions (connected components). Agreement with the CPU version is tested
(IoU ≥ 0.99, same vacuum decision).
"""

from __future__ import annotations

import math
from contextlib import nullcontext as _nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from .mask import MaskResult, _drop_small, _near, _otsu_from_hist


def _median(values: torch.Tensor) -> float:
    """``np.median`` of a 1-D float tensor (mean of the two middle values when even)."""
    from ..models.classical import _kth_smallest

    n = values.numel()
    lo = float(values.min())
    shifted = (values - lo).contiguous()   # radix select needs non-negative floats
    if n % 2:
        return _kth_smallest(shifted, [n // 2])[0] + lo
    a, b = _kth_smallest(shifted, [n // 2 - 1, n // 2])
    return 0.5 * (a + b) + lo


def support_mask_torch(image, *, pixel_size_nm: float | None = None, smooth_nm: float = 0.35,
                       min_contrast: float = 0.75, max_texture_ratio: float = 0.6,
                       min_region_nm2: float = 0.5, opening_nm: float = 0.1,
                       working_px: float = 6.0, device="cuda") -> MaskResult:
    """:func:`fastsac.spatial.mask.support_mask` with the pixel work on ``device``.

    ``image``: (H, W) numpy array or torch tensor (already on the device is best).
    """
    from ..models.classical import _Gaussian, _percentile_exact
    from .mask import _FALLBACK_PX_NM

    x = image if isinstance(image, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(image, dtype=np.float32))
    dev = torch.device(device)
    h, w = x.shape
    px = float(pixel_size_nm) if pixel_size_nm else _FALLBACK_PX_NM
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
        full = support if f == 1 else np.repeat(np.repeat(support, f, 0), f, 1)[:h, :w]
        area = float(full.sum())
        return MaskResult(full, area, area * pixel_size_nm**2 if pixel_size_nm else None,
                          1.0 - area / (h * w), pixel_size_nm, has_vac, float(contrast),
                          float(texture), params)

    def all_support(contrast=0.0, texture=float("nan")):
        hb, wb = -(-h // f), -(-w // f)
        return result(np.ones((hb, wb), bool), False, contrast, texture)

    # A side stream on CUDA: this often runs in a thread next to GPU detection, and
    # its many small host reads would otherwise wait for the detection's kernels.
    side = None
    if dev.type == "cuda":
        side = torch.cuda.Stream(device=dev)
        if x.is_cuda:  # produced on another stream: order after it
            side.wait_stream(torch.cuda.current_stream(x.device))
    ctx = torch.cuda.stream(side) if side is not None else _nullcontext()
    with torch.inference_mode(), ctx:
        x = x.to(device=dev, dtype=torch.float32)
        if f > 1:
            ph, pw = (-h) % f, (-w) % f
            xb = F.pad(x[None, None], (0, pw, 0, ph), mode="replicate") if (ph or pw) else x[None, None]
            img = F.avg_pool2d(xb, f)
        else:
            img = x[None, None]
        hb, wb = img.shape[-2:]
        if min(hb, wb) < 8 or float(img.max()) == float(img.min()):
            return all_support()
        smooth = _Gaussian(sigma).to(img.device)(img)[0, 0]
        s_min = float(smooth.min())
        # np.percentile(smooth, 99.5) - min, by radix select on the shifted values
        span = _percentile_exact((smooth - s_min).reshape(-1).contiguous(), 99.5)
        if span <= 0:
            return all_support()
        floor = s_min - 0.02 * span
        logi = torch.log(smooth.double() - floor)
        lmin, lmax = float(logi.min()), float(logi.max())
        hist = torch.histc(logi, bins=256, min=lmin, max=lmax).cpu().numpy()
        thr = _otsu_from_hist(hist, np.linspace(lmin, lmax, 257))
        dark = logi < thr
        n_dark = int(dark.sum())
        if n_dark in (0, dark.numel()):
            return all_support()
        lin = smooth.double() - floor
        mu_d, mu_b = _median(lin[dark].float()), _median(lin[~dark].float())
        contrast = (mu_b - mu_d) / mu_b
        fine = max(2.0, sigma / 3)
        g_fine = _Gaussian(fine).to(img.device)
        hp = img - _Gaussian(1.5).to(img.device)(img)
        local_sd = torch.sqrt(g_fine(hp * hp))[0, 0]
        sd_d, sd_b = _median(local_sd[dark]), _median(local_sd[~dark])
        texture = sd_d / sd_b if sd_b > 0 else 1.0
        if contrast < min_contrast or texture > max_texture_ratio:
            return all_support(contrast, texture)
        coarse = dark & (local_sd < math.sqrt(sd_d * sd_b))
        near = torch.from_numpy(_near(coarse.cpu().numpy(), 4 * sigma)).to(img.device)
        fine_log = torch.log(torch.clamp(g_fine(img)[0, 0].double() - floor, min=1e-12 * span))
        vac = coarse | (near & (fine_log < thr))
        if open_r > 0:
            yy, xx = torch.meshgrid(torch.arange(-open_r, open_r + 1), torch.arange(-open_r, open_r + 1),
                                    indexing="ij")
            disk = ((xx * xx + yy * yy) <= open_r * open_r).float().to(img.device)[None, None]
            k = float(disk.sum())
            p = open_r + 1
            v = F.pad(vac.float()[None, None], (p, p, p, p), mode="replicate")
            # erosion: every disk pixel set (outside the padded array counts as unset,
            # as scipy's default border); dilation: any disk pixel set
            er = F.conv2d(v, disk, padding=open_r) >= k - 0.5
            di = F.conv2d(er.float(), disk, padding=open_r) > 0.5
            vac = di[0, 0, p:-p, p:-p]
        vac_np = _drop_small(vac.cpu().numpy(), min_region_px)
    support = _drop_small(~vac_np, min_region_px, keep_touching_border=True)
    if not support.any():
        return result(support, True, contrast, texture)
    return result(support, not support.all(), contrast, texture)
