"""The CUDA SpMV kernels as the host sees them, for any device that runs them.

The kernels live in ``methods/spmv/kernels/*.cu``. This module holds what every executor and
device needs to launch them and nothing device-specific: :func:`kernel_source` (the
``#define`` lines of the compile-time parameters, then the file), the argument table
:data:`KERNEL_ARGUMENTS` that mirrors the ``.cu`` signatures (a CPU test parses the sources
and compares) and :func:`pack_arguments`, which puts every array and scalar into exactly the
type its signature declares; and HBP's work allocation (:func:`hbp_schedule`) and launch
geometry (:func:`hbp_launch`). The layouts the kernels read, and their checks, are in
:mod:`methods.spmv.cuda_layouts`.
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


