"""Batches (several images of one sample), their pooled report and two-batch comparisons."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import anyio
from starlette.responses import FileResponse
from starlette.routing import Route

from .common import JSONResponse, ctx_of, error, serve_file
from .db import DONE
from .routes_images import image_json

BATCH_FILES = ("summary.csv", "report.html", "report.json", "pooled_nn_histogram.png", "pooled_cluster_sizes.png")


async def _json_body(request) -> dict | None:
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def create_batch(request):
    body = await _json_body(request)
    if body is None:
        return error(400, "body must be a JSON object")
    name = str(body.get("name") or "batch").strip()[:100] or "batch"
    bid = ctx_of(request).store.create_batch(name)
    return JSONResponse({"id": bid, "name": name}, status_code=201)


async def list_batches(request):
    ctx = ctx_of(request)
    return JSONResponse({"batches": [{"id": b["id"], "name": b["name"], "created": b["created"],
                                      "n_images": b["n_images"], "report_status": b["report_status"]}
                                     for b in ctx.store.list_batches()]})


def batch_json(ctx, b: dict) -> dict:
    images = [image_json(ctx, im, full=False) for im in ctx.store.list_images(b["id"])]
    for d, im in zip(images, ctx.store.list_images(b["id"])):
        if d["status"] == DONE and im["summary"]:
            s = im["summary"]
            u = s.get("length_unit", "nm")
            d["row"] = {"n_atoms": s.get("n_atoms"), "density": s.get(f"density_per_{u}2"),
                        "nn_mean": s.get(f"nn_mean_{u}"), "multimer_share": s.get("multimer_fraction"),
                        "clark_evans_R": s.get("clark_evans_R"), "unit": u,
                        "vacuum_fraction": s.get("vacuum_fraction")}
    out = {"id": b["id"], "name": b["name"], "created": b["created"], "images": images,
           "report": {"status": b["report_status"], "error": b["report_error"]}}
    rep = ctx.jobs.batch_dir(b["id"]) / "report.json"
    if b["report_status"] == DONE and rep.is_file():
        out["pooled"] = json.loads(rep.read_text(encoding="utf-8"))["pooled"]
        out["files"] = [f for f in BATCH_FILES if (ctx.jobs.batch_dir(b["id"]) / f).is_file()]
    return out


def _batch(request):
    ctx = ctx_of(request)
    return ctx, ctx.store.get_batch(request.path_params["id"])


async def get_batch(request):
    ctx, b = _batch(request)
    if b is None:
        return error(404, "no such batch")
    return JSONResponse(batch_json(ctx, b))


async def make_report(request):
    ctx, b = _batch(request)
    if b is None:
        return error(404, "no such batch")
    if not ctx.jobs.maybe_batch_report(b["id"], force=True):
        return error(409, "the batch has images still in work, or none finished")
    return JSONResponse({"id": b["id"], "report": {"status": "queued"}}, status_code=202)


async def batch_file(request):
    ctx, b = _batch(request)
    if b is None:
        return error(404, "no such batch")
    return serve_file(ctx.jobs.batch_dir(b["id"]), request.path_params["name"],
                      download="download" in request.query_params)


async def batch_bundle(request):
    from .bundle import write_bundle

    ctx, b = _batch(request)
    if b is None:
        return error(404, "no such batch")
    folders = [f for im in ctx.store.list_images(b["id"]) if im["status"] == DONE
               for f in [ctx.jobs.result_folder(im)] if f is not None]
    if not folders:
        return error(409, "no finished image in this batch")
    bdir = ctx.jobs.batch_dir(b["id"])
    files = [bdir / f for f in BATCH_FILES if (bdir / f).is_file()] if b["report_status"] == DONE else []
    tmp = Path(tempfile.mkdtemp(dir=ctx.data / "tmp"))
    zpath = tmp / "batch.zip"
    await anyio.to_thread.run_sync(lambda: write_bundle(zpath, folders, batch_files=files))
    from starlette.background import BackgroundTask

    from .common import safe_upload_name

    return FileResponse(zpath, media_type="application/zip",
                        filename=f"{safe_upload_name(b['name'], default='batch')}_fastsac.zip",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


async def create_comparison(request):
    ctx = ctx_of(request)
    body = await _json_body(request)
    if body is None:
        return error(400, "body must be a JSON object")
    a, b = body.get("a"), body.get("b")
    for bid in (a, b):
        if not isinstance(bid, str) or ctx.store.get_batch(bid) is None:
            return error(404, f"no batch {str(bid)[:40]!r}")
    if a == b:
        return error(400, "choose two different batches")
    for bid in (a, b):
        if not any(im["status"] == DONE for im in ctx.store.list_images(bid)):
            return error(409, f"batch {ctx.store.get_batch(bid)['name']!r} has no finished image")
    cid = ctx.jobs.submit_compare(a, b)
    return JSONResponse({"id": cid, "status": "queued"}, status_code=201)


async def get_comparison(request):
    ctx = ctx_of(request)
    c = ctx.store.get_comparison(request.path_params["id"])
    if c is None:
        return error(404, "no such comparison")
    return JSONResponse({"id": c["id"], "a": c["batch_a"], "b": c["batch_b"], "status": c["status"],
                         "error": c["error"], "comparison": c["result"]})


async def comparison_report(request):
    ctx = ctx_of(request)
    c = ctx.store.get_comparison(request.path_params["id"])
    if c is None or c["status"] != DONE:
        return error(404, "no finished comparison with this id")
    return serve_file(ctx.jobs.compare_dir(c["id"]), "report.html")


def routes():
    return [
        Route("/api/batches", create_batch, methods=["POST"]),
        Route("/api/batches", list_batches, methods=["GET"]),
        Route("/api/batches/{id:str}", get_batch),
        Route("/api/batches/{id:str}/report", make_report, methods=["POST"]),
        Route("/api/batches/{id:str}/bundle.zip", batch_bundle),
        Route("/api/batches/{id:str}/files/{name:path}", batch_file),
        Route("/api/comparisons", create_comparison, methods=["POST"]),
        Route("/api/comparisons/{id:str}", get_comparison),
        Route("/api/comparisons/{id:str}/report.html", comparison_report),
    ]
