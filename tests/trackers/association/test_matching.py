import numpy as np
import pytest

from sam3video.trackers.association.matching import associate, box_iou, mask_iou


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3) and iou.dtype == np.float32
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(iou[1], 0)  # degenerate box: no NaN


@pytest.mark.parametrize("popcount", ["numpy", "fallback"])
def test_mask_iou_matches_brute_force(popcount, monkeypatch):
    if popcount == "fallback":  # numpy < 2.0 has no bitwise_count
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(0)
    a = rng.random((4, 20, 30)) < 0.3
    b = rng.random((3, 20, 30)) < 0.3
    b[2] = False  # empty mask
    expected = np.array([[(x & y).sum() / max((x | y).sum(), 1) for y in b] for x in a])
    np.testing.assert_allclose(mask_iou(a, b), expected, rtol=1e-6)


def test_mask_iou_known_values():
    a = np.zeros((2, 50, 60), bool)
    b = np.zeros((1, 50, 60), bool)
    a[0, 10:20, 10:20] = True
    a[1, 40:45, 50:55] = True
    b[0, 15:20, 10:20] = True
    np.testing.assert_allclose(mask_iou(a, b), [[0.5], [0.0]])


@pytest.mark.parametrize("n, m", [(0, 0), (0, 3), (2, 0)])
def test_empty_inputs_shapes(n, m):
    assert box_iou(np.zeros((n, 4)), np.zeros((m, 4))).shape == (n, m)
    assert mask_iou(np.zeros((n, 5, 6), bool), np.zeros((m, 5, 6), bool)).shape == (n, m)
    matches, rows, cols = associate(np.zeros((n, m)), 0.5)
    assert matches.shape == (0, 2) and matches.dtype == np.int64
    np.testing.assert_array_equal(rows, np.arange(n))
    np.testing.assert_array_equal(cols, np.arange(m))


def test_associate_finds_optimal_pairs():
    cost = np.array([[0.9, 0.1, 0.8], [0.2, 0.7, 0.9]])
    matches, rows, cols = associate(cost, max_cost=0.5)
    np.testing.assert_array_equal(matches, [[0, 1], [1, 0]])
    assert rows.size == 0
    np.testing.assert_array_equal(cols, [2])


def test_associate_rejects_pairs_above_max_cost_and_inf():
    cost = np.array([[0.6, np.inf], [np.inf, 0.3], [np.nan, np.inf]])
    matches, rows, cols = associate(cost, max_cost=0.5)
    np.testing.assert_array_equal(matches, [[1, 1]])
    np.testing.assert_array_equal(rows, [0, 2])
    np.testing.assert_array_equal(cols, [0])


def test_associate_two_weak_pairs_never_replace_a_strong_one():
    # (0, 0) alone costs 0.1 + 2 x 0.4 (row 1 and column 1 left) = 0.9; the two pairs cost 1.4.
    cost = np.array([[0.1, 0.7], [0.7, np.inf]])
    matches, rows, cols = associate(cost, max_cost=0.8)
    np.testing.assert_array_equal(matches, [[0, 0]])
    np.testing.assert_array_equal(rows, [1])
    np.testing.assert_array_equal(cols, [1])


def test_associate_takes_two_pairs_when_cheaper_than_leaving_them():
    # Two pairs cost 0.6, the best single pair 0.1 + 0.8.
    cost = np.array([[0.1, 0.3], [0.3, np.inf]])
    matches, _, _ = associate(cost, max_cost=0.8)
    np.testing.assert_array_equal(matches, [[0, 1], [1, 0]])


@pytest.mark.parametrize("seed", range(20))
def test_associate_is_the_cheapest_with_unmatched_at_half_the_limit(seed):
    # Brute force over every partial matching of a small matrix.
    import itertools

    rng = np.random.default_rng(seed)
    cost = rng.uniform(0, 1, (3, 3))
    cost[rng.uniform(size=(3, 3)) < 0.2] = np.inf
    max_cost = 0.6

    def total(pairs):
        return sum(cost[r, c] for r, c in pairs) + (6 - 2 * len(pairs)) * max_cost / 2

    options = [()]
    for k in (1, 2, 3):
        for rows in itertools.combinations(range(3), k):
            for cols in itertools.permutations(range(3), k):
                pairs = tuple(zip(rows, cols))
                if all(cost[r, c] <= max_cost for r, c in pairs):
                    options.append(pairs)
    matches, _, _ = associate(cost, max_cost)
    assert total([tuple(p) for p in matches]) == pytest.approx(min(total(p) for p in options))


def test_associate_is_deterministic_with_ties():
    cost = np.full((4, 4), 0.2)
    first = associate(cost, 0.5)
    for _ in range(3):
        for x, y in zip(first, associate(cost.copy(), 0.5)):
            np.testing.assert_array_equal(x, y)
