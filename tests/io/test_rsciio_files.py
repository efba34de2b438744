"""DM3/DM4/EMD/SER through rosettasciio (issue 16, part 9).

* An EMD file written by rosettasciio's own NCEM writer is read with its
  calibration (runs wherever the ``formats`` extra is installed).
* Real files from rosettasciio's test data (GPL-3.0, never committed here):
  ``$FASTSAC_RSCIIO_TESTFILES`` points at a folder of them (not committed:
  rosettasciio's test data is GPL-3.0 and not in its sdist); each is read by fastsac and its
  calibration checked against the file's own axes metadata as rosettasciio
  reports it. Skipped with the reason when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fastsac.errors import FastsacInputError
from fastsac.io import read, unit_to_nm

rsciio = pytest.importorskip("rsciio", reason="needs the formats extra (rosettasciio)")


def _emd(path, data, scale, units):
    pytest.importorskip("h5py", reason="EMD needs h5py (rosettasciio[hdf5])")
    from rsciio.emd import file_writer

    axes = [{"size": n, "scale": scale, "offset": 0.0, "units": units, "name": name,
             "navigate": False} for n, name in zip(data.shape[-2:], "yx")]
    if data.ndim == 3:
        axes = [{"size": data.shape[0], "scale": 1.0, "offset": 0.0, "units": "",
                 "name": "frame", "navigate": True}] + axes
    file_writer(str(path), {"data": data, "axes": axes, "original_metadata": {},
                            "metadata": {"General": {"title": "t"}, "Signal": {"signal_type": ""}}})
    return path


@pytest.mark.parametrize("scale, units, nm", [(0.0293, "nm", 0.0293), (0.293, "Å", 0.0293),
                                             (29.3, "pm", 0.0293), (2.93e-5, "µm", 0.0293)])
def test_emd_written_by_rosettasciio(tmp_path, scale, units, nm):
    img = np.random.default_rng(0).normal(100, 5, (48, 64)).astype(np.float32)
    m = read(_emd(tmp_path / "a.emd", img, scale, units))
    assert m.shape == (48, 64) and m.pixel_size_source == "rosettasciio"
    assert m.pixel_size_nm == pytest.approx(nm, rel=1e-6)
    np.testing.assert_array_equal(m.data, img)


def test_emd_stack_and_absurd_calibration(tmp_path):
    img = np.random.default_rng(1).normal(100, 5, (3, 32, 32)).astype(np.float32)
    with pytest.raises(FastsacInputError, match="no 2-D image signal"):
        read(_emd(tmp_path / "stack.emd", img, 0.03, "nm"))
    m = read(_emd(tmp_path / "km.emd", img[0], 1e9, "nm"))  # 1 m per pixel: not a micrograph
    assert m.pixel_size_nm is None and m.metadata["calibration_rejected_nm"] == pytest.approx(1e9)


def _real_files():
    root = os.environ.get("FASTSAC_RSCIIO_TESTFILES")
    if not root or not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).rglob("*")
                  if p.suffix.lower() in (".dm3", ".dm4", ".emd", ".ser"))


REAL = _real_files()


@pytest.mark.skipif(not REAL, reason="no real DM3/DM4/EMD/SER files: set FASTSAC_RSCIIO_TESTFILES "
                                     "to a folder of real files (rosettasciio's test data)")
@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_file_calibration_matches_its_metadata(path):
    suffix = path.suffix.lower()
    if suffix in (".dm3", ".dm4"):
        from rsciio.digitalmicrograph import file_reader
    elif suffix == ".emd":
        from rsciio.emd import file_reader
    else:
        from rsciio.tia import file_reader
    images = [s for s in file_reader(str(path)) if np.asarray(s["data"]).ndim == 2]
    if not images:
        with pytest.raises(FastsacInputError):
            read(path)
        return
    sig = images[0]
    data = np.asarray(sig["data"])
    try:
        m = read(path)
    except FastsacInputError as exc:  # constant or non-numeric test patterns are refused
        assert str(path) in str(exc)
        assert data.dtype.kind not in "biuf" or data.min() == data.max() or \
            not np.isfinite(data).all()
        return
    assert m.shape == data.shape
    ax = sig["axes"][-1]
    u = unit_to_nm(ax.get("units"))
    expected = float(ax["scale"]) * u if u and ax.get("scale") else None
    if expected is not None and not 1e-4 <= expected <= 1e3:
        expected = None
    if expected is None:
        assert m.pixel_size_nm is None
    else:
        assert m.pixel_size_nm == pytest.approx(expected, rel=1e-9)
