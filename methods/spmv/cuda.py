"""CUDA SpMV executors: the CSR baselines, cuSPARSE, HBP (arXiv 2504.08860) and Regu2D.

Each executor computes ``y = A @ x`` for a device vector ``x`` of shape (ncols,) and returns a
device vector of shape (nrows,) in the matrix's dtype (float64 or float32). ``device`` chooses
where the kernels of ``methods/spmv/kernels/*.cu`` run (:mod:`methods.spmv.cuda_backends`):

- ``"cuda"``: a GPU through CuPy; arrays are CuPy arrays on the current device.
- ``"cuda-emu"``: the emulated CUDA device (:mod:`cuda_emu`), which runs the same
  kernels on the CPU with every access checked; arrays are its device arrays
  (``cuda_emu.asarray``). Times measured there say nothing of a GPU's.

The executors:

- :class:`CsrScalarCuda`: one thread per row, the paper's "CSR format" baseline (the
  authors' ``csr_spmv.cu``; see docs/papers/hbp.md).
- :class:`CsrVectorCuda`: one warp per row with a shuffle reduction.
- :class:`CsrCusparse`: cuSPARSE's generic SpMV (GPU only; the emulator has no cuSPARSE).
- :class:`HBPCuda`: the paper's mixed execution allocation over row blocks of our compact HBP
  layout (:mod:`methods.spmv.hbp`), read as it is, each row block summed in shared memory by one
  warp: one kernel, no merge.
- :class:`Regu2DCuda`: the Regu2D-style sliced-ELL 2D blocks (:mod:`methods.spmv.regu2d`),
  one thread block per row panel, no merge kernel.

Executors run on the device that holds their matrix (the current device when they are built)
and launch on the current stream. Every argument reaches a kernel through
:func:`~methods.spmv.cuda_kernels.pack_arguments`, in exactly the type its signature declares.
"""

from __future__ import annotations

import numpy as np

from methods.spmv.cuda_backends import backend as make_backend
from methods.spmv.cuda_kernels import (
    COL_TYPES,
    WARP_SIZE,
    check_array,
    hbp_launch,
    hbp_schedule,
    pack_arguments,
    value_type,
)
from methods.spmv.cuda_layouts import HBP_DEVICE_ARRAYS, REGU2D_LAYOUT_DTYPES, check_hbp_contents, check_regu2d_layout


