"""The page and the app's configuration."""

from __future__ import annotations

from starlette.responses import HTMLResponse
from starlette.routing import Route

from .common import JSONResponse, ctx_of
from .security import CSRF_COOKIE, CSRF_HEADER, new_csrf_token


async def index(request):
    from .common import STATIC_DIR

    resp = HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
    # Readable by the page's script (it echoes it in X-CSRF-Token); never sent cross-site.
    resp.set_cookie(CSRF_COOKIE, token, httponly=False, samesite="strict", path="/")
    resp.headers["cache-control"] = "no-store"
    return resp


async def config(request):
    from ..io import SUPPORTED_SUFFIXES
    from ..figures import CLUSTER_COLORS
    from .common import DETECTORS

    ctx = ctx_of(request)
    return JSONResponse({
        "detectors": list(DETECTORS),
        "multimer_cutoff_nm": 0.23,
        "max_upload_bytes": ctx.max_upload_bytes,
        "max_pixels": ctx.max_pixels,
        "suffixes": list(SUPPORTED_SUFFIXES),
        "cluster_colors": CLUSTER_COLORS,
        "csrf_cookie": CSRF_COOKIE,
        "csrf_header": CSRF_HEADER,
        "workers": getattr(ctx.jobs.runner, "name", "?"),
        "montages": sorted(ctx.montages),
        "live": sorted(ctx.live),
    })


def routes():
    return [Route("/", index), Route("/api/config", config)]
