"""analyze() writes the confidence columns and summary block."""

from __future__ import annotations

import csv
import json

import numpy as np

from fastsac.pipeline import ATOM_COLUMNS, SUMMARY_COLUMNS, analyze, summary_row, write_result
from fastsac.synth import demo_image


def test_analyze_writes_probability_and_pair_columns(tmp_path):
    m, truth = demo_image(seed=0)
    res = analyze(m, support_mask=False)
    for c in ("probability", "probability_expert", "split_probability"):
        assert c in ATOM_COLUMNS
    t = res.atoms_table()
    p = t["probability"]
    assert len(p) == len(res.detections) > 10
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    conf = res.summary["confidence"]
    e = conf["expected_atoms"]
    assert e["expected"] == sum(p) or abs(e["expected"] - float(p.sum())) < 1e-9
    lo, hi = e["interval"]
    assert lo <= e["expected"] <= hi <= len(p)
    # the demo frame has dimers: some atoms had a close partner decision
    assert conf["close_pairs"]["atoms_with_one_or_two_decision"] >= 1
    row = summary_row(res.summary)
    assert {"expected_atoms_in_support", "multimer_fraction_lo"} <= set(SUMMARY_COLUMNS)
    assert row["expected_atoms_in_support"] == conf["expected_atoms_in_support"]["expected"]
    paths = write_result(res, tmp_path, overlay=False)
    rows = list(csv.DictReader(open(paths["atoms"])))
    assert list(rows[0])[:len(ATOM_COLUMNS)] == ATOM_COLUMNS  # then species, species_probability
    assert all(0 < float(r["probability"]) <= 1 for r in rows)  # 6 significant digits
    s = json.loads(open(paths["summary"]).read())
    assert s["confidence"]["probability_column"] == "probability"
