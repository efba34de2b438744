"""HTTP API and pages of crowdsourced annotation, as Starlette routes.

:func:`annotation_routes` returns the routes; mount them into ``fastsac serve``'s app (its
``extra_routes``) or run them alone with :func:`create_annotation_app` (tests, a separate
annotation server). Every endpoint authenticates before it looks at anything else (a write
without a valid token is 401 whatever the image id), then checks the role:

==========================================  =========================================
``POST /api/login`` ``{"name","password"}``  session cookie (HttpOnly, SameSite=Strict)
                                             + CSRF token; rate-limited per name and
                                             per client address
``POST /api/logout``, ``GET /api/me``
``GET /api/annotate/images``                 images assigned to me (admin: all)
``POST /api/images/{id}/annotations``        annotator/admin assigned to the image:
   ``{"points": [[x, y], ...]}``             append a version (never overwrites)
``GET /api/images/{id}/annotations``         versions by user; an annotator sees only
                                             their own (blind to others, in any mode)
``GET /api/images/{id}/consensus``           admin/viewer: consensus points with
                                             agreement and probability
``GET /api/images/{id}/proposals``           model proposals, only for images in
                                             *review* mode (blind mode shows none)
``GET /api/images/{id}/annotation-image.png``  the image, 8-bit, for the annotation view
``POST /api/annotate/images/{id}/assign``    admin: ``{"k": 3, "mode": "blind"}``
``GET /api/annotate/agreement``              admin: per image and annotator agreement
``GET /api/annotate/consensus.csv``          admin: consensus labels of all images
``POST /api/annotate/retrain``               admin: re-scorer trained on the consensus,
                                             held-out F1 vs the current detector
``GET /annotate``, ``GET /annotate/admin``   the annotation and admin pages
==========================================  =========================================

Browser requests authenticate with the session cookie and must send the session's CSRF
token in ``X-CSRF-Token`` on every state-changing request (synchronizer token, compared
in constant time); API clients send ``Authorization: Bearer TOKEN`` (``fastsac users add``)
and need no CSRF token, since browsers never add that header by themselves.
"""

from __future__ import annotations

import asyncio
import io as _stdio
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .security import tokens_equal
from .store import AnnotationStore, User

__all__ = ["annotation_routes", "create_annotation_app", "user_from_request", "SESSION_COOKIE",
           "CSRF_HEADER"]

log = logging.getLogger(__name__)

