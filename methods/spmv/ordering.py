"""How the blocked SpMV formats order and group the rows of one 2D block: hash, sort or DP.

A block's rows with nonzeros there (its *slots*) are put in an order and cut into groups of
consecutive slots (a warp's 32 lanes in HBP, a SIMD slice in Regu2D). Three orderings:

- ``"hash"``: the HBP paper's nonlinear hash placement (Yan et al., arXiv 2504.08860): row
  with in-block count c goes to the table slot nearest ``h = (c >> 4) << 8`` (or the last free
  slot if h is past the table), then runs of 32 (:func:`hash_slot_order`);
- ``"sort"``: a stable sort by in-block count, then runs of 32 (the "sorting approach" the
  paper compares with);
- ``"dp"``: the same sort, then the optimal-grouping DP (:func:`mark_optimal_groups`, Regu2D's
  arrangement as we define it in :mod:`methods.spmv.regu2d`).

:func:`order_block` is the one entry point both formats call per block, with scratch made
once per row block by :func:`block_scratch`, so the orderings differ only in these lines.
"""

from __future__ import annotations

import numpy as np
from numba import njit

WARP_SIZE = 32
HOME_SHIFT = 8  # the hash's homes are multiples of 256: h = (c >> 4) << 8
ORDERINGS = ("hash", "sort", "dp")
HASH, SORT, DP = range(3)
# The DP's cost of one group, in padded nonzeros, and its largest group, for HBP's warp groups: one
# group costs as much as one more round of a full 32-lane warp.
GROUP_OVERHEAD = 32
MAX_GROUP_SIZE = 32


def hash_slot_order(counts: np.ndarray, table_size: int = 512) -> np.ndarray:
    """The paper's hash placement of one block's rows, as a slot order.

    Parameters
    ----------
    counts : ndarray of int, shape (m,), m <= table_size
        In-block nonzero count (>= 1) of each row, rows in original order.
    table_size : int
        Slots in the table (the block height).

    Returns
    -------
    ndarray of int64, shape (m,)
        ``order[i]`` is the row (index into ``counts``) in slot i.
    """
    counts = np.ascontiguousarray(counts, dtype=np.int32)
    if counts.shape[0] > table_size:
        raise ValueError(f"{counts.shape[0]} rows do not fit a table of {table_size} slots")
    return _hash_slot_order(counts, table_size)


@njit(cache=True, nogil=True)
def _hash_slot_order(counts, table_size):
    """:func:`hash_slot_order` in nopython mode (the scratch tuple never crosses into Python)."""
    scratch = block_scratch(HASH, table_size)
    order_block(HASH, counts, table_size, GROUP_OVERHEAD, MAX_GROUP_SIZE, scratch)
    return scratch[6][:counts.shape[0]].copy()


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


@njit(cache=True, nogil=True)
def block_scratch(ordering, table_size):
    """Scratch for :func:`order_block` over blocks of up to ``table_size`` rows: the hash table (-1),
    its union-find arrays and run starts (hash only), the DP's cost and choice (dp only), the
    ``order`` and ``group_start`` outputs, and the hash's last slot found per home (hash only)."""
    hash_size = table_size if ordering == HASH else 0
    # int32 (a table has at most 65536 slots in HBP): half the cache footprint of the hash's random accesses.
    table = np.full(hash_size, -1, np.int32)
    free_right = np.arange(hash_size + 1, dtype=np.int32)
    free_left = np.arange(hash_size + 1, dtype=np.int32)
    run_starts = np.empty(hash_size, np.int32)
    dp_cost = np.empty(table_size + 1 if ordering == DP else 0, np.int64)
    dp_choice = np.empty_like(dp_cost)
    order = np.empty(table_size, np.int64)
    group_start = np.empty(table_size, np.bool_)
    found = np.empty(2 * -(-hash_size >> HOME_SHIFT) + 1, np.int64)
    return table, free_right, free_left, run_starts, dp_cost, dp_choice, order, group_start, found


@njit(cache=True, nogil=True)
def order_block(ordering, counts, table_size, group_overhead, max_group_size, scratch):
    """Order one block's slots and cut them into groups.

    Parameters
    ----------
    ordering : int
        :data:`HASH`, :data:`SORT` or :data:`DP`.
    counts : ndarray of int, shape (m,), m <= table_size
        In-block nonzero count of each of the block's rows, in row order.
    table_size : int
        The block height (the hash table's size).
    group_overhead, max_group_size : int
        The DP's (``DP`` only; hash and sort cut runs of :data:`WARP_SIZE`).
    scratch : tuple
        From :func:`block_scratch` with the same ordering and at least ``table_size``; its last
        two arrays receive the result: ``order[:m]`` (``order[i]`` is the row, an index into
        ``counts``, in position i) and ``group_start[:m]`` (True where a group begins).

    Returns
    -------
    int
        The number of groups.
    """
    table, free_right, free_left, run_starts, dp_cost, dp_choice, order, group_start, found = scratch
    m = counts.shape[0]
    if ordering == HASH:
        if m == 0 or counts[:m].max() < 16:
            # Every row hashes to slot 0, and the probing gives row i the slot i: the row order.
            for i in range(m):
                order[i] = i
        else:
            _hash_order(counts, table_size, table, free_right, free_left, run_starts, found, order)
    elif ordering == SORT:
        order[:m] = np.argsort(counts, kind="mergesort")
    else:
        return sort_and_group(counts, group_overhead, max_group_size, dp_cost, dp_choice, order, group_start)
    for i in range(m):
        group_start[i] = i % WARP_SIZE == 0
    return (m + WARP_SIZE - 1) // WARP_SIZE


