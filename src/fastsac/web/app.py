"""The ASGI app of ``fastsac serve``: :func:`create_app` assembles it.

Routes are grouped per area, one module each, every module exposing
``routes() -> list[Route]``: :mod:`.routes_pages` (the page, config),
:mod:`.routes_images` (upload, status, results, tiles, bundle),
:mod:`.routes_batches` (batches, pooled report, comparisons),
:mod:`.routes_views` (montage results and live ``fastsac watch`` folders).
They reach the shared state through ``request.app.state.ctx``
(:class:`WebContext`). A new area (e.g. annotation) adds a module and passes
its routes as ``extra_routes``; its tables go into :data:`fastsac.web.db.MIGRATIONS`
and its permission checks read ``request.state.identity``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from .common import DETECTORS, STATIC_DIR  # noqa: F401 (part of the app's interface)
from .db import Store
from .jobs import JobManager, make_runner
from .security import LOOPBACK_HOSTS, BodyTooLarge, SecurityMiddleware, allow_local, token_authenticator
from .tiles import TileCache

__all__ = ["create_app", "WebContext", "DETECTORS"]

log = logging.getLogger(__name__)

#: Limit for request bodies other than uploads (JSON parameters).
JSON_BODY_LIMIT = 64 << 10


@dataclass
class WebContext:
    """Everything a route needs: the data folder, the store, the jobs, limits, views."""

    data: Path
    store: Store
    jobs: JobManager
    max_upload_bytes: int
    max_pixels: int
    tile_cache: TileCache
    montages: dict = field(default_factory=dict)   # id → MontageView
    live: dict = field(default_factory=dict)       # id → Path of a watch output folder
    frames: dict = field(default_factory=dict)     # image id → DeepZoom (few, LRU)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    sse_poll_s: float = 1.0
    annotations: object = None                     # fastsac.annotate.AnnotationStore, if served


def unique_slug(name: str, taken) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "item"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    return slug


def create_app(data_dir, *, token: str | None = None, max_upload_bytes: int = 512 << 20,
               max_pixels: int = 8192 * 8192, scheduler=None, workers: int | None = None,
               montages=(), live=(), n_sim: int = 99, n_perm: int = 9999,
               allowed_hosts: tuple[str, ...] | None = None, authenticate=None,
               extra_routes=(), sse_poll_s: float = 1.0, annotations: bool = True,
               annotation_database: str | None = None) -> Starlette:
    """Build the app over the data folder ``data_dir`` (created if missing).

    Parameters
    ----------
    data_dir : path-like
        Holds ``fastsac.sqlite3`` and every upload and result; nothing is
        written outside it.
    token : str, optional
        Require this token on every request (``fastsac serve`` sets one when it
        binds beyond loopback).
    max_upload_bytes, max_pixels : int
        Limits of one upload (bytes on the wire; pixels of the decoded image).
    scheduler : str or distributed.Client, optional
        Run the analyses on this Dask scheduler instead of local processes.
    workers : int, optional
        Local worker processes (default: half the cores, at most 4; 0: threads
        in the server process).
    montages, live : sequence of path-like
        Output folders of ``fastsac montage`` and ``fastsac watch`` to browse.
    n_sim, n_perm : int
        Monte Carlo placements of the pair-statistics envelopes and
        permutations of a batch comparison.
    allowed_hosts : tuple of str, optional
        ``Host`` names answered; default: loopback names without a token, any with one.
    authenticate : callable, optional
        ``f(request) -> Identity | None`` replacing the token check (auth hook).
    extra_routes : sequence of starlette routes
        Routes of further areas.
    annotations : bool
        Serve crowdsourced annotation (:mod:`fastsac.web.annotation`: ``/annotate``,
        ``/api/images/{id}/annotations`` …, accounts from ``fastsac users add``).
    annotation_database : str, optional
        ``postgresql://`` URL of the annotation database (default ``DIR/annotations.sqlite3``).
    """
    from . import routes_batches, routes_images, routes_pages, routes_views

    data = Path(data_dir).resolve()
    (data / "images").mkdir(parents=True, exist_ok=True)
    (data / "tmp").mkdir(exist_ok=True)
    store = Store(data / "fastsac.sqlite3")
    runner = make_runner(workers=workers, scheduler=scheduler)
    jobs = JobManager(store, data, runner, n_sim=n_sim, n_perm=n_perm)
    ctx = WebContext(data, store, jobs, int(max_upload_bytes), int(max_pixels), TileCache(),
                     sse_poll_s=sse_poll_s)
    for p in montages:
        view = routes_views.MontageView.open(Path(p), data / "montage-cache")
        ctx.montages[unique_slug(view.name, ctx.montages)] = view
    for p in live:
        p = Path(p).resolve()
        ctx.live[unique_slug(p.name, ctx.live)] = p

    if authenticate is None:
        authenticate = token_authenticator(token) if token else allow_local
    if allowed_hosts is None:
        allowed_hosts = None if token else LOOPBACK_HOSTS
    annotation_routes = []
    if annotations:
        from .annotation import ANNOTATION_BODY_LIMIT, annotation_setup

        annotation_routes, wrap = annotation_setup(ctx, database=annotation_database)
        authenticate = wrap(authenticate)

    def body_limit(path: str, method: str) -> int:
        if path == "/api/images":
            return ctx.max_upload_bytes + (1 << 20)
        if annotations and path.endswith("/annotations"):
            return ANNOTATION_BODY_LIMIT
        return JSON_BODY_LIMIT

    @contextlib.asynccontextmanager
    async def lifespan(app):
        n = jobs.resume()
        if n:
            log.info("resumed %d unfinished analyses", n)
        try:
            yield
        finally:
            ctx.stopping.set()
            jobs.shutdown()
            store.close()

    async def too_large(request: Request, exc: BodyTooLarge):
        return JSONResponse({"error": str(exc)}, status_code=413)

    routes = (routes_pages.routes() + routes_images.routes() + routes_batches.routes()
              + routes_views.routes() + list(annotation_routes) + list(extra_routes)
              + [Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static")])
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(SecurityMiddleware, authenticate=authenticate, token=token,
                                           allowed_hosts=allowed_hosts, body_limit=body_limit)],
                    exception_handlers={BodyTooLarge: too_large})
    app.state.ctx = ctx
    return app
