"""The CUDA SpMV kernels as the host sees them, for any device that runs them.

The kernels live in ``methods/spmv/kernels/*.cu``. This module holds what every executor and
device needs to launch them and nothing device-specific: :func:`kernel_source` (the
``#define`` lines of the compile-time parameters, then the file), the argument table
:data:`KERNEL_ARGUMENTS` that mirrors the ``.cu`` signatures (a CPU test parses the sources
and compares) and :func:`pack_arguments`, which puts every array and scalar into exactly the
type its signature declares; the layout checks that the kernels rely on; and HBP's work
allocation (:func:`hbp_schedule`) and launch geometry (:func:`hbp_launch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

    Every array must have its :data:`HBP_LAYOUT_DTYPES` dtype (the kernels read them as
    declared; nothing is cast), every pointer array its length, and every group 1 to 32
    slots: ``hbp_spmv`` gives slot q of a group to lane q, so a larger group would lose
    rows silently. Raises TypeError or ValueError naming the array.
    """
    dtype = np.dtype(hbp.values.dtype)
    value_type(dtype)
    for name, kind in HBP_LAYOUT_DTYPES.items():
        array = getattr(hbp, name)
        check_array(f"HBPMatrix.{name}", array, dtype if kind == "value" else np.dtype(kind), contiguous=False)
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


