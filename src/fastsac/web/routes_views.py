"""Read-only views of other fastsac outputs: montage results and live ``fastsac watch`` folders.

A montage folder (``fastsac montage … -o OUT``) holds ``atoms.parquet``
(global ``x_px``, ``y_px`` …), ``summary.json`` (its ``source`` names the
montage file) and ``support_mask.png``. The viewer asks for the atoms of its
viewport only: ``GET /api/montages/{id}/atoms?x0=&y0=&x1=&y1=`` reads the
Parquet table with predicate push-down on ``x_px``/``y_px`` (row groups
outside the window are skipped by their statistics).

A watch folder (``fastsac watch DIR -o OUT``) holds append-only ``frames.csv``
and ``atoms.csv``, ``stats.json`` and ``overlay.png``. ``GET
/api/live/{id}/events`` is a server-sent-events stream: a ``snapshot`` event,
then a ``frames`` event with the new rows and the running statistics each
time ``frames.csv`` grows (only complete lines are read: frames.csv is the
watch's commit log).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import numpy as np
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .common import JSONResponse, ctx_of, error, finite, serve_file

log = logging.getLogger(__name__)

MONTAGE_FILES = ("atoms.parquet", "summary.json", "support_mask.png")
LIVE_FILES = ("atoms.csv", "frames.csv", "stats.json", "overlay.png")
#: Columns sent per atom to the montage viewer.
MONTAGE_ATOM_COLUMNS = ("x_px", "y_px", "x_nm", "y_nm", "score", "amplitude", "sigma_px", "intensity",
                        "background", "residual", "nn_dist_nm", "cluster_id", "cluster_size", "in_support",
                        "species")
MAX_VIEWPORT_ATOMS = 50_000


# --------------------------------------------------------------------------- montage
@dataclass
class MontageView:
    name: str
    folder: Path
    summary: dict
    columns: list
    deepzoom: object | None = None  # (MontagePyramid, key) until the first request makes a DeepZoom
    overview_thread: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def open(cls, folder: Path, cache_root: Path) -> "MontageView":
        """Describe a montage output folder; the deep-zoom overview starts building in the background."""
        import hashlib

        import pyarrow.parquet as pq

        from ..errors import FastsacInputError

        folder = folder.resolve()
        pq_path = folder / "atoms.parquet"
        if not pq_path.is_file():
            raise FastsacInputError(folder, "no atoms.parquet; is this a `fastsac montage` output folder?")
        summary = {}
        if (folder / "summary.json").is_file():
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        columns = pq.read_schema(pq_path).names
        view = cls(summary.get("image") or folder.name, folder, summary, columns)
        src_path = summary.get("source")
        if src_path and Path(src_path).exists():
            from ..montage import open_montage
            from .tiles import MontagePyramid

            key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
            try:
                src = open_montage(src_path)
            except FastsacInputError as exc:
                log.warning("montage %s: no image tiles (%s)", folder, exc)
                return view
            pyr = MontagePyramid(src, cache_dir=cache_root / key)
            view.deepzoom = (pyr, key)
            view.overview_thread = threading.Thread(target=pyr.overview, name=f"fastsac-overview-{key}",
                                                    daemon=True)
            view.overview_thread.start()
        return view

    def dz(self, cache):
        from .tiles import DeepZoom

        if isinstance(self.deepzoom, tuple):
            pyr, key = self.deepzoom
            self.deepzoom = DeepZoom(pyr, key=("montage", key), cache=cache)
        return self.deepzoom

    @property
    def shape(self):
        s = self.summary.get("shape_px")
        return list(s) if s else None


def atoms_in_window(parquet: Path, x0: float, y0: float, x1: float, y1: float, *, limit: int,
                    columns) -> dict:
    """Atoms with x0 ≤ x < x1 and y0 ≤ y < y1 (pyarrow filters), at most ``limit``
    of them (evenly spread through the table when there are more)."""
    import pyarrow.parquet as pq

    t = pq.read_table(parquet, columns=list(columns),
                      filters=[("x_px", ">=", x0), ("x_px", "<", x1), ("y_px", ">=", y0), ("y_px", "<", y1)])
    n = t.num_rows
    if n > limit:
        t = t.take(np.linspace(0, n - 1, limit).astype(np.int64))
    data = {}
    for c in t.column_names:
        a = t.column(c).to_numpy(zero_copy_only=False)
        if a.dtype.kind == "f":
            data[c] = [None if not np.isfinite(v) else float(v) for v in a]
        else:
            data[c] = a.tolist()
    return {"n": n, "returned": t.num_rows, "truncated": n > limit, "columns": t.column_names, "data": data}


def _montage(request):
    ctx = ctx_of(request)
    return ctx, ctx.montages.get(request.path_params["id"])


async def list_montages(request):
    ctx = ctx_of(request)
    return JSONResponse({"montages": [{"id": k, "name": v.name, "n_atoms": v.summary.get("n_atoms"),
                                       "shape": v.shape} for k, v in sorted(ctx.montages.items())]})


async def get_montage(request):
    ctx, v = _montage(request)
    if v is None:
        return error(404, "no such montage")
    return JSONResponse({"id": request.path_params["id"], "name": v.name, "shape": v.shape,
                         "pixel_size_nm": v.summary.get("pixel_size_nm"), "summary": v.summary,
                         "columns": v.columns, "tiles": v.deepzoom is not None,
                         "mask": (v.folder / "support_mask.png").is_file(),
                         "files": [f for f in MONTAGE_FILES if (v.folder / f).is_file()]})


async def montage_atoms(request):
    ctx, v = _montage(request)
    if v is None:
        return error(404, "no such montage")
    q = request.query_params
    try:
        x0, y0, x1, y1 = (float(q[k]) for k in ("x0", "y0", "x1", "y1"))
        limit = min(int(q.get("limit", 20000)), MAX_VIEWPORT_ATOMS)
    except (KeyError, ValueError):
        return error(400, "give the window as numbers x0, y0, x1, y1 (px) and optionally limit")
    if not all(np.isfinite([x0, y0, x1, y1])) or limit < 1:
        return error(400, "window and limit must be finite, limit ≥ 1")
    cols = [c for c in MONTAGE_ATOM_COLUMNS if c in v.columns]
    out = await anyio.to_thread.run_sync(lambda: atoms_in_window(v.folder / "atoms.parquet", x0, y0, x1, y1,
                                                                 limit=limit, columns=cols))
    return JSONResponse(out)


async def montage_dzi(request):
    ctx, v = _montage(request)
    if v is None or v.deepzoom is None:
        return error(404, "no image tiles for this montage (its source file is not readable here)")
    return Response(v.dz(ctx.tile_cache).dzi(), media_type="application/xml")


async def montage_tile(request):
    ctx, v = _montage(request)
    if v is None or v.deepzoom is None:
        return error(404, "no image tiles for this montage")
    pp = request.path_params
    dz = v.dz(ctx.tile_cache)
    data = await anyio.to_thread.run_sync(dz.tile, pp["level"], pp["col"], pp["row"])
    if data is None:
        return error(404, "no such tile")
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})


async def montage_mask(request):
    from .tiles import mask_overlay_png

    ctx, v = _montage(request)
    if v is None or not (v.folder / "support_mask.png").is_file():
        return error(404, "no support mask for this montage")
    return Response(await anyio.to_thread.run_sync(mask_overlay_png, v.folder / "support_mask.png"),
                    media_type="image/png")


async def montage_file(request):
    ctx, v = _montage(request)
    name = request.path_params["name"]
    if v is None or name not in MONTAGE_FILES:
        return error(404, "no such file")
    return serve_file(v.folder, name, download=name != "support_mask.png")


# --------------------------------------------------------------------------- live
def _parse_rows(header: list[str], lines: list[str]) -> list[dict]:
    rows = []
    for r in csv.reader(io.StringIO("".join(lines))):
        if len(r) != len(header):
            continue
        d = {}
        for k, v in zip(header, r):
            if v in ("True", "False"):
                d[k] = v == "True"
                continue
            try:
                d[k] = finite(float(v)) if v != "" else None
            except ValueError:
                d[k] = v
        rows.append(d)
    return rows


def _read_stats(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def live_snapshot(folder: Path, *, max_rows: int = 200) -> tuple[dict, int]:
    """The session so far (last ``max_rows`` frames) and the byte offset read up to."""
    path = folder / "frames.csv"
    header, lines, offset = [], [], 0
    if path.is_file():
        raw = path.read_bytes()
        offset = raw.rfind(b"\n") + 1  # complete lines only
        text = raw[:offset].decode("utf-8", "replace").splitlines(keepends=True)
        if text:
            header = next(csv.reader([text[0]]))
            lines = text[1:]
    rows = _parse_rows(header, lines[-max_rows:]) if header else []
    return {"n_frames": len(lines), "frames": rows, "columns": header, "stats": _read_stats(folder),
            "overlay": (folder / "overlay.png").is_file(), "time": time.time()}, offset


def live_new_rows(folder: Path, offset: int, header: list[str]) -> tuple[list[dict], int]:
    """Complete rows appended to frames.csv since ``offset``."""
    with open(folder / "frames.csv", "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n") + 1
    if end == 0:
        return [], offset
    lines = chunk[:end].decode("utf-8", "replace").splitlines(keepends=True)
    return _parse_rows(header, lines), offset + end


def _live(request):
    ctx = ctx_of(request)
    return ctx, ctx.live.get(request.path_params["id"])


async def list_live(request):
    ctx = ctx_of(request)
    return JSONResponse({"live": [{"id": k, "name": p.name} for k, p in sorted(ctx.live.items())]})


async def get_live(request):
    ctx, folder = _live(request)
    if folder is None:
        return error(404, "no such live session")
    snap, _ = await anyio.to_thread.run_sync(live_snapshot, folder)
    return JSONResponse({"id": request.path_params["id"], "name": folder.name, **snap})


def _sse(event: str, data: dict) -> bytes:
    from .common import json_safe

    return f"event: {event}\ndata: {json.dumps(json_safe(data), separators=(',', ':'))}\n\n".encode()


async def live_events(request):
    ctx, folder = _live(request)
    if folder is None:
        return error(404, "no such live session")

    async def stream():
        snap, offset = await anyio.to_thread.run_sync(live_snapshot, folder)
        header, n_frames = snap["columns"], snap["n_frames"]
        yield _sse("snapshot", snap)
        last_beat = time.monotonic()
        while not ctx.stopping.is_set():
            await anyio.sleep(ctx.sse_poll_s)
            path = folder / "frames.csv"
            size = path.stat().st_size if path.is_file() else 0
            if size < offset or (not header and size > 0):  # a new session rewrote the folder
                snap, offset = await anyio.to_thread.run_sync(live_snapshot, folder)
                header, n_frames = snap["columns"], snap["n_frames"]
                yield _sse("snapshot", snap)
            elif size > offset:
                rows, offset = await anyio.to_thread.run_sync(live_new_rows, folder, offset, header)
                if rows:
                    n_frames += len(rows)
                    yield _sse("frames", {"frames": rows, "n_frames": n_frames, "stats": _read_stats(folder),
                                          "time": time.time()})
            if time.monotonic() - last_beat > 15:
                last_beat = time.monotonic()
                yield b": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def live_file(request):
    ctx, folder = _live(request)
    name = request.path_params["name"]
    if folder is None or name not in LIVE_FILES:
        return error(404, "no such file")
    resp = serve_file(folder, name, download=name != "overlay.png")
    resp.headers["cache-control"] = "no-store"
    return resp


def routes():
    return [
        Route("/api/montages", list_montages),
        Route("/api/montages/{id:str}", get_montage),
        Route("/api/montages/{id:str}/atoms", montage_atoms),
        Route("/api/montages/{id:str}/image.dzi", montage_dzi),
        Route("/api/montages/{id:str}/image_files/{level:int}/{col:int}_{row:int}.jpeg", montage_tile),
        Route("/api/montages/{id:str}/mask.png", montage_mask),
        Route("/api/montages/{id:str}/files/{name:str}", montage_file),
        Route("/api/live", list_live),
        Route("/api/live/{id:str}", get_live),
        Route("/api/live/{id:str}/events", live_events),
        Route("/api/live/{id:str}/files/{name:str}", live_file),
    ]


__all__ = ["routes", "MontageView", "atoms_in_window", "live_snapshot", "live_new_rows"]
