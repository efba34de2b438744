"""Consensus of several annotators: grouping, Dawid-Skene EM, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastsac.cli import main
from fastsac.consensus import (annotator_summary, build_consensus, fit_annotator_model,
                               group_points, group_probability, pairwise_f1)


def _simulate_votes(rng, n_real=400, n_fake=150, sens=(0.95, 0.8, 0.6, 0.9), fake=(0.1, 0.4, 0.2, 0.05)):
    """Votes with known classes and rates (conditionally independent given the class)."""
    s, f = np.asarray(sens), np.asarray(fake)
    real = rng.random((n_real, len(s))) < s
    spurious = rng.random((n_fake, len(f))) < f
    votes = np.concatenate([real, spurious]).astype(float)
    truth = np.r_[np.ones(n_real, bool), np.zeros(n_fake, bool)]
    keep = votes.sum(axis=1) > 0  # only groups somebody clicked exist
    return votes[keep], truth[keep], s, f


def test_em_recovers_annotator_rates(rng):
    votes, truth, s, f = _simulate_votes(rng, n_real=3000, n_fake=2000)
    m = fit_annotator_model(votes)
    assert m.converged
    np.testing.assert_allclose(m.sensitivity, s, atol=0.04)
    # Only groups with >= 1 click are observed; the zero-truncated model recovers the
    # untruncated false-click parameters (the observed rates are much higher).
    np.testing.assert_allclose(m.false_click, f, atol=0.04)
    assert np.all(votes[~truth].mean(axis=0) - f > 0.02)
    # Real atoms nobody clicked: 3000 * prod(1 - s) ~ 0.3.
    assert 0 <= m.n_unseen < 5
    assert abs(m.prior - truth.mean()) < 0.04
    # The posterior classifies better than majority vote.
    em_acc = np.mean((m.probability >= 0.5) == truth)
    maj_acc = np.mean((votes.mean(axis=1) >= 0.5) == truth)
    assert em_acc > maj_acc
    assert em_acc > 0.9


def test_em_posterior_matches_e_step_and_handles_missing(rng):
    votes, truth, _, _ = _simulate_votes(rng)
    votes[rng.random(votes.shape) < 0.2] = np.nan  # some annotators did not label some images
    m = fit_annotator_model(votes)
    p = group_probability(votes, sensitivity=m.sensitivity, false_click=m.false_click, prior=m.prior)
    np.testing.assert_allclose(p, m.probability, atol=1e-6)
    # A row with every voter absent gets the prior.
    row = np.full((1, votes.shape[1]), np.nan)
    p0 = group_probability(row, sensitivity=m.sensitivity, false_click=m.false_click, prior=m.prior)
    assert p0[0] == pytest.approx(m.prior)


def test_em_does_not_depend_on_group_or_voter_order(rng):
    votes, _, _, _ = _simulate_votes(rng)
    m = fit_annotator_model(votes)
    perm_g, perm_v = rng.permutation(len(votes)), rng.permutation(votes.shape[1])
    m2 = fit_annotator_model(votes[perm_g][:, perm_v])
    np.testing.assert_allclose(m2.probability, m.probability[perm_g], atol=1e-6)
    np.testing.assert_allclose(m2.sensitivity, m.sensitivity[perm_v], atol=1e-6)


def test_em_edge_cases():
    m = fit_annotator_model(np.zeros((0, 3)))
    assert len(m.probability) == 0 and np.isnan(m.sensitivity).all()
    with pytest.raises(ValueError, match="votes must lie in"):
        fit_annotator_model([[2.0, 0.0]])
    with pytest.raises(ValueError, match=r"\(G, V\)"):
        fit_annotator_model([1.0, 0.0])
    # Unanimous groups are real.
    m = fit_annotator_model(np.ones((5, 3)))
    assert np.all(m.probability > 0.5)
    v = np.array([[1.0, 0.0], [0.0, 1.0]])
    v_in = v.copy()
    fit_annotator_model(v)
    np.testing.assert_array_equal(v, v_in)  # input unchanged


def test_group_points_one_click_per_voter_and_tolerance():
    a = np.array([[10.0, 10.0], [12.0, 10.0], [100.0, 100.0]])
    b = np.array([[11.0, 10.0], [200.0, 5.0]])
    c = np.array([[10.5, 10.2], [12.2, 9.9], [104.5, 100.0]])  # 4.5 px from a's third
    g = group_points([a, b, c], tolerance_px=3.0)
    # Each voter at most once per group, every point in exactly one group.
    for v, pts in enumerate([a, b, c]):
        col = g.members[:, v]
        assert sorted(col[col >= 0].tolist()) == list(range(len(pts)))
    assert len(g) == 5  # {a0,b0,c0}, {a1,c1}, {a2}, {b1}, {c2}
    sizes = sorted((g.members >= 0).sum(axis=1).tolist())
    assert sizes == [1, 1, 1, 2, 3]
    # Group position = mean of members.
    full = np.flatnonzero((g.members >= 0).sum(axis=1) == 3)[0]
    np.testing.assert_allclose(g.xy[full], np.mean([a[0], b[0], c[0]], axis=0))


def test_group_points_absent_voter_and_soft_votes():
    g = group_points([[[5, 5]], None, [[6, 5], [40, 40]]], tolerance_px=3,
                     soft_votes=[None, None, [0.25, 0.75]], n_position_voters=2)
    assert np.isnan(g.votes[:, 1]).all()
    row = np.flatnonzero(g.members[:, 0] == 0)[0]
    assert g.votes[row].tolist()[0] == 1.0 and g.votes[row, 2] == 0.25
    np.testing.assert_allclose(g.xy[row], [5, 5])  # the detector does not move a human group
    det_only = np.flatnonzero(g.members[:, 0] < 0)[0]
    np.testing.assert_allclose(g.xy[det_only], [40, 40])
    assert g.votes[det_only, 2] == 0.75
    empty = group_points([np.zeros((0, 2)), None], tolerance_px=3)
    assert len(empty) == 0 and empty.votes.shape == (0, 2)
    with pytest.raises(ValueError, match="soft_votes"):
        group_points([[[1, 1]]], soft_votes=[[0.5, 0.5]])


def _noisy_annotators(rng, truth, sens, n_false, jitter=1.0, size=512):
    out = []
    for s, nf in zip(sens, n_false):
        keep = rng.random(len(truth)) < s
        pts = truth[keep] + rng.normal(0, jitter, (keep.sum(), 2))
        fake = rng.uniform(0, size, (nf, 2))
        out.append(np.concatenate([pts, fake]))
    return out


def test_build_consensus_beats_single_annotators_and_majority(rng):
    truth = {f"im{i}": rng.uniform(20, 490, (150, 2)) for i in range(4)}
    sens, n_false = (0.9, 0.7, 0.55, 0.85, 0.6), (3, 25, 5, 15, 30)
    labels = {k: _noisy_annotators(rng, t, sens, n_false) for k, t in truth.items()}

    def f1(sets):
        from fastsac.evaluate import match_points, pool
        return pool([match_points(sets[k], truth[k], tolerance_px=3) for k in truth])["f1"]

    em = build_consensus(labels, tolerance_px=3)
    assert em.method == "em" and em.n_classes == 3  # auto with 5 annotators
    em2 = build_consensus(labels, tolerance_px=3, n_classes=2)
    maj = build_consensus(labels, tolerance_px=3, method="majority")
    f_em = f1({k: im.xy for k, im in em.images.items()})
    f_maj = f1({k: im.xy for k, im in maj.images.items()})
    f_single = [f1({k: labels[k][a] for k in truth}) for a in range(len(sens))]
    assert f_em > max(f_single), (f_em, f_single)
    assert f_em >= f_maj - 0.005, (f_em, f_maj)
    f_em2 = f1({k: im.xy for k, im in em2.images.items()})
    assert f_em2 > max(f_single), (f_em2, f_single)
    # Fitted sensitivities rank the annotators as simulated.
    assert np.argsort(em.model.sensitivity).tolist() == np.argsort(sens).tolist()
    summ = annotator_summary(em)
    rates = [summ[a]["false_click_rate"] for a in em.annotators]
    # The annotators with many false clicks are recognised.
    assert rates[4] > rates[0] and rates[1] > rates[0]
    for im in em.images.values():
        assert np.all((im.agreement >= 0) & (im.agreement <= 1))


def test_detector_voter_helps_resolve_ties(rng):
    truth = rng.uniform(20, 490, (200, 2))
    labels = {"x": _noisy_annotators(rng, truth, (0.6, 0.6), (30, 30))}
    fake = rng.uniform(0, 512, (40, 2))
    det_xy = np.concatenate([truth + rng.normal(0, 0.5, truth.shape), fake])
    det_p = np.r_[np.full(len(truth), 0.9), np.full(len(fake), 0.1)]
    from fastsac.evaluate import match_points
    without = build_consensus(labels, tolerance_px=3, method="em")
    with_det = build_consensus(labels, tolerance_px=3, method="em", detections={"x": (det_xy, det_p)})
    f_without = match_points(without.images["x"].xy, truth, tolerance_px=3).f1
    f_with = match_points(with_det.images["x"].xy, truth, tolerance_px=3).f1
    assert with_det.voters == ("a0", "a1", "detector")
    assert f_with > f_without


def test_pairwise_f1():
    a = np.array([[0.0, 0.0], [10, 10]])
    labels = {"i": [a, a + 0.5, np.array([[0.0, 0.0]]), None]}
    m = pairwise_f1(labels, tolerance_px=2)
    assert m.shape == (4, 4)
    assert m[0, 1] == 1.0 and m[1, 0] == 1.0
    assert m[0, 2] == pytest.approx(2 * 1 / 3)
    assert np.isnan(m[0, 3]) and np.isnan(m[3, 3])
    np.testing.assert_array_equal(np.nan_to_num(m), np.nan_to_num(m.T))


def _write_labels(path, pts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(" ,X,Y\n" + "".join(f"{i + 1},{x:.2f},{y:.2f}\n" for i, (x, y) in enumerate(pts)))


def test_cli_consensus(tmp_path, rng, capsys):
    truth = {f"{i:03d}": rng.uniform(20, 490, (60, 2)) for i in range(3)}
    sens = (0.9, 0.8, 0.7)
    dirs = []
    for a, s in enumerate(sens):
        d = tmp_path / f"ann{a}"
        for stem, t in truth.items():
            if a == 2 and stem == "002":
                continue  # annotator 2 did not label this image
            _write_labels(d / f"{stem}.csv", _noisy_annotators(rng, t, [s], [3], jitter=0.7)[0])
        dirs.append(str(d))
    out = tmp_path / "out"
    rc = main(["consensus", *dirs, "-o", str(out), "--tolerance-px", "3", "--method", "em"])
    assert rc == 0
    assert "sensitivity" in capsys.readouterr().out
    rep = json.loads((out / "agreement.json").read_text())
    assert rep["annotators"] == ["ann0", "ann1", "ann2"]
    assert rep["per_image"]["002"]["counts"]["ann2"] is None
    assert rep["per_image"]["002"]["n_annotators"] == 2
    assert len(rep["pairwise_f1"]["matrix"]) == 3
    assert rep["per_annotator"]["ann0"]["sensitivity"] > rep["per_annotator"]["ann2"]["sensitivity"]
    from fastsac.evaluate import match_points
    from fastsac.io import read_points
    for stem, t in truth.items():
        lines = (out / f"{stem}.csv").read_text().splitlines()
        assert lines[0] == "X,Y,agreement,n_annotators,probability"
        pts = read_points(out / f"{stem}.csv")
        assert match_points(pts, t, tolerance_px=3).f1 > 0.9
        cols = np.array([[float(c) for c in ln.split(",")] for ln in lines[1:]])
        assert np.all(cols[:, 4] >= 0.5) and np.all(cols[:, 2] <= 1)
    # Majority vote and all groups.
    rc = main(["consensus", *dirs, "-o", str(tmp_path / "maj"), "--method", "majority", "--all-groups"])
    assert rc == 0
    head = (tmp_path / "maj" / "000.csv").read_text().splitlines()[0]
    assert head.endswith(",in_consensus")


def test_cli_consensus_bad_input(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_labels(a / "x.csv", [[1, 1]])
    b.mkdir()
    (b / "x.csv").write_text("foo,bar\n1,2\n")
    rc = main(["consensus", str(a), str(b), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "x.csv" in err and "Traceback" not in err
    assert (tmp_path / "o" / "x.csv").exists()  # the good annotator still counts
    rc = main(["consensus", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "not a folder" in capsys.readouterr().err
    rc = main(["consensus", str(a), "-o", str(tmp_path / "o"), "--min-probability", "2"])
    assert rc == 2


def test_cli_detections(tmp_path, rng):
    t = rng.uniform(20, 490, (50, 2))
    for a in range(2):
        _write_labels(tmp_path / f"h{a}" / "im.csv", _noisy_annotators(rng, t, [0.7], [5], jitter=0.7)[0])
    det = tmp_path / "det"
    det.mkdir()
    (det / "im.csv").write_text("x_px,y_px,probability\n" + "".join(f"{x},{y},0.9\n" for x, y in t))
    rc = main(["consensus", str(tmp_path / "h0"), str(tmp_path / "h1"), "-o", str(tmp_path / "o"),
               "--detections", str(det), "--method", "em"])
    assert rc == 0
    rep = json.loads((tmp_path / "o" / "agreement.json").read_text())
    assert rep["voters"] == ["h0", "h1", "detector"]
    det_rates = rep["per_annotator"]["detector"]
    assert det_rates["sensitivity"] > 0.7 and det_rates["images"] == 1


def test_bootstrap_f1_and_statistics(rng):
    from fastsac.consensus import bootstrap_f1, point_statistics, posterior_statistics
    iv = bootstrap_f1([10, 0], [0, 10], [0, 10], n_resamples=400, seed=1)
    assert iv.estimate == pytest.approx(0.5)
    assert iv.low < 0.2 and iv.high == 1.0  # resampling two very different images
    same = bootstrap_f1([5, 5, 5], [1, 1, 1], [1, 1, 1], n_resamples=100)
    assert same.low == same.high == same.estimate
    s = point_statistics([[[0, 0], [5, 0], [100, 100]]], areas_nm2=[10.0], pixel_sizes_nm=[0.04],
                         multimer_cutoff_nm=0.23)
    assert s["density_per_nm2"] == pytest.approx(0.3) and s["multimer_share"] == pytest.approx(2 / 3)
    xy = rng.uniform(0, 500, (200, 2))
    p = np.r_[np.ones(150), np.full(50, 0.5)]
    post = posterior_statistics({"a": (xy, p, p > 0.9)}, areas_nm2={"a": 100.0}, pixel_sizes_nm={"a": 0.03},
                                n_samples=400)
    d = post["density_per_nm2"]
    assert d["estimate"] == pytest.approx(1.5)
    assert post["expected_n_atoms"] == pytest.approx(175)
    # Samples keep 150 + Binomial(50, 0.5) atoms: 1.75 ± 0.07 per nm².
    assert 1.6 < d["low"] < 1.75 < d["high"] < 1.9


def test_cli_evaluate_against_consensus(tmp_path, ptnc_dir, rng, capsys):
    stems = ["021", "025"]
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for s in stems:
        (img_dir / f"{s}.tif").symlink_to(ptnc_dir / "images" / f"{s}.tif")
    from fastsac.io import read_points
    dirs = []
    for a, (keep, n_false) in enumerate([(1.0, 0), (0.85, 3), (0.75, 8)]):
        d = tmp_path / f"ann{a}"
        for s in stems:
            t = read_points(ptnc_dir / "labels" / f"{s}.csv")
            _write_labels(d / f"{s}.csv", _noisy_annotators(rng, t, [keep], [n_false], jitter=0.7)[0])
        dirs.append(str(d))
    assert main(["consensus", *dirs, "-o", str(tmp_path / "cons")]) == 0
    capsys.readouterr()
    rc = main(["evaluate", "--images", str(img_dir), "--consensus", str(tmp_path / "cons"),
               "--detector", "classical", "--device", "cpu", "--json", "--bootstrap", "300",
               "--annotator-resamples", "20"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    c = rep["consensus"]
    f = c["f1_vs_consensus"]
    assert f["estimate"] == pytest.approx(rep["f1"])
    assert f["low"] <= f["estimate"] <= f["high"]
    assert set(c["f1_vs_annotators"]) == {"ann0", "ann1", "ann2"}
    assert all(v["images"] == 2 for v in c["f1_vs_annotators"].values())
    st = c["statistics"]
    for key in ("consensus_posterior", "annotator_bootstrap"):
        dens = st[key]["density_per_nm2"]
        assert dens["low"] <= dens["estimate"] <= dens["high"]
        assert 0 <= st[key]["multimer_share"]["estimate"] <= 1
    assert st["detector"]["n_atoms"] == rep["tp"] + rep["fp"]
    # Table output names the interval.
    rc = main(["evaluate", "--images", str(img_dir), "--consensus", str(tmp_path / "cons"),
               "--detector", "classical", "--device", "cpu", "--bootstrap", "100",
               "--annotator-resamples", "0"])
    text = capsys.readouterr().out
    assert rc == 0 and "F1 vs consensus" in text and "F1 vs ann2" in text
    # Neither or both of --labels/--consensus: one clear line.
    rc = main(["evaluate", "--images", str(img_dir)])
    assert rc == 2 and "--labels" in capsys.readouterr().err
    rc = main(["evaluate", "--images", str(img_dir), "--consensus", str(tmp_path / "ann0")])
    assert rc == 2 and "not a `fastsac consensus` output" in capsys.readouterr().err


def test_expected_f1_threshold_and_three_classes(rng):
    from fastsac.consensus import expected_f1_threshold
    assert expected_f1_threshold([0.99, 0.9, 0.45, 0.4, 0.05]) == 0.45
    assert expected_f1_threshold([]) == 1.0 and expected_f1_threshold([0.0, 0.0]) == 1.0
    # Real atoms of two visibilities (clicked by ~95% / ~40% of annotators) and spurious clicks.
    sens_easy, sens_hard, fake = 0.95, 0.4, 0.04
    v = np.concatenate([rng.random((600, 6)) < sens_easy, rng.random((400, 6)) < sens_hard,
                        rng.random((3000, 6)) < fake]).astype(float)
    truth = np.r_[np.ones(1000, bool), np.zeros(3000, bool)]
    seen = v.sum(axis=1) > 0
    v, truth = v[seen], truth[seen]
    acc = {}
    for k in (2, 3):
        m = fit_annotator_model(v, n_classes=k)
        assert m.converged and np.all((m.probability >= 0) & (m.probability <= 1))
        acc[k] = np.mean((m.probability >= 0.5) == truth)
    assert acc[3] > acc[2] + 0.03 and acc[3] > 0.85
    with pytest.raises(ValueError, match="n_classes"):
        fit_annotator_model(v, n_classes=4)
