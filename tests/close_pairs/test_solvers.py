"""The fast solver of the close-pair fits (``solver="lm"``, batched bounded
Levenberg–Marquardt) against the reference (``solver="scipy"``,
``least_squares(method="trf")``): same decisions, same fits (or better optima),
and per-candidate results that do not depend on what else is in the batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastsac.close_pairs import SOLVERS, decide_pair, decide_split, resolve_pairs

PX = 0.0293
SIGMA = 0.095 / PX  # the calibrated atom size, px
KW = {"atom_sigma_px": SIGMA, "bond_px": 0.277 / PX}
STAGE = {"max_separation_px": 0.30 / PX, "atom_sigma_px": SIGMA, "bond_px": 0.277 / PX,
         "split_min_elongation_px": 0.10 / PX, "split_min_elongation_z": 4.0}


def _atoms(atoms, *, shape=(48, 48), noise=1.0, seed=0, bg=50.0, sigma=SIGMA):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.full(shape, bg)
    for x, y, a in atoms:
        img += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return img + np.random.default_rng(seed).normal(0, noise, shape)


def _dimer(d, *, ang=0.4, amp=(100.0, 90.0), c=(24.0, 24.0), **kw):
    dx, dy = 0.5 * d * math.cos(ang), 0.5 * d * math.sin(ang)
    return _atoms([(c[0] - dx, c[1] - dy, amp[0]), (c[0] + dx, c[1] + dy, amp[1])], **kw)


def _bright_pixel():
    img = _atoms([], noise=1.0, seed=4)
    img[24, 24] += 500.0
    return img


def _nan_holes():
    img = _dimer(4.0, seed=5)
    img[20:23, 26:28] = np.nan
    img[25, 21] = np.nan
    return img


#: name, image, first point, second point (pairs), point (splits)
CASES = {
    "single atom": (_atoms([(24.2, 23.7, 80.0)], seed=1), (22.5, 23.5), (26.0, 24.0)),
    "very close dimer": (_dimer(0.10 / PX, seed=2), (23.0, 23.5), (25.0, 24.5)),
    "resolved dimer": (_dimer(0.20 / PX, seed=3), (21.2, 22.7), (26.8, 25.3)),
    "well separated dimer": (_dimer(0.29 / PX, seed=6), (19.9, 22.2), (28.1, 25.8)),
    "pure noise": (_atoms([], noise=5.0, seed=7), (22.0, 24.0), (26.0, 24.0)),
    "one bright pixel": (_bright_pixel(), (23.0, 24.0), (26.0, 24.0)),
    "NaN holes": (_nan_holes(), (22.5, 23.0), (25.5, 25.0)),
    "border-clipped": (_dimer(5.0, c=(2.0, 30.0), seed=8), (0.2, 29.0), (4.0, 31.0)),
    "faint, noisy dimer": (_dimer(6.0, amp=(12.0, 10.0), noise=3.0, seed=9), (21.0, 23.0),
                           (27.0, 25.0)),
}


#: Windows without an atom-like spot: their fits are fits of noise, with many
#: local optima of nearly equal RSS; the solvers may end in different ones.
NOISE_ONLY = {"pure noise", "faint, noisy dimer", "one bright pixel"}


def _check_fit(ref, fast, *, rms_col, rss_rtol=1e-6):
    """Same decision; the fast fit's RSS at most the reference's·(1 + rss_rtol)."""
    (db_r, p_r, f_r), (db_f, p_f, f_f) = ref, fast
    if not np.isfinite(p_r):
        assert not np.isfinite(p_f)
        return
    assert (p_r >= 0.5) == (p_f >= 0.5)
    assert f_f[rms_col] ** 2 <= f_r[rms_col] ** 2 * (1 + rss_rtol)
    if rss_rtol <= 1e-6 and f_f[rms_col] ** 2 >= f_r[rms_col] ** 2 * (1 - 1e-6):  # same optimum
        assert db_f == pytest.approx(db_r, abs=1e-2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_pair_fits_agree_with_the_reference(case):
    img, p1, p2 = CASES[case]
    ref = decide_pair(img, p1, p2, w1=2.0, w2=1.0, solver="scipy", **KW)
    fast = decide_pair(img, p1, p2, w1=2.0, w2=1.0, solver="lm", **KW)
    _check_fit(ref, fast, rms_col=5, rss_rtol=0.03 if case in NOISE_ONLY else 1e-6)
    if np.isfinite(ref[1]) and abs(fast[2][5] / ref[2][5] - 1) < 1e-6:
        np.testing.assert_allclose(fast[2][:2], ref[2][:2], atol=1e-3)  # one-atom centre


@pytest.mark.parametrize("case", sorted(CASES))
def test_split_fits_agree_with_the_reference(case):
    img, p1, p2 = CASES[case]
    p = 0.5 * (np.add(p1, p2))
    exclude = [[p[0], p[1]], [p[0] + 14.0, p[1] + 3.0]]  # itself and a neighbour
    ref = decide_split(img, p, exclude=exclude, solver="scipy", **KW)
    fast = decide_split(img, p, exclude=exclude, solver="lm", **KW)
    _check_fit(ref, fast, rms_col=8, rss_rtol=0.03 if case in NOISE_ONLY else 1e-6)


def test_random_windows_agree_with_the_reference():
    rng = np.random.default_rng(42)
    for k in range(12):
        d = rng.uniform(0.06, 0.30) / PX
        amp = (rng.uniform(20, 120), rng.uniform(20, 120))
        img = _dimer(d, ang=rng.uniform(0, np.pi), amp=amp, noise=rng.uniform(1, 6), seed=100 + k)
        if k % 3 == 0:  # a single atom
            img = _atoms([(24 + rng.uniform(-1, 1), 24 + rng.uniform(-1, 1), amp[0])],
                         noise=rng.uniform(1, 6), seed=100 + k)
        p1 = np.array([22.0, 24.0]) + rng.normal(0, 0.7, 2)
        p2 = np.array([26.0, 24.0]) + rng.normal(0, 0.7, 2)
        _check_fit(decide_pair(img, p1, p2, solver="scipy", **KW),
                   decide_pair(img, p1, p2, solver="lm", **KW), rms_col=5)
        _check_fit(decide_split(img, 0.5 * (p1 + p2), solver="scipy", **KW),
                   decide_split(img, 0.5 * (p1 + p2), solver="lm", **KW), rms_col=8)


def _scene(seed=0):
    """A 160² frame with close dimers, single atoms and double detections, far apart."""
    rng = np.random.default_rng(seed)
    atoms, dets, scores = [], [], []
    for k, (cx, cy) in enumerate((x, y) for y in (25, 65, 105, 140) for x in (25, 65, 105, 140)):
        d = (0.0, 0.15 / PX, 0.22 / PX, 0.12 / PX)[k % 4]
        ang = rng.uniform(0, np.pi)
        dx, dy = 0.5 * d * math.cos(ang), 0.5 * d * math.sin(ang)
        atoms += [(cx - dx, cy - dy, 90.0)] + ([(cx + dx, cy + dy, 80.0)] if d else [])
        if k % 4 == 2:  # a resolved dimer: two detections
            dets += [[cx - dx + 0.3, cy - dy], [cx + dx, cy + dy - 0.2]]
            scores += [5.0, 4.0]
        elif k % 8 == 0:  # a single atom detected twice
            dets += [[cx - 2.5, cy + 0.3], [cx + 2.4, cy - 0.2]]
            scores += [4.0, 4.5]
        else:
            dets += [[cx + rng.normal(0, 0.3), cy + rng.normal(0, 0.3)]]
            scores += [5.0]
    return _atoms(atoms, shape=(160, 160), seed=seed), np.array(dets), np.array(scores)


@pytest.mark.parametrize("solver", SOLVERS)
def test_stage_decisions_agree_between_solvers(solver):
    img, xy, score = _scene()
    ref = resolve_pairs(img, xy, score=score, solver="scipy", **STAGE)
    dec = resolve_pairs(img, xy, score=score, solver=solver, **STAGE)
    np.testing.assert_array_equal(dec.keep, ref.keep)
    np.testing.assert_array_equal(dec.pairs, ref.pairs)
    np.testing.assert_array_equal(dec.merged, ref.merged)
    np.testing.assert_array_equal(dec.split_tests["i"], ref.split_tests["i"])
    np.testing.assert_array_equal(dec.split_tests["split"], ref.split_tests["split"])
    np.testing.assert_allclose(dec.xy, ref.xy, atol=1e-3)
    np.testing.assert_allclose(dec.added_xy, ref.added_xy, atol=1e-3)
    assert len(ref.added_parent) >= 2 and ref.merged.sum() >= 1  # the scene exercises both moves


def test_each_candidate_is_independent_of_the_batch():
    # The fast solver fits all spots (and all pairs of a round) at once: a
    # candidate's result must be bit-identical when it is fitted alone.
    img, xy, score = _scene(1)
    whole = resolve_pairs(img, xy, score=score, **STAGE)
    assert len(whole.split_tests["i"]) >= 2
    for i, db in zip(whole.split_tests["i"], whole.split_tests["delta_bic"]):
        near = np.hypot(*(xy - xy[i]).T) < 30.0  # everything its windows and masks can reach
        idx = np.flatnonzero(near)
        alone = resolve_pairs(img, xy[idx], score=score[idx], **STAGE)
        k = int(np.flatnonzero(idx == i)[0])
        got = alone.split_tests["delta_bic"][alone.split_tests["i"] == k]
        assert got.tolist() == [db]
        assert alone.xy[k].tolist() == whole.xy[i].tolist()
    for (i, j), db in zip(whole.pairs, whole.delta_bic):
        idx = np.array([i, j])
        alone = resolve_pairs(img, xy[idx], score=score[idx], **STAGE)
        assert alone.delta_bic.tolist() == [db]


def test_unknown_solver_is_one_clear_error():
    img, xy, score = _scene()
    with pytest.raises(ValueError, match="solver must be one of"):
        resolve_pairs(img, xy, score=score, solver="newton", **STAGE)
    with pytest.raises(ValueError, match="solver must be one of"):
        decide_pair(img, xy[0], xy[1], solver="fast", **KW)
