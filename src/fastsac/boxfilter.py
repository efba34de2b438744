"""Gaussian-like smoothing at O(1) cost per pixel with a finite support: a cascade
of extended box filters (Gwosdek, Grewenig, Bruhn & Weickert 2011), computed by
running sums on integers so every backend gives the same bits and a tile equals
the whole image wherever its halo covers the support.

Why: a σ = 32 px Gaussian (the classical detector's local-noise window) costs
2·(2·128 + 1) multiply-adds per pixel and dominates CPU latency; a box filter
costs the same few additions at any width. ``passes`` extended boxes of radius
``r`` with a fractional outer tap ``α`` have exactly the variance σ² (here α is
held to 1/256, so the variance matches to < 0.1 %) and reach ``passes·(r + 1)``
px: 96 px for σ = 32 and 3 passes, against the Gaussian's 4σ = 128 px, which
also shrinks the halo of exact tiling.

Exact, reproducible arithmetic (the spec, :func:`_box_gaussian_numpy_ref`):

1. ``q = rint(x · 2^Q / scale)`` (float64 product, half-to-even), an integer in
   ``[-2^Q, 2^Q]`` when ``|x| ≤ scale`` (clipped to ±2^30 otherwise). ``scale`` is a *global* bound (the
   caller passes the whole image's, e.g. the clipped variance cap), so tiles
   quantise exactly like the whole image.
2. ``passes`` times along axis 0, then ``passes`` times along axis 1: pad the
   line by ``r + 1`` with half-sample reflection (scipy's ``mode="reflect"``),
   ``s = M·Σ_{|j|≤r} q[i+j] + a·(q[i-r-1] + q[i+r+1])`` (integers below 2^53,
   exact in float64 however they are summed: running sums, prefix sums or a
   parallel scan), then ``q = rint(s · (1 / (M·(2r+1) + 2a)))``.
3. ``out = float32(q · scale / 2^Q)``.

Every pixel's value is a fixed function of its neighbourhood (no rounding
depends on where a line starts), so a window whose halo is at least
:func:`box_reach` reproduces the whole image's values bit for bit.

References
----------
P. Gwosdek, S. Grewenig, A. Bruhn, J. Weickert, "Theoretical foundations of
Gaussian convolution by extended box filtering", SSVM 2011, LNCS 6667, 447–458.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._backend import Kernel, core
from ._validate import as_float, check_image, check_positive

__all__ = ["BoxPlan", "box_plan", "box_reach", "box_gaussian_filter", "box_local_noise",
           "DEFAULT_PASSES"]

#: Extended boxes per axis. Three match σ² exactly and reach 3(r+1) ≈ 3σ;
#: the detection F1 equals the Gaussian's (docs/performance.md).
DEFAULT_PASSES = 3
#: Denominator of the outer tap's weight a/M (integer weights keep sums exact).
_M = 256
#: Quantisation bits: |q| ≤ 2^30 (int32 storage) and window sums ≤ 2^30·M·(2r+3) < 2^53.
_MAX_Q = 30


@dataclass(frozen=True)
class BoxPlan:
    """One extended box, applied ``passes`` times per axis.

    ``r``: inner radius (px); ``a``: outer tap weight over ``M`` (integer, 0 … M);
    ``norm = M(2r+1) + 2a``; ``q_bits``: quantisation bits; ``variance``: the
    cascade's variance per axis (px²), σ² to within the rounding of a/M.
    """

    sigma: float
    passes: int
    r: int
    a: int
    M: int
    q_bits: int

    @property
    def norm(self) -> int:
        return self.M * (2 * self.r + 1) + 2 * self.a

    @property
    def reach(self) -> int:
        """Radius of the support (px): outputs depend on inputs at most this far away."""
        return self.passes * (self.r + 1) if self.a else self.passes * self.r

    @property
    def variance(self) -> float:
        r = self.r
        inner = self.M * r * (r + 1) * (2 * r + 1) / 3.0
        return self.passes * (inner + 2 * self.a * (r + 1) ** 2) / self.norm


def box_plan(sigma: float, passes: int = DEFAULT_PASSES) -> BoxPlan:
    """The extended box whose ``passes``-fold cascade has variance σ² (Gwosdek et al.,
    eqs. 12–13), with the outer weight rounded to 1/256."""
    sigma = check_positive(sigma, name="sigma")
    passes = int(passes)
    if passes < 1:
        raise ValueError(f"passes must be ≥ 1, got {passes}")
    v = sigma * sigma / passes
    r = int(math.floor(0.5 * math.sqrt(12.0 * v + 1.0) - 0.5))
    r = max(r, 0)
    alpha = (2 * r + 1) * (r * (r + 1) - 3.0 * v) / (6.0 * (v - (r + 1) ** 2))
    a = int(round(min(max(alpha, 0.0), 1.0) * _M))
    need = math.log2(_M * (2 * r + 3))
    q = min(_MAX_Q, 52 - math.ceil(need))
    if q < 16:
        raise ValueError(f"sigma={sigma} is too wide for the exact box cascade (radius {r} px)")
    return BoxPlan(float(sigma), passes, r, a, _M, q)


def box_reach(sigma: float, passes: int = DEFAULT_PASSES) -> int:
    """Support radius (px) of :func:`box_gaussian_filter` at ``sigma``: the halo
    that makes tiles exact."""
    return box_plan(sigma, passes).reach


def box_scales(scale: float, plan: BoxPlan) -> tuple[float, float]:
    """(quantisation factor 2^Q/scale, dequantisation factor scale/2^Q)."""
    s = float(scale)
    if not (s > 0) or not math.isfinite(s):
        s = 1.0
    return float(2.0 ** plan.q_bits / s), float(s / 2.0 ** plan.q_bits)


def _reflect(n: int, pad: int) -> np.ndarray:
    """Indices of a length-``n`` axis padded by ``pad`` with half-sample reflection
    (``d c b a | a b c d | d c b a``, repeated for any pad), as scipy's ``reflect``."""
    i = np.arange(-pad, n + pad)
    m = np.mod(i, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _box_pass_numpy(q: np.ndarray, plan: BoxPlan, axis: int) -> np.ndarray:
    r, a = plan.r, plan.a
    n = q.shape[axis]
    z = np.take(q, _reflect(n, r + 1), axis=axis)  # length n + 2r + 2, float64 integers
    zero = np.zeros_like(np.take(z, [0], axis=axis))
    c = np.cumsum(np.concatenate([zero, z], axis=axis), axis=axis)  # exact: integers < 2^53
    take = lambda lo: np.take(c, np.arange(lo, lo + n), axis=axis)  # noqa: E731
    inner = take(2 * r + 2) - take(1)  # z[i+1] … z[i+2r+1] = q[i-r] … q[i+r]
    outer = np.take(z, np.arange(n), axis=axis) + np.take(z, np.arange(2 * r + 2, 2 * r + 2 + n), axis=axis)
    s = plan.M * inner + a * outer
    return np.rint(s * (1.0 / plan.norm))


def _box_gaussian_numpy_ref(image: np.ndarray, plan: BoxPlan, scale: float) -> np.ndarray:
    """Spec (see the module docstring): quantise, ``passes`` extended boxes along
    axis 0 then axis 1 on integers, dequantise to float32."""
    qf, dq = box_scales(scale, plan)
    q = np.clip(np.rint(np.asarray(image, np.float32).astype(np.float64) * qf), -2.0 ** 30, 2.0 ** 30)
    if q.size == 0:
        return np.zeros(image.shape, np.float32)
    for axis in (0, 1):
        for _ in range(plan.passes):
            q = _box_pass_numpy(q, plan, axis)
    return (q * dq).astype(np.float32)


_box_kernel = Kernel("box_gaussian", _box_gaussian_numpy_ref)


@_box_kernel.register("cpp")
def _box_gaussian_cpp(image, plan, scale):
    qf, dq = box_scales(scale, plan)
    return core().box_gaussian(image, int(plan.r), int(plan.a), int(plan.M), int(plan.passes),
                               qf, 1.0 / plan.norm, dq)


def box_gaussian_filter(image, sigma: float, *, scale: float | None = None,
                        passes: int = DEFAULT_PASSES, backend: str = "auto") -> np.ndarray:
    """Gaussian-like smoothing (a cascade of extended boxes of variance σ²) at
    O(1) cost per pixel, with a finite support of :func:`box_reach` px.

    Parameters
    ----------
    image : (H, W) array
        Finite values with ``|x| ≤ scale``.
    sigma : float
        Standard deviation in pixels (> 0).
    scale : float, optional
        Bound of ``|image|`` that sets the fixed-point grid (2^-30·scale):
        pass the *whole* image's bound when filtering tiles of it. Defaults
        to ``max|image|``.
    passes : int
        Extended boxes per axis (3: exact variance, reach ≈ 3σ).
    backend : {"auto", "cpp", "numpy"}

    Returns
    -------
    (H, W) float32 ndarray
        Reflected borders (scipy's ``mode="reflect"`` at every pass).

    Examples
    --------
    >>> img = np.zeros((65, 65), np.float32); img[32, 32] = 1
    >>> out = box_gaussian_filter(img, 4.0)
    >>> round(float(out.sum()), 4), bool(out[32, 32] == out.max())
    (1.0, True)
    """
    img = as_float(check_image(image), name="image").astype(np.float32, copy=False)
    plan = box_plan(sigma, passes)
    if scale is None:
        scale = float(np.max(np.abs(img))) if img.size else 1.0
    else:
        scale = float(scale)
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale must be a finite bound ≥ 0 of |image|, got {scale}")
    return np.asarray(_box_kernel(np.ascontiguousarray(img), plan, scale, backend=backend),
                      dtype=np.float32)


def _box_local_noise_numpy_ref(residual: np.ndarray, plan: BoxPlan, cap2: np.float32,
                               floor: np.float32) -> np.ndarray:
    """Spec of the fused local noise: ``sqrt(max(box(min(r², cap²)), floor))`` in
    float32, the box cascade on the fixed-point grid of ``cap²``."""
    r = np.asarray(residual, np.float32)
    sq = np.minimum(r * r, np.float32(cap2))
    var = _box_gaussian_numpy_ref(sq, plan, float(cap2))
    return np.sqrt(np.maximum(var, np.float32(floor)))


_noise_kernel = Kernel("box_local_noise", _box_local_noise_numpy_ref)


@_noise_kernel.register("cpp")
def _box_local_noise_cpp(residual, plan, cap2, floor):
    qf, dq = box_scales(float(cap2), plan)
    return core().box_local_noise(residual, int(plan.r), int(plan.a), int(plan.M), int(plan.passes),
                                  qf, 1.0 / plan.norm, dq, float(cap2), float(floor))


def box_local_noise(residual, sigma: float, *, cap2, floor, passes: int = DEFAULT_PASSES,
                    backend: str = "auto") -> np.ndarray:
    """Local noise level ``sqrt(max(B_σ[min(r², cap2)], floor))`` with the
    extended-box cascade ``B_σ`` (:func:`box_gaussian_filter` on the grid of
    ``cap2``), fused in one pass over the image (the squared, clipped residual and
    the variance never exist as full arrays). ``cap2`` and ``floor`` are float32
    values (the caller's clipped-variance cap and variance floor).

    Returns
    -------
    (H, W) float32 ndarray
    """
    r = as_float(check_image(residual), name="residual").astype(np.float32, copy=False)
    plan = box_plan(sigma, passes)
    return np.asarray(_noise_kernel(np.ascontiguousarray(r), plan, np.float32(cap2), np.float32(floor),
                                    backend=backend), dtype=np.float32)
