"""The README's Python example runs as written (on simulated frames named as it names them)."""

from __future__ import annotations

import re
from pathlib import Path

from fastsac_testdata import REPO


def _python_api_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    from fastsac.io import write_tiff
    from fastsac.synth import simulate

    frame, truth = simulate(size=512, seed=1)
    write_tiff(tmp_path / "frame.tif", frame, pixel_size_nm=0.0293)
    xy = truth.xy
    (tmp_path / "frame.csv").write_text("X,Y\n" + "".join(f"{x},{y}\n" for x, y in xy))
    montage, _ = simulate(size=1024, seed=2)
    write_tiff(tmp_path / "montage.tif", montage, pixel_size_nm=0.0293)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_python_api_block(), "README.md", "exec"), ns)
    res, saved = ns["res"], ns["saved"]
    assert len(res.detections) > 10
    assert saved.summary["density_per_nm2"] == res.summary["density_per_nm2"]
    assert 0.0 <= res.summary["multimer_fraction"] <= 1.0
    assert res.summary["pair_correlation"]["L_p_value"] is not None
    assert Path("out/frame.zip").stat().st_size > 1000 and Path("out/atoms.parquet").is_file()
    assert ns["mres"].statistics["n_atoms"] > 10 and ns["r"].latency_s > 0
