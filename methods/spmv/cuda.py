"""CUDA SpMV through CuPy: the CSR baselines, cuSPARSE, HBP (arXiv 2504.08860) and Regu2D.

The kernels live in ``methods/spmv/kernels/*.cu``; :func:`load_module` prepends their
compile-time parameters as ``#define`` lines (VALUE_T, BLOCK_WIDTH, CHUNK, COL_T) and compiles them
with CuPy's NVRTC, once per (file, defines). The executors compute ``y = A @ x`` for a CuPy
vector ``x`` of shape (ncols,) and return a CuPy vector of shape (nrows,) in the matrix's
dtype (float64 or float32):

- :class:`CsrScalarCuda`: one thread per row, the paper's "CSR format" baseline (the authors'
  ``csr_spmv.cu``; hbp.md sections 2 and 6).
- :class:`CsrVectorCuda`: one warp per row with a shuffle reduction.
- :class:`CsrCusparse`: cuSPARSE's generic SpMV (what ``cupyx.scipy.sparse.csr_matrix @ x``
  dispatches to on CUDA >= 11).
- :class:`HBPCuda`: the paper's mixed execution allocation over our HBP layout
  (:mod:`methods.spmv.hbp`), then the merge kernel.
- :class:`Regu2DCuda`: the Regu2D-style sliced-ELL 2D blocks (:mod:`methods.spmv.regu2d`),
  one thread block per row panel, no merge kernel.

Executors run on the device that holds their matrix (HBP: the current device when it is
built) and launch on the current stream.

CuPy is imported lazily: this module imports on a machine without CuPy or a GPU, and an
executor built there raises :class:`~reproduce.harness.errors.DeviceError` saying what is
missing. The argument table :data:`KERNEL_ARGUMENTS` mirrors the ``.cu`` signatures (a CPU
test parses the sources and compares); executors pack their arguments through it, so every
array and scalar reaches a kernel in exactly the type its signature declares.
:func:`emulate_hbp` and :func:`emulate_regu2d` repeat the HBP and Regu2D kernels' schedule and
index arithmetic in NumPy, so the layout contracts and the work allocation can be checked
without a GPU.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reproduce.harness.errors import DeviceError

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"

WARP_SIZE = 32
INT32_MAX = 2**31 - 1
# The static shared-memory limit per thread block; more needs an explicit opt-in per kernel.
DEFAULT_SHARED_LIMIT = 48 * 1024

# C type of VALUE_T for each supported values dtype.
VALUE_TYPES = {"float64": "double", "float32": "float"}

# Every kernel's parameters in signature order: (name, type). "int32"/"int64" are scalars passed
# by value (C int / long long), a trailing "*" marks a device array of that element type, and
# "value" stands for VALUE_T, the matrix's dtype.
KERNEL_ARGUMENTS: dict[str, list[tuple[str, str]]] = {
    "csr_scalar": [("nrows", "int32"), ("row_ptr", "int64*"), ("cols", "int32*"), ("values", "value*"),
                   ("x", "value*"), ("y", "value*")],
    "csr_vector": [("nrows", "int32"), ("row_ptr", "int64*"), ("cols", "int32*"), ("values", "value*"),
                   ("x", "value*"), ("y", "value*")],
    "hbp_spmv": [("n_blocks", "int32"), ("fixed_per_warp", "int32"), ("ncols", "int32"),
                 ("block_col", "int32*"), ("block_group_ptr", "int32*"), ("group_slot_ptr", "int32*"),
                 ("group_nz_ptr", "int64*"), ("cols", "int32*"), ("values", "value*"), ("next", "int32*"),
                 ("queue_counter", "int32*"), ("partial", "value*"), ("x", "value*")],
    "hbp_merge": [("nrows", "int32"), ("merge_ptr", "int64*"), ("merge_slot", "int32*"), ("partial", "value*"),
                  ("y", "value*")],
    "regu2d_spmv": [("n_panels", "int32"), ("panel_height", "int32"), ("nrows", "int32"), ("block_width", "int32"),
                    ("panel_block_ptr", "int32*"), ("block_col", "int32*"), ("block_slice_ptr", "int32*"),
                    ("slice_slot_ptr", "int32*"), ("slice_nz_ptr", "int64*"), ("slot_row", "uint16*"),
                    ("slot_len", "int32*"), ("cols", "col*"), ("values", "value*"), ("x", "value*"), ("y", "value*")],
}
# The .cu file (in KERNEL_DIR, without suffix) that defines each kernel.
KERNEL_FILES = {"csr_scalar": "csr", "csr_vector": "csr", "hbp_spmv": "hbp", "hbp_merge": "hbp",
                "regu2d_spmv": "regu2d"}
# C type of COL_T for each column-offset dtype of the Regu2D layout ("col" in the table above).
COL_TYPES = {"uint16": "unsigned short", "int32": "int"}

# The HBP layout's arrays and their dtypes (the contract of methods.spmv.hbp.HBPMatrix);
# "value" is the values dtype.
HBP_LAYOUT_DTYPES = {
    "block_row": "int32", "block_col": "int32", "block_group_ptr": "int32", "group_slot_ptr": "int32",
    "group_nz_ptr": "int64", "slot_row": "int32", "cols": "int32", "values": "value", "next": "int32",
    "merge_ptr": "int64", "merge_slot": "int32",
}
# The layout arrays the kernels read (block_row and slot_row are not uploaded: merge_ptr and
# merge_slot already say where each slot's sum goes).
HBP_DEVICE_ARRAYS = ("block_col", "block_group_ptr", "group_slot_ptr", "group_nz_ptr", "cols", "values", "next",
                     "merge_ptr", "merge_slot")
# The Regu2D layout's arrays (methods.spmv.regu2d.Regu2DMatrix), all read by regu2d_spmv; "col" is
# the column-offset dtype (uint16 or int32).
REGU2D_LAYOUT_DTYPES = {
    "panel_block_ptr": "int32", "block_col": "int32", "block_slice_ptr": "int32", "slice_slot_ptr": "int32",
    "slice_nz_ptr": "int64", "slot_row": "uint16", "slot_len": "int32", "cols": "col", "values": "value",
}


def _cupy():
    """CuPy, if it imports and sees a GPU; otherwise a DeviceError that says what to do."""
    try:
        import cupy
    except ImportError as exc:
        raise DeviceError("CUDA SpMV needs CuPy: install the 'gpu' extra (pip install cupy-cuda12x) "
                          "on a machine with an NVIDIA GPU") from exc
    if not cupy.cuda.is_available():
        raise DeviceError("CUDA SpMV needs a CUDA GPU, and CuPy sees none here (no device or no driver); "
                          "run it on a GPU machine or use the CPU methods")
    return cupy


def value_type(dtype) -> str:
    """The C type for VALUE_T (``double`` or ``float``) of a values dtype."""
    name = np.dtype(dtype).name
    if name not in VALUE_TYPES:
        raise TypeError(f"CUDA SpMV supports float64 and float32 values, not {name}")
    return VALUE_TYPES[name]


def kernel_source(name: str, defines: dict) -> str:
    """The source CuPy compiles: ``#define KEY VALUE`` lines, then ``kernels/<name>.cu``."""
    header = "".join(f"#define {key} {value}\n" for key, value in sorted(defines.items()))
    return header + (KERNEL_DIR / f"{name}.cu").read_text()


