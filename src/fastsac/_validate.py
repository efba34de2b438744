"""Shared argument validation. Messages name the argument, what was expected,
what was received and, where possible, the fix."""

from __future__ import annotations

import difflib
import enum
from typing import TypeVar

import numpy as np

E = TypeVar("E", bound=enum.Enum)


def check_image(image, *, name: str = "image", allow_nan: bool = False) -> np.ndarray:
    """Return ``image`` as a 2-D ndarray, raising for anything else."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}; "
                         "pass a single grayscale frame (take one channel of RGB data)")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not allow_nan and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; replace them (e.g. np.nan_to_num) first")
    return arr


def as_float(image, *, name: str = "image") -> np.ndarray:
    """C-contiguous float32 (float64 stays float64) copy-free when possible."""
    arr = np.asarray(image)
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    return np.ascontiguousarray(arr, dtype=dtype)


def as_points(xy, *, name: str = "xy") -> np.ndarray:
    """(N, 2) C-contiguous float64 array of [x, y] (column, row) positions."""
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) holding [x, y], got {arr.shape}")
    return np.ascontiguousarray(arr)


def per_axis(value, ndim: int = 2, *, name: str = "value") -> tuple:
    """Expand a scalar to one value per axis; check a sequence has ``ndim`` items."""
    if np.ndim(value) == 0:
        return (value,) * ndim
    value = tuple(value)
    if len(value) != ndim:
        raise ValueError(f"{name} must be a scalar or have {ndim} items, got {len(value)}")
    return value


def check_positive(value: float, *, name: str, allow_zero: bool = False) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        want = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {want}, got {value!r}")
    return v


def resolve_option(value, enum_type: type[E], name: str) -> E:
    """Map a string (or enum member) to ``enum_type``, suggesting close matches."""
    if isinstance(value, enum_type):
        return value
    valid = [m.value for m in enum_type]
    try:
        return enum_type(value)
    except ValueError:
        close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name} must be one of {valid}, got {value!r}{hint}") from None


def stable_float(value: float, digits: int = 9) -> float:
    """``value`` rounded to ``digits`` significant digits.

    Parameters derived from a calibration (σ in px = σ_nm / pixel size) go
    through ceil/floor/round; pixel sizes that differ in the 12th digit (a
    TIFF's 0.029299999999512 vs a Zarr's 0.0293) must not flip them, so the
    derived float is rounded first."""
    v = float(value)
    if v == 0 or not np.isfinite(v):
        return v
    return float(f"{v:.{digits}g}")
