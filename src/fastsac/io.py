"""Read calibrated micrographs and point tables; write outputs atomically.

Coordinates everywhere in fastsac are ``[x, y]`` = ``[column, row]`` in pixels,
with pixel centres at integer positions, the convention of ImageJ's Results
table (columns ``X``, ``Y``).
"""

from __future__ import annotations

import contextlib
import csv
import io as _stdio
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import FastsacInputError

#: Pixel size of the ptnc-train images (nm/px). Physical defaults are tuned at this scale,
#: and lengths of uncalibrated images are converted with it (announced as an assumption).
DEFAULT_PIXEL_SIZE_NM = 0.0293

__all__ = [
    "Micrograph", "read", "write_tiff", "read_points", "atomic_write", "atomic_path", "atomic_write_text",
    "write_json", "SUPPORTED_SUFFIXES", "DEFAULT_PIXEL_SIZE_NM", "unit_to_nm",
]

# Length of one unit, in nanometres. Keys are lower-cased.
_UNIT_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0, "nanometres": 1.0,
    "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "micrometre": 1e3, "\\u00b5m": 1e3,
    "å": 0.1, "Å": 0.1, "a": 0.1, "angstrom": 0.1, "angstroms": 0.1, "ang": 0.1,
    "pm": 1e-3, "picometer": 1e-3, "picometre": 1e-3,
    "mm": 1e6, "cm": 1e7, "m": 1e9,
}

_TIFF = {".tif", ".tiff"}
_RASTER = {".png", ".jpg", ".jpeg", ".bmp"}
_NUMPY = {".npy"}
_RSCIIO = {".dm3", ".dm4", ".emd", ".ser"}
SUPPORTED_SUFFIXES = tuple(sorted(_TIFF | _RASTER | _NUMPY | _RSCIIO))


@dataclass(frozen=True)
class Micrograph:
    """One 2-D image with its calibration.

    Attributes
    ----------
    data : (H, W) float32 ndarray
        Raw intensities (detector counts), not normalised.
    pixel_size_nm : float or None
        Edge length of one pixel in nm; None when the file carries no usable
        calibration and none was given.
    pixel_size_source : str
        Where the calibration came from: ``"imagej"``, ``"tiff-resolution"``,
        ``"hyperspy"``, ``"rosettasciio"``, ``"override"`` or ``"none"``.
    source : str or None
        Path of the file read, if any.
    metadata : dict
        Format-specific extras (original dtype, tags).
    """

    data: np.ndarray
    pixel_size_nm: float | None = None
    pixel_size_source: str = "none"
    source: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source else "array"

    @classmethod
    def from_array(cls, data, *, pixel_size_nm: float | None = None, name: str | None = None):
        arr = _check_data(np.asarray(data), name)
        return cls(arr, pixel_size_nm, "override" if pixel_size_nm else "none", name, {})


