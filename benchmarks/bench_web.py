"""Speed of ``fastsac serve``: time to first result, and tile / viewport latency on a gigapixel montage.

Part 1 — time to first result of a 2048² frame: the app runs under uvicorn on
a loopback port with one spawned worker process (warmed up by one small job),
the frame is uploaded over HTTP and ``GET /api/images/{id}`` is polled every
20 ms until ``done``. Baselines in the same run: what ``fastsac analyze`` does
per image in-process (``read`` + ``analyze`` + ``write_result``) and the web
job itself in-process (the result without plots, then the plots and report.html
drawn from the saved result).

Part 2 — a simulated 32768² montage (a simulated 2048² frame tiled 16 × 16
into a uint16 ``.npy``, 2 GiB, with its detections tiled the same way into
``atoms.parquet``): the one-time overview build, then deep-zoom tiles fetched
by a bounded concurrent client (``--concurrency`` requests in flight) at
coarse levels (served from the overview) and fine levels (read from the
source), cold and cached; the whole first screen (DZI + every tile of levels
0–10); and atoms per 2048² viewport (pyarrow filters). Baseline: the same
tiles made in-process without HTTP.

    PYTHONPATH=src python benchmarks/bench_web.py [--size 32768] [--frame 2048] [--concurrency 8] [--n-sim 99] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def _summ(xs) -> dict:
    return {"n": len(xs), "p50_ms": round(_pct(xs, 50), 2), "p95_ms": round(_pct(xs, 95), 2),
            "max_ms": round(max(xs) * 1e3, 2)}


def first_result(frame: int, repeats: int, tmp: Path, n_sim: int = 99) -> dict:
    import httpx

    from fastsac.io import read, write_tiff
    from fastsac.pipeline import analyze
    from fastsac.result import write_result
    from fastsac.synth import simulate
    from fastsac.web import create_app
    from fastsac.web.jobs import analyze_image_job, render_extras_job
    from web.conftest import running_server

    img, _ = simulate(size=frame, seed=5)
    path = tmp / "frame2048.tif"
    write_tiff(path, np.asarray(img, np.float32), pixel_size_nm=0.0293)
    small = tmp / "warm.tif"
    write_tiff(small, np.asarray(img[:256, :256], np.float32), pixel_size_nm=0.0293)

    def baseline_cli():
        t = time.perf_counter()
        res = analyze(read(path), pair_correlation=n_sim > 0, pair_correlation_params={"n_sim": n_sim})
        write_result(res, tmp / "cli" / "frame2048")
        return time.perf_counter() - t, res.summary["n_atoms"]

    def baseline_job(k):
        d = tmp / f"job{k}"
        d.mkdir()
        t = time.perf_counter()
        out = analyze_image_job(str(path), str(d), n_sim=n_sim)
        assert out["ok"], out
        t1 = time.perf_counter()
        assert render_extras_job(str(d / "result" / out["folder"]))["ok"]
        return t1 - t, time.perf_counter() - t

    baseline_cli()  # imports, JIT
    cli = [baseline_cli() for _ in range(repeats)]
    job = [baseline_job(k) for k in range(repeats)]
    n_atoms = cli[0][1]

    app = create_app(tmp / "data", workers=1, n_sim=n_sim)
    web = []
    with running_server(app) as base, httpx.Client(base_url=base, timeout=600) as http:
        def run_one(p):
            t0 = time.perf_counter()
            with open(p, "rb") as fh:
                r = http.post("/api/images", files={"file": (p.name, fh, "image/tiff")})
            r.raise_for_status()
            t1 = time.perf_counter()
            while True:
                j = http.get(f"/api/images/{r.json()['id']}").json()
                if j["status"] in ("done", "failed"):
                    break
                time.sleep(0.02)
            assert j["status"] == "done", j
            t2 = time.perf_counter()
            while j["plots"]["status"] not in ("done", "failed"):
                time.sleep(0.02)
                j = http.get(f"/api/images/{r.json()['id']}").json()
            return t1 - t0, t2 - t0, j["n_atoms"], time.perf_counter() - t0

        run_one(small)  # the worker process has started and imported everything
        for _ in range(repeats):
            web.append(run_one(path))
    assert all(w[2] == n_atoms for w in web)
    return {
        "frame_px": frame, "n_atoms": n_atoms, "repeats": repeats, "n_sim": n_sim,
        "web_upload_accepted_s": round(statistics.median(w[0] for w in web), 3),
        "web_time_to_first_result_s": round(statistics.median(w[1] for w in web), 3),
        "web_time_to_plots_s": round(statistics.median(w[3] for w in web), 3),
        "inprocess_web_job_result_s": round(statistics.median(j[0] for j in job), 3),
        "inprocess_web_job_result_plots_report_s": round(statistics.median(j[1] for j in job), 3),
        "inprocess_analyze_write_result_s": round(statistics.median(c[0] for c in cli), 3),
    }


def make_montage(size: int, frame: int, tmp: Path) -> Path:
    """A 32768² montage folder: a simulated frame tiled, with its detections tiled alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fastsac.io import Micrograph
    from fastsac.montage import PARQUET_COLUMNS
    from fastsac.pipeline import analyze
    from fastsac.synth import simulate

    img, _ = simulate(size=frame, seed=7, vacuum="none")
    img16 = np.clip(np.asarray(img) // 32, 0, 65535).astype(np.uint16)  # simulated counts are uint32
    src = tmp / "montage32k.npy"
    mm = np.lib.format.open_memmap(src, mode="w+", dtype=np.uint16, shape=(size, size))
    k = size // frame
    for i in range(k):
        mm[i * frame:(i + 1) * frame] = np.tile(img16, (1, k))
    mm.flush()
    del mm
    res = analyze(Micrograph.from_array(img16.astype(np.float32), pixel_size_nm=0.0293), support_mask=False)
    base = res.atoms_table()
    cols = {c: [] for c in PARQUET_COLUMNS}
    for t, (i, j) in enumerate((i, j) for i in range(k) for j in range(k)):  # core order, as montage writes
        for c in PARQUET_COLUMNS:
            v = base.get(c)
            if c == "x_px":
                v = base["x_px"] + j * frame
            elif c == "y_px":
                v = base["y_px"] + i * frame
            elif c == "x_nm":
                v = (base["x_px"] + j * frame) * 0.0293
            elif c == "y_nm":
                v = (base["y_px"] + i * frame) * 0.0293
            elif c == "tile":
                v = np.full(len(base["x_px"]), t)
            elif v is None:
                v = np.full(len(base["x_px"]), np.nan)
            cols[c].append(np.asarray(v))
    out = tmp / "montage_out"
    out.mkdir()
    table = pa.table({c: np.concatenate(v) for c, v in cols.items()})
    pq.write_table(table, out / "atoms.parquet", compression="zstd")
    (out / "summary.json").write_text(json.dumps({
        "image": "montage32k", "source": str(src), "shape_px": [size, size], "pixel_size_nm": 0.0293,
        "n_atoms": table.num_rows, "length_unit": "nm"}))
    return out


async def fetch_all(base, urls, concurrency):
    import httpx

    sem = asyncio.Semaphore(concurrency)
    lat = []

    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        async def one(u):
            async with sem:
                t = time.perf_counter()
                r = await http.get(u)
                r.raise_for_status()
                lat.append(time.perf_counter() - t)
                return len(r.content)

        t0 = time.perf_counter()
        sizes = await asyncio.gather(*(one(u) for u in urls))
        wall = time.perf_counter() - t0
    return lat, wall, sum(sizes)


def montage_tiles(size: int, frame: int, concurrency: int, tmp: Path) -> dict:
    import httpx

    from fastsac.web import create_app
    from fastsac.web.tiles import DeepZoom, TileCache
    from web.conftest import running_server

    t = time.perf_counter()
    out = make_montage(size, frame, tmp)
    gen_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    app = create_app(tmp / "data2", workers=0, montages=[out])
    view = next(iter(app.state.ctx.montages.values()))
    pyr = view.deepzoom[0]
    t = time.perf_counter()
    view.overview_thread.join()
    overview_s = time.perf_counter() - t  # the background build started when the app was made
    mid = next(iter(app.state.ctx.montages))
    dz = DeepZoom(pyr, key="x", cache=TileCache())
    top = dz.max_level
    fine = int(round(math.log2(pyr.f)))  # levels finer than the overview read the source
    levels = {f"coarse (L{top - fine - 3}-{top - fine}, from the overview)": range(top - fine - 3, top - fine + 1),
              f"fine (L{top - fine + 1}-{top}, from the source)": range(top - fine + 1, top + 1)}
    plan = {}
    for name, lv in levels.items():
        reqs = []
        for L in lv:
            if L > top or L < 0:
                continue
            h, w = dz.level_shape(L)
            nc, nr = math.ceil(w / 254), math.ceil(h / 254)
            reqs += [(L, int(rng.integers(nc)), int(rng.integers(nr))) for _ in range(48)]
        plan[name] = sorted(set(reqs))
    res = {"montage_px": size, "n_atoms": int(json.loads((out / "summary.json").read_text())["n_atoms"]),
           "generate_s": round(gen_s, 1), "overview_build_s": round(overview_s, 1),
           "overview_factor": pyr.f, "concurrency": concurrency}
    with running_server(app) as base:
        home = ["/api/montages/%s/image.dzi" % mid]
        for L in range(0, 11):
            h, w = dz.level_shape(L)
            home += [f"/api/montages/{mid}/image_files/{L}/{c}_{r}.jpeg"
                     for c in range(math.ceil(w / 254)) for r in range(math.ceil(h / 254))]
        lat, wall, nbytes = asyncio.run(fetch_all(base, home, concurrency))
        res["first_screen"] = {"requests": len(home), "wall_s": round(wall, 3), **_summ(lat)}
        for name, reqs in plan.items():
            if not reqs:
                continue
            urls = [f"/api/montages/{mid}/image_files/{L}/{c}_{r}.jpeg" for L, c, r in reqs]
            cold, wall, _ = asyncio.run(fetch_all(base, urls, concurrency))
            warm, wall_w, _ = asyncio.run(fetch_all(base, urls, concurrency))
            # baseline: the same tiles made in-process (same pyramid, empty tile cache),
            # one after another, no HTTP
            fresh = DeepZoom(pyr, key="bl", cache=TileCache())
            bl = []
            for L, c, r in reqs:
                t = time.perf_counter()
                fresh.tile(L, c, r)
                bl.append(time.perf_counter() - t)
            res[name] = {"cold": {**_summ(cold), "tiles_per_s": round(len(urls) / wall, 1)},
                         "cached": {**_summ(warm), "tiles_per_s": round(len(urls) / wall_w, 1)},
                         "inprocess_serial_baseline": _summ(bl)}
        wins = []
        for _ in range(24):
            x0, y0 = rng.integers(0, size - 2048, 2)
            wins.append(f"/api/montages/{mid}/atoms?x0={x0}&y0={y0}&x1={x0 + 2048}&y1={y0 + 2048}&limit=20000")
        lat, wall, _ = asyncio.run(fetch_all(base, wins, 1))
        with httpx.Client(base_url=base) as http:
            n_in = http.get(wins[0]).json()["n"]
        res["atoms_per_2048_viewport"] = {**_summ(lat), "atoms_in_window": n_in}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32768, help="montage side (px)")
    ap.add_argument("--frame", type=int, default=2048, help="frame side (px)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--n-sim", type=int, default=99,
                    help="random placements of the pair-correlation test in each analysis (serve --n-sim)")
    ap.add_argument("--skip-frame", action="store_true")
    ap.add_argument("--skip-montage", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = {}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp = Path(tmp)
        if not a.skip_frame:
            out["first_result"] = first_result(a.frame, a.repeats, tmp, a.n_sim)
            print(json.dumps(out["first_result"], indent=1), flush=True)
        if not a.skip_montage:
            out["montage"] = montage_tiles(a.size, a.frame, a.concurrency, tmp)
            print(json.dumps(out["montage"], indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
