import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastsac.cli import main
from fastsac.io import write_tiff


def _spot_image(n=12, size=200, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = 1000 + rng.normal(0, 10, (size, size))
    pts = []
    while len(pts) < n:
        p = rng.uniform(15, size - 15, 2)
        if all(np.hypot(*(p - q)) > 15 for q in pts):
            pts.append(p)
    for x, y in pts:
        img += 300 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
    return img.astype(np.float32), np.array(pts)


@pytest.fixture
def batch(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    truths = {}
    for i in range(2):
        img, pts = _spot_image(seed=i)
        write_tiff(d / f"img{i}.tif", img, pixel_size_nm=0.0293)
        truths[f"img{i}"] = pts
    (d / "broken.tif").write_bytes(b"II*\x00garbage")
    return d, truths


def test_analyze_batch_with_bad_file(batch, tmp_path, capsys):
    d, truths = batch
    out = tmp_path / "out"
    rc = main(["analyze", str(d), "-o", str(out), "--detector", "classical"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "broken.tif" in err and "Traceback" not in err
    for stem, pts in truths.items():
        header = (out / stem / "atoms.csv").read_text().splitlines()[0].split(",")
        from fastsac.result import ATOM_COLUMNS

        assert header == ATOM_COLUMNS + ["species", "species_probability"]
        assert header[:7] == ["x_px", "y_px", "x_nm", "y_nm", "score", "amplitude", "sigma_px"]
        # split_probability (last) is empty (NaN) for atoms without a close partner
        rows = np.loadtxt(out / stem / "atoms.csv", delimiter=",", skiprows=1, ndmin=2,
                          usecols=range(len(ATOM_COLUMNS) - 1))
        p = rows[:, ATOM_COLUMNS.index("probability")]
        assert ((p > 0) & (p <= 1)).all()
        assert len(rows) == len(pts)
        np.testing.assert_allclose(rows[:, 2], rows[:, 0] * 0.0293, rtol=1e-4)
        s = json.loads((out / stem / "summary.json").read_text())
        assert s["n_atoms"] == len(pts)
        assert s["pixel_size_nm"] == pytest.approx(0.0293)
        assert s["vacuum_fraction"] == 0.0  # uniform support: no vacuum invented
        assert s["density_per_nm2"] == pytest.approx(len(pts) / (200 * 200 * 0.0293**2))
        assert s["multimer_fraction"] == 0.0 and s["n_monomers"] == len(pts)
        for png in ("overlay.png", "nn_histogram.png", "cluster_sizes.png"):
            assert (out / stem / png).read_bytes()[:4] == b"\x89PNG"
        assert s["species"]["names"] == ["x1.00"]  # one kind of spot: one intensity class
        clusters = (out / stem / "clusters.csv").read_text().splitlines()
        assert clusters[0].startswith("cluster_id,n_atoms,") and len(clusters) == len(pts) + 1
    lines = (out / "summary.csv").read_text().splitlines()
    assert len(lines) == 4 and any("broken" in ln and "error" in ln for ln in lines)
    assert not list(out.rglob("*.tmp*"))


def test_evaluate_json(batch, tmp_path, capsys):
    d, truths = batch
    labels = tmp_path / "labels"
    labels.mkdir()
    for stem, pts in truths.items():
        (labels / f"{stem}.csv").write_text(" ,X,Y\n" + "".join(
            f"{i},{x:.2f},{y:.2f}\n" for i, (x, y) in enumerate(pts, 1)))
    rc = main(["evaluate", "--images", str(d), "--labels", str(labels), "--detector",
               "classical", "--json"])
    assert rc == 0  # broken.tif has no label file, so it is not part of the evaluation
    out = json.loads(capsys.readouterr().out)
    assert out["f1"] == pytest.approx(1.0)
    assert out["tp"] == sum(len(p) for p in truths.values())
    assert set(out["per_image"]) == set(truths)


def test_entry_point_help():
    exe = shutil.which("fastsac")
    cmd = [exe] if exe else [sys.executable, "-m", "fastsac"]
    proc = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for name in ("analyze", "evaluate", "demo"):
        assert name in proc.stdout


def test_missing_detector_checkpoint(batch, tmp_path, capsys):
    d, _ = batch
    rc = main(["analyze", str(d / "img0.tif"), "-o", str(tmp_path / "o"), "--detector",
               str(tmp_path / "nope.ckpt")])
    assert rc == 2
    assert "nope.ckpt" in capsys.readouterr().err


def test_device_cuda_without_a_gpu_is_one_line(batch, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    d, _ = batch
    rc = main(["analyze", str(d / "img0.tif"), "-o", str(tmp_path / "o"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device cuda" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    # auto falls back to the C++ kernels and analyses the frame
    assert main(["analyze", str(d / "img0.tif"), "-o", str(tmp_path / "o2"), "--device", "auto"]) == 0
    assert (tmp_path / "o2" / "img0" / "atoms.csv").exists()


def test_all_vacuum_frame_is_one_clear_line(batch, tmp_path, capsys, monkeypatch):
    """A frame whose support mask holds no support gets one line naming it; the
    other frames are still analysed."""
    import dataclasses

    from fastsac import pipeline

    real = pipeline.find_support

    def no_support_for_img1(image, **kw):
        res = real(image, **kw)
        if float(np.asarray(image).sum()) == float(img1_sum):
            return dataclasses.replace(res, mask=np.zeros_like(res.mask), support_area_px=0.0,
                                       vacuum_fraction=1.0, has_vacuum=True)
        return res

    d, truths = batch
    from fastsac.io import read

    img1_sum = read(d / "img1.tif").data.sum()
    monkeypatch.setattr(pipeline, "find_support", no_support_for_img1)
    out = tmp_path / "out"
    rc = main(["analyze", str(d / "img0.tif"), str(d / "img1.tif"), "-o", str(out),
               "--detector", "classical"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "img1.tif" in err and "no support" in err and "Traceback" not in err
    assert (out / "img0" / "summary.json").exists() and not (out / "img1" / "summary.json").exists()


@pytest.mark.parametrize("command", ["analyze", "montage"])
def test_bad_elements_is_the_same_one_line_for_frames_and_montages(batch, tmp_path, capsys, command):
    d, _ = batch
    rc = main([command, str(d / "img0.tif"), "-o", str(tmp_path / "o"), "--elements", "Pt", "Xx"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastsac: --elements: unknown element 'Xx'; known:")
    assert not (tmp_path / "o" / "summary.json").exists()
