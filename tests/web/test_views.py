"""Montage results browsed per viewport, and a `fastsac watch` session followed live."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from .conftest import running_server


@pytest.fixture(scope="module")
def montage_client(montage_out, tmp_path_factory):
    from fastsac.web import create_app

    app = create_app(tmp_path_factory.mktemp("data"), workers=0, montages=[montage_out[0]])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def test_montage_listed_with_its_summary(montage_client, montage_out):
    _, _, res = montage_out
    ms = montage_client.get("/api/montages").json()["montages"]
    assert len(ms) == 1 and ms[0]["n_atoms"] == len(res.detections) > 300
    m = montage_client.get(f"/api/montages/{ms[0]['id']}").json()
    assert m["shape"] == [1024, 1024] and m["tiles"] and "atoms.parquet" in m["files"]
    assert m["summary"]["multimer_fraction"] == res.statistics["multimer_fraction"]


@pytest.mark.parametrize("window", [(0, 0, 1024, 1024), (100.5, 300, 612, 700), (900, 900, 2000, 2000),
                                    (500, 500, 500, 600)])
def test_viewport_atoms_are_exactly_those_in_the_window(montage_client, montage_out, window):
    _, _, res = montage_out
    mid = montage_client.get("/api/montages").json()["montages"][0]["id"]
    x0, y0, x1, y1 = window
    r = montage_client.get(f"/api/montages/{mid}/atoms", params=dict(x0=x0, y0=y0, x1=x1, y1=y1, limit=50000))
    d = r.json()
    xy = res.detections.xy
    inside = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
    assert d["n"] == inside.sum() and not d["truncated"]
    got = sorted(zip(d["data"]["x_px"], d["data"]["y_px"]))
    np.testing.assert_allclose(got, sorted(map(tuple, xy[inside])))
    assert set(d["columns"]) >= {"x_px", "y_px", "score", "cluster_size", "in_support"}


def test_viewport_atoms_are_capped(montage_client, montage_out):
    mid = montage_client.get("/api/montages").json()["montages"][0]["id"]
    d = montage_client.get(f"/api/montages/{mid}/atoms", params=dict(x0=0, y0=0, x1=1024, y1=1024, limit=10)).json()
    assert d["truncated"] and d["returned"] == 10 and d["n"] == len(montage_out[2].detections)
    assert montage_client.get(f"/api/montages/{mid}/atoms", params=dict(x0="a", y0=0, x1=1, y1=1)).status_code == 400


def test_montage_tiles_come_from_the_source(montage_client, montage_out):
    from PIL import Image

    mid = montage_client.get("/api/montages").json()["montages"][0]["id"]
    assert 'Width="1024" Height="1024"' in montage_client.get(f"/api/montages/{mid}/image.dzi").text
    t = montage_client.get(f"/api/montages/{mid}/image_files/10/1_1.jpeg")
    assert t.status_code == 200
    assert Image.open(io.BytesIO(t.content)).size == (256, 256)  # 254 + overlap on both sides
    assert montage_client.get(f"/api/montages/{mid}/image_files/0/0_0.jpeg").status_code == 200
    assert montage_client.get(f"/api/montages/{mid}/mask.png").status_code == 200
    assert montage_client.get(f"/api/montages/{mid}/files/atoms.parquet").status_code == 200
    assert montage_client.get(f"/api/montages/{mid}/files/m.npy").status_code == 404


def test_montage_pyramid_levels_equal_block_means_and_cache(tmp_path, montage_out):
    from fastsac.montage import open_montage
    from fastsac.web.tiles import MontagePyramid, block_mean, to_uint8

    img = montage_out[1]
    src = open_montage(montage_out[0].parent / "m.npy")
    p = MontagePyramid(src, cache_dir=tmp_path, overview_px=256, band_rows=300)
    assert p.f == 4
    ov = p.overview()
    np.testing.assert_allclose(ov, block_mean(img, 4), rtol=1e-5)
    # a coarse level (from the overview) and a fine one (read from the source)
    coarse = p.region(8, 0, 64, 0, 64).astype(int)  # made from the overview: float rounding may differ by 1
    np.testing.assert_allclose(coarse, to_uint8(block_mean(img, 8), p.lo, p.hi)[:64, :64], atol=1)
    np.testing.assert_array_equal(p.region(2, 10, 50, 20, 90), to_uint8(block_mean(img, 2), p.lo, p.hi)[10:50, 20:90])
    assert len(list(tmp_path.glob("overview-*.npy"))) == 1
    q = MontagePyramid(src, cache_dir=tmp_path, overview_px=256)  # a restarted server reuses the overview
    np.testing.assert_array_equal(q.overview(), ov)


def _write_frame(folder, k, data, px):
    from fastsac.io import write_tiff

    tmp = folder / f"frame{k:03d}.tif.part"
    write_tiff(tmp, data, pixel_size_nm=px)
    tmp.rename(folder / f"frame{k:03d}.tif")


def _sse_events(resp):
    event, data = None, None
    for line in resp.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and event:
            yield event, data
            event, data = None, None


def test_live_session_streams_new_frames(tmp_path, demo_tif):
    import httpx

    from fastsac.io import read
    from fastsac.live import watch
    from fastsac.web import create_app

    m = read(demo_tif)
    frames_in, out = tmp_path / "in", tmp_path / "out"
    frames_in.mkdir()
    stop = threading.Event()
    th = threading.Thread(target=watch, args=(frames_in, out), daemon=True,
                          kwargs=dict(poll_s=0.2, settle_s=1.0, stop=stop, overlay=False))
    th.start()
    try:
        for _ in range(300):
            if (out / "frames.csv").exists():
                break
            time.sleep(0.05)
        app = create_app(tmp_path / "data", workers=0, live=[out], sse_poll_s=0.2)
        with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
            lid = http.get("/api/live").json()["live"][0]["id"]
            assert http.get(f"/api/live/{lid}").json()["n_frames"] == 0
            seen = []
            with http.stream("GET", f"/api/live/{lid}/events") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                for k, (event, data) in enumerate(_sse_events(resp)):
                    seen.append((event, data))
                    if event == "snapshot":
                        assert data["n_frames"] == 0
                        _write_frame(frames_in, 0, m.data, m.pixel_size_nm)
                    elif event == "frames" and data["n_frames"] == 1:
                        _write_frame(frames_in, 1, m.data[::-1].copy(), m.pixel_size_nm)
                    elif event == "frames" and data["n_frames"] >= 2:
                        break
            last = seen[-1][1]
            assert [e for e, _ in seen][0] == "snapshot"
            assert last["stats"]["n_frames"] == 2
            names = [r["name"] for _, d in seen[1:] for r in d["frames"]]
            assert names == ["frame000", "frame001"]
            snap = http.get(f"/api/live/{lid}").json()
            assert snap["n_frames"] == 2 and snap["stats"]["n_atoms"] == last["stats"]["n_atoms"] > 20
            assert http.get(f"/api/live/{lid}/files/atoms.csv").status_code == 200
    finally:
        stop.set()
        th.join(30)