def read(path: str | os.PathLike, *, pixel_size_nm: float | None = None) -> Micrograph:
    """Read a micrograph and its pixel size.

    Parameters
    ----------
    path : path-like
        TIFF (ImageJ or resolution-tag calibration), PNG/JPEG (8/16-bit),
        ``.npy``, or DM3/DM4/EMD/SER (needs the ``formats`` extra).
    pixel_size_nm : float, optional
        Overrides whatever calibration the file carries.

    Returns
    -------
    Micrograph

    Raises
    ------
    FastsacInputError
        If the file is missing, unreadable, not 2-D, empty, constant or
        contains NaN. The message names the file and the reason.

    Examples
    --------
    >>> m = read("image.tif")                      # doctest: +SKIP
    >>> m.data.shape, m.pixel_size_nm              # doctest: +SKIP
    ((512, 512), 0.029296875)
    """
    path = Path(path)
    if not path.exists():
        raise FastsacInputError(path, "file not found")
    if path.is_dir():
        raise FastsacInputError(path, "is a directory, expected an image file")
    if path.stat().st_size == 0:
        raise FastsacInputError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    try:
        if suffix in _TIFF:
            data, px, src, meta = _read_tiff(path)
        elif suffix in _RASTER:
            data, px, src, meta = _read_raster(path)
        elif suffix in _NUMPY:
            data = np.load(path, allow_pickle=False)
            px, src, meta = None, "none", {"dtype": str(data.dtype)}
        elif suffix in _RSCIIO:
            data, px, src, meta = _read_rsciio(path)
        else:
            raise FastsacInputError(
                path, f"unsupported file type {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    except (FastsacInputError, ImportError):
        raise
    except Exception as exc:  # any decoder failure means a corrupt or foreign file
        raise FastsacInputError(path, f"cannot be read as {suffix or 'an image'} "
                                      f"({type(exc).__name__}: {exc})") from exc
    data = _check_data(np.asarray(data), path)
    if pixel_size_nm is not None:
        if not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
            raise FastsacInputError(path, f"pixel size override must be > 0 nm, got {pixel_size_nm!r}")
        px, src = float(pixel_size_nm), "override"
    return Micrograph(data, px, src if px else "none", os.fspath(path), meta)


def _check_data(arr: np.ndarray, source) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype.kind in "ui":
        # RGB(A) export of a grayscale image: the channels are equal; take luminance.
        arr = arr[..., :3].astype(np.float32).mean(axis=-1)
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise FastsacInputError(source, f"expected a 2-D image, got an array of shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 2:
        raise FastsacInputError(source, f"image is empty or degenerate (shape {arr.shape})")
    if arr.dtype.kind not in "biuf":
        raise FastsacInputError(source, f"image has non-numeric dtype {arr.dtype}")
    data = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        frac = 1.0 - finite.mean()
        raise FastsacInputError(source, f"image contains NaN/inf in {frac:.1%} of pixels")
    if float(data.max()) == float(data.min()):
        raise FastsacInputError(source, f"image is constant (every pixel = {data.flat[0]:g}); "
                                        "nothing to detect")
    return data


def unit_to_nm(unit) -> float | None:
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1")
    u = str(unit).strip().strip("\x00")
    return _UNIT_NM.get(u, _UNIT_NM.get(u.lower()))


def _read_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise FastsacInputError(path, "TIFF has no image pages")
        page = tif.pages[0]
        data = page.asarray()
        meta: dict[str, Any] = {"dtype": str(page.dtype), "format": "tiff"}
        tags = page.tags
        ij = tif.imagej_metadata or {}
        px, src = None, "none"

        xres = tags.get("XResolution")
        px_per_unit = None
        if xres is not None:
            num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
            if num and den:
                px_per_unit = num / den

        unit_nm = unit_to_nm(ij.get("unit")) if ij else None
        if unit_nm is not None and px_per_unit:
            px, src = unit_nm / px_per_unit, "imagej"
        if px is None:
            # hyperspy writes its axis scale into private tags 65009/65010 and unit into 65003.
            scale = tags.get(65009)
            unit = tags.get(65003)
            if scale is not None and unit is not None:
                u = unit_to_nm(unit.value)
                if u and float(scale.value) > 0:
                    px, src = float(scale.value) * u, "hyperspy"
        if px is None and px_per_unit:
            resunit = tags.get("ResolutionUnit")
            unit_code = int(resunit.value) if resunit is not None else 2
            per = {3: 1e7, 2: 2.54e7}.get(unit_code)  # nm per centimetre / inch
            # Resolution tags of plain scanner-like values (72 dpi…) are not a calibration.
            if per and unit_code == 3:
                px, src = per / px_per_unit, "tiff-resolution"
        meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (str, int, float))}
    return data, px, src, meta


