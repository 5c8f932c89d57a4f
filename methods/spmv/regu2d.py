"""Regu2D (Fei and Zhang, ICPP '21, doi:10.1145/3472456.3472479): format, preprocessing and CPU SpMV.

Regu2D vectorises SpMV on Intel CPUs (AVX-512) with three ingredients: adaptive 2D
partitioning, a regular arrangement of each block's elements into SIMD-width slices, and
index compression, the first two optimised by dynamic programming. The paper's cost model,
partitioning rule and code are not public (docs/papers/hbp.md), so every detail below is our
choice, written down here; results built on it are "Regu2D-style", not Regu2D's numbers.

The optimal-grouping DP (also HBP's ``"dp"`` baseline ordering)
----------------------------------------------------------------
HBP (arXiv 2504.08860) compares its hash reordering with "the dynamic-programming
preprocessing of Regu2D". We implement the **standard optimal-grouping DP**:

1. the rows of a 2D block are sorted by their in-block nonzero count, ascending (stable);
2. the sorted rows are cut into groups of at most ``max_group_size`` consecutive rows,
   minimising ``sum over groups (group size * longest row in group) + group_overhead * n_groups``:
   the padded work of a group processed in lock step (every lane runs as many rounds as the
   group's longest row) plus a fixed cost per group.

Because the rows are sorted, the longest row of a group is its last, and the DP over prefix
lengths is exact: ``cost[i] = min_k cost[i - k] + k * counts[i - 1] + group_overhead`` for
``1 <= k <= min(max_group_size, i)``, O(m * max_group_size) per block of m rows. The code is
:func:`methods.spmv.ordering.mark_optimal_groups`, shared with HBP.

For HBP's warp groups ``GROUP_OVERHEAD = 32`` and ``MAX_GROUP_SIZE = 32`` (our choice): one
group costs as much as one more round of a full 32-lane warp. With it, rows of equal length form
full groups of 32, and a few long rows are split off from many short ones instead of padding them.

The Regu2D format (:class:`Regu2DMatrix`, :func:`build_regu2d`)
----------------------------------------------------------------
- **Adaptive 2D partitioning.** Row panels of ``block_height`` (H, default 512, HBP's block
  height, so the two formats cut rows alike) rows; column blocks of ``block_width`` (W)
  columns, by default :func:`adaptive_block_width`: the widest power of two whose slice of x
  fits ``X_SLICE_BYTES`` (256 KiB, a per-core L2), at most 65536 (so column indices fit 16
  bits), and at most ncols. A matrix narrower than that is cut into row panels only (1D); a
  wider one into 2D blocks whose x slice stays cache-resident while a panel's block runs. Only
  non-empty blocks are stored, panel-major then by column block (the split code is HBP's,
  :mod:`methods.spmv.partition`).
- **Regular arrangement.** Inside a block, each row with nonzeros there is a *slot*. The slots
  are sorted by in-block count and cut by the DP above into *slices* of at most
  ``slice_height`` (C) rows, with ``group_overhead = slice_overhead``. C defaults to the SIMD
  width, 64 bytes / itemsize (AVX-512: 8 fp64, 16 fp32; use 32, a warp, on a GPU), and the
  overhead to C (a slice costs one more padded step of a full slice). A slice of k rows whose
  longest row has L elements is stored as a dense k x L block, column-major (sliced ELL): step t
  of lane i is at ``slice_nz_ptr[s] + t * k + i``, so a SIMD loop over the lanes reads
  consecutive values and column indices. Rows shorter than L are padded with value 0 at column
  offset 0 (the block's first column). The DP thus minimises stored padding plus slices.
- **Index compression.** Columns are stored relative to their block's first column, as uint16
  when W <= 65536, else int32; slot rows relative to their panel's first row, as uint16 (H is
  limited to 65536).

=================  =========================  ============  =====================================================
array              shape                      dtype         holds
=================  =========================  ============  =====================================================
panel_block_ptr    (n_panels + 1,)            int32         blocks of panel p: [ptr[p], ptr[p+1])
block_col          (n_blocks,)                int32         column block cb of stored block b
block_slice_ptr    (n_blocks + 1,)            int32         slices of block b: [ptr[b], ptr[b+1])
slice_slot_ptr     (n_slices + 1,)            int32         slots of slice s: [ptr[s], ptr[s+1]), at most C
slice_nz_ptr       (n_slices + 1,)            int64         stored (padded) entries of slice s
slot_row           (n_slots,)                 uint16        row of the slot - its panel's first row
slot_len           (n_slots,)                 int32         the slot's nonzeros in the block (<= the slice's L)
cols               (n_stored,)                uint16/int32  column - the block's first column
values             (n_stored,)                f64/f32       value (0 in padding)
=================  =========================  ============  =====================================================

SpMV: ``y[r]`` is the sum over r's blocks, in column-block order, of the block's dot product, each
summed in column order (padding adds exact zeros: a finite x gives the same sums; a non-finite
x entry at a block's first column turns padded rows NaN, as in any padded ELL format). A panel's
rows belong to one panel, so panels run in parallel without atomics and without a merge step:
unlike HBP, no per-slot partial sums are stored. ``slot_len`` is what tells padding from stored
explicit zeros (for :meth:`Regu2DMatrix.to_csr`); the CUDA kernel also stops each lane there.

Preprocessing (:func:`preprocess_timed`) has HBP's three phases: ``split`` (the common 2D split),
``reorder`` (sort and DP per block, HBP's ``"dp"`` code with C and the slice overhead) and
``emit`` (the sliced-ELL arrays).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit, prange, uint64

from methods.spmv.ordering import DP, block_scratch, order_block
from methods.spmv.partition import INT32_LIMIT, BlockLayout, canonical_csr, offsets, split_blocks

SIMD_BYTES = 64  # one AVX-512 register
X_SLICE_BYTES = 256 * 1024
UINT16_SPAN = 65536
DEFAULT_BLOCK_HEIGHT = 512


def adaptive_block_width(ncols: int, itemsize: int, x_slice_bytes: int = X_SLICE_BYTES) -> int:
    """The default column-block width: the widest power of two whose x slice fits ``x_slice_bytes``.

    At most 65536 (16-bit column offsets) and at most ``ncols`` (at least 1). fp64 with the
    default 256 KiB: 32768 columns; fp32: 65536.
    """
    width = 1
    while width * 2 * itemsize <= x_slice_bytes and width * 2 <= UINT16_SPAN:
        width *= 2
    return int(max(1, min(width, ncols)))


@dataclass(frozen=True, eq=False)
class Regu2DMatrix(BlockLayout):
    """A sparse matrix in the Regu2D-style layout (see the module docstring for each array).

    Attributes
    ----------
    panel_block_ptr, block_col, block_slice_ptr, slice_slot_ptr, slice_nz_ptr, slot_row, slot_len, cols,
    values : ndarray
        The layout's arrays, shapes and dtypes as in the module docstring.
    shape : tuple of int
        (nrows, ncols).
    block_height, block_width : int
        Rows of a panel, columns of a block.
    slice_height, slice_overhead : int
        Most rows per slice (the SIMD width C) and the DP's cost of one slice, in padded entries.
    nnz : int
        Stored nonzeros of the matrix (explicit zeros of the input included, padding excluded).
    """

    panel_block_ptr: np.ndarray
    block_col: np.ndarray
    block_slice_ptr: np.ndarray
    slice_slot_ptr: np.ndarray
    slice_nz_ptr: np.ndarray
    slot_row: np.ndarray
    slot_len: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]
    block_height: int
    block_width: int
    slice_height: int
    slice_overhead: int
    nnz: int

    @property
    def n_panels(self) -> int:
        return self.panel_block_ptr.shape[0] - 1

    @property
    def n_slices(self) -> int:
        return self.slice_slot_ptr.shape[0] - 1

    @property
    def n_stored(self) -> int:
        """Stored entries, padding included."""
        return self.values.shape[0]

    @property
    def padding_fraction(self) -> float:
        """Share of the stored entries that are padding (0 for an empty matrix)."""
        return 1.0 - self.nnz / self.n_stored if self.n_stored else 0.0

    def bytes_per_nonzero(self) -> float:
        """``nbytes()`` per nonzero (CSR with int32 indices: 12 + 4 (nrows+1) / nnz in fp64); NaN if nnz is 0."""
        return self.nbytes() / self.nnz if self.nnz else float("nan")

    def to_csr(self) -> sp.csr_matrix:
        """The matrix back in canonical CSR (sorted, no duplicates, explicit zeros kept), values in ``self.dtype``.

        Exact: ``build_regu2d(a).to_csr()`` has the indptr, indices and data of canonical ``a``.
        """
        indptr, indices, data = _csr_from_slices(self.shape[0], self.block_height, self.block_width,
                                                 self.panel_block_ptr, self.block_col, self.block_slice_ptr,
                                                 self.slice_slot_ptr, self.slice_nz_ptr, self.slot_row, self.slot_len,
                                                 self.cols, self.values, self.nnz)
        index_dtype = np.int32 if self.nnz <= INT32_LIMIT else np.int64
        return sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=self.shape)


def build_regu2d(csr, block_height: int = DEFAULT_BLOCK_HEIGHT, block_width: int | None = None,
                 slice_height: int | None = None, slice_overhead: int | None = None, dtype=None) -> Regu2DMatrix:
    """Convert a sparse matrix to the Regu2D-style layout.

    Parameters
    ----------
    csr : scipy sparse matrix or array, shape (nrows, ncols)
        Real (or integer/bool) values; canonicalised first if needed. Explicit zeros stay stored.
    block_height : int, 1..65536
        Rows per panel.
    block_width : int, optional
        Columns per block; default :func:`adaptive_block_width`. Above 65536, columns are int32.
    slice_height : int, optional
        Most rows per slice (C); default the AVX-512 width 64 / itemsize (8 fp64, 16 fp32).
    slice_overhead : int, optional
        The DP's cost of a slice, in padded entries; default ``slice_height``.
    dtype : {None, numpy.float64, numpy.float32}
        The values' dtype; None keeps float32 input as float32 and makes anything else float64.

    Returns
    -------
    Regu2DMatrix
    """
    return preprocess_timed(csr, block_height, block_width, slice_height, slice_overhead, dtype)[0]


def preprocess_timed(csr, block_height: int = DEFAULT_BLOCK_HEIGHT, block_width: int | None = None,
                     slice_height: int | None = None, slice_overhead: int | None = None,
                     dtype=None) -> tuple[Regu2DMatrix, dict[str, float]]:
    """:func:`build_regu2d`, timing each phase.

    Returns
    -------
    matrix : Regu2DMatrix
    seconds : dict of str to float
        Wall-clock seconds of ``"split"``, ``"reorder"`` (sort and DP), ``"emit"`` and ``"total"``
        (their sum); the conversion to canonical CSR is not timed. The first call with new argument
        types also compiles the numba kernels: time a warm call.
    """
    indptr, indices, data, shape = canonical_csr(csr, dtype, "Regu2D")
    itemsize = data.dtype.itemsize
    block_width = adaptive_block_width(shape[1], itemsize) if block_width is None else block_width
    slice_height = SIMD_BYTES // itemsize if slice_height is None else slice_height
    slice_overhead = slice_height if slice_overhead is None else slice_overhead
    for name, value, high in (("block_height", block_height, UINT16_SPAN), ("block_width", block_width, INT32_LIMIT),
                              ("slice_height", slice_height, 1024), ("slice_overhead", slice_overhead, INT32_LIMIT)):
        low = 0 if name == "slice_overhead" else 1
        if not (isinstance(value, int | np.integer) and low <= value <= high):
            raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    block_height, block_width, slice_height = int(block_height), int(block_width), int(slice_height)
    seconds = {}
    start = time.perf_counter()
    segments = split_blocks(indptr, indices, shape, block_height, block_width)
    if segments["slot_offsets"][-1] > INT32_LIMIT:
        raise ValueError(f"{segments['slot_offsets'][-1]} slots: Regu2D numbers slots in int32")
    seconds["split"] = time.perf_counter() - start
    start = time.perf_counter()
    arrangement = _reorder_phase(indptr, block_height, segments, int(slice_overhead), slice_height)
    seconds["reorder"] = time.perf_counter() - start
    start = time.perf_counter()
    col_dtype = np.uint16 if block_width <= UINT16_SPAN else np.int32
    arrays = _emit_phase(indptr, indices, data, block_height, block_width, segments, arrangement, col_dtype)
    seconds["emit"] = time.perf_counter() - start
    seconds["total"] = seconds["split"] + seconds["reorder"] + seconds["emit"]
    matrix = Regu2DMatrix(**arrays, shape=shape, block_height=block_height, block_width=block_width,
                          slice_height=slice_height, slice_overhead=int(slice_overhead), nnz=int(indptr[-1]))
    return matrix, seconds


def _reorder_phase(indptr, block_height, segments, slice_overhead, slice_height) -> dict[str, np.ndarray]:
    """Phase 2: every block's slots sorted by count and cut into slices by the DP."""
    n_slots = int(segments["slot_offsets"][-1])
    slot_seg = np.empty(n_slots, np.int64)
    slice_start = np.empty(n_slots, np.bool_)
    rb_slices = np.empty(segments["rb_segments"].shape[0], np.int64)
    _dp_blocks(block_height, slice_overhead, slice_height, indptr, segments["rb_segments"], segments["rb_blocks"],
               segments["blk_first"], segments["sorted_seg"], segments["sorted_len"], segments["slot_offsets"],
               slot_seg, slice_start, rb_slices)
    return {"slot_seg": slot_seg, "group_start": slice_start, "group_offsets": offsets(rb_slices)}


