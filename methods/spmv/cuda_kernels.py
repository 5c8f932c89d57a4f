"""The CUDA SpMV kernels as the host sees them, for any device that runs them.

The kernels live in ``methods/spmv/kernels/*.cu``. This module holds what every executor and
device needs to launch them and nothing device-specific: :func:`kernel_source` (the
``#define`` lines of the compile-time parameters, then the file), the argument table
:data:`KERNEL_ARGUMENTS` that mirrors the ``.cu`` signatures (a CPU test parses the sources
and compares) and :func:`pack_arguments`, which puts every array and scalar into exactly the
type its signature declares; the layout checks that the kernels rely on (``kernels/hbp.cu``
reads :mod:`methods.spmv.hbp`'s compact layout as it is: :func:`check_hbp_contents`); and HBP's
work allocation (:func:`hbp_schedule`) and launch geometry (:func:`hbp_launch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit, prange

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
    "hbp_spmv": [("n_rowblocks", "int32"), ("fixed_per_warp", "int32"), ("nrows", "int32"),
                 ("block_height", "int32"), ("block_width", "int32"), ("row_block_ptr", "int32*"),
                 ("block_col", "int32*"), ("block_nz_ptr", "int64*"), ("block_group_ptr", "int32*"),
                 ("group_slot_ptr", "int32*"), ("group_nz_offset", "uint32*"), ("slot_row", "uint16*"),
                 ("slot_last", "uint16*"), ("cols", "uint16*"), ("values", "value*"), ("queue_counter", "int32*"),
                 ("x", "value*"), ("y", "value*")],
    "hbp_count": [("nrows", "int32"), ("height", "int32"), ("width", "int32"), ("n_colblocks", "int32"),
                  ("indptr", "int64*"), ("indices", "int32*"), ("rb_slots", "int64*"), ("rb_blocks", "int64*"),
                  ("rb_groups", "int64*")],
    "hbp_segments": [("nrows", "int32"), ("height", "int32"), ("width", "int32"), ("n_colblocks", "int32"),
                     ("indptr", "int64*"), ("indices", "int32*"), ("slot_offsets", "int64*"),
                     ("block_offsets", "int64*"), ("group_offsets", "int64*"), ("block_col", "int32*"),
                     ("block_nz_ptr", "int64*"), ("block_group_ptr", "int32*"), ("block_slot", "int64*"),
                     ("seg_row", "uint16*"), ("seg_start", "int64*"), ("seg_len", "int32*")],
    "hbp_dp_cut": [("n_blocks", "int32"), ("height", "int32"), ("block_slot", "int64*"), ("seg_len", "int32*"),
                   ("dp_order", "int32*"), ("dp_start", "uint8*"), ("block_groups", "int64*")],
    "hbp_emit": [("n_blocks", "int32"), ("height", "int32"), ("width", "int32"), ("block_col", "int32*"),
                 ("block_nz_ptr", "int64*"), ("block_group_ptr", "int32*"), ("block_slot", "int64*"),
                 ("seg_row", "uint16*"), ("seg_start", "int64*"), ("seg_len", "int32*"), ("indices", "int32*"),
                 ("data", "value*"), ("dp_order", "int32*"), ("dp_start", "uint8*"), ("group_slot_ptr", "int32*"),
                 ("group_nz_offset", "uint32*"),
                 ("slot_row", "uint16*"), ("slot_last", "uint16*"), ("cols", "uint16*"), ("values", "value*")],
    "regu2d_spmv": [("n_panels", "int32"), ("panel_height", "int32"), ("nrows", "int32"), ("block_width", "int32"),
                    ("panel_block_ptr", "int32*"), ("block_col", "int32*"), ("block_slice_ptr", "int32*"),
                    ("slice_slot_ptr", "int32*"), ("slice_nz_ptr", "int64*"), ("slot_row", "uint16*"),
                    ("slot_len", "int32*"), ("cols", "col*"), ("values", "value*"), ("x", "value*"), ("y", "value*")],
}
# The .cu file (in KERNEL_DIR, without suffix) that defines each kernel.
KERNEL_FILES = {"csr_scalar": "csr", "csr_vector": "csr", "hbp_spmv": "hbp", "hbp_count": "hbp_build",
                "hbp_segments": "hbp_build", "hbp_dp_cut": "hbp_build", "hbp_emit": "hbp_build",
                "regu2d_spmv": "regu2d"}
# C type of COL_T for each column-offset dtype of the Regu2D layout ("col" in the table above).
COL_TYPES = {"uint16": "unsigned short", "int32": "int"}

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


def value_type(dtype) -> str:
    """The C type for VALUE_T (``double`` or ``float``) of a values dtype."""
    name = np.dtype(dtype).name
    if name not in VALUE_TYPES:
        raise TypeError(f"CUDA SpMV supports float64 and float32 values, not {name}")
    return VALUE_TYPES[name]


def kernel_source(name: str, defines: dict) -> str:
    """The source a device compiles: ``#define KEY VALUE`` lines, then ``kernels/<name>.cu``.

    A ``#line`` directive between them keeps compiler and emulator messages at the file's own
    line numbers.
    """
    header = "".join(f"#define {key} {value}\n" for key, value in sorted(defines.items()))
    return f'{header}#line 1 "{name}.cu"\n' + (KERNEL_DIR / f"{name}.cu").read_text()


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
            check_array(f"{kernel} argument {name}", value, element)
            packed.append(value)
        else:
            info = np.iinfo(element)
            if not info.min <= int(value) <= info.max:
                raise OverflowError(f"{kernel} argument {name} = {value} does not fit {element.name}")
            packed.append(element.type(value))
    return tuple(packed)


def check_array(what: str, array, dtype: np.dtype, length: int | None = None, contiguous: bool = True) -> None:
    """A 1-D array of ``dtype`` (and ``length``), C-contiguous if ``contiguous``; else TypeError/ValueError."""
    if getattr(array, "dtype", None) != dtype:
        raise TypeError(f"{what} must have dtype {dtype.name}, not {getattr(array, 'dtype', type(array).__name__)}")
    if array.ndim != 1 or (contiguous and not array.flags.c_contiguous):
        raise ValueError(f"{what} must be a contiguous 1-D array, not shape {array.shape} with strides {array.strides}")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{what} has length {array.shape[0]}, expected {length}")


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


@dataclass(frozen=True)
class HBPSchedule:
    """The work allocation of ``hbp_spmv`` (the paper's mixed execution allocation, over row blocks).

    Warp w sums the row blocks [w * fixed_per_warp, (w + 1) * fixed_per_warp) (fixed part);
    the row blocks [queue_begin, n_rowblocks) form the queue that warps claim ``chunk`` at a
    time from an atomic counter (competitive part).
    """

    n_rowblocks: int
    warps: int
    chunk: int
    fixed_per_warp: int

    @property
    def queue_begin(self) -> int:
        return self.warps * self.fixed_per_warp

    @property
    def queue_size(self) -> int:
        return self.n_rowblocks - self.queue_begin


def hbp_schedule(n_rowblocks: int, warps: int, chunk: int, fixed_per_warp: int | None = None) -> HBPSchedule:
    """The allocation of ``n_rowblocks`` row blocks over ``warps`` warps, checked for int32 overflow.

    ``fixed_per_warp`` defaults to ``n_rowblocks // warps``: the authors' rule (each warp a fixed
    share as large as fits, the remainder competed for), so fewer than ``warps`` row blocks are
    competed for. 0 makes every row block competitive. Unlike the authors' code, a share of 0
    (fewer row blocks than warps) is fine (their kernel divides by it).
    """
    if warps < 1 or chunk < 1:
        raise ValueError(f"warps and chunk must be positive, not {warps} and {chunk}")
    if fixed_per_warp is None:
        fixed_per_warp = n_rowblocks // warps
    if fixed_per_warp < 0 or warps * fixed_per_warp > n_rowblocks:
        raise ValueError(f"fixed_per_warp={fixed_per_warp} x {warps} warps exceeds the {n_rowblocks} row blocks")
    # The queue counter ends at most one chunk per warp past the queue; it and the thread ids are int32.
    if n_rowblocks + warps * chunk > INT32_MAX or warps * WARP_SIZE > INT32_MAX:
        raise OverflowError(f"{n_rowblocks} row blocks with {warps} warps and chunk {chunk} overflow the int32 "
                            "counter")
    return HBPSchedule(n_rowblocks=n_rowblocks, warps=warps, chunk=chunk, fixed_per_warp=fixed_per_warp)


def hbp_launch(warps: int, threads_per_block: int, block_height: int, dtype) -> tuple[int, int]:
    """``(thread blocks, dynamic shared bytes per thread block)`` of the ``hbp_spmv`` launch.

    ``warps`` warps in thread blocks of ``threads_per_block`` threads (a multiple of 32, at
    most 1024, dividing ``warps * 32``); each warp holds one ``block_height``-entry y panel.
    """
    if not 0 < threads_per_block <= 1024 or threads_per_block % WARP_SIZE or warps % (threads_per_block // 32):
        raise ValueError(f"threads_per_block ({threads_per_block}) must be a multiple of 32, at most 1024, "
                         f"that divides warps x 32 ({warps * WARP_SIZE})")
    warps_per_block = threads_per_block // WARP_SIZE
    return warps // warps_per_block, warps_per_block * int(block_height) * np.dtype(dtype).itemsize


