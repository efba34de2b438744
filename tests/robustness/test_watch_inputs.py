"""``fastsac watch`` with writers that pause, preallocate or lock (issue 16, part 6):
a frame is analysed once it stopped changing, re-analysed when it changes
(the new row supersedes the old one), and retried, never abandoned."""

from __future__ import annotations

import csv
import io
import json
import threading
import time

import numpy as np
import pytest
import tifffile

from fastsac.detectors import ClassicalDetector
from fastsac.errors import FastsacInputError
from fastsac.live import watch
from fastsac.pipeline import analyze

from fastsac_testdata import spots

PX = 0.0293
DET = ClassicalDetector(background_nm=None)


@pytest.fixture(scope="module")
def frame():
    return spots((256, 256), n=40, pairs=6, seed=31)[0]


def _tiff_bytes(img) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, img, resolution=(1 / PX, 1 / PX), imagej=True, metadata={"unit": "nm"})
    return buf.getvalue()


class _Watching:
    """watch() on a thread; collects frames and bad reports."""

    def __init__(self, folder, out, **kw):
        self.frames, self.bad = [], []
        self.stop = threading.Event()
        self.rep = None

        def run():
            self.rep = watch(folder, out, detector=DET, poll_s=0.05, overlay=False,
                             on_frame=self.frames.append,
                             on_bad=lambda p, r: self.bad.append((p.name, r)), stop=self.stop,
                             **kw)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_for(self, cond, timeout=60.0):
        t0 = time.monotonic()
        while not cond():
            assert time.monotonic() - t0 < timeout, "timed out"
            assert self.thread.is_alive() or cond()
            time.sleep(0.05)

    def close(self):
        self.stop.set()
        self.thread.join(60)
        return self.rep


def test_writer_pausing_longer_than_settle_is_analysed_when_complete(tmp_path, frame):
    src = tmp_path / "in"
    src.mkdir()
    data = _tiff_bytes(frame)
    target = src / "frame.tif"
    w = _Watching(src, tmp_path / "out", settle_s=0.3, retry_s=60)
    try:
        target.write_bytes(data[: int(len(data) * 0.4)])
        w.wait_for(lambda: w.bad)                     # reported once, not abandoned
        with open(target, "ab") as fh:                # the writer resumes
            fh.write(data[int(len(data) * 0.4):])
        w.wait_for(lambda: w.frames)
    finally:
        rep = w.close()
    assert len(w.bad) == 1 and w.bad[0][0] == "frame.tif"
    assert rep.processed == ["frame.tif"] and rep.bad == {}
    ref = analyze(frame.astype(np.float32), detector=DET, pixel_size_nm=PX)
    assert len(w.frames[0].detections) == ref.summary["n_atoms"]


def test_preallocated_file_is_reanalysed_when_filled(tmp_path, frame):
    src = tmp_path / "in"
    src.mkdir()
    half = frame.copy()
    half[128:] = 0                      # preallocated: full size, second half zeros
    full_bytes, half_bytes = _tiff_bytes(frame), _tiff_bytes(half)
    assert len(full_bytes) == len(half_bytes)
    target = src / "frame.tif"
    out = tmp_path / "out"
    w = _Watching(src, out, settle_s=0.3)
    try:
        target.write_bytes(half_bytes)
        w.wait_for(lambda: len(w.frames) == 1)
        time.sleep(0.05)                # a new mtime even on coarse clocks
        with open(target, "r+b") as fh:  # filled in place: same size, new mtime
            fh.write(full_bytes)
        w.wait_for(lambda: len(w.frames) == 2)
    finally:
        rep = w.close()
    ref = analyze(frame.astype(np.float32), detector=DET, pixel_size_nm=PX)
    assert len(w.frames[1].detections) == ref.summary["n_atoms"]
    assert len(w.frames[0].detections) != ref.summary["n_atoms"]
    assert rep.superseded == [0]
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert [r["supersedes"] for r in rows] == ["", "0"]
    stats = json.loads((out / "stats.json").read_text())
    # the running statistics hold the latest version only
    assert stats["n_frames"] == 1 and stats["n_atoms"] == ref.summary["n_atoms"]
    assert stats["nn_dist_nm"]["n"] == ref.summary["n_atoms"]


def test_temporarily_unreadable_file_is_retried(tmp_path, frame, monkeypatch):
    import fastsac.io

    src = tmp_path / "in"
    src.mkdir()
    (src / "locked.tif").write_bytes(_tiff_bytes(frame))
    real = fastsac.io.read
    calls = []

    def locked_twice(path, **kw):
        calls.append(path)
        if len(calls) <= 2:
            raise FastsacInputError(path, "cannot be opened (Permission denied)")
        return real(path, **kw)

    monkeypatch.setattr(fastsac.io, "read", locked_twice)
    w = _Watching(src, tmp_path / "out", settle_s=0.1, retry_s=0.3)
    try:
        w.wait_for(lambda: w.frames)
    finally:
        rep = w.close()
    assert len(calls) == 3
    assert len(w.bad) == 1 and "Permission denied" in w.bad[0][1]  # reported once
    assert rep.processed == ["locked.tif"] and rep.bad == {}


def test_running_stats_after_retract_equal_the_remaining_frames(frame):
    from fastsac.live import LiveSession

    frames = [spots((192, 192), n=30, pairs=5, seed=s)[0] for s in (1, 2, 3)]
    s = LiveSession(detector=DET, pixel_size_nm=PX, support_mask=False)
    for f in frames:
        s.process(f)
    s.retract(1)
    ref = LiveSession(detector=DET, pixel_size_nm=PX, support_mask=False)
    for f in (frames[0], frames[2]):
        ref.process(f)
    a, b = s.stats(), ref.stats()
    assert a["n_atoms"] == b["n_atoms"] and a["n_frames"] == 2
    assert a["nn_hist"] == b["nn_hist"]
    for k in ("mean", "median", "std"):
        assert a["nn_dist_nm"][k] == pytest.approx(b["nn_dist_nm"][k], rel=1e-9)
