"""Montage inputs that are incomplete or hostile (issue 16, part 7): missing
chunks, a corrupt chunk, a truncated BigTIFF tile, NaN in a Zarr, an empty Zarr
claiming 10¹² px; and the Dask/scratch options checked before any work (part 8)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from fastsac.cli import main
from fastsac.errors import FastsacInputError
from fastsac.montage import analyze_montage

from fastsac_testdata import spots

PX = 0.0293
zarr = pytest.importorskip("zarr")


def _zarr(path, img, chunk=256):
    z = zarr.create_array(path, shape=img.shape, chunks=(chunk, chunk), dtype=img.dtype,
                          fill_value=0)
    z[:] = img
    z.attrs["pixel_size_nm"] = PX
    return path


@pytest.fixture(scope="module")
def image():
    return spots((512, 512), n=120, pairs=10, seed=4)[0]


@pytest.fixture
def mz(tmp_path, image):
    return _zarr(tmp_path / "m.zarr", image)


def _one_line(err, *frags):
    lines = [ln for ln in err.strip().splitlines() if ln and "%|" not in ln]
    assert "Traceback" not in err and len(lines) == 1, lines
    for f in frags:
        assert f in lines[0], (f, lines[0])


def test_missing_chunk_is_an_error_naming_it(mz, tmp_path, capsys):
    (mz / "c" / "1" / "0").unlink()  # rows 256:512, columns 0:256
    with pytest.raises(FastsacInputError, match=r"1 of 4 chunks are missing.*chunk \(1, 0\) = "
                                                r"rows 256:512, columns 0:256"):
        analyze_montage(mz, progress=False)
    rc = main(["montage", str(mz), "-o", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "m.zarr", "missing", "--missing-chunks vacuum")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_missing_chunk_as_vacuum_is_reported(mz, image, tmp_path, capsys):
    full = analyze_montage(mz, progress=False)
    (mz / "c" / "1" / "0").unlink()
    rc = main(["montage", str(mz), "-o", str(tmp_path / "o"), "--no-progress",
               "--missing-chunks", "vacuum"])
    assert rc == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["missing_chunks"]["n"] == 1 and s["missing_chunks"]["treated_as"] == "vacuum"
    assert s["missing_chunks"]["regions_yyxx"] == [[256, 512, 0, 256]]
    # the missing quarter is vacuum: at least a quarter of the montage is off support,
    # and no atom counted on support lies in it
    assert s["support"]["vacuum_fraction"] >= 0.25 - 1e-9
    res = analyze_montage(mz, progress=False, missing_chunks="vacuum")
    xy, ins = res.detections.xy, res.in_support()
    hole = (xy[:, 1] >= 256) & (xy[:, 0] < 256)
    assert not ins[hole].any()
    assert res.statistics["n_atoms_in_support"] < full.statistics["n_atoms_in_support"]


def test_corrupt_chunk_names_the_region(mz, tmp_path, capsys):
    (mz / "c" / "0" / "1").write_bytes(b"not a zstd frame")
    with pytest.raises(FastsacInputError, match="rows .*columns .*corrupt or truncated"):
        analyze_montage(mz, progress=False)
    assert main(["montage", str(mz), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    _one_line(capsys.readouterr().err, "m.zarr", "corrupt")


def test_nan_region_is_refused_like_a_frame(tmp_path, image, capsys):
    img = image.astype(np.float32)
    img[300:310, 40:50] = np.nan
    mz = _zarr(tmp_path / "nan.zarr", img)
    assert main(["montage", str(mz), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    _one_line(capsys.readouterr().err, "nan.zarr", "NaN/inf", "rows")


def test_truncated_bigtiff_tile(tmp_path, image, capsys):
    import tifffile

    p = tmp_path / "m.tif"
    tifffile.imwrite(p, image, bigtiff=True, tile=(128, 128), compression="zlib",
                     resolution=(1e7 / PX, 1e7 / PX), resolutionunit="CENTIMETER")
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.6)])
    assert main(["montage", str(p), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    _one_line(capsys.readouterr().err, "m.tif")


def test_empty_zarr_claiming_1e12_px(tmp_path, capsys):
    p = tmp_path / "huge.zarr"
    zarr.create_array(p, shape=(1_000_000, 1_000_000), chunks=(4096, 4096), dtype="uint16",
                      fill_value=0)
    assert main(["montage", str(p), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    _one_line(capsys.readouterr().err, "huge.zarr", "1000000×1000000", "--max-pixels")
    # confirmed size: still refused at once, since no chunk holds data
    assert main(["montage", str(p), "-o", str(tmp_path / "o"), "--no-progress",
                 "--max-pixels", str(10**13)]) == 2
    _one_line(capsys.readouterr().err, "huge.zarr", "no data")


def test_missing_scratch_folder_is_created(mz, tmp_path):
    scratch = tmp_path / "not" / "yet"
    assert main(["montage", str(mz), "-o", str(tmp_path / "o"), "--no-progress",
                 "--scratch", str(scratch)]) == 0
    assert scratch.is_dir() and not list(scratch.iterdir())  # the DoG scratch is removed


def test_scratch_that_cannot_be_created(mz, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["montage", str(mz), "-o", str(tmp_path / "o"), "--scratch",
                 str(tmp_path / "f" / "s")]) == 2
    _one_line(capsys.readouterr().err, "--scratch")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["malformed", "file", "bad_file", "unreachable"])
def test_scheduler_problems_are_one_line_before_work(mz, tmp_path, capsys, kind):
    import time

    if kind == "malformed":
        arg, frag = "tcp://no port here", "expected a scheduler address"
    elif kind == "file":
        (tmp_path / "sched.json").write_text(json.dumps({"address": f"tcp://127.0.0.1:{_free_port()}"}))
        arg, frag = str(tmp_path / "sched.json"), "cannot connect"
    elif kind == "bad_file":
        (tmp_path / "sched.json").write_text("{not json")
        arg, frag = str(tmp_path / "sched.json"), "scheduler file"
    else:
        arg, frag = f"tcp://127.0.0.1:{_free_port()}", "cannot connect"
    t0 = time.monotonic()
    assert main(["montage", str(mz), "-o", str(tmp_path / "o"), "--scheduler", arg]) == 2
    assert time.monotonic() - t0 < 20
    _one_line(capsys.readouterr().err, "--scheduler", frag)
    assert not (tmp_path / "o" / "summary.json").exists()
