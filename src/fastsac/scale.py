"""The image's own length scale: the apparent size of its atoms, in pixels.

Without a calibration every physical parameter of a detector (atom width,
NMS radius, noise window, multimer cutoff) would be converted at the default
pixel size, which is wrong by the magnification ratio for any other
microscope setting. Single atoms are the one object of known physical size
in a HAADF-STEM frame of a single-atom catalyst, so their apparent size gives
the pixel size.

Method (scale-space blob detection, Lindeberg 1998): the image is filtered
with the scale-normalised Laplacian of Gaussian −σ²∇²G_σ over a geometric
ladder of σ; each scale's response is put in units of its own robust noise
(median absolute deviation over the image, which also absorbs the noise's
spectrum: white, binned or interpolated); the statistic of a scale is the
mean of its ``n_peaks`` strongest local maxima, i.e. how well the brightest
blobs match that scale. The scale where it peaks (parabolic interpolation in
log σ) is the atom scale. It moves exactly with the image: on ``ptnc-train``
resampled by 0.5–2× it is 0.5–2× the unscaled value within 5 %
(``benchmarks/transfer_scale.py``, ``docs/species.md``).

The pixel size is then ``REFERENCE_PIXEL_SIZE_NM · REFERENCE_SCALE_PX /
scale``: the reference is the median scale on the 11 calibrated ptnc-train
frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validate import as_float, check_image, check_positive

__all__ = ["AtomScale", "estimate_atom_scale", "estimate_atom_scale_sampled", "REFERENCE_SCALE_PX",
           "REFERENCE_PIXEL_SIZE_NM"]

#: Pixel size of the reference frames (ptnc-train), nm.
REFERENCE_PIXEL_SIZE_NM = 0.0293
#: Median :func:`estimate_atom_scale` over the 11 ptnc-train frames at their
#: calibration (per frame 2.5–4.3 px; ``benchmarks/transfer_scale.py --reference``).
REFERENCE_SCALE_PX = 3.31


@dataclass(frozen=True)
class AtomScale:
    """Apparent atom scale of one image.

    Attributes
    ----------
    scale_px : float
        σ of the scale-normalised LoG that best matches the brightest blobs, px
        (≈ the Gaussian σ of an atom's image; NaN when no scale stands out).
    pixel_size_nm : float
        Implied pixel size, ``REFERENCE_PIXEL_SIZE_NM · REFERENCE_SCALE_PX / scale_px``.
    sigmas_px : (S,) float64
        The scale ladder.
    response : (S,) float64
        Mean noise-normalised response of the ``n_peaks`` strongest maxima per scale.
    n_peaks : int
    at_edge : bool
        The maximum is at the end of the ladder (the estimate is a bound).
    """

    scale_px: float
    pixel_size_nm: float
    sigmas_px: np.ndarray
    response: np.ndarray
    n_peaks: int
    at_edge: bool

    def as_dict(self) -> dict:
        return {"atom_scale_px": float(self.scale_px), "pixel_size_nm": float(self.pixel_size_nm),
                "reference_scale_px": REFERENCE_SCALE_PX,
                "reference_pixel_size_nm": REFERENCE_PIXEL_SIZE_NM, "n_peaks": self.n_peaks,
                "at_edge_of_range": bool(self.at_edge)}


def _local_max_values(z: np.ndarray, border: int, size: int) -> np.ndarray:
    from scipy import ndimage as ndi

    zc = z[border:z.shape[0] - border, border:z.shape[1] - border]
    if zc.size == 0:
        return np.zeros(0)
    mx = ndi.maximum_filter(zc, size=size, mode="nearest")
    return zc[zc == mx]


def estimate_atom_scale(image, *, n_peaks: int = 30, sigma_range_px: tuple = (1.0, 24.0),
                        n_scales: int = 28, max_side_px: int = 2048) -> AtomScale:
    """Estimate the apparent atom size (px) and the implied pixel size of an image.

    Parameters
    ----------
    image : (H, W) array
        Raw micrograph (any real dtype; not modified).
    n_peaks : int
        Strongest maxima averaged per scale (the brightest atoms).
    sigma_range_px : (float, float)
        Scales tried, px; the upper end is also capped at min(H, W)/20.
    n_scales : int
        Number of scales (geometric ladder).
    max_side_px : int
        Larger images are analysed on their central max_side_px² crop (the
        atom size does not change across a frame).

    Returns
    -------
    AtomScale

    Raises
    ------
    ValueError
        For an image smaller than 32 px or a bad range.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:128, 0:128]
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(0, 0.05, (128, 128))
    >>> for x, y in rng.uniform(16, 112, (20, 2)):
    ...     img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0 ** 2))
    >>> round(estimate_atom_scale(img).scale_px)
    3
    """
    img = as_float(check_image(image, name="image", allow_nan=True)).astype(np.float64)
    h, w = img.shape
    if min(h, w) < 32:
        raise ValueError(f"image must be at least 32×32 px to estimate an atom size, got {h}×{w}")
    lo, hi = (check_positive(v, name="sigma_range_px") for v in sigma_range_px)
    hi = min(hi, min(h, w) / 20.0)
    if not lo < hi:
        raise ValueError(f"sigma_range_px must be increasing and below min(H, W)/20, got "
                         f"{sigma_range_px!r} for a {h}×{w} image")
    n_peaks = int(n_peaks)
    if n_peaks < 1:
        raise ValueError(f"n_peaks must be ≥ 1, got {n_peaks}")
    if max(h, w) > max_side_px:
        r0, c0 = max(0, (h - max_side_px) // 2), max(0, (w - max_side_px) // 2)
        img = img[r0:r0 + max_side_px, c0:c0 + max_side_px]
        h, w = img.shape
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, np.median(img[finite]) if finite.any() else 0.0)
    sigmas = np.geomspace(lo, hi, int(n_scales))
    # One FFT of the reflect-padded image; every scale is a product in Fourier space.
    pad = int(math.ceil(3 * sigmas[-1]))
    padded = np.pad(img - img.mean(), pad, mode="reflect")
    spec = np.fft.rfft2(padded)
    ky = np.fft.fftfreq(padded.shape[0])[:, None] * 2 * np.pi
    kx = np.fft.rfftfreq(padded.shape[1])[None, :] * 2 * np.pi
    k2 = ky**2 + kx**2
    stat = np.full(len(sigmas), np.nan)
    for i, s in enumerate(sigmas):
        # −σ²∇²G_σ in Fourier space: σ² k² exp(−σ²k²/2)
        r = np.fft.irfft2(spec * (s * s * k2 * np.exp(-0.5 * s * s * k2)), s=padded.shape)
        r = r[pad:pad + h, pad:pad + w]
        med = np.median(r)
        mad = 1.4826 * np.median(np.abs(r - med))
        if not mad > 0:
            continue
        v = _local_max_values((r - med) / mad, int(math.ceil(2 * s)) + 2, 2 * int(math.ceil(s)) + 1)
        if len(v):
            top = np.partition(v, max(len(v) - n_peaks, 0))[-n_peaks:]
            stat[i] = float(top.mean())
    if not np.isfinite(stat).any():
        return AtomScale(float("nan"), float("nan"), sigmas, stat, n_peaks, True)
    k = int(np.nanargmax(stat))
    ls = np.log(sigmas)
    lk = ls[k]
    at_edge = k in (0, len(sigmas) - 1)
    if not at_edge and np.isfinite(stat[k - 1:k + 2]).all():
        y0, y1, y2 = stat[k - 1:k + 2]
        den = y0 - 2 * y1 + y2
        if den < 0:
            lk += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5)) * (ls[1] - ls[0])
    scale = float(np.exp(lk))
    return AtomScale(scale, REFERENCE_PIXEL_SIZE_NM * REFERENCE_SCALE_PX / scale, sigmas, stat,
                     n_peaks, at_edge)


def estimate_atom_scale_sampled(read, shape, *, side_px: int = 2048, **kwargs) -> AtomScale:
    """:func:`estimate_atom_scale` of an image too large to hold, from a few crops.

    An image up to ``side_px`` on each side is analysed whole (the result
    equals ``estimate_atom_scale(image)``). A larger one (a big frame or a
    montage) is sampled at five ``side_px``² crops — the centre and the centres
    of the four quadrants — because the centre alone may be vacuum or a
    particle; the crop whose brightest blobs stand out most (highest peak of
    the scale response) gives the estimate, preferring crops whose maximum is
    inside the ladder. Memory: one crop at a time.

    Parameters
    ----------
    read : callable
        ``read(y0, y1, x0, x1)`` → the (y1 − y0, x1 − x0) window as an array
        (e.g. ``lambda *w: image[w[0]:w[1], w[2]:w[3]]``). A crop that cannot be
        read (``ValueError``/``OSError``, e.g. NaN regions of a montage) is skipped.
    shape : (H, W)
    side_px : int
        Crop side, px.
    kwargs
        Passed to :func:`estimate_atom_scale`.

    Returns
    -------
    AtomScale
        NaN scale when no crop could be analysed.
    """
    h, w = (int(v) for v in shape)
    side = int(side_px)
    kwargs.setdefault("max_side_px", side)
    if h <= side and w <= side:
        return estimate_atom_scale(read(0, h, 0, w), **kwargs)
    best, best_key = None, None
    for fy, fx in ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)):
        y0 = min(max(int(round(fy * h)) - side // 2, 0), max(h - side, 0))
        x0 = min(max(int(round(fx * w)) - side // 2, 0), max(w - side, 0))
        try:
            est = estimate_atom_scale(read(y0, min(y0 + side, h), x0, min(x0 + side, w)), **kwargs)
        except (ValueError, OSError):
            continue
        finite = np.isfinite(est.response)
        peak = float(np.max(est.response[finite])) if finite.any() else -np.inf
        key = (np.isfinite(est.scale_px) and not est.at_edge, peak)
        if best_key is None or key > best_key:
            best, best_key = est, key
    if best is None:
        nan = float("nan")
        return AtomScale(nan, nan, np.zeros(0), np.zeros(0), int(kwargs.get("n_peaks", 30)), True)
    return best