def _grid(items: int, per_block: int) -> int:
    """Thread blocks of ``per_block`` items that cover ``items`` (at least one)."""
    return max(1, -(-items // per_block))


def _check_threads_per_block(threads_per_block: int) -> None:
    if not 0 < threads_per_block <= 1024 or threads_per_block % WARP_SIZE:
        raise ValueError(f"threads_per_block must be a multiple of 32 up to 1024, not {threads_per_block}")


class _Executor:
    """What every executor shares: its backend, shape, dtype, device and the check of a call's vectors."""

    shape: tuple[int, int]
    dtype: np.dtype

    def __init__(self, device: str):
        self.backend = make_backend(device)
        self.device = self.backend.device()

    def _check_x(self, x) -> None:
        check_array("x", x, self.dtype, self.shape[1])
        if x.device != self.device:
            raise ValueError(f"x is on {x.device}, the matrix on {self.device}")

    def _output(self, out):
        """``out`` checked, or a new result vector of shape (nrows,)."""
        if out is None:
            return self.backend.empty(self.shape[0], self.dtype)
        check_array("out", out, self.dtype, self.shape[0])
        if out.device != self.device:
            raise ValueError(f"out is on {out.device}, the matrix on {self.device}")
        return out


def _csr_arrays(matrix, xp) -> tuple:
    """``(indptr, indices, data, shape)`` of a CSR matrix on the backend ``xp``'s device.

    On a GPU a cupyx CSR matrix is used as it is and anything else goes through cupyx; on the
    emulated device a scipy matrix is uploaded, with int32 column indices as cupyx stores them.
    """
    if xp.kind == "cuda":
        import cupyx.scipy.sparse as gpu_sparse

        if not gpu_sparse.isspmatrix_csr(matrix):
            matrix = gpu_sparse.csr_matrix(matrix)
        return matrix.indptr, matrix.indices, matrix.data, matrix.shape
    import scipy.sparse as sp

    host = sp.csr_matrix(matrix)
    return xp.asarray(host.indptr), xp.asarray(host.indices, np.int32), xp.asarray(host.data), host.shape


class _CsrKernelCuda(_Executor):
    """``y = A @ x`` by one of the CSR kernels of ``kernels/csr.cu`` (one thread or one warp per row).

    Parameters
    ----------
    matrix : scipy.sparse matrix, or on a GPU a cupyx.scipy.sparse.csr_matrix; shape (nrows, ncols)
        float64 or float32. A scipy matrix is uploaded to the current device. The row
        pointers are widened to int64 once, here (the kernels take int64 row pointers so
        nnz > 2**31 works); columns and values are used as they are (int32, VALUE_T).
    threads_per_block : int, default 256
        A multiple of 32.
    blocks : int, optional
        Thread blocks in the grid. Default: enough for one thread (scalar) or one warp
        (vector) per row. The kernels stride over rows, so any grid is correct; the
        authors' CSR baseline is ``blocks=256, threads_per_block=32``.
    device : {"cuda", "cuda-emu"}, default "cuda"
    """

    kernel_name: str
    threads_per_row: int

    def __init__(self, matrix, threads_per_block: int = 256, blocks: int | None = None, device: str = "cuda"):
        super().__init__(device)
        _check_threads_per_block(threads_per_block)
        with self.device:
            indptr, indices, data, shape = _csr_arrays(matrix, self.backend)
            self.shape = tuple(int(n) for n in shape)
            self.dtype = np.dtype(data.dtype)
            self.threads_per_block = threads_per_block
            rows_per_block = threads_per_block // self.threads_per_row
            self.blocks = _grid(self.shape[0], rows_per_block) if blocks is None else int(blocks)
            self._kernel = self.backend.kernel("csr", {"VALUE_T": value_type(self.dtype)}, self.kernel_name)
            row_ptr = self.backend.asarray(indptr, dtype=np.int64)
            self._arguments = pack_arguments(self.kernel_name, {
                "nrows": self.shape[0], "row_ptr": row_ptr, "cols": indices, "values": data,
            }, self.dtype)

    def __call__(self, x, out=None):
        """``A @ x``: x of shape (ncols,) in the matrix's dtype, on its device; returns y (or ``out``)."""
        self._check_x(x)
        with self.device:
            y = self._output(out)
            if self.shape[0]:
                self._kernel((self.blocks,), (self.threads_per_block,), self._arguments + (x, y))
        return y


class CsrScalarCuda(_CsrKernelCuda):
    """One thread per row (``csr_scalar``): the paper's CSR baseline. See :class:`_CsrKernelCuda`."""

    kernel_name = "csr_scalar"
    threads_per_row = 1


class CsrVectorCuda(_CsrKernelCuda):
    """One warp per row with a shuffle reduction (``csr_vector``). See :class:`_CsrKernelCuda`."""

    kernel_name = "csr_vector"
    threads_per_row = WARP_SIZE


class CsrCusparse(_Executor):
    """``y = A @ x`` by cuSPARSE's generic SpMV (``cusparseSpMV``, CUSPARSE_SPMV_ALG_DEFAULT); GPU only.

    Calls :func:`cupyx.cusparse.spmv`, which is what ``cupyx.scipy.sparse.csr_matrix @ x``
    dispatches to on CUDA >= 11, with ``y=out`` so that no copy is added. Each call creates
    the descriptors and queries and allocates cuSPARSE's workspace again (cupyx does not
    keep them), so small matrices pay that host overhead per call.

    Parameters
    ----------
    matrix : cupyx.scipy.sparse.csr_matrix or scipy.sparse matrix, shape (nrows, ncols)
        float64 or float32; brought to canonical form (sorted, no duplicates) once, here,
        in place, as cupyx's ``@`` would on its first call.
    """

    def __init__(self, matrix):
        super().__init__("cuda")
        import cupyx.scipy.sparse as cusparse_matrices

        if not cusparse_matrices.isspmatrix_csr(matrix):
            matrix = cusparse_matrices.csr_matrix(matrix)
        value_type(matrix.dtype)
        self.shape = tuple(int(n) for n in matrix.shape)
        self.dtype = np.dtype(matrix.dtype)
        self.device = matrix.data.device
        with self.device:
            matrix.sum_duplicates()
        self.matrix = matrix

    def __call__(self, x, out=None):
        """``A @ x``: x of shape (ncols,) in the matrix's dtype, on its device; returns y (or ``out``)."""
        from cupyx import cusparse

        self._check_x(x)
        with self.device:
            return cusparse.spmv(self.matrix, x, y=self._output(out))


class HBPCuda(_Executor):
    """``y = A @ x`` by HBP (arXiv 2504.08860): ``hbp_spmv``, the paper's mixed execution allocation
    over row blocks, one kernel (``kernels/hbp.cu``; docs/hbp-cuda.md).

    The kernel reads the compact layout as :mod:`methods.spmv.hbp` builds it: its arrays are
    checked all through (:func:`~methods.spmv.cuda_layouts.check_hbp_contents`) and uploaded to
    the current device once, here. A call zeroes the queue counter (on the GPU
    ``cudaMemsetAsync`` on the current stream, so it is part of every timed SpMV, as it must be
    for the competitive part to run at all; docs/hbp-cuda.md), then launches ``hbp_spmv``,
    which writes every entry of y. Each warp sums a row block in its own y panel in shared
    memory, groups in storage order, so repeated calls give the same bits.

    Parameters
    ----------
    hbp : methods.spmv.hbp.HBPMatrix
        shape (nrows, ncols), block_height x block_width blocks, values float64 or float32,
        index arrays with the dtypes of :data:`~methods.spmv.cuda_layouts.HBP_LAYOUT_DTYPES`
        (checked, never cast; a layout that breaks the contract raises ValueError).
    warps : int, default 256
        Warps in the launch (the authors' 8192 threads), a multiple of ``threads_per_block / 32``;
        cut to the row blocks' count rounded up to whole thread blocks, since an idle warp would
        still claim from the counter (:attr:`schedule` has the warps launched).
    chunk : int, default 1
        Row blocks per competitive claim.
    threads_per_block : int, default 128
        A multiple of 32. Each warp holds a ``block_height`` x itemsize y panel in shared memory
        (4 KB at 512 rows in fp64), so a thread block needs ``threads_per_block / 32`` panels;
        above 48 KB the kernel opts in to more, up to the device's per-block limit, past which
        this raises.
    fixed_per_warp : int, optional
        Row blocks in each warp's fixed share; default ``n_rowblocks // warps`` (see
        :func:`~methods.spmv.cuda_kernels.hbp_schedule`).
    device : {"cuda", "cuda-emu"}, default "cuda"
    """

    def __init__(self, hbp, warps: int = 256, chunk: int = 1, threads_per_block: int = 128,
                 fixed_per_warp: int | None = None, device: str = "cuda"):
        super().__init__(device)
        check_hbp_contents(hbp)
        self.dtype = np.dtype(hbp.values.dtype)
        self.shape = tuple(int(n) for n in hbp.shape)
        self.block_height, self.block_width = int(hbp.block_height), int(hbp.block_width)
        n_rowblocks = len(hbp.row_block_ptr) - 1
        hbp_launch(warps, threads_per_block, self.block_height, self.dtype)  # checks the geometry as asked
        # No more warps than row blocks, in whole thread blocks: an idle warp would still claim from the counter.
        per_block = threads_per_block // WARP_SIZE
        warps = min(warps, max(1, -(-n_rowblocks // per_block)) * per_block)
        self.schedule = hbp_schedule(n_rowblocks, warps, chunk, fixed_per_warp)
        self.threads_per_block = threads_per_block
        self.blocks, self.shared_bytes = hbp_launch(warps, threads_per_block, self.block_height, self.dtype)
        xp = self.backend
        with self.device:
            self._spmv = xp.kernel("hbp", {"VALUE_T": value_type(self.dtype), "CHUNK": chunk}, "hbp_spmv")
            panels = f"{threads_per_block // WARP_SIZE} warps' y panels of {self.block_height} {self.dtype.name}"
            xp.allow_shared(self._spmv, self.shared_bytes, panels)
            self.arrays = {name: xp.asarray(np.ascontiguousarray(getattr(hbp, name))) for name in HBP_DEVICE_ARRAYS}
            self.queue_counter = xp.zeros(1, np.int32)
        self._arguments = pack_arguments("hbp_spmv", {
            "n_rowblocks": self.schedule.n_rowblocks, "fixed_per_warp": self.schedule.fixed_per_warp,
            "nrows": self.shape[0], "block_height": self.block_height, "block_width": self.block_width,
            **self.arrays, "queue_counter": self.queue_counter,
        }, self.dtype)

    def __call__(self, x, out=None):
        """``A @ x`` for x of shape (ncols,): zero the queue counter, launch ``hbp_spmv``; returns y (or ``out``)."""
        self._check_x(x)
        with self.device:
            y = self._output(out)
            self.backend.zero(self.queue_counter)
            if self.schedule.n_rowblocks:
                self._spmv((self.blocks,), (self.threads_per_block,), self._arguments + (x, y),
                           shared_mem=self.shared_bytes)
        return y


class Regu2DCuda(_Executor):
    """``y = A @ x`` by ``regu2d_spmv`` over the Regu2D-style layout (:mod:`methods.spmv.regu2d`).

    One thread block per row panel with the panel's y in shared memory, one warp per slice (see
    ``kernels/regu2d.cu``). The layout's arrays are uploaded once, to the current device, here.

    Parameters
    ----------
    matrix : methods.spmv.regu2d.Regu2DMatrix
        shape (nrows, ncols), values float64 or float32, slices of at most 32 rows (build it with
        ``slice_height=32`` for the GPU: smaller slices leave lanes idle). Checked by
        :func:`~methods.spmv.cuda_layouts.check_regu2d_layout`, never cast.
    threads_per_block : int, default 256
        A multiple of 32, at most 1024: the warps that share one panel's slices.
    device : {"cuda", "cuda-emu"}, default "cuda"
    """

    def __init__(self, matrix, threads_per_block: int = 256, device: str = "cuda"):
        super().__init__(device)
        check_regu2d_layout(matrix)
        _check_threads_per_block(threads_per_block)
        self.dtype = np.dtype(matrix.values.dtype)
        self.shape = tuple(int(n) for n in matrix.shape)
        self.threads_per_block = threads_per_block
        n_panels = len(matrix.panel_block_ptr) - 1
        self.blocks = max(1, n_panels)
        self.shared_bytes = int(matrix.block_height) * self.dtype.itemsize
        col_dtype = np.dtype(matrix.cols.dtype)
        xp = self.backend
        with self.device:
            self._kernel = xp.kernel("regu2d", {"VALUE_T": value_type(self.dtype), "COL_T": COL_TYPES[col_dtype.name]},
                                     "regu2d_spmv")
            xp.allow_shared(self._kernel, self.shared_bytes, f"panels of {matrix.block_height} rows")
            self.arrays = {name: xp.asarray(getattr(matrix, name)) for name in REGU2D_LAYOUT_DTYPES}
        self._arguments = pack_arguments("regu2d_spmv", {
            "n_panels": n_panels, "panel_height": int(matrix.block_height), "nrows": self.shape[0],
            "block_width": int(matrix.block_width), **self.arrays}, self.dtype, col_dtype)

    def __call__(self, x, out=None):
        """``A @ x``: x of shape (ncols,) in the matrix's dtype, on its device; returns y (or ``out``)."""
        self._check_x(x)
        with self.device:
            y = self._output(out)
            if self.shape[0]:
                self._kernel((self.blocks,), (self.threads_per_block,), self._arguments + (x, y),
                             shared_mem=self.shared_bytes)
        return y
