"""Annotation API: authentication first, roles, blind mode, CSRF, cookies, rate limit, export."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from starlette.testclient import TestClient

from fastsac.annotate import AnnotationStore
from fastsac.annotate.routes import create_annotation_app


def _env(tmp_path):
    store = AnnotationStore.open(data_dir=tmp_path)
    # Passwords (argon2, deliberately slow) only where a test logs in.
    users = {n: store.add_user(n, role=r, password=f"pw-{n}-secret" if n in ("alice", "bob") else None)
             for n, r in (("alice", "annotator"), ("bob", "annotator"), ("carl", "annotator"),
                          ("root", "admin"), ("vera", "viewer"))}
    tokens = {n: store.create_token(u) for n, u in users.items()}
    store.add_image("img1", mode="blind")
    store.assign("img1", [users["alice"], users["bob"]])
    store.add_image("img2", mode="review")
    store.assign("img2", [users["alice"]])
    rng = np.random.default_rng(0)
    image = rng.poisson(50, (64, 80)).astype(np.float32)
    app = create_annotation_app(store, image_source=lambda i: image if i in ("img1", "img2") else None,
                                proposals=lambda i: [[10.0, 12.0], [40.0, 30.0]])
    client = TestClient(app)
    return store, users, tokens, client


@pytest.fixture
def env(tmp_path):
    return _env(tmp_path)


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory):
    return _env(tmp_path_factory.mktemp("shared"))


def bearer(tok):
    return {"authorization": f"Bearer {tok}"}


@pytest.mark.parametrize("image_id", ["img1", "nope", "..%2F..%2Fetc", "x" * 300])
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": "Basic abc"},
                                     {"cookie": "fastsac_session=forged"}])
def test_write_without_valid_token_is_401_whatever_the_image(shared_env, image_id, headers):
    _, _, _, client = shared_env
    r = client.post(f"/api/images/{image_id}/annotations", json={"points": [[1, 2]]}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    # Not even a malformed body gets past authentication first.
    r = client.post(f"/api/images/{image_id}/annotations", content=b"{not json", headers=headers)
    assert r.status_code == 401


def test_save_and_list_versions_blind(env):
    store, _, tok, client = env
    r = client.post("/api/images/img1/annotations", json={"points": [[1, 2], [3.5, 4]]}, headers=bearer(tok["alice"]))
    assert r.status_code == 201 and r.json()["version"] == 1 and r.json()["n_points"] == 2
    r = client.post("/api/images/img1/annotations", json={"points": [[1, 2]]}, headers=bearer(tok["alice"]))
    assert r.json()["version"] == 2
    client.post("/api/images/img1/annotations", json={"points": [[9, 9]]}, headers=bearer(tok["bob"]))
    # Blind: each annotator reads only their own versions.
    mine = client.get("/api/images/img1/annotations", headers=bearer(tok["bob"])).json()
    assert list(mine["users"]) == ["bob"] and mine["users"]["bob"][0]["points"] == [[9.0, 9.0]]
    alice = client.get("/api/images/img1/annotations", headers=bearer(tok["alice"])).json()
    assert list(alice["users"]) == ["alice"] and len(alice["users"]["alice"]) == 2
    # Admin and viewer read everything, version history included.
    for who in ("root", "vera"):
        allv = client.get("/api/images/img1/annotations", headers=bearer(tok[who])).json()
        assert set(allv["users"]) == {"alice", "bob"}
        assert [v["version"] for v in allv["users"]["alice"]] == [1, 2]
    assert len(store.annotation_versions("img1")) == 3


def test_roles_and_assignment(env):
    _, _, tok, client = env
    p = {"points": [[1, 1]]}
    assert client.post("/api/images/img1/annotations", json=p, headers=bearer(tok["carl"])).status_code == 403
    assert client.get("/api/images/img1/annotations", headers=bearer(tok["carl"])).status_code == 403
    assert client.post("/api/images/img1/annotations", json=p, headers=bearer(tok["vera"])).status_code == 403
    assert client.post("/api/images/zzz/annotations", json=p, headers=bearer(tok["alice"])).status_code == 404
    assert client.post("/api/images/img1/annotations", json=p, headers=bearer(tok["root"])).status_code == 201
    for bad in ({"pts": []}, {"points": [[1]]}, {"points": [[1, "x"]]}, [1, 2], {"points": [[1, None]]}):
        r = client.post("/api/images/img1/annotations", json=bad, headers=bearer(tok["alice"]))
        assert r.status_code == 400, bad
    r = client.post("/api/images/img1/annotations", content=b"{", headers=bearer(tok["alice"]))
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = client.post("/api/images/img1/annotations", json={"points": [[1, 1]] * 100_001}, headers=bearer(tok["alice"]))
    assert r.status_code == 413


def test_consensus_admin_view_and_export(env):
    _, _, tok, client = env
    base = [[10, 10], [30, 30], [50, 20]]
    client.post("/api/images/img1/annotations", json={"points": base + [[60, 60]]}, headers=bearer(tok["alice"]))
    client.post("/api/images/img1/annotations", json={"points": [[x + 0.5, y] for x, y in base]},
                headers=bearer(tok["bob"]))
    # Annotators cannot read the consensus (it would reveal the others' labels).
    assert client.get("/api/images/img1/consensus", headers=bearer(tok["alice"])).status_code == 403
    c = client.get("/api/images/img1/consensus", headers=bearer(tok["root"])).json()
    assert c["annotators"] == ["alice", "bob"] and c["method"] == "majority"
    kept = [p for p in c["points"] if p["in_consensus"]]
    assert len(kept) == 4  # majority of 2 keeps ties
    full = [p for p in c["points"] if p["agreement"] == 1.0]
    assert len(full) == 3 and all(0 <= p["probability"] <= 1 for p in c["points"])
    assert client.get("/api/images/img1/consensus", headers=bearer(tok["vera"])).status_code == 200
    # Export and agreement: admin only.
    for who in ("alice", "vera"):
        assert client.get("/api/annotate/consensus.csv", headers=bearer(tok[who])).status_code == 403
        assert client.get("/api/annotate/agreement", headers=bearer(tok[who])).status_code == 403
    r = client.get("/api/annotate/consensus.csv", headers=bearer(tok["root"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0] == "image,X,Y,agreement,n_annotators,probability" and len(lines) == 5
    ag = client.get("/api/annotate/agreement", headers=bearer(tok["root"])).json()
    assert ag["images"]["img1"]["annotators"]["bob"]["precision"] == 1.0
    assert set(ag["annotators"]) == {"alice", "bob"}
    assert ag["pairwise_f1"]["matrix"][0][1] == pytest.approx(2 * 3 / 7)


def test_review_mode_proposals_and_image(env):
    _, _, tok, client = env
    assert client.get("/api/images/img1/proposals", headers=bearer(tok["alice"])).status_code == 403  # blind
    r = client.get("/api/images/img2/proposals", headers=bearer(tok["alice"]))
    assert r.status_code == 200 and r.json()["points"] == [[10.0, 12.0], [40.0, 30.0]]
    assert client.get("/api/images/img2/proposals", headers=bearer(tok["bob"])).status_code == 403  # not assigned
    png = client.get("/api/images/img1/annotation-image.png", headers=bearer(tok["bob"]))
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/images/img1/annotation-image.png").status_code == 401


def test_session_cookie_csrf_and_origin(env):
    _, _, _, client = env
    r = client.post("/api/login", json={"name": "alice", "password": "pw-alice-secret"})
    assert r.status_code == 200
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("fastsac_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
    csrf = r.json()["csrf"]
    double = next(c for c in cookies if c.startswith("fastsac_csrf="))
    assert double.startswith(f"fastsac_csrf={csrf};") and "HttpOnly" not in double
    p = {"points": [[5, 5]]}
    assert client.get("/api/me").json()["user"] == "alice"
    r = client.post("/api/images/img1/annotations", json=p)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = client.post("/api/images/img1/annotations", json=p, headers={"x-csrf-token": csrf + "x"})
    assert r.status_code == 403
    r = client.post("/api/images/img1/annotations", json=p,
                    headers={"x-csrf-token": csrf, "origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["error"]
    r = client.post("/api/images/img1/annotations", json=p,
                    headers={"x-csrf-token": csrf, "origin": "http://testserver"})
    assert r.status_code == 201
    assert client.post("/api/logout", headers={"x-csrf-token": csrf}).status_code == 200
    assert client.get("/api/me").status_code == 401
    # Security headers on responses.
    r = client.get("/annotate")
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


def test_login_rate_limit(env):
    _, _, _, client = env
    for _ in range(5):
        assert client.post("/api/login", json={"name": "bob", "password": "guess"}).status_code == 401
    r = client.post("/api/login", json={"name": "bob", "password": "pw-bob-secret"})
    assert r.status_code == 429 and "retry-after" in r.headers
    # Other accounts from the same address still work (per-address limit is higher).
    assert client.post("/api/login", json={"name": "alice", "password": "pw-alice-secret"}).status_code == 200
    assert client.post("/api/login", json={"name": "x"}).status_code == 400


def test_two_annotators_saving_at_once_both_kept(env):
    store, _, tok, client = env
    barrier = threading.Barrier(2)
    codes = []

    def save(name, pts):
        barrier.wait()
        for j in range(5):
            r = client.post("/api/images/img1/annotations", json={"points": pts + [[j, j]]}, headers=bearer(tok[name]))
            codes.append(r.status_code)

    ts = [threading.Thread(target=save, args=("alice", [[1, 1]])), threading.Thread(target=save, args=("bob", [[2, 2]]))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert codes == [201] * 10
    hist = store.annotation_versions("img1")
    assert sorted(v.version for v in hist if v.user_name == "alice") == [1, 2, 3, 4, 5]
    assert sorted(v.version for v in hist if v.user_name == "bob") == [1, 2, 3, 4, 5]


def test_admin_assign(env):
    _, _, tok, client = env
    r = client.post("/api/annotate/images/img9/assign", json={"k": 2, "mode": "review"}, headers=bearer(tok["root"]))
    assert r.status_code == 200 and len(r.json()["assigned"]) == 2 and r.json()["mode"] == "review"
    assert client.post("/api/annotate/images/img9/assign", json={"k": 2}, headers=bearer(tok["alice"])).status_code == 403
    r = client.post("/api/annotate/images/img9/assign", json={"users": ["carl"]}, headers=bearer(tok["root"]))
    assert "carl" in r.json()["assigned"]
    mine = client.get("/api/annotate/images", headers=bearer(tok["carl"])).json()["images"]
    assert [m["id"] for m in mine] == ["img9"]


def test_admin_retrain_on_consensus(tmp_path):
    from fastsac.detectors import get_detector
    from fastsac.synth import simulate
    from fastsac.synth.annotators import PROFILES, simulate_annotator
    from fastsac.detectors.rescore import candidate_features
    from fastsac.evaluate import match_points

    store = AnnotationStore.open(data_dir=tmp_path)
    admin = store.add_user("root", role="admin")
    anns = [store.add_user(f"a{i}") for i in range(3)]
    tok_admin, tok_ann = store.create_token(admin), store.create_token(anns[0])
    frames, props = {}, {}
    classical = get_detector("classical")
    rng = np.random.default_rng(1)
    for k in range(3):
        img, truth = simulate(seed=200 + k)
        fid = f"sim{k}"
        frames[fid] = img
        props[fid] = classical.detect(img, pixel_size_nm=0.0293).xy.tolist()
        tab = candidate_features(img, pixel_size_nm=0.0293)
        r = match_points(tab.xy, truth.xy, tolerance_px=4)
        idx = np.full(len(tab.xy), -1)
        idx[r.pairs[:, 0]] = r.pairs[:, 1]
        store.assign(fid, anns)
        for u, prof in zip(anns, ("expert", "careful", "liberal")):
            a = simulate_annotator(tab.xy, tab.score, idx, truth_xy=truth.xy, shape=img.shape,
                                   profile=PROFILES[prof], rng=rng)
            store.save_annotation(fid, u, a.xy.tolist())
    app = create_annotation_app(store, image_source=frames.get, proposals=lambda i: props[i],
                                models_dir=tmp_path / "models", pixel_size=lambda i: 0.0293)
    client = TestClient(app)
    assert client.post("/api/annotate/retrain", json={}).status_code == 401
    assert client.post("/api/annotate/retrain", json={}, headers=bearer(tok_ann)).status_code == 403
    r = client.post("/api/annotate/retrain", json={"folds": 3}, headers=bearer(tok_admin))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["images"] == ["sim0", "sim1", "sim2"] and rep["folds"] == 3
    assert 0 < rep["f1_new_heldout"] <= 1 and 0 < rep["f1_baseline"] <= 1
    assert rep["better"] == (rep["f1_new_heldout"] > rep["f1_baseline"])
    assert (tmp_path / "models" / rep["model"]).exists()
    assert get_detector(str(tmp_path / "models" / rep["model"])).model.meta["trained_on"] == "consensus"
    # Not configured: a clear 501.
    plain = TestClient(create_annotation_app(store))
    assert plain.post("/api/annotate/retrain", json={}, headers=bearer(tok_admin)).status_code == 501
