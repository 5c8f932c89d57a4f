"""HBP storage format (Yan et al., "A Nonlinear Hash-based Optimization Method for SpMV on GPUs",
arXiv 2504.08860) and its preprocessing on the CPU: 2D partitioning, hash / sort / DP reordering.

Layout (the contract of the CPU executor, :mod:`methods.spmv.hbp_cpu`, and of the CUDA kernel,
``methods/spmv/kernels/hbp.cu``, which both read it as it is)
--------------------------------------------------------------------------------------------------
A matrix of shape (nrows, ncols) is cut into 2D blocks of ``block_height`` (H) rows by
``block_width`` (W) columns: block (rb, cb) covers rows ``[rb*H, min((rb+1)*H, nrows))`` and
columns ``[cb*W, min((cb+1)*W, ncols))``. Only non-empty blocks are stored, row-block-major,
then by column block. Inside a block, each row with at least one nonzero there gets one *slot*;
the ordering (``"hash"``, ``"sort"`` or ``"dp"``, :mod:`methods.spmv.ordering`) decides the
order of the slots and cuts them into *groups* of at most 32 consecutive slots (one warp).
Inside a group the lanes are ordered by their slot's in-block length, longest first (stable),
and the nonzeros are interleaved round by round: round t holds element t (in column order) of
each lane longer than t, which are lanes ``0 .. n_t - 1``, so element t of lane q is at
``group start + n_0 + ... + n_(t-1) + q``. The group's rows (and so a warp's work: its rows and
its number of rounds) are those the ordering chose; only the lane numbering within the group
follows the lengths, so that no ``next`` chain is needed.

=================  =====================  =======  ================================================
array              shape                  dtype    holds
=================  =====================  =======  ================================================
row_block_ptr      (n_rowblocks + 1,)     int32    stored blocks of row block rb: [ptr[rb], ptr[rb+1])
block_col          (n_blocks,)            int32    column block cb of stored block b
block_nz_ptr       (n_blocks + 1,)        int64    nonzeros of block b: [ptr[b], ptr[b+1])
block_group_ptr    (n_blocks + 1,)        int32    groups of block b: [ptr[b], ptr[b+1])
group_slot_ptr     (n_groups + 1,)        int32    slots of group g: [ptr[g], ptr[g+1]), 1 to 32
group_nz_offset    (n_groups,)            uint32   first nonzero of group g - block_nz_ptr[its block]
slot_row           (n_slots,)             uint16   row of the slot - rb * H
slot_last          (n_slots,)             uint16   the slot's nonzeros in the block - 1 (its last round)
cols               (nnz,)                 uint16   column - cb * W
values             (nnz,)                 f64/f32  value
=================  =====================  =======  ================================================

Hence H and W are at most 65536 (16-bit row and column offsets; a slot has at most W nonzeros,
so its last round fits 16 bits too). Every array above is read by an SpMV, and
:meth:`HBPMatrix.bytes_per_nonzero` counts them all. SpMV: ``y[r]`` is the sum over r's blocks,
in column-block order, of the slot's dot product with x, each summed in column order.

Block shape. The paper's (GPU) shape is 512 x 4096 (:data:`GPU_BLOCK_SHAPE`). On the CPU,
:func:`cpu_block_shape` chooses a shape from the machine's caches: both are the HBP method, and
the records name the shape used.

Where we deviate from the authors' code
-----------------------------------------------------------
- Only non-empty blocks are stored, and only rows with nonzeros in a block get a slot (the
  authors give every row of every block a slot; their per-block arrays are n_colblocks x nrows).
  Groups are therefore explicit (``group_slot_ptr``), which also lets the DP cut groups of
  variable size.
- Lanes within a group are numbered by length (above) and each slot stores its length instead
  of the authors' per-nonzero chain; there is no per-slot partial sum and no merge array: both
  executors sum each row block into y directly.
- The last row block is kept when nrows is a multiple of H, x is never read past its end, and
  block offsets into the nonzeros are int64 (the authors' defects).
- The hash placement is the authors' probing, computed with a union-find
  (:func:`methods.spmv.ordering.hash_slot_order`): the same slot order in near-linear time.

Preprocessing (:func:`preprocess_timed`) runs two passes, parallel over chunks of row blocks:
``count`` (each row block's slots and stored blocks, hence every offset) and ``build`` (per row
block, with scratch the size of one row block: split the rows into block segments, order each
block's slots, write the final arrays once). Only :func:`methods.spmv.ordering.order_block`
differs between the orderings, so their times compare the orderings, not their code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from methods.spmv.machine import available_cpus, cpu_caches
from methods.spmv.ordering import (
    DP,
    GROUP_OVERHEAD,
    MAX_GROUP_SIZE,
    ORDERINGS,
    WARP_SIZE,
    block_scratch,
    hash_slot_order,
    order_block,
)
from methods.spmv.partition import INT32_LIMIT, BlockLayout, canonical_csr, offsets

__all__ = ["GPU_BLOCK_SHAPE", "ORDERINGS", "WARP_SIZE", "HBPMatrix", "build_hbp", "cpu_block_shape",
           "hash_slot_order", "preprocess_timed"]

GPU_BLOCK_SHAPE = (512, 4096)  # the paper's HBP_M x HBP_N
UINT16_SPAN = 65536
# Row blocks per thread the CPU shape aims at, so that panels of whole row blocks balance nonzeros.
ROW_BLOCKS_PER_THREAD = 4
# Row blocks handed to one preprocessing task (they share its scratch).
_CHUNKS_PER_THREAD = 8


@dataclass(frozen=True, eq=False)
class HBPMatrix(BlockLayout):
    """A sparse matrix in the HBP layout (see the module docstring for each array).

    Attributes
    ----------
    row_block_ptr, block_col, block_nz_ptr, block_group_ptr, group_slot_ptr, group_nz_offset, slot_row,
    slot_last, cols, values : ndarray
        The layout's arrays, shapes and dtypes as in the module docstring.
    shape : tuple of int
        (nrows, ncols).
    block_height, block_width : int
        Rows and columns of a 2D block (the paper's GPU shape: 512 x 4096).
    ordering : str
        ``"hash"``, ``"sort"`` or ``"dp"``: how the slots of each block were ordered and grouped.
    """

    row_block_ptr: np.ndarray
    block_col: np.ndarray
    block_nz_ptr: np.ndarray
    block_group_ptr: np.ndarray
    group_slot_ptr: np.ndarray
    group_nz_offset: np.ndarray
    slot_row: np.ndarray
    slot_last: np.ndarray
    cols: np.ndarray
    values: np.ndarray
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

    @property
    def n_rowblocks(self) -> int:
        return self.row_block_ptr.shape[0] - 1

    def bytes_per_nonzero(self) -> float:
        """``nbytes()`` (every array an SpMV reads) per stored nonzero; NaN without nonzeros.

        CSR with int32 indices takes ``12 + 4 (nrows + 1) / nnz`` in fp64.
        """
        return self.nbytes() / self.nnz if self.nnz else float("nan")

    def to_csr(self) -> sp.csr_matrix:
        """The matrix back in canonical CSR (sorted, no duplicates), values in ``self.dtype``.

        Exact: ``build_hbp(a).to_csr()`` has the indptr, indices and data of canonical ``a``.
        """
        indptr, indices, data = _csr_from_layout(self.shape[0], self.block_height, self.block_width,
                                                 *self.arrays().values())
        index_dtype = np.int32 if self.nnz <= INT32_LIMIT else np.int64
        return sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=self.shape)


def cpu_block_shape(shape: tuple[int, int], itemsize: int, threads: int | None = None,
                    l2_bytes: int | None = None) -> tuple[int, int]:
    """The CPU executor's block shape ``(H, W)``: a block's x slice and rows of y fit one core's L2.

    The rule (docs/hbp-cpu.md): W is the widest power of two whose slice of x takes at most an
    eighth of the L2 cache (so it stays there while a panel's row blocks read it), H the tallest
    power of two whose rows of y take at most half of it (the rows one block updates, at random),
    both at most 65536 (16-bit offsets); W is then cut to ncols, and H to about nrows / (4 threads)
    (a multiple of 32, at least 32) so that every thread gets several row blocks to balance. On a
    1 MiB L2 in fp64: 65536 x 16384.

    Parameters
    ----------
    shape : (int, int)
        (nrows, ncols) of the matrix.
    itemsize : int
        Bytes per value (8 fp64, 4 fp32).
    threads : int, optional
        Threads the SpMV will run on; default the CPUs this process may use.
    l2_bytes : int, optional
        One core's L2 cache; default :func:`methods.spmv.machine.cpu_caches` ``["L2"]``.
    """
    nrows, ncols = shape
    threads = available_cpus() if threads is None else threads
    l2_bytes = cpu_caches()["L2"] if l2_bytes is None else l2_bytes
    width = _largest_power_of_two(l2_bytes // 8 // itemsize)
    height = _largest_power_of_two(l2_bytes // 2 // itemsize)
    balanced = -(-max(nrows, 1) // (ROW_BLOCKS_PER_THREAD * threads))
    height = min(height, max(WARP_SIZE, -(-balanced // WARP_SIZE) * WARP_SIZE))
    return int(height), int(max(1, min(width, ncols)))


def _largest_power_of_two(limit: int) -> int:
    """The largest power of two <= limit, within [1, 65536]."""
    value = 1
    while value * 2 <= min(limit, UINT16_SPAN):
        value *= 2
    return value


def build_hbp(csr, ordering: str = "hash", block_height: int = GPU_BLOCK_SHAPE[0],
              block_width: int = GPU_BLOCK_SHAPE[1], dtype=None) -> HBPMatrix:
    """Convert a sparse matrix to the HBP layout.

    Parameters
    ----------
    csr : scipy sparse matrix or array, shape (nrows, ncols)
        Real (or integer/bool) values; converted to canonical CSR first if needed. Explicit
        zeros are kept as stored nonzeros.
    ordering : {"hash", "sort", "dp"}
        The in-block reordering: the paper's hash, a stable sort by in-block count, or the
        Regu2D-style DP (:mod:`methods.spmv.ordering`).
    block_height, block_width : int, 1..65536
        The 2D block size (paper: 512 x 4096; the CPU's: :func:`cpu_block_shape`).
    dtype : {None, numpy.float64, numpy.float32}
        The values' dtype; None keeps float32 input as float32 and makes anything else float64.

    Returns
    -------
    HBPMatrix
    """
    return preprocess_timed(csr, ordering, block_height, block_width, dtype)[0]


def preprocess_timed(csr, ordering: str = "hash", block_height: int = GPU_BLOCK_SHAPE[0],
                     block_width: int = GPU_BLOCK_SHAPE[1], dtype=None) -> tuple[HBPMatrix, dict[str, float]]:
    """:func:`build_hbp`, timing each preprocessing pass separately.

    Returns
    -------
    hbp : HBPMatrix
    seconds : dict of str to float
        Wall-clock seconds of ``"count"`` (offsets of every block, slot and nonzero),
        ``"build"`` (split, reorder and write, fused per row block; group offsets fixed up after)
        and ``"total"`` (their sum). The conversion of the input to canonical CSR with int32
        indices is not timed. The first call with new argument types also compiles the numba
        kernels: time a warm call.
    """
    indptr, indices, data, shape, (height, width) = checked_input(csr, ordering, block_height, block_width, dtype)
    nrows, ncols = shape
    n_rowblocks = -(-nrows // height)
    n_colblocks = -(-ncols // width)
    # Column block of column c: c >> shift when W is a power of two (a shift, not a division, per nonzero).
    shift = width.bit_length() - 1 if width & (width - 1) == 0 else -1
    code = ORDERINGS.index(ordering)
    rowblock_nz = indptr[np.minimum(np.arange(n_rowblocks + 1) * height, nrows)]  # nonzeros before each
    chunks = _chunk_bounds(rowblock_nz)
    seconds = {}
    start = time.perf_counter()
    rb_slots, rb_blocks, rb_groups = (np.zeros(n_rowblocks, np.int64) for _ in range(3))
    _count_row_blocks(code, indptr, indices, nrows, height, width, shift, n_colblocks, chunks, rb_slots, rb_blocks,
                      rb_groups)
    slot_offsets, block_offsets, loose_offsets = offsets(rb_slots), offsets(rb_blocks), offsets(rb_groups)
    n_slots, n_blocks = int(slot_offsets[-1]), int(block_offsets[-1])
    if n_slots > INT32_LIMIT:
        raise ValueError(f"{n_slots} slots: HBP numbers slots in int32")
    seconds["count"] = time.perf_counter() - start
    start = time.perf_counter()
    nnz = int(indptr[-1])
    arrays = {
        "row_block_ptr": block_offsets.astype(np.int32), "block_col": np.empty(n_blocks, np.int32),
        "block_nz_ptr": np.empty(n_blocks + 1, np.int64), "block_group_ptr": np.empty(n_blocks + 1, np.int32),
        "slot_row": np.empty(n_slots, np.uint16), "slot_last": np.empty(n_slots, np.uint16),
        "cols": np.empty(nnz, np.uint16), "values": np.empty(nnz, data.dtype),
    }
    # Groups are written from loose_offsets[rb]: exact for hash and sort (runs of 32), an upper bound
    # (one group per slot) for the DP, whose groups are packed afterwards.
    n_loose = int(loose_offsets[-1])
    loose_slot_ptr = np.empty(n_loose + 1, np.int32)
    loose_nz_offset = np.empty(n_loose, np.uint32)
    # Per-thread staging for one row block at a time, allocated once (numba's threads pick theirs by id).
    threads = numba.get_num_threads()
    most = max(1, int(np.diff(rowblock_nz).max(initial=0)))
    _build_row_blocks(code, indptr, indices, data, nrows, height, width, shift, n_colblocks, chunks, slot_offsets,
                      block_offsets, loose_offsets, np.empty((threads, most), np.uint16),
                      np.empty((threads, most), np.uint16), np.empty((threads, most), data.dtype),
                      arrays["block_col"], arrays["block_nz_ptr"],
                      arrays["block_group_ptr"], loose_slot_ptr, loose_nz_offset, arrays["slot_row"],
                      arrays["slot_last"], arrays["cols"], arrays["values"], rb_groups)
    group_offsets = offsets(rb_groups)
    n_groups = int(group_offsets[-1])
    if n_groups == n_loose:
        arrays["group_slot_ptr"], arrays["group_nz_offset"] = loose_slot_ptr, loose_nz_offset
    else:
        arrays["group_slot_ptr"] = np.empty(n_groups + 1, np.int32)
        arrays["group_nz_offset"] = np.empty(n_groups, np.uint32)
        _pack_groups(chunks, loose_offsets, group_offsets, loose_slot_ptr, loose_nz_offset, arrays["group_slot_ptr"],
                     arrays["group_nz_offset"])
    _globalise_groups(chunks, block_offsets, group_offsets, arrays["block_group_ptr"])
    arrays["block_nz_ptr"][n_blocks] = nnz
    arrays["block_group_ptr"][n_blocks] = n_groups
    arrays["group_slot_ptr"][n_groups] = n_slots
    seconds["build"] = time.perf_counter() - start
    seconds["total"] = seconds["count"] + seconds["build"]
    fields = HBPMatrix.__dataclass_fields__
    hbp = HBPMatrix(**{name: arrays[name] for name in fields if name in arrays}, shape=shape, block_height=height,
                    block_width=width, ordering=ordering)
    return hbp, seconds


def checked_input(csr, ordering: str, block_height: int, block_width: int, dtype):
    """:func:`build_hbp`'s arguments checked (ValueError naming the bad one) and its input in canonical
    CSR: ``(indptr, indices (int32), data, shape, (block_height, block_width))``."""
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    for name, size in (("block_height", block_height), ("block_width", block_width)):
        if not (isinstance(size, int | np.integer) and 1 <= size <= UINT16_SPAN):
            raise ValueError(f"{name} must be an int in [1, {UINT16_SPAN}] (16-bit offsets), got {size!r}")
    indptr, indices, data, shape = canonical_csr(csr, dtype, "HBP")
    return indptr, indices, data, shape, (int(block_height), int(block_width))


def _chunk_bounds(before: np.ndarray) -> np.ndarray:
    """Bounds, shape (n_chunks + 1,), of runs of row blocks with about equal nonzeros: one preprocessing task each
    (:data:`_CHUNKS_PER_THREAD` per CPU), each allocating its scratch once. ``before`` (n_rowblocks + 1,): the
    nonzeros before each row block, and the total."""
    n_rowblocks = before.shape[0] - 1
    n_chunks = max(1, min(n_rowblocks, _CHUNKS_PER_THREAD * available_cpus()))
    cuts = np.searchsorted(before, np.linspace(0, before[-1], n_chunks + 1)[1:-1], side="left")
    return np.unique(np.concatenate(([0], cuts, [n_rowblocks]))).astype(np.int64)


@njit(cache=True, nogil=True, inline="always")
def _column_block(column, width, shift):
    return column >> shift if shift >= 0 else column // width


@njit(parallel=True, cache=True)
def _count_row_blocks(ordering, indptr, indices, nrows, height, width, shift, n_colblocks, chunks, rb_slots,
                      rb_blocks, rb_groups):
    """Pass 1: each row block's slots (row segments per column block), stored blocks and groups.

    A row's segments are its runs of one column block (its columns are sorted). Groups are exact
    for hash and sort (runs of 32 per block) and one per slot for the DP (an upper bound: the DP
    cuts them in pass 2). Per chunk of row blocks, a per-column-block counter of which only the
    touched entries are reset: O(nnz + n_slots) work in all.
    """
    for chunk in prange(chunks.shape[0] - 1):
        per_block = np.zeros(n_colblocks, np.int64)
        touched = np.empty(n_colblocks, np.int64)
        for rb in range(chunks[chunk], chunks[chunk + 1]):
            n_touched = 0
            n_slots = 0
            for row in range(rb * height, min((rb + 1) * height, nrows)):
                previous = -1
                for k in range(indptr[row], indptr[row + 1]):
                    colblock = _column_block(indices[k], width, shift)
                    if colblock != previous:
                        if per_block[colblock] == 0:
                            touched[n_touched] = colblock
                            n_touched += 1
                        per_block[colblock] += 1
                        n_slots += 1
                        previous = colblock
            n_groups = 0
            for i in range(n_touched):
                n_groups += (per_block[touched[i]] + WARP_SIZE - 1) // WARP_SIZE
                per_block[touched[i]] = 0
            rb_slots[rb] = n_slots
            rb_blocks[rb] = n_touched
            rb_groups[rb] = n_slots if ordering == DP else n_groups


@njit(parallel=True, cache=True)
def _build_row_blocks(ordering, indptr, indices, data, nrows, height, width, shift, n_colblocks, chunks,
                      slot_offsets, block_offsets, loose_offsets, thread_stage_row, thread_stage_col,
                      thread_stage_value, block_col, block_nz_ptr, block_group_ptr, loose_slot_ptr, loose_nz_offset,
                      slot_row, slot_last, cols, values, rb_groups):
    """Pass 2: every row block's blocks, groups, slots and interleaved nonzeros, written once.

    Per row block, with per-thread scratch the size of one row block: count its nonzeros per
    column block, then copy each nonzero (row and column offsets, value) to the staging area of
    its block, the rows read in order (one sequential write stream per block); then per block, in
    column order, find its segments (runs of one row in its staging area, which stays in cache),
    order its slots (:func:`~methods.spmv.ordering.order_block`, the only ordering-specific line)
    and write each group. A row block's nonzeros keep their CSR range [indptr[rb*H],
    indptr[(rb+1)*H]). ``block_group_ptr`` gets row-block-local group numbers
    (:func:`_globalise_groups`); groups go from ``loose_offsets[rb]``.
    """
    for chunk in prange(chunks.shape[0] - 1):
        thread = numba.get_thread_id()
        stage_row, stage_col = thread_stage_row[thread], thread_stage_col[thread]
        stage_value = thread_stage_value[thread]
        scratch = block_scratch(ordering, height)
        order, group_start = scratch[6], scratch[7]
        block_nonzeros = np.zeros(n_colblocks, np.int64)
        touched = np.empty(n_colblocks, np.int64)
        seg_row = np.empty(height, np.uint16)
        seg_len = np.empty(height, np.int32)
        seg_stage = np.empty(height, np.int64)
        lanes = np.empty(MAX_GROUP_SIZE, np.int64)
        for rb in range(chunks[chunk], chunks[chunk + 1]):
            row0 = rb * height
            row_end = min(row0 + height, nrows)
            first_nz, end_nz = indptr[row0], indptr[row_end]
            n_touched = 0
            for k in range(first_nz, end_nz):
                colblock = _column_block(indices[k], width, shift)
                if block_nonzeros[colblock] == 0:
                    touched[n_touched] = colblock
                    n_touched += 1
                block_nonzeros[colblock] += 1
            blocks = np.sort(touched[:n_touched])
            position = 0
            for j in range(n_touched):
                count = block_nonzeros[blocks[j]]
                block_nonzeros[blocks[j]] = position
                position += count
            for row in range(row0, row_end):
                for k in range(indptr[row], indptr[row + 1]):
                    colblock = _column_block(indices[k], width, shift)
                    position = block_nonzeros[colblock]
                    stage_row[position] = row - row0
                    stage_col[position] = indices[k] - colblock * width
                    stage_value[position] = data[k]
                    block_nonzeros[colblock] = position + 1
            nz = first_nz
            slot = slot_offsets[rb]
            stage_first = 0
            n_groups = 0
            loose = loose_offsets[rb]
            for j in range(n_touched):
                stage_end = block_nonzeros[blocks[j]]  # each cursor has reached its block's end
                block_nonzeros[blocks[j]] = 0
                m = 0
                for position in range(stage_first, stage_end):
                    if position == stage_first or stage_row[position] != stage_row[position - 1]:
                        seg_row[m] = stage_row[position]
                        seg_stage[m] = position
                        seg_len[m] = 0
                        m += 1
                    seg_len[m - 1] += 1
                stage_first = stage_end
                block = block_offsets[rb] + j
                block_col[block] = blocks[j]
                block_nz_ptr[block] = nz
                block_group_ptr[block] = n_groups
                lengths = seg_len[:m]
                order_block(ordering, lengths, height, GROUP_OVERHEAD, MAX_GROUP_SIZE, scratch)
                i = 0
                while i < m:
                    group_end = i + 1
                    longest = lengths[order[i]]
                    while group_end < m and not group_start[group_end]:
                        longest = max(longest, lengths[order[group_end]])
                        group_end += 1
                    loose_slot_ptr[loose + n_groups] = slot
                    loose_nz_offset[loose + n_groups] = nz - block_nz_ptr[block]
                    n_lanes = group_end - i
                    if longest == 1:  # one nonzero per lane (scattered matrices): no rounds to arrange
                        for q in range(n_lanes):
                            lane = order[i + q]
                            slot_row[slot + q] = seg_row[lane]
                            slot_last[slot + q] = 0
                            cols[nz + q] = stage_col[seg_stage[lane]]
                            values[nz + q] = stage_value[seg_stage[lane]]
                        nz += n_lanes
                    else:
                        for q in range(n_lanes):
                            lanes[q] = order[i + q]
                        _sort_lanes_by_length(lanes[:n_lanes], lengths)
                        for q in range(n_lanes):
                            slot_row[slot + q] = seg_row[lanes[q]]
                            slot_last[slot + q] = lengths[lanes[q]] - 1
                        nz = _interleave(lanes[:n_lanes], seg_stage, lengths, stage_col, stage_value, nz, cols,
                                         values)
                    slot += n_lanes
                    n_groups += 1
                    i = group_end
            rb_groups[rb] = n_groups


@njit(cache=True, nogil=True, inline="always")
def _sort_lanes_by_length(lanes, seg_len):
    """Order a group's segments by length, longest first, keeping the ordering's order among equals."""
    for i in range(1, lanes.shape[0]):
        lane = lanes[i]
        length = seg_len[lane]
        j = i - 1
        while j >= 0 and seg_len[lanes[j]] < length:
            lanes[j + 1] = lanes[j]
            j -= 1
        lanes[j + 1] = lane


@njit(cache=True, nogil=True, inline="always")
def _interleave(lanes, lane_stage, lane_len, stage_col, stage_value, nz, cols, values):
    """Write a group's nonzeros round by round from position nz (lanes longest first); returns the end."""
    active = lanes.shape[0]
    for t in range(lane_len[lanes[0]]):
        while lane_len[lanes[active - 1]] <= t:
            active -= 1
        for q in range(active):
            source = lane_stage[lanes[q]] + t
            cols[nz] = stage_col[source]
            values[nz] = stage_value[source]
            nz += 1
    return nz


@njit(parallel=True, cache=True)
def _pack_groups(chunks, loose_offsets, group_offsets, loose_slot_ptr, loose_nz_offset, group_slot_ptr,
                 group_nz_offset):
    """Move each row block's groups from ``loose_offsets[rb]`` to ``group_offsets[rb]`` (the DP's groups)."""
    for chunk in prange(chunks.shape[0] - 1):
        for rb in range(chunks[chunk], chunks[chunk + 1]):
            for g in range(group_offsets[rb + 1] - group_offsets[rb]):
                group_slot_ptr[group_offsets[rb] + g] = loose_slot_ptr[loose_offsets[rb] + g]
                group_nz_offset[group_offsets[rb] + g] = loose_nz_offset[loose_offsets[rb] + g]


@njit(parallel=True, cache=True)
def _globalise_groups(chunks, block_offsets, group_offsets, block_group_ptr):
    """Turn each block's row-block-local first group into a global group number."""
    for chunk in prange(chunks.shape[0] - 1):
        for rb in range(chunks[chunk], chunks[chunk + 1]):
            for block in range(block_offsets[rb], block_offsets[rb + 1]):
                block_group_ptr[block] += group_offsets[rb]


@njit(cache=True)
def _csr_from_layout(nrows, height, width, row_block_ptr, block_col, block_nz_ptr, block_group_ptr, group_slot_ptr,
                     group_nz_offset, slot_row, slot_last, cols, values):
    """indptr, indices, data of the matrix: each row's blocks in column-block order, rounds in column order."""
    indptr = np.zeros(nrows + 1, np.int64)
    for rb in range(row_block_ptr.shape[0] - 1):
        for block in range(row_block_ptr[rb], row_block_ptr[rb + 1]):
            for slot in range(group_slot_ptr[block_group_ptr[block]], group_slot_ptr[block_group_ptr[block + 1]]):
                indptr[rb * height + slot_row[slot] + 1] += slot_last[slot] + 1
    for row in range(nrows):
        indptr[row + 1] += indptr[row]
    cursor = indptr[:-1].copy()
    indices = np.empty(indptr[nrows], np.int32)
    data = np.empty(indptr[nrows], values.dtype)
    for rb in range(row_block_ptr.shape[0] - 1):
        for block in range(row_block_ptr[rb], row_block_ptr[rb + 1]):
            col0 = block_col[block] * width
            for group in range(block_group_ptr[block], block_group_ptr[block + 1]):
                first = group_slot_ptr[group]
                active = group_slot_ptr[group + 1] - first
                k = block_nz_ptr[block] + group_nz_offset[group]
                for t in range(slot_last[first] + 1):
                    while slot_last[first + active - 1] < t:
                        active -= 1
                    for q in range(active):
                        row = rb * height + slot_row[first + q]
                        indices[cursor[row]] = col0 + cols[k]
                        data[cursor[row]] = values[k]
                        cursor[row] += 1
                        k += 1
    return indptr, indices, data
