"""The Regu2D-style DP arrangement against brute force over every grouping."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.spmv.regu2d import GROUP_OVERHEAD, regular_arrangement


def _cost(sorted_counts: np.ndarray, group_sizes, overhead: int) -> int:
    """Padded work (size x longest row) plus overhead, summed over consecutive groups."""
    ends = np.cumsum(group_sizes)
    return int(sum(size * sorted_counts[end - 1] + overhead for size, end in zip(group_sizes, ends)))


def _brute_force_cost(sorted_counts: np.ndarray, max_group_size: int, overhead: int) -> int:
    """The least cost over every way to cut the sorted rows into groups of at most max_group_size."""
    m = sorted_counts.shape[0]
    best = None
    for cuts in itertools.product([False, True], repeat=max(m - 1, 0)):
        bounds = [0, *[i + 1 for i, cut in enumerate(cuts) if cut], m]
        sizes = np.diff(bounds)
        if sizes.max() <= max_group_size:
            cost = _cost(sorted_counts, sizes, overhead)
            best = cost if best is None else min(best, cost)
    return best


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=11), st.integers(1, 5), st.integers(0, 40))
def test_dp_is_optimal_against_brute_force(counts, max_group_size, overhead):
    counts = np.array(counts)
    order, sizes = regular_arrangement(counts, overhead, max_group_size)
    np.testing.assert_array_equal(order, np.argsort(counts, kind="stable"))
    assert sizes.sum() == counts.size and sizes.min() >= 1 and sizes.max() <= max_group_size
    sorted_counts = counts[order]
    assert _cost(sorted_counts, sizes, overhead) == _brute_force_cost(sorted_counts, max_group_size, overhead)


def test_equal_rows_fill_warps_and_long_rows_are_split_off():
    _, sizes = regular_arrangement(np.ones(70, np.int64))
    assert sizes.tolist() == [6, 32, 32], "ties go to the larger last group"
    _, sizes = regular_arrangement(np.array([1] * 31 + [100]))
    assert sizes.tolist() == [31, 1], f"padding 31 rows to 100 costs more than a group ({GROUP_OVERHEAD})"


@pytest.mark.parametrize("m", [0, 1])
def test_tiny_blocks(m):
    order, sizes = regular_arrangement(np.ones(m, np.int64))
    assert order.tolist() == list(range(m)) and sizes.tolist() == [1] * m
