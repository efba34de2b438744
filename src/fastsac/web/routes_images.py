"""Images: upload, analysis status, results, deep-zoom tiles and the zip bundle."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import anyio
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from .common import JSONResponse, csv_columns, ctx_of, error, safe_upload_name, serve_file
from .db import DONE, new_id

#: Largest number of frames whose deep-zoom pyramids stay in memory.
MAX_OPEN_FRAMES = 4


# --------------------------------------------------------------------------- parameters
def parse_params(values, *, base: dict | None = None) -> tuple[dict | None, str | None]:
    """Analysis parameters from form/JSON values: (params, None) or (None, error)."""
    from .common import DETECTORS

    p = dict(base or {"detector": "default", "multimer_cutoff_nm": 0.23, "pixel_size_nm": None})
    det = values.get("detector")
    if det not in (None, ""):
        if det not in DETECTORS:
            return None, f"detector must be one of {', '.join(DETECTORS)}, got {str(det)[:40]!r}"
        p["detector"] = det
    for key, lo, hi in (("multimer_cutoff_nm", 0.0, 5.0), ("pixel_size_nm", 0.0, 1000.0)):
        v = values.get(key)
        if v is None or v == "":
            if key == "pixel_size_nm" and key in values:
                p[key] = None  # explicitly back to the file's calibration
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None, f"{key} must be a number, got {str(v)[:40]!r}"
        if not (math.isfinite(f) and lo < f <= hi):
            return None, f"{key} must be in ({lo:g}, {hi:g}], got {f:g}"
        p[key] = f
    return p, None


def _peek_pixels(path: Path) -> int | None:
    """Pixels of the image from its header, without decoding (None: unknown)."""
    import numpy as np

    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return int(np.prod(tif.pages[0].shape[:2]))
        if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            from PIL import Image

            with Image.open(path) as im:
                return int(im.size[0] * im.size[1])
        if suffix == ".npy":
            return int(np.prod(np.load(path, mmap_mode="r", allow_pickle=False).shape))
    except Exception:
        return None  # fastsac.io.read names the problem
    return None


def check_upload(path: Path, name: str, pixel_size_nm, max_pixels: int):
    """Read the stored upload as fastsac will: (micrograph facts, None) or (None, (status, message))."""
    from ..errors import FastsacInputError
    from ..io import read

    n = _peek_pixels(path)
    if n is not None and n > max_pixels:
        return None, (413, f"{name}: {n} pixels, more than the limit of {max_pixels}")
    try:
        m = read(path, pixel_size_nm=pixel_size_nm)
    except FastsacInputError as exc:
        return None, (422, f"{name}: {exc.reason}")
    except Exception as exc:  # a decoder failure the reader did not wrap
        return None, (422, f"{name}: cannot be read ({type(exc).__name__})")
    if m.data.size > max_pixels:
        return None, (413, f"{name}: {m.data.size} pixels, more than the limit of {max_pixels}")
    return {"shape": list(m.shape), "pixel_size_nm": m.pixel_size_nm,
            "pixel_size_source": m.pixel_size_source}, None


# --------------------------------------------------------------------------- JSON views
def image_json(ctx, im: dict, *, full: bool = True) -> dict:
    status, prog = ctx.jobs.status(im)
    d = {"id": im["id"], "name": im["name"], "batch": im["batch_id"], "status": status,
         "progress": prog, "error": im["error"], "n_atoms": im["n_atoms"] if status == DONE else None,
         "pixel_size_nm": im["pixel_size_nm"], "pixel_size_source": im["pixel_size_source"],
         "shape": [im["height"], im["width"]], "params": im["params"], "created": im["created"],
         "started": im["started"], "finished": im["finished"],
         "plots": {"status": im["extras_status"], "error": im["extras_error"]}}
    if full and status == DONE:
        d["summary"] = im["summary"]
        folder = ctx.jobs.result_folder(im)
        if folder is not None:
            d["files"] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return d


def _image(request):
    ctx = ctx_of(request)
    im = ctx.store.get_image(request.path_params["id"])
    return ctx, im


# --------------------------------------------------------------------------- routes
async def upload(request):
    ctx = ctx_of(request)
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=64 << 10)
    except MultiPartException as exc:
        return error(400, f"bad multipart upload: {exc.message}")
    try:
        f = form.get("file")
        if not isinstance(f, UploadFile):
            return error(400, "multipart field 'file' (the image) is required")
        name = safe_upload_name(f.filename)
        from ..io import SUPPORTED_SUFFIXES

        suffix = Path(name).suffix
        if suffix not in SUPPORTED_SUFFIXES:
            return error(415, f"{name}: unsupported file type {suffix or '(none)'}; "
                              f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
        params, err = parse_params(form)
        if err:
            return error(400, err)
        batch = form.get("batch") or None
        if batch is not None and (not isinstance(batch, str) or ctx.store.get_batch(batch) is None):
            return error(404, f"no batch {str(batch)[:40]!r}")
        iid = new_id()
        image_dir = ctx.data / "images" / iid
        image_dir.mkdir(parents=True)
        dest = image_dir / name
        size = 0
        try:
            with open(dest, "wb") as out:
                while chunk := await f.read(1 << 20):
                    size += len(chunk)
                    if size > ctx.max_upload_bytes:
                        raise ValueError
                    out.write(chunk)
        except ValueError:
            shutil.rmtree(image_dir, ignore_errors=True)
            return error(413, f"{name}: larger than the upload limit of {ctx.max_upload_bytes} bytes")
        facts, bad = await anyio.to_thread.run_sync(check_upload, dest, name, params["pixel_size_nm"],
                                                    ctx.max_pixels)
        if bad:
            shutil.rmtree(image_dir, ignore_errors=True)
            return error(*bad)
        ctx.store.add_image(name=name, filename=name, params=params, batch_id=batch, image_id=iid,
                            pixel_size_nm=facts["pixel_size_nm"], pixel_size_source=facts["pixel_size_source"],
                            shape=facts["shape"])
        if batch is not None:
            ctx.store.set_batch_report(batch, None)  # the batch's report no longer covers every image
        ctx.jobs.submit_image(iid)
        return JSONResponse({"id": iid, "name": name, "status": "queued", **facts, "params": params},
                            status_code=201, headers={"location": f"/api/images/{iid}"})
    finally:
        await form.close()


async def list_images(request):
    ctx = ctx_of(request)
    batch = request.query_params.get("batch")
    return JSONResponse({"images": [image_json(ctx, im, full=False) for im in ctx.store.list_images(batch)]})


async def get_image(request):
    ctx, im = _image(request)
    if im is None:
        return error(404, "no such image")
    return JSONResponse(image_json(ctx, im))


async def reanalyze(request):
    """Analyse the stored upload again with new parameters (e.g. a corrected calibration)."""
    ctx, im = _image(request)
    if im is None:
        return error(404, "no such image")
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        return error(400, "body must be JSON")
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object")
    status, _ = ctx.jobs.status(im)
    if status in ("queued", "running"):
        return error(409, "the image is being analysed; wait for it to finish")
    params, err = parse_params(body, base=im["params"])
    if err:
        return error(400, err)
    ctx.store.queue_image(im["id"], params)
    if im["batch_id"]:
        ctx.store.set_batch_report(im["batch_id"], None)
    with ctx.lock:
        ctx.frames.pop(im["id"], None)
    ctx.jobs.submit_image(im["id"])
    return JSONResponse({"id": im["id"], "status": "queued", "params": params}, status_code=202)


def _done_folder(request):
    ctx, im = _image(request)
    if im is None:
        return ctx, None, error(404, "no such image")
    if ctx.jobs.status(im)[0] != DONE:
        return ctx, None, error(409, f"image is {im['status']}, not done")
    folder = ctx.jobs.result_folder(im)
    if folder is None:
        return ctx, None, error(404, "the result folder is missing")
    return ctx, folder, None


async def atoms(request):
    """atoms.csv as JSON columns (what the viewer draws)."""
    ctx, folder, err = _done_folder(request)
    if err:
        return err
    header, cols = await anyio.to_thread.run_sync(csv_columns, folder / "atoms.csv")
    n = len(next(iter(cols.values()))) if cols else 0
    return JSONResponse({"columns": header, "n": n, "data": cols})


async def result_file(request):
    ctx, folder, err = _done_folder(request)
    if err:
        return err
    return serve_file(folder, request.path_params["name"], download="download" in request.query_params)


async def bundle(request):
    from .bundle import write_bundle

    ctx, folder, err = _done_folder(request)
    if err:
        return err
    tmp = Path(tempfile.mkdtemp(dir=ctx.data / "tmp"))
    zpath = tmp / f"{folder.name}.zip"
    await anyio.to_thread.run_sync(lambda: write_bundle(zpath, [folder]))
    from starlette.background import BackgroundTask

    return FileResponse(zpath, media_type="application/zip", filename=f"{folder.name}_fastsac.zip",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


def _deepzoom(ctx, im):
    from ..io import read
    from .tiles import DeepZoom, FramePyramid

    with ctx.lock:
        dz = ctx.frames.get(im["id"])
        if dz is not None:
            ctx.frames[im["id"]] = ctx.frames.pop(im["id"])  # most recent last
            return dz
    m = read(ctx.data / "images" / im["id"] / im["filename"])
    dz = DeepZoom(FramePyramid(m.data), key=("image", im["id"], im["finished"]), cache=ctx.tile_cache)
    with ctx.lock:
        ctx.frames[im["id"]] = dz
        while len(ctx.frames) > MAX_OPEN_FRAMES:
            ctx.frames.pop(next(iter(ctx.frames)))
    return dz


async def dzi(request):
    ctx, im = _image(request)
    if im is None:
        return error(404, "no such image")
    dz = await anyio.to_thread.run_sync(_deepzoom, ctx, im)
    return Response(dz.dzi(), media_type="application/xml", headers={"cache-control": "private, max-age=3600"})


async def tile(request):
    ctx, im = _image(request)
    if im is None:
        return error(404, "no such image")
    pp = request.path_params
    dz = await anyio.to_thread.run_sync(_deepzoom, ctx, im)
    data = await anyio.to_thread.run_sync(dz.tile, pp["level"], pp["col"], pp["row"])
    if data is None:
        return error(404, "no such tile")
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})


async def mask(request):
    from .tiles import mask_overlay_png

    ctx, folder, err = _done_folder(request)
    if err:
        return err
    p = folder / "support_mask.png"
    if not p.is_file():
        return error(404, "no vacuum was found in this image")
    return Response(await anyio.to_thread.run_sync(mask_overlay_png, p), media_type="image/png")


def routes():
    return [
        Route("/api/images", upload, methods=["POST"]),
        Route("/api/images", list_images, methods=["GET"]),
        Route("/api/images/{id:str}", get_image),
        Route("/api/images/{id:str}/analyze", reanalyze, methods=["POST"]),
        Route("/api/images/{id:str}/atoms.json", atoms),
        Route("/api/images/{id:str}/bundle.zip", bundle),
        Route("/api/images/{id:str}/mask.png", mask),
        Route("/api/images/{id:str}/image.dzi", dzi),
        Route("/api/images/{id:str}/image_files/{level:int}/{col:int}_{row:int}.jpeg", tile),
        Route("/api/images/{id:str}/files/{name:path}", result_file),
    ]


__all__ = ["routes", "parse_params", "check_upload", "image_json"]
