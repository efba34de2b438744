"""Dask LocalCluster (loopback, 2 worker processes) gives the single-process result,
species and cluster table included."""

from __future__ import annotations

import numpy as np
import pytest

from fastsac.detectors import ClassicalDetector
from fastsac.montage import analyze_montage, montage_species
from fastsac.species import species_of_atoms

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
        # Named elements: the support grid is measured by the same Dask tasks.
        named = montage_species(path, ref.detections.xy, pixel_size_nm=0.0293, elements=["Pt", "Pd"],
                                tile=160, runner=runner, progress=False)
    frame = species_of_atoms(img, ref.detections.xy, pixel_size_nm=0.0293, elements=["Pt", "Pd"])
    assert np.isfinite(frame.lightest_snr) and named.lightest_snr == frame.lightest_snr
    np.testing.assert_array_equal(named.species, frame.species)
    assert got.params["runner"] == "dask"
    assert len(got.detections) == len(ref.detections) > 150
    # Positions agree to the last bit almost always; under heavy load a few close-pair
    # refits have been seen to differ by 1 ulp (5e-14 px), so floats are compared to 1e-9.
    np.testing.assert_allclose(got.detections.xy, ref.detections.xy, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.detections.score, ref.detections.score)
    np.testing.assert_array_equal(got.tile, ref.tile)
    np.testing.assert_allclose(got.nn_dist, ref.nn_dist, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(got.cluster_size, ref.cluster_size)

    # The same species (photometry per core as Dask tasks, one mixture) and cluster table.
    assert got.statistics["species"]["status"] == "ok"
    np.testing.assert_array_equal(got.species.species, ref.species.species)
    np.testing.assert_allclose(got.species.probability, ref.species.probability, rtol=0,
                               atol=1e-9, equal_nan=True)
    got_t, ref_t = got.table(), ref.table()
    assert list(got_t) == list(ref_t) and "species_probability" in got_t
    np.testing.assert_array_equal(got_t["species"], ref_t["species"])
    got_c, ref_c = got.cluster_table.columns(), ref.cluster_table.columns()
    assert list(got_c) == list(ref_c) and len(got_c["cluster_id"]) > 100
    for k in ref_c:
        if ref_c[k].dtype.kind == "f":
            np.testing.assert_allclose(got_c[k], ref_c[k], rtol=1e-12, atol=1e-9, err_msg=k)
        else:
            np.testing.assert_array_equal(got_c[k], ref_c[k], err_msg=k)

    def same(a, b, rel=1e-9):
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b))
        if isinstance(a, float) and isinstance(b, float):
            return a == pytest.approx(b, rel=rel, abs=1e-12, nan_ok=True)
        return a == b

    skip = ("timings_s", "montage", "provenance", "species")
    assert same({k: v for k, v in got.statistics.items() if k not in skip},
                {k: v for k, v in ref.statistics.items() if k not in skip})
    # a mixture fit: a 1-ulp position difference moves its widths by ~1e-8 relative
    assert same(got.statistics["species"], ref.statistics["species"], rel=1e-6)
    assert got.params["cap"] == ref.params["cap"]
    assert list(tmp_path.glob("fastsac-montage-*")) == []  # scratch removed


def test_runner_arguments_are_checked():
    from fastsac.dask_runner import dask_runner

    with pytest.raises(ValueError, match="exactly one"):
        with dask_runner():
            pass
