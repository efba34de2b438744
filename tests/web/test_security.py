"""Safe by default (issue 14, item 6): names never paths, limits, token, CSRF, headers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from starlette.testclient import TestClient

from fastsac.web import create_app
from fastsac.web.common import safe_upload_name

from .conftest import running_server


@pytest.fixture
def app_factory(tmp_path):
    def make(**kw):
        return create_app(tmp_path / "data", workers=0, n_sim=0, **kw)
    return make


def _png(shape=(64, 64)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    a = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("given, expected", [
    ("../../x.tif", "x.tif"), ("..\\..\\x.tif", "x.tif"), ("/etc/passwd", "passwd"), ("..", "upload"),
    ("C:\\data\\Pt NC (1).TIFF", "Pt_NC_1.tiff"), (".bashrc", "bashrc"), ("a/b/../c.png", "c.png"),
    ("x.tif\x00.png", "x_tif.png"), ("Pt–NC 1.tif", "PtNC_1.tif"), ("", "upload"), ("é.npy", "e.npy"),
    ("…", "upload"), ("a" * 300 + ".tif", "a" * 80 + ".tif"),
])
def test_upload_names_are_only_names(given, expected):
    assert safe_upload_name(given) == expected


def test_traversal_name_writes_nothing_outside_data(app_factory, tmp_path):
    app = app_factory()
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for name in ("../../x.png", "..\\..\\y.png", "/tmp/z.png"):
            r = c.post("/api/images", files={"file": (name, _png(), "image/png")})
            assert r.status_code == 201, r.text
            stored = [p for p in (tmp_path / "data" / "images").rglob("*.png")]
            assert any(p.name == r.json()["name"] for p in stored)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "data")]
    assert outside == []
    assert not (tmp_path / "x.png").exists() and not (tmp_path.parent / "x.png").exists()


def test_upload_size_limit(app_factory):
    app = app_factory(max_upload_bytes=10_000)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        big = np.random.default_rng(1).integers(0, 255, (300, 300), dtype=np.uint8).tobytes()
        r = c.post("/api/images", files={"file": ("big.npy", big, "application/octet-stream")})
        assert r.status_code == 413 and "limit" in r.json()["error"]
        # a body streamed without Content-Length is cut off while it is read
        def chunks():
            yield (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.npy"\r\n'
                   b"Content-Type: application/octet-stream\r\n\r\n")
            for _ in range(2000):  # 2 MB: over the body limit (upload limit + 1 MiB of form overhead)
                yield b"x" * 1000
        r = c.post("/api/images", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
        assert r.status_code == 413
        assert list((app.state.ctx.data / "images").iterdir()) == []


def test_pixel_limit(app_factory):
    app = app_factory(max_pixels=100 * 100)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/api/images", files={"file": ("big.png", _png((128, 128)), "image/png")})
        assert r.status_code == 413 and "16384 pixels" in r.json()["error"]
        assert c.post("/api/images", files={"file": ("ok.png", _png((64, 64)), "image/png")}).status_code == 201


def test_security_headers(app_factory):
    with TestClient(app_factory(), base_url="http://127.0.0.1") as c:
        for url in ("/", "/api/config", "/static/app.js", "/api/images/nope"):
            h = c.get(url).headers
            assert "script-src 'self'" in h["content-security-policy"] and "unsafe-eval" not in h["content-security-policy"]
            assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
            assert h["referrer-policy"] == "no-referrer"
        assert c.get("/api/config").headers["cache-control"] == "no-store"


def test_csrf(app_factory):
    with TestClient(app_factory(), base_url="http://127.0.0.1") as c:
        c.get("/")  # the page sets the CSRF cookie
        tok = c.cookies["fastsac_csrf"]
        assert c.post("/api/batches", json={"name": "x"}).status_code == 403  # cookie but no header
        assert c.post("/api/batches", json={"name": "x"}, headers={"x-csrf-token": "wrong"}).status_code == 403
        assert c.post("/api/batches", json={"name": "x"}, headers={"x-csrf-token": tok}).status_code == 201
        # a cross-site page cannot post, whatever it sends
        r = c.post("/api/batches", json={}, headers={"x-csrf-token": tok, "origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["error"]
        r = c.post("/api/batches", json={}, headers={"x-csrf-token": tok, "sec-fetch-site": "cross-site"})
        assert r.status_code == 403
        # same origin with the header is fine; GETs never need it
        assert c.post("/api/batches", json={}, headers={"x-csrf-token": tok,
                                                        "origin": "http://127.0.0.1"}).status_code == 201
        assert c.get("/api/batches").status_code == 200
    with TestClient(app_factory(), base_url="http://127.0.0.1") as c:  # a script: no cookie, no Origin
        assert c.post("/api/batches", json={"name": "script"}).status_code == 201
        assert c.post("/api/batches", json={}, headers={"origin": "http://127.0.0.1"}).status_code == 403


def test_loopback_only_host_header(app_factory):
    with TestClient(app_factory(), base_url="http://attacker.example") as c:  # DNS rebinding
        assert c.get("/api/config").status_code == 421
    with TestClient(app_factory(), base_url="http://localhost:8765") as c:
        assert c.get("/api/config").status_code == 200


def test_token_required_when_set(app_factory):
    app = app_factory(token="s3cret-token")
    with TestClient(app, base_url="http://10.1.2.3:8765", follow_redirects=False) as c:
        r = c.get("/api/config")
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert c.get("/").status_code == 401
        assert c.get("/static/app.js").status_code == 200  # assets hold no data
        assert c.get("/api/config", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/config", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        assert c.get("/api/config", headers={"x-fastsac-token": "s3cret-token"}).status_code == 200
        assert c.get("/?token=wrong").status_code == 401
        r = c.get("/?token=s3cret-token")  # the printed link: sets the cookie, drops the token from the URL
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        assert c.get("/api/config").status_code == 200  # the cookie now authenticates


def test_auth_hook_sets_identity(app_factory):
    from starlette.routing import Route

    from fastsac.web.common import JSONResponse
    from fastsac.web.security import Identity

    async def whoami(request):
        i = request.state.identity
        return JSONResponse({"name": i.name, "roles": list(i.roles)})

    def auth(request):
        return Identity("ann", ("annotator",)) if request.headers.get("x-user") == "ann" else None

    app = app_factory(authenticate=auth, extra_routes=[Route("/api/whoami", whoami)])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/whoami").status_code == 401
        assert c.get("/api/whoami", headers={"x-user": "ann"}).json() == {"name": "ann", "roles": ["annotator"]}


def test_real_server_binds_loopback_and_applies_limits(app_factory):
    import httpx

    app = app_factory(max_upload_bytes=5_000)
    with running_server(app) as base:
        assert base.startswith("http://127.0.0.1:")
        r = httpx.post(base + "/api/images", files={"file": ("x.png", b"\0" * 20_000, "image/png")})
        assert r.status_code == 413
        r = httpx.post(base + "/api/images", files={"file": ("x.png", b"\0" * 100, "image/png")},
                       headers={"origin": "http://evil.example"})
        assert r.status_code == 403


def test_serve_cli_requires_token_off_loopback():
    from fastsac.cli.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
