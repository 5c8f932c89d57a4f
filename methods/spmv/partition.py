"""2D partitioning of the blocked SpMV formats: canonical input (both), the layouts' shared base and Regu2D's split.

A matrix of shape (nrows, ncols) is cut into 2D blocks of ``block_height`` (H) rows by
``block_width`` (W) columns: block (rb, cb) covers rows ``[rb*H, min((rb+1)*H, nrows))`` and
columns ``[cb*W, min((cb+1)*W, ncols))``. :func:`split_blocks` finds, in one pass over each
row's columns, the row's *segment* in every block it touches, and gathers each row block's
segments by column block (a counting sort): O(nnz + n_rowblocks * n_colblocks), parallel over
row blocks. Regu2D builds on it; HBP fuses the same split into its one pass per row block
(:mod:`methods.spmv.hbp`), with the orderings of :mod:`methods.spmv.ordering` shared by both.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

INT32_LIMIT = np.iinfo(np.int32).max


class BlockLayout:
    """What the 2D-partitioned layouts (HBP, Regu2D) share, for a frozen dataclass whose array
    fields include ``block_col`` (one entry per stored block), ``slot_row`` (one per
    (row, block) pair with a nonzero) and ``values``."""

    @property
    def n_blocks(self) -> int:
        """Stored (non-empty) 2D blocks."""
        return self.block_col.shape[0]

    @property
    def n_slots(self) -> int:
        """Slots, i.e. (row, block) pairs with at least one nonzero."""
        return self.slot_row.shape[0]

    @property
    def dtype(self) -> np.dtype:
        """The values' dtype, in which the SpMV also accumulates."""
        return self.values.dtype

    def arrays(self) -> dict[str, np.ndarray]:
        """The layout's arrays by field name, in declaration order."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if isinstance(getattr(self, field.name), np.ndarray)}

    def nbytes(self) -> int:
        """Bytes of the stored format: every array field (padding and merge structures included)."""
        return sum(array.nbytes for array in self.arrays().values())


def canonical_csr(csr, dtype, format_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """indptr (int64), indices (int32), data (values dtype) and shape of canonical CSR.

    Parameters
    ----------
    csr : scipy sparse matrix or array, shape (nrows, ncols)
        Real (or integer/bool) values; duplicates are summed, explicit zeros kept.
    dtype : {None, numpy.float64, numpy.float32}
        The values' dtype; None keeps float32 input as float32 and makes anything else float64.
    format_name : str
        Named in the error messages (``"HBP"``, ``"Regu2D"``).
    """
    if not sp.issparse(csr):
        raise TypeError(f"expected a scipy sparse matrix, got {type(csr).__name__}")
    matrix = sp.csr_matrix(csr)
    if np.iscomplexobj(matrix.data):
        raise ValueError(f"{format_name} stores real values; pass the real part (matrix.real) for a complex matrix")
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    nrows, ncols = (int(size) for size in matrix.shape)
    if max(nrows, ncols) > INT32_LIMIT:
        raise ValueError(f"shape {matrix.shape}: {format_name} keeps rows and columns in int32")
    if dtype is None:
        dtype = np.float32 if matrix.dtype == np.float32 else np.float64
    if np.dtype(dtype) not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return (matrix.indptr.astype(np.int64, copy=False), matrix.indices.astype(np.int32, copy=False),
            matrix.data.astype(dtype, copy=False), (nrows, ncols))


def split_blocks(indptr, indices, shape, block_height, block_width) -> dict[str, np.ndarray]:
    """Per-block segments of every row, gathered by column block.

    Parameters
    ----------
    indptr : ndarray of int64, shape (nrows + 1,)
    indices : ndarray of int32, shape (nnz,)
        Canonical CSR (sorted columns, no duplicates), as :func:`canonical_csr` returns it.
    shape : (int, int)
    block_height, block_width : int

    Returns
    -------
    dict of str to ndarray
        Scratch arrays of length max(nnz, 1), indexed from each row block's first CSR position
        ``base = indptr[rb*H]`` (a row block has at most as many segments and blocks as
        nonzeros): ``seg_row``, ``seg_start`` (CSR position), ``seg_len``, ``seg_cb`` of its
        segments in row order; ``sorted_seg`` (scratch index) and ``sorted_len`` of the same
        segments by column block, then row; ``blk_cb`` and ``blk_first`` (first position in
        the sorted order) of each non-empty block. Per row block: ``rb_segments``, ``rb_blocks``
        (counts) and their offsets ``slot_offsets``, ``block_offsets`` (shape (n_rowblocks + 1,)).
        ``merge_ptr`` (shape (nrows + 1,)): offsets of each row's segments.
    """
    nrows, ncols = shape
    n_rowblocks = -(-nrows // block_height)
    n_colblocks = -(-ncols // block_width)
    scratch = max(int(indptr[-1]), 1)
    segments = {
        "seg_row": np.empty(scratch, np.int32), "seg_start": np.empty(scratch, np.int64),
        "seg_len": np.empty(scratch, np.int32), "seg_cb": np.empty(scratch, np.int32),
        "sorted_seg": np.empty(scratch, np.int64), "sorted_len": np.empty(scratch, np.int32),
        "blk_cb": np.empty(scratch, np.int32), "blk_first": np.empty(scratch, np.int64),
        "rb_segments": np.empty(n_rowblocks, np.int64), "rb_blocks": np.empty(n_rowblocks, np.int64),
    }
    row_segments = np.empty(nrows, np.int64)
    _split_rows(indptr, indices, nrows, block_height, block_width, n_colblocks, row_segments, **segments)
    segments["merge_ptr"] = offsets(row_segments)
    segments["slot_offsets"] = offsets(segments["rb_segments"])
    segments["block_offsets"] = offsets(segments["rb_blocks"])
    return segments


def offsets(counts: np.ndarray) -> np.ndarray:
    """Exclusive prefix sum with the total appended: shape (n + 1,), int64."""
    result = np.zeros(counts.shape[0] + 1, np.int64)
    np.cumsum(counts, out=result[1:])
    return result


@njit(parallel=True, cache=True)
def _split_rows(indptr, indices, nrows, block_height, block_width, n_colblocks, row_segments, seg_row, seg_start,
                seg_len, seg_cb, sorted_seg, sorted_len, blk_cb, blk_first, rb_segments, rb_blocks):
    """Per row block: cut each row at column-block boundaries, then counting-sort the segments.

    Writes, from base = indptr[rb*H]: the row-major segments (row, CSR start, length, column
    block), the same segments by column block then row (``sorted_seg`` holds scratch indices,
    ``sorted_len`` their lengths), and each non-empty block's column block and first position
    in that order; ``row_segments[r]``, ``rb_segments[rb]`` and ``rb_blocks[rb]`` count them.
    """
    for rb in prange(rb_segments.shape[0]):
        row0 = rb * block_height
        base = indptr[row0]
        n_segments = 0
        for row in range(row0, min(row0 + block_height, nrows)):
            k = indptr[row]
            row_end = indptr[row + 1]
            row_first = n_segments
            while k < row_end:
                colblock = indices[k] // block_width
                colblock_end = (colblock + 1) * block_width
                stop = k + 1
                while stop < row_end and indices[stop] < colblock_end:
                    stop += 1
                seg_row[base + n_segments] = row
                seg_start[base + n_segments] = k
                seg_len[base + n_segments] = stop - k
                seg_cb[base + n_segments] = colblock
                n_segments += 1
                k = stop
            row_segments[row] = n_segments - row_first
        rb_segments[rb] = n_segments
        cursor = np.zeros(n_colblocks, np.int64)
        for i in range(n_segments):
            cursor[seg_cb[base + i]] += 1
        n_blocks = 0
        position = 0
        for colblock in range(n_colblocks):
            count = cursor[colblock]
            if count > 0:
                blk_cb[base + n_blocks] = colblock
                blk_first[base + n_blocks] = position
                n_blocks += 1
            cursor[colblock] = position
            position += count
        rb_blocks[rb] = n_blocks
        for i in range(n_segments):
            target = base + cursor[seg_cb[base + i]]
            cursor[seg_cb[base + i]] += 1
            sorted_seg[target] = base + i
            sorted_len[target] = seg_len[base + i]
