"""The sparse layouts the CUDA SpMV kernels read as they are, and the checks that they keep the contract.

``kernels/hbp.cu`` reads :mod:`methods.spmv.hbp`'s compact layout and ``kernels/regu2d.cu``
:mod:`methods.spmv.regu2d`'s, array for array, with no cast and no copy on the device: the
executors (:mod:`methods.spmv.cuda`) check a layout here before uploading it. Each layout's
arrays and dtypes (:data:`HBP_LAYOUT_DTYPES`, :data:`REGU2D_LAYOUT_DTYPES`) match the kernels'
signatures in :data:`~methods.spmv.cuda_kernels.KERNEL_ARGUMENTS` (a CPU test compares them).
:func:`check_hbp_layout` and :func:`check_regu2d_layout` check dtypes and lengths in host work
proportional to the groups or slices; :func:`check_hbp_contents` also reads every slot and
nonzero (in parallel, with numba) for what the HBP kernel assumes of them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from methods.spmv.cuda_kernels import COL_TYPES, INT32_MAX, WARP_SIZE, check_array, value_type

# The HBP layout's arrays and their dtypes (the contract of methods.spmv.hbp.HBPMatrix, its module
# docstring); "value" is the values dtype. check_hbp_layout checks them; hbp_spmv reads them all.
HBP_LAYOUT_DTYPES = {
    "row_block_ptr": "int32", "block_col": "int32", "block_nz_ptr": "int64", "block_group_ptr": "int32",
    "group_slot_ptr": "int32", "group_nz_offset": "uint32", "slot_row": "uint16", "slot_last": "uint16",
    "cols": "uint16", "values": "value",
}
HBP_DEVICE_ARRAYS = tuple(HBP_LAYOUT_DTYPES)
# The largest HBP block side: the layout's 16-bit row and column offsets.
HBP_MAX_BLOCK_SIDE = 65536
# The Regu2D layout's arrays (methods.spmv.regu2d.Regu2DMatrix), all read by regu2d_spmv; "col" is
# the column-offset dtype (uint16 or int32).
REGU2D_LAYOUT_DTYPES = {
    "panel_block_ptr": "int32", "block_col": "int32", "block_slice_ptr": "int32", "slice_slot_ptr": "int32",
    "slice_nz_ptr": "int64", "slot_row": "uint16", "slot_len": "int32", "cols": "col", "values": "value",
}


def check_hbp_layout(hbp) -> None:
    """Check the dtypes and lengths of an HBP layout against the contract, in O(n_groups) host work.

    Every array must have its :data:`HBP_LAYOUT_DTYPES` dtype (nothing is cast), every pointer
    array its length, first entry 0 and no decrease, the block shape 1 to 65536 (16-bit
    offsets), the shape int32, and every group 1 to 32 slots: ``hbp_spmv`` gives slot q of a
    group to lane q, so a larger group would lose rows silently. What needs a pass over the
    slots or nonzeros (lane order, offsets inside the block, the groups' nonzeros tiling
    ``cols``) is checked by :func:`check_hbp_contents`. Raises TypeError or ValueError naming
    the array.
    """
    dtype = np.dtype(hbp.values.dtype)
    value_type(dtype)
    for name, kind in HBP_LAYOUT_DTYPES.items():
        array = getattr(hbp, name)
        check_array(f"HBPMatrix.{name}", array, dtype if kind == "value" else np.dtype(kind), contiguous=False)
    nrows, ncols = (int(n) for n in hbp.shape)
    height, width = int(hbp.block_height), int(hbp.block_width)
    if not (1 <= height <= HBP_MAX_BLOCK_SIDE and 1 <= width <= HBP_MAX_BLOCK_SIDE):
        raise ValueError(f"HBPMatrix block size must be 1 to {HBP_MAX_BLOCK_SIDE} (16-bit offsets) each way, "
                         f"not {height} x {width}")
    if not (0 <= nrows <= INT32_MAX and 0 <= ncols <= INT32_MAX):
        raise ValueError(f"HBPMatrix shape {hbp.shape} does not fit the kernels' int32 row and column indices")
    n_blocks = len(hbp.block_col)

    def last(name: str) -> int:
        array = getattr(hbp, name)
        return int(array[-1]) if len(array) else -1

    expected = {"row_block_ptr": -(-nrows // height) + 1, "block_nz_ptr": n_blocks + 1,
                "block_group_ptr": n_blocks + 1}
    n_groups = last("block_group_ptr")
    expected.update(group_slot_ptr=n_groups + 1, group_nz_offset=n_groups)
    n_slots = last("group_slot_ptr")
    expected.update(slot_row=n_slots, slot_last=n_slots)
    nnz = last("block_nz_ptr")
    expected.update(cols=nnz, values=nnz)
    for name, length in expected.items():
        if len(getattr(hbp, name)) != length:
            raise ValueError(f"HBPMatrix.{name} has length {len(getattr(hbp, name))}, expected {length}")
    if last("row_block_ptr") != n_blocks:
        raise ValueError(f"HBPMatrix.row_block_ptr ends at {last('row_block_ptr')}, expected n_blocks = {n_blocks}")
    for name in ("row_block_ptr", "block_nz_ptr", "block_group_ptr", "group_slot_ptr"):
        pointers = np.asarray(getattr(hbp, name))
        if pointers[0] != 0 or (pointers.size > 1 and np.diff(pointers).min() < 0):
            raise ValueError(f"HBPMatrix.{name} must start at 0 and never decrease")
    if n_blocks and not (np.diff(np.asarray(hbp.block_group_ptr)).min() >= 1
                         and 0 <= int(np.min(hbp.block_col)) and int(np.max(hbp.block_col)) * width < ncols):
        raise ValueError("HBPMatrix blocks must each hold at least one group and a column block inside the matrix")
    group_sizes = np.diff(np.asarray(hbp.group_slot_ptr))
    if group_sizes.size and not (group_sizes.min() >= 1 and group_sizes.max() <= WARP_SIZE):
        raise ValueError(f"HBPMatrix groups must hold 1 to 32 slots; found {group_sizes.min()} to {group_sizes.max()}")


def check_hbp_contents(hbp) -> None:
    """Check an HBP layout all through before ``hbp_spmv`` reads it: :func:`check_hbp_layout`, then one
    pass over the slots and nonzeros, parallel over row blocks (O(n_slots + nnz)).

    The kernel relies on each row block's blocks by increasing column block (so a row sums its
    blocks in column order), each group's lanes longest first (round t is lanes 0 .. n_t - 1),
    rows inside their row block and the matrix (the y panel), the groups' nonzeros tiling
    ``[0, nnz)`` in order (``block_nz_ptr[block] + group_nz_offset[group]`` is where the previous
    group ended) and every column inside its block and the matrix (x is never read past its
    end). A layout that breaks any of these raises ValueError naming the first row block.
    """
    check_hbp_layout(hbp)
    nrows, ncols = (int(n) for n in hbp.shape)
    bad = np.zeros(len(hbp.row_block_ptr) - 1, np.int8)
    _check_row_blocks(nrows, ncols, int(hbp.block_height), int(hbp.block_width), hbp.row_block_ptr, hbp.block_col,
                      hbp.block_nz_ptr, hbp.block_group_ptr, hbp.group_slot_ptr, hbp.group_nz_offset, hbp.slot_row,
                      hbp.slot_last, hbp.cols, bad)
    where = np.flatnonzero(bad)
    if where.size:
        raise ValueError(f"HBPMatrix breaks the layout contract in row block {where[0]} (block height "
                         f"{hbp.block_height}): {_CONTENT_ERRORS[int(bad[where[0]])]}")


# What each error code of the contents check means (the first row block's code is reported).
_CONTENT_ERRORS = {
    1: "the blocks of a row block must be stored by increasing column block",
    2: "a group's lanes must be ordered by slot_last, longest first",
    3: "slot_row must lie in its row block and inside the matrix",
    4: "a nonzero's column (block_col * block_width + cols) must lie in its block and inside the matrix",
    5: "the groups' nonzeros (block_nz_ptr + group_nz_offset, sum of slot_last + 1 each) must tile [0, nnz) in order",
}


@njit(parallel=True, cache=True)
def _check_row_blocks(nrows, ncols, height, width, row_block_ptr, block_col, block_nz_ptr, block_group_ptr,
                      group_slot_ptr, group_nz_offset, slot_row, slot_last, cols, bad):
    """:func:`check_hbp_contents`'s pass: ``bad[rb]`` gets the code of row block rb's first problem
    (:data:`_CONTENT_ERRORS`), 0 if none. A row block's nonzeros must start where its first block
    says, so the groups tile [0, nnz) when every row block's do and the blocks' offsets increase
    (:func:`check_hbp_layout`)."""
    for rb in prange(row_block_ptr.shape[0] - 1):
        rows = min(np.int64(height), nrows - np.int64(rb) * height)
        for block in range(row_block_ptr[rb], row_block_ptr[rb + 1]):
            if block > row_block_ptr[rb] and block_col[block] <= block_col[block - 1]:
                bad[rb] = 1
            span = min(np.int64(width), ncols - np.int64(block_col[block]) * width)
            k = block_nz_ptr[block]
            for group in range(block_group_ptr[block], block_group_ptr[block + 1]):
                if block_nz_ptr[block] + np.int64(group_nz_offset[group]) != k:
                    bad[rb] = 5
                    break
                first = group_slot_ptr[group]
                for slot in range(first, group_slot_ptr[group + 1]):
                    if slot > first and slot_last[slot] > slot_last[slot - 1]:
                        bad[rb] = 2
                    if np.int64(slot_row[slot]) >= rows:
                        bad[rb] = 3
                    k += np.int64(slot_last[slot]) + 1
                if k > block_nz_ptr[block + 1]:
                    bad[rb] = 5
                    break
                for nz in range(block_nz_ptr[block] + np.int64(group_nz_offset[group]), k):
                    if np.int64(cols[nz]) >= span:
                        bad[rb] = 4
            if k != block_nz_ptr[block + 1]:
                bad[rb] = 5
            if bad[rb]:
                break


def check_regu2d_layout(matrix) -> None:
    """Check a Regu2D layout's dtypes and lengths against the contract, in O(n_slices) host work.

    Every array must have its :data:`REGU2D_LAYOUT_DTYPES` dtype (columns uint16 or int32), every
    pointer array its length, and every slice 1 to 32 slots (``regu2d_spmv`` gives slot i of a
    slice to lane i of one warp). Raises TypeError or ValueError naming the array.
    """
    dtype = np.dtype(matrix.values.dtype)
    value_type(dtype)
    col_dtype = np.dtype(matrix.cols.dtype)
    if col_dtype.name not in COL_TYPES:
        raise TypeError(f"Regu2DMatrix.cols must have dtype uint16 or int32, not {col_dtype.name}")
    kinds = {"value": dtype, "col": col_dtype}
    for name, kind in REGU2D_LAYOUT_DTYPES.items():
        check_array(f"Regu2DMatrix.{name}", getattr(matrix, name), kinds[kind] if kind in kinds else np.dtype(kind),
                     contiguous=False)
    nrows, ncols = (int(n) for n in matrix.shape)
    if nrows > INT32_MAX or ncols > INT32_MAX:
        raise ValueError(f"Regu2DMatrix shape {matrix.shape} does not fit the kernel's int32 rows and columns")
    n_blocks = len(matrix.block_col)
    n_slices = int(matrix.block_slice_ptr[-1]) if len(matrix.block_slice_ptr) else -1
    n_slots = int(matrix.slice_slot_ptr[-1]) if len(matrix.slice_slot_ptr) else -1
    n_stored = int(matrix.slice_nz_ptr[-1]) if len(matrix.slice_nz_ptr) else -1
    expected = {"panel_block_ptr": -(-nrows // int(matrix.block_height)) + 1, "block_slice_ptr": n_blocks + 1,
                "slice_slot_ptr": n_slices + 1, "slice_nz_ptr": n_slices + 1, "slot_row": n_slots,
                "slot_len": n_slots, "cols": n_stored, "values": n_stored}
    for name, length in expected.items():
        if len(getattr(matrix, name)) != length:
            raise ValueError(f"Regu2DMatrix.{name} has length {len(getattr(matrix, name))}, expected {length}")
    if int(matrix.panel_block_ptr[-1]) != n_blocks:
        raise ValueError(f"Regu2DMatrix.panel_block_ptr ends at {int(matrix.panel_block_ptr[-1])}, "
                         f"expected n_blocks = {n_blocks}")
    slice_sizes = np.diff(np.asarray(matrix.slice_slot_ptr))
    if slice_sizes.size and not (slice_sizes.min() >= 1 and slice_sizes.max() <= WARP_SIZE):
        raise ValueError(f"Regu2DMatrix slices must hold 1 to 32 slots for the CUDA kernel; found {slice_sizes.min()} "
                         f"to {slice_sizes.max()} (build it with slice_height <= 32)")
