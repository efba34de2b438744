"""Annotation inside `fastsac serve`: routes mounted, auth hook, CSRF with the app's middleware."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

from fastsac.annotate import AnnotationStore  # noqa: E402
from fastsac.web import create_app  # noqa: E402


@pytest.fixture(scope="module")
def demo_tif(tmp_path_factory):
    from fastsac.io import write_tiff
    from fastsac.synth import demo_image

    m, _ = demo_image(seed=0)
    path = tmp_path_factory.mktemp("demo") / "demo.tif"
    write_tiff(path, m.data, pixel_size_nm=m.pixel_size_nm)
    return path


def _upload_done(c, path, headers=None):
    import time

    with open(path, "rb") as fh:
        r = c.post("/api/images", files={"file": ("demo.tif", fh, "image/tiff")}, headers=headers or {})
    assert r.status_code in (200, 201, 202), r.text
    iid = r.json()["id"]
    t0 = time.monotonic()
    while True:
        j = c.get(f"/api/images/{iid}", headers=headers or {}).json()
        if j["status"] in ("done", "failed"):
            return iid, j
        assert time.monotonic() - t0 < 180
        time.sleep(0.2)


def bearer(t):
    return {"authorization": f"Bearer {t}"}


def test_annotation_in_the_web_app(tmp_path, demo_tif):
    app = create_app(tmp_path, workers=0, n_sim=9, n_perm=99)
    store = AnnotationStore.open(data_dir=tmp_path)  # the file fastsac users add writes
    admin, alice = store.add_user("root", role="admin"), store.add_user("alice", password="alice-pw-123")
    t_admin, t_alice = store.create_token(admin), store.create_token(alice)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        iid, status = _upload_done(c, demo_tif)
        assert status["status"] == "done"
        # Authentication first: a write without a valid token is 401 whatever the image id.
        for target in (iid, "nope", "a/b"):
            r = c.post(f"/api/images/{target}/annotations", json={"points": [[1, 2]]})
            assert r.status_code == 401, (target, r.text)
        r = c.post(f"/api/annotate/images/{iid}/assign", json={"users": ["alice"], "mode": "review"},
                   headers=bearer(t_admin))
        assert r.status_code == 200 and r.json()["assigned"] == ["alice"]
        # Review mode: the proposals are the finished analysis's atoms.
        prop = c.get(f"/api/images/{iid}/proposals", headers=bearer(t_alice)).json()["points"]
        assert len(prop) == status["n_atoms"] > 0
        r = c.post(f"/api/images/{iid}/annotations", json={"points": prop[:-1]}, headers=bearer(t_alice))
        assert r.status_code == 201 and r.json()["n_points"] == len(prop) - 1
        # Many points pass the app's JSON body limit (annotations have their own).
        many = [[float(i % 500), float(i // 500)] for i in range(20000)]
        assert c.post(f"/api/images/{iid}/annotations", json={"points": many},
                      headers=bearer(t_alice)).status_code == 201
        png = c.get(f"/api/images/{iid}/annotation-image.png", headers=bearer(t_alice))
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        cons = c.get(f"/api/images/{iid}/consensus", headers=bearer(t_admin)).json()
        assert cons["annotators"] == ["alice"]
        assert c.get(f"/api/images/{iid}/consensus", headers=bearer(t_alice)).status_code == 403
        # A browser session under the app's own CSRF middleware (double-submit cookie).
        b = TestClient(app, base_url="http://127.0.0.1")  # same app and lifespan, own cookie jar
        page = b.get("/annotate")
        assert page.status_code == 200
        pre = b.cookies.get("fastsac_csrf")
        origin = {"origin": "http://127.0.0.1"}
        r = b.post("/api/login", json={"name": "alice", "password": "alice-pw-123"},
                   headers={**origin, "x-csrf-token": pre})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf"]
        assert b.cookies.get("fastsac_csrf") == csrf
        r = b.post(f"/api/images/{iid}/annotations", json={"points": [[3, 4]]}, headers=origin)
        assert r.status_code == 403
        r = b.post(f"/api/images/{iid}/annotations", json={"points": [[3, 4]]},
                   headers={**origin, "x-csrf-token": csrf})
        assert r.status_code == 201, r.text
    assert len(store.annotation_versions(iid)) == 3


def test_token_mode_keeps_annotators_out_of_the_rest(tmp_path):
    app = create_app(tmp_path, workers=0, token="web-shared-token")
    store = AnnotationStore.open(data_dir=tmp_path)
    t_ann = store.create_token(store.add_user("ann"))
    t_admin = store.create_token(store.add_user("boss", role="admin"))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        # The annotation page and login need no shared token (they authenticate themselves) ...
        assert c.get("/annotate").status_code == 200
        assert c.post("/api/images/x/annotations", json={"points": []}).status_code == 401
        # ... an annotator's token opens the annotation API only, an admin's the whole app.
        assert c.get("/api/annotate/images", headers=bearer(t_ann)).status_code == 200
        assert c.get("/api/images", headers=bearer(t_ann)).status_code == 401
        assert c.get("/api/images", headers=bearer(t_admin)).status_code == 200
        assert c.get("/api/images", headers=bearer("web-shared-token")).status_code == 200
