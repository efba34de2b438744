"""The montage support (vacuum) mask: streamed binning is bit-identical to the
whole image's, and montage statistics with the binned mask equal
``pipeline.analyze`` of the whole image (flags, areas, density, Clark–Evans)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastsac.montage import (_bin_block, analyze_montage, chunk_bin, mask_bin_factor,
                             montage_support_mask, open_montage, read_parquet)
from fastsac.pipeline import analyze

from .test_montage import _assert_same_summary  # summaries compared exactly (float rounding aside)

PX = 0.0293


@pytest.fixture(scope="module")
def vac_image():
    from fastsac.synth import simulate

    img, truth = simulate(size=768, seed=2, vacuum="holes", vacuum_fraction=0.3,
                          loading_per_nm2=0.8, dimer_fraction=0.2, dtype="uint16")
    # odd sizes: the last row and column of 2×2 blocks are ragged
    return img[:701, :731]


@pytest.fixture(scope="module")
def whole(vac_image):
    return analyze(vac_image, detector="classical", pixel_size_nm=PX)


@pytest.fixture(scope="module")
def sources(vac_image, tmp_path_factory):
    import zarr

    from fastsac.io import write_tiff

    d = tmp_path_factory.mktemp("vac")
    tif = d / "m.tif"
    write_tiff(tif, vac_image, pixel_size_nm=PX, bigtiff=True, tile=(128, 128))
    z = zarr.create_array(str(d / "m.zarr"), shape=vac_image.shape, chunks=(100, 100),
                          dtype=vac_image.dtype, attributes={"pixel_size_nm": PX})
    z[:] = vac_image
    return {"tiff": tif, "zarr": d / "m.zarr"}


def test_streamed_binning_is_bit_identical(vac_image, sources):
    src = open_montage(sources["zarr"])
    f = 2
    img = vac_image.astype(np.float32)
    # what support_mask bins the whole image into (and, independently, a reshaped mean)
    from fastsac.support.mask import bin_mean

    h, w = img.shape
    ref = bin_mean(img, f)
    hb, wb = -(-h // f), -(-w // f)
    padded = np.pad(img, ((0, hb * f - h), (0, wb * f - w)), mode="edge")
    np.testing.assert_array_equal(
        ref, padded.reshape(hb, f, wb, f).mean(axis=(1, 3), dtype=np.float64).astype(np.float32))
    got = np.empty_like(ref)
    step = 236  # chunk edges on the block grid; the last ones ragged
    for y in range(0, h, step):
        for x in range(0, w, step):
            b = chunk_bin(src, (y, min(y + step, h), x, min(x + step, w)), f)
            got[y // f:y // f + b.shape[0], x // f:x // f + b.shape[1]] = b
    assert got.tobytes() == ref.tobytes()
    assert _bin_block(img, f).tobytes() == ref.tobytes()


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_montage_with_mask_equals_whole_image(whole, sources, vac_image, kind):
    ws = whole.summary
    sup = ws["support"]
    assert sup["has_vacuum"] and 0.15 < sup["vacuum_fraction"] < 0.5  # the test means something
    w_flags = whole.in_support()
    assert ws["n_atoms"] > 150 and 0 < (w_flags == 0).sum()  # detections on vacuum: flagged
    # tile 237: divides neither the image nor is a multiple of the bin factor 2
    # (the TIFF's rational resolution tag holds 0.0293 only to 1e-11: use the exact value)
    res = analyze_montage(sources[kind], detector="classical", tile=237, pixel_size_nm=PX,
                          progress=False)
    s = res.statistics
    assert res.support_bin == 2 and res.support.mask.shape == (351, 366)
    assert s["support"] == sup  # areas, vacuum fraction, contrast, texture: bit-equal
    # the binned mask, expanded, is the whole image's mask
    full = np.repeat(np.repeat(res.support.mask, 2, 0), 2, 1)[:701, :731]
    np.testing.assert_array_equal(full, whole.support)
    np.testing.assert_array_equal(res.in_support(), w_flags)
    assert len(res.detections) == len(whole.detections)
    np.testing.assert_allclose(res.detections.xy, whole.detections.xy, atol=1e-9)
    np.testing.assert_allclose(res.nn_dist, whole.nn_dist, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(res.cluster_id, whole.cluster_id)
    assert s["n_atoms_in_support"] == ws["n_atoms_in_support"] == int(w_flags.sum())
    assert s["support_area_px2"] == ws["support_area_px2"] == sup["support_area_px2"]
    assert s["density_per_nm2"] == pytest.approx(ws["density_per_nm2"], rel=1e-12)
    assert s["ce_support_correction"] == "monte_carlo"
    _assert_same_summary(s, ws)  # every key incl. the Monte Carlo Clark–Evans in the support


def test_donnelly_on_the_binned_mask_equals_whole_image(vac_image, sources):
    sp = {"mask_correction": "donnelly"}
    ref = analyze(vac_image, detector="classical", pixel_size_nm=PX, stats_params=sp).summary
    got = analyze_montage(sources["tiff"], detector="classical", tile=300, pixel_size_nm=PX,
                          progress=False, stats_params=sp).statistics
    assert got["ce_support_correction"] == "donnelly"
    _assert_same_summary(got, ref)


def test_dask_runner_gives_identical_results(sources):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    from fastsac.dask_runner import DaskRunner

    ref = analyze_montage(sources["tiff"], detector="classical", tile=237, progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        got = analyze_montage(sources["tiff"], detector="classical", tile=237, progress=False,
                              runner=DaskRunner(client, progress=False))
    assert got.params["runner"] == "dask"
    np.testing.assert_array_equal(got.support.mask, ref.support.mask)
    np.testing.assert_array_equal(got.in_support(), ref.in_support())
    drop = ("timings_s", "montage")
    assert ({k: v for k, v in got.statistics.items() if k not in drop}
            == {k: v for k, v in ref.statistics.items() if k not in drop})


def test_bin_factor_is_raised_to_fit_the_cap(vac_image, whole):
    h, w = vac_image.shape
    assert mask_bin_factor((h, w), pixel_size_nm=PX) == 2
    cap = -(-h // 4) * -(-w // 4)  # 3x does not fit yet, 4x does
    assert mask_bin_factor((h, w), pixel_size_nm=PX, max_binned_px=cap) == 4
    assert mask_bin_factor((h, w), pixel_size_nm=PX, max_binned_px=cap - 1) == 5
    assert mask_bin_factor((15, 40), pixel_size_nm=PX) == 1  # as support_mask: < 8f px
    m, f = montage_support_mask(vac_image, pixel_size_nm=PX, max_binned_px=cap, progress=False)
    assert f == 4 and m.params["bin_factor"] == 4 and m.mask.shape == (176, 183)
    ref = whole.summary["support"]
    assert m.has_vacuum
    assert m.vacuum_fraction == pytest.approx(ref["vacuum_fraction"], abs=0.02)
    # area = the expanded mask's pixel count (ragged blocks at their true size)
    full = np.repeat(np.repeat(m.mask, 4, 0), 4, 1)[:h, :w]
    assert m.support_area_px == full.sum()
    assert m.support_area_nm2 == pytest.approx(full.sum() * PX**2)
    agree = (full == whole.support).mean()
    assert agree > 0.97
    res = analyze_montage(vac_image, detector="classical", tile=256, pixel_size_nm=PX,
                          progress=False, mask_params={"max_binned_px": cap},
                          stats_params={"mask_correction": "donnelly"})
    s = res.statistics
    assert res.support_bin == 4
    # a coarser edge moves only atoms within a few px of it
    assert (res.in_support() == whole.in_support()).mean() >= 0.95
    assert s["n_atoms_in_support"] == pytest.approx(whole.summary["n_atoms_in_support"], rel=0.05)
    assert s["density_per_nm2"] == pytest.approx(whole.summary["density_per_nm2"], rel=0.05)


def test_no_mask_is_the_whole_area(vac_image):
    res = analyze_montage(vac_image, detector="classical", tile=256, pixel_size_nm=PX,
                          progress=False, support_mask=False)
    s = res.statistics
    assert s["support"] is None and res.support is None
    assert s["vacuum_fraction"] == 0.0 and (res.in_support() == 1).all()


def test_cli_writes_mask_png_and_support_fields(tmp_path, vac_image, whole):
    from PIL import Image

    from fastsac.cli import main

    np.save(tmp_path / "m.npy", vac_image)
    out = tmp_path / "out"
    args = ["montage", str(tmp_path / "m.npy"), "-o", str(out), "--tile", "300",
            "--detector", "classical", "--pixel-size", str(PX), "--no-progress"]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    ref = whole.summary["support"]
    assert s["support"]["has_vacuum"] is True
    assert s["support"]["vacuum_fraction"] == ref["vacuum_fraction"]
    assert s["support_area_nm2"] == pytest.approx(ref["support_area_nm2"], rel=1e-12)
    png = np.asarray(Image.open(out / "support_mask.png"))
    assert png.shape == (351, 366) and set(np.unique(png)) == {0, 255}
    full = np.repeat(np.repeat(png == 255, 2, 0), 2, 1)[:701, :731]
    np.testing.assert_array_equal(full, whole.support)
    cols, _ = read_parquet(out / "atoms.parquet")
    np.testing.assert_array_equal(cols["in_support"], whole.in_support())
    assert main(args + ["--no-support-mask"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["support"] is None and s["vacuum_fraction"] == 0.0
    assert not (out / "support_mask.png").exists()
    cols, _ = read_parquet(out / "atoms.parquet")
    assert (cols["in_support"] == 1).all()


def test_folder_mode_mask_on_the_binned_mosaic(tmp_path, vac_image):
    import tifffile

    from fastsac.cli import main
    from fastsac.montage import analyze_frames

    img = vac_image[:640, :640]
    rows = []
    for y in (0, 256):
        for x in (0, 256):
            tifffile.imwrite(tmp_path / f"f{y}_{x}.tif", img[y:y + 384, x:x + 384])
            rows.append(f"f{y}_{x}.tif,{x},{y}")
    pos = tmp_path / "pos.csv"
    pos.write_text("file,x_px,y_px\n" + "\n".join(rows) + "\n")
    ref = analyze(img, detector="classical", pixel_size_nm=PX)
    res = analyze_frames(tmp_path, pos, detector="classical", pixel_size_nm=PX, progress=False,
                         stats_params={"mask_correction": "donnelly"})
    s, r = res.statistics, ref.summary
    assert res.support_bin == 2 and s["support"]["has_vacuum"]
    # frames on the block grid, overlaps averaged: the mosaic is the image's binning
    assert s["support"]["vacuum_fraction"] == r["support"]["vacuum_fraction"] > 0.15
    np.testing.assert_array_equal(np.repeat(np.repeat(res.support.mask, 2, 0), 2, 1), ref.support)
    assert s["n_atoms_in_support"] == pytest.approx(r["n_atoms_in_support"], abs=3)
    assert s["density_per_nm2"] == pytest.approx(r["density_per_nm2"], rel=0.03)
    # a gap between frames (the top-right frame missing) is filled, not vacuum
    pos.write_text("file,x_px,y_px\n" + "\n".join(rows[:1] + rows[2:]) + "\n")
    out = tmp_path / "out"
    assert main(["montage", str(tmp_path), "-o", str(out), "--positions", str(pos),
                 "--detector", "classical", "--pixel-size", str(PX), "--no-progress"]) == 0
    s2 = json.loads((out / "summary.json").read_text())
    assert abs(s2["support"]["vacuum_fraction"] - r["support"]["vacuum_fraction"]) < 0.1
    assert (out / "support_mask.png").exists()


def test_real_frame_with_vacuum(ptnc_dir):
    """A real ptnc-train frame with vacuum (uint32), cropped to odd sizes, as a
    montage with tiles that divide nothing: same mask, flags and statistics."""
    from fastsac.io import read

    m = read(ptnc_dir / "images" / "025.tif")
    img = np.asarray(m.data)[:509, :501]
    px = m.pixel_size_nm
    ref = analyze(img, detector="classical", pixel_size_nm=px)
    assert ref.summary["support"]["has_vacuum"] and ref.summary["vacuum_fraction"] > 0.1
    res = analyze_montage(img, detector="classical", tile=150, pixel_size_nm=px, progress=False)
    assert res.statistics["support"] == ref.summary["support"]
    np.testing.assert_array_equal(np.repeat(np.repeat(res.support.mask, 2, 0), 2, 1)[:509, :501],
                                  ref.support)
    np.testing.assert_array_equal(res.in_support(), ref.in_support())
    _assert_same_summary(res.statistics, ref.summary)


def test_cli_all_vacuum_montage_is_one_clear_line(tmp_path, vac_image, monkeypatch, capsys):
    import dataclasses

    import fastsac.montage as montage_mod
    from fastsac.cli import main

    real = montage_mod.montage_support_mask

    def no_support(*a, **kw):
        res, f = real(*a, **kw)
        return dataclasses.replace(res, mask=np.zeros_like(res.mask), support_area_px=0.0), f

    monkeypatch.setattr(montage_mod, "montage_support_mask", no_support)
    np.save(tmp_path / "m.npy", vac_image)
    out = tmp_path / "out"
    rc = main(["montage", str(tmp_path / "m.npy"), "-o", str(out), "--detector", "classical",
               "--pixel-size", str(PX), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "m.npy" in err and "no support" in err and "Traceback" not in err
    assert not (out / "summary.json").exists()


def test_gpu_detection_puts_the_mask_on_the_gpu(vac_image, monkeypatch):
    """When detection ran on the torch engine on CUDA, the binned montage's mask is
    asked for on CUDA too (unless mask_params says otherwise); on the CPU engine not."""
    import fastsac.montage as montage_mod

    real_detect, real_mask = montage_mod.detect_montage, montage_mod.montage_support_mask
    seen = []

    def detect_on(device):
        def fake(*a, **kw):
            dets, owner, ncand, info = real_detect(*a, **kw)
            return dets, owner, ncand, info | {"engine": "torch", "device": device}
        return fake

    def recording_mask(*a, **kw):
        seen.append(kw.get("device"))
        kw.pop("device", None)  # no GPU here: compute it on the CPU
        return real_mask(*a, **kw)

    monkeypatch.setattr(montage_mod, "montage_support_mask", recording_mask)
    for device, params, want in (("cuda:0", None, "cuda"), ("cuda:0", {"device": "cpu"}, "cpu"),
                                 ("cpu", None, None)):
        monkeypatch.setattr(montage_mod, "detect_montage", detect_on(device))
        res = analyze_montage(vac_image, detector="classical", pixel_size_nm=PX, tile=512,
                              progress=False, mask_params=params)
        assert seen[-1] == want
        assert res.statistics["support"]["has_vacuum"]