@njit(parallel=True, cache=True)
def _dp_blocks(block_height, slice_overhead, slice_height, indptr, rb_segments, rb_blocks, blk_first, sorted_seg,
               sorted_len, slot_offsets, slot_seg, slice_start, rb_slices):
    """Per stored block: :func:`~methods.spmv.ordering.order_block` (DP); ``rb_slices`` counts the slices."""
    for rb in prange(rb_segments.shape[0]):
        base = indptr[rb * block_height]
        scratch = block_scratch(DP, block_height)
        order, starts = scratch[6], scratch[7]
        n_blocks = rb_blocks[rb]
        n_slices = 0
        for j in range(n_blocks):
            first = blk_first[base + j]
            last = blk_first[base + j + 1] if j + 1 < n_blocks else rb_segments[rb]
            counts = sorted_len[base + first:base + last]
            n_slices += order_block(DP, counts, block_height, slice_overhead, slice_height, scratch)
            slot0 = slot_offsets[rb] + first
            for i in range(last - first):
                slot_seg[slot0 + i] = sorted_seg[base + first + order[i]]
                slice_start[slot0 + i] = starts[i]
        rb_slices[rb] = n_slices


def _emit_phase(indptr, indices, data, block_height, block_width, segments, arrangement,
                col_dtype) -> dict[str, np.ndarray]:
    """Phase 3: size every panel's padded slices, then write the layout's arrays."""
    n_panels = segments["rb_segments"].shape[0]
    rb_stored = np.empty(n_panels, np.int64)
    _count_stored(segments["slot_offsets"], segments["seg_len"], indptr, block_height, arrangement["slot_seg"],
                  arrangement["group_start"], rb_stored)
    stored_offsets = offsets(rb_stored)
    n_blocks = int(segments["block_offsets"][-1])
    n_slices = int(arrangement["group_offsets"][-1])
    n_slots = int(segments["slot_offsets"][-1])
    if n_slices > INT32_LIMIT or n_blocks > INT32_LIMIT:
        raise ValueError(f"{n_slices} slices in {n_blocks} blocks: Regu2D numbers them in int32")
    n_stored = int(stored_offsets[-1])
    arrays = {
        "panel_block_ptr": segments["block_offsets"].astype(np.int32),
        "block_col": np.empty(n_blocks, np.int32), "block_slice_ptr": np.empty(n_blocks + 1, np.int32),
        "slice_slot_ptr": np.empty(n_slices + 1, np.int32), "slice_nz_ptr": np.empty(n_slices + 1, np.int64),
        "slot_row": np.empty(n_slots, np.uint16), "slot_len": np.empty(n_slots, np.int32),
        "cols": np.empty(n_stored, col_dtype), "values": np.empty(n_stored, data.dtype),
    }
    _emit_slices(indptr, indices, data, block_height, block_width, segments["rb_segments"], segments["rb_blocks"],
                 segments["blk_cb"], segments["blk_first"], segments["seg_row"], segments["seg_start"],
                 segments["seg_len"], segments["slot_offsets"], segments["block_offsets"], arrangement["slot_seg"],
                 arrangement["group_start"], arrangement["group_offsets"], stored_offsets, arrays["block_col"],
                 arrays["block_slice_ptr"], arrays["slice_slot_ptr"], arrays["slice_nz_ptr"], arrays["slot_row"],
                 arrays["slot_len"], arrays["cols"], arrays["values"])
    arrays["block_slice_ptr"][n_blocks] = n_slices
    arrays["slice_slot_ptr"][n_slices] = n_slots
    arrays["slice_nz_ptr"][n_slices] = n_stored
    return arrays


