import numpy as np
import pytest

from fastsac.evaluate import match_points, pool


def test_known_counts():
    pred = [[0, 0], [10, 10], [20, 20]]
    truth = [[1, 0], [10, 13], [50, 50], [60, 60]]
    r = match_points(pred, truth, tolerance_px=3)
    assert (r.tp, r.fp, r.fn) == (2, 1, 2)
    assert r.precision == pytest.approx(2 / 3)
    assert r.recall == pytest.approx(0.5)
    assert r.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r.mean_error_px == pytest.approx(2.0)


def test_hungarian_beats_greedy():
    # Greedy nearest pairing takes pred 0 - truth 0 (distance 1), leaving pred 1 5.4 px
    # from truth 1, beyond the tolerance; the optimal assignment (2.9 and 1.5) matches both.
    pred = [[0, 0], [2.5, 0]]
    truth = [[1, 0], [-2.9, 0]]
    r = match_points(pred, truth, tolerance_px=3)
    assert r.tp == 2 and r.fp == 0 and r.fn == 0


def test_boundary_and_coincident():
    r = match_points([[0, 0], [5, 5]], [[6, 0], [5, 5]], tolerance_px=6)
    assert r.tp == 2  # distance exactly the tolerance counts; zero distance counts
    r = match_points([[0, 0]], [[6.0001, 0]], tolerance_px=6)
    assert r.tp == 0


def test_one_to_one():
    r = match_points([[0, 0], [0.5, 0], [1, 0]], [[0.4, 0]], tolerance_px=6)
    assert (r.tp, r.fp, r.fn) == (1, 2, 0)


def test_empty_sets():
    assert match_points([], []).f1 == 1.0
    r = match_points([], [[1, 1]])
    assert (r.tp, r.fn, r.recall, r.f1) == (0, 1, 0.0, 0.0)
    r = match_points([[1, 1]], [])
    assert (r.fp, r.precision) == (1, 0.0)


def test_pool_is_micro_average():
    a = match_points([[0, 0]], [[0, 0]])
    b = match_points([[0, 0], [9, 9]], [[50, 50]])
    p = pool([a, b])
    assert (p["tp"], p["fp"], p["fn"]) == (1, 2, 1)
    assert p["precision"] == pytest.approx(1 / 3)
    assert p["recall"] == pytest.approx(1 / 2)


def test_random_matches_bruteforce(rng):
    from itertools import permutations
    for _ in range(20):
        pred = rng.random((4, 2)) * 10
        truth = rng.random((4, 2)) * 10
        r = match_points(pred, truth, tolerance_px=3)
        best = 0
        for perm in permutations(range(4)):
            d = np.hypot(*(pred - truth[list(perm)]).T)
            best = max(best, int((d <= 3).sum()))
        assert r.tp == best
