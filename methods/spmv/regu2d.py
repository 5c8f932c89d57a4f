"""Regu2D-style regular arrangement: optimal grouping of a block's rows by dynamic programming.

HBP (arXiv 2504.08860) compares its hash reordering with "the dynamic-programming
preprocessing of Regu2D" (Fei and Zhang, ICPP '21, doi:10.1145/3472456.3472479). Regu2D's
DP is not public (no code; the paper's cost model is not given in HBP), so this module
implements the **standard optimal-grouping DP** instead, and the results must say so:

1. the rows of a 2D block are sorted by their in-block nonzero count, ascending (stable);
2. the sorted rows are cut into groups of at most ``max_group_size`` consecutive rows,
   minimising ``sum over groups (group size * longest row in group) + group_overhead * n_groups``:
   the padded work of a group processed in lock step (every lane runs as many rounds as the
   group's longest row) plus a fixed cost per group.

Because the rows are sorted, the longest row of a group is its last, and the DP over prefix
lengths is exact: ``cost[i] = min_k cost[i - k] + k * counts[i - 1] + group_overhead`` for
``1 <= k <= min(max_group_size, i)``, O(m * max_group_size) per block of m rows.

``GROUP_OVERHEAD = 32`` (our choice): one group costs as much as one more round of a full
32-lane warp, i.e. reading a group's pointers and scheduling it is priced like 32 padded
nonzeros. With it, rows of equal length form full groups of 32, and a few long rows are split
off from many short ones instead of padding them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GROUP_OVERHEAD = 32
MAX_GROUP_SIZE = 32


@njit(cache=True, nogil=True)
def mark_optimal_groups(sorted_counts, group_overhead, max_group_size, cost, choice, group_start):
    """Cut rows sorted by count into groups of minimal padded work plus per-group overhead.

    Parameters
    ----------
    sorted_counts : ndarray of int, shape (m,)
        In-block nonzero counts, ascending.
    group_overhead : int
        Cost of one group, in padded nonzeros.
    max_group_size : int
        Most rows in one group (32: one warp).
    cost, choice : ndarray of int64, shape (>= m + 1,)
        Scratch: the optimal cost of each prefix and the size of its last group.
    group_start : ndarray of bool, shape (>= m,)
        Written: ``group_start[i]`` is True where a group begins at sorted row i.

    Returns
    -------
    int
        The number of groups. On ties the larger last group wins (fewer groups).
    """
    m = sorted_counts.shape[0]
    cost[0] = 0
    for end in range(1, m + 1):
        longest = sorted_counts[end - 1]
        best_size = 1
        best_cost = cost[end - 1] + longest + group_overhead
        for size in range(min(max_group_size, end), 1, -1):
            candidate = cost[end - size] + size * longest + group_overhead
            if candidate < best_cost:
                best_cost = candidate
                best_size = size
        cost[end] = best_cost
        choice[end] = best_size
    group_start[:m] = False
    n_groups = 0
    end = m
    while end > 0:
        end -= choice[end]
        group_start[end] = True
        n_groups += 1
    return n_groups


def regular_arrangement(counts: np.ndarray, group_overhead: int = GROUP_OVERHEAD,
                        max_group_size: int = MAX_GROUP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The DP arrangement of one block: row order and group sizes.

    Parameters
    ----------
    counts : ndarray of int, shape (m,)
        In-block nonzero count of each of the block's rows.
    group_overhead, max_group_size : int
        As in :func:`mark_optimal_groups`.

    Returns
    -------
    order : ndarray of int64, shape (m,)
        ``order[i]`` is the row (index into ``counts``) in position i: a stable ascending sort.
    group_sizes : ndarray of int64, shape (n_groups,)
        Sizes of consecutive groups of ``order``, each in ``1..max_group_size``.
    """
    counts = np.asarray(counts)
    order = np.argsort(counts, kind="stable")
    m = counts.shape[0]
    cost = np.empty(m + 1, dtype=np.int64)
    choice = np.empty(m + 1, dtype=np.int64)
    group_start = np.empty(m, dtype=np.bool_)
    mark_optimal_groups(counts[order], group_overhead, max_group_size, cost, choice, group_start)
    starts = np.flatnonzero(group_start)
    return order, np.diff(np.append(starts, m))