@njit(parallel=True, cache=True)
def _count_stored(slot_offsets, seg_len, indptr, block_height, slot_seg, slice_start, rb_stored):
    """Stored entries (k x L per slice) of each panel; slices begin where ``slice_start`` is set."""
    for rb in prange(rb_stored.shape[0]):
        total = 0
        slot = slot_offsets[rb]
        end = slot_offsets[rb + 1]
        while slot < end:
            slice_end = slot + 1
            while slice_end < end and not slice_start[slice_end]:
                slice_end += 1
            # Ascending counts: the slice's longest row is its last.
            total += (slice_end - slot) * seg_len[slot_seg[slice_end - 1]]
            slot = slice_end
        rb_stored[rb] = total


@njit(parallel=True, cache=True)
def _emit_slices(indptr, indices, data, block_height, block_width, rb_segments, rb_blocks, blk_cb, blk_first, seg_row,
                 seg_start, seg_len, slot_offsets, block_offsets, slot_seg, slice_start, slice_offsets, stored_offsets,
                 block_col, block_slice_ptr, slice_slot_ptr, slice_nz_ptr, slot_row, slot_len, cols, values):
    """Write every panel's blocks, slices and padded column-major entries."""
    for rb in prange(rb_segments.shape[0]):
        base = indptr[rb * block_height]
        row0 = rb * block_height
        nz = stored_offsets[rb]
        slice_index = slice_offsets[rb]
        n_blocks = rb_blocks[rb]
        for j in range(n_blocks):
            block = block_offsets[rb] + j
            col0 = blk_cb[base + j] * block_width
            block_col[block] = blk_cb[base + j]
            block_slice_ptr[block] = slice_index
            slot = slot_offsets[rb] + blk_first[base + j]
            end_slot = slot_offsets[rb] + (blk_first[base + j + 1] if j + 1 < n_blocks else rb_segments[rb])
            while slot < end_slot:
                slice_end = slot + 1
                while slice_end < end_slot and not slice_start[slice_end]:
                    slice_end += 1
                height = slice_end - slot
                steps = seg_len[slot_seg[slice_end - 1]]
                slice_slot_ptr[slice_index] = slot
                slice_nz_ptr[slice_index] = nz
                for lane in range(height):
                    segment = slot_seg[slot + lane]
                    length = seg_len[segment]
                    slot_row[slot + lane] = seg_row[segment] - row0
                    slot_len[slot + lane] = length
                    source = seg_start[segment]
                    for step in range(length):
                        cols[nz + step * height + lane] = indices[source + step] - col0
                        values[nz + step * height + lane] = data[source + step]
                    for step in range(length, steps):
                        cols[nz + step * height + lane] = 0
                        values[nz + step * height + lane] = 0
                nz += height * steps
                slice_index += 1
                slot = slice_end


