import numpy as np
import pytest
import tifffile
from PIL import Image

from fastsac import FastsacInputError, read, read_points
from fastsac.io import atomic_write_text, write_json, write_tiff

from fastsac_testdata import ptnc_stems


def test_real_tiff_calibration(ptnc_dir):
    m = read(ptnc_dir / "images" / "021.tif")
    assert m.data.shape == (512, 512)
    assert m.data.dtype == np.float32
    assert m.pixel_size_source == "imagej"
    assert m.pixel_size_nm == pytest.approx(0.0293, abs=1e-4)
    raw = tifffile.imread(ptnc_dir / "images" / "021.tif")
    np.testing.assert_array_equal(m.data, raw.astype(np.float32))
    assert m.metadata["dtype"] == "uint32"


def test_all_real_images_and_labels_read(ptnc_dir):
    total = 0
    for stem in ptnc_stems():
        m = read(ptnc_dir / "images" / f"{stem}.tif")
        pts = read_points(ptnc_dir / "labels" / f"{stem}.csv")
        assert pts.shape[1] == 2
        assert (pts >= 0).all() and (pts[:, 0] < m.shape[1]).all() and (pts[:, 1] < m.shape[0]).all()
        total += len(pts)
    assert total == 481


@pytest.mark.parametrize("unit,scale_nm", [("nm", 1.0), ("micron", 1000.0), ("\\u00B5m", 1000.0), ("um", 1000.0),
                                           ("angstrom", 0.1), ("A", 0.1), ("pm", 0.001)])
def test_imagej_units(tmp_path, unit, scale_nm):
    px_in_unit = 0.05 / scale_nm  # every case is 0.05 nm/px
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((32, 32), dtype=np.float32),
                     imagej=True, resolution=(1 / px_in_unit, 1 / px_in_unit),
                     metadata={"unit": unit})
    assert read(path).pixel_size_nm == pytest.approx(0.05, rel=1e-6)


def test_resolution_tag_centimetre(tmp_path):
    path = tmp_path / "b.tif"
    write_tiff(path, (np.arange(64 * 64).reshape(64, 64) % 1000).astype(np.uint16),
               pixel_size_nm=0.0293, bigtiff=True, tile=(32, 32))
    m = read(path)
    assert m.pixel_size_source == "tiff-resolution"
    assert m.pixel_size_nm == pytest.approx(0.0293, rel=1e-6)


def test_write_tiff_roundtrip_and_override(tmp_path, rng):
    img = rng.random((40, 50)).astype(np.float32)
    write_tiff(tmp_path / "c.tif", img, pixel_size_nm=0.0417)
    m = read(tmp_path / "c.tif")
    np.testing.assert_array_equal(m.data, img)
    assert m.pixel_size_nm == pytest.approx(0.0417, rel=1e-6)
    m2 = read(tmp_path / "c.tif", pixel_size_nm=0.1)
    assert (m2.pixel_size_nm, m2.pixel_size_source) == (0.1, "override")


@pytest.mark.parametrize("bits", [8, 16])
def test_png(tmp_path, bits):
    arr = (np.arange(30 * 20).reshape(30, 20) % 250).astype(np.uint8 if bits == 8 else np.uint16) * (
        1 if bits == 8 else 200)
    Image.fromarray(arr).save(tmp_path / "p.png")
    m = read(tmp_path / "p.png")
    np.testing.assert_array_equal(m.data, arr.astype(np.float32))
    assert m.pixel_size_nm is None and m.pixel_size_source == "none"


def test_npy(tmp_path, rng):
    arr = rng.random((16, 17))
    np.save(tmp_path / "x.npy", arr)
    np.testing.assert_allclose(read(tmp_path / "x.npy").data, arr.astype(np.float32))


def _expect(path, fragment):
    with pytest.raises(FastsacInputError) as info:
        read(path)
    msg = str(info.value)
    assert str(path) in msg and fragment in msg
    return info.value


def test_malformed_inputs(tmp_path):
    _expect(tmp_path / "missing.tif", "not found")
    (tmp_path / "empty.tif").write_bytes(b"")
    _expect(tmp_path / "empty.tif", "empty")
    (tmp_path / "garbage.tif").write_bytes(b"this is not a tiff at all" * 10)
    _expect(tmp_path / "garbage.tif", "cannot be read")
    (tmp_path / "trunc.tif").write_bytes((tmp_path / "garbage.tif").read_bytes()[:8])
    _expect(tmp_path / "trunc.tif", "cannot be read")
    np.save(tmp_path / "vol.npy", np.zeros((3, 4, 5)))
    _expect(tmp_path / "vol.npy", "2-D")
    np.save(tmp_path / "const.npy", np.full((8, 8), 7.0))
    _expect(tmp_path / "const.npy", "constant")
    nan = np.random.default_rng(0).random((8, 8))
    nan[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    _expect(tmp_path / "nan.npy", "NaN")
    np.save(tmp_path / "line.npy", np.arange(10.0)[None, :])
    _expect(tmp_path / "line.npy", "degenerate")
    (tmp_path / "x.xyz").write_text("1")
    _expect(tmp_path / "x.xyz", "unsupported")
    _expect(tmp_path, "directory")


def test_truncated_real_tiff(tmp_path, ptnc_dir):
    data = (ptnc_dir / "images" / "021.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    _expect(tmp_path / "cut.tif", "cut.tif")


def test_read_points_formats(tmp_path):
    (tmp_path / "ij.csv").write_text(" ,X,Y\n1,10,20\n2,30.5,40\n")
    np.testing.assert_array_equal(read_points(tmp_path / "ij.csv"), [[10, 20], [30.5, 40]])
    (tmp_path / "own.csv").write_text("x_px,y_px,score\n1.5,2.5,0.9\n")
    np.testing.assert_array_equal(read_points(tmp_path / "own.csv"), [[1.5, 2.5]])
    (tmp_path / "none.csv").write_text("X,Y\n")
    assert read_points(tmp_path / "none.csv").shape == (0, 2)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FastsacInputError, match="X and Y"):
        read_points(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("X,Y\n1,oops\n")
    with pytest.raises(FastsacInputError, match="line 2"):
        read_points(tmp_path / "bad2.csv")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_json(target, {"a": Boom()})
    assert target.read_text().strip().startswith("{")
    assert '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp files left
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


@pytest.mark.parametrize("dtype", [np.uint32, np.float64, np.int32])
def test_write_tiff_dtypes_imagej_cannot_hold(tmp_path, dtype):
    img = (np.arange(48 * 40).reshape(48, 40) % 997).astype(dtype)
    write_tiff(tmp_path / "u.tif", img, pixel_size_nm=0.0293)
    m = read(tmp_path / "u.tif")
    np.testing.assert_array_equal(m.data, img.astype(np.float32))
    assert m.pixel_size_nm == pytest.approx(0.0293, rel=1e-6)
