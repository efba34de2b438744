"""Live analysis: per-frame results, running = pooled statistics, folder watching
(half-written and .tmp frames are never read, corrupt frames are skipped)."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import numpy as np
import pytest
import tifffile

from fastsac.detectors import ClassicalDetector
from fastsac.live import NN_BINS_NM, FrameWatcher, LiveSession, watch
from fastsac.pipeline import analyze

from fastsac_testdata import spots

PX = 0.0293
DET = ClassicalDetector(background_nm=None)


@pytest.fixture(scope="module")
def frames():
    return [spots((256, 256), n=40 + 10 * k, pairs=8, seed=20 + k)[0] for k in range(3)]


def _tiff_bytes(img) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, img, resolution=(1 / PX, 1 / PX), imagej=True, metadata={"unit": "nm"})
    return buf.getvalue()


def test_session_results_and_latency(frames):
    s = LiveSession(detector=DET, pixel_size_nm=PX)
    r = s.process(frames[0], name="a")
    ref = analyze(frames[0].astype(np.float32), detector=DET, pixel_size_nm=PX)
    assert r.index == 0 and r.name == "a"
    np.testing.assert_array_equal(r.detections.xy, ref.detections.xy)
    np.testing.assert_array_equal(r.nn_dist, ref.nn_dist)
    assert r.stats["n_atoms"] == ref.summary["n_atoms"] > 20
    assert r.latency_s > 0 and r.timings["total"] == r.latency_s
    assert s.latencies == [r.latency_s]
    from fastsac.live import _FRAME_FIELDS

    assert list(s.frames[0]) == _FRAME_FIELDS  # the columns of watch's frames.csv


def test_running_stats_equal_pooled_stats(frames):
    s = LiveSession(detector=DET, pixel_size_nm=PX)
    res = [s.process(f) for f in frames]
    refs = [analyze(f.astype(np.float32), detector=DET, pixel_size_nm=PX) for f in frames]
    st = s.stats()
    n = sum(r.summary["n_atoms"] for r in refs)
    mult = sum(r.summary["n_atoms_multimer"] for r in refs)
    n_sup = sum(r.summary["n_atoms_in_support"] for r in refs)
    area = sum(r.summary["support_area_nm2"] for r in refs)
    nn = np.concatenate([r.nn_dist[np.isfinite(r.nn_dist)] for r in refs])
    assert st["n_frames"] == 3 and st["n_atoms"] == n
    assert st["multimer_atoms"] == mult > 0
    assert st["multimer_fraction"] == pytest.approx(mult / n, rel=1e-12)
    assert st["density_per_nm2"] == pytest.approx(n_sup / area, rel=1e-12)
    assert st["nn_dist_nm"]["median"] == pytest.approx(np.median(nn), rel=1e-12)
    assert st["nn_dist_nm"]["mean"] == pytest.approx(nn.mean(), rel=1e-12)
    assert st["nn_dist_nm"]["std"] == pytest.approx(nn.std(), rel=1e-10)
    hist = np.histogram(np.minimum(nn, NN_BINS_NM[-1] - 1e-12), bins=NN_BINS_NM)[0]
    assert st["nn_hist"]["counts"] == hist.tolist()
    assert sum(st["nn_hist"]["counts"]) == len(nn)
    # order of frames does not matter for pooled statistics
    s2 = LiveSession(detector=DET, pixel_size_nm=PX)
    for f in frames[::-1]:
        s2.process(f)
    assert s2.stats()["nn_hist"] == st["nn_hist"]
    assert len(res) == 3


def test_half_written_frame_is_not_read_until_complete(tmp_path, frames):
    data = _tiff_bytes(frames[1])
    target = tmp_path / "frame_000.tif"
    done = threading.Event()

    def slow_writer():
        with open(target, "wb") as fh:
            for k in range(0, len(data), len(data) // 8):
                fh.write(data[k:k + len(data) // 8])
                fh.flush()
                time.sleep(0.08)  # shorter than a poll: size changes between polls
        done.set()

    seen_sizes = []

    def on_frame(r):
        seen_sizes.append(os.path.getsize(target))

    th = threading.Thread(target=slow_writer)
    th.start()
    rep = watch(tmp_path, tmp_path / "out", detector=DET, poll_s=0.15, max_frames=1,
                settle_s=5.0, overlay=False, on_frame=on_frame)
    th.join()
    assert done.is_set()
    assert rep.bad == {} and rep.processed == ["frame_000.tif"]
    assert seen_sizes == [len(data)]
    ref = analyze(frames[1].astype(np.float32), detector=DET, pixel_size_nm=PX)
    table = (tmp_path / "out" / "atoms.csv").read_text().splitlines()
    assert len(table) - 1 == ref.summary["n_atoms"]


def test_tmp_then_rename_convention(tmp_path, frames):
    w = FrameWatcher(tmp_path, settle_s=0)
    (tmp_path / "a.tif.tmp").write_bytes(_tiff_bytes(frames[0]))
    (tmp_path / ".b.tif").write_bytes(_tiff_bytes(frames[0]))
    assert w.poll() == [] and w.poll() == []  # never offered, however stable
    os.replace(tmp_path / "a.tif.tmp", tmp_path / "a.tif")
    assert w.poll() == [tmp_path / "a.tif"]   # renamed by its writer: complete at once
    w.mark_done(tmp_path / "a.tif")
    os.replace(tmp_path / ".b.tif", tmp_path / "b.tif")
    assert w.poll() == [tmp_path / "b.tif"]   # dot-file convention too
    w.mark_done(tmp_path / "b.tif")
    # a file that appears without a temporary predecessor waits for a second poll
    (tmp_path / "c.tif").write_bytes(_tiff_bytes(frames[1]))
    assert w.poll() == []                     # first sighting
    assert w.poll() == [tmp_path / "c.tif"]   # stable across two polls
    w.mark_done(tmp_path / "c.tif")
    # a temporary file still there next to its final name: not a finished rename
    (tmp_path / "d.tif.part").write_bytes(b"x")
    assert w.poll() == []
    (tmp_path / "d.tif").write_bytes(_tiff_bytes(frames[1]))
    assert w.poll() == []                     # d.tif.part still present: wait as usual


def test_corrupt_frame_is_reported_and_skipped(tmp_path, frames):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a_bad.tif").write_bytes(b"II*\x00garbage" * 10)
    (src / "b_good.tif").write_bytes(_tiff_bytes(frames[0]))
    (src / "c_good.tif").write_bytes(_tiff_bytes(frames[2]))
    bad = []
    rep = watch(src, tmp_path / "out", detector=DET, poll_s=0.05, once=True, settle_s=0.1,
                on_bad=lambda p, reason: bad.append((p.name, reason)))
    assert sorted(rep.processed) == ["b_good.tif", "c_good.tif"]
    assert list(rep.bad) == ["a_bad.tif"] and bad[0][0] == "a_bad.tif"
    assert bad[0][1] == rep.bad["a_bad.tif"] and len(bad[0][1]) > 5
    out = tmp_path / "out"
    rows = (out / "atoms.csv").read_text().splitlines()
    assert rows[0].startswith("frame,image,x_px,y_px")
    frames_col = {r.split(",")[0] for r in rows[1:]}
    assert frames_col == {"0", "1"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_frames"] == 2 and stats["n_atoms"] == len(rows) - 1
    # frames.csv: one row per analysed frame, its atom count matching atoms.csv
    from fastsac.live import _FRAME_FIELDS

    ftab = (out / "frames.csv").read_text().splitlines()
    assert ftab[0].split(",") == _FRAME_FIELDS and len(ftab) == 3
    per_frame = {r.split(",")[0]: int(r.split(",")[2]) for r in ftab[1:]}
    assert per_frame == {f: sum(1 for r in rows[1:] if r.split(",")[0] == f) for f in ("0", "1")}
    page = (out / "index.html").read_text()
    assert '<meta http-equiv="refresh"' in page
    assert "data:image/png;base64," in page and "<svg" in page
    assert (out / "overlay.png").stat().st_size > 1000
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_max_frames_and_stop(tmp_path, frames):
    for k, f in enumerate(frames):
        (tmp_path / f"f{k}.tif").write_bytes(_tiff_bytes(f))
    rep = watch(tmp_path, tmp_path / "o", detector=DET, poll_s=0.05, max_frames=2, overlay=False)
    assert len(rep.processed) == 2
    stop = threading.Event()
    stop.set()
    rep = watch(tmp_path, tmp_path / "o2", detector=DET, poll_s=0.05, stop=stop)
    assert rep.processed == []


def test_cli_watch_once(tmp_path, frames, capsys):
    from fastsac.cli import main

    (tmp_path / "good.tif").write_bytes(_tiff_bytes(frames[0]))
    (tmp_path / "zz.tif").write_bytes(b"II*\x00garbage" * 10)  # tifffile would log too
    rc = main(["watch", str(tmp_path), "-o", str(tmp_path / "out"), "--once", "--poll", "0.05",
               "--settle", "0.1", "--detector", "classical", "--no-overlay"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "zz.tif" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "out" / "atoms.csv").exists()


def test_ctrl_c_stops_cleanly(tmp_path, frames):
    for k, f in enumerate(frames):
        (tmp_path / f"f{k}.tif").write_bytes(_tiff_bytes(f))

    def interrupt(r):
        raise KeyboardInterrupt  # as if Ctrl-C arrived after the first frame

    rep = watch(tmp_path, tmp_path / "o", detector=DET, poll_s=0.05, overlay=False,
                on_frame=interrupt)
    assert rep.interrupted and len(rep.processed) == 1
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["n_frames"] == 1  # outputs are complete and consistent
    rows = (tmp_path / "o" / "atoms.csv").read_text().splitlines()
    assert len(rows) - 1 == stats["n_atoms"]


def test_running_nn_statistics_equal_pooled_numpy(rng):
    """The running NN statistics are updated per frame in O(new atoms); after many
    frames (empty ones, ties, values past the last bin) they equal numpy on the pool."""
    s = LiveSession(detector=DET, pixel_size_nm=PX)
    chunks = []
    for i in range(300):
        k = int(rng.integers(0, 40)) if i % 7 else 0
        v = rng.gamma(3.0, 0.4, k)
        if i % 5 == 0 and k:
            v[: k // 2] = v[0]  # ties
        chunks.append(v)
        s._add_nn(v)
    pooled = np.concatenate(chunks)
    st = s.stats()["nn_dist_nm"]
    assert st["n"] == len(pooled)
    assert st["median"] == np.median(pooled)
    assert st["mean"] == pytest.approx(pooled.mean(), rel=1e-12)
    assert st["std"] == pytest.approx(pooled.std(), rel=1e-10)
    hist = np.histogram(np.minimum(pooled, NN_BINS_NM[-1] - 1e-12), bins=NN_BINS_NM)[0]
    assert s.stats()["nn_hist"]["counts"] == hist.tolist()
    empty = LiveSession(detector=DET, pixel_size_nm=PX).stats()["nn_dist_nm"]
    assert empty == {"mean": None, "median": None, "std": None, "n": 0}


def test_tables_quote_file_names_with_commas(tmp_path, frames):
    import csv

    src = tmp_path / "in"
    src.mkdir()
    (src / 'run 1, tilt "0".tif').write_bytes(_tiff_bytes(frames[0]))
    rep = watch(src, tmp_path / "out", detector=DET, poll_s=0.05, once=True, settle_s=0.1,
                overlay=False)
    assert len(rep.processed) == 1
    with open(tmp_path / "out" / "atoms.csv", newline="") as fh:
        atoms = list(csv.DictReader(fh))
    with open(tmp_path / "out" / "frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(atoms) > 20 and {a["image"] for a in atoms} == {'run 1, tilt "0"'}
    assert rows[0]["name"] == 'run 1, tilt "0"' and int(rows[0]["n_atoms"]) == len(atoms)


def test_background_overlay_renders_the_latest_frame_and_drains():
    import time as _time

    from fastsac.live import _LatestOnly

    done = []
    gate = threading.Event()

    def slow(k):
        gate.wait(5)
        _time.sleep(0.01)
        done.append(k)

    r = _LatestOnly(slow)
    for k in range(20):  # all submitted while the first job is blocked
        r.submit(k)
    gate.set()
    r.close()
    assert done[-1] == 19 and len(done) <= 3 and done == sorted(done)

    failures = _LatestOnly(lambda: 1 / 0)  # errors are logged, the thread survives
    failures.submit()
    failures.submit()
    failures.close()


def test_warm_up_leaves_the_session_untouched(frames):
    s = LiveSession(detector=DET, pixel_size_nm=PX)
    assert s.warm_up(size=128) > 0
    assert s.frames == [] and s.latencies == [] and s.stats()["n_frames"] == 0
    assert s.stats()["nn_dist_nm"]["n"] == 0
    r = s.process(frames[0])
    assert r.index == 0 and s.stats()["n_frames"] == 1
