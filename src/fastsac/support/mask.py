"""Support mask: which part of a HAADF-STEM image is carbon support, which is vacuum.

Atoms can only sit on the support, so densities and random-placement
references must use the support area, not the whole field of view. Vacuum in
HAADF is *dark and flat*: it scatters almost nothing (low mean) and has no
texture (low local variance, only detector and shot noise). Thin support at
the edge of a grain is also dark, but it is textured, so both criteria are
required.

Algorithm (all lengths physical when the pixel size is known):

1. Heavily smooth the image (Gaussian, ``smooth_nm``) and take its log above
   a floor just below the darkest smoothed value; threshold it with Otsu.
2. Local standard deviation of the high-pass image (image minus a 1.5 px
   Gaussian), averaged over ``smooth_nm / 3``.
3. Decide whether vacuum exists at all: the dark Otsu class must be at least
   ``min_contrast`` darker (in units of the bright-dark range) *and* its median
   local std must be below ``max_texture_ratio`` times the bright class's.
   If not, the whole image is support: the mask never invents vacuum on a
   textured image that merely has a slow intensity gradient.
4. Vacuum pixels are dark (below the Otsu threshold) and flat (local std
   below the geometric mean of the two classes' medians); within 4 sigma of
   that vacuum the edge is placed by the same log threshold on a 3× lighter
   smoothing of the intensity
   (the heavy smoothing blurs it into the support); then a morphological
   opening, vacuum regions smaller than ``min_region_nm2`` are returned to the
   support and support holes smaller than that are filled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .._backend import Kernel, core, resolve_device
from .._validate import as_float, check_image, check_positive
from ..errors import FastsacInputError
from ..io import DEFAULT_PIXEL_SIZE_NM
from ..preprocess import gaussian_filter
from .regions import MaskResult, drop_small_regions, expand_blocks

__all__ = ["support_mask", "MaskResult", "bin_mean", "require_support"]

def require_support(mask, source=None) -> None:
    """Raise :class:`~fastsac.errors.FastsacInputError` naming ``source`` when a
    support mask (a :class:`MaskResult` or a bool array) holds no support at all:
    densities and dispersion statistics are undefined on an all-vacuum image,
    and the caller should say so in one line rather than fail deep inside."""
    arr = getattr(mask, "mask", mask)
    if arr is not None and not np.any(arr):
        raise FastsacInputError(source, "the support mask found no support (the whole image looks "
                                        "like vacuum); if that is wrong, analyse without the mask "
                                        "(--no-support-mask, support_mask=False)")


def _bin_mean_numpy_ref(image: np.ndarray, f: int) -> np.ndarray:
    """Block means of ``image`` over f×f blocks, as float32 (summed in float64).

    The ragged last row/column of blocks is completed by edge padding, so an
    (H, W) image gives (ceil(H/f), ceil(W/f)) blocks. Strided adds in a fixed
    order instead of a reshaped mean: 6× faster, and the same values whenever
    the f² float32 values sum exactly in float64 (any real image: only values
    spanning more than ~2²⁹ in magnitude within one block round).
    """
    img = np.asarray(image, np.float32)
    h, w = img.shape
    hb, wb = -(-h // f), -(-w // f)
    if (hb * f, wb * f) != (h, w):
        img = np.pad(img, ((0, hb * f - h), (0, wb * f - w)), mode="edge")
    acc = img[0::f, 0::f].astype(np.float64)
    for i in range(f):
        for j in range(f):
            if i or j:
                acc += img[i::f, j::f]
    acc /= f * f
    return acc.astype(np.float32)


_bin_mean_kernel = Kernel("bin_mean", _bin_mean_numpy_ref)


@_bin_mean_kernel.register("cpp")
def _bin_mean_cpp(image, f):
    # All cores, and 16-bit montages are read as they are (no float32 copy).
    return core().bin_mean(np.asarray(image), int(f))


def bin_mean(image: np.ndarray, f: int, *, backend: str = "auto") -> np.ndarray:
    """Block means of ``image`` over f×f blocks, as float32.

    Ragged last blocks are completed by edge replication, so an (H, W) image
    gives (⌈H/f⌉, ⌈W/f⌉) blocks; each block is summed in float64 in a fixed
    order, so every backend gives the same bits (:func:`_bin_mean_numpy_ref`
    is the spec). The support mask bins with it, and so do montages, whose
    tiles then bin exactly like the whole image.
    """
    return _bin_mean_kernel(image, int(f), backend=backend)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    return _otsu_from_hist(hist, edges)


def _otsu_from_hist(hist: np.ndarray, edges: np.ndarray) -> float:
    """Otsu threshold (a bin centre) of a histogram with ``len(hist) + 1`` edges."""
    centers = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centers)
    mu0 = m / np.maximum(w0, 1)
    mu1 = (m[-1] - m) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def support_mask(image, *, pixel_size_nm: float | None = None, smooth_nm: float = 0.35,
                 min_contrast: float = 0.75, max_texture_ratio: float = 0.6,
                 min_region_nm2: float = 0.5, opening_nm: float = 0.1,
                 working_px: float = 6.0, device: str = "cpu") -> MaskResult:
    """Find the support (True) and the vacuum (False) of a HAADF image.

    Parameters
    ----------
    image : (H, W) array
        Raw intensities (any real dtype); not modified.
    pixel_size_nm : float, optional
        Pixel size. Without it, physical lengths are converted at 0.0293 nm/px
        and ``support_area_nm2`` is None.
    smooth_nm : float
        Gaussian sigma of the heavy smoothing, nm (≈ 12 px at 0.0293 nm/px).
    min_contrast : float
        Minimum relative darkness of the dark class, (bright − dark)/bright
        measured above the image floor, for it to count as vacuum. On the
        ptnc-train images vacuum gives ≥ 0.83 and a support with an intensity
        gradient ≤ 0.66.
    max_texture_ratio : float
        Maximum ratio of the dark class's local std to the bright class's.
    min_region_nm2 : float
        Vacuum regions and support holes smaller than this are removed.
    opening_nm : float
        Radius of the morphological opening applied to the vacuum.
    working_px : float
        The mask is computed on an image binned by ``f = round(σ_smooth / working_px)``
        (block means; f = 2 at 0.0293 nm/px) and expanded back: the support/vacuum
        boundary is a ~0.35 nm-smooth feature, so finer sampling buys nothing
        but costs f² in time. ``working_px=inf`` disables binning.
    device : {"cpu", "auto", "cuda"}
        ``"cuda"`` does the pixel work with torch on the GPU
        (:func:`fastsac.support.mask_torch.support_mask_torch`, same result:
        identical masks on the real and simulated test frames); ``"auto"`` when
        torch sees a GPU.

    Returns
    -------
    MaskResult

    Examples
    --------
    >>> img = np.random.default_rng(0).normal(100, 10, (64, 64))
    >>> support_mask(img).vacuum_fraction
    0.0
    """
    if device != "cpu":

        dev = resolve_device(device)
        if dev.type == "cuda":
            from .mask_torch import support_mask_torch

            if pixel_size_nm is not None:
                check_positive(pixel_size_nm, name="pixel_size_nm")
            return support_mask_torch(image, pixel_size_nm=pixel_size_nm, smooth_nm=smooth_nm,
                                      min_contrast=min_contrast, max_texture_ratio=max_texture_ratio,
                                      min_region_nm2=min_region_nm2, opening_nm=opening_nm,
                                      working_px=working_px, device=dev)
    # float32 throughout: the smoothing is the C++ Gaussian (scipy's arithmetic, all cores).
    img = as_float(check_image(image)).astype(np.float32)
    if pixel_size_nm is not None:
        check_positive(pixel_size_nm, name="pixel_size_nm")
    px = float(pixel_size_nm) if pixel_size_nm else DEFAULT_PIXEL_SIZE_NM
    for name, v in (("smooth_nm", smooth_nm), ("min_region_nm2", min_region_nm2),
                    ("opening_nm", opening_nm)):
        check_positive(v, name=name, allow_zero=name != "smooth_nm")
    sigma = smooth_nm / px
    f = max(1, int(round(sigma / working_px))) if np.isfinite(working_px) and working_px > 0 else 1
    h, w = img.shape
    if f > 1 and min(h, w) >= 8 * f:
        binned = bin_mean(img, f)
        small = support_mask(binned, pixel_size_nm=px * f, smooth_nm=smooth_nm, min_contrast=min_contrast,
                             max_texture_ratio=max_texture_ratio, min_region_nm2=min_region_nm2,
                             opening_nm=opening_nm, working_px=np.inf)
        support = expand_blocks(small.mask, f, h, w)
        area = float(support.sum())
        return MaskResult(support, area, area * pixel_size_nm**2 if pixel_size_nm else None,
                          1.0 - area / (h * w), pixel_size_nm, small.has_vacuum, small.contrast,
                          small.texture_ratio, small.params | {"bin_factor": f})
    min_region_px = min_region_nm2 / px**2
    open_r = int(round(opening_nm / px))
    params = {"smooth_sigma_px": sigma, "min_region_px2": min_region_px, "opening_radius_px": open_r,
              "min_contrast": min_contrast, "max_texture_ratio": max_texture_ratio, "bin_factor": 1}

    def _all_support(contrast=0.0, texture=float("nan")):
        area = float(h * w)
        return MaskResult(np.ones((h, w), bool), area, area * pixel_size_nm**2 if pixel_size_nm else None,
                          0.0, pixel_size_nm, False, float(contrast), float(texture), params)

    if min(h, w) < 8 or float(img.max()) == float(img.min()):
        return _all_support()
    smooth = gaussian_filter(img, sigma).astype(np.float64)
    # Detector offset: HAADF vacuum sits at a non-zero dark level. Log-intensity
    # above a floor just under the darkest smoothed pixel makes dark regions
    # separable from a support whose intensity varies multiplicatively.
    span = float(np.percentile(smooth, 99.5) - smooth.min())
    if span <= 0:
        return _all_support()
    floor = float(smooth.min()) - 0.02 * span
    logi = np.log(smooth - floor)
    thr = _otsu(logi.ravel())
    dark = logi < thr
    if dark.all() or not dark.any():
        return _all_support()
    lin = smooth - floor
    del smooth, logi  # full-frame float64 temporaries: a gigapixel montage's mask is ~10⁷ px
    mu_d, mu_b = float(np.median(lin[dark])), float(np.median(lin[~dark]))
    del lin
    contrast = (mu_b - mu_d) / mu_b
    # Texture on a 3x lighter scale than the intensity: at the heavy scale a
    # narrow strip of vacuum would borrow the support's variance.
    fine = max(2.0, sigma / 3)
    hp = img - gaussian_filter(img, 1.5)
    local_sd = np.sqrt(gaussian_filter(hp * hp, fine))
    del hp
    sd_d, sd_b = float(np.median(local_sd[dark])), float(np.median(local_sd[~dark]))
    texture = sd_d / sd_b if sd_b > 0 else 1.0
    if contrast < min_contrast or texture > max_texture_ratio:
        return _all_support(contrast, texture)
    # Dark and flat at the heavy smoothing finds the vacuum, but blurs its edge
    # into the support by ~2 sigma. The edge is then placed on a 3x lighter
    # smoothing of the intensity alone, only within 4 sigma of that vacuum.
    coarse = dark & (local_sd < np.sqrt(sd_d * sd_b))
    near = _near(coarse, 4 * sigma)
    # The log-domain Otsu threshold sits close to the vacuum level: a sharp edge
    # moves ~1 fine sigma into the vacuum, but the thin, dark (yet textured)
    # support at a grain edge, where atoms do sit, stays support.
    fine_log = np.log(np.maximum(gaussian_filter(img, fine).astype(np.float64) - floor, 1e-12 * span))
    vac = coarse | (near & (fine_log < thr))
    if open_r > 0:
        # Edge padding: scipy erodes as if outside the image were False, which
        # would leave a one-pixel frame of "support" around a vacuum at the border.
        pad = np.pad(vac, open_r + 1, mode="edge")
        vac = _open_disk(pad, open_r)[open_r + 1:-open_r - 1, open_r + 1:-open_r - 1]
    vac = drop_small_regions(vac, min_region_px)
    support = drop_small_regions(~vac, min_region_px, keep_touching_border=True)
    if support.all() or not support.any():
        return _all_support(contrast, texture) if support.all() else MaskResult(
            support, 0.0, 0.0 if pixel_size_nm else None, 1.0, pixel_size_nm, True,
            float(contrast), float(texture), params)
    area = float(support.sum())
    return MaskResult(support, area, area * pixel_size_nm**2 if pixel_size_nm else None,
                      1.0 - area / (h * w), pixel_size_nm, True, float(contrast), float(texture), params)


def _open_disk(region: np.ndarray, r: int) -> np.ndarray:
    """``scipy.ndimage.binary_opening(region, structure=disk(r))`` (outside is False),
    as ANDs and ORs of shifted copies: the disk has few offsets, and this is ~10×
    faster than scipy's generic structuring-element loop."""
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    offsets = [(int(dy), int(dx)) for dy, dx in zip(yy.ravel(), xx.ravel()) if dy * dy + dx * dx <= r * r]
    h, w = region.shape

    def sweep(a, combine, start):
        z = np.zeros((h + 2 * r, w + 2 * r), bool)
        z[r:r + h, r:r + w] = a
        out = np.full((h, w), start, bool)
        for dy, dx in offsets:
            combine(out, z[r + dy:r + dy + h, r + dx:r + dx + w], out=out)
        return out

    eroded = sweep(region, np.logical_and, True)
    return sweep(eroded, np.logical_or, False)