@njit(cache=True)
def _csr_from_slices(nrows, block_height, block_width, panel_block_ptr, block_col, block_slice_ptr, slice_slot_ptr,
                     slice_nz_ptr, slot_row, slot_len, cols, values, nnz):
    """indptr, indices, data of the matrix: each row's blocks in column-block order, padding skipped."""
    indptr = np.zeros(nrows + 1, np.int64)
    for panel in range(panel_block_ptr.shape[0] - 1):
        for block in range(panel_block_ptr[panel], panel_block_ptr[panel + 1]):
            for slice_index in range(block_slice_ptr[block], block_slice_ptr[block + 1]):
                for slot in range(slice_slot_ptr[slice_index], slice_slot_ptr[slice_index + 1]):
                    indptr[panel * block_height + slot_row[slot] + 1] += slot_len[slot]
    for row in range(nrows):
        indptr[row + 1] += indptr[row]
    cursor = indptr[:-1].copy()
    indices = np.empty(nnz, np.int32)
    data = np.empty(nnz, values.dtype)
    for panel in range(panel_block_ptr.shape[0] - 1):
        for block in range(panel_block_ptr[panel], panel_block_ptr[panel + 1]):
            col0 = block_col[block] * block_width
            for slice_index in range(block_slice_ptr[block], block_slice_ptr[block + 1]):
                first_slot = slice_slot_ptr[slice_index]
                height = slice_slot_ptr[slice_index + 1] - first_slot
                for lane in range(height):
                    row = panel * block_height + slot_row[first_slot + lane]
                    for step in range(slot_len[first_slot + lane]):
                        k = slice_nz_ptr[slice_index] + step * height + lane
                        indices[cursor[row]] = col0 + cols[k]
                        data[cursor[row]] = values[k]
                        cursor[row] += 1
    return indptr, indices, data