def _read_raster(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L"):
            data = np.array(im, dtype=np.uint16)
        elif mode in ("RGB", "RGBA", "L", "I", "F", "LA", "P"):
            data = np.array(im.convert("L") if mode in ("P", "LA") else im)
        else:
            data = np.array(im)
        dpi = im.info.get("dpi")
    meta = {"dtype": str(data.dtype), "format": path.suffix.lower().lstrip("."), "mode": mode}
    return data, None, "none", meta | ({"dpi": dpi} if dpi else {})


def _read_rsciio(path: Path):
    try:
        import rsciio  # noqa: F401
    except ImportError:
        raise FastsacInputError(path, "reading DM3/DM4/EMD/SER needs the optional extra: "
                                      "pip install 'fastsac[formats]'") from None
    suffix = path.suffix.lower()
    if suffix in (".dm3", ".dm4"):
        from rsciio.digitalmicrograph import file_reader
    elif suffix == ".emd":
        from rsciio.emd import file_reader
    else:
        from rsciio.tia import file_reader
    signals = [s for s in file_reader(str(path)) if np.asarray(s["data"]).ndim == 2]
    if not signals:
        raise FastsacInputError(path, "file holds no 2-D image signal")
    sig = signals[0]
    px = None
    axes = sig.get("axes", [])
    if axes:
        ax = axes[-1]
        u = unit_to_nm(ax.get("units"))
        if u and ax.get("scale"):
            px = float(ax["scale"]) * u
    return np.asarray(sig["data"]), px, "rosettasciio" if px else "none", {"format": suffix[1:]}


def write_tiff(path: str | os.PathLike, image: np.ndarray, *, pixel_size_nm: float | None,
               bigtiff: bool = False, tile: tuple[int, int] | None = None) -> Path:
    """Write a calibrated ImageJ-style TIFF atomically (readable by ImageJ and :func:`read`)."""
    import tifffile

    image = np.asarray(image)
    kwargs: dict[str, Any] = {}
    # ImageJ hyperstacks hold only uint8/uint16/float32; other dtypes (e.g. the
    # uint32 of many STEM exports) are calibrated by resolution tags instead.
    imagej = not bigtiff and tile is None and image.dtype in (np.uint8, np.uint16, np.float32)
    if pixel_size_nm and imagej:
        kwargs["resolution"] = (1.0 / pixel_size_nm, 1.0 / pixel_size_nm)
        kwargs["metadata"] = {"unit": "nm"}
    elif pixel_size_nm:
        # Not an ImageJ file: calibrate by the standard resolution tags in
        # pixels per centimetre.
        kwargs["resolution"] = (1e7 / pixel_size_nm, 1e7 / pixel_size_nm)
        kwargs["resolutionunit"] = "CENTIMETER"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, imagej=imagej, bigtiff=bigtiff,
                         tile=tile, **kwargs)
    return Path(path)


def read_points(path: str | os.PathLike) -> np.ndarray:
    """Read point positions as an ``(N, 2)`` float64 array of ``[x, y]`` pixels.

    Understands ImageJ Results tables (columns ``X``, ``Y``, optionally an
    unnamed index column first), fastsac's own ``atoms.csv`` (``x_px``,
    ``y_px``) and simulator truth files. A file with a header only gives zero
    points.
    """
    path = Path(path)
    if not path.exists():
        raise FastsacInputError(path, "label file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FastsacInputError(path, f"label file is not text ({exc})") from exc
    rows = list(csv.reader(_stdio.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise FastsacInputError(path, "label file is empty (no header)")
    header = [c.strip() for c in rows[0]]
    lower = [h.lower() for h in header]
    for xk, yk in (("x_px", "y_px"), ("x", "y")):
        if xk in lower and yk in lower:
            ix, iy = lower.index(xk), lower.index(yk)
            break
    else:
        raise FastsacInputError(path, f"label file needs X and Y columns, found {header}")
    pts = []
    for n, row in enumerate(rows[1:], start=2):
        try:
            pts.append((float(row[ix]), float(row[iy])))
        except (ValueError, IndexError):
            raise FastsacInputError(path, f"line {n}: cannot read X/Y from {row}") from None
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise FastsacInputError(path, "label file contains non-finite coordinates")
    return arr


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` on success.

    A crash mid-write leaves any previous ``path`` untouched and no partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for writers that need a file name;
    rename it over ``path`` when the block succeeds, delete it when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
