"""A battery of malformed and hostile inputs, written into a temporary folder.

Each builder writes one file and returns what fastsac must do with it:
``"skip"`` (one line naming the file, the rest of the batch goes on) or
``"ok"`` (analysed; possibly with a note on stderr) or ``"any"`` (either,
but never a traceback). Nothing here is a real
micrograph; the good frames are small simulated spot images.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile

PX = 0.0293


def spot_image(size=160, n=10, seed=0, dtype=np.float32, scale=1.0):
    """Gaussian spots on a noisy flat support (a frame with ``n`` atoms)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = 1000 + rng.normal(0, 10, (size, size))
    pts = []
    while len(pts) < n:
        p = rng.uniform(12, size - 12, 2)
        if all(np.hypot(*(p - q)) > 14 for q in pts):
            pts.append(p)
    for x, y in pts:
        img += 300 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
    return (img * scale).astype(dtype)


def good_tiff(path: Path, *, seed=0, px=PX, size=160) -> Path:
    tifffile.imwrite(path, spot_image(size=size, seed=seed), imagej=True,
                     resolution=(1 / px, 1 / px), metadata={"unit": "nm"})
    return path


def tiff_bytes(img, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, img, **kw)
    return buf.getvalue()


def _patch_entry(data: bytes, tag: int, new_type: int, value_bytes: bytes) -> bytes:
    """Rewrite one classic-TIFF IFD entry (first match) with a new type and value."""
    for typ in (3, 4, 5):
        key = struct.pack("<HHI", tag, typ, 1)
        i = data.find(key)
        if i >= 0:
            break
    else:
        raise ValueError(f"tag {tag} not found")
    if new_type in (5, 10):  # rational: the value lives at the offset
        off = struct.unpack("<I", data[i + 8:i + 12])[0]
        data = data[:off] + value_bytes + data[off + 8:]
        return data[:i] + struct.pack("<HHI", tag, new_type, 1) + data[i + 8:]
    return data[:i] + struct.pack("<HHI", tag, new_type, 1) + value_bytes + data[i + 12:]


def lying_tiff(path: Path, width: int, height: int) -> Path:
    """A 64×64 TIFF whose header claims ``width``×``height`` pixels."""
    data = tiff_bytes(spot_image(64, n=3).astype(np.uint16))
    data = _patch_entry(data, 256, 4, struct.pack("<I", width))
    data = _patch_entry(data, 257, 4, struct.pack("<I", height))
    path.write_bytes(data)
    return path


def resolution_tiff(path: Path, num: int, den: int = 1, *, signed=False) -> Path:
    """A TIFF calibrated by resolution tags in pixels per centimetre = num/den
    (``signed``: SRATIONAL, so ``num`` may be negative)."""
    data = tiff_bytes(spot_image(), resolution=(7, 7), resolutionunit="CENTIMETER")
    fmt, typ = ("<ii", 10) if signed else ("<II", 5)
    for tag in (282, 283):
        data = _patch_entry(data, tag, typ, struct.pack(fmt, num, den))
    path.write_bytes(data)
    return path


