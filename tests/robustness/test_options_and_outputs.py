"""Options, environment and output problems: one line before any work (issue 16,
parts 2, 4 and 8), and the flag names of issue 12 item 4."""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat

import numpy as np
import pytest

from fastsac.cli import build_parser, main

from .battery import good_tiff, imagej_tiff, spot_image


def _one_line(err: str, *fragments) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert "Traceback" not in err
    assert len(lines) == 1, lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def frame(tmp_path):
    return good_tiff(tmp_path / "frame.tif")


# --------------------------------------------------------------------------- option values
@pytest.mark.parametrize("opt, value", [
    ("--threshold", "nan"), ("--threshold", "-1"), ("--threshold", "inf"),
    ("--multimer-cutoff-nm", "-0.2"), ("--multimer-cutoff-nm", "nan"),
    ("--multimer-cutoff", "-0.2"),
    ("--pixel-size", "1e-9"), ("--pixel-size", "1e6"), ("--pixel-size", "0"),
    ("--pixel-size", "nan"), ("--max-pixels", "0"),
])
def test_bad_option_values_are_refused_before_work(frame, tmp_path, capsys, opt, value):
    assert main(["analyze", str(frame), "-o", str(tmp_path / "o"), opt, value]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and opt in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "0"])
def test_evaluate_tolerance_must_be_positive(tmp_path, capsys, value):
    assert main(["evaluate", "--images", str(tmp_path), "--labels", str(tmp_path),
                 "--tolerance-px", value]) == 2
    _one_line(capsys.readouterr().err, "--tolerance-px")


