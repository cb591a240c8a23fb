"""Pareto maths against hand-computed cases and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.pareto import hypervolume, non_dominated_mask, non_dominated_ranks


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def _brute_mask(points: np.ndarray) -> np.ndarray:
    return np.array([not any(_dominates(q, p) for q in points) for p in points])


def _inclusion_exclusion_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume as the union of boxes [p, ref], by inclusion-exclusion (small n only)."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


# ------------------------------------------------------------------------- dominance
def test_mask_hand_case_with_mixed_directions() -> None:
    # (accuracy: maximize, params: minimize)
    values = [
        [0.60, 100],  # front
        [0.55, 50],  # front
        [0.50, 80],  # dominated by [0.55, 50]
        [0.60, 120],  # dominated by [0.60, 100] (equal accuracy, more params)
        [0.70, 300],  # front
    ]
    assert non_dominated_mask(values, ["maximize", "minimize"]).tolist() == [True, True, False, False, True]
    # Same data, all minimised: the low-accuracy points now win.
    assert non_dominated_mask(values).tolist() == [False, True, True, False, False]


def test_duplicates_stay_and_nan_rows_drop() -> None:
    values = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [np.nan, 0.0], [0.0, np.nan]])
    assert non_dominated_mask(values).tolist() == [True, True, True, False, False]
    assert non_dominated_ranks(values).tolist() == [0, 0, 0, -1, -1]


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_mask_matches_brute_force(m: int) -> None:
    rng = np.random.default_rng(m)
    values = rng.integers(0, 6, size=(300, m)).astype(float)  # many ties and duplicates
    directions = ["maximize" if j % 2 else "min" for j in range(m)]
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    assert (non_dominated_mask(values, directions) == _brute_mask(values * signs)).all()


def test_ranks_are_successive_fronts() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((120, 3))
    ranks = non_dominated_ranks(values, ["minimize", "maximize", "minimize"])
    pts = values * np.array([1, -1, 1])
    assert (ranks >= 0).all()
    assert ((ranks == 0) == non_dominated_mask(values, ["minimize", "maximize", "minimize"])).all()
    for r in range(1, ranks.max() + 1):
        prev, cur = pts[ranks == r - 1], pts[ranks == r]
        assert all(any(_dominates(p, q) for p in prev) for q in cur)  # each is dominated by the front above
        assert not any(_dominates(p, q) for p in cur for q in cur)  # no one in a front dominates another


def test_ranks_hand_case() -> None:
    values = [[1, 1], [2, 2], [3, 3], [1, 3], [3, 1]]
    assert non_dominated_ranks(values).tolist() == [0, 1, 2, 1, 1]


# ------------------------------------------------------------------------ hypervolume
def test_hypervolume_2d_hand_cases() -> None:
    # Staircase (1,3),(2,2),(3,1) under reference (4,4): 3 + 2 + 1.
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    # Dominated and outside-the-reference points add nothing; order does not matter.
    assert hypervolume([[3, 3], [3, 1], [5, 0], [2, 2], [1, 3], [2, 2]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[5, 5]], [4, 4]) == 0.0
    assert hypervolume(np.empty((0, 2)), [1, 1]) == 0.0
    # Accuracy (max) vs params (min), reference = (0 accuracy, 10 params).
    assert hypervolume([[0.5, 4], [0.8, 8]], [0, 10], ["maximize", "minimize"]) == pytest.approx(0.5 * 6 + 0.3 * 2)


def test_hypervolume_1d_and_3d_hand_cases() -> None:
    assert hypervolume([[2.0], [3.0]], [5.0]) == pytest.approx(3.0)
    # The origin dominates the whole box up to the reference; a second point adds nothing.
    assert hypervolume([[0, 0, 0], [0.5, 0.5, 0]], [2, 2, 1]) == pytest.approx(4.0)
    # Two boxes of volume 4 overlapping in [1,2]x[1,2]x[0,2] (volume 2).
    assert hypervolume([[1, 0, 0], [0, 1, 0]], [2, 2, 2]) == pytest.approx(4 + 4 - 2)


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_hypervolume_matches_inclusion_exclusion(m: int) -> None:
    rng = np.random.default_rng(10 + m)
    for _ in range(5):
        points = rng.random((7, m))
        ref = np.full(m, 1.1)
        assert hypervolume(points, ref) == pytest.approx(_inclusion_exclusion_hv(points, ref), rel=1e-12, abs=1e-12)


def test_hypervolume_directions_mirror() -> None:
    rng = np.random.default_rng(3)
    points = rng.random((40, 3))
    ref = np.array([1.5, 1.5, 1.5])
    flipped = points * np.array([1, -1, -1])
    mirrored = hypervolume(flipped, ref * np.array([1, -1, -1]), ["minimize", "maximize", "max"])
    assert mirrored == pytest.approx(hypervolume(points, ref))


def test_hypervolume_grows_with_a_new_front_point() -> None:
    rng = np.random.default_rng(4)
    points = rng.random((30, 3))
    ref = np.ones(3) * 1.2
    base = hypervolume(points, ref)
    assert hypervolume(np.vstack([points, [[0.0, 0.0, 1.0]]]), ref) > base
    assert hypervolume(np.vstack([points, points[:5] + 0.01]), ref) == pytest.approx(base)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown direction 'up'"):
        non_dominated_mask([[1, 2]], ["up", "min"])
    with pytest.raises(ValueError, match="1 directions for 2 objectives"):
        non_dominated_mask([[1, 2]], ["min"])
    with pytest.raises(ValueError, match="reference has 3 values for 2 objectives"):
        hypervolume([[1, 2]], [3, 3, 3])
    with pytest.raises(ValueError, match="NaN"):
        hypervolume([[1, np.nan]], [3, 3])
    with pytest.raises(ValueError, match="shape"):
        non_dominated_mask(np.zeros((2, 2, 2)))


def test_optuna_directions_are_accepted() -> None:
    optuna = pytest.importorskip("optuna")
    dirs = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert non_dominated_mask([[1, 1], [2, 2]], dirs).tolist() == [True, True]
    assert non_dominated_mask([[1, 2], [2, 1]], dirs).tolist() == [False, True]
