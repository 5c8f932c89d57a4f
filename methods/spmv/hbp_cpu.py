"""HBP SpMV on the CPU: one parallel numba kernel over row panels, and a serial warp-by-warp reference.

Implements the SpMV of Yan et al. (arXiv 2504.08860) over the layout of :mod:`methods.spmv.hbp`.
A CPU core plays the role of a warp: it walks a group's lanes round by round, in storage order.

Work split. The row blocks are cut into ``panels`` contiguous runs of about equal nonzeros
(prefix sums over ``block_nz_ptr``), one per thread, and the kernel runs them in one
``prange`` (numba's static schedule: a panel per thread). A panel owns its rows, so it sums
straight into its rows of y, which are its accumulator: zeroed first, then every stored block of
the panel adds its products there. No per-slot partial sums, no merge pass, no atomics. This
replaces the paper's mixed fixed/competitive block allocation, which serves a GPU's warps sharing
one grid; on a CPU the static nonzero-balanced split needs no shared counter.

Traversal. A panel runs its blocks column block by column block (for each column block, the
panel's row blocks in order: :func:`column_major_blocks`, computed once per executor):
each slice of x is read while it sits in L2 by every row block of the panel, and the panel's
rows of y (a few MB at most) stay in the last-level cache. With the CPU block shape
(:func:`methods.spmv.hbp.cpu_block_shape`) one block's x slice and rows of y fit L2 together.
When x exceeds one core's L2, each slice is first copied to a per-thread tile (``stage_x``), as the
GPU kernel copies its x tile to shared memory: one sequential read per slice and panel instead of
scattered reads from memory. On a matrix whose x exceeds the last-level cache this turns CSR's
random reads of x from memory into reads from L2 and updates of y in cache.

A group of n lanes and R rounds (R is the first lane's length: lanes are longest first): round t
adds ``values[k+q] * x[cols[k+q]]`` to the row of lane q for its n_t active lanes, then advances
k by n_t; once one lane is left, its remaining entries are contiguous and are summed in a
register. Every row's products are thus added to y one at a time in column order, exactly as
the numba CSR kernel sums them: the results are bitwise equal to it, and identical across calls
and thread counts.

Indices are unsigned (uint16 offsets, uint64 positions), so numba emits no negative-index
wraparound fix-ups in these loops. Precision: products and sums are in the values' dtype (x is
converted to it), as a GPU kernel with ``VALUE_T`` float or double would do.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, uint64

from methods.spmv.hbp import WARP_SIZE, HBPMatrix
from methods.spmv.machine import cpu_caches


class HBPCpuExecutor:
    """HBP SpMV ``y = A @ x`` on the CPU, its panels computed once.

    Parameters
    ----------
    hbp : HBPMatrix
        The matrix; its values' dtype is the computation's dtype.
    threads : int, optional
        Panels (one per numba thread); default numba's thread count. Fewer panels than numba
        threads leave threads idle; more run one after another on each thread.
    stage_x : bool, optional
        Copy each x slice to a per-thread tile before a panel's blocks read it at random (as the
        GPU kernel's shared-memory tile): one sequential read of the slice instead of scattered
        reads from memory. Default: when x exceeds one core's L2 cache.
    """

    def __init__(self, hbp: HBPMatrix, threads: int | None = None, stage_x: bool | None = None):
        threads = numba.get_num_threads() if threads is None else threads
        if not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        self.hbp = hbp
        self.threads = threads
        self.panels = balanced_panels(hbp, threads)
        self.block_order, self.block_row = column_major_blocks(hbp, self.panels)
        self.stage_x = bool(hbp.shape[1] * hbp.dtype.itemsize > cpu_caches()["L2"]) if stage_x is None else stage_x
        self._arguments = (self.panels, hbp.shape[0], hbp.block_height, hbp.block_width, self.stage_x,
                           hbp.row_block_ptr, self.block_order, self.block_row, hbp.block_col, hbp.block_nz_ptr,
                           hbp.block_group_ptr, hbp.group_slot_ptr, hbp.group_nz_offset, hbp.slot_row, hbp.slot_last,
                           hbp.cols, hbp.values)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``A @ x``.

        Parameters
        ----------
        x : ndarray, shape (ncols,)
            Converted to the values' dtype.
        out : ndarray, shape (nrows,), values' dtype, optional
            Written in place and returned.

        Returns
        -------
        ndarray, shape (nrows,), the values' dtype
        """
        x = _checked_vector(self.hbp, x)
        if out is None:
            out = np.empty(self.hbp.shape[0], self.hbp.dtype)
        elif not (type(out) is np.ndarray and out.shape == (self.hbp.shape[0],) and out.dtype == self.hbp.dtype
                  and out.flags.c_contiguous):
            raise ValueError(f"out must be a contiguous array of shape ({self.hbp.shape[0]},) and dtype "
                             f"{self.hbp.dtype}, got {getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}")
        _spmv_panels(*self._arguments, x, out)
        return out


