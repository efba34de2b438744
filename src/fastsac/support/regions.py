"""Region kernels of the support mask and its result type, shared by the CPU
(:mod:`fastsac.support.mask`) and torch (:mod:`fastsac.support.mask_torch`) paths:
small-region removal (run-length union-find in C++) and block expansion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .._backend import Kernel, core

__all__ = ["MaskResult", "drop_small_regions", "expand_blocks"]


@dataclass(frozen=True)
class MaskResult:
    """Support mask of one image.

    Attributes
    ----------
    mask : (H, W) bool ndarray
        True on the support (where atoms can be), False in vacuum.
    support_area_px : float
        Support area in px².
    support_area_nm2 : float or None
        Support area in nm²; None when the pixel size is unknown.
    vacuum_fraction : float
        Fraction of the image that is vacuum, in [0, 1].
    pixel_size_nm : float or None
    has_vacuum : bool
        Whether step 3 found a dark and flat class at all.
    contrast : float
        (bright − dark) / bright in smoothed intensity above the floor.
    texture_ratio : float
        Median local std of the dark class / of the bright class.
    params : dict
        Resolved parameters (in px).
    """

    mask: np.ndarray
    support_area_px: float
    support_area_nm2: float | None
    vacuum_fraction: float
    pixel_size_nm: float | None
    has_vacuum: bool
    contrast: float
    texture_ratio: float
    params: dict

    def as_dict(self) -> dict:
        """JSON-ready summary (no mask array)."""
        return {"support_area_px2": self.support_area_px, "support_area_nm2": self.support_area_nm2,
                "vacuum_fraction": self.vacuum_fraction, "has_vacuum": self.has_vacuum,
                "mask_contrast": self.contrast, "mask_texture_ratio": self.texture_ratio,
                "pixel_size_nm": self.pixel_size_nm}



def _drop_small_regions_numpy_ref(region: np.ndarray, min_px: float,
                                  keep_touching_border: bool = False) -> np.ndarray:
    """Remove 4-connected components of ``region`` smaller than ``min_px`` pixels.

    With ``keep_touching_border`` nothing touching the image border is removed
    (for support: a sliver of support at the edge is still support)."""
    lab, n = ndi.label(region)
    if n == 0:
        return region
    sizes = np.bincount(lab.ravel())
    small = sizes < min_px
    small[0] = False
    if keep_touching_border:
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        small[edge] = False
    if not small.any():  # the usual case: skip a full-frame gather
        return region
    return region & ~small[lab]


def _expand_blocks_numpy_ref(small: np.ndarray, factor: int, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour upsampling of a binned mask by ``factor``, cropped to (h, w)."""
    return np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)[:h, :w]


_drop_small_kernel = Kernel("drop_small_regions", _drop_small_regions_numpy_ref)
_expand_kernel = Kernel("expand_blocks", _expand_blocks_numpy_ref)


@_drop_small_kernel.register("cpp")
def _drop_small_regions_cpp(region, min_px, keep_touching_border=False):
    # Runs instead of pixels: ~10x faster than label + bincount on a 1024² mask.
    return core().drop_small_regions(np.asarray(region, bool), float(min_px), bool(keep_touching_border))


@_expand_kernel.register("cpp")
def _expand_blocks_cpp(small, factor, h, w):
    return core().expand_blocks(np.asarray(small, bool), int(factor), int(h), int(w))


def drop_small_regions(region: np.ndarray, min_px: float, keep_touching_border: bool = False, *,
                backend: str = "auto") -> np.ndarray:
    """Remove 4-connected components of ``region`` smaller than ``min_px`` pixels
    (see :func:`_drop_small_regions_numpy_ref`, the spec)."""
    return _drop_small_kernel(region, min_px, keep_touching_border, backend=backend)


def expand_blocks(small: np.ndarray, factor: int, h: int, w: int, *, backend: str = "auto") -> np.ndarray:
    """The full-resolution (h, w) mask of a mask binned by ``factor``."""
    if factor == 1 and small.shape == (h, w):
        return small
    return _expand_kernel(small, factor, h, w, backend=backend)
