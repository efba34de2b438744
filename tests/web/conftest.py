"""Fixtures of the web tests: the demo frame on disk, an app client, a real server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="session")
def demo_tif(tmp_path_factory):
    """The `fastsac demo` frame (512², 0.0293 nm/px, calibrated TIFF) and its micrograph."""
    from fastsac.io import write_tiff
    from fastsac.synth import demo_image

    m, _ = demo_image(seed=0)
    path = tmp_path_factory.mktemp("demo") / "demo.tif"
    write_tiff(path, m.data, pixel_size_nm=m.pixel_size_nm)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, *, timeout: float = 30.0):
    """``app`` under uvicorn on 127.0.0.1:<free port> in a thread; yields the base URL
    and stops the server on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=2))
    th = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    th.start()
    t0 = time.monotonic()
    while not server.started:
        if not th.is_alive() or time.monotonic() - t0 > timeout:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(timeout=timeout)


def wait_done(get, iid: str, *, timeout: float = 120.0, plots: bool = False) -> dict:
    """Poll GET /api/images/{iid} until done/failed (and, with ``plots``, its plots too)."""
    t0 = time.monotonic()
    while True:
        j = get(f"/api/images/{iid}").json()
        if j["status"] == "failed" or (j["status"] == "done" and (
                not plots or j["plots"]["status"] in ("done", "failed"))):
            return j
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"image {iid} still {j['status']} after {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A TestClient over an app whose jobs run in a thread (fast start) with few Monte Carlo placements."""
    from starlette.testclient import TestClient

    from fastsac.web import create_app

    data = tmp_path_factory.mktemp("data")
    app = create_app(data, workers=0, n_sim=9, n_perm=99)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        c.data_dir = data
        yield c


@pytest.fixture(scope="session")
def montage_out(tmp_path_factory):
    """A real `fastsac montage` output folder of a 1024² .npy montage."""
    from fastsac_testdata import spots

    from fastsac.io import write_json
    from fastsac.montage import analyze_montage, support_png, write_parquet

    d = tmp_path_factory.mktemp("montage")
    img, _ = spots((1024, 1024), n=500, pairs=40, seed=3)
    img = img.astype(np.float32)
    img[:, :200] *= 0.2  # a dark band: vacuum
    np.save(d / "m.npy", img)
    res = analyze_montage(d / "m.npy", tile=512, pixel_size_nm=0.0293, progress=False)
    out = d / "out"
    write_parquet(out / "atoms.parquet", res)
    write_json(out / "summary.json", res.statistics)
    if res.support is not None:
        support_png(out / "support_mask.png", res.support)
    return out, img, res
