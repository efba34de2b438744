"""The support (vacuum) mask: an image step before the point statistics.

:func:`support_mask` finds vacuum (dark and flat) so densities and dispersion
statistics are per area of support; :func:`require_support` turns an all-vacuum
image into one clear error.
"""

from .mask import bin_mean, require_support, support_mask
from .regions import MaskResult

__all__ = ["MaskResult", "support_mask", "require_support", "bin_mean"]
