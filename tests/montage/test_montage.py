"""Montage tiling is exact: tiled detection and global statistics equal the
single-image run (including atoms on tile borders); sources, Parquet, folder mode."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fastsac import peaks
from fastsac.detectors import ClassicalDetector
from fastsac.montage import (PARQUET_COLUMNS, analyze_frames, analyze_montage, classical_halo,
                             detect_montage, exact_quantile, grid_nms, open_montage,
                             plan_cores, quantile_from_histogram, read_parquet, read_positions,
                             write_parquet)
from fastsac.montage import _NBINS, _bits
from fastsac.pipeline import analyze

from fastsac_testdata import spots

PX = 0.0293


@pytest.fixture(scope="module")
def image():
    img, truth = spots((1024, 1024), seed=3)
    return img, truth


@pytest.fixture(scope="module")
def whole(image):
    # with the support mask (default) on both sides: this frame has no vacuum
    return analyze(image[0].astype(np.float32), detector="classical", pixel_size_nm=PX)


# provenance records each entry point's own parameters; montages have no
# pair-correlation test yet (summary says so).
_NOT_COMPARED = {"timings_s", "source", "image", "detector", "montage", "backend",
                 "pixel_size_source", "provenance", "pair_correlation",
                 # frames only so far (issue 13 item 7): montages get no pixel-size estimate
                 "pixel_size_estimate"}
#: The species mixture is an optimisation: positions equal to 1e-13 px move its
#: fitted widths by ~1e-8 relative, so the species block is compared to 1e-6.
_REL = {"species": 1e-6}


def _assert_same_value(a, b, k, rel=1e-9):
    if isinstance(b, float) and isinstance(a, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-12, nan_ok=True), k
    elif isinstance(b, dict) and isinstance(a, dict):  # nested blocks (e.g. "confidence")
        assert set(a) == set(b), k
        for kk in b:
            _assert_same_value(a[kk], b[kk], f"{k}.{kk}", rel)
    elif isinstance(b, list) and isinstance(a, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_value(x, y, f"{k}[{i}]", rel)
    else:
        assert a == b, k


def _assert_same_summary(got: dict, ref: dict):
    keys = set(ref) - _NOT_COMPARED
    assert keys <= set(got)
    for k in sorted(keys):
        _assert_same_value(got[k], ref[k], k, _REL.get(k, 1e-9))


def _assert_same_atoms(got: dict, ref: dict, *, extra=("tile",)):
    """Atoms tables equal column by column (the montage's has ``extra`` columns
    after the frame's); floats to float rounding, species labels exactly."""
    assert list(got) == list(ref) + list(extra)
    for k in ref:
        a, b = np.asarray(got[k]), np.asarray(ref[k])
        if a.dtype.kind == "f":
            tol = 1e-6 if k == "species_probability" else 1e-9
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, equal_nan=True, err_msg=k)
        else:
            np.testing.assert_array_equal(a, b, err_msg=k)


@pytest.fixture(scope="module")
def tiled(image):
    return analyze_montage(image[0], detector="classical", tile=256, pixel_size_nm=PX,
                           progress=False)


def test_halo_is_derived_from_the_detector():
    # DoG surround σ=6 (reach 24) + noise σ≈32 as three extended boxes of radius
    # 31 (reach 3·32 = 96) + 1 (3×3 maxima)
    assert classical_halo(ClassicalDetector(), pixel_size_nm=PX) == 24 + 96 + 1
    # with the optional median background of 40 px (reach 20) in front
    assert classical_halo(ClassicalDetector(background_nm=40 * PX), pixel_size_nm=PX) == 20 + 24 + 96 + 1
    assert classical_halo(ClassicalDetector(background_nm=None), pixel_size_nm=PX) == 24 + 97
    # the Gaussian noise window reaches 4σ = 128
    assert classical_halo(ClassicalDetector(noise_window="gaussian"), pixel_size_nm=PX) == 24 + 128 + 1


