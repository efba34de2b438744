"""Reports: overlay PNGs, plots, the self-contained HTML and `fastsac report`."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastsac.figures import (cluster_size_figure, nn_histogram_figure, pair_correlation_figure, save_figure,
                             save_overlay)
from fastsac.report import build_image_report, write_html_report
from fastsac.spatial.stats import pool_dispersion


def synthetic_image(rng, shape=(128, 160)):
    img = 1000 + 50 * rng.normal(size=shape)
    img[:30, :] = 200 + 3 * rng.normal(size=(30, shape[1]))    # vacuum strip on top
    xy = np.array([[40.0, 60.0], [45.0, 60.0], [100.0, 90.0], [120.0, 50.0], [70.0, 100.0], [73.0, 104.0],
                   [76.0, 100.0]])
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for x, y in xy:
        img += 2000 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    mask = np.ones(shape, bool)
    mask[:30] = False
    return img, xy, mask


@pytest.mark.parametrize("color_by", ["cluster-class", "species", "score", "none"])
def test_save_overlay(tmp_path, rng, color_by):
    img, xy, mask = synthetic_image(rng)
    keep = img.copy()
    out = save_overlay(tmp_path / "o.png", img, xy, pixel_size_nm=0.03, color_by=color_by, mask=mask,
                       species=[0, 0, 1, 1, 0, 1, -1], score=np.linspace(1, 5, 7), cluster_cutoff_nm=0.2)
    np.testing.assert_array_equal(img, keep)
    im = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert im.shape[0] > 300 and im.shape[1] > 300
    # Vacuum (the top 30 of 128 rows) is shaded blue: ~ a fifth of the picture is bluish.
    bluish = (im[..., 2] > im[..., 0] + 40).mean()
    assert 0.1 < bluish < 0.35
    assert list(tmp_path.iterdir()) == [out]        # atomic: no temporary files left


def test_overlay_validates(tmp_path, rng):
    img, xy, mask = synthetic_image(rng)
    with pytest.raises(ValueError, match="color_by"):
        save_overlay(tmp_path / "o.png", img, xy, color_by="rainbow")
    with pytest.raises(ValueError, match="species"):
        save_overlay(tmp_path / "o.png", img, xy, color_by="species")
    with pytest.raises(ValueError, match="mask"):
        save_overlay(tmp_path / "o.png", img, xy, mask=mask[:10])
    assert not (tmp_path / "o.png").exists()


def test_plots(tmp_path, rng):
    img, xy, mask = synthetic_image(rng)
    rep = build_image_report("s", xy, image=img, pixel_size_nm=0.03, n_sim=19)
    assert rep.mask is not None and not rep.mask[:25].any() and rep.mask[40:].all()
    for name, fig in (("nn", nn_histogram_figure(rep.stats)), ("cl", cluster_size_figure(rep.stats)),
                      ("g", pair_correlation_figure(rep.pattern)),
                      ("pooled", nn_histogram_figure(pool_dispersion([rep.stats, rep.stats])))):
        p = save_figure(tmp_path / f"{name}.png", fig)
        assert Image.open(p).size[0] >= 400
    d = rep.as_dict()
    assert d["n_trimers"] == 1 and d["n_dimers"] == 1 and d["n_monomers"] == 2
    assert d["pattern_n_sim"] == 19 and 0 < d["vacuum_fraction"] < 0.3


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links, self.tables, self.stack = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("link", "script") or (tag == "a" and "href" in a):
            self.links.append((tag, a))
        if tag == "table":
            self.tables += 1


def _reports(rng, n=2):
    out = []
    for i in range(n):
        img, xy, mask = synthetic_image(rng)
        out.append(build_image_report(f"img<{i}>", xy, image=img, pixel_size_nm=0.03, n_sim=9,
                                      intensity=rng.normal(10, 1, len(xy)), summary={"detector": "test"}))
    return out


def test_html_report_is_self_contained(tmp_path, rng):
    reps = _reports(rng)
    path = write_html_report(tmp_path / "r.html", reps, title="T & S", sample="before")
    text = path.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(text)
    assert p.imgs and all(s.startswith("data:image/png;base64,") for s in p.imgs)
    assert not p.links                                   # no external assets or scripts
    assert "http://" not in text and "https://" not in text
    assert "img&lt;0&gt;" in text and "<h1>T &amp; S</h1>" in text   # names are escaped
    # Per image: overlay (+ species overlay when > 1 species), NN histogram, cluster bars, g(r);
    # pooled: 2 plots.
    n_sp = sum(r.species.n_species > 1 for r in reps)
    assert len(p.imgs) == 2 * 4 + n_sp + 2
    assert "Species (Gaussian mixture" in text
    assert p.tables >= 2
    m = re.search(r"<pre>(.*)</pre>", text, re.S)
    data = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&#x27;", "'").replace("&amp;", "&"))
    assert data["pooled"]["n_atoms"] == 14 and len(data["images"]) == 2


def _analyze_folder(root: Path, rng, images: Path | None = None) -> list[dict]:
    """Two simulated frames with vacuum, analysed by `fastsac analyze` into ``root``."""
    from fastsac.cli import main
    from fastsac.io import write_tiff

    images = images or root.parent / f"{root.name}_images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        img, xy, mask = synthetic_image(rng, shape=(160, 192))
        write_tiff(images / f"frame{i}.tif", img.astype(np.float32), pixel_size_nm=0.03)
    assert main(["analyze", str(images), "-o", str(root), "--zip"]) == 0
    return [json.loads((root / f"frame{i}" / "summary.json").read_text()) for i in range(2)]


def test_cli_report_reproduces_the_analysis_after_the_images_moved(tmp_path, rng, capsys):
    from fastsac.cli import main

    summaries = _analyze_folder(tmp_path / "out", rng)
    first = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for f in (tmp_path / "out_images").iterdir():   # the images are gone: nothing may change
        f.unlink()
    rc = main(["report", str(tmp_path / "out"), "--sample", "demo"])
    assert rc == 0
    html_text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [d["name"] for d in data["images"]] == ["frame0", "frame1"]
    for got, want in zip(data["images"], summaries):
        assert want["vacuum_fraction"] > 0.1                     # the simulated vacuum strip
        for k in ("n_atoms", "n_atoms_in_support", "density_per_nm2", "vacuum_fraction", "nn_mean_nm",
                  "nn_median_nm", "multimer_fraction", "clark_evans_R", "clark_evans_p_value", "n_dimers",
                  "n_trimers", "n_clusters_4plus"):
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-12), k
        assert got["L_p_value"] == want["pair_correlation"]["L_p_value"]
    assert data["pooled"]["n_atoms"] == sum(s["n_atoms"] for s in summaries)
    assert "frame1" in html_text and "report.html" in capsys.readouterr().out
    # Same numbers as the report `analyze` wrote (tables are the same text).
    table = lambda t: re.search(r"<h2>Summary</h2>(.*?)</table>", t, re.S).group(1)  # noqa: E731
    assert table(first) == table(html_text)


def test_report_refuses_a_folder_missing_what_it_needs(tmp_path, rng, capsys):
    from fastsac.cli import main

    _analyze_folder(tmp_path / "out", rng)
    capsys.readouterr()
    (tmp_path / "out" / "frame0" / "support_mask.png").unlink()
    assert main(["report", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "support_mask.png" in err and "frame0" in err and len(err.strip().splitlines()) == 1
    summ = json.loads((tmp_path / "out" / "frame1" / "summary.json").read_text())
    del summ["support_area_px2"]
    (tmp_path / "out" / "frame1" / "summary.json").write_text(json.dumps(summ))
    (tmp_path / "out" / "frame0").rename(tmp_path / "elsewhere")
    assert main(["report", str(tmp_path / "out")]) == 2
    assert "support_area_px2" in capsys.readouterr().err


def test_zip_bundles_hold_every_view(tmp_path, rng):
    import io
    import zipfile

    import pyarrow.parquet as pq

    summaries = _analyze_folder(tmp_path / "out", rng)
    with zipfile.ZipFile(tmp_path / "out" / "frame0.zip") as z:
        names = set(z.namelist())
        assert {"frame0/atoms.csv", "frame0/atoms.parquet", "frame0/summary.json", "frame0/overlay.png",
                "frame0/support_mask.png", "frame0/nn_histogram.png", "frame0/cluster_sizes.png",
                "frame0/pair_correlation.png"} <= names
        summ = json.loads(z.read("frame0/summary.json"))
        assert summ["density_per_nm2"] == summaries[0]["density_per_nm2"]
        rows = z.read("frame0/atoms.csv").decode().strip().splitlines()
        assert len(rows) == 1 + summaries[0]["n_atoms"]
        tab = pq.read_table(io.BytesIO(z.read("frame0/atoms.parquet")))
        assert tab.num_rows == summaries[0]["n_atoms"] and "in_support" in tab.column_names
        Image.open(io.BytesIO(z.read("frame0/overlay.png"))).verify()
    with zipfile.ZipFile(tmp_path / "out" / "batch.zip") as z:
        names = set(z.namelist())
        assert {"summary.csv", "report.html", "frame0/atoms.csv", "frame1/summary.json"} <= names
        csv_rows = z.read("summary.csv").decode().strip().splitlines()
        assert len(csv_rows) == 3 and csv_rows[0].startswith("image,input,status")


def test_cli_report_bad_folder(tmp_path, capsys):
    from fastsac.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "atoms.csv" in capsys.readouterr().err


def test_cli_report_compares_two_samples(tmp_path, rng):
    import shutil

    from fastsac.cli import main

    _analyze_folder(tmp_path / "before", rng)
    shutil.copytree(tmp_path / "before", tmp_path / "after")
    rc = main(["report", str(tmp_path / "before"), "--compare", str(tmp_path / "after"), "--n-perm", "199"])
    assert rc == 0
    data = json.loads((tmp_path / "before" / "report.json").read_text())
    c = data["comparison"]
    assert c["sample_a"] == "before" and c["sample_b"] == "after" and c["n_perm"] == 199
    # Same positions in both samples: no difference at all.
    assert c["nn_mean_diff_nm"] == pytest.approx(0) and c["ks_statistic"] == pytest.approx(0)
    assert c["nn_mean_p_value"] == 1.0
    assert "Comparison: before vs after" in (tmp_path / "before" / "report.html").read_text(encoding="utf-8")
    assert main(["report", str(tmp_path / "before"), "--compare", str(tmp_path / "nowhere")]) == 2


def test_html_report_with_empty_and_single_atom_images(tmp_path):
    reps = [build_image_report("empty", np.zeros((0, 2)), image_shape=(64, 64), pixel_size_nm=0.1),
            build_image_report("one", [[3.0, 3.0]], image_shape=(64, 64), pixel_size_nm=0.1),
            build_image_report("two", [[3.0, 3.0], [30.0, 40.0]], image_shape=(64, 64), pixel_size_nm=0.1)]
    text = write_html_report(tmp_path / "r.html", reps).read_text(encoding="utf-8")
    assert "empty" in text and "fewer than 2 atoms" not in text   # plots are images, text is in the PNG
    assert reps[0].as_dict()["n_atoms"] == 0 and reps[2].as_dict()["nn_mean_nm"] == pytest.approx(
        np.hypot(27, 37) * 0.1)


def test_overlay_marks_atoms_on_vacuum_and_downsamples_large_frames(rng):
    from fastsac.figures import overlay_figure

    img, xy, mask = synthetic_image(rng)
    xy_vac = np.vstack([xy, [[20.0, 10.0], [150.0, 5.0]]])  # two atoms in the vacuum strip
    fig = overlay_figure(img, xy_vac, pixel_size_nm=0.03, mask=mask, cluster_cutoff_nm=0.2)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "on vacuum (2, not in densities)" in labels
    fig = overlay_figure(img, xy, pixel_size_nm=0.03, mask=mask, cluster_cutoff_nm=0.2)
    assert not any("vacuum" in t.get_text() for t in fig.axes[0].get_legend().get_texts())

    big = np.kron(img, np.ones((10, 10)))  # 1280 × 1600 px: drawn block-averaged by 2
    fig = overlay_figure(big, xy * 10, pixel_size_nm=0.003, mask=np.kron(mask, np.ones((10, 10), bool)))
    ax = fig.axes[0]
    shown = ax.get_images()[0].get_array()
    assert shown.shape == (640, 800)                       # ceil(1600 / 1200) = 2
    assert ax.get_xlim() == (-0.5, 1599.5) and ax.get_ylim() == (1279.5, -0.5)  # full-resolution axes
    assert ax.get_images()[0].get_extent() == [-0.5, 1599.5, 1279.5, -0.5]
    full = overlay_figure(big, xy * 10, pixel_size_nm=0.003, max_display_px=None)
    assert full.axes[0].get_images()[0].get_array().shape == big.shape
