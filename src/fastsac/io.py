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
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._validate import stable_float
from .errors import FastsacInputError

#: Pixel size of the ptnc-train images (nm/px). Physical defaults are tuned at this scale,
#: and lengths of uncalibrated images are converted with it (announced as an assumption).
DEFAULT_PIXEL_SIZE_NM = 0.0293

log = logging.getLogger(__name__)

__all__ = [
    "Micrograph", "read", "write_tiff", "read_points", "atomic_write", "atomic_path", "atomic_write_text",
    "write_json", "SUPPORTED_SUFFIXES", "read_frames", "image_info", "ImageInfo",
    "check_pixel_size", "remove_stale_temporaries", "PIXEL_SIZE_RANGE_NM", "MAX_PIXELS", "MAX_ABS_VALUE",
    "DEFAULT_PIXEL_SIZE_NM", "unit_to_nm",
]

#: Plausible pixel sizes, nm (0.1 pm to 1 µm). A file calibration outside is
#: treated as missing with a warning (a 1e-9 nm/px ImageJ tag would otherwise
#: size every filter in kilometres of pixels); an override outside is refused.
PIXEL_SIZE_RANGE_NM = (1e-4, 1e3)
#: Default cap on the pixels of one frame read into memory (8192², 256 MiB as
#: float32); checked from the header before decoding. Larger images go to
#: ``fastsac montage``, which streams them.
MAX_PIXELS = 8192 * 8192
#: Largest pixel magnitude accepted: beyond it the float32 squares and frame
#: sums of the noise estimates overflow to inf.
MAX_ABS_VALUE = 1e15

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
        """File stem (``<stem>_f003`` for a frame of a stack), else ``"array"``."""
        if self.metadata.get("name"):
            return str(self.metadata["name"])
        return Path(self.source).stem if self.source else "array"

    @classmethod
    def from_array(cls, data, *, pixel_size_nm: float | None = None, name: str | None = None):
        arr = _check_data(np.asarray(data), name)
        return cls(arr, pixel_size_nm, "override" if pixel_size_nm else "none", name, {})