def spmv_regu2d(matrix: Regu2DMatrix, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``A @ x`` on the CPU: panels in parallel (numba threads), a SIMD loop over each slice's lanes.

    Parameters
    ----------
    matrix : Regu2DMatrix, shape (nrows, ncols)
    x : ndarray, shape (ncols,)
        Converted to the values' dtype (products and sums are in that dtype, as in HBP's executor).
    out : ndarray, shape (nrows,), the values' dtype, optional
        Written in place and returned.

    Returns
    -------
    ndarray, shape (nrows,), the values' dtype
        Each row summed block by block in column-block order, each block in column order: the
        result does not depend on the thread count.
    """
    x = np.asarray(x)
    if x.shape != (matrix.shape[1],):
        raise ValueError(f"x has shape {x.shape}, expected ({matrix.shape[1]},)")
    x = np.ascontiguousarray(x, dtype=matrix.dtype)
    if out is None:
        out = np.empty(matrix.shape[0], matrix.dtype)
    elif out.shape != (matrix.shape[0],) or out.dtype != matrix.dtype:
        raise ValueError(f"out must have shape ({matrix.shape[0]},) and dtype {matrix.dtype}, "
                         f"got {out.shape} {out.dtype}")
    _spmv_panels(matrix.shape[0], matrix.block_height, matrix.block_width, matrix.slice_height, matrix.panel_block_ptr,
                 matrix.block_col, matrix.block_slice_ptr, matrix.slice_slot_ptr, matrix.slice_nz_ptr, matrix.slot_row,
                 matrix.cols, matrix.values, x, out)
    return out


@njit(parallel=True, cache=True)
def _spmv_panels(nrows, block_height, block_width, slice_height, panel_block_ptr, block_col, block_slice_ptr,
                 slice_slot_ptr, slice_nz_ptr, slot_row, cols, values, x, y):
    """y for every panel: per slice, C lane accumulators advanced step by step over the padded entries.

    The innermost loop runs over the lanes of one step: consecutive values and column offsets,
    a gather from the block's x slice, independent accumulators, so LLVM can vectorise it.
    Indices are unsigned, so numba adds no negative-index wraparound check in that loop.
    """
    for panel in prange(panel_block_ptr.shape[0] - 1):
        row0 = panel * block_height
        for row in range(row0, min(row0 + block_height, nrows)):
            y[row] = 0
        lanes = np.empty(slice_height, y.dtype)
        for block in range(panel_block_ptr[panel], panel_block_ptr[panel + 1]):
            x_block = x[block_col[block] * block_width:]
            for slice_index in range(block_slice_ptr[block], block_slice_ptr[block + 1]):
                first_slot = slice_slot_ptr[slice_index]
                height = uint64(slice_slot_ptr[slice_index + 1] - first_slot)
                start = uint64(slice_nz_ptr[slice_index])
                steps = (uint64(slice_nz_ptr[slice_index + 1]) - start) // height
                for lane in range(height):
                    lanes[lane] = 0
                for step in range(steps):
                    k = start + step * height
                    for lane in range(height):
                        lanes[lane] += values[k + lane] * x_block[uint64(cols[k + lane])]
                for lane in range(height):
                    y[row0 + slot_row[first_slot + lane]] += lanes[lane]