@njit(cache=True, nogil=True, inline="always")
def _free_at_or_right(free_right, slot):
    """The first free slot >= slot (table_size if none); path halving over occupied slots."""
    while free_right[slot] != slot:
        free_right[slot] = free_right[free_right[slot]]
        slot = free_right[slot]
    return slot


@njit(cache=True, nogil=True, inline="always")
def _free_at_or_left(free_left, slot):
    """The first free slot <= slot (-1 if none); ``free_left`` is shifted by one (index 0: none)."""
    node = slot + 1
    while free_left[node] != node:
        free_left[node] = free_left[free_left[node]]
        node = free_left[node]
    return node - 1


@njit(cache=True, nogil=True)
def _hash_order(counts, table_size, table, free_right, free_left, run_starts, found, order):
    """The authors' hash placement in near-linear time; writes ``order[:m]``.

    Row i (in original order) with count c hashes to h = (c >> 4) << 8. If h >= table_size it
    takes the last free slot; otherwise the probe h, h+1, h-1, h+2, h-2, ... (positions outside
    the table skipped) takes the first free slot, which is the nearest free slot on either side
    of h, the right one on a tie (+i is probed before -i). ``free_right`` / ``free_left`` find
    those directly: a union-find whose occupied slots point past their run of occupied slots.
    The slot order is the table order with free slots squeezed out, read run by run from the
    sorted run starts. The scratch is left as :func:`block_scratch` made it, touching only the
    m occupied slots.

    Rows of equal count share their home, and slots only fill up, so the nearest free slot right
    (left) of a home never moves left (right): ``found`` keeps, per home, the last slot found on
    each side, and the next search starts there instead of at the home (the same answer, since
    every slot between is occupied), so a block of rows of one count costs O(m), not O(m log m).
    """
    m = counts.shape[0]
    n_homes = (found.shape[0] - 1) // 2  # homes inside the table; found: right searches, left ones, past the end
    for home_index in range(n_homes):
        found[home_index] = found[n_homes + home_index] = home_index << HOME_SHIFT
    found[2 * n_homes] = table_size - 1
    for row in range(m):
        home_index = counts[row] >> 4
        home = home_index << HOME_SHIFT
        if home >= table_size:
            slot = found[2 * n_homes] = _free_at_or_left(free_left, found[2 * n_homes])
        else:
            right = found[home_index] = _free_at_or_right(free_right, found[home_index])
            left = found[n_homes + home_index] = _free_at_or_left(free_left, found[n_homes + home_index])
            slot = right if right < table_size and (left < 0 or right - home <= home - left) else left
        table[slot] = row
        free_right[slot] = slot + 1
        free_left[slot + 1] = slot
        order[row] = slot
    n_runs = 0
    for row in range(m):
        slot = order[row]
        if slot == 0 or table[slot - 1] < 0:
            run_starts[n_runs] = slot
            n_runs += 1
    _insertion_sort(run_starts[:n_runs])
    position = 0
    for i in range(n_runs):
        slot = run_starts[i]
        while slot < table_size and table[slot] >= 0:
            order[position] = table[slot]
            position += 1
            table[slot] = -1
            free_right[slot] = slot
            free_left[slot + 1] = slot + 1
            slot += 1


@njit(cache=True, nogil=True)
def _insertion_sort(values):
    """Sort a short array in place (a block's few run starts: at most one per hash value, plus one)."""
    for i in range(1, values.shape[0]):
        value = values[i]
        j = i - 1
        while j >= 0 and values[j] > value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value


@njit(cache=True, nogil=True)
def mark_optimal_groups(sorted_counts, group_overhead, max_group_size, cost, choice, group_start):
    """Cut rows sorted by count into groups of minimal padded work plus per-group overhead.

    Minimises ``sum over groups (group size * longest row in group) + group_overhead * n_groups``;
    the rows being sorted, a group's longest row is its last and the DP over prefix lengths,
    ``cost[i] = min_k cost[i - k] + k * counts[i - 1] + group_overhead`` for
    ``1 <= k <= min(max_group_size, i)``, is exact: O(m * max_group_size).

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


@njit(cache=True, nogil=True)
def sort_and_group(counts, group_overhead, max_group_size, cost, choice, order, group_start):
    """Stable sort of one block's rows by count, then :func:`mark_optimal_groups`.

    Parameters
    ----------
    counts : ndarray of int, shape (m,)
        In-block nonzero counts, rows in original order.
    group_overhead, max_group_size : int
    cost, choice : ndarray of int64, shape (>= m + 1,)
        Scratch.
    order : ndarray of int64, shape (>= m,)
        Written: ``order[i]`` is the row (index into ``counts``) in position i.
    group_start : ndarray of bool, shape (>= m,)
        Written: True where a group begins.

    Returns
    -------
    int
        The number of groups.
    """
    m = counts.shape[0]
    order[:m] = np.argsort(counts, kind="mergesort")
    return mark_optimal_groups(counts[order[:m]], group_overhead, max_group_size, cost, choice, group_start)
