"""Simulator outputs: calibrated files, truth CSV/Parquet, CLI, montage seams."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac import read, read_points
from fastsac.evaluate import match_points
from fastsac.synth import simulate, write_montage


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "float32"])
def test_cli_writes_calibrated_images_and_truth(tmp_path, dtype):
    from fastsac.cli import main

    rc = main(["simulate", "-o", str(tmp_path), "--size", "128", "--count", "2", "--seed", "5",
               "--pattern", "clustered", "--dimer-fraction", "0.3", "--dtype", dtype])
    assert rc == 0
    for seed in (5, 6):
        m = read(tmp_path / f"synth_{seed:04d}.tif")
        assert m.pixel_size_nm == pytest.approx(0.0293, rel=1e-6)
        assert m.metadata["dtype"] == dtype
        img, truth = simulate(size=128, seed=seed, pattern="clustered", dimer_fraction=0.3,
                              dtype=dtype)
        assert np.array_equal(m.data, img.astype(np.float32))
        pts = read_points(tmp_path / f"synth_{seed:04d}.csv")
        assert np.allclose(pts, truth.xy, atol=1e-4)
        r = match_points(pts, truth.xy, tolerance_px=1.0)
        assert r.f1 == 1.0 or len(truth) == 0
    assert (tmp_path / "simulation.json").exists()


def test_cli_bad_parameter_exits_2(tmp_path, capsys):
    from fastsac.cli import main

    assert main(["simulate", "-o", str(tmp_path), "--dose", "-3"]) == 2
    err = capsys.readouterr().err
    assert "dose" in err and len(err.strip().splitlines()) == 1


def test_truth_csv_columns(tmp_path):
    _, t = simulate(size=128, seed=2, elements=("Pt", "Pd"))
    t.write_csv(tmp_path / "t.csv")
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert header == "X,Y,element,cluster_id,cluster_size,parent_id"
    df = t.to_frame()
    assert set(df.element) <= {"Pt", "Pd"} and len(df) == len(t)


def test_montage_equals_whole_image_and_is_seamless(tmp_path):
    import pandas as pd
    import zarr

    kw = dict(seed=4, noise=False, dtype="float32", vacuum="holes", loading_per_nm2=0.5)
    r = write_montage(tmp_path / "m", size=384, tile=128, formats=("tiff", "zarr"), progress=False,
                      **kw)
    whole, truth = simulate(size=384, **kw)
    m = read(r.paths["tiff"])
    assert m.pixel_size_nm == pytest.approx(0.0293, rel=1e-6)
    assert np.array_equal(m.data, whole)
    assert np.array_equal(zarr.open_array(str(r.paths["zarr"]))[:], whole)
    t = pd.read_parquet(r.paths["truth"])
    assert len(t) == len(truth) == r.n_atoms
    assert np.allclose(t[["X", "Y"]].to_numpy(), truth.xy)


def test_noisy_montage_has_no_seam_step(tmp_path):
    r = write_montage(tmp_path / "n.tif", size=512, tile=128, progress=False, seed=1,
                      vacuum="none", loading_per_nm2=0.0, dtype="uint16")
    img = read(r.paths["tiff"]).data.astype(np.float64)
    assert read(r.paths["tiff"]).metadata["dtype"] == "uint16"
    # column-to-column steps across tile borders look like steps anywhere else
    step = np.abs(np.diff(img, axis=1)).mean(axis=0)
    border = step[127::128][:3]
    inner = np.delete(step, np.r_[127:511:128])
    assert border.max() < inner.mean() + 4 * inner.std()
    rstep = np.abs(np.diff(img, axis=0)).mean(axis=1)
    assert rstep[127::128][:3].max() < np.delete(rstep, np.r_[127:511:128]).mean() * 1.3


def test_montage_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="suffix|.tif"):
        write_montage(tmp_path / "m.png", size=64, tile=32, progress=False)
    with pytest.raises(ValueError, match="tile"):
        write_montage(tmp_path / "m.tif", size=64, tile=30, progress=False)
    with pytest.raises(ValueError, match="formats"):
        write_montage(tmp_path / "m", size=64, tile=32, formats=("png",), progress=False)
