"""Two annotators in two browser contexts annotate one image; the consensus shows in the admin view.

Headless Chromium from Debian's ``chromium`` package, driven by playwright (no browser
download); a real uvicorn server on 127.0.0.1 and a free port, stopped at the end.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest

CHROMIUM = os.environ.get("FASTSAC_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    uvicorn = pytest.importorskip("uvicorn")
    from fastsac.annotate import AnnotationStore
    from fastsac.annotate.routes import create_annotation_app

    store = AnnotationStore.open(data_dir=tmp_path)
    users = {n: store.add_user(n, role=r, password=f"{n}-password")
             for n, r in (("alice", "annotator"), ("bob", "annotator"), ("carol", "annotator"),
                          ("root", "admin"))}
    store.add_image("frame1", mode="blind")
    store.assign("frame1", [users["alice"], users["bob"]])
    store.add_image("frame2", mode="review")
    store.assign("frame2", [users["carol"]])
    image = np.random.default_rng(0).poisson(40, (64, 80)).astype(np.float32)
    app = create_annotation_app(store, image_source=lambda i: image if i in ("frame1", "frame2") else None,
                                proposals=lambda i: [[12.0, 14.0], [50.0, 33.0], [70.0, 20.0]])
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        srv.should_exit = True
        t.join(10)


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _canvas_xy(x, y, w=80, h=64, cw=900, ch=700):
    """Canvas-element position of image pixel (x, y) after the page's fit."""
    s = min(cw / w, ch / h)
    return {"x": x * s + (cw - w * s) / 2, "y": y * s + (ch - h * s) / 2}


def _expect_status(page, pattern):
    # A locator assertion, not wait_for_function: the page's CSP forbids eval.
    import re

    from playwright.sync_api import expect

    expect(page.locator("#status")).to_have_text(re.compile(pattern), timeout=15000)


def _login(page, url, name):
    page.goto(url)
    page.fill("#login-name", name)
    page.fill("#login-password", f"{name}-password")
    page.click("#login-button")


def _annotate(context, base, name, points, extra=None):
    page = context.new_page()
    _login(page, f"{base}/annotate", name)
    page.wait_for_selector('body[data-ready="frame1"]')
    canvas = page.locator("#canvas")
    for x, y in points:
        canvas.click(position=_canvas_xy(x, y))
    if extra:
        extra(page, canvas)
    page.keyboard.press("s")
    _expect_status(page, r"^saved version")
    return page


def test_two_annotators_and_admin_consensus(server, browser):
    base, store = server
    common = [(10, 10), (30, 20), (60, 40)]

    def edit(page, canvas):
        # Add a stray atom, select it and delete it with the keyboard; drag an atom.
        canvas.click(position=_canvas_xy(70, 55))
        assert page.text_content("#count") == "4"
        page.keyboard.press("Delete")
        assert page.text_content("#count") == "3"
        start, end = _canvas_xy(60, 40), _canvas_xy(62, 42)
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + start["x"], box["y"] + start["y"])
        page.mouse.down()
        page.mouse.move(box["x"] + (start["x"] + end["x"]) / 2, box["y"] + (start["y"] + end["y"]) / 2)
        page.mouse.move(box["x"] + end["x"], box["y"] + end["y"])
        page.mouse.up()
        # Zoom with the wheel and back with the keyboard: points keep their image positions.
        page.mouse.move(box["x"] + 300, box["y"] + 300)
        page.mouse.wheel(0, -300)
        page.keyboard.press("0")

    ctx_a, ctx_b = browser.new_context(viewport={"width": 1300, "height": 1000}), \
        browser.new_context(viewport={"width": 1300, "height": 1000})
    page_a = _annotate(ctx_a, base, "alice", common, extra=edit)
    page_b = _annotate(ctx_b, base, "bob", common[:2] + [(45, 15)])
    assert page_a.text_content("#status") == "saved version 1 (3 atoms)"
    latest = store.latest_annotations("frame1")
    assert set(latest) == {"alice", "bob"}
    a = np.array(latest["alice"].points)
    assert len(a) == 3 and np.abs(a - [[10, 10], [30, 20], [62, 42]]).max() < 0.6  # the dragged atom moved
    # The session cookie is HttpOnly: page scripts see only the CSRF cookie.
    cookies = page_b.evaluate("document.cookie")
    assert "fastsac_session" not in cookies and cookies.startswith("fastsac_csrf=")
    # Blind mode in the browser too: bob's API view holds only bob's labels.
    mine = page_b.evaluate("fetch('/api/images/frame1/annotations').then(r => r.json())")
    assert list(mine["users"]) == ["bob"]
    assert page_b.evaluate("fetch('/api/images/frame1/consensus').then(r => r.status)") == 403
    # A second save is a new version; nothing is overwritten.
    page_b.locator("#canvas").click(position=_canvas_xy(20, 50))
    page_b.keyboard.press("s")
    _expect_status(page_b, r"^saved version 2 ")
    assert len(store.annotation_versions("frame1")) == 3

    ctx_admin = browser.new_context(viewport={"width": 1300, "height": 1000})
    admin = ctx_admin.new_page()
    _login(admin, f"{base}/annotate/admin", "root")
    admin.wait_for_selector('body[data-ready="frame1"]')
    row = admin.locator('#agreement-table tr[data-image="frame1"]')
    assert row.locator("td").nth(1).text_content() == "2"
    api = admin.evaluate("fetch('/api/images/frame1/consensus').then(r => r.json())")
    assert admin.text_content("#consensus-count") == str(api["n_consensus"])
    full = [p for p in api["points"] if p["agreement"] == 1.0]
    assert len(full) == 2  # (10,10) and (30,20) clicked by both
    assert admin.locator('#annotator-table tr[data-annotator="alice"]').count() == 1
    csv = admin.evaluate("fetch('/api/annotate/consensus.csv').then(r => r.text())")
    assert csv.splitlines()[0] == "image,X,Y,agreement,n_annotators,probability"
    assert len(csv.strip().splitlines()) == 1 + api["n_consensus"]
    for c in (ctx_a, ctx_b, ctx_admin):
        c.close()


