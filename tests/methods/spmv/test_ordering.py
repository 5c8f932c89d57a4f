"""The in-block orderings of methods/spmv/ordering.py: the hash placement against the authors' probing done probe by
probe, the DP against brute force, and ``order_block`` (what both formats call) against the public functions, its
scratch reused block after block as the builders reuse it."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.spmv.ordering import (
    DP,
    GROUP_OVERHEAD,
    HASH,
    MAX_GROUP_SIZE,
    ORDERINGS,
    SORT,
    WARP_SIZE,
    block_scratch,
    hash_slot_order,
    mark_optimal_groups,
    order_block,
    regular_arrangement,
    sort_and_group,
)

# ---------------------------------------------------------------- the hash placement


def _naive_hash_order(counts: list[int], table_size: int) -> list[int]:
    """The authors' placement probe by probe: O(rows x table size)."""
    table = [-1] * table_size
    for row, count in enumerate(counts):
        home = (count >> 4) << 8
        if home >= table_size:
            slot = max(s for s in range(table_size) if table[s] < 0)
        else:
            probes = [home] + [s for step in range(1, table_size) for s in (home + step, home - step)]
            slot = next(s for s in probes if 0 <= s < table_size and table[s] < 0)
        table[slot] = row
    return [row for row in table if row >= 0]


_COUNT = st.one_of(st.integers(1, 15), st.integers(16, 31), st.integers(32, 5000), st.sampled_from([1, 16, 32, 48]))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([1, 2, 5, 32, 256, 257, 300, 512, 1024]), st.data())
def test_hash_placement_matches_naive_probing(table_size, data):
    counts = data.draw(st.lists(_COUNT, max_size=table_size))
    order = hash_slot_order(np.array(counts, dtype=np.int32), table_size)
    assert order.dtype == np.int64
    assert order.tolist() == _naive_hash_order(counts, table_size)


@pytest.mark.parametrize("table_size", [512, 1024])
def test_hash_placement_on_full_tables_of_equal_counts(table_size):
    rng = np.random.default_rng(4)
    for counts in (np.ones(table_size, np.int32), np.full(table_size, 40, np.int32),
                   np.full(table_size, 5000, np.int32),
                   rng.choice(np.array([1, 3, 17, 20, 33, 600], np.int32), table_size),
                   rng.integers(1, 40, table_size // 2).astype(np.int32)):
        assert hash_slot_order(counts, table_size).tolist() == _naive_hash_order(counts.tolist(), table_size)


def test_hash_placement_examples():
    # Counts 1..15 hash to slot 0, 16..31 to 256, 32.. to 512 (past a table of 512: the last free slot).
    assert hash_slot_order(np.array([3, 1, 2]), 4).tolist() == [0, 1, 2]
    assert hash_slot_order(np.array([600, 1, 600]), 512).tolist() == [1, 2, 0], "past the table: last free slot"
    assert hash_slot_order(np.array([20, 1, 20, 20]), 512).tolist() == [1, 3, 0, 2], "256, then 257, then 255"
    assert hash_slot_order(np.array([], np.int32), 8).tolist() == []
    with pytest.raises(ValueError, match="do not fit"):
        hash_slot_order(np.ones(9, np.int32), 8)


# ---------------------------------------------------------------- the DP (Regu2D's arrangement; HBP's "dp")


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


def test_mark_optimal_groups_returns_the_group_count_and_leaves_the_tail_alone():
    sorted_counts = np.array([1, 1, 1, 50, 50, 90], np.int64)
    cost, choice = np.empty(7, np.int64), np.empty(7, np.int64)
    group_start = np.ones(9, np.bool_)  # longer than m: entries past m are not the function's
    n_groups = mark_optimal_groups(sorted_counts, 32, 32, cost, choice, group_start)
    assert group_start[:6].tolist() == [True, False, False, True, False, True] and n_groups == 3
    assert cost[6] == (3 * 1 + 32) + (2 * 50 + 32) + (90 + 32) and group_start[6:].all()


# ---------------------------------------------------------------- order_block, the formats' one entry point


def _check_order_block(ordering: int, counts: np.ndarray, table_size: int, scratch) -> None:
    """order_block's order and group starts against the public functions."""
    m = counts.shape[0]
    n_groups = order_block(ordering, counts, table_size, GROUP_OVERHEAD, MAX_GROUP_SIZE, scratch)
    order, group_start = scratch[6][:m], scratch[7][:m]
    if ordering == DP:
        expected_order, sizes = regular_arrangement(counts)
        expected_start = np.zeros(m, np.bool_)
        expected_start[np.cumsum(sizes) - sizes] = True
    else:
        expected_order = (hash_slot_order(counts, table_size) if ordering == HASH
                          else np.argsort(counts, kind="stable"))
        expected_start = np.arange(m) % WARP_SIZE == 0
    np.testing.assert_array_equal(order, expected_order)
    np.testing.assert_array_equal(group_start, expected_start)
    assert n_groups == int(expected_start.sum())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([HASH, SORT, DP]), st.sampled_from([1, 7, 32, 64, 512]), st.data())
def test_order_block_with_reused_scratch(ordering, table_size, data):
    """One scratch for a run of blocks, as a builder's row block uses it: each block as if alone."""
    scratch = block_scratch(ordering, table_size)
    for _ in range(data.draw(st.integers(1, 6))):
        counts = data.draw(st.lists(_COUNT, min_size=0, max_size=table_size))
        _check_order_block(ordering, np.array(counts, dtype=np.int32), table_size, scratch)


def test_order_block_on_full_blocks():
    rng = np.random.default_rng(1)
    for ordering in (HASH, SORT, DP):
        scratch = block_scratch(ordering, 512)
        for counts in (np.ones(512, np.int32), rng.integers(1, 700, 512).astype(np.int32),
                       rng.integers(1, 20, 100).astype(np.int32), np.full(512, 300, np.int32)):
            _check_order_block(ordering, counts, 512, scratch)


def test_hash_scratch_is_left_clean():
    scratch = block_scratch(HASH, 64)
    order_block(HASH, np.array([1, 20, 3, 40, 5000, 1], np.int32), 64, GROUP_OVERHEAD, MAX_GROUP_SIZE, scratch)
    fresh = block_scratch(HASH, 64)
    for used, new in zip(scratch[:3], fresh[:3]):
        np.testing.assert_array_equal(used, new)


def test_sort_and_group_is_regular_arrangement():
    counts = np.random.default_rng(2).integers(1, 100, 200)
    cost, choice = np.empty(201, np.int64), np.empty(201, np.int64)
    order, group_start = np.empty(200, np.int64), np.empty(200, np.bool_)
    n_groups = sort_and_group(counts, GROUP_OVERHEAD, MAX_GROUP_SIZE, cost, choice, order, group_start)
    expected_order, sizes = regular_arrangement(counts)
    np.testing.assert_array_equal(order, expected_order)
    np.testing.assert_array_equal(np.flatnonzero(group_start), np.cumsum(sizes) - sizes)
    assert n_groups == sizes.size


def test_orderings_are_named_in_index_order():
    assert ORDERINGS[HASH] == "hash" and ORDERINGS[SORT] == "sort" and ORDERINGS[DP] == "dp"
