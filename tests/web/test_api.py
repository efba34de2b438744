"""The HTTP API of docs/web.md: upload, status, results, batches, comparisons, tiles."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest

from .conftest import running_server, wait_done


def _upload(client, path, name=None, **fields):
    with open(path, "rb") as fh:
        return client.post("/api/images", files={"file": (name or path.name, fh, "application/octet-stream")},
                           data={k: str(v) for k, v in fields.items()})


@pytest.fixture(scope="module")
def batch_a(client):
    return client.post("/api/batches", json={"name": "before"}).json()["id"]


@pytest.fixture(scope="module")
def done_image(client, demo_tif, batch_a):
    r = _upload(client, demo_tif, batch=batch_a)
    assert r.status_code == 201, r.text
    return wait_done(client.get, r.json()["id"], plots=True)


def test_upload_is_analysed_like_the_pipeline(client, done_image, demo_tif):
    from fastsac.io import read
    from fastsac.pipeline import analyze

    j = done_image
    # the app analyses with its own n_sim (9 here) for the pair-correlation envelopes
    assert j["status"] == "done" and j["error"] is None and j["plots"] == {"status": "done", "error": None}
    ref = analyze(read(demo_tif), pair_correlation_params={"n_sim": 9})
    assert j["n_atoms"] == ref.summary["n_atoms"] > 10
    assert j["summary"]["multimer_fraction"] == pytest.approx(ref.summary["multimer_fraction"])
    assert j["pixel_size_nm"] == pytest.approx(0.0293) and j["pixel_size_source"] == "imagej"
    assert j["shape"] == [512, 512]
    for f in ("atoms.csv", "atoms.parquet", "summary.json", "overlay.png", "support_mask.png", "report.html",
              "nn_histogram.png", "cluster_sizes.png", "pair_correlation.png"):
        assert f in j["files"]
    atoms = client.get(f"/api/images/{j['id']}/atoms.json").json()
    assert atoms["n"] == j["n_atoms"]
    np.testing.assert_allclose(atoms["data"]["x_px"], ref.detections.xy[:, 0], rtol=1e-5)
    np.testing.assert_array_equal(atoms["data"]["cluster_size"], ref.cluster_size)


def test_bundle_zip_holds_the_saved_result(client, done_image):
    r = client.get(f"/api/images/{done_image['id']}/bundle.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(zf.namelist())
    assert {"demo/atoms.csv", "demo/summary.json", "demo/overlay.png", "demo/report.html",
            "demo/nn_histogram.png", "demo/support_mask.png", "demo/atoms.parquet"} <= names
    rows = list(csv.DictReader(io.StringIO(zf.read("demo/atoms.csv").decode())))
    assert len(rows) == done_image["n_atoms"]
    assert json.loads(zf.read("demo/summary.json"))["n_atoms"] == done_image["n_atoms"]


def test_result_files_and_report_is_sandboxed(client, done_image):
    iid = done_image["id"]
    r = client.get(f"/api/images/{iid}/files/nn_histogram.png")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    r = client.get(f"/api/images/{iid}/files/report.html")
    assert r.status_code == 200 and r.headers["content-security-policy"].startswith("sandbox")
    for bad in ("../demo.tif", "..%2F..%2Ffastsac.sqlite3", "plots/../../demo.tif", ".hidden", "a/b/c.png"):
        assert client.get(f"/api/images/{iid}/files/{bad}").status_code == 404, bad


def test_status_of_unknown_image_is_404_json(client):
    r = client.get("/api/images/doesnotexist")
    assert r.status_code == 404 and "error" in r.json()


@pytest.mark.parametrize("name, payload, status", [
    ("broken.tif", b"II*\x00 this is not a tiff", 422),
    ("notes.txt", b"hello", 415),
    ("empty.png", b"", 422),
])
def test_unreadable_upload_is_a_4xx_json_error(client, tmp_path, name, payload, status):
    before = set((client.data_dir / "images").iterdir())
    p = tmp_path / name
    p.write_bytes(payload)
    r = _upload(client, p)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert name in err and "\n" not in err and str(client.data_dir) not in err
    assert set((client.data_dir / "images").iterdir()) == before  # nothing kept


def test_pickled_npy_is_refused(client, tmp_path):
    p = tmp_path / "objects.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    r = _upload(client, p)
    assert r.status_code == 422 and "objects.npy" in r.json()["error"]


def test_missing_file_field_and_bad_parameters(client, demo_tif):
    assert client.post("/api/images", data={"x": "1"}).status_code == 400
    assert _upload(client, demo_tif, detector="/etc/passwd").status_code == 400
    assert _upload(client, demo_tif, multimer_cutoff_nm="-1").status_code == 400
    assert _upload(client, demo_tif, pixel_size_nm="nan").status_code == 400
    assert _upload(client, demo_tif, batch="nope").status_code == 404


def test_calibration_can_be_corrected(client, demo_tif):
    r = _upload(client, demo_tif, pixel_size_nm="0.05", multimer_cutoff_nm="0.3")
    assert r.status_code == 201 and r.json()["pixel_size_nm"] == 0.05
    j = wait_done(client.get, r.json()["id"])
    assert j["summary"]["pixel_size_nm"] == 0.05 and j["pixel_size_source"] == "override"
    assert j["summary"]["multimer_cutoff_nm"] == 0.3
    # back to the file's calibration
    r = client.post(f"/api/images/{j['id']}/analyze", json={"pixel_size_nm": None, "multimer_cutoff_nm": 0.23})
    assert r.status_code == 202, r.text
    j2 = wait_done(client.get, j["id"])
    assert j2["pixel_size_nm"] == pytest.approx(0.0293) and j2["summary"]["multimer_cutoff_nm"] == 0.23
    # A stored file that no longer reads: the job fails with one line naming the file.
    (client.data_dir / "images" / j["id"] / "demo.tif").write_bytes(b"II*\x00garbage")
    assert client.post(f"/api/images/{j['id']}/analyze", json={}).status_code == 202
    j3 = wait_done(client.get, j["id"])
    assert j3["status"] == "failed" and j3["error"].startswith("demo.tif: ") and "\n" not in j3["error"]
    assert str(client.data_dir) not in j3["error"]
    assert client.get(f"/api/images/{j['id']}/bundle.zip").status_code == 409


def _wait(get, url, *, key=lambda j: j["status"], timeout=300):
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        j = get(url).json()
        if key(j) in ("done", "failed"):
            return j
        time.sleep(0.1)
    raise TimeoutError(url)


def test_batch_with_a_rejected_file_completes_pools_and_compares(client, demo_tif, done_image, batch_a,
                                                                  tmp_path):
    from fastsac.io import read, write_tiff

    m = read(demo_tif)
    second = tmp_path / "second.tif"
    write_tiff(second, np.ascontiguousarray(m.data[:, ::-1]), pixel_size_nm=m.pixel_size_nm)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not an image at all")
    r = _upload(client, bad, batch=batch_a)
    assert r.status_code == 422 and r.json()["error"].startswith("bad.tif: ")
    j2 = wait_done(client.get, _upload(client, second, batch=batch_a).json()["id"])
    b = _wait(client.get, f"/api/batches/{batch_a}", key=lambda b: b["report"]["status"])
    assert b["report"]["status"] == "done", b["report"]
    assert [i["status"] for i in b["images"]] == ["done", "done"]
    assert b["pooled"]["n_atoms"] == done_image["n_atoms"] + j2["n_atoms"]
    assert b["images"][0]["row"]["n_atoms"] == done_image["n_atoms"]
    z = zipfile.ZipFile(io.BytesIO(client.get(f"/api/batches/{batch_a}/bundle.zip").content))
    names = z.namelist()
    assert {"demo/atoms.csv", "second/atoms.csv", "summary.csv", "report.html", "report.json"} <= set(names)
    rows = list(csv.DictReader(io.StringIO(z.read("summary.csv").decode())))
    assert [int(r["n_atoms"]) for r in rows] == [done_image["n_atoms"], j2["n_atoms"]]

    # compare with a second batch (what `fastsac report A --compare B` computes)
    bid2 = client.post("/api/batches", json={"name": "after"}).json()["id"]
    wait_done(client.get, _upload(client, second, batch=bid2).json()["id"])
    c = client.post("/api/comparisons", json={"a": batch_a, "b": bid2})
    assert c.status_code == 201, c.text
    cj = _wait(client.get, f"/api/comparisons/{c.json()['id']}")
    assert cj["status"] == "done", cj
    comp = cj["comparison"]
    assert comp["sample_a"] == "before" and comp["sample_b"] == "after" and comp["n_perm"] == 99
    assert 0 < comp["n_atoms_b"] < comp["n_atoms_a"] <= b["pooled"]["n_atoms"]
    assert client.get(f"/api/comparisons/{cj['id']}/report.html").status_code == 200
    assert client.post("/api/comparisons", json={"a": batch_a, "b": batch_a}).status_code == 400


def test_deep_zoom_tiles(client, done_image):
    iid = done_image["id"]
    r = client.get(f"/api/images/{iid}/image.dzi")
    assert r.status_code == 200 and 'Width="512" Height="512"' in r.text and 'TileSize="254"' in r.text
    from PIL import Image

    t = client.get(f"/api/images/{iid}/image_files/9/0_0.jpeg")  # 512² → max level 9
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(t.content)).size == (255, 255)  # 254 + 1 px overlap
    assert Image.open(io.BytesIO(client.get(f"/api/images/{iid}/image_files/9/2_2.jpeg").content)).size == (5, 5)
    assert Image.open(io.BytesIO(client.get(f"/api/images/{iid}/image_files/0/0_0.jpeg").content)).size == (1, 1)
    assert client.get(f"/api/images/{iid}/image_files/9/3_0.jpeg").status_code == 404
    assert client.get(f"/api/images/{iid}/image_files/10/0_0.jpeg").status_code == 404
    m = client.get(f"/api/images/{iid}/mask.png")
    assert m.status_code == 200 and Image.open(io.BytesIO(m.content)).mode == "RGBA"


def test_tile_pixels_are_block_means_of_the_frame():
    from fastsac.web.tiles import FramePyramid, block_mean

    a = np.random.default_rng(0).normal(100, 10, (37, 50)).astype(np.float32)
    p = FramePyramid(a)
    full = p.level(1).astype(np.float64)
    np.testing.assert_allclose(p.level(2), np.round(block_mean(full, 2)), atol=0.5)
    assert p.level(4).shape == (10, 13) and p.level(64).shape == (1, 1)
    np.testing.assert_allclose(block_mean(a, 3)[0, 0], a[:3, :3].mean(), rtol=1e-6)
    padded = np.pad(a, ((0, 2), (0, 1)), mode="edge")  # ragged edge: the last row/column repeated
    np.testing.assert_allclose(block_mean(a, 3)[-1, -1], padded[36:39, 48:51].mean(), rtol=1e-6)


def test_schema_migrations(tmp_path):
    import sqlite3

    from fastsac.web.db import MIGRATIONS, Store

    s = Store(tmp_path / "a.sqlite3")
    assert s.version == len(MIGRATIONS)
    bid = s.create_batch("x")
    s.close()
    s = Store(tmp_path / "a.sqlite3")  # reopening applies nothing and keeps the data
    assert s.get_batch(bid)["name"] == "x"
    s.close()
    db = sqlite3.connect(tmp_path / "a.sqlite3")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this fastsac"):
        Store(tmp_path / "a.sqlite3")


def test_real_server_with_worker_processes(tmp_path, demo_tif):
    """uvicorn on a loopback port, analyses in a spawned worker process, driven over HTTP."""
    import httpx

    from fastsac.web import create_app

    app = create_app(tmp_path / "data", workers=1, n_sim=9)
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/").status_code == 200
        http.cookies.clear()  # a script without the page's CSRF cookie: no CSRF header needed
        with open(demo_tif, "rb") as fh:
            r = http.post("/api/images", files={"file": ("demo.tif", fh, "image/tiff")})
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        # The server answers while the worker analyses.
        assert http.get("/api/config").json()["workers"] == "processes"
        j = wait_done(http.get, iid, timeout=180)
        assert j["status"] == "done" and j["n_atoms"] > 10
        assert http.get(f"/api/images/{iid}/bundle.zip").status_code == 200


@pytest.mark.slow
def test_jobs_on_a_dask_scheduler(tmp_path, demo_tif):
    """`fastsac serve --scheduler ADDR`: the same jobs as Dask tasks (an in-process cluster here)."""
    distributed = pytest.importorskip("distributed")
    from starlette.testclient import TestClient

    from fastsac.web import create_app

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as dask:
        app = create_app(tmp_path / "data", scheduler=dask, n_sim=0)
        with TestClient(app, base_url="http://127.0.0.1") as c:
            assert c.get("/api/config").json()["workers"] == "dask"
            iid = _upload(c, demo_tif).json()["id"]
            j = wait_done(c.get, iid, plots=True)
            assert j["status"] == "done" and j["n_atoms"] > 10 and j["plots"]["status"] == "done"


def test_process_runner_recovers_from_a_dead_worker():
    """A killed worker breaks the pool: its job fails, the next one runs on new workers."""
    import os
    from concurrent.futures.process import BrokenProcessPool

    from fastsac.web.jobs import ProcessRunner

    runner = ProcessRunner(1)
    try:
        with pytest.raises(BrokenProcessPool):
            runner.submit(os._exit, 3).result(timeout=120)
        assert runner.submit(abs, -7).result(timeout=120) == 7
    finally:
        runner.shutdown()
