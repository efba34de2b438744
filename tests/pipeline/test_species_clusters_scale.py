"""analyze/write_result: species columns, clusters.csv, figures, estimated pixel size."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fastsac.io import Micrograph
from fastsac.pipeline import ATOM_COLUMNS, analyze, write_result
from fastsac.synth import simulate


@pytest.fixture(scope="module")
def ptni():
    img, truth = simulate(size=384, elements=("Pt", "Ni"), dose=4e4, seed=3, loading_per_nm2=0.4,
                          pattern="clustered", dimer_fraction=0.3, vacuum="none")
    return img.astype(np.float32), truth


def test_species_and_clusters_written(ptni, tmp_path):
    img, _ = ptni
    res = analyze(Micrograph(img, 0.0293, "synth", "ptni", {}), elements=["Pt", "Ni"])
    s = res.summary
    assert s["species"]["mode"] == "elements" and s["species"]["elements"] == ["Ni", "Pt"]
    assert s["species"]["status"] in ("ok", "one intensity class")
    assert s["cluster_size_distribution"]["n_clusters"] == len(res.cluster_table)
    assert s["pixel_size_source"] == "synth" and s["pixel_size_estimate"] is None
    paths = write_result(res, tmp_path / "ptni")
    for k in ("atoms", "clusters", "summary", "overlay", "nn_histogram", "cluster_sizes"):
        assert paths[k].is_file()
    assert (tmp_path / "ptni" / "nn_histogram.png").read_bytes()[:4] == b"\x89PNG"
    with open(paths["atoms"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ATOM_COLUMNS + ["species", "species_probability"]
    assert len(rows) == len(res.detections)
    assert {r["species"] for r in rows} == set(res.species.species.tolist())
    with open(paths["clusters"], newline="") as fh:
        crow = list(csv.DictReader(fh))
    assert sum(int(r["n_atoms"]) for r in crow) == len(rows)
    ids = {int(r["cluster_id"]) for r in rows}
    assert ids == {int(r["cluster_id"]) for r in crow}
    big = max(crow, key=lambda r: int(r["n_atoms"]))
    members = [r for r in rows if int(r["cluster_id"]) == int(big["cluster_id"])]
    assert float(big["x_nm"]) == pytest.approx(np.mean([float(r["x_nm"]) for r in members]), rel=1e-4)
    summ = json.loads(paths["summary"].read_text())
    assert summ["species"]["counts"] == res.species.counts()


def test_uncalibrated_image_gets_a_pixel_size_from_its_atoms(ptni):
    img, _ = ptni
    res = analyze(img, support_mask=False)
    s = res.summary
    assert s["pixel_size_source"] == "estimated from atom size"
    assert s["pixel_size_nm"] == pytest.approx(0.0293, rel=0.3)
    assert s["pixel_size_estimate"]["atom_scale_px"] > 0
    off = analyze(img, support_mask=False, estimate_pixel_size=False).summary
    assert off["pixel_size_nm"] is None and off["pixel_size_estimate"] is None