def load_module(name: str, defines: dict):
    """The CuPy RawModule of ``kernels/<name>.cu`` with ``defines`` prepended, cached per (name, defines).

    CuPy compiles it with NVRTC on the first ``get_function`` (and keeps the binary in its
    kernel cache, ``~/.cupy/kernel_cache``); that needs a GPU and its driver.
    """
    _cupy()
    return _load_module(name, tuple(sorted((str(key), str(value)) for key, value in defines.items())))


@functools.cache
def _load_module(name: str, defines: tuple[tuple[str, str], ...]):
    import cupy

    return cupy.RawModule(code=kernel_source(name, dict(defines)))


def pack_arguments(kernel: str, arguments: dict, value_dtype, col_dtype=None) -> tuple:
    """``arguments`` in the order of ``kernel``'s signature, each checked against :data:`KERNEL_ARGUMENTS`.

    ``value_dtype`` is the element type of "value" entries (VALUE_T), ``col_dtype`` that of "col"
    entries (COL_T, Regu2D's column offsets).

    ``arguments`` must name a leading part of the signature (the executors bind the arrays
    they own once and append the call-time vectors). Scalars become NumPy scalars of the
    declared width (CuPy passes a NumPy scalar as exactly that C type), after a range check;
    arrays must already have the declared dtype and be C-contiguous: nothing is cast
    silently, because narrowing an index array could wrap.
    """
    table = KERNEL_ARGUMENTS[kernel]
    names = [name for name, _ in table]
    if list(arguments) != names[:len(arguments)]:
        raise ValueError(f"{kernel} takes {names}; got {list(arguments)}")
    packed = []
    for (name, kind), value in zip(table, arguments.values()):
        base = kind.rstrip("*")
        element = np.dtype({"value": value_dtype, "col": col_dtype}.get(base, base))
        if kind.endswith("*"):
            _check_array(f"{kernel} argument {name}", value, element)
            packed.append(value)
        else:
            info = np.iinfo(element)
            if not info.min <= int(value) <= info.max:
                raise OverflowError(f"{kernel} argument {name} = {value} does not fit {element.name}")
            packed.append(element.type(value))
    return tuple(packed)