def imagej_tiff(path: Path, nm_per_px: float, *, img=None) -> Path:
    img = spot_image() if img is None else img
    tifffile.imwrite(path, img, imagej=True, resolution=(1 / nm_per_px, 1 / nm_per_px),
                     metadata={"unit": "nm"})
    return path


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid small PNG whose IHDR (with a correct CRC) claims another size."""
    data = bytearray(png_bytes((spot_image(32, n=1) / 8).astype(np.uint8)))
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def npy_claiming(path: Path, shape, dtype="<f4") -> Path:
    """A .npy whose header claims ``shape`` but which holds 16 bytes of data."""
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(buf.getvalue() + b"\0" * 16)
    return path


def build(folder: Path) -> dict[str, str]:
    """Write the battery into ``folder``; ``{file name: "skip" | "ok"}``."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder
    exp: dict[str, str] = {}
    good = tiff_bytes(spot_image(), imagej=True, resolution=(1 / PX, 1 / PX),
                      metadata={"unit": "nm"})

    def put(name, data, expect):
        (f / name).write_bytes(data)
        exp[name] = expect

    put("b01_empty.tif", b"", "skip")
    put("b02_text.tif", b"this is not a tiff at all\n" * 20, "skip")
    put("b03_truncated.tif", good[: len(good) // 2], "skip")
    put("b04_header_only.tif", good[:8], "skip")
    put("b05_png_named_tif.tif", png_bytes((spot_image() / 8).astype(np.uint8)), "skip")
    put("b06_npy_named_png.png", b"\x93NUMPY" + b"\0" * 100, "skip")
    put("b07_garbage.dm3", b"\0\1\2\3" * 64, "skip")
    put("b08_garbage.npy", b"not numpy" * 10, "skip")
    lying_tiff(f / "b09_claims_100000sq.tif", 100_000, 100_000)
    exp["b09_claims_100000sq.tif"] = "skip"
    lying_tiff(f / "b10_claims_30000sq.tif", 30_000, 30_000)
    exp["b10_claims_30000sq.tif"] = "skip"
    m = np.lib.format.open_memmap(f / "b11_sparse_30000sq.npy", mode="w+", dtype=np.float32,
                                  shape=(30_000, 30_000))  # sparse on disk, 3.4 GiB claimed
    del m
    exp["b11_sparse_30000sq.npy"] = "skip"
    npy_claiming(f / "b12_npy_claims_more.npy", (50_000, 50_000))
    exp["b12_npy_claims_more.npy"] = "skip"
    png_claiming(f / "b13_png_claims_60000sq.png", 60_000, 60_000)
    exp["b13_png_claims_60000sq.png"] = "skip"
    img = spot_image()
    np.save(f / "b14_object.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    exp["b14_object.npy"] = "skip"
    np.save(f / "b15_complex.npy", img.astype(np.complex64))
    exp["b15_complex.npy"] = "skip"
    nan = img.copy()
    nan[5:9, 5:9] = np.nan
    np.save(f / "b16_nan.npy", nan)
    exp["b16_nan.npy"] = "skip"
    inf = img.copy()
    inf[3, 3] = np.inf
    np.save(f / "b17_inf.npy", inf)
    exp["b17_inf.npy"] = "skip"
    np.save(f / "b18_all_nan.npy", np.full((64, 64), np.nan, np.float32))
    exp["b18_all_nan.npy"] = "skip"
    np.save(f / "b19_near_1e33.npy", spot_image(scale=1e30))
    exp["b19_near_1e33.npy"] = "skip"
    np.save(f / "b20_f64_overflows_f32.npy", img.astype(np.float64) * 1e300)
    exp["b20_f64_overflows_f32.npy"] = "skip"
    np.save(f / "b21_constant.npy", np.full((64, 64), 7, np.uint16))
    exp["b21_constant.npy"] = "skip"
    np.save(f / "b22_one_row.npy", img[:1])
    exp["b22_one_row.npy"] = "skip"
    np.save(f / "b23_one_pixel.npy", img[:1, :1])
    exp["b23_one_pixel.npy"] = "skip"
    np.save(f / "b24_4d.npy", np.stack([np.stack([img, img])] * 2)[..., :7])
    exp["b24_4d.npy"] = "any"  # a 2×2 stack of 160×7 frames: each analysed or skipped alone
    imagej_tiff(f / "b25_1e-9nm_per_px.tif", 1e-9)
    exp["b25_1e-9nm_per_px.tif"] = "ok"  # calibration ignored with a warning
    imagej_tiff(f / "b26_1e6nm_per_px.tif", 1e6)
    exp["b26_1e6nm_per_px.tif"] = "ok"
    resolution_tiff(f / "b27_negative_resolution.tif", -341297, 1, signed=True)
    exp["b27_negative_resolution.tif"] = "ok"
    resolution_tiff(f / "b28_zero_resolution.tif", 0, 1)
    exp["b28_zero_resolution.tif"] = "ok"
    exp["b29_int8.npy"] = "ok"
    np.save(f / "b29_int8.npy", (spot_image() / 20 - 60).astype(np.int8))
    np.save(f / "b30_float16.npy", spot_image().astype(np.float16))
    exp["b30_float16.npy"] = "ok"
    np.save(f / "b31_bool.npy", spot_image() > 1100)
    exp["b31_bool.npy"] = "any"
    from PIL import Image

    rgb = np.repeat((spot_image() / 8).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(rgb).save(f / "b32_rgb.png")
    exp["b32_rgb.png"] = "ok"
    put("b33_truncated.png", png_bytes((spot_image() / 8).astype(np.uint8))[:300], "skip")
    Image.fromarray((spot_image() / 8).astype(np.uint8)).save(f / "b34_ok.jpg", quality=90)
    exp["b34_ok.jpg"] = "ok"
    put("b35_truncated.jpg", (f / "b34_ok.jpg").read_bytes()[:200], "skip")
    tifffile.imwrite(f / "b36_stack3.tif", np.stack([spot_image(seed=s) for s in range(3)]),
                     imagej=True, resolution=(1 / PX, 1 / PX), metadata={"unit": "nm"})
    exp["b36_stack3.tif"] = "ok"
    (f / "b37_dir.tif").mkdir()
    exp["b37_dir.tif"] = "skip"
    (f / "b38_broken_link.tif").symlink_to(f / "does_not_exist.tif")
    exp["b38_broken_link.tif"] = "skip"
    put("zz_good.tif", good, "ok")
    return exp
