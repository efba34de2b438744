"""Retraining the re-scorer on a consensus with per-atom weights, evaluated before promotion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastsac.cli import main
from fastsac.detectors.rescore import CandidateTable
from fastsac.retrain import consensus_targets


def test_consensus_targets_are_group_probabilities():
    tab = CandidateTable(np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 10.0]]), np.zeros(3), np.zeros((3, 1)), {}, {})
    y = consensus_targets(tab, [[11.0, 10.0], [90.0, 13.0], [200.0, 200.0]], [0.9, 0.3, 1.0], tolerance_px=6)
    np.testing.assert_allclose(y, [0.9, 0.0, 0.3])
    with pytest.raises(ValueError, match="groups"):
        consensus_targets(tab, [[1.0, 1.0]], [0.5, 0.5])


def test_cli_train_on_consensus(tmp_path, ptnc_dir, rng, capsys):
    from fastsac.detectors import get_detector
    from fastsac.io import read_points
    stems = ["021", "025", "027"]
    img = tmp_path / "images"
    img.mkdir()
    for s in stems:
        (img / f"{s}.tif").symlink_to(ptnc_dir / "images" / f"{s}.tif")
    dirs = []
    for a, (keep, nf) in enumerate([(1.0, 0), (0.85, 3), (0.75, 8)]):
        d = tmp_path / f"ann{a}"
        d.mkdir()
        for s in stems:
            t = read_points(ptnc_dir / "labels" / f"{s}.csv")
            k = rng.random(len(t)) < keep
            pts = np.concatenate([t[k] + rng.normal(0, 0.7, (k.sum(), 2)), rng.uniform(0, 511, (nf, 2))])
            (d / f"{s}.csv").write_text("X,Y\n" + "".join(f"{x},{y}\n" for x, y in pts))
        dirs.append(str(d))
    assert main(["consensus", *dirs, "-o", str(tmp_path / "cons"), "--tolerance-px", "4"]) == 0
    out = tmp_path / "model.json"
    rc = main(["train", str(img), "--model", "rescore", "--consensus", str(tmp_path / "cons"), "-o", str(out),
               "--folds", "3", "--baseline", "classical"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "held-out F1 vs consensus" in text
    rep = json.loads(out.with_suffix(".eval.json").read_text())
    assert set(rep["per_image"]) == set(stems) and rep["folds"] == 3
    assert 0.3 < rep["f1_new_heldout"] <= 1 and 0.3 < rep["f1_baseline"] <= 1
    assert rep["better"] == (rep["f1_new_heldout"] > rep["f1_baseline"])
    assert ("may become the default" in text) == rep["better"]
    det = get_detector(str(out))  # the retrained model loads as a detector
    assert det.model.meta["trained_on"] == "consensus"
    assert main(["train", str(img), "--consensus", str(tmp_path / "cons")]) == 2  # needs --model rescore
    assert main(["train", str(img), "--model", "rescore", "--consensus", str(tmp_path / "ann0")]) == 2