def _near(region: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` px of ``region``, or slightly more.

    This band only limits where the edge may be refined, so for wide bands it
    is computed on cells of ``f`` px (f ≈ radius / 6): a cell is near when its
    centre is within ``radius + f√2`` of a cell holding region pixels, which
    contains every truly near pixel and adds at most ~2f√2 px to the band.
    """
    f = max(1, int(radius // 6))
    if f == 1:
        return _near_disk(region, radius, 1.0)
    h, w = region.shape
    ch, cw = -(-h // f), -(-w // f)
    padded = np.zeros((ch * f, cw * f), bool)
    padded[:h, :w] = region
    cells = padded.reshape(ch, f, cw, f).any(axis=(1, 3))
    return expand_blocks(_near_disk(cells, radius + f * np.sqrt(2.0), float(f)), f, h, w)


def _near_disk_numpy_ref(region: np.ndarray, radius: float, scale: float = 1.0) -> np.ndarray:
    """Pixels p with a region pixel q at ``|p - q| * scale <= radius``: the region
    dilated by a disk, as a threshold of the exact Euclidean distance transform."""
    region = np.asarray(region, bool)
    if not region.any():  # nothing to be near (the transform would measure to a phantom)
        return np.zeros(region.shape, bool)
    return ndi.distance_transform_edt(~region) * scale <= radius


_near_disk_kernel = Kernel("near_disk", _near_disk_numpy_ref)


@_near_disk_kernel.register("cpp")
def _near_disk_cpp(region, radius, scale=1.0):
    # Row distances cut at the radius, then an OR over the rows in reach: ~20x the
    # full distance transform on a 4096² montage mask (radius 6 px).
    return core().near_disk(np.asarray(region, bool), float(radius), float(scale))


def _near_disk(region: np.ndarray, radius: float, scale: float = 1.0, *,
               backend: str = "auto") -> np.ndarray:
    """See :func:`_near_disk_numpy_ref` (the spec)."""
    return _near_disk_kernel(region, radius, scale, backend=backend)