SESSION_COOKIE = "fastsac_session"
CSRF_HEADER = "x-csrf-token"
#: The web app's double-submit CSRF cookie: the annotation pages send its value in
#: X-CSRF-Token, and login sets it to the session's CSRF token, so that one header
#: satisfies both the web app's double-submit check and this module's session check.
CSRF_COOKIE = "fastsac_csrf"
STATIC_DIR = Path(__file__).parent / "static"
#: Largest JSON body accepted (a few hundred thousand points).
MAX_BODY_BYTES = 4 << 20
MAX_POINTS = 100_000
#: Failed logins allowed per user name / per client address within the window.
LOGIN_MAX_FAILURES_NAME, LOGIN_MAX_FAILURES_ADDR, LOGIN_WINDOW_S = 5, 20, 300.0
_UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def user_from_request(store: AnnotationStore, request: Request) -> tuple[User, str | None] | None:
    """``(user, session CSRF token or None)`` of a request: a Bearer API token (no CSRF
    token needed) or a session cookie; None when neither is valid."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        user = store.user_for_token(auth[7:].strip())
        return (user, None) if user else None
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        got = store.session(sid)
        if got:
            return got
    return None


class _Api:
    """The endpoints, bound to one store and the app's callbacks."""

    def __init__(self, store: AnnotationStore, *, image_source, proposals, tolerance_px: float,
                 secure_cookies: bool | None, models_dir=None, pixel_size=None):
        self.store = store
        self.image_source = image_source
        self.proposals = proposals
        self.models_dir = None if models_dir is None else Path(models_dir)
        self.pixel_size = pixel_size
        self._retraining = threading.Lock()
        self.tolerance_px = float(tolerance_px)
        self.secure_cookies = secure_cookies
        self._png_cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    # -- helpers ----------------------------------------------------------------------------
    async def _run(self, fn, *args, **kw):
        # The store is synchronous (sqlite3/psycopg): keep the event loop free.
        return await asyncio.to_thread(fn, *args, **kw)

    async def auth(self, request: Request, roles=("admin", "annotator", "viewer")):
        """``(user, None)`` or ``(None, error response)``. Authentication, then CSRF for
        cookie sessions on unsafe methods, then the role."""
        got = await self._run(user_from_request, self.store, request)
        if got is None:
            return None, _error(401, "authentication required: log in, or send Authorization: Bearer TOKEN "
                                     "(fastsac users add NAME prints one)", {"www-authenticate": "Bearer"})
        user, csrf = got
        if request.method in _UNSAFE and csrf is not None:
            origin = request.headers.get("origin")
            if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
                return None, _error(403, f"cross-site request refused (Origin {origin})")
            if not tokens_equal(request.headers.get(CSRF_HEADER, ""), csrf):
                return None, _error(403, "missing or wrong CSRF token (X-CSRF-Token)")
        if user.role not in roles:
            return None, _error(403, f"role {user.role!r} may not do this (needs {' or '.join(roles)})")
        return user, None

    async def json_body(self, request: Request):
        try:
            length = int(request.headers.get("content-length", "0") or 0)
        except ValueError:
            return None, _error(400, "bad Content-Length")
        if length > MAX_BODY_BYTES:
            return None, _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return None, _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(body or b"null"), None
        except ValueError:
            return None, _error(400, "body is not JSON")

    def _cookie(self, request: Request, value: str, max_age: int) -> str:
        secure = request.url.scheme == "https" if self.secure_cookies is None else self.secure_cookies
        return (f"{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
                + ("; Secure" if secure else ""))

    # -- sessions ---------------------------------------------------------------------------
    async def login(self, request: Request):
        data, err = await self.json_body(request)
        if err:
            return err
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) \
                or not isinstance(data.get("password"), str):
            return _error(400, 'send {"name": ..., "password": ...}')
        name = data["name"][:64]
        addr = request.client.host if request.client else "unknown"
        keys = ((f"name:{name}", LOGIN_MAX_FAILURES_NAME), (f"addr:{addr}", LOGIN_MAX_FAILURES_ADDR))
        for key, limit in keys:
            if not await self._run(self.store.login_allowed, key, max_failures=limit, window_s=LOGIN_WINDOW_S):
                return _error(429, "too many failed logins; try again in a few minutes",
                              {"retry-after": str(int(LOGIN_WINDOW_S))})
        user = await self._run(self.store.check_password, name, data["password"])
        if user is None:
            for key, _ in keys:
                await self._run(self.store.record_login_failure, key)
            return _error(401, "wrong name or password")
        await self._run(self.store.clear_login_failures, f"name:{name}")
        ttl = 12 * 3600
        sid, csrf = await self._run(self.store.create_session, user, ttl_s=ttl)
        response = JSONResponse({"user": user.name, "role": user.role, "csrf": csrf})
        response.headers.append("set-cookie", self._cookie(request, sid, ttl))
        response.headers.append("set-cookie", self._csrf_cookie(request, csrf))
        return response

    def _csrf_cookie(self, request: Request, value: str) -> str:
        secure = request.url.scheme == "https" if self.secure_cookies is None else self.secure_cookies
        # Readable by the page (double submit), never sent cross-site.
        return f"{CSRF_COOKIE}={value}; Path=/; SameSite=Strict" + ("; Secure" if secure else "")

    async def logout(self, request: Request):
        user, err = await self.auth(request)
        if err:
            return err
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            await self._run(self.store.end_session, sid)
        return JSONResponse({"ok": True}, headers={"set-cookie": self._cookie(request, "", 0)})

    async def me(self, request: Request):
        got = await self._run(user_from_request, self.store, request)
        if got is None:
            return _error(401, "not logged in")
        user, csrf = got
        return JSONResponse({"user": user.name, "role": user.role, "csrf": csrf})

    # -- images -----------------------------------------------------------------------------
    async def my_images(self, request: Request):
        user, err = await self.auth(request)
        if err:
            return err
        if user.role == "annotator":
            ids = await self._run(self.store.assigned_images, user)
        else:
            ids = await self._run(self.store.images)
        out = []
        for i in ids:
            mode = await self._run(self.store.image_mode, i)
            mine = await self._run(self.store.annotation_versions, i, user=user)
            out.append({"id": i, "mode": mode, "my_versions": len(mine)})
        return JSONResponse({"images": out})

    async def _image_for(self, request: Request, user: User, *, write: bool):
        """(image id, mode) when the user may work on / read the image, else an error."""
        image_id = request.path_params["image_id"]
        mode = await self._run(self.store.image_mode, image_id)
        if mode is None:
            return None, None, _error(404, f"image {image_id!r} is not open for annotation")
        if user.role == "annotator" and not await self._run(self.store.is_assigned, image_id, user):
            return None, None, _error(403, f"image {image_id!r} is not assigned to {user.name}")
        if write and user.role == "viewer":
            return None, None, _error(403, "viewers cannot annotate")
        return image_id, mode, None

    async def post_annotations(self, request: Request):
        user, err = await self.auth(request, roles=("admin", "annotator"))
        if err:
            return err
        image_id, _, err = await self._image_for(request, user, write=True)
        if err:
            return err
        data, err = await self.json_body(request)
        if err:
            return err
        if not isinstance(data, dict) or "points" not in data:
            return _error(400, 'send {"points": [[x, y], ...]}')
        if isinstance(data["points"], list) and len(data["points"]) > MAX_POINTS:
            return _error(413, f"more than {MAX_POINTS} points")
        try:
            v = await self._run(self.store.save_annotation, image_id, user, data["points"])
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse(v.as_dict(), status_code=201)

    async def get_annotations(self, request: Request):
        user, err = await self.auth(request)
        if err:
            return err
        image_id, mode, err = await self._image_for(request, user, write=False)
        if err:
            return err
        # Annotators see only their own work: blind to the others in any mode.
        only = user if user.role == "annotator" else None
        versions = await self._run(self.store.annotation_versions, image_id, user=only)
        by_user: dict[str, list] = {}
        for v in versions:
            by_user.setdefault(v.user_name, []).append(v.as_dict())
        return JSONResponse({"image_id": image_id, "mode": mode, "users": by_user})

    def _consensus(self, image_ids=None):
        """Consensus over the newest version of every annotator, pooled over images."""
        from ..consensus import annotator_summary, build_consensus

        ids = image_ids if image_ids is not None else self.store.annotated_images()
        latest = {i: self.store.latest_annotations(i) for i in ids}
        names = sorted({n for d in latest.values() for n in d})
        if not names:
            return None, names, latest
        labels = {i: [np.asarray(latest[i][n].points, float).reshape(-1, 2) if n in latest[i] else None
                      for n in names] for i in ids if latest[i]}
        result = build_consensus(labels, annotators=names, tolerance_px=self.tolerance_px)
        return (result, annotator_summary(result)), names, latest

    async def consensus(self, request: Request):
        user, err = await self.auth(request, roles=("admin", "viewer"))
        if err:
            return err
        image_id, _, err = await self._image_for(request, user, write=False)
        if err:
            return err
        got, names, _ = await self._run(self._consensus)
        if got is None or image_id not in got[0].images:
            return JSONResponse({"image_id": image_id, "annotators": [], "points": []})
        result, _ = got
        im = result.images[image_id]
        pts = [{"x": float(im.groups.xy[i, 0]), "y": float(im.groups.xy[i, 1]),
                "agreement": float(im.agreement[i]), "probability": float(im.probability[i]),
                "in_consensus": bool(im.keep[i])} for i in range(len(im.groups))]
        return JSONResponse({"image_id": image_id, "method": result.method,
                             "annotators": [n for n, p in zip(names, im.present) if p],
                             "n_consensus": int(im.keep.sum()), "points": pts})

    async def proposals_view(self, request: Request):
        user, err = await self.auth(request)
        if err:
            return err
        image_id, mode, err = await self._image_for(request, user, write=False)
        if err:
            return err
        if mode != "review":
            return _error(403, "blind mode: no model proposals for this image")
        pts = [] if self.proposals is None else await self._run(self.proposals, image_id)
        return JSONResponse({"image_id": image_id, "points": [[float(x), float(y)] for x, y in (pts or [])]})

    async def image_png(self, request: Request):
        user, err = await self.auth(request)
        if err:
            return err
        image_id, _, err = await self._image_for(request, user, write=False)
        if err:
            return err
        png = await self._run(self._png, image_id)
        if png is None:
            return _error(404, f"no pixels for image {image_id!r}")
        return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    def _png(self, image_id: str) -> bytes | None:
        with self._lock:
            if image_id in self._png_cache:
                return self._png_cache[image_id]
        if self.image_source is None:
            return None
        arr = self.image_source(image_id)
        if arr is None:
            return None
        from PIL import Image

        a = np.asarray(arr, dtype=np.float32)
        lo, hi = np.percentile(a, [0.5, 99.8]) if a.size else (0.0, 1.0)
        u8 = (np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
        buf = _stdio.BytesIO()
        Image.fromarray(u8).save(buf, format="PNG")
        with self._lock:
            if len(self._png_cache) > 32:
                self._png_cache.clear()
            self._png_cache[image_id] = buf.getvalue()
        return buf.getvalue()

    # -- admin ------------------------------------------------------------------------------
    async def assign(self, request: Request):
        user, err = await self.auth(request, roles=("admin",))
        if err:
            return err
        data, err = await self.json_body(request)
        if err:
            return err
        data = data if isinstance(data, dict) else {}
        image_id = request.path_params["image_id"]
        mode = data.get("mode", "blind")
        if mode not in ("blind", "review"):
            return _error(400, "mode must be 'blind' or 'review'")
        await self._run(self.store.add_image, image_id, mode=mode)
        try:
            if "users" in data:
                users = [await self._run(self.store.get_user, n) for n in data["users"]]
                if any(u is None for u in users):
                    return _error(400, "unknown user in 'users'")
                await self._run(self.store.assign, image_id, users)
            else:
                await self._run(self.store.assign_k, image_id, int(data.get("k", 3)))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        assigned = await self._run(self.store.assigned_users, image_id)
        return JSONResponse({"image_id": image_id, "mode": await self._run(self.store.image_mode, image_id),
                             "assigned": [u.name for u in assigned]})

    async def agreement(self, request: Request):
        user, err = await self.auth(request, roles=("admin",))
        if err:
            return err
        got, names, latest = await self._run(self._consensus)
        if got is None:
            return JSONResponse({"annotators": {}, "images": {}})
        result, summary = got
        from ..consensus import pairwise_f1

        labels = {i: [np.asarray(latest[i][n].points, float).reshape(-1, 2) if n in latest[i] else None
                      for n in names] for i in result.images}
        pf = pairwise_f1(labels, tolerance_px=self.tolerance_px)
        images = {}
        for i, im in result.images.items():
            per_user = {}
            for a, n in enumerate(names):
                if not im.present[a]:
                    continue
                clicked = im.groups.members[:, a] >= 0
                # Share of this annotator's clicks that are in the consensus, and of the
                # consensus this annotator found.
                per_user[n] = {"n_points": int(clicked.sum()),
                               "precision": float((clicked & im.keep).sum() / clicked.sum()) if clicked.any() else None,
                               "recall": float((clicked & im.keep).sum() / im.keep.sum()) if im.keep.any() else None}
            images[i] = {"n_annotators": im.n_annotators, "n_consensus": int(im.keep.sum()),
                         "mean_agreement": float(im.agreement[im.keep].mean()) if im.keep.any() else None,
                         "annotators": per_user}
        clean = json.loads(json.dumps({"annotators": summary, "images": images, "method": result.method,
                                       "pairwise_f1": {"annotators": names, "matrix": pf.tolist()}},
                                      allow_nan=True).replace("NaN", "null"))
        return JSONResponse(clean)

    async def export_csv(self, request: Request):
        user, err = await self.auth(request, roles=("admin",))
        if err:
            return err
        got, _, _ = await self._run(self._consensus)
        lines = ["image,X,Y,agreement,n_annotators,probability"]
        if got is not None:
            for i, im in got[0].images.items():
                for g in np.flatnonzero(im.keep):
                    x, y = im.groups.xy[g]
                    lines.append(f"{_csv_field(i)},{x:.3f},{y:.3f},{im.agreement[g]:.4f},{im.n_annotators},"
                                 f"{im.probability[g]:.6f}")
        return Response("\n".join(lines) + "\n", media_type="text/csv",
                        headers={"content-disposition": 'attachment; filename="consensus.csv"'})

    async def retrain(self, request: Request):
        """Admin: retrain the re-scorer on the consensus; held-out comparison with the
        current detector (its proposals) decides whether it may become the default."""
        user, err = await self.auth(request, roles=("admin",))
        if err:
            return err
        if self.models_dir is None or self.image_source is None or self.proposals is None:
            return _error(501, "retraining needs models_dir, image_source and proposals (the current detector)")
        data, err = await self.json_body(request)
        if err:
            return err
        folds = int((data or {}).get("folds", 4)) if isinstance(data, dict) else 4
        if not self._retraining.acquire(blocking=False):
            return _error(409, "a retraining is running")
        try:
            report = await self._run(self._retrain, folds)
        except ValueError as exc:
            return _error(400, str(exc))
        finally:
            self._retraining.release()
        return JSONResponse(report)

    def _retrain(self, folds: int) -> dict:
        import time as _time

        from ..detectors.rescore import candidate_features
        from ..retrain import retrain_on_consensus

        got, _, _ = self._consensus()
        if got is None:
            raise ValueError("no annotations yet")
        result = got[0]
        data, base = {}, {}
        for i, im in result.images.items():
            arr = self.image_source(i)
            if arr is None or not len(im.groups):
                continue
            px = self.pixel_size(i) if self.pixel_size is not None else None
            data[i] = (candidate_features(np.asarray(arr, np.float32), pixel_size_nm=px),
                       im.groups.xy, im.probability, im.keep)
            base[i] = np.asarray(self.proposals(i) or [], float).reshape(-1, 2)
        rep = retrain_on_consensus(data, baseline_xy=base, folds=folds)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        path = self.models_dir / f"rescore_consensus_{_time.strftime('%Y%m%dT%H%M%S')}.json"
        rep.model.save(path)
        out = {"model": path.name, "images": sorted(data), **rep.as_dict()}
        from ..io import write_json

        write_json(path.with_suffix(".eval.json"), json.loads(json.dumps(out)))
        return out

    # -- pages ------------------------------------------------------------------------------
    def _page(self, request: Request, name: str):
        response = FileResponse(STATIC_DIR / name, headers={"cache-control": "no-store"})
        if CSRF_COOKIE not in request.cookies:
            import secrets

            response.headers.append("set-cookie", self._csrf_cookie(request, secrets.token_urlsafe(24)))
        return response

    async def page(self, request: Request):
        return self._page(request, "annotate.html")

    async def admin_page(self, request: Request):
        return self._page(request, "admin.html")


def _csv_field(text: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    t = str(text)
    if t[:1] in ("=", "+", "-", "@"):
        t = "'" + t
    return '"' + t.replace('"', '""') + '"' if any(c in t for c in ',"\n') else t


def annotation_routes(store: AnnotationStore, *, image_source: Callable[[str], np.ndarray | None] | None = None,
                      proposals: Callable[[str], list] | None = None, tolerance_px: float = 3.0,
                      secure_cookies: bool | None = None, models_dir=None,
                      pixel_size: Callable[[str], float | None] | None = None) -> list:
    """The annotation routes over ``store``.

    Parameters
    ----------
    image_source : callable, optional
        ``image_id -> (H, W) array`` (or None): the pixels shown in the annotation view.
    proposals : callable, optional
        ``image_id -> [[x, y], ...]``: model detections offered in review mode.
    tolerance_px : float
        Grouping tolerance of the consensus.
    secure_cookies : bool, optional
        Mark the session cookie ``Secure`` (default: when the request came over https).
    models_dir : path, optional
        Where ``POST /api/annotate/retrain`` writes re-scorers trained on the consensus
        (with their held-out evaluation); None disables retraining.
    pixel_size : callable, optional
        ``image_id -> nm per px`` for retraining (default: the detectors' default).
    """
    api = _Api(store, image_source=image_source, proposals=proposals, tolerance_px=tolerance_px,
               secure_cookies=secure_cookies, models_dir=models_dir, pixel_size=pixel_size)
    return [
        Route("/api/login", api.login, methods=["POST"]),
        Route("/api/logout", api.logout, methods=["POST"]),
        Route("/api/me", api.me, methods=["GET"]),
        Route("/api/annotate/images", api.my_images, methods=["GET"]),
        Route("/api/annotate/images/{image_id:path}/assign", api.assign, methods=["POST"]),
        Route("/api/annotate/agreement", api.agreement, methods=["GET"]),
        Route("/api/annotate/consensus.csv", api.export_csv, methods=["GET"]),
        Route("/api/annotate/retrain", api.retrain, methods=["POST"]),
        Route("/api/images/{image_id:path}/annotations", api.post_annotations, methods=["POST"]),
        Route("/api/images/{image_id:path}/annotations", api.get_annotations, methods=["GET"]),
        Route("/api/images/{image_id:path}/consensus", api.consensus, methods=["GET"]),
        Route("/api/images/{image_id:path}/proposals", api.proposals_view, methods=["GET"]),
        Route("/api/images/{image_id:path}/annotation-image.png", api.image_png, methods=["GET"]),
        Route("/annotate", api.page, methods=["GET"]),
        Route("/annotate/admin", api.admin_page, methods=["GET"]),
        Mount("/annotate/static", app=StaticFiles(directory=STATIC_DIR), name="annotate-static"),
    ]


_HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


class _HeadersMiddleware:
    """Security headers on every response; no caching of API answers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", []))
                have = {k.lower() for k, _ in hdrs}
                hdrs += [(k.encode(), v.encode()) for k, v in _HEADERS.items() if k.encode() not in have]
                if api and b"cache-control" not in have:
                    hdrs.append((b"cache-control", b"no-store"))
                message = {**message, "headers": hdrs}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_annotation_app(store: AnnotationStore, **kw) -> Starlette:
    """A stand-alone app serving only :func:`annotation_routes` (with security headers)."""
    from starlette.middleware import Middleware

    return Starlette(routes=annotation_routes(store, **kw), middleware=[Middleware(_HeadersMiddleware)])