def balanced_panels(hbp: HBPMatrix, parts: int) -> np.ndarray:
    """Row-block bounds, shape (<= parts + 1,), of contiguous panels of about equal nonzeros (empty ones dropped)."""
    if hbp.nnz == 0:
        return np.array([0, hbp.n_rowblocks], np.int64)[:1 + (hbp.n_rowblocks > 0)]
    before_rowblock = hbp.block_nz_ptr[hbp.row_block_ptr]  # nonzeros before each row block, and the total
    targets = np.linspace(0, hbp.nnz, parts + 1)[1:-1]
    after = np.searchsorted(before_rowblock, targets, side="left").clip(1, hbp.n_rowblocks)
    # Cut at the row-block boundary nearest each target: before or after the row block that crosses it.
    nearer_before = targets - before_rowblock[after - 1] < before_rowblock[after] - targets
    cuts = np.where(nearer_before, after - 1, after)
    return np.unique(np.concatenate(([0], cuts, [hbp.n_rowblocks]))).astype(np.int64)


def column_major_blocks(hbp: HBPMatrix, panels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order in which the executor visits the stored blocks, and each block's row block.

    Returns
    -------
    order : ndarray of int32, shape (n_blocks,)
        Block numbers, panel by panel (a panel's blocks keep their range of the layout's block list),
        each panel's blocks by column block, then row block: a panel reads each x slice once.
    block_row : ndarray of int32, shape (n_blocks,)
        The row block of each stored block.

    Both are the executor's workspace (8 bytes per stored block), not part of the format.
    """
    block_row = np.repeat(np.arange(hbp.n_rowblocks, dtype=np.int32), np.diff(hbp.row_block_ptr))
    panel = np.searchsorted(panels, block_row, side="right") - 1
    order = np.lexsort((block_row, hbp.block_col, panel)).astype(np.int32)
    return order, block_row


def spmv_hbp(hbp: HBPMatrix, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """``A @ x`` with a one-off :class:`HBPCpuExecutor`: shape (nrows,)."""
    return HBPCpuExecutor(hbp, threads=threads)(x)


def spmv_hbp_serial(hbp: HBPMatrix, x: np.ndarray) -> np.ndarray:
    """``A @ x`` by walking the layout as a warp would, on one thread: the reference.

    Blocks and groups in storage order; in each group the lanes advance in lock step, round
    by round: lane q is active in round t while ``t <= slot_last[q]`` and, when active, reads the
    entry after those of the earlier lanes active in that round. Then each lane's sum is added
    to its row. Written independently of :class:`HBPCpuExecutor` (no lane-order assumption:
    it counts the active lanes before q in every round).

    Parameters
    ----------
    hbp : HBPMatrix
    x : ndarray, shape (ncols,)
        Converted to the values' dtype.

    Returns
    -------
    ndarray, shape (nrows,), the values' dtype

    Raises
    ------
    ValueError
        If a group has more than 32 slots.
    """
    x = _checked_vector(hbp, x)
    return _warp_emulation(hbp.shape[0], hbp.block_height, hbp.block_width, hbp.row_block_ptr, hbp.block_col,
                           hbp.block_nz_ptr, hbp.block_group_ptr, hbp.group_slot_ptr, hbp.group_nz_offset,
                           hbp.slot_row, hbp.slot_last, hbp.cols, hbp.values, x)


def _checked_vector(hbp: HBPMatrix, x: np.ndarray) -> np.ndarray:
    """x as a contiguous array of the values' dtype, after checking its shape."""
    if type(x) is np.ndarray and x.dtype == hbp.dtype and x.shape == (hbp.shape[1],) and x.flags.c_contiguous:
        return x  # the common case, checked cheaply: tiny matrices take microseconds
    x = np.asarray(x)
    if x.shape != (hbp.shape[1],):
        raise ValueError(f"x has shape {x.shape}, expected ({hbp.shape[1]},)")
    return np.ascontiguousarray(x, dtype=hbp.dtype)


@njit(parallel=True, cache=True)
def _spmv_panels(panels, nrows, height, width, stage_x, row_block_ptr, block_order, block_row, block_col,
                 block_nz_ptr, block_group_ptr, group_slot_ptr, group_nz_offset, slot_row, slot_last, cols, values, x,
                 y):
    """y for every panel of row blocks [panels[p], panels[p + 1]), panels in parallel, each panel's blocks in
    ``block_order`` (column block by column block); with ``stage_x``, each x slice is first copied to a tile."""
    ncols = x.shape[0]
    for panel in prange(panels.shape[0] - 1):
        first_row_block, end_row_block = panels[panel], panels[panel + 1]
        y[first_row_block * height:min(end_row_block * height, nrows)] = 0
        tile = np.empty(width if stage_x else 0, x.dtype)
        x_block = x
        current = -1
        for i in range(row_block_ptr[first_row_block], row_block_ptr[end_row_block]):
            block = block_order[i]
            if block_col[block] != current:
                current = block_col[block]
                col0 = current * width
                if stage_x:  # one sequential read of the slice instead of random reads from memory
                    slice_width = min(width, ncols - col0)
                    tile[:slice_width] = x[col0:col0 + slice_width]
                    x_block = tile
                else:
                    x_block = x[col0:]
            row0 = block_row[block] * height
            _block_spmv(uint64(block_nz_ptr[block]), block_group_ptr[block], block_group_ptr[block + 1],
                        group_slot_ptr, group_nz_offset, slot_row, slot_last, cols, values, x_block,
                        y[row0:min(row0 + height, nrows)])


@njit(cache=True, nogil=True, inline="always")
def _block_spmv(base, first_group, end_group, group_slot_ptr, group_nz_offset, slot_row, slot_last, cols, values,
                x_block, y_rows):
    """Add one block's products to its rows of y (``y_rows``), group by group, round by round (module docstring)."""
    for group in range(first_group, end_group):
        first = uint64(group_slot_ptr[group])
        active = uint64(group_slot_ptr[group + 1]) - first
        k = base + uint64(group_nz_offset[group])
        rounds = uint64(slot_last[first]) + uint64(1)
        for t in range(rounds):
            while uint64(slot_last[first + active - uint64(1)]) < t:
                active -= uint64(1)
            if active == 1:
                row = uint64(slot_row[first])
                total = y_rows[row]
                for j in range(rounds - t):
                    total += values[k + j] * x_block[uint64(cols[k + j])]
                y_rows[row] = total
                break
            for q in range(active):
                y_rows[uint64(slot_row[first + q])] += values[k + q] * x_block[uint64(cols[k + q])]
            k += active


@njit(cache=True)
def _warp_emulation(nrows, height, width, row_block_ptr, block_col, block_nz_ptr, block_group_ptr, group_slot_ptr,
                    group_nz_offset, slot_row, slot_last, cols, values, x):
    """y, every group's lanes stepping in lock step (at most 32 lanes), blocks in storage order."""
    y = np.zeros(nrows, values.dtype)
    lane_sum = np.empty(WARP_SIZE, values.dtype)
    for rb in range(row_block_ptr.shape[0] - 1):
        for block in range(row_block_ptr[rb], row_block_ptr[rb + 1]):
            col0 = block_col[block] * width
            for group in range(block_group_ptr[block], block_group_ptr[block + 1]):
                first = group_slot_ptr[group]
                n_lanes = group_slot_ptr[group + 1] - first
                if n_lanes > WARP_SIZE:
                    raise ValueError("a group has more than 32 slots")
                rounds = 0
                for q in range(n_lanes):
                    lane_sum[q] = 0
                    rounds = max(rounds, slot_last[first + q] + 1)
                k = block_nz_ptr[block] + group_nz_offset[group]
                for t in range(rounds):
                    for q in range(n_lanes):
                        if slot_last[first + q] >= t:
                            lane_sum[q] += values[k] * x[col0 + cols[k]]
                            k += 1
                for q in range(n_lanes):
                    y[rb * height + slot_row[first + q]] += lane_sum[q]
    return y