def test_review_mode_starts_from_proposals(server, browser):
    base, store = server
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = ctx.new_page()
    _login(page, f"{base}/annotate", "carol")
    page.wait_for_selector('body[data-ready="frame2"]')
    assert "review mode" in page.text_content("#mode")
    assert page.text_content("#count") == "3"  # the model's proposals, to accept or correct
    page.locator("#canvas").click(position=_canvas_xy(50, 33), button="right")  # reject one
    assert page.text_content("#count") == "2"
    page.keyboard.press("s")
    _expect_status(page, r"^saved version 1 \(2 atoms\)")
    assert np.allclose(store.latest_annotations("frame2")["carol"].points, [[12, 14], [70, 20]])
    ctx.close()


@pytest.fixture
def web_server(tmp_path):
    """`fastsac serve`'s app (annotation mounted) on a free loopback port, one demo frame uploaded."""
    uvicorn = pytest.importorskip("uvicorn")

    from fastsac.annotate import AnnotationStore
    from fastsac.io import write_tiff
    from fastsac.synth import demo_image
    from fastsac.web import create_app

    m, _ = demo_image(seed=0)
    tif = tmp_path / "demo.tif"
    write_tiff(tif, m.data, pixel_size_nm=m.pixel_size_nm)
    data = tmp_path / "data"
    app = create_app(data, workers=0, n_sim=9, n_perm=99)
    store = AnnotationStore.open(data_dir=data)
    users = {n: store.add_user(n, role=r, password=f"{n}-password")
             for n, r in (("alice", "annotator"), ("bob", "annotator"), ("root", "admin"))}
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        with open(tif, "rb") as fh:
            iid = httpx.post(f"{base}/api/images", files={"file": ("demo.tif", fh, "image/tiff")},
                             timeout=60).json()["id"]
        store.add_image(iid, mode="blind")
        store.assign(iid, [users["alice"], users["bob"]])
        yield base, store, iid
    finally:
        srv.should_exit = True
        t.join(10)


def test_two_annotators_in_fastsac_serve(web_server, browser):
    base, store, iid = web_server

    def annotate(name, points):
        ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
        page = ctx.new_page()
        _login(page, f"{base}/annotate", name)
        page.wait_for_selector(f'body[data-ready="{iid}"]')
        for x, y in points:
            page.locator("#canvas").click(position=_canvas_xy(x, y, w=512, h=512))
        page.keyboard.press("s")
        _expect_status(page, r"^saved version 1 ")
        return ctx

    ca = annotate("alice", [(100, 100), (200, 300), (400, 50)])
    cb = annotate("bob", [(100, 100), (200, 300)])
    assert {v.user_name for v in store.annotation_versions(iid)} == {"alice", "bob"}
    cadm = browser.new_context(viewport={"width": 1300, "height": 1000})
    admin = cadm.new_page()
    _login(admin, f"{base}/annotate/admin", "root")
    admin.wait_for_selector(f'body[data-ready="{iid}"]')
    api = admin.evaluate(f"fetch('/api/images/{iid}/consensus').then(r => r.json())")
    assert admin.text_content("#consensus-count") == str(api["n_consensus"])
    assert sum(p["agreement"] == 1.0 for p in api["points"]) == 2
    for c in (ca, cb, cadm):
        c.close()
