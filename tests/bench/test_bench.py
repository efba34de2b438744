"""Benchmark helpers: the generator's truth, the stand-in model, the report."""

from __future__ import annotations

import json

import numpy as np

from fastsac import bench, infer
from fastsac.evaluate import match_points


def test_synthetic_image_truth_and_dtype():
    img, truth = bench.synthetic_image(256, density_per_mpx=1500, seed=3)
    assert img.shape == (256, 256) and img.dtype == np.float32
    assert len(truth) == int(1500 * 256 * 256 / 1e6)
    xi, yi = np.round(truth).astype(int).T
    assert np.median(img[yi, xi]) > np.median(img) + 0.3  # atoms are bright spots
    u16, t2 = bench.synthetic_image(128, seed=3, dtype=np.uint16)
    assert u16.dtype == np.uint16 and u16.max() > 500


def test_stand_in_model_detects_the_atoms():
    img, truth = bench.synthetic_image(192, density_per_mpx=1500, seed=1)
    net, pre = bench.stand_in_model()
    assert infer.receptive_field(net) == 9 and pre.receptive_field == 4
    det = infer.detect_tiled(img, net, threshold=0.5, min_distance_px=3.0, refine="com",
                             halo=16, tile=96, device="cpu")
    m = match_points(det.xy, truth, tolerance_px=2.0)
    assert m.f1 > 0.85


def test_run_bench_default_detector():
    # the default model is the default (classical) detector: C++ exact tiling on CPU
    cfg = bench.BenchConfig(sizes=(300,), device="cpu", baselines=False, kernels=False, tile=128)
    res = bench.run_bench(cfg)
    r = res["sizes"][0]
    assert "error" not in r, r
    assert 0.8 * r["n_truth"] < r["n_detected"] < 1.2 * r["n_truth"]
    assert r["end_to_end_mpx_s"] > 0 and r["peaks_backend"] == "cpp"
    # the torch path (what runs on a GPU), exercised on the CPU
    img, truth = bench.synthetic_image(300, seed=0)
    rt = bench._bench_classical({"size": 300}, img, cfg, "cpu", torch_path=True)
    assert rt["calibration"]["method"] == "exact"
    assert rt["n_detected"] == r["n_detected"]
    assert rt["end_to_end_mpx_s"] > 0 and rt["inference_mpx_s"] > 0


def test_run_bench_report(tmp_path):
    cfg = bench.BenchConfig(sizes=(160,), device="cpu", baselines=False, kernels=False,
                            model="builtin")
    res = bench.run_bench(cfg)
    r = res["sizes"][0]
    assert r["size"] == 160 and r["n_detected"] > 0.8 * r["n_truth"]
    for k in ("read", "inference", "peaks", "end_to_end"):
        assert r[f"{k}_mpx_s"] > 0
    assert res["peak_rss_mb"] > 0 and res["meta"]["device"] == "cpu"
    table = bench.format_table(res)
    assert "160" in table and "Mpx/s" in table
    json.dumps(res, default=float)  # serialisable


def test_cli_parser():
    import argparse

    from fastsac.cli import bench as cli

    sub = argparse.ArgumentParser().add_subparsers()
    args = cli.add_parser(sub).parse_args(["--quick", "--device", "cpu", "--json", "x.json"])
    assert args.quick and args.device == "cpu" and args.json == "x.json" and args.size is None