def read(path: str | os.PathLike, *, pixel_size_nm: float | None = None,
         max_pixels: int | None = MAX_PIXELS, frame: int | None = None) -> Micrograph:
    """Read a micrograph and its pixel size.

    Parameters
    ----------
    path : path-like
        TIFF (ImageJ or resolution-tag calibration), PNG/JPEG (8/16-bit),
        ``.npy``, or DM3/DM4/EMD/SER (needs the ``formats`` extra).
    pixel_size_nm : float, optional
        Overrides whatever calibration the file carries; must lie in
        :data:`PIXEL_SIZE_RANGE_NM`.
    max_pixels : int or None
        Refuse images with more pixels per frame than this, judged from the
        header before anything is decoded (default :data:`MAX_PIXELS`; None:
        no limit). Bigger images are for :func:`fastsac.montage.analyze_montage`.
    frame : int, optional
        Frame of a 3-D stack (TIFF pages, ``.npy`` first axis). Without it a
        stack is refused (see :func:`read_frames`).

    Returns
    -------
    Micrograph
        A calibration outside :data:`PIXEL_SIZE_RANGE_NM` is treated as missing
        (``pixel_size_nm=None``, logged as a warning, kept in
        ``metadata["calibration_rejected_nm"]``).

    Raises
    ------
    FastsacInputError
        If the file is missing, unreadable, not 2-D, too large, empty,
        constant or contains NaN/inf (or values whose float32 arithmetic
        overflows). The message names the file and the reason.

    Examples
    --------
    >>> m = read("image.tif")                      # doctest: +SKIP
    >>> m.data.shape, m.pixel_size_nm              # doctest: +SKIP
    ((512, 512), 0.029296875)
    """
    path = Path(path)
    if pixel_size_nm is not None:
        try:
            check_pixel_size(pixel_size_nm, name="pixel size override")
        except ValueError as exc:
            raise FastsacInputError(path, str(exc)) from None
    suffix = _check_file(path)
    try:
        if suffix in _TIFF:
            data, px, src, meta = _read_tiff(path, max_pixels, frame)
        elif suffix in _RASTER:
            data, px, src, meta = _read_raster(path, max_pixels, frame)
        elif suffix in _NUMPY:
            data, px, src, meta = _read_npy(path, max_pixels, frame)
        elif suffix in _RSCIIO:
            data, px, src, meta = _read_rsciio(path, max_pixels, frame)
        else:
            raise FastsacInputError(
                path, f"unsupported file type {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    except (FastsacInputError, ImportError):
        raise
    except MemoryError:
        raise FastsacInputError(path, "not enough memory to decode it") from None
    except Exception as exc:  # any decoder failure means a corrupt or foreign file
        raise FastsacInputError(path, f"cannot be read as {suffix or 'an image'} "
                                      f"({type(exc).__name__}: {_short(exc)})") from exc
    where = path if frame is None else f"{path} (frame {frame})"
    data = _check_data(data, where, owned=True)
    if px is not None and not _plausible(px):
        log.warning("%s: calibration %.3g nm/px is outside the plausible %g–%g nm/px; "
                    "treated as missing", path, px, *PIXEL_SIZE_RANGE_NM)
        meta["calibration_rejected_nm"] = float(px)
        px, src = None, "none"
    if pixel_size_nm is not None:
        px, src = float(pixel_size_nm), "override"
    if frame is not None:
        meta["frame"] = int(frame)
        meta["name"] = f"{path.stem}_f{frame:03d}"
    # A TIFF's rational px/cm gives 0.029299999999512 for 0.0293: same calibration.
    px = None if px is None else stable_float(px)
    return Micrograph(data, px, src if px else "none", os.fspath(path), meta)


def read_frames(path: str | os.PathLike, *, pixel_size_nm: float | None = None,
                max_pixels: int | None = MAX_PIXELS) -> Iterator[Micrograph]:
    """Every frame of a file, one at a time: a 2-D image gives itself, a 3-D
    stack (multi-page TIFF, ``(N, H, W)`` ``.npy``) gives ``N`` micrographs
    named ``<stem>_f000``, ``<stem>_f001`` … (only one frame is in memory at a
    time). Raises :class:`FastsacInputError` as :func:`read`, naming the frame."""
    path = Path(path)
    n = image_info(path, max_pixels=max_pixels).n_frames
    if n == 1:
        yield read(path, pixel_size_nm=pixel_size_nm, max_pixels=max_pixels)
        return
    for i in range(n):
        yield read(path, pixel_size_nm=pixel_size_nm, max_pixels=max_pixels, frame=i)


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, before any pixel is decoded."""

    shape: tuple[int, ...]
    dtype: str
    n_frames: int
    frame_shape: tuple[int, int]


def image_info(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> ImageInfo:
    """Shape, dtype and frame count from the header (raises like :func:`read`)."""
    path = Path(path)
    suffix = _check_file(path)
    try:
        if suffix in _TIFF:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                info = _tiff_info(tif, path)
        elif suffix in _RASTER:
            from PIL import Image

            with Image.open(path) as im:
                info = _raster_info(im, path)
        elif suffix in _NUMPY:
            info = _npy_info(np.load(path, mmap_mode="r", allow_pickle=False), path)
        elif suffix in _RSCIIO:
            info = ImageInfo((), "", 1, (0, 0))  # read() checks after a lazy open
        else:
            raise FastsacInputError(
                path, f"unsupported file type {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    except FastsacInputError:
        raise
    except Exception as exc:
        raise FastsacInputError(path, f"cannot be read as {suffix or 'an image'} "
                                      f"({type(exc).__name__}: {_short(exc)})") from exc
    if suffix not in _RSCIIO:
        _check_size(info.frame_shape, info.dtype, max_pixels, path)
    return info


def check_pixel_size(value, *, name: str = "pixel size") -> float:
    """``value`` as a float in :data:`PIXEL_SIZE_RANGE_NM`, else ValueError."""
    v = float(value)
    if not _plausible(v):
        lo, hi = PIXEL_SIZE_RANGE_NM
        raise ValueError(f"{name} must be between {lo:g} and {hi:g} nm, got {value!r}")
    return v


def _plausible(px) -> bool:
    lo, hi = PIXEL_SIZE_RANGE_NM
    return bool(np.isfinite(px) and lo <= px <= hi)


def _short(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    msg = " ".join(str(exc).split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _check_file(path: Path) -> str:
    if not path.exists():
        raise FastsacInputError(path, "file not found")
    if path.is_dir():
        raise FastsacInputError(path, "is a directory, expected an image file")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise FastsacInputError(path, f"cannot be opened ({exc.strerror or exc})") from None
    if size == 0:
        raise FastsacInputError(path, "file is empty (0 bytes)")
    return path.suffix.lower()


def _check_size(frame_shape, dtype, max_pixels, source) -> None:
    """Refuse a frame bigger than ``max_pixels`` before it is allocated."""
    h, w = (int(s) for s in frame_shape)
    if h < 0 or w < 0:
        raise FastsacInputError(source, f"header claims a negative size {h}×{w}")
    if max_pixels is not None and h * w > max_pixels:
        nbytes = h * w * max(np.dtype(dtype).itemsize if dtype else 4, 4)
        raise FastsacInputError(
            source, f"image of {w}×{h} px ({h * w / 1e6:.0f} Mpx, ≥ {nbytes / 2**30:.1f} GiB in "
                    f"memory) exceeds the limit of {max_pixels / 1e6:.0f} Mpx; analyse it with "
                    "`fastsac montage` (streamed, tile by tile) or raise --max-pixels")


def _frames_of(shape, rgb: bool) -> tuple[int, tuple[int, int]]:
    """(frame count, frame shape) of an array shape; trailing RGB(A) samples kept out."""
    core = tuple(int(s) for s in shape)
    if rgb:
        core = core[:-1]
    core = tuple(s for s in core[:-2] if s != 1) + core[-2:] if len(core) >= 2 else core
    if len(core) < 2:
        raise ValueError(f"expected a 2-D image, got shape {tuple(shape)}")
    n = int(np.prod(core[:-2], dtype=np.int64)) if len(core) > 2 else 1
    return n, core[-2:]


def _tiff_info(tif, path) -> ImageInfo:
    if not tif.series:
        raise FastsacInputError(path, "TIFF has no image pages")
    s = tif.series[0]
    rgb = "S" in s.axes and s.axes.endswith("S") and s.shape[-1] in (3, 4)
    n, fshape = _frames_of(s.shape, rgb)
    return ImageInfo(tuple(s.shape), str(s.dtype), n, fshape)


def _raster_info(im, path) -> ImageInfo:
    w, h = im.size
    n = int(getattr(im, "n_frames", 1) or 1)
    return ImageInfo((n, h, w) if n > 1 else (h, w), "uint16" if im.mode.startswith("I") else "uint8",
                     n, (h, w))


def _npy_info(arr, path) -> ImageInfo:
    rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype.kind in "ui"
    n, fshape = _frames_of(arr.shape, rgb)
    return ImageInfo(tuple(arr.shape), str(arr.dtype), n, fshape)


def _check_frame(info: ImageInfo, frame, path, max_pixels) -> int:
    _check_size(info.frame_shape, info.dtype, max_pixels, path)
    if frame is None:
        if info.n_frames > 1:
            raise FastsacInputError(
                path, f"expected a 2-D image, got a stack of {info.n_frames} frames of "
                      f"{info.frame_shape[1]}×{info.frame_shape[0]} px (shape {info.shape}); "
                      "`fastsac analyze` analyses every frame (fastsac.io.read_frames)")
        return 0
    if not 0 <= frame < info.n_frames:
        raise FastsacInputError(path, f"frame {frame} out of range (the file has {info.n_frames})")
    return int(frame)


def _check_data(arr: np.ndarray, source, *, owned: bool = False) -> np.ndarray:
    """Validated float32 frame; the finiteness, range and constant checks run on
    the decoded dtype, so a bad image costs no float copy. ``owned``: ``arr`` was
    just decoded for us, so a 32-bit integer frame may be converted in place."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise FastsacInputError(source, f"image has non-numeric dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype.kind in "ui":
        # RGB(A) export of a grayscale image: the channels are equal; take luminance.
        arr = (arr[..., 0].astype(np.float32) + arr[..., 1] + arr[..., 2]) / np.float32(3)
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise FastsacInputError(source, f"expected a 2-D image, got an array of shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 2:
        raise FastsacInputError(source, f"image is empty or degenerate (shape {arr.shape})")
    if arr.dtype.kind == "b":
        arr = arr.view(np.uint8)
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise FastsacInputError(source, f"image contains NaN/inf in {n_bad} of {arr.size} pixels "
                                        f"({n_bad / arr.size:.2%}); replace them (e.g. by the "
                                        "vacuum level) first")
    big = max(abs(float(lo)), abs(float(hi)))
    if big > MAX_ABS_VALUE:
        raise FastsacInputError(
            source, f"pixel values up to {big:.3g} overflow float32 arithmetic (squares and sums "
                    f"become inf; limit ±{MAX_ABS_VALUE:.0e}); rescale the image")
    if lo == hi:
        raise FastsacInputError(source, f"image is constant (every pixel = {float(lo):g}); "
                                        "nothing to detect")
    if (owned and arr.dtype.kind in "iu" and arr.dtype.itemsize == 4 and arr.flags.c_contiguous
            and arr.flags.writeable):
        # Same item size: convert in place, a block of rows at a time (each block is
        # read whole before its float bits overwrite it). A 32-bit 8192² frame then
        # needs 256 MiB instead of 512 MiB.
        out = arr.view(np.float32)
        step = max(1, (1 << 20) // max(1, arr.shape[1]))
        for i in range(0, arr.shape[0], step):
            out[i:i + step] = arr[i:i + step].astype(np.float32)
        return out
    return np.ascontiguousarray(arr, dtype=np.float32)


def unit_to_nm(unit) -> float | None:
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1")
    u = str(unit).strip().strip("\x00")
    return _UNIT_NM.get(u, _UNIT_NM.get(u.lower()))


def _read_tiff(path: Path, max_pixels, frame):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        info = _tiff_info(tif, path)
        k = _check_frame(info, frame, path, max_pixels)
        s = tif.series[0]
        if info.n_frames == 1:
            data = s.asarray()
        else:  # one frame of the stack: only its page is decoded
            data = tif.asarray(key=k, series=0)
        page = s.pages[0] if s.pages else tif.pages[0]
        meta: dict[str, Any] = {"dtype": str(s.dtype), "format": "tiff"}
        if info.n_frames > 1:
            meta["n_frames"] = info.n_frames
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


def _read_raster(path: Path, max_pixels, frame):
    from PIL import Image

    with Image.open(path) as im:
        info = _raster_info(im, path)
        k = _check_frame(info, frame, path, max_pixels)
        if k:
            im.seek(k)
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


def _read_npy(path: Path, max_pixels, frame):
    # Memory-mapped first: the header's shape and dtype are checked before a
    # byte of data is read, and a header claiming more than the file holds fails here.
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    info = _npy_info(mm, path)
    k = _check_frame(info, frame, path, max_pixels)
    if info.n_frames > 1:
        data = np.array(mm.reshape((-1, *info.frame_shape))[k])
    else:
        data = np.array(mm)
    meta = {"dtype": str(mm.dtype)} | ({"n_frames": info.n_frames} if info.n_frames > 1 else {})
    del mm
    return data, None, "none", meta


def _read_rsciio(path: Path, max_pixels, frame):
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
    # Lazy: the shape is known before the pixels are read.
    signals = file_reader(str(path), lazy=True)
    images = [s for s in signals if len(s["data"].shape) == 2]
    if not images:
        shapes = [tuple(s["data"].shape) for s in signals]
        raise FastsacInputError(path, f"file holds no 2-D image signal (signal shapes {shapes})")
    sig = images[0]
    _check_frame(ImageInfo(tuple(sig["data"].shape), str(sig["data"].dtype), 1,
                           tuple(sig["data"].shape)), frame, path, max_pixels)
    px = None
    axes = sig.get("axes", [])
    if axes:
        ax = axes[-1]
        u = unit_to_nm(ax.get("units"))
        if u and ax.get("scale"):
            px = float(ax["scale"]) * u
    data = np.asarray(sig["data"])
    return data, px, "rosettasciio" if px else "none", {"format": suffix[1:]}


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

    A crash mid-write leaves any previous ``path`` untouched and no partial
    file under ``path``'s name (a killed process may leave the hidden
    temporary, which :func:`remove_stale_temporaries` deletes). The file gets
    the permissions the umask gives a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _chmod_umask(fd)
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
    try:
        _chmod_umask(fd)
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        if Path(tmp).exists():  # writers that replace the file keep mkstemp's 0600
            os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Names of the temporaries above: ".<name>.<8 random chars>.tmp[.<suffix>]".
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def remove_stale_temporaries(folder: str | os.PathLike, *, depth: int = 1) -> list[Path]:
    """Delete the hidden temporaries of :func:`atomic_write`/:func:`atomic_path`
    left in ``folder`` (and ``depth`` levels of sub-folders) by a killed run.
    Call it only on a folder the current run owns. Returns what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and _TEMP_NAME.match(entry.name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        elif depth > 0 and entry.is_dir(follow_symlinks=False):
            removed += remove_stale_temporaries(entry.path, depth=depth - 1)
    return removed


def _file_mode() -> int:
    """0o666 less the process umask (what ``open()`` would give a new file)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # not atomic: only where /proc is missing
    os.umask(mask)
    return 0o666 & ~mask


def _chmod_umask(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.fchmod(fd, _file_mode())


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
