"""HBP storage format (Yan et al., "A Nonlinear Hash-based Optimization Method for SpMV on GPUs",
arXiv 2504.08860) and its preprocessing on the CPU: 2D partitioning, hash / sort / DP reordering.

Layout (the contract shared with the CUDA kernels in ``kernels/hbp.cu``)
-----------------------------------------------------------------------
A matrix of shape (nrows, ncols) is cut into 2D blocks of ``block_height`` (H) rows by
``block_width`` (W) columns: block (rb, cb) covers rows ``[rb*H, min((rb+1)*H, nrows))`` and
columns ``[cb*W, min((cb+1)*W, ncols))``. Only non-empty blocks are stored, row-block-major,
then by column block. Inside a block, each row with at least one nonzero there gets one *slot*;
the ordering (``"hash"``, ``"sort"`` or ``"dp"``) decides the order of the slots and cuts them
into *groups* of at most 32 consecutive slots (one warp; lane q of a group owns its slot q).
Inside a group of k rows the nonzeros are interleaved round-robin: round t emits element t (in
column order) of every lane whose row has more than t elements in the block, in lane order, so
lane q's first element is at ``group_nz_ptr[g] + q`` and its others follow ``next``.

=================  =========================  =======  ==============================================
array              shape                      dtype    holds
=================  =========================  =======  ==============================================
block_row          (n_blocks,)                int32    rb of stored block b
block_col          (n_blocks,)                int32    cb of stored block b
block_group_ptr    (n_blocks + 1,)            int32    groups of block b: [ptr[b], ptr[b+1])
group_slot_ptr     (n_groups + 1,)            int32    slots of group g: [ptr[g], ptr[g+1]), <= 32
group_nz_ptr       (n_groups + 1,)            int64    nonzeros of group g: [ptr[g], ptr[g+1])
slot_row           (n_slots,)                 int32    original row of each slot (authors' output_hash)
cols               (nnz,)                     int32    global column index of each nonzero
values             (nnz,)                     f64/f32  value of each nonzero
next               (nnz,)                     int32    offset to the same row's next nonzero, -1 on its last
merge_ptr          (nrows + 1,)               int64    slots of row r: merge_slot[ptr[r]:ptr[r+1]]
merge_slot         (n_slots,)                 int32    the slots of each row, by ascending column block
=================  =========================  =======  ==============================================

SpMV: ``partial[s]`` = the dot product of slot s's chain with x (summed in column order), then
``y[r] = sum(partial[merge_slot[merge_ptr[r]:merge_ptr[r+1]]])`` in column-block order, 0 for a
row without slots. ``partial`` (shape (n_slots,), values dtype) is workspace, not format.

Where we deviate from the authors' code (``HBP_cuda:HBP_spmv_cuda.cu``, hbp.md sections 3, 5)
---------------------------------------------------------------------------------------------
- Only non-empty blocks are stored, and only rows with nonzeros in a block get a slot. The
  authors give every row of every block a slot and mark empty ones in ``zero_row``; their
  ``output_hash``, ``zero_row`` and ``mid_output`` are n_colblocks x nrows, which grows with
  nrows * ncols / W. Dropping the empty rows is equivalent and bounds every array by nnz.
- Hence groups are explicit (``group_slot_ptr``) instead of implicit runs of 32, which also
  lets the DP ordering cut groups of variable size.
- The merge uses the row -> slots structure (``merge_ptr``, ``merge_slot``), so it needs no
  atomics and no dense n_colblocks x nrows partial array.
- The last row block is kept when nrows is a multiple of H, x is never read past its end, and
  offsets into the nonzeros are int64 (the authors' defects).
- The hash placement is the authors' probing, computed with a union-find over runs of occupied
  slots: the same slot order in near-linear instead of quadratic time (hbp.md section 8).
  Probes outside the table are skipped, as the layout contract specifies.
- ``partial`` is not a field: :class:`HBPMatrix` is immutable, and each executor owns its own
  workspace, so two executors of one matrix never race.

Preprocessing (:func:`preprocess_timed`) runs in three timed phases, parallel over row blocks
with numba; only the middle one differs between orderings, so their comparison is fair:

1. ``split`` (common): one pass over each row's columns splits it into per-block segments;
   a counting sort by column block gathers each block's segments (O(nnz + n_rowblocks * n_colblocks)).
2. ``reorder``: per block, order the segments (slots) and cut them into groups:
   ``"hash"`` the authors' hash placement, runs of 32; ``"sort"`` a stable argsort by
   in-block count, runs of 32 (hbp.md's suggested "sorting approach");
   ``"dp"`` the same sort, then groups by the optimal-grouping DP of :mod:`methods.spmv.regu2d`.
3. ``emit`` (common): the interleaved arrays, ``next`` chains and the merge structure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from methods.spmv.partition import INT32_LIMIT, BlockLayout, canonical_csr, offsets, split_blocks
from methods.spmv.regu2d import GROUP_OVERHEAD, sort_and_group

WARP_SIZE = 32
ORDERINGS = ("hash", "sort", "dp")
_HASH, _SORT, _DP = range(3)


@dataclass(frozen=True, eq=False)
class HBPMatrix(BlockLayout):
    """A sparse matrix in the HBP layout (see the module docstring for each array).

    Attributes
    ----------
    block_row, block_col, block_group_ptr, group_slot_ptr, group_nz_ptr, slot_row, cols, values,
    next, merge_ptr, merge_slot : ndarray
        The layout's arrays, shapes and dtypes as in the module docstring.
    shape : tuple of int
        (nrows, ncols).
    block_height, block_width : int
        Rows and columns of a 2D block (the paper's HBP_M = 512, HBP_N = 4096).
    ordering : str
        ``"hash"``, ``"sort"`` or ``"dp"``: how the slots of each block were ordered and grouped.
    """

    block_row: np.ndarray
    block_col: np.ndarray
    block_group_ptr: np.ndarray
    group_slot_ptr: np.ndarray
    group_nz_ptr: np.ndarray
    slot_row: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    next: np.ndarray
    merge_ptr: np.ndarray
    merge_slot: np.ndarray
    shape: tuple[int, int]
    block_height: int
    block_width: int
    ordering: str

    @property
    def nnz(self) -> int:
        """Stored nonzeros (explicit zeros of the input included)."""
        return self.values.shape[0]

    @property
    def n_groups(self) -> int:
        """Warp groups over all blocks."""
        return self.group_slot_ptr.shape[0] - 1

    def workspace_nbytes(self) -> int:
        """Bytes of the SpMV workspace ``partial`` (n_slots values), not part of the format."""
        return self.n_slots * self.values.itemsize

    def bytes_per_nonzero(self, workspace: bool = False) -> float:
        """``nbytes()`` per stored nonzero (CSR with int32 indices: 12 + 4 (nrows+1) / nnz in fp64).

        Parameters
        ----------
        workspace : bool
            Also count ``partial``.

        Returns
        -------
        float
            Bytes per nonzero; NaN for a matrix without nonzeros.
        """
        total = self.nbytes() + (self.workspace_nbytes() if workspace else 0)
        return total / self.nnz if self.nnz else float("nan")

    def to_csr(self) -> sp.csr_matrix:
        """The matrix back in canonical CSR (sorted, no duplicates), values in ``self.dtype``.

        Exact: ``build_hbp(a).to_csr()`` has the indptr, indices and data of canonical ``a``.
        """
        indptr, indices, data = _csr_from_layout(self.shape[0], self.group_slot_ptr, self.group_nz_ptr, self.cols,
                                                 self.values, self.next, self.merge_ptr, self.merge_slot)
        index_dtype = np.int32 if self.nnz <= INT32_LIMIT else np.int64
        return sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=self.shape)


def build_hbp(csr, ordering: str = "hash", block_height: int = 512, block_width: int = 4096,
              dtype=None) -> HBPMatrix:
    """Convert a sparse matrix to the HBP layout.

    Parameters
    ----------
    csr : scipy sparse matrix or array, shape (nrows, ncols)
        Real (or integer/bool) values; converted to canonical CSR first if needed. Explicit
        zeros are kept as stored nonzeros.
    ordering : {"hash", "sort", "dp"}
        The in-block reordering: the paper's hash, a stable sort by in-block count, or the
        Regu2D-style DP (module docstring).
    block_height, block_width : int
        The 2D block size (paper: 512 x 4096).
    dtype : {None, numpy.float64, numpy.float32}
        The values' dtype; None keeps float32 input as float32 and makes anything else float64.

    Returns
    -------
    HBPMatrix
    """
    return preprocess_timed(csr, ordering, block_height, block_width, dtype)[0]


def preprocess_timed(csr, ordering: str = "hash", block_height: int = 512, block_width: int = 4096,
                     dtype=None) -> tuple[HBPMatrix, dict[str, float]]:
    """:func:`build_hbp`, timing each preprocessing phase separately.

    Returns
    -------
    hbp : HBPMatrix
    seconds : dict of str to float
        Wall-clock seconds of ``"split"`` (common: per-block segments of each row),
        ``"reorder"`` (the ordering alone: hash, sort or dp, and the group cuts), ``"emit"``
        (common: interleaving and the merge structure) and ``"total"`` (their sum). The
        conversion of the input to canonical CSR with int32 indices is not timed. The first call
        with new argument types also compiles the numba kernels: time a warm call.
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    for name, size in (("block_height", block_height), ("block_width", block_width)):
        if not (isinstance(size, int | np.integer) and 1 <= size <= INT32_LIMIT):
            raise ValueError(f"{name} must be a positive int below 2**31, got {size!r}")
    indptr, indices, data, shape = canonical_csr(csr, dtype, "HBP")
    seconds = {}
    start = time.perf_counter()
    segments = _split_phase(indptr, indices, shape, int(block_height), int(block_width))
    seconds["split"] = time.perf_counter() - start
    start = time.perf_counter()
    arrangement = _reorder_phase(ORDERINGS.index(ordering), indptr, int(block_height), segments)
    seconds["reorder"] = time.perf_counter() - start
    start = time.perf_counter()
    arrays = _emit_phase(indptr, indices, data, int(block_height), segments, arrangement)
    seconds["emit"] = time.perf_counter() - start
    seconds["total"] = seconds["split"] + seconds["reorder"] + seconds["emit"]
    hbp = HBPMatrix(**arrays, merge_ptr=segments["merge_ptr"], shape=shape, block_height=int(block_height),
                    block_width=int(block_width), ordering=ordering)
    return hbp, seconds


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
    table, free_right, free_left, run_starts = _hash_scratch(table_size)
    order = np.empty(counts.shape[0], dtype=np.int64)
    _hash_order(counts, table_size, table, free_right, free_left, run_starts, order)
    return order


def _split_phase(indptr, indices, shape, block_height, block_width) -> dict[str, np.ndarray]:
    """Phase 1 (common): :func:`methods.spmv.partition.split_blocks`, with HBP's int32 limits checked."""
    segments = split_blocks(indptr, indices, shape, block_height, block_width)
    if segments["slot_offsets"][-1] > INT32_LIMIT:
        raise ValueError(f"{segments['slot_offsets'][-1]} slots: HBP numbers slots in int32")
    if WARP_SIZE * min(block_width, shape[1]) > INT32_LIMIT and WARP_SIZE * _longest_row(indptr) > INT32_LIMIT:
        raise ValueError("rows this long could make a group's next offsets overflow int32")
    return segments


def _reorder_phase(ordering, indptr, block_height, segments, group_overhead=GROUP_OVERHEAD,
                   max_group_size=WARP_SIZE) -> dict[str, np.ndarray]:
    """Phase 2: the slot order and group cuts of every block, by the chosen ordering.

    ``group_overhead`` and ``max_group_size`` are the DP's (``"dp"`` only; hash and sort cut runs
    of 32): HBP's warp groups use 32 and 32, Regu2D's SIMD slices (:mod:`methods.spmv.regu2d`) theirs.
    """
    n_slots = int(segments["slot_offsets"][-1])
    slot_seg = np.empty(n_slots, np.int64)
    group_start = np.empty(n_slots, np.bool_)
    rb_groups = np.empty(segments["rb_segments"].shape[0], np.int64)
    _reorder_blocks(ordering, block_height, group_overhead, max_group_size, indptr, segments["rb_segments"],
                    segments["rb_blocks"],
                    segments["blk_first"], segments["sorted_seg"], segments["sorted_len"], segments["slot_offsets"],
                    slot_seg, group_start, rb_groups)
    return {"slot_seg": slot_seg, "group_start": group_start, "group_offsets": offsets(rb_groups)}


def _emit_phase(indptr, indices, data, block_height, segments, arrangement) -> dict[str, np.ndarray]:
    """Phase 3 (common): the layout's arrays (all but merge_ptr, made in phase 1)."""
    n_blocks = int(segments["block_offsets"][-1])
    n_groups = int(arrangement["group_offsets"][-1])
    n_slots = int(segments["slot_offsets"][-1])
    nnz = int(indptr[-1])
    arrays = {
        "block_row": np.empty(n_blocks, np.int32), "block_col": np.empty(n_blocks, np.int32),
        "block_group_ptr": np.empty(n_blocks + 1, np.int32), "group_slot_ptr": np.empty(n_groups + 1, np.int32),
        "group_nz_ptr": np.empty(n_groups + 1, np.int64), "slot_row": np.empty(n_slots, np.int32),
        "cols": np.empty(nnz, np.int32), "values": np.empty(nnz, data.dtype), "next": np.empty(nnz, np.int32),
        "merge_slot": np.empty(n_slots, np.int32),
    }
    _emit_blocks(indptr, indices, data, block_height, segments["rb_segments"], segments["rb_blocks"],
                 segments["blk_cb"], segments["blk_first"], segments["seg_row"], segments["seg_start"],
                 segments["seg_len"], segments["slot_offsets"], segments["block_offsets"], arrangement["slot_seg"],
                 arrangement["group_start"], arrangement["group_offsets"], arrays["block_row"], arrays["block_col"],
                 arrays["block_group_ptr"], arrays["group_slot_ptr"], arrays["group_nz_ptr"], arrays["slot_row"],
                 arrays["cols"], arrays["values"], arrays["next"], arrays["merge_slot"])
    arrays["block_group_ptr"][n_blocks] = n_groups
    arrays["group_slot_ptr"][n_groups] = n_slots
    arrays["group_nz_ptr"][n_groups] = nnz
    return arrays


def _longest_row(indptr: np.ndarray) -> int:
    """Most stored entries in one row."""
    return int(np.diff(indptr).max(initial=0))


@njit(parallel=True, cache=True)
def _reorder_blocks(ordering, block_height, group_overhead, max_group_size, indptr, rb_segments, rb_blocks, blk_first,
                    sorted_seg, sorted_len, slot_offsets, slot_seg, group_start, rb_groups):
    """Per stored block: order its slots and mark group starts; ``rb_groups`` counts the groups."""
    for rb in prange(rb_segments.shape[0]):
        base = indptr[rb * block_height]
        table, free_right, free_left, run_starts = _hash_scratch(block_height if ordering == _HASH else 0)
        dp_cost = np.empty(block_height + 1 if ordering == _DP else 0, np.int64)
        dp_choice = np.empty_like(dp_cost)
        order = np.empty(block_height, np.int64)
        starts = np.empty(block_height, np.bool_)
        n_blocks = rb_blocks[rb]
        n_groups = 0
        for j in range(n_blocks):
            first = blk_first[base + j]
            last = blk_first[base + j + 1] if j + 1 < n_blocks else rb_segments[rb]
            counts = sorted_len[base + first:base + last]
            if ordering == _HASH:
                _hash_order(counts, block_height, table, free_right, free_left, run_starts, order)
                n_groups += _mark_runs_of_warps(counts.shape[0], starts)
            elif ordering == _SORT:
                order[:counts.shape[0]] = np.argsort(counts, kind="mergesort")
                n_groups += _mark_runs_of_warps(counts.shape[0], starts)
            else:
                n_groups += sort_and_group(counts, group_overhead, max_group_size, dp_cost, dp_choice, order, starts)
            slot0 = slot_offsets[rb] + first
            for i in range(last - first):
                slot_seg[slot0 + i] = sorted_seg[base + first + order[i]]
                group_start[slot0 + i] = starts[i]
        rb_groups[rb] = n_groups


@njit(cache=True, nogil=True)
def _mark_runs_of_warps(n_slots, group_start):
    """Groups of 32 consecutive slots, the last one possibly shorter; returns their number."""
    for i in range(n_slots):
        group_start[i] = i % WARP_SIZE == 0
    return (n_slots + WARP_SIZE - 1) // WARP_SIZE


@njit(cache=True, nogil=True)
def _hash_scratch(table_size):
    """Empty table (-1), identity union-find arrays and run-start space for :func:`_hash_order`."""
    table = np.full(table_size, -1, np.int64)
    free_right = np.arange(table_size + 1)
    free_left = np.arange(table_size + 1)
    run_starts = np.empty(table_size, np.int64)
    return table, free_right, free_left, run_starts


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
def _hash_order(counts, table_size, table, free_right, free_left, run_starts, order):
    """The authors' hash placement (hbp.md section 3) in near-linear time; writes ``order[:m]``.

    Row i (in original order) with count c hashes to h = (c >> 4) << 8. If h >= table_size it
    takes the last free slot; otherwise the probe h, h+1, h-1, h+2, h-2, ... (positions outside
    the table skipped) takes the first free slot, which is the nearest free slot on either side
    of h, the right one on a tie (+i is probed before -i). ``free_right`` / ``free_left`` find
    those directly: a union-find whose occupied slots point past their run of occupied slots.
    The slot order is the table order with free slots squeezed out, read run by run from the
    sorted run starts. The scratch is left as :func:`_hash_scratch` made it, touching only the
    m occupied slots.
    """
    m = counts.shape[0]
    for row in range(m):
        home = (counts[row] >> 4) << 8
        if home >= table_size:
            slot = _free_at_or_left(free_left, table_size - 1)
        else:
            right = _free_at_or_right(free_right, home)
            left = _free_at_or_left(free_left, home)
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


@njit(parallel=True, cache=True)
def _emit_blocks(indptr, indices, data, block_height, rb_segments, rb_blocks, blk_cb, blk_first, seg_row, seg_start,
                 seg_len, slot_offsets, block_offsets, slot_seg, group_start, group_offsets, block_row, block_col,
                 block_group_ptr, group_slot_ptr, group_nz_ptr, slot_row, cols, values, next_, merge_slot):
    """Write every stored block: its pointers, then each group's interleaved nonzeros.

    A row block's nonzeros keep their CSR range [indptr[rb*H], indptr[(rb+1)*H]); its blocks,
    groups and slots follow those of earlier row blocks.
    """
    for rb in prange(rb_segments.shape[0]):
        base = indptr[rb * block_height]
        nz = base
        group = group_offsets[rb]
        lanes = np.empty((4, WARP_SIZE), np.int64)
        n_blocks = rb_blocks[rb]
        for j in range(n_blocks):
            block = block_offsets[rb] + j
            block_row[block] = rb
            block_col[block] = blk_cb[base + j]
            block_group_ptr[block] = group
            first_slot = slot_offsets[rb] + blk_first[base + j]
            end_slot = slot_offsets[rb] + (blk_first[base + j + 1] if j + 1 < n_blocks else rb_segments[rb])
            slot = first_slot
            while slot < end_slot:
                group_end = slot + 1
                while group_end < end_slot and not group_start[group_end]:
                    group_end += 1
                group_slot_ptr[group] = slot
                group_nz_ptr[group] = nz
                for lane in range(group_end - slot):
                    segment = slot_seg[slot + lane]
                    slot_row[slot + lane] = seg_row[segment]
                    merge_slot[slot_offsets[rb] + segment - base] = slot + lane
                nz = _interleave_group(slot, group_end, nz, slot_seg, seg_start, seg_len, indices, data, cols, values,
                                       next_, lanes)
                group += 1
                slot = group_end


@njit(cache=True, nogil=True)
def _interleave_group(first_slot, end_slot, nz, slot_seg, seg_start, seg_len, indices, data, cols, values, next_,
                      lanes):
    """Round-robin the group's rows into cols/values/next from position nz; returns the end.

    Round t writes element t of each lane still active, in lane order; finished lanes drop out
    of the active list, so the work is the group's nonzeros, not lanes x longest row.
    ``lanes`` is scratch of shape (4, 32): active lane, CSR position, remaining, last written.
    """
    active, position, remaining, previous = lanes[0], lanes[1], lanes[2], lanes[3]
    n_active = end_slot - first_slot
    for lane in range(n_active):
        segment = slot_seg[first_slot + lane]
        active[lane] = lane
        position[lane] = seg_start[segment]
        remaining[lane] = seg_len[segment]
        previous[lane] = -1
    while n_active > 0:
        still_active = 0
        for i in range(n_active):
            lane = active[i]
            cols[nz] = indices[position[lane]]
            values[nz] = data[position[lane]]
            if previous[lane] >= 0:
                next_[previous[lane]] = nz - previous[lane]
            previous[lane] = nz
            position[lane] += 1
            remaining[lane] -= 1
            if remaining[lane] > 0:
                active[still_active] = lane
                still_active += 1
            else:
                next_[nz] = -1
            nz += 1
        n_active = still_active
    return nz


@njit(cache=True)
def _csr_from_layout(nrows, group_slot_ptr, group_nz_ptr, cols, values, next_, merge_ptr, merge_slot):
    """indptr, indices, data of the matrix, rows' slots read in column-block order."""
    slot_first = np.empty(merge_slot.shape[0], np.int64)
    for group in range(group_slot_ptr.shape[0] - 1):
        for slot in range(group_slot_ptr[group], group_slot_ptr[group + 1]):
            slot_first[slot] = group_nz_ptr[group] + slot - group_slot_ptr[group]
    indptr = np.zeros(nrows + 1, np.int64)
    for row in range(nrows):
        count = 0
        for k in range(merge_ptr[row], merge_ptr[row + 1]):
            nz = slot_first[merge_slot[k]]
            count += 1
            while next_[nz] >= 0:
                nz += next_[nz]
                count += 1
        indptr[row + 1] = indptr[row] + count
    indices = np.empty(indptr[nrows], np.int32)
    data = np.empty(indptr[nrows], values.dtype)
    for row in range(nrows):
        out = indptr[row]
        for k in range(merge_ptr[row], merge_ptr[row + 1]):
            nz = slot_first[merge_slot[k]]
            while True:
                indices[out] = cols[nz]
                data[out] = values[nz]
                out += 1
                if next_[nz] < 0:
                    break
                nz += next_[nz]
    return indptr, indices, data
