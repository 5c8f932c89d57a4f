"""HBP SpMV on the CPU: the paper's Mixed Execution Allocation with threads, and a serial reference.

Implements the SpMV of Yan et al. (arXiv 2504.08860; hbp.md section 3, kernels ``basic_spmv``
and ``basic_combine``) over the layout of :mod:`methods.spmv.hbp`:

1. **Blocks** (``basic_spmv``). The stored blocks, in storage order, are split into a fixed part
   and a competitive part. With T worker threads and ``fixed_fraction`` f, each thread t first
   processes its fixed, contiguous share of ``floor(f * n_blocks / T)`` blocks; the remaining
   blocks form one queue from which the threads claim chunks of ``chunk_blocks`` blocks (the
   authors' SUB_N = 10) with an atomic fetch-and-add on a shared counter, until a claim starts
   past the queue's end. The counter is a fresh zero for every call: the authors' counter was
   drained by their warm-up, so their timed launches skipped the competitive part (hbp.md
   section 5). Each slot's sum is written to ``partial``.
2. **Merge** (``basic_combine``). Rows are split into T contiguous ranges of about equal slot
   counts; ``y[r]`` sums row r's partials in column-block order (no atomics).

Each thread runs one numba ``njit(nogil=True)`` call per phase, so the threads run in parallel.
The claims use an atomic add compiled into the kernel (LLVM ``atomicrmw``), not a Python
counter: with the paper's blocks (a dozen rows each on a power-law matrix), one Python-level
claim per 10 blocks costs as much as the blocks' work and serialises on the GIL.

Deviations from the GPU kernel: a CPU thread plays the role of a warp and walks the lanes of a
group one after another; the fixed shares are contiguous ranges of the row-block-major block
list instead of one column block per warp, because there is no shared-memory x tile to reuse and
contiguous ranges stream the arrays. ``fixed_fraction = 1`` (default) is the authors' rule: fixed
shares as large as fit, the remainder (fewer than T blocks) competed for.

Precision: products and sums are in the values' dtype (x is converted to it), as a GPU kernel
with ``VALUE_T`` float or double would do; for float32 values the result is a float32 SpMV, not
a float64 one rounded at the end. Every slot's sum and every row's merge run in a fixed order, so
results are bitwise identical across calls, thread counts and fixed fractions.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from threading import Lock

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from methods.spmv.hbp import WARP_SIZE, HBPMatrix

DEFAULT_CHUNK_BLOCKS = 10


class HBPCpuExecutor:
    """Multi-threaded HBP SpMV ``y = A @ x`` with a persistent thread pool and workspace.

    Parameters
    ----------
    hbp : HBPMatrix
        The matrix; its values' dtype is the computation's dtype.
    threads : int, optional
        Worker threads (the paper's warps); default: the CPUs this process may use.
    fixed_fraction : float in [0, 1]
        Share of the blocks handed out as fixed, contiguous per-thread shares; the rest is
        competed for. 1 (default): the authors' rule; 0: fully dynamic.
    chunk_blocks : int
        Blocks per competitive claim (the authors' SUB_N = 10).

    Notes
    -----
    The calling thread works as thread 0; the pool holds the other ``threads - 1``. Use as a
    context manager or call :meth:`close` to stop the pool. Calls on one executor are
    serialised (they share the ``partial`` workspace); use one executor per concurrent caller.
    """

    def __init__(self, hbp: HBPMatrix, threads: int | None = None, fixed_fraction: float = 1.0,
                 chunk_blocks: int = DEFAULT_CHUNK_BLOCKS):
        threads = _available_cpus() if threads is None else threads
        if not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        if not 0.0 <= fixed_fraction <= 1.0:
            raise ValueError(f"fixed_fraction must lie in [0, 1], got {fixed_fraction!r}")
        if not (isinstance(chunk_blocks, int) and chunk_blocks >= 1):
            raise ValueError(f"chunk_blocks must be a positive int, got {chunk_blocks!r}")
        self.hbp = hbp
        self.threads = threads
        self.fixed_fraction = fixed_fraction
        self.chunk_blocks = chunk_blocks
        self.fixed_blocks_per_thread = int(fixed_fraction * hbp.n_blocks) // threads
        self._row_bounds = _balanced_row_bounds(hbp.merge_ptr, threads)
        self._partial = np.empty(hbp.n_slots, hbp.dtype)
        self._pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="hbp-spmv") if threads > 1 else None
        self._call_lock = Lock()

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
        hbp = self.hbp
        x = _checked_vector(hbp, x)
        if out is None:
            out = np.empty(hbp.shape[0], hbp.dtype)
        elif out.shape != (hbp.shape[0],) or out.dtype != hbp.dtype:
            raise ValueError(f"out must have shape ({hbp.shape[0]},) and dtype {hbp.dtype}, "
                             f"got {out.shape} {out.dtype}")
        with self._call_lock:
            queue_counter = np.zeros(1, np.int64)
            self._run_on_all_threads(_blocks_worker, [
                (thread, self.threads, self.fixed_blocks_per_thread, self.chunk_blocks, queue_counter,
                 hbp.block_group_ptr, hbp.group_slot_ptr, hbp.group_nz_ptr, hbp.cols, hbp.values, hbp.next, x,
                 self._partial) for thread in range(self.threads)])
            self._run_on_all_threads(_merge_rows, [
                (self._row_bounds[thread], self._row_bounds[thread + 1], hbp.merge_ptr, hbp.merge_slot,
                 self._partial, out) for thread in range(self.threads)])
        return out

    def _run_on_all_threads(self, kernel, argument_lists) -> None:
        """Run ``kernel(*arguments)`` for each argument list, the first on the calling thread; wait for all."""
        futures = [self._pool.submit(kernel, *arguments) for arguments in argument_lists[1:]]
        kernel(*argument_lists[0])
        for future in futures:
            future.result()

    def close(self) -> None:
        """Stop the thread pool (waits for a running call)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> HBPCpuExecutor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def spmv_hbp(hbp: HBPMatrix, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """``A @ x`` with a one-off :class:`HBPCpuExecutor` (default settings): shape (nrows,)."""
    with HBPCpuExecutor(hbp, threads=threads) as executor:
        return executor(x)


def spmv_hbp_serial(hbp: HBPMatrix, x: np.ndarray) -> np.ndarray:
    """``A @ x`` by walking the layout exactly as a warp would, on one thread: the reference.

    Blocks and groups in storage order; in each group the lanes advance in lock step, round
    by round, lane q starting at ``group_nz_ptr[g] + q`` and following ``next``; then the merge.

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
    partial = _warp_emulation(hbp.group_slot_ptr, hbp.group_nz_ptr, hbp.cols, hbp.values, hbp.next, x)
    y = np.empty(hbp.shape[0], hbp.dtype)
    _merge_rows(0, hbp.shape[0], hbp.merge_ptr, hbp.merge_slot, partial, y)
    return y


def _checked_vector(hbp: HBPMatrix, x: np.ndarray) -> np.ndarray:
    """x as a contiguous array of the values' dtype, after checking its shape."""
    x = np.asarray(x)
    if x.shape != (hbp.shape[1],):
        raise ValueError(f"x has shape {x.shape}, expected ({hbp.shape[1]},)")
    return np.ascontiguousarray(x, dtype=hbp.dtype)


def _available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _balanced_row_bounds(merge_ptr: np.ndarray, parts: int) -> np.ndarray:
    """Row bounds, shape (parts + 1,), cutting the rows into ranges of about equal slot counts."""
    targets = np.linspace(0, merge_ptr[-1], parts + 1)
    bounds = np.searchsorted(merge_ptr, targets, side="left").clip(0, merge_ptr.shape[0] - 1)
    bounds[0], bounds[-1] = 0, merge_ptr.shape[0] - 1
    return np.maximum.accumulate(bounds)


@intrinsic
def _fetch_add(typingctx, counter, increment):
    """Atomically add ``increment`` to ``counter[0]`` (int64 array) and return its old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None
    signature = types.int64(counter, types.int64)

    def codegen(context, builder, signature, arguments):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, arguments[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, array,
                                           [context.get_constant(types.intp, 0)])
        return builder.atomic_rmw("add", pointer, arguments[1], "seq_cst")

    return signature, codegen


@njit(nogil=True, cache=True)
def _blocks_worker(thread, n_threads, fixed_blocks, chunk_blocks, queue_counter, block_group_ptr, group_slot_ptr,
                   group_nz_ptr, cols, values, next_, x, partial):
    """One thread's part of phase 1: its fixed share, then competitive chunks until none is left."""
    n_blocks = block_group_ptr.shape[0] - 1
    first = thread * fixed_blocks
    _blocks_spmv(first, first + fixed_blocks, block_group_ptr, group_slot_ptr, group_nz_ptr, cols, values, next_, x,
                 partial)
    queue_start = n_threads * fixed_blocks
    while True:
        first = queue_start + _fetch_add(queue_counter, 1) * chunk_blocks
        if first >= n_blocks:
            break
        _blocks_spmv(first, min(first + chunk_blocks, n_blocks), block_group_ptr, group_slot_ptr, group_nz_ptr, cols,
                     values, next_, x, partial)


@njit(nogil=True, cache=True)
def _blocks_spmv(first_block, end_block, block_group_ptr, group_slot_ptr, group_nz_ptr, cols, values, next_, x,
                 partial):
    """``partial[s]`` for every slot of blocks [first_block, end_block): each lane's chain in turn."""
    for group in range(block_group_ptr[first_block], block_group_ptr[end_block]):
        first_slot = group_slot_ptr[group]
        for lane in range(group_slot_ptr[group + 1] - first_slot):
            nz = group_nz_ptr[group] + lane
            total = values[nz] * x[cols[nz]]
            step = next_[nz]
            while step >= 0:
                nz += step
                total += values[nz] * x[cols[nz]]
                step = next_[nz]
            partial[first_slot + lane] = total


@njit(nogil=True, cache=True)
def _merge_rows(first_row, end_row, merge_ptr, merge_slot, partial, y):
    """``y[r]`` = sum of row r's partials in column-block order, rows [first_row, end_row)."""
    for row in range(first_row, end_row):
        total = y.dtype.type(0)
        for k in range(merge_ptr[row], merge_ptr[row + 1]):
            total += partial[merge_slot[k]]
        y[row] = total


@njit(cache=True)
def _warp_emulation(group_slot_ptr, group_nz_ptr, cols, values, next_, x):
    """partial of every slot, each group's lanes stepping in lock step (at most 32 lanes)."""
    partial = np.zeros(group_slot_ptr[-1], values.dtype)
    lane_nz = np.empty(WARP_SIZE, np.int64)
    for group in range(group_slot_ptr.shape[0] - 1):
        first_slot = group_slot_ptr[group]
        n_lanes = group_slot_ptr[group + 1] - first_slot
        if n_lanes > WARP_SIZE:
            raise ValueError("a group has more than 32 slots")
        for lane in range(n_lanes):
            lane_nz[lane] = group_nz_ptr[group] + lane
        n_active = n_lanes
        while n_active > 0:
            n_active = 0
            for lane in range(n_lanes):
                nz = lane_nz[lane]
                if nz >= 0:
                    partial[first_slot + lane] += values[nz] * x[cols[nz]]
                    lane_nz[lane] = nz + next_[nz] if next_[nz] >= 0 else -1
                    n_active += 1
    return partial