def _check_array(what: str, array, dtype: np.dtype, length: int | None = None, contiguous: bool = True) -> None:
    """A 1-D array of ``dtype`` (and ``length``), C-contiguous if ``contiguous``; else TypeError/ValueError."""
    if getattr(array, "dtype", None) != dtype:
        raise TypeError(f"{what} must have dtype {dtype.name}, not {getattr(array, 'dtype', type(array).__name__)}")
    if array.ndim != 1 or (contiguous and not array.flags.c_contiguous):
        raise ValueError(f"{what} must be a contiguous 1-D array, not shape {array.shape} with strides {array.strides}")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{what} has length {array.shape[0]}, expected {length}")


def check_hbp_layout(hbp) -> None:
    """Check the dtypes and lengths of an HBP layout against the contract, in O(n_groups) host work.

    Every array must have its :data:`HBP_LAYOUT_DTYPES` dtype (the kernels read them as
    declared; nothing is cast), every pointer array its length, and every group 1 to 32
    slots: ``hbp_spmv`` gives slot q of a group to lane q, so a larger group would lose
    rows silently. Raises TypeError or ValueError naming the array.
    """
    dtype = np.dtype(hbp.values.dtype)
    value_type(dtype)
    for name, kind in HBP_LAYOUT_DTYPES.items():
        array = getattr(hbp, name)
        _check_array(f"HBPMatrix.{name}", array, dtype if kind == "value" else np.dtype(kind), contiguous=False)
    nrows, ncols = (int(n) for n in hbp.shape)
    n_blocks = len(hbp.block_col)
    if int(hbp.block_width) < 1 or int(hbp.block_height) < 1:
        raise ValueError(f"HBPMatrix block size must be positive, not {hbp.block_height} x {hbp.block_width}")
    if nrows > INT32_MAX or ncols > INT32_MAX:
        raise ValueError(f"HBPMatrix shape {hbp.shape} does not fit the kernels' int32 row and column indices")
    expected = {"block_row": n_blocks, "block_group_ptr": n_blocks + 1, "merge_ptr": nrows + 1}
    n_groups = int(hbp.block_group_ptr[-1]) if len(hbp.block_group_ptr) else -1
    expected.update(group_slot_ptr=n_groups + 1, group_nz_ptr=n_groups + 1)
    n_slots = int(hbp.group_slot_ptr[-1]) if len(hbp.group_slot_ptr) else -1
    expected.update(slot_row=n_slots, merge_slot=n_slots)
    nnz = int(hbp.group_nz_ptr[-1]) if len(hbp.group_nz_ptr) else -1
    expected.update(cols=nnz, values=nnz, next=nnz)
    for name, length in expected.items():
        if len(getattr(hbp, name)) != length:
            raise ValueError(f"HBPMatrix.{name} has length {len(getattr(hbp, name))}, expected {length}")
    if int(hbp.merge_ptr[-1]) != n_slots:
        raise ValueError(f"HBPMatrix.merge_ptr ends at {int(hbp.merge_ptr[-1])}, expected n_slots = {n_slots}")
    group_sizes = np.diff(np.asarray(hbp.group_slot_ptr))
    if group_sizes.size and not (group_sizes.min() >= 1 and group_sizes.max() <= WARP_SIZE):
        raise ValueError(f"HBPMatrix groups must hold 1 to 32 slots; found {group_sizes.min()} to {group_sizes.max()}")


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
        _check_array(f"Regu2DMatrix.{name}", getattr(matrix, name), kinds[kind] if kind in kinds else np.dtype(kind),
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


def _grid(items: int, per_block: int) -> int:
    """Thread blocks of ``per_block`` items that cover ``items`` (at least one)."""
    return max(1, -(-items // per_block))


class _Executor:
    """What every executor shares: shape, dtype, device and the check of a call's vectors."""

    shape: tuple[int, int]
    dtype: np.dtype
    device: object

    def _check_x(self, x) -> None:
        _check_array("x", x, self.dtype, self.shape[1])
        if x.device != self.device:
            raise ValueError(f"x is on {x.device}, the matrix on {self.device}")

    def _output(self, out):
        """``out`` checked, or a new result vector of shape (nrows,)."""
        import cupy

        if out is None:
            return cupy.empty(self.shape[0], dtype=self.dtype)
        _check_array("out", out, self.dtype, self.shape[0])
        if out.device != self.device:
            raise ValueError(f"out is on {out.device}, the matrix on {self.device}")
        return out


class _CsrKernelCuda(_Executor):
    """``y = A @ x`` by one of the CSR kernels of ``kernels/csr.cu`` (one thread or one warp per row).

    Parameters
    ----------
    matrix : cupyx.scipy.sparse.csr_matrix or scipy.sparse matrix, shape (nrows, ncols)
        float64 or float32. A scipy matrix is uploaded to the current device. The row
        pointers are widened to int64 once, here (the kernels take int64 row pointers so
        nnz > 2**31 works); columns and values are used as they are (int32, VALUE_T).
    threads_per_block : int, default 256
        A multiple of 32.
    blocks : int, optional
        Thread blocks in the grid. Default: enough for one thread (scalar) or one warp
        (vector) per row. The kernels stride over rows, so any grid is correct; the
        authors' CSR baseline is ``blocks=256, threads_per_block=32``.
    """

    kernel_name: str
    threads_per_row: int

    def __init__(self, matrix, threads_per_block: int = 256, blocks: int | None = None):
        cupy = _cupy()
        import cupyx.scipy.sparse as cusparse_matrices

        if not 0 < threads_per_block <= 1024 or threads_per_block % WARP_SIZE:
            raise ValueError(f"threads_per_block must be a multiple of 32 up to 1024, not {threads_per_block}")
        if not cusparse_matrices.isspmatrix_csr(matrix):
            matrix = cusparse_matrices.csr_matrix(matrix)
        self.shape = tuple(int(n) for n in matrix.shape)
        self.dtype = np.dtype(matrix.dtype)
        self.device = matrix.data.device
        self.threads_per_block = threads_per_block
        rows_per_block = threads_per_block // self.threads_per_row
        self.blocks = _grid(self.shape[0], rows_per_block) if blocks is None else int(blocks)
        with self.device:
            module = load_module("csr", {"VALUE_T": value_type(self.dtype)})
            self._kernel = module.get_function(self.kernel_name)
            row_ptr = matrix.indptr.astype(cupy.int64)
            self._arguments = pack_arguments(self.kernel_name, {
                "nrows": self.shape[0], "row_ptr": row_ptr, "cols": matrix.indices, "values": matrix.data,
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
    """``y = A @ x`` by cuSPARSE's generic SpMV (``cusparseSpMV``, CUSPARSE_SPMV_ALG_DEFAULT).

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
        _cupy()
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


@dataclass(frozen=True)
class HBPSchedule:
    """The work allocation of ``hbp_spmv`` (the paper's mixed execution allocation).

    Warp w processes the stored blocks [w * fixed_per_warp, (w + 1) * fixed_per_warp)
    (fixed part); the blocks [queue_begin, n_blocks) form the queue that warps claim
    ``chunk`` at a time from an atomic counter (competitive part).
    """

    n_blocks: int
    warps: int
    chunk: int
    fixed_per_warp: int

    @property
    def queue_begin(self) -> int:
        return self.warps * self.fixed_per_warp

    @property
    def queue_size(self) -> int:
        return self.n_blocks - self.queue_begin


def hbp_schedule(n_blocks: int, warps: int, chunk: int, fixed_per_warp: int | None = None) -> HBPSchedule:
    """The allocation for ``n_blocks`` stored blocks over ``warps`` warps, checked for int32 overflow.

    ``fixed_per_warp`` defaults to ``n_blocks // warps``: the authors' rule (each warp a fixed
    share as large as fits, floor(row blocks / warps per column block) in their code) applied
    to our list of stored blocks, so fewer than ``warps`` blocks are competed for. 0 makes
    every block competitive. Unlike the authors' code, a share of 0 (fewer blocks than warps)
    is fine (hbp.md section 5: their kernel divides by it).
    """
    if warps < 1 or chunk < 1:
        raise ValueError(f"warps and chunk must be positive, not {warps} and {chunk}")
    if fixed_per_warp is None:
        fixed_per_warp = n_blocks // warps
    if fixed_per_warp < 0 or warps * fixed_per_warp > n_blocks:
        raise ValueError(f"fixed_per_warp={fixed_per_warp} x {warps} warps exceeds the {n_blocks} stored blocks")
    # The queue counter ends at most one chunk per warp past the queue; it and the thread ids are int32.
    if n_blocks + warps * chunk > INT32_MAX or warps * WARP_SIZE > INT32_MAX:
        raise OverflowError(f"{n_blocks} blocks with {warps} warps and chunk {chunk} overflow the int32 counter")
    return HBPSchedule(n_blocks=n_blocks, warps=warps, chunk=chunk, fixed_per_warp=fixed_per_warp)


def hbp_launch(warps: int, threads_per_block: int, block_width: int, dtype) -> tuple[int, int]:
    """``(thread blocks, dynamic shared bytes per thread block)`` of the ``hbp_spmv`` launch.

    ``warps`` warps in thread blocks of ``threads_per_block`` threads (a multiple of 32, at
    most 1024, dividing ``warps * 32``); each warp holds one ``block_width``-entry x tile.
    """
    if not 0 < threads_per_block <= 1024 or threads_per_block % WARP_SIZE or warps % (threads_per_block // 32):
        raise ValueError(f"threads_per_block ({threads_per_block}) must be a multiple of 32, at most 1024, "
                         f"that divides warps x 32 ({warps * WARP_SIZE})")
    warps_per_block = threads_per_block // WARP_SIZE
    return warps // warps_per_block, warps_per_block * int(block_width) * np.dtype(dtype).itemsize


def warp_block_order(schedule: HBPSchedule) -> list[list[int]]:
    """The stored blocks each warp processes, in order, for one interleaving of the claims.

    Mirrors ``hbp_spmv``: the fixed share, then claims of ``chunk`` queue entries from a
    counter that starts at 0, here made by the warps in turn (on the GPU the order of claims
    varies, the union of the blocks does not). Every block appears exactly once.
    """
    order = [list(range(w * schedule.fixed_per_warp, (w + 1) * schedule.fixed_per_warp))
             for w in range(schedule.warps)]
    counter = 0
    active = list(range(schedule.warps))
    while active:
        still_active = []
        for warp in active:
            start = counter
            counter += schedule.chunk
            if start < schedule.queue_size:
                end = min(start + schedule.chunk, schedule.queue_size)
                order[warp].extend(range(schedule.queue_begin + start, schedule.queue_begin + end))
                still_active.append(warp)
        active = still_active
    return order


def emulate_hbp(hbp, x: np.ndarray, warps: int = 256, chunk: int = 10,
                fixed_per_warp: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``hbp_spmv`` then ``hbp_merge`` in NumPy, step for step: ``(partial, y)``.

    Walks the blocks in :func:`warp_block_order`, loads each block's x tile exactly as the
    kernel does (``x[col0 : min(col0 + block_width, ncols)]``), lets lane q of every group
    follow its chain from ``group_nz_ptr[g] + q`` through ``next``, reading ``tile[cols - col0]``
    (an index outside the tile raises, where the GPU would read garbage), and sums in the
    values dtype (the GPU fuses the multiply-add, so it is close to, not bitwise equal to,
    this). Slow (Python loops): for small matrices in tests.

    Parameters
    ----------
    hbp : HBPMatrix (the layout contract), n_blocks stored blocks, shape (nrows, ncols)
    x : ndarray, shape (ncols,)

    Returns
    -------
    partial : ndarray, shape (n_slots,); NaN for a slot no lane wrote
    y : ndarray, shape (nrows,)
    """
    check_hbp_layout(hbp)
    dtype = np.dtype(hbp.values.dtype)
    nrows, ncols = hbp.shape
    x = np.asarray(x, dtype=dtype)
    width = int(hbp.block_width)
    schedule = hbp_schedule(len(hbp.block_col), warps, chunk, fixed_per_warp)
    partial = np.full(len(hbp.merge_slot), np.nan, dtype=dtype)
    for blocks in warp_block_order(schedule):
        for b in blocks:
            col0 = int(hbp.block_col[b]) * width
            tile = x[col0:min(col0 + width, ncols)]
            for g in range(hbp.block_group_ptr[b], hbp.block_group_ptr[b + 1]):
                first_slot = int(hbp.group_slot_ptr[g])
                for lane in range(int(hbp.group_slot_ptr[g + 1]) - first_slot):
                    total = dtype.type(0)
                    k = int(hbp.group_nz_ptr[g]) + lane
                    while True:
                        column = int(hbp.cols[k]) - col0
                        if not 0 <= column < tile.shape[0]:
                            raise IndexError(f"nonzero {k} (column {hbp.cols[k]}) is outside block {b}'s x tile")
                        total += hbp.values[k] * tile[column]
                        if hbp.next[k] < 0:
                            break
                        k += int(hbp.next[k])
                    partial[first_slot + lane] = total
    y = np.zeros(nrows, dtype=dtype)
    for row in range(nrows):
        total = dtype.type(0)
        for k in range(hbp.merge_ptr[row], hbp.merge_ptr[row + 1]):
            total += partial[hbp.merge_slot[k]]
        y[row] = total
    return partial, y


class HBPCuda(_Executor):
    """``y = A @ x`` by HBP (arXiv 2504.08860): ``hbp_spmv`` (mixed execution allocation) + ``hbp_merge``.

    The layout arrays the kernels read are uploaded once, to the current device, here.
    A call zeroes the queue counter (``cudaMemsetAsync`` on the current stream, so it is part
    of every timed SpMV, as it must be for the competitive part to run at all; hbp.md
    section 5), launches ``hbp_spmv`` (fills :attr:`partial`), then ``hbp_merge`` (writes y).

    Parameters
    ----------
    hbp : methods.spmv.hbp.HBPMatrix
        shape (nrows, ncols), block_height x block_width blocks, values float64 or float32,
        index arrays with the dtypes of :data:`HBP_LAYOUT_DTYPES` (checked, never cast).
    warps : int, default 256
        Warps in the ``hbp_spmv`` launch (the authors' 8192 threads). A multiple of
        ``threads_per_block / 32``.
    chunk : int, default 10
        Blocks per competitive claim (the authors' SUB_N).
    threads_per_block : int, default 32
        A multiple of 32; the authors launch one warp per thread block. Each warp holds a
        block_width x itemsize tile of x in shared memory (32 KB at 4096 fp64), so a thread
        block needs ``threads_per_block / 32`` tiles; above 48 KB the kernel opts in to
        more, up to the device's per-block limit (227 KB on H100/H200, 99 KB on the RTX
        4090 and 163 KB on Orin), past which this raises.
    fixed_per_warp : int, optional
        Blocks in each warp's fixed share; default ``n_blocks // warps`` (see :func:`hbp_schedule`).
    merge_threads_per_block : int, default 256
        Threads per block of ``hbp_merge`` (one thread per row).
    """

    def __init__(self, hbp, warps: int = 256, chunk: int = 10, threads_per_block: int = 32,
                 fixed_per_warp: int | None = None, merge_threads_per_block: int = 256):
        cupy = _cupy()
        check_hbp_layout(hbp)
        self.dtype = np.dtype(hbp.values.dtype)
        self.shape = tuple(int(n) for n in hbp.shape)
        self.block_width = int(hbp.block_width)
        self.schedule = hbp_schedule(len(hbp.block_col), warps, chunk, fixed_per_warp)
        self.threads_per_block = threads_per_block
        self.blocks, self.shared_bytes = hbp_launch(warps, threads_per_block, self.block_width, self.dtype)
        self.merge_threads_per_block = merge_threads_per_block
        self.merge_blocks = _grid(self.shape[0], merge_threads_per_block)

        self.device = cupy.cuda.Device()
        with self.device:
            module = load_module("hbp", {"VALUE_T": value_type(self.dtype), "BLOCK_WIDTH": self.block_width,
                                         "CHUNK": chunk})
            self._spmv = module.get_function("hbp_spmv")
            self._merge = module.get_function("hbp_merge")
            if self.shared_bytes > DEFAULT_SHARED_LIMIT:
                limit = cupy.cuda.runtime.deviceGetAttribute(
                    cupy.cuda.runtime.cudaDevAttrMaxSharedMemoryPerBlockOptin, self.device.id)
                if self.shared_bytes > limit:
                    raise ValueError(f"{threads_per_block // WARP_SIZE} warps' x tiles of {self.block_width} "
                                     f"{self.dtype.name} need {self.shared_bytes} bytes of shared memory per "
                                     f"thread block; this device allows {limit}: use fewer threads per block")
                # Only ever raised: executors with the same defines share this kernel.
                if self._spmv.max_dynamic_shared_size_bytes < self.shared_bytes:
                    self._spmv.max_dynamic_shared_size_bytes = self.shared_bytes
            self.arrays = {name: cupy.asarray(getattr(hbp, name)) for name in HBP_DEVICE_ARRAYS}
            self.partial = cupy.empty(len(hbp.merge_slot), dtype=self.dtype)
            self.queue_counter = cupy.zeros(1, dtype=cupy.int32)
        a = self.arrays
        self._spmv_arguments = pack_arguments("hbp_spmv", {
            "n_blocks": self.schedule.n_blocks, "fixed_per_warp": self.schedule.fixed_per_warp,
            "ncols": self.shape[1], "block_col": a["block_col"], "block_group_ptr": a["block_group_ptr"],
            "group_slot_ptr": a["group_slot_ptr"], "group_nz_ptr": a["group_nz_ptr"], "cols": a["cols"],
            "values": a["values"], "next": a["next"], "queue_counter": self.queue_counter, "partial": self.partial,
        }, self.dtype)
        self._merge_arguments = pack_arguments("hbp_merge", {
            "nrows": self.shape[0], "merge_ptr": a["merge_ptr"], "merge_slot": a["merge_slot"],
            "partial": self.partial,
        }, self.dtype)

    def __call__(self, x, out=None):
        """``A @ x``: :meth:`spmv_only` then :meth:`merge_only`. x of shape (ncols,); returns y (or ``out``)."""
        self.spmv_only(x)
        return self.merge_only(out)

    def spmv_only(self, x):
        """Zero the queue counter and run ``hbp_spmv``: fills and returns :attr:`partial`, shape (n_slots,)."""
        import cupy

        self._check_x(x)
        with self.device:
            cupy.cuda.runtime.memsetAsync(self.queue_counter.data.ptr, 0, self.queue_counter.nbytes,
                                          cupy.cuda.get_current_stream().ptr)
            if self.schedule.n_blocks:
                self._spmv((self.blocks,), (self.threads_per_block,), self._spmv_arguments + (x,),
                           shared_mem=self.shared_bytes)
        return self.partial

    def merge_only(self, out=None):
        """Run ``hbp_merge`` on the current :attr:`partial`: y of shape (nrows,) (written into ``out`` if given)."""
        with self.device:
            y = self._output(out)
            if self.shape[0]:
                self._merge((self.merge_blocks,), (self.merge_threads_per_block,), self._merge_arguments + (y,))
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
        :func:`check_regu2d_layout`, never cast.
    threads_per_block : int, default 256
        A multiple of 32, at most 1024: the warps that share one panel's slices.
    """

    def __init__(self, matrix, threads_per_block: int = 256):
        cupy = _cupy()
        check_regu2d_layout(matrix)
        if not 0 < threads_per_block <= 1024 or threads_per_block % WARP_SIZE:
            raise ValueError(f"threads_per_block must be a multiple of 32 up to 1024, not {threads_per_block}")
        self.dtype = np.dtype(matrix.values.dtype)
        self.shape = tuple(int(n) for n in matrix.shape)
        self.threads_per_block = threads_per_block
        n_panels = len(matrix.panel_block_ptr) - 1
        self.blocks = max(1, n_panels)
        self.shared_bytes = int(matrix.block_height) * self.dtype.itemsize
        col_dtype = np.dtype(matrix.cols.dtype)
        self.device = cupy.cuda.Device()
        with self.device:
            module = load_module("regu2d", {"VALUE_T": value_type(self.dtype), "COL_T": COL_TYPES[col_dtype.name]})
            self._kernel = module.get_function("regu2d_spmv")
            if self.shared_bytes > DEFAULT_SHARED_LIMIT:
                limit = cupy.cuda.runtime.deviceGetAttribute(
                    cupy.cuda.runtime.cudaDevAttrMaxSharedMemoryPerBlockOptin, self.device.id)
                if self.shared_bytes > limit:
                    raise ValueError(f"a panel of {matrix.block_height} rows needs {self.shared_bytes} bytes of shared "
                                     f"memory; this device allows {limit}: use a smaller block_height")
                if self._kernel.max_dynamic_shared_size_bytes < self.shared_bytes:
                    self._kernel.max_dynamic_shared_size_bytes = self.shared_bytes
            self.arrays = {name: cupy.asarray(getattr(matrix, name)) for name in REGU2D_LAYOUT_DTYPES}
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


def emulate_regu2d(matrix, x: np.ndarray, threads_per_block: int = 256) -> np.ndarray:
    """``regu2d_spmv`` in NumPy, step for step: y of shape (nrows,), in the values dtype.

    Per panel: a zeroed panel of y; per stored block, the slices in the order the warps take
    them (warp w: slices w, w + n_warps, ...), lane i summing its row's first ``slot_len``
    entries at ``slice_nz_ptr[s] + t * k + i`` from ``x[block_col * block_width + cols]``
    (an index past x raises, where the GPU would read garbage); then the panel is written out.
    Slow (Python loops): for small matrices in tests, to check the kernel's index arithmetic
    without a GPU.
    """
    check_regu2d_layout(matrix)
    dtype = np.dtype(matrix.values.dtype)
    x = np.asarray(x, dtype=dtype)
    nrows = int(matrix.shape[0])
    height, width = int(matrix.block_height), int(matrix.block_width)
    n_warps = threads_per_block // WARP_SIZE
    y = np.full(nrows, np.nan, dtype=dtype)
    for panel in range(len(matrix.panel_block_ptr) - 1):
        row0 = panel * height
        y_panel = np.zeros(min(height, nrows - row0), dtype=dtype)
        for b in range(matrix.panel_block_ptr[panel], matrix.panel_block_ptr[panel + 1]):
            col0 = int(matrix.block_col[b]) * width
            first, end = int(matrix.block_slice_ptr[b]), int(matrix.block_slice_ptr[b + 1])
            for s in [s for warp in range(n_warps) for s in range(first + warp, end, n_warps)]:
                first_slot = int(matrix.slice_slot_ptr[s])
                k = int(matrix.slice_slot_ptr[s + 1]) - first_slot
                for lane in range(k):
                    total = dtype.type(0)
                    for t in range(int(matrix.slot_len[first_slot + lane])):
                        position = int(matrix.slice_nz_ptr[s]) + t * k + lane
                        column = col0 + int(matrix.cols[position])
                        if column >= x.shape[0]:
                            raise IndexError(f"entry {position} reads x[{column}] past its end")
                        total += matrix.values[position] * x[column]
                    y_panel[int(matrix.slot_row[first_slot + lane])] += total
        y[row0:row0 + y_panel.shape[0]] = y_panel
    return y
