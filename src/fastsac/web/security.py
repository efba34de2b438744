"""Safety of the web app: authentication hook, CSRF, body limits, security headers.

One ASGI middleware (:class:`SecurityMiddleware`) does, in order, for every
HTTP request:

1. **Host check** (DNS rebinding): without a token the app only answers
   requests whose ``Host`` is a loopback name.
2. **Authentication** through a pluggable *authenticator*: a callable
   ``authenticate(request) -> Identity | None``. The default
   (:func:`allow_local`) lets everyone in (the server is on loopback);
   :func:`token_authenticator` checks a shared token given as
   ``Authorization: Bearer``, ``X-Fastsac-Token`` or the ``fastsac_token``
   cookie that ``GET /?token=…`` sets. Whatever the authenticator returns is
   put in ``request.state.identity`` for the routes (a role-based scheme plugs
   in here, e.g. tokens per user looked up in the store).
3. **CSRF** on state-changing methods: a cross-site ``Origin`` or
   ``Sec-Fetch-Site`` is refused; a request from a browser (it carries our
   cookie, an ``Origin`` or ``Sec-Fetch-*`` header) must repeat the
   ``fastsac_csrf`` cookie in an ``X-CSRF-Token`` header (double submit; the
   page does this). Plain API clients (curl, scripts) send none of these and
   are not affected.
4. **Body limit**: ``Content-Length`` over the limit is refused before the
   body is read; a body that turns out longer raises :class:`BodyTooLarge`
   while it is being read (the app answers 413).
5. **Security headers** on every response (CSP without inline scripts,
   ``nosniff``, no framing, no referrer, same-origin isolation).
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Callable

from starlette.requests import Request

__all__ = ["Identity", "allow_local", "token_authenticator", "SecurityMiddleware", "BodyTooLarge",
           "CSRF_COOKIE", "CSRF_HEADER", "TOKEN_COOKIE", "LOOPBACK_HOSTS", "SECURITY_HEADERS"]

CSRF_COOKIE = "fastsac_csrf"
CSRF_HEADER = "x-csrf-token"
TOKEN_COOKIE = "fastsac_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: Paths anyone may fetch (the page's static assets hold no data).
PUBLIC_PREFIXES = ("/static/",)

SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
                                "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True)
class Identity:
    """Who is asking: a name and roles (the annotation feature adds real users)."""

    name: str
    roles: tuple[str, ...] = field(default=("admin",))


Authenticator = Callable[[Request], "Identity | None"]


def allow_local(request: Request) -> Identity:
    """No authentication: the server listens on loopback only."""
    return Identity("local")


def token_authenticator(token: str) -> Authenticator:
    """Accept requests carrying ``token`` (header or cookie), compared in constant time."""
    want = token.encode()

    def authenticate(request: Request) -> Identity | None:
        given = None
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        given = given or request.headers.get("x-fastsac-token") or request.cookies.get(TOKEN_COOKIE)
        if given and hmac.compare_digest(given.encode(), want):
            return Identity("token")
        return None

    return authenticate


class BodyTooLarge(Exception):
    """The request body is longer than the limit (raised while it is read)."""

    def __init__(self, limit: int):
        super().__init__(f"request body larger than the limit of {limit} bytes")
        self.limit = limit


def _host_name(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


async def _send_json(send, status: int, obj: dict, headers: dict | None = None) -> None:
    body = json.dumps(obj).encode()
    hdrs = {"content-type": "application/json", "content-length": str(len(body)), **SECURITY_HEADERS,
            **(headers or {})}
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()]})
    await send({"type": "http.response.body", "body": body})


class SecurityMiddleware:
    """See the module docstring. ``body_limit(path, method)`` gives the byte limit of a request."""

    def __init__(self, app, *, authenticate: Authenticator, token: str | None,
                 allowed_hosts: tuple[str, ...] | None, body_limit: Callable[[str, str], int]):
        self.app = app
        self.authenticate = authenticate
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else tuple(h.lower() for h in allowed_hosts)
        self.body_limit = body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        path, method = scope["path"], scope["method"]
        headers = request.headers
        if self.allowed_hosts is not None and _host_name(headers.get("host", "")) not in self.allowed_hosts:
            return await _send_json(send, 421, {"error": "unexpected Host header; use http://127.0.0.1:PORT/"})

        # A link with ?token= logs the browser in: set the cookie, drop the token from the URL.
        if self.token and method == "GET" and path == "/" and "token" in request.query_params:
            if hmac.compare_digest(request.query_params["token"].encode(), self.token.encode()):
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode()),
                                        (b"content-length", b"0")]
                            + [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]})
                return await send({"type": "http.response.body", "body": b""})

        if not path.startswith(PUBLIC_PREFIXES):
            identity = self.authenticate(request)
            if identity is None:
                return await _send_json(send, 401, {"error": "authentication required: open the link with "
                                                             "?token=… that `fastsac serve` printed, or send "
                                                             "Authorization: Bearer TOKEN"},
                                        {"www-authenticate": "Bearer"})
            scope.setdefault("state", {})["identity"] = identity

        if method in UNSAFE_METHODS:
            err = self._csrf_error(request)
            if err:
                return await _send_json(send, 403, {"error": err})
            limit = self.body_limit(path, method)
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                return await _send_json(send, 400, {"error": "bad Content-Length"})
            if length > limit:
                return await _send_json(send, 413, {"error": f"request body of {length} bytes is larger than "
                                                             f"the limit of {limit} bytes"})
            receive = _limited(receive, limit)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", []))
                have = {k.lower() for k, _ in hdrs}
                hdrs += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in have]
                if path.startswith("/api/") and b"cache-control" not in have:
                    hdrs.append((b"cache-control", b"no-store"))
                message = {**message, "headers": hdrs}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _csrf_error(request: Request) -> str | None:
        h = request.headers
        origin = h.get("origin")
        own = f"{request.url.scheme}://{h.get('host', '')}"
        if origin is not None and origin != own:
            return f"cross-site request refused (Origin {origin})"
        site = h.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site {site})"
        cookies = SimpleCookie()
        try:
            cookies.load(h.get("cookie", ""))
        except Exception:
            cookies = SimpleCookie()
        from_browser = origin is not None or site is not None or CSRF_COOKIE in cookies
        if from_browser:
            want = cookies[CSRF_COOKIE].value if CSRF_COOKIE in cookies else ""
            given = h.get(CSRF_HEADER, "")
            if not want or not hmac.compare_digest(given.encode(), want.encode()):
                return "missing or wrong CSRF token (reload the page)"
        return None


def _limited(receive, limit: int):
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)