def test_backend_numba_is_gone_and_cuda_without_gpu_is_one_line(frame, tmp_path, capsys):
    assert main(["analyze", str(frame), "-o", str(tmp_path / "o"), "--backend", "numba"]) == 2
    capsys.readouterr()
    from fastsac._backend import Backend, unavailable_reason

    if unavailable_reason(Backend.CUDA) is None:
        pytest.skip("a CUDA device is present")
    rc = main(["analyze", str(frame), "-o", str(tmp_path / "o"), "--backend", "cuda"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "--backend cuda")
    assert not (tmp_path / "o").exists()  # refused before the output was touched


# --------------------------------------------------------------------------- outputs
def test_out_naming_an_existing_file(frame, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc = main(["analyze", str(frame), "-o", str(tmp_path / "afile"), "--detector", "classical"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "afile", "not a directory")


def test_out_not_creatable(frame, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc = main(["analyze", str(frame), "-o", str(tmp_path / "afile" / "sub")])
    assert rc == 2
    _one_line(capsys.readouterr().err, "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_not_writable(frame, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        rc = main(["analyze", str(frame), "-o", str(ro / "out")])
    finally:
        ro.chmod(stat.S_IRWXU)
    assert rc == 2
    _one_line(capsys.readouterr().err, "not writable")


def test_write_failure_mid_batch_is_one_line_per_file(tmp_path, capsys, monkeypatch):
    """A disk that fills up while one image's outputs are written: that image is
    one line, the next one is analysed."""
    from fastsac import result as result_mod

    a, b = good_tiff(tmp_path / "a.tif"), good_tiff(tmp_path / "b.tif", seed=1)
    real = result_mod.write_result

    def full_disk(result, out_dir, **kw):
        if result.name == "a":
            raise OSError(28, "No space left on device", str(out_dir))
        return real(result, out_dir, **kw)

    monkeypatch.setattr(result_mod, "write_result", full_disk)
    rc = main(["analyze", str(a), str(b), "-o", str(tmp_path / "o"), "--detector", "classical",
               "--no-report", "--no-overlay"])
    assert rc == 2
    line = _one_line(capsys.readouterr().err, "a.tif", "No space left on device")
    assert line.startswith("fastsac: skipped")
    assert (tmp_path / "o" / "b" / "summary.json").exists()


def test_same_stem_inputs_get_distinct_folders(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good_tiff(tmp_path / "a" / "frame.tif", seed=1)
    good_tiff(tmp_path / "b" / "frame.tif", seed=2)
    out = tmp_path / "o"
    rc = main(["analyze", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out),
               "--detector", "classical", "--no-overlay", "--no-report"])
    assert rc == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["image"] for r in rows] == ["a_frame", "b_frame"]
    assert [r["file"] for r in rows] == [str(tmp_path / "a" / "frame.tif"),
                                         str(tmp_path / "b" / "frame.tif")]
    xa = (out / "a_frame" / "atoms.csv").read_text()
    xb = (out / "b_frame" / "atoms.csv").read_text()
    assert xa != xb  # two different frames, neither overwritten


def test_output_names_are_unique():
    from pathlib import Path

    from fastsac.cli._common import output_names

    files = [Path("/x/a/frame.tif"), Path("/y/a/frame.tif"), Path("/x/b/frame.TIF"),
             Path("/x/a/frame.png"), Path("/x/a/other.tif")]
    names = output_names(files)
    assert len({n.lower() for n in names}) == len(names)
    assert names[-1] == "other"


def test_rerun_refuses_without_overwrite_and_replaces_consistently(tmp_path, capsys):
    a, b = good_tiff(tmp_path / "a.tif"), good_tiff(tmp_path / "b.tif", seed=1)
    out = tmp_path / "o"
    args = ["--detector", "classical", "--no-overlay"]
    assert main(["analyze", str(a), str(b), "-o", str(out), *args]) == 0
    capsys.readouterr()
    rc = main(["analyze", str(a), "-o", str(out), *args])
    assert rc == 2
    _one_line(capsys.readouterr().err, "--overwrite", str(out))
    assert (out / "b" / "summary.json").exists()  # untouched
    # A stale temporary from a killed run, and a user's own file, are in the folder.
    (out / "a" / ".atoms.csv.ab12cd34.tmp").write_text("half")
    (out / "notes.txt").write_text("mine")
    assert main(["analyze", str(a), "-o", str(out), "--overwrite", *args]) == 0
    assert not (out / "b").exists()  # b belonged to the earlier run only
    assert not (out / "a" / ".atoms.csv.ab12cd34.tmp").exists()
    assert (out / "notes.txt").read_text() == "mine"
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["image"] for r in rows] == ["a"]
    report = (out / "report.html").read_text()
    assert ">a<" in report or "a.tif" in report or '"a"' in report
    assert json.loads((out / "manifest.json").read_text())["outputs"] == ["a"]


def test_outputs_follow_the_umask(frame, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["analyze", str(frame), "-o", str(tmp_path / "o"), "--detector",
                     "classical", "--no-report"]) == 0
    finally:
        os.umask(old)
    for name in ("atoms.csv", "summary.json", "overlay.png"):
        mode = stat.S_IMODE((tmp_path / "o" / "frame" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
    assert stat.S_IMODE((tmp_path / "o" / "summary.csv").stat().st_mode) == 0o644


def test_uncalibrated_input_is_announced_and_recorded(tmp_path, capsys):
    np.save(tmp_path / "raw.npy", spot_image())
    rc = main(["analyze", str(tmp_path / "raw.npy"), "-o", str(tmp_path / "o"), "--detector",
               "classical", "--no-report", "--no-overlay"])
    assert rc == 0
    # issue 13 item 7: the pixel size is estimated from the atoms and the note says so
    _one_line(capsys.readouterr().err, "raw.npy", "no usable calibration", "estimated from the atom size")
    s = json.loads((tmp_path / "o" / "raw" / "summary.json").read_text())
    assert s["pixel_size_source"] == "estimated from atom size" and s["pixel_size_assumed_nm"] is None
    assert s["pixel_size_nm"] == pytest.approx(s["pixel_size_estimate"]["pixel_size_nm"])
    assert s["length_unit"] == "nm"


def test_stack_frames_are_each_analysed(tmp_path, capsys):
    import tifffile

    frames = [spot_image(seed=s) for s in range(2)]
    tifffile.imwrite(tmp_path / "s.tif", np.stack(frames), imagej=True,
                     resolution=(1 / 0.0293, 1 / 0.0293), metadata={"unit": "nm"})
    rc = main(["analyze", str(tmp_path / "s.tif"), "-o", str(tmp_path / "o"), "--detector",
               "classical", "--no-report", "--no-overlay"])
    assert rc == 0
    from fastsac.pipeline import analyze

    for k, f in enumerate(frames):
        s = json.loads((tmp_path / "o" / f"s_f{k:03d}" / "summary.json").read_text())
        ref = analyze(f, detector="classical", pixel_size_nm=0.0293).summary
        assert s["n_atoms"] == ref["n_atoms"] == 10
        assert s["pixel_size_nm"] == pytest.approx(0.0293, rel=1e-4)


# --------------------------------------------------------------------------- flag names
def _all_subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help_text():
    for name, p in _all_subparsers().items():
        for a in p._actions:
            if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                continue
            assert a.help and a.help.strip(), (name, a.option_strings or a.dest)


def test_one_flag_name_per_concept():
    subs = _all_subparsers()
    for name, p in subs.items():
        opts = p._option_string_actions
        assert "-v" in opts, name
        if name in ("analyze", "montage", "watch", "demo", "simulate", "train", "report",
                    "bench", "evaluate"):
            assert "-o" in opts and "--out" in opts, name
        if "--multimer-cutoff-nm" in opts or "--multimer-cutoff" in opts:
            assert opts["--multimer-cutoff"].help == argparse.SUPPRESS
        if "--backend" in opts:
            assert "numba" not in opts["--backend"].choices
    for name in ("evaluate", "train"):
        assert {"--images", "--labels"} <= set(subs[name]._option_string_actions), name
    assert "--detector" in subs["bench"]._option_string_actions


def test_verbose_after_the_subcommand(frame, tmp_path):
    parser = build_parser()
    args = parser.parse_args(["analyze", str(frame), "-o", "x", "-vv"])
    assert args.verbose == 2
    args = parser.parse_args(["-v", "analyze", str(frame), "-o", "x"])
    assert args.verbose == 1


def test_deprecated_multimer_cutoff_alias_still_works(frame, tmp_path, capsys):
    rc = main(["analyze", str(frame), "-o", str(tmp_path / "o"), "--detector", "classical",
               "--multimer-cutoff", "0.3", "--no-report", "--no-overlay"])
    assert rc == 0
    assert "deprecated" in capsys.readouterr().err
    s = json.loads((tmp_path / "o" / "frame" / "summary.json").read_text())
    assert s["multimer_cutoff_nm"] == pytest.approx(0.3)


def test_train_accepts_the_layout_simulate_writes(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--count", "2", "--size", "192"]) == 0
    rc = main(["train", "--images", str(sim), "--model", "rescore", "-o",
               str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr()
    assert json.loads((tmp_path / "r.json").read_text())


def test_report_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    _one_line(capsys.readouterr().err, "nope")


def test_imagej_calibration_in_range_is_kept(tmp_path):
    from fastsac.io import read

    m = read(imagej_tiff(tmp_path / "c.tif", 0.05))
    assert m.pixel_size_nm == pytest.approx(0.05) and m.pixel_size_source == "imagej"
