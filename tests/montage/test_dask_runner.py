"""Dask LocalCluster (loopback, 2 worker processes) gives the single-process result."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.detectors import ClassicalDetector
from fastsac.montage import analyze_montage

from fastsac_testdata import spots

pytest.importorskip("distributed")


def test_local_cluster_equals_single_process(tmp_path):
    from fastsac.dask_runner import dask_runner
    from fastsac.io import write_tiff

    img, _ = spots((512, 512), n=250, pairs=30, seed=7)
    path = tmp_path / "m.tif"
    write_tiff(path, img, pixel_size_nm=None, bigtiff=True, tile=(128, 128))
    det = ClassicalDetector(background_nm=0.6)
    ref = analyze_montage(path, detector=det, tile=160, pixel_size_nm=0.0293, progress=False)
    with dask_runner(workers=2, progress=False) as runner:
        got = analyze_montage(path, detector=det, tile=160, pixel_size_nm=0.0293, runner=runner,
                              scratch_dir=str(tmp_path), progress=False)
    assert got.params["runner"] == "dask"
    assert len(got.detections) == len(ref.detections) > 150
    np.testing.assert_array_equal(got.detections.xy, ref.detections.xy)
    np.testing.assert_array_equal(got.detections.score, ref.detections.score)
    np.testing.assert_array_equal(got.tile, ref.tile)
    np.testing.assert_array_equal(got.nn_dist, ref.nn_dist)
    np.testing.assert_array_equal(got.cluster_size, ref.cluster_size)
    stats = {k: v for k, v in got.statistics.items() if k not in ("timings_s", "montage")}
    assert stats == {k: v for k, v in ref.statistics.items() if k not in ("timings_s", "montage")}
    assert got.params["cap"] == ref.params["cap"]
    assert list(tmp_path.glob("fastsac-montage-*")) == []  # scratch removed


def test_runner_arguments_are_checked():
    from fastsac.dask_runner import dask_runner

    with pytest.raises(ValueError, match="exactly one"):
        with dask_runner():
            pass
