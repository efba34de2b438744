"""Background subtraction and normalisation of HAADF-STEM frames.

HAADF intensity rises with thickness, so a slowly varying support signal sits
under the atoms; the published SAC-CNN workflow removes it with a 40×40 median
filter. Shot noise is signal dependent (variance ∝ mean^1.4–2.1 on the
ptnc-train images), so after background removal we divide by a *local* noise
estimate, which makes one threshold work across thin and thick regions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ._backend import Kernel, core
from ._validate import as_float, check_image, check_positive, resolve_option

__all__ = ["median_filter", "subtract_background", "normalize", "local_noise",
           "BackgroundResult", "BackgroundMethod", "NormalizeMethod"]


def _median_filter_numpy_ref(image: np.ndarray, size: int) -> np.ndarray:
    """Spec: ``scipy.ndimage.median_filter(image, size=size, mode="reflect")``.

    The window of output pixel ``i`` covers ``i - size//2 … i - size//2 + size - 1``
    on each axis; borders are half-sample reflected (``d c b a | a b c d | d c b a``,
    repeated when the window is wider than the image); the result is the element
    of 0-based rank ``size**2 // 2`` (upper median, never an average).

    scipy (≤ 1.17 at least) reads uninitialised memory when the reflected border
    is ≥ 4× the image extent (e.g. ``size=21`` on a 2-pixel-wide image), so for
    windows at least as wide as the image we pad with the repeated reflection
    ourselves (``np.pad(mode="symmetric")``) and crop.
    """
    a = size // 2
    b = size - 1 - a
    if a >= min(image.shape):
        padded = np.pad(image, ((a, b), (a, b)), mode="symmetric")
        out = ndi.median_filter(padded, size=size, mode="reflect")
        return np.ascontiguousarray(out[a:a + image.shape[0], a:a + image.shape[1]])
    return ndi.median_filter(image, size=size, mode="reflect")


_median_kernel = Kernel("median_filter", _median_filter_numpy_ref)


@_median_kernel.register("cpp")
def _median_filter_cpp(image, size):
    return core().median_filter(image, int(size))


def median_filter(image, *, size: int = 40, backend: str = "auto") -> np.ndarray:
    """Square median filter with reflected borders, equal to scipy's.

    Parameters
    ----------
    image : (H, W) array
    size : int
        Window edge in pixels (even sizes follow scipy's origin convention).
    backend : {"auto", "cpp", "numpy"}

    Returns
    -------
    (H, W) float32 ndarray
    """
    img = as_float(check_image(image), name="image").astype(np.float32, copy=False)
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be ≥ 1 pixel, got {size}")
    return np.asarray(_median_kernel(img, size, backend=backend), dtype=np.float32)


class BackgroundMethod(str, enum.Enum):
    MEDIAN = "median"      # published workflow: 40×40 median
    GAUSSIAN = "gaussian"  # cheap smooth background: wide Gaussian of a clipped image
    NONE = "none"


class NormalizeMethod(str, enum.Enum):
    MINMAX = "minmax"            # published workflow: (x - min) / (max - min)
    ROBUST = "robust"            # (x - median) / (1.4826 MAD), global
    LOCAL_NOISE = "local_noise"  # x / local noise sigma
    NONE = "none"


@dataclass(frozen=True)
class BackgroundResult:
    """Background-subtracted image and the background that was removed (float32)."""

    image: np.ndarray
    background: np.ndarray
    method: str
    params: dict = field(default_factory=dict)


def subtract_background(image, *, method: str = "median", size_px: float = 40,
                        clip: bool = False, backend: str = "auto") -> BackgroundResult:
    """Remove the slowly varying support signal.

    Parameters
    ----------
    image : (H, W) array
    method : {"median", "gaussian", "none"}
        ``median`` is the published 40×40 median filter (C++ kernel);
        ``gaussian`` is a cheaper smooth background: a Gaussian of width
        ``size_px / 4`` applied to the image after a 5×5 grey opening so that
        atoms do not lift it.
    size_px : float
        Window (median) or scale (gaussian) in pixels, several atom widths.
    clip : bool
        Clip negative values at 0 (the published workflow does).
    """
    img = as_float(check_image(image))
    m = resolve_option(method, BackgroundMethod, "method")
    if m is BackgroundMethod.MEDIAN:
        bg = median_filter(img, size=int(round(size_px)), backend=backend)
    elif m is BackgroundMethod.GAUSSIAN:
        check_positive(size_px, name="size_px")
        opened = ndi.grey_opening(img, size=(5, 5))
        bg = ndi.gaussian_filter(opened, sigma=size_px / 4.0, mode="reflect").astype(np.float32)
    else:
        bg = np.zeros_like(img, dtype=np.float32)
    out = img.astype(np.float32) - bg
    if clip:
        np.maximum(out, 0, out=out)
    return BackgroundResult(out, bg, m.value, {"size_px": float(size_px), "clip": clip})


def local_noise(residual, *, sigma_px: float = 16.0, floor_fraction: float = 1e-3) -> np.ndarray:
    """Local standard deviation of a background-subtracted image.

    Uses a Gaussian-weighted mean of the squared residual after removing the
    brightest 2 % (atoms) so they do not inflate the estimate. A floor of
    ``floor_fraction`` × global sigma avoids division by zero in flat vacuum.
    """
    r = as_float(check_image(residual)).astype(np.float32)
    cap = np.percentile(np.abs(r), 98)
    sq = np.minimum(r * r, cap * cap)
    var = ndi.gaussian_filter(sq, sigma=sigma_px, mode="reflect")
    glob = float(np.sqrt(np.mean(sq))) or 1.0
    return np.sqrt(np.maximum(var, (floor_fraction * glob) ** 2)).astype(np.float32)


def normalize(image, *, method: str = "local_noise", noise_sigma_px: float = 16.0) -> np.ndarray:
    """Scale an image (usually background-subtracted) for thresholding or a network.

    ``minmax`` maps to [0, 1]; ``robust`` to zero median and unit MAD-sigma;
    ``local_noise`` divides by :func:`local_noise` so values are in units of
    the local noise level (a signal-to-noise map).
    """
    img = as_float(check_image(image)).astype(np.float32)
    m = resolve_option(method, NormalizeMethod, "method")
    if m is NormalizeMethod.MINMAX:
        lo, hi = float(img.min()), float(img.max())
        return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    if m is NormalizeMethod.ROBUST:
        med = float(np.median(img))
        mad = 1.4826 * float(np.median(np.abs(img - med))) or float(img.std()) or 1.0
        return (img - med) / mad
    if m is NormalizeMethod.LOCAL_NOISE:
        return img / local_noise(img, sigma_px=noise_sigma_px)
    return img