def test_tiled_detection_equals_whole_image(whole, tiled):
    w, t = whole.detections, tiled.detections
    assert len(w) > 500
    assert len(t) == len(w)
    # same points in the same order; scores bit-identical, positions to float rounding
    np.testing.assert_array_equal(t.score, w.score)
    np.testing.assert_allclose(t.xy, w.xy, rtol=0, atol=1e-9)
    np.testing.assert_allclose(t.intensity, w.intensity, rtol=1e-9, equal_nan=True)
    # the test means something: atoms sit on and around the tile borders
    border = np.minimum(np.abs((t.xy + 0.5) % 256 - 0.5), 256 - (t.xy + 0.5) % 256).min(axis=1)
    assert (border < 3).sum() >= 10
    assert len(np.unique(tiled.tile)) == 16
    # ... and the close-pair stage's split move made two atoms of some spots (adjacent
    # rows with their parent's score and p_two ≥ 0.5), so exactness covers it too
    sp = w.split_probability
    assert ((np.diff(w.score) == 0) & (sp[1:] >= 0.5) & (sp[:-1] >= 0.5)).sum() >= 1
    np.testing.assert_array_equal(t.split_probability, sp)


def test_global_statistics_equal_whole_image(whole, tiled):
    np.testing.assert_allclose(tiled.nn_dist, whole.nn_dist, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(tiled.cluster_id, whole.cluster_id)
    np.testing.assert_array_equal(tiled.cluster_size, whole.cluster_size)
    s, r = tiled.statistics, whole.summary
    assert s["n_atoms"] == r["n_atoms"]
    assert s["n_atoms_multimer"] == r["n_atoms_multimer"] > 0
    assert s["n_dimers"] == r["n_dimers"] > 0
    _assert_same_summary(s, r)  # every statistic, incl. Clark–Evans, species, cluster sizes
    assert s["species"]["status"] == "ok" and s["species"]["mode"] == "intensity classes"


def test_species_and_cluster_table_equal_whole_image(whole, tiled, tmp_path):
    """The new columns keep montage = frame: species labels, their probabilities
    (to 1e-6) and clusters.csv byte for byte, written by the frames' writer."""
    _assert_same_atoms(tiled.table(), whole.atoms_table())
    assert set(tiled.species.species.tolist()) == set(whole.species.species.tolist()) != {""}
    from fastsac.montage import write_montage_result
    from fastsac.pipeline import write_result

    write_result(whole, tmp_path / "frame", overlay=False, plots=False, parquet=False)
    drawn = write_montage_result(tiled, tmp_path / "montage")
    assert {"nn_histogram", "cluster_sizes"} <= set(drawn)
    paths = write_montage_result(tiled, tmp_path / "montage", plots=False)
    # a rerun without plots leaves no plot of the earlier run behind
    assert not any((tmp_path / "montage" / f"{k}.png").exists()
                   for k in ("nn_histogram", "cluster_sizes", "pair_correlation"))
    got = paths["clusters"].read_bytes()
    assert got == (tmp_path / "frame" / "clusters.csv").read_bytes()
    rows = got.decode().splitlines()
    assert len(rows) == 1 + tiled.statistics["n_clusters"]
    assert any(";" not in r.split(",")[8] and ":2" in r for r in rows[1:])  # dimers' composition


@pytest.fixture(scope="module")
def two_species():
    """Bright (Pt-like) and 2.45× dimmer (Pd-like) atoms on one support."""
    a, _ = spots((512, 512), n=150, amp=240.0, seed=11, pairs=25)
    b, _ = spots((512, 512), n=150, amp=240.0 / 2.45, seed=12, pairs=25)
    return a.astype(np.float32) + b.astype(np.float32)


def test_montage_species_with_elements_equal_frame(two_species, tmp_path):
    img = two_species
    ref = analyze(img, detector="classical", pixel_size_nm=PX, elements=["Pt", "Pd"],
                  support_mask=False)
    got = analyze_montage(img, detector="classical", tile=160, pixel_size_nm=PX,
                          elements=["Pt", "Pd"], progress=False, support_mask=False)
    sp = got.statistics["species"]
    assert sp["status"] == "ok" and sp["names"] == ["Pd", "Pt"]
    assert sp["counts"] == ref.summary["species"]["counts"]
    assert sp["counts"]["Pd"] >= 20 and sp["counts"]["Pt"] >= 100
    np.testing.assert_array_equal(got.species.species, ref.species.species)
    np.testing.assert_allclose(got.species.probability, ref.species.probability, atol=1e-6)
    _assert_same_value(sp, ref.summary["species"], "species", 1e-6)
    _assert_same_atoms(got.table(), ref.atoms_table())
    np.testing.assert_array_equal(got.cluster_table.composition(), ref.cluster_table.composition())
    _assert_same_value(got.statistics["cluster_size_distribution"],
                       ref.summary["cluster_size_distribution"], "cluster_size_distribution")
    assert "Pt:2" in got.cluster_table.composition().tolist()
    # species off: no species columns, clusters without composition
    off = analyze_montage(img, detector="classical", tile=160, pixel_size_nm=PX, species=False,
                          progress=False, support_mask=False)
    assert off.statistics["species"] is None and "species" not in off.table()
    assert set(off.cluster_table.composition().tolist()) == {""}
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        analyze_montage(img, elements=["Pt", "Xx"], progress=False)


def test_folder_of_one_frame_gets_the_frame_species(tmp_path, two_species):
    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", two_species)
    (tmp_path / "p.csv").write_text("file,x_px,y_px\nf.tif,0,0\n")
    ref = analyze(two_species, detector="classical", pixel_size_nm=PX, elements=["Pt", "Pd"],
                  support_mask=False)
    got = analyze_frames(tmp_path, tmp_path / "p.csv", detector="classical", pixel_size_nm=PX,
                         elements=["Pt", "Pd"], progress=False, support_mask=False)
    np.testing.assert_array_equal(got.species.species, ref.species.species)
    np.testing.assert_array_equal(got.species.probability, ref.species.probability)
    assert got.statistics["species"] == ref.summary["species"]
    assert got.statistics["cluster_size_distribution"] == ref.summary["cluster_size_distribution"]


def test_uneven_tiles_and_sources_agree(tmp_path, image):
    img = image[0][:700, :650]
    det = ClassicalDetector(background_nm=None)
    ref = det.detect(img.astype(np.float32))
    tif = tmp_path / "m.tif"
    from fastsac.io import write_tiff

    write_tiff(tif, img, pixel_size_nm=PX, bigtiff=True, tile=(128, 128))
    strip = tmp_path / "s.tif"
    import tifffile

    tifffile.imwrite(strip, img, rowsperstrip=37)
    import zarr

    z = zarr.create_array(str(tmp_path / "m.zarr"), shape=img.shape, chunks=(100, 100),
                          dtype=img.dtype, attributes={"pixel_size_nm": PX})
    z[:] = img
    g = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    g.attrs["multiscales"] = [{"axes": [{"name": "y", "unit": "nanometer"},
                                        {"name": "x", "unit": "nanometer"}],
                               "datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [PX, PX]}]}]}]
    g.create_array("0", shape=img.shape, chunks=(128, 128), dtype=img.dtype)[:] = img
    for src in (tif, strip, tmp_path / "m.zarr", tmp_path / "ome.zarr"):
        m = open_montage(src)
        assert m.shape == img.shape
        np.testing.assert_array_equal(m.read(33, 290, 101, 400), img[33:290, 101:400])
        if src != strip:
            assert m.pixel_size_nm == pytest.approx(PX, rel=1e-6)
    d, owner, _, info = detect_montage(tif, detector=det, tile=300, pixel_size_nm=PX,
                                      progress=False)
    assert info["n_tiles"] == 9
    assert len(d) == len(ref) > 200
    np.testing.assert_allclose(d.xy, ref.xy, atol=1e-9)


def test_exact_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for k in range(60):
        n = int(rng.integers(2, 50000))
        a = np.abs(rng.standard_t(3, size=n)).astype(np.float32)
        if k % 3 == 0:
            a = np.round(a, 1).astype(np.float32)  # many ties
        b = _bits(a)
        lo, _, lb, hb, below = quantile_from_histogram(np.bincount(b, minlength=_NBINS), n, 0.98)
        got = exact_quantile(a[(b >= lb) & (b <= hb)], n, 0.98, lo, below)
        assert got == np.percentile(a, 98)


def test_grid_nms_equals_reference(rng):
    xy = rng.uniform(0, 400, size=(5000, 2))
    xy[::7] = np.round(xy[::7])
    s = np.round(rng.uniform(0, 5, 5000), 2)  # ties
    from fastsac.peaks import _nms_numpy_ref

    ref = _nms_numpy_ref(xy, s, 6.0)
    np.testing.assert_array_equal(grid_nms(xy, s, radius=6.0), ref)
    np.testing.assert_array_equal(peaks.nms(xy, s, radius=6.0), ref)


def test_plan_cores_cover_once():
    cores = plan_cores((700, 650), tile=256)
    cover = np.zeros((700, 650), int)
    for y0, y1, x0, x1 in cores:
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()
    with pytest.raises(ValueError, match="tile"):
        plan_cores((10, 10), tile=4)


def test_parquet_schema_and_global_coordinates(tmp_path, tiled, image):
    p = write_parquet(tmp_path / "atoms.parquet", tiled)
    cols, summary = read_parquet(p)
    assert list(cols) == PARQUET_COLUMNS
    import pyarrow.parquet as pq

    schema = pq.read_schema(p)
    assert str(schema.field("x_px").type) == "double"
    assert str(schema.field("cluster_size").type) == "int64"
    assert summary["n_atoms"] == len(tiled.detections)
    np.testing.assert_allclose(cols["x_nm"], cols["x_px"] * PX)
    # global coordinates: detections land on the true atoms everywhere in the montage
    truth = image[1]
    from fastsac.evaluate import match_points

    m = match_points(np.stack([cols["x_px"], cols["y_px"]], 1), truth, tolerance_px=2.0)
    assert m.f1 > 0.8
    far = (truth[:, 0] > 768) & (truth[:, 1] > 768)  # the last tile: offsets were applied
    mf = match_points(np.stack([cols["x_px"], cols["y_px"]], 1)[
        (cols["x_px"] > 768) & (cols["y_px"] > 768)], truth[far], tolerance_px=2.0)
    assert mf.recall > 0.8


def _write_frames(tmp_path, img, frame, step, unit="px"):
    import tifffile

    rows = []
    H, W = img.shape
    for y in range(0, H - frame + 1, step):
        for x in range(0, W - frame + 1, step):
            name = f"f_{y}_{x}.tif"
            tifffile.imwrite(tmp_path / name, img[y:y + frame, x:x + frame], imagej=True,
                             resolution=(1 / PX, 1 / PX), metadata={"unit": "nm"})
            rows.append((name, x, y))
    pos = tmp_path / "positions.csv"
    with open(pos, "w", newline="") as fh:
        wr = csv.writer(fh)
        if unit == "px":
            wr.writerow(["file", "x_px", "y_px"])
            wr.writerows(rows)
        else:
            wr.writerow(["file", "x_nm", "y_nm"])
            wr.writerows([(n, x * PX, y * PX) for n, x, y in rows])
    return pos


@pytest.mark.parametrize("dedup", ["ownership", "score"])
def test_folder_with_positions_dedups_overlaps(tmp_path, image, dedup):
    img, truth = image[0][:640, :640], image[1]
    truth = truth[(truth[:, 0] < 639.5) & (truth[:, 1] < 639.5)]
    pos = _write_frames(tmp_path, img, 384, 256, unit="nm" if dedup == "score" else "px")
    det = ClassicalDetector(background_nm=None)
    # nm positions: the pixel size comes from the frames' own calibration
    res = analyze_frames(tmp_path, pos, detector=det, dedup=dedup, progress=False)
    assert res.pixel_size_nm == pytest.approx(PX, rel=1e-6)
    assert res.statistics["frames"] == 4
    assert res.statistics["dedup"]["removed"] > 20  # the overlaps really held duplicates
    xy = res.detections.xy
    from scipy.spatial import cKDTree

    assert len(cKDTree(xy).query_pairs(2.0)) == 0  # no atom counted twice
    from fastsac.evaluate import match_points

    whole = det.detect(img.astype(np.float32))
    assert abs(len(xy) - len(whole)) <= 0.02 * len(whole)
    assert match_points(xy, truth, tolerance_px=2.0).f1 > 0.8
    assert res.shape == (640, 640)


def test_read_positions_units(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("filename,x_nm,y_nm\na.tif,2.93,0\n")
    assert read_positions(p, pixel_size_nm=PX) == [("a.tif", pytest.approx(100.0), 0.0)]
    from fastsac.errors import FastsacInputError

    with pytest.raises(FastsacInputError, match="pixel size"):
        read_positions(p)
    p.write_text("file,x_px,y_px\na.tif,oops,0\n")
    with pytest.raises(FastsacInputError, match="line 2"):
        read_positions(p)


def test_cli_montage(tmp_path, image):
    from fastsac.cli import main

    np.save(tmp_path / "m.npy", image[0][:512, :512])
    out = tmp_path / "out"
    rc = main(["montage", str(tmp_path / "m.npy"), "-o", str(out), "--tile", "200",
               "--detector", "classical", "--pixel-size", str(PX), "--no-progress"])
    assert rc == 0
    cols, summary = read_parquet(out / "atoms.parquet")
    ref = analyze(image[0][:512, :512].astype(np.float32), detector="classical",
                  pixel_size_nm=PX, support_mask=False)
    assert len(cols["x_px"]) == summary["n_atoms"] == ref.summary["n_atoms"]
    import json

    s = json.loads((out / "summary.json").read_text())
    assert s["n_atoms_multimer"] == ref.summary["n_atoms_multimer"]
    assert main(["montage", str(tmp_path / "missing.tif"), "-o", str(out)]) == 2


def test_cli_montage_elements_writes_species_and_clusters(tmp_path, two_species, capsys):
    from fastsac.cli import main

    np.save(tmp_path / "m.npy", two_species)
    out = tmp_path / "out"
    rc = main(["montage", str(tmp_path / "m.npy"), "-o", str(out), "--tile", "200",
               "--pixel-size", str(PX), "--elements", "Pt", "Pd", "--no-progress"])
    assert rc == 0
    assert "species Pd" in capsys.readouterr().out
    cols, summary = read_parquet(out / "atoms.parquet")
    assert list(cols) == PARQUET_COLUMNS
    assert set(cols["species"].tolist()) == {"Pt", "Pd"}
    assert np.nanmin(cols["species_probability"]) >= 0.5
    s = json.loads((out / "summary.json").read_text())
    assert s["species"]["counts"] == summary["species"]["counts"]
    assert s["species"]["counts"]["Pt"] == int((cols["species"] == "Pt").sum())
    with open(out / "clusters.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["cluster_id", "n_atoms", "x_px", "y_px", "x_nm", "y_nm",
                             "radius_of_gyration_nm", "max_extent_nm", "composition", "n_Pd", "n_Pt"]
    assert sum(int(r["n_atoms"]) for r in rows) == len(cols["x_px"])
    assert sum(int(r["n_Pt"]) for r in rows) == s["species"]["counts"]["Pt"]
    assert s["cluster_size_distribution"]["n_clusters"] == len(rows)
    for png in ("nn_histogram.png", "cluster_sizes.png", "pair_correlation.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("bad, why", [(["Pt", "Xx"], "unknown element 'Xx'"),
                                      (["Pt", "pt"], "name each element once")])
def test_cli_montage_bad_elements_is_one_line(tmp_path, capsys, bad, why):
    from fastsac.cli import main

    np.save(tmp_path / "m.npy", np.zeros((64, 64), np.float32))
    rc = main(["montage", str(tmp_path / "m.npy"), "-o", str(tmp_path / "out"),
               "--elements", *bad])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--elements" in err[0] and why in err[0], err
    assert not (tmp_path / "out" / "atoms.parquet").exists()


def test_cli_montage_folder_mode(tmp_path, image):
    from fastsac.cli import main

    frames = tmp_path / "frames"
    frames.mkdir()
    pos = _write_frames(frames, image[0][:512, :512], 320, 192)
    out = tmp_path / "out"
    assert main(["montage", str(frames), "-o", str(out)]) == 2  # no positions
    rc = main(["montage", str(frames), "-o", str(out), "--positions", str(pos),
               "--detector", "classical", "--pixel-size", str(PX), "--no-progress"])
    assert rc == 0
    cols, summary = read_parquet(out / "atoms.parquet")
    assert summary["frames"] == 4 and len(cols["x_px"]) == summary["n_atoms"] > 50
    assert set(np.unique(cols["tile"])) == {0, 1, 2, 3}


def test_montage_edge_exclusion_is_the_whole_image_edge(image):
    img = image[0][:512, :512]
    det = ClassicalDetector(background_nm=None, exclude_border_px=40)
    ref = det.detect(img.astype(np.float32))
    d, _, _, _ = detect_montage(img, detector=det, tile=128, progress=False)
    assert len(d) == len(ref) > 100
    np.testing.assert_allclose(d.xy, ref.xy, atol=1e-9)
    # tile borders inside the montage are not excluded: atoms sit near x = 128, 256, 384
    near = np.abs(d.xy[:, 0][:, None] - np.array([128, 256, 384])[None]).min(axis=1) < 3
    assert near.sum() > 3


def _rows(xy):
    return xy[np.lexsort((xy[:, 0], xy[:, 1]))]


@pytest.mark.parametrize("kind", ["array", "zarr"])
def test_torch_engine_montage_equals_cpp_tiling(tmp_path, image, tiled, kind):
    """The GPU route (here its torch code on the CPU): the same atoms and global
    statistics as the exact C++ tiling. In memory the calibration is exact (on a
    GPU the montage would also stay resident); Zarr montages are streamed with
    the histogram percentile (at most a marginal atom differs)."""
    img = image[0]
    src = img
    if kind == "zarr":
        import zarr

        z = zarr.create_array(str(tmp_path / "m.zarr"), shape=img.shape, chunks=(256, 256),
                              dtype=img.dtype)
        z[:] = img
        src = tmp_path / "m.zarr"
    res = analyze_montage(src, detector="classical", tile=256, pixel_size_nm=PX,
                          progress=False, engine="torch")
    info = res.statistics["montage"]
    assert info["engine"] == "torch" and not info["resident"]   # resident only on CUDA
    ref = tiled.detections
    if kind == "array":
        assert len(res.detections) == len(ref) > 500
        np.testing.assert_allclose(_rows(res.detections.xy), _rows(ref.xy), atol=1e-6)
        for k in ("n_atoms", "n_atoms_multimer", "n_clusters"):
            assert res.statistics[k] == tiled.statistics[k], k
    else:
        assert abs(len(res.detections) - len(ref)) <= 2
    assert res.tile.min() >= 0 and res.tile.max() < 16
    with pytest.raises(ValueError, match="engine"):
        detect_montage(img, engine="gpu", progress=False)


def test_uncalibrated_montage_gets_the_frames_pixel_size_estimate():
    """Issue 13 item 7 for montages: no calibration → the atom size gives the pixel
    size, exactly as analyze() estimates it for the same pixels (≤ 2048²: the whole
    image); estimate_pixel_size=False keeps lengths in px."""
    from fastsac.synth import simulate

    img, _ = simulate(size=384, dose=4e4, seed=3, loading_per_nm2=0.4, vacuum="none")
    img = img.astype(np.float32)
    frame = analyze(img, support_mask=False, species=False).summary
    res = analyze_montage(img, detector="classical", tile=256, progress=False, support_mask=False,
                          species=False)
    s = res.statistics
    assert s["pixel_size_source"] == "estimated from atom size"
    assert frame["pixel_size_source"] == "estimated from atom size"
    assert s["pixel_size_nm"] == frame["pixel_size_nm"] == pytest.approx(0.0293, rel=0.3)
    assert s["pixel_size_estimate"] == frame["pixel_size_estimate"]
    assert s["n_atoms"] == frame["n_atoms"]
    off = analyze_montage(img, detector="classical", tile=256, progress=False, support_mask=False,
                          species=False, estimate_pixel_size=False).statistics
    assert off["pixel_size_nm"] is None and off["pixel_size_estimate"] is None
    assert off["pixel_size_source"] == "none"
    cal = analyze_montage(img, detector="classical", tile=256, progress=False, support_mask=False,
                          species=False, pixel_size_nm=PX).statistics
    assert cal["pixel_size_source"] == "override" and cal["pixel_size_estimate"] is None
