"""The CUDA SpMV kernels and executors (methods/spmv/cuda*.py, methods/spmv/kernels/*.cu).

CPU tests (always run): the kernel sources compile for Orin, the RTX 4090 and H100/H200
(nvcc --ptx, and NVRTC as CuPy calls it, where present); the argument table matches the
``.cu`` signatures and the layout's dtypes; the modules import without CuPy or a GPU and
executors say what is missing; HBP's schedule splits the row blocks into fixed shares and a
queue; the layout checks catch contract violations.

Device tests, each run on two devices (the ``device`` parameter): ``"cuda"``, a GPU through
CuPy (``@pytest.mark.cuda``, skipped with a reason without one), and ``"cuda-emu"``, the
emulated CUDA device of :mod:`cuda_emu` that runs the same ``.cu`` kernels on the CPU
with every access bounds- and race-checked (``@pytest.mark.cuda_emu``, always run). Every
kernel (``csr_scalar``, ``csr_vector``, ``hbp_spmv`` over the hash, sort and
dp orderings, and cuSPARSE on the GPU) against scipy in fp64 (componentwise error <= 1e-12)
and fp32 (<= 1e-5): on every shared SuiteSparse matrix, on generated edge cases, on
hypothesis-generated matrices and over launch geometries (one block of 32 threads, the
authors' 256 x 32, one warp per block, more warps than work, several y panels per thread
block, past the 48 KB shared-memory opt-in); repeated HBP calls are identical (the queue
counter is zeroed every launch, docs/papers/hbp.md). ``regu2d_spmv`` is tested the same way in
test_regu2d.py.

Emulator limits. Measured on a 2-core machine, fp64, one call each: the largest shared matrix,
AG-Monien/crack (10,240 rows, 60,760 entries), takes 0.02 s in csr_scalar and regu2d, 0.04 s
in HBP and 0.12 s in csr_vector (one warp per row: 32 fibers and five shuffles per row). So on
"cuda-emu" a matrix of more than EMU_MAX_NNZ = 100,000 entries is skipped with a reason (none of
the shared folder's: the largest has ~61k after symmetric expansion); every shared matrix runs in
fp64 and fp32. On the emulator, repeated calls are checked for HBP only (the executor with state
between calls, its queue counter); results there land in memory that ``empty`` fills with NaN,
so a skipped row shows anyway. The GPU repeats every executor.
"""

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.errors import DeviceUnavailableError
from methods.spmv import cuda, cuda_kernels, cuda_layouts
from methods.spmv.accuracy import componentwise_error
from methods.spmv.cuda_backends import backend
from methods.spmv.hbp import ORDERINGS, build_hbp
from reproduce.harness.data import synthetic
from tests.methods.spmv.cases import TOLERANCE, VALUE_DTYPES, matrix_files, shared_matrix

ARCHES = ["87", "89", "90"]  # Jetson AGX Orin, RTX 4090, H100/H200
C_TYPES = {"int": "int32", "long long": "int64", "unsigned short": "uint16", "unsigned int": "uint32",
           "unsigned char": "uint8", "VALUE_T": "value", "COL_T": "col"}
# The emulated device's test limit (module docstring): above every shared matrix.
EMU_MAX_NNZ = 100_000
# Every device test runs on a GPU (skipped without one) and on the emulated device (always).
DEVICES = [pytest.param("cuda", marks=pytest.mark.cuda), pytest.param("cuda-emu", marks=pytest.mark.cuda_emu)]

# Edge cases (docs/papers/hbp.md): empty rows, one dense row, all zero, one column, rectangular,
# sizes that are not multiples of 32 / 512 / 4096, nrows a multiple of 512, several column blocks.
EDGE_CASES = {
    "empty_rows": {"generator": "with_empty_rows", "nrows": 600, "ncols": 300, "empty_fraction": 0.4},
    "dense_row": {"generator": "with_dense_row", "nrows": 100, "ncols": 5000},
    "all_zero": {"generator": "all_zero", "nrows": 7, "ncols": 3},
    "single_column": {"generator": "random_uniform", "nrows": 513, "ncols": 1, "density": 0.5},
    "odd_sizes": {"generator": "random_uniform", "nrows": 1031, "ncols": 4133, "density": 0.01},
    "rows_multiple_of_512": {"generator": "power_law", "nrows": 1024, "ncols": 9000, "mean_row_length": 12},
    "wide": {"generator": "random_uniform", "nrows": 33, "ncols": 20000, "density": 0.05},
}

# Launch geometries: name -> (CSR executor keywords, HBP executor keywords); None: not for that family.
GEOMETRIES = {
    # The executors' defaults: CSR 256 threads per block and enough blocks for one thread (warp)
    # per row; HBP the authors' 256 warps (8192 threads), 4 warps per thread block.
    "defaults": ({}, {}),
    "one_block_of_32": ({"blocks": 1, "threads_per_block": 32}, {"warps": 1, "threads_per_block": 32}),
    "authors_256x32": ({"blocks": 256, "threads_per_block": 32}, {"warps": 256, "threads_per_block": 32}),
    "one_warp_per_block": ({"threads_per_block": 32}, {"warps": 7, "chunk": 3, "threads_per_block": 32}),
    # Far more threads (warps) than rows (row blocks; HBP cuts its launch to them): all competed for, one at a time.
    "more_warps_than_work": ({"blocks": 64, "threads_per_block": 1024},
                             {"warps": 1024, "chunk": 1, "fixed_per_warp": 0}),
    # Several warps per thread block, each with its own y panel.
    "panels_per_block_64": ({"threads_per_block": 64}, {"warps": 64, "chunk": 1, "threads_per_block": 64,
                                                        "fixed_per_warp": 0}),
    # 32 panels of 512 fp64 rows: 128 KB per thread block, past the 48 KB shared-memory opt-in.
    "panels_per_block_1024": ({"threads_per_block": 1024}, {"warps": 64, "chunk": 3, "threads_per_block": 1024}),
}


def reference_layout(matrix: sp.csr_matrix, block_height: int = 512, block_width: int = 4096) -> SimpleNamespace:
    """Our HBP layout (methods/spmv/hbp.py's contract), rows kept in their original order, groups of 32.

    Written from the contract alone, independently of the real builder: a second layout the
    kernels must handle (each block's rows in their original order, cut into groups of 32
    consecutive ones, lanes longest first); slow (Python loops), for small matrices.
    """
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    nrows, ncols = matrix.shape
    row_block_ptr, block_col, block_nz_ptr, block_group_ptr, group_slot_ptr = [0], [], [0], [0], [0]
    group_nz_offset, slot_row, slot_last, cols, values = [], [], [], [], []
    for first_row in range(0, nrows, block_height):
        pieces = {}  # column block -> [(row - first_row, its columns in the block, their values)]
        for row in range(first_row, min(first_row + block_height, nrows)):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            row_cols, row_values = matrix.indices[start:end], matrix.data[start:end]
            for cb in np.unique(row_cols // block_width):
                inside = row_cols // block_width == cb
                pieces.setdefault(int(cb), []).append((row - first_row, row_cols[inside] - cb * block_width,
                                                       row_values[inside]))
        for cb in sorted(pieces):
            block_col.append(cb)
            for g in range(0, len(pieces[cb]), 32):
                group = sorted(pieces[cb][g:g + 32], key=lambda piece: -len(piece[1]))  # stable: longest first
                group_nz_offset.append(len(cols) - block_nz_ptr[-1])
                for t in range(len(group[0][1])):  # round t: element t of every lane that has one
                    for _, lane_cols, lane_values in group:
                        if t < len(lane_cols):
                            cols.append(lane_cols[t])
                            values.append(lane_values[t])
                for local_row, lane_cols, _ in group:
                    slot_row.append(local_row)
                    slot_last.append(len(lane_cols) - 1)
                group_slot_ptr.append(len(slot_row))
            block_nz_ptr.append(len(cols))
            block_group_ptr.append(len(group_slot_ptr) - 1)
        row_block_ptr.append(len(block_col))
    i32, u16 = np.int32, np.uint16
    return SimpleNamespace(
        shape=(nrows, ncols), block_height=block_height, block_width=block_width,
        row_block_ptr=np.array(row_block_ptr, i32), block_col=np.array(block_col, i32),
        block_nz_ptr=np.array(block_nz_ptr, np.int64), block_group_ptr=np.array(block_group_ptr, i32),
        group_slot_ptr=np.array(group_slot_ptr, i32), group_nz_offset=np.array(group_nz_offset, np.uint32),
        slot_row=np.array(slot_row, u16), slot_last=np.array(slot_last, u16), cols=np.array(cols, u16),
        values=np.array(values, matrix.dtype), n_slots=len(slot_row),
    )


def layouts_for(matrix: sp.csr_matrix, block_height: int = 512, block_width: int = 4096,
                reference: bool = True) -> dict:
    """The builder's hash / sort / dp layouts, and the reference layout if ``reference``."""
    layouts = {"reference": reference_layout(matrix, block_height, block_width)} if reference else {}
    for ordering in ORDERINGS:
        layouts[ordering] = build_hbp(matrix, ordering=ordering, block_height=block_height, block_width=block_width)
    return layouts


def edge_matrix(case: str, dtype=np.float64) -> sp.csr_matrix:
    return synthetic.generate(EDGE_CASES[case], np.random.default_rng(7)).astype(dtype)


def host(y) -> np.ndarray:
    """A device result (CuPy or emulated) as a NumPy array."""
    return y.get() if hasattr(y, "get") else np.asarray(y)


def assert_close(matrix, x, y, dtype, what: str) -> None:
    """y (on the host or a device) against scipy in fp64 on the same (possibly fp32) data."""
    y = host(y)
    dtype = np.dtype(dtype)
    assert y.dtype == dtype, f"{what}: result dtype {y.dtype}, expected {dtype.name}"
    assert y.shape == (matrix.shape[0],), f"{what}: result shape {y.shape}"
    reference = matrix.astype(np.float64) @ x.astype(np.float64)
    error = componentwise_error(matrix.astype(np.float64), x.astype(np.float64), y, reference)
    tolerance = TOLERANCE[dtype.type]
    assert error <= tolerance, f"{what}: componentwise error {error:.3g} > {tolerance}"


def skip_if_too_big_for_the_emulator(matrix, device: str) -> None:
    if device == "cuda-emu" and matrix.nnz > EMU_MAX_NNZ:
        pytest.skip(f"{matrix.nnz} entries: over the emulated device's test limit of {EMU_MAX_NNZ} (see the module)")


# ---------------------------------------------------------------- CPU: sources and argument table


def parse_signatures(text: str) -> dict[str, list[tuple[str, str]]]:
    """``extern "C" __global__`` kernels of a .cu source as {name: [(parameter, type)]} in the table's terms."""
    text = re.sub(r"//[^\n]*", "", text)
    signatures = {}
    for kernel, parameters in re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', text):
        parsed = []
        for parameter in parameters.split(","):
            words = [w for w in parameter.replace("*", " * ").split() if w not in ("const", "__restrict__")]
            pointer = "*" in words
            *type_words, name = [w for w in words if w != "*"]
            parsed.append((name, C_TYPES[" ".join(type_words)] + ("*" if pointer else "")))
        signatures[kernel] = parsed
    return signatures


def test_argument_table_matches_the_cu_signatures():
    found = {}
    for name in sorted(set(cuda_kernels.KERNEL_FILES.values())):
        found.update(parse_signatures((cuda_kernels.KERNEL_DIR / f"{name}.cu").read_text()))
    assert found == cuda_kernels.KERNEL_ARGUMENTS
    assert {k: cuda_kernels.KERNEL_FILES[k] for k in found} == cuda_kernels.KERNEL_FILES


def test_argument_table_matches_the_layout_dtypes():
    """The HBP kernel takes exactly the layout's arrays, in their dtypes and order; Regu2D's its layout's."""
    hbp_arrays = [(name, kind) for name, kind in cuda_kernels.KERNEL_ARGUMENTS["hbp_spmv"]
                  if name in cuda_layouts.HBP_LAYOUT_DTYPES]
    assert hbp_arrays == [(name, kind + "*") for name, kind in cuda_layouts.HBP_LAYOUT_DTYPES.items()]
    assert cuda_layouts.HBP_DEVICE_ARRAYS == tuple(cuda_layouts.HBP_LAYOUT_DTYPES)
    for name, kind in cuda_kernels.KERNEL_ARGUMENTS["regu2d_spmv"]:
        if name in cuda_layouts.REGU2D_LAYOUT_DTYPES:
            assert kind == cuda_layouts.REGU2D_LAYOUT_DTYPES[name] + "*", name


def test_builder_layout_has_the_kernel_dtypes(dtype):
    """methods/spmv/hbp.py's arrays have the contract's dtypes, which the kernel takes as they are (nothing is cast)."""
    matrix = edge_matrix("rows_multiple_of_512", dtype)
    for ordering in ORDERINGS:
        layout = build_hbp(matrix, ordering=ordering)
        cuda_layouts.check_hbp_layout(layout)
        for name, kind in cuda_layouts.HBP_LAYOUT_DTYPES.items():
            assert getattr(layout, name).dtype == np.dtype(dtype if kind == "value" else kind), (ordering, name)
        cuda_layouts.check_hbp_contents(layout)
        arrays = {name: getattr(layout, name) for name in cuda_layouts.HBP_DEVICE_ARRAYS}
        scalars = {"n_rowblocks": layout.n_rowblocks, "fixed_per_warp": 0, "nrows": matrix.shape[0],
                   "block_height": layout.block_height, "block_width": layout.block_width}
        packed = cuda_kernels.pack_arguments("hbp_spmv", {**scalars, **arrays}, dtype)
        assert [type(a) for a in packed[:5]] == [np.int32] * 5


def test_pack_arguments_checks_types_order_and_range():
    i32, i64 = np.zeros(3, np.int32), np.zeros(3, np.int64)
    values = np.zeros(3)
    pack = cuda_kernels.pack_arguments
    packed = pack("csr_scalar", {"nrows": 2, "row_ptr": i64, "cols": i32, "values": values}, "float64")
    assert isinstance(packed[0], np.int32) and packed[1] is i64
    with pytest.raises(TypeError, match="row_ptr must have dtype int64, not int32"):
        pack("csr_scalar", {"nrows": 2, "row_ptr": i32}, "float64")
    with pytest.raises(TypeError, match="values must have dtype float32"):
        pack("csr_scalar", {"nrows": 2, "row_ptr": i64, "cols": i32, "values": values}, "float32")
    with pytest.raises(ValueError, match="takes"):
        pack("csr_scalar", {"row_ptr": i64}, "float64")
    with pytest.raises(OverflowError, match="nrows"):
        pack("csr_scalar", {"nrows": 2**31}, "float64")
    with pytest.raises(ValueError, match="contiguous"):
        pack("csr_scalar", {"nrows": 2, "row_ptr": np.zeros(6, np.int64)[::2]}, "float64")
    with pytest.raises(TypeError, match="float64 and float32"):
        cuda_kernels.value_type(np.complex128)


def test_loader_prepends_defines():
    """The #define lines, then a #line directive (messages keep the file's own line numbers), then the file."""
    source = cuda_kernels.kernel_source("hbp", {"VALUE_T": "float", "CHUNK": 3})
    file_text = (cuda_kernels.KERNEL_DIR / "hbp.cu").read_text()
    assert source == f'#define CHUNK 3\n#define VALUE_T float\n#line 1 "hbp.cu"\n{file_text}'


COMPILE_CASES = [
    ("csr", {}),  # as .ci/check_kernels.sh compiles it
    ("csr", {"VALUE_T": "double"}),
    ("csr", {"VALUE_T": "float"}),
    ("hbp", {}),
    ("hbp", {"VALUE_T": "double", "CHUNK": 1}),
    ("hbp", {"VALUE_T": "float", "CHUNK": 4}),
    ("hbp_build", {}),
    ("hbp_build", {"VALUE_T": "float", "ORDERING": 1}),
    ("hbp_build", {"VALUE_T": "double", "ORDERING": 2}),
    ("regu2d", {}),
    ("regu2d", {"VALUE_T": "double", "COL_T": "unsigned short"}),
    ("regu2d", {"VALUE_T": "float", "COL_T": "int"}),
]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize(("name", "defines"), COMPILE_CASES)
def test_kernels_compile_with_nvcc(name, defines, arch, tmp_path):
    """The exact source the loader hands CuPy compiles warning-free to PTX (no GPU needed)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found: the CUDA compile check needs the CUDA toolkit (not a GPU)")
    source = tmp_path / f"{name}.cu"
    source.write_text(cuda_kernels.kernel_source(name, defines))
    ptx = tmp_path / f"{name}.ptx"
    result = subprocess.run(["nvcc", "--ptx", f"-arch=sm_{arch}", "-Werror", "all-warnings", "-o", str(ptx),
                             str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for kernel, file in cuda_kernels.KERNEL_FILES.items():
        if file == name:
            assert f".entry {kernel}(" in ptx.read_text()


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize(("name", "defines"), COMPILE_CASES)
def test_kernels_compile_with_nvrtc(name, defines, arch):
    """Compile as CuPy does (NVRTC, -arch=compute_XX, -ftz=true), where CuPy can load NVRTC."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - no CuPy, or no libnvrtc: nothing to check with
        pytest.skip(f"NVRTC not loadable here ({type(exc).__name__}); install cupy-cuda12x[ctk]")
    program = nvrtc.createProgram(cuda_kernels.kernel_source(name, defines), f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch=compute_{arch}", "-ftz=true"])
    except Exception:  # noqa: BLE001 - re-raised with the compiler's log
        pytest.fail(nvrtc.getProgramLog(program))
    finally:
        nvrtc.destroyProgram(program)


# ---------------------------------------------------------------- CPU: import and errors without a GPU


def test_module_imports_without_cupy():
    """... and without the harness: methods/ never imports reproduce/."""
    code = ("import sys; sys.modules['cupy'] = None; sys.modules['reproduce'] = None; import methods.spmv.cuda, "
            "methods.spmv.cuda_kernels, methods.spmv.cuda_layouts, methods.spmv.cuda_backends, methods.errors; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(cuda.__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_executor_without_cupy_says_what_to_install(monkeypatch):
    """The GPU backend imports CuPy when an executor is built (methods.spmv.cuda_backends), not at import."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    matrix = sp.csr_matrix(np.eye(3))
    layout = reference_layout(matrix)
    for make in (cuda.CsrScalarCuda, cuda.CsrVectorCuda, cuda.CsrCusparse, cuda.HBPCuda):
        with pytest.raises(DeviceUnavailableError, match="needs CuPy: install the 'gpu' extra.*cuda-emu"):
            make(layout if make is cuda.HBPCuda else matrix)
    # The emulated device needs no CuPy.
    x = np.ones(3)
    emulated = cuda.CsrScalarCuda(matrix, device="cuda-emu")
    np.testing.assert_array_equal(host(emulated(backend("cuda-emu").asarray(x))), x)


def test_harness_takes_a_missing_device_as_an_expected_failure(capsys):
    """The harness's DeviceError is the methods' DeviceUnavailableError too; the CLI prints either in one line."""
    from reproduce.harness import cli
    from reproduce.harness.errors import DeviceError, ReproError

    assert issubclass(DeviceError, ReproError) and issubclass(DeviceError, DeviceUnavailableError)

    def missing():
        raise DeviceUnavailableError("CUDA SpMV needs CuPy")

    assert cli._guarded(missing) == cli.EXIT_ERROR
    assert capsys.readouterr().err == "error: CUDA SpMV needs CuPy\n"


def test_executor_without_gpu_says_so():
    from reproduce.harness.device import cuda_device_count

    if cuda_device_count():
        pytest.skip("a CUDA GPU is visible: this checks the error on a machine without one")
    matrix = sp.csr_matrix(np.eye(3))
    for make in (cuda.CsrScalarCuda, cuda.CsrVectorCuda, cuda.CsrCusparse):
        with pytest.raises(DeviceUnavailableError, match="CuPy|CUDA GPU"):
            make(matrix)
    with pytest.raises(DeviceUnavailableError, match="CuPy|CUDA GPU"):
        cuda.HBPCuda(reference_layout(matrix))


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="cuda or cuda-emu, not 'gpu'"):
        cuda.CsrScalarCuda(sp.csr_matrix(np.eye(3)), device="gpu")


# ---------------------------------------------------------------- CPU: schedule and layout checks


SCHEDULES = [(0, 256, 10, None), (5, 256, 10, None), (1000, 256, 10, None), (1000, 256, 10, 0), (1000, 7, 3, 100),
             (257, 256, 1, None), (512, 256, 10, 2), (31, 1, 10, None)]


@pytest.mark.parametrize(("n_blocks", "warps", "chunk", "fixed"), SCHEDULES)
def test_schedule_splits_the_row_blocks_into_fixed_shares_and_a_queue(n_blocks, warps, chunk, fixed):
    """Warp w's fixed share and the queue tile [0, n_rowblocks); the kernel's run of it is checked on the devices."""
    schedule = cuda_kernels.hbp_schedule(n_blocks, warps, chunk, fixed)
    assert (schedule.n_rowblocks, schedule.warps, schedule.chunk) == (n_blocks, warps, chunk)
    assert schedule.fixed_per_warp == (n_blocks // warps if fixed is None else fixed)
    if fixed is None:
        assert 0 <= schedule.queue_size < warps  # the authors' rule: only the remainder competes
    shares = [range(w * schedule.fixed_per_warp, (w + 1) * schedule.fixed_per_warp) for w in range(warps)]
    queue = range(schedule.queue_begin, n_blocks)
    assert [b for share in shares for b in share] + list(queue) == list(range(n_blocks))
    assert schedule.queue_size == len(queue)


def test_launch_configuration():
    assert cuda_kernels.hbp_launch(256, 32, 512, np.float64) == (256, 4 * 1024)  # the authors': 256 x 32 threads
    assert cuda_kernels.hbp_launch(256, 128, 512, np.float32) == (64, 4 * 2 * 1024)
    assert cuda_kernels.hbp_launch(64, 64, 8192, np.float64) == (32, 2 * 64 * 1024)
    for threads in (0, 48, 2048, 96):  # 96: 3 warps do not divide 64 warps
        with pytest.raises(ValueError, match="multiple of 32"):
            cuda_kernels.hbp_launch(64, threads, 4096, np.float64)


def test_schedule_rejects_bad_parameters():
    with pytest.raises(ValueError, match="exceeds"):
        cuda_kernels.hbp_schedule(10, 4, 10, 3)
    with pytest.raises(ValueError, match="positive"):
        cuda_kernels.hbp_schedule(10, 0, 10)
    with pytest.raises(OverflowError, match="int32"):
        cuda_kernels.hbp_schedule(2**31 - 100, 256, 10)


def replaced(layout, **arrays) -> SimpleNamespace:
    """A copy of ``layout`` (an HBPMatrix or a reference layout) with some arrays replaced."""
    fields = {name: getattr(layout, name) for name in ("shape", "block_height", "block_width",
                                                       *cuda_layouts.HBP_LAYOUT_DTYPES)}
    return SimpleNamespace(**{**fields, **arrays})


def test_layout_check_catches_contract_violations():
    layout = reference_layout(edge_matrix("empty_rows"))
    cuda_layouts.check_hbp_layout(layout)
    built = build_hbp(edge_matrix("empty_rows"), "sort")
    cuda_layouts.check_hbp_layout(built)
    for name, wrong in (("slot_row", np.int32), ("cols", np.int32), ("group_nz_offset", np.int64),
                        ("block_nz_ptr", np.int32), ("slot_last", np.int16)):
        with pytest.raises(TypeError, match=f"HBPMatrix.{name} must have dtype"):
            cuda_layouts.check_hbp_layout(replaced(built, **{name: getattr(built, name).astype(wrong)}))
    with pytest.raises(TypeError, match="float64 and float32 values, not int64"):
        cuda_layouts.check_hbp_layout(replaced(built, values=built.values.astype(np.int64)))
    with pytest.raises(ValueError, match="slot_last has length"):
        cuda_layouts.check_hbp_layout(replaced(layout, slot_last=layout.slot_last[:-1]))
    with pytest.raises(ValueError, match="row_block_ptr has length"):
        cuda_layouts.check_hbp_layout(replaced(layout, row_block_ptr=layout.row_block_ptr[:-1]))
    with pytest.raises(ValueError, match="block size must be 1 to 65536"):
        cuda_layouts.check_hbp_layout(SimpleNamespace(**{**vars(replaced(layout)), "block_width": 65537}))
    # Group 0 of the reference layout has 32 slots (its first block has > 32 rows): move one more into it.
    assert layout.group_slot_ptr[1] == 32 and layout.block_group_ptr[1] > 1
    big_group = replaced(layout, group_slot_ptr=layout.group_slot_ptr.copy())
    big_group.group_slot_ptr[1] += 1
    with pytest.raises(ValueError, match="1 to 32 slots; found .* to 33"):
        cuda_layouts.check_hbp_layout(big_group)
    with pytest.raises(ValueError, match="1 to 32 slots"):
        cuda_layouts.check_hbp_contents(big_group)


def test_contents_check_rejects_what_the_layout_check_leaves_to_it():
    """What needs a pass over the slots or nonzeros: lane order, rows and columns inside their block, tiling."""
    layout = build_hbp(edge_matrix("empty_rows"), "hash", block_height=64, block_width=64)
    ptr = layout.group_slot_ptr
    group = next(g for g in range(layout.n_groups) if layout.slot_last[ptr[g]] > layout.slot_last[ptr[g + 1] - 1])
    shuffled = layout.slot_last.copy()
    shuffled[ptr[group]:ptr[group + 1]] = shuffled[ptr[group]:ptr[group + 1]][::-1]
    with pytest.raises(ValueError, match="row block .* longest first"):
        cuda_layouts.check_hbp_contents(replaced(layout, slot_last=shuffled))
    outside = layout.slot_row.copy()
    outside[-1] = layout.block_height
    with pytest.raises(ValueError, match="slot_row must lie in its row block"):
        cuda_layouts.check_hbp_contents(replaced(layout, slot_row=outside))
    wide = layout.cols.copy()
    wide[0] = layout.block_width
    with pytest.raises(ValueError, match="column .* must lie in its block"):
        cuda_layouts.check_hbp_contents(replaced(layout, cols=wide))
    shifted = layout.group_nz_offset.copy()
    shifted[1] += 1
    with pytest.raises(ValueError, match="must tile"):
        cuda_layouts.check_hbp_contents(replaced(layout, group_nz_offset=shifted))


CONTENT_CASES = [(case, block) for case in ("empty_rows", "dense_row", "single_column", "all_zero", "odd_sizes")
                 for block in ((512, 4096), (8, 16), (1, 1), (32, 7))]


@pytest.mark.parametrize(("case", "block"), CONTENT_CASES)
def test_contents_check_accepts_every_valid_layout(case, block):
    """The builder's layouts (each ordering) and the independent reference layout pass the whole check."""
    matrix = edge_matrix(case)
    if case == "odd_sizes":
        matrix = matrix[:301, :1033]  # still no multiple of a block side; a tenth of the nonzeros (Python loops)
    for layout in layouts_for(matrix, *block).values():
        cuda_layouts.check_hbp_contents(layout)


# ---------------------------------------------------------------- devices: a GPU and the emulated device


def standard_executors(matrix: sp.csr_matrix, layouts: dict, device: str, competitive: bool = False) -> dict:
    """name -> executor for every CUDA method on ``matrix`` (fp64 or fp32), HBP for each layout.

    ``competitive`` adds, per layout, HBP with every row block competed for and 32 warps per
    thread block (their y panels past the 48 KB opt-in at 512 fp64 rows).
    """
    executors = {
        "csr_scalar": cuda.CsrScalarCuda(matrix, device=device),
        "csr_scalar_authors_256x32": cuda.CsrScalarCuda(matrix, threads_per_block=32, blocks=256, device=device),
        "csr_vector": cuda.CsrVectorCuda(matrix, device=device),
    }
    if device == "cuda":
        executors["cusparse"] = cuda.CsrCusparse(matrix)  # the emulator has no cuSPARSE
    for name, layout in layouts.items():
        executors[f"hbp_{name}"] = cuda.HBPCuda(layout, device=device)
        if competitive:
            executors[f"hbp_{name}_competitive"] = cuda.HBPCuda(layout, warps=64, chunk=1, threads_per_block=1024,
                                                                fixed_per_warp=0, device=device)
    return executors


def geometry_executors(matrix: sp.csr_matrix, layouts: dict, device: str, geometry: str) -> dict:
    """The CSR kernels and HBP over each layout, launched as ``GEOMETRIES[geometry]`` says."""
    csr_keywords, hbp_keywords = GEOMETRIES[geometry]
    executors = {}
    if csr_keywords is not None:
        executors["csr_scalar"] = cuda.CsrScalarCuda(matrix, **csr_keywords, device=device)
        executors["csr_vector"] = cuda.CsrVectorCuda(matrix, **csr_keywords, device=device)
    if hbp_keywords is not None:
        for name, layout in layouts.items():
            executors[f"hbp_{name}"] = cuda.HBPCuda(layout, **hbp_keywords, device=device)
    return executors


def check_executors(matrix: sp.csr_matrix, executors: dict, device: str, dtype, what: str,
                    seed: int = 11) -> None:
    """Every executor against scipy, then (HBP always, the others on the GPU) a repeated call, bitwise.

    Before the repeated call ``out`` is filled with NaN, so a row or a row block that the second
    launch skips (a counter left drained) shows.
    """
    xp = backend(device)
    x = np.random.default_rng(seed).uniform(-1, 1, matrix.shape[1]).astype(dtype)
    x_device = xp.asarray(x)
    for name, executor in executors.items():
        first = host(executor(x_device))
        assert_close(matrix, x, first, dtype, f"{what} {name} on {device}")
        is_hbp = isinstance(executor, cuda.HBPCuda)
        if not (is_hbp or device == "cuda"):
            continue  # the emulated CSR kernels keep no state between calls; the time goes to other checks
        again = host(executor(x_device, out=xp.asarray(np.full(matrix.shape[0], np.nan, dtype))))
        if isinstance(executor, cuda.CsrCusparse):
            # cuSPARSE's default CSR algorithm (ALG1) does not promise bitwise-repeatable sums.
            assert_close(matrix, x, again, dtype, f"{what} {name} again")
        else:
            # Our kernels give every row one fixed summation order, whichever warp claims a block.
            assert np.array_equal(first, again), f"{what} {name} on {device}: repeated call differs"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("file_name", matrix_files())
def test_executors_match_scipy_on_suitesparse(file_name, dtype, device, suitesparse_dir):
    path = suitesparse_dir / file_name
    if not path.is_file():
        pytest.skip(f"{file_name} is not in {suitesparse_dir}")
    matrix = shared_matrix(path).astype(dtype)
    skip_if_too_big_for_the_emulator(matrix, device)
    layouts = layouts_for(matrix, reference=False)
    check_executors(matrix, standard_executors(matrix, layouts, device), device, dtype, file_name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_executors_match_scipy_on_edge_cases(case, dtype, device):
    matrix = edge_matrix(case, dtype)
    layouts = layouts_for(matrix)
    check_executors(matrix, standard_executors(matrix, layouts, device, competitive=True), device, dtype, case)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_launch_geometries(geometry, dtype, device):
    """Each geometry on a matrix of 6 stored 512 x 4096 blocks (each ordering) and one of >1000 8 x 16 blocks."""
    matrix = edge_matrix("rows_multiple_of_512", dtype)
    check_executors(matrix, geometry_executors(matrix, layouts_for(matrix, reference=False), device, geometry),
                    device, dtype, geometry)
    small = edge_matrix("odd_sizes", dtype)[:200, :300]
    small_layouts = {"hash_8x16": build_hbp(small, "hash", block_height=8, block_width=16)}
    check_executors(small, geometry_executors(small, small_layouts, device, geometry), device, dtype,
                    f"{geometry} small blocks")


@st.composite
def random_cases(draw):
    """A small random matrix, its dtype, an HBP block size and ordering, and a launch geometry."""
    nrows, ncols = draw(st.integers(0, 70)), draw(st.integers(0, 70))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from(VALUE_DTYPES))
    matrix = sp.random(nrows, ncols, density=density, format="csr", rng=rng,
                       data_rvs=lambda n: rng.uniform(-1.0, 1.0, n)).astype(dtype)
    block = (draw(st.sampled_from([1, 5, 32, 512])), draw(st.sampled_from([1, 7, 64, 4096])))
    return matrix, dtype, block, draw(st.sampled_from(ORDERINGS)), draw(st.sampled_from(sorted(GEOMETRIES))), seed


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20, deadline=None)
@given(case=random_cases())
def test_executors_match_scipy_on_random_matrices(device, case):
    matrix, dtype, (block_height, block_width), ordering, geometry, seed = case
    layouts = {ordering: build_hbp(matrix, ordering, block_height=block_height, block_width=block_width)}
    executors = geometry_executors(matrix, layouts, device, geometry)
    check_executors(matrix, executors, device, dtype, f"{geometry} {ordering} {block_height}x{block_width}", seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("block_height", "block_width", "threads_per_block", "nrows"), [
    (8, 16, 32, 300),  # ~3000 small blocks: the competitive queue and tile reloads
    (512, 8192, 32, 1024),  # one 64 KB tile per thread block: the shared-memory opt-in above 48 KB
    (512, 4096, 128, 1024),  # four 32 KB tiles per thread block
])
def test_hbp_block_sizes(block_height, block_width, threads_per_block, nrows, device):
    matrix = edge_matrix("rows_multiple_of_512")[:nrows]
    x = np.random.default_rng(12).standard_normal(matrix.shape[1])
    x_device = backend(device).asarray(x)
    for name, layout in layouts_for(matrix, block_height, block_width).items():
        executor = cuda.HBPCuda(layout, warps=256, threads_per_block=threads_per_block, device=device)
        assert_close(matrix, x, executor(x_device), "float64", f"{name} {block_height} x {block_width}")


def diagonal_blocks(n_blocks: int) -> sp.csr_matrix:
    """An n x n diagonal matrix (plus empty rows): with 1 x 1 blocks, n stored blocks of one slot each."""
    diagonal = np.arange(n_blocks)
    values = np.random.default_rng(n_blocks).uniform(1, 2, n_blocks)
    return sp.csr_matrix((values, (diagonal, diagonal)), shape=(n_blocks + 3, n_blocks + 2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n_blocks", "warps", "chunk", "fixed"), SCHEDULES)
def test_hbp_runs_every_row_block_of_the_schedule_once(n_blocks, warps, chunk, fixed, device):
    """The kernel sums each row block once, and claims the queue from a counter that starts at 0.

    With 1 x 1 blocks every row is a row block (the last three without nonzeros). Every warp's
    last claim starts past the queue, so the counter ends at ``(claims + warps) * chunk`` with
    ``claims = ceil(queue_size / chunk)``: more if it started above 0, and y (NaN-filled) keeps
    a NaN if a row block were skipped. On the emulated device the launch report also counts
    exactly one store instruction into y per row block (each has one row): none is summed twice.
    """
    import cuda_emu

    matrix = diagonal_blocks(n_blocks)
    layout = build_hbp(matrix, "hash", block_height=1, block_width=1)
    n_rowblocks = matrix.shape[0]
    executor = cuda.HBPCuda(layout, warps=warps, chunk=chunk, threads_per_block=32, fixed_per_warp=fixed,
                            device=device)
    x = np.random.default_rng(1).uniform(-1, 1, matrix.shape[1])
    xp = backend(device)
    with cuda_emu.recorded() as reports:
        y = host(executor(xp.asarray(x), out=xp.asarray(np.full(n_rowblocks, np.nan))))
    assert_close(matrix, x, y, "float64", f"{n_blocks} blocks")
    schedule = executor.schedule
    assert schedule.n_rowblocks == n_rowblocks and schedule.warps == min(warps, n_rowblocks)  # no idle warps
    claims = math.ceil(schedule.queue_size / chunk)
    assert int(host(executor.queue_counter)[0]) == (claims + schedule.warps) * chunk
    if device == "cuda-emu":
        spmv_reports = [r for r in reports if r.kernel == "hbp_spmv"]
        assert len(spmv_reports) == 1
        assert spmv_reports[0].arrays["y"].requests["store"] == n_rowblocks
        assert spmv_reports[0].arrays["queue_counter"].requests["atomic"] == claims + schedule.warps


@pytest.mark.parametrize("device", DEVICES)
def test_hbp_zeroes_the_queue_counter_every_call(device):
    """A counter left high (as the authors' warm-up left theirs, docs/papers/hbp.md) is zeroed by the next call."""
    matrix = edge_matrix("odd_sizes")[:300, :900]
    layout = build_hbp(matrix, "hash", block_height=8, block_width=16)
    executor = cuda.HBPCuda(layout, warps=8, chunk=3, fixed_per_warp=0, threads_per_block=32, device=device)
    assert executor.schedule.queue_size == layout.n_rowblocks == 38  # every row block competed for
    x = np.random.default_rng(2).uniform(-1, 1, matrix.shape[1])
    xp = backend(device)
    x_device = xp.asarray(x)
    first = host(executor(x_device))
    assert_close(matrix, x, first, "float64", "first call")
    final_counter = (math.ceil(executor.schedule.queue_size / 3) + 8) * 3
    for _ in range(2):
        assert int(host(executor.queue_counter)[0]) == final_counter
        executor.queue_counter.fill(2**30)  # a drained counter: without the reset no row block would be claimed
        again = host(executor(x_device, out=xp.asarray(np.full(matrix.shape[0], np.nan))))
        assert np.array_equal(first, again), "a call after the counter was left high differs"
    assert int(host(executor.queue_counter)[0]) == final_counter


@pytest.mark.parametrize("device", DEVICES)
def test_hbp_gives_the_same_bits_under_every_launch_geometry(dtype, device):
    """Each row sums its groups in storage order whichever warp claims its row block, so HBP's y does not
    depend on the launch (unlike atomics into y); on a GPU its time is also measured."""
    xp = backend(device)
    matrix = edge_matrix("rows_multiple_of_512", dtype)
    x = np.random.default_rng(13).uniform(-1, 1, matrix.shape[1]).astype(dtype)
    x_device = xp.asarray(x)
    for ordering in ORDERINGS:
        layout = build_hbp(matrix, ordering)
        results = {geometry: host(cuda.HBPCuda(layout, **keywords, device=device)(x_device))
                   for geometry, (_, keywords) in GEOMETRIES.items()}
        first = results["defaults"]
        assert_close(matrix, x, first, dtype, ordering)
        for geometry, y in results.items():
            assert np.array_equal(y, first), f"{ordering}: {geometry} differs from the default launch"
    if device == "cuda":
        from reproduce.harness.timing import time_cuda

        executor = cuda.HBPCuda(layout, device=device)
        timing = time_cuda(lambda: executor(x_device), repeats=5, warmup=2)
        assert timing.repeats == 5 and all(0 < s < 1 for s in timing.seconds)


@pytest.mark.parametrize("device", DEVICES)
def test_executors_check_their_vectors(device):
    xp = backend(device)
    matrix = edge_matrix("empty_rows")
    x = xp.asarray(np.ones(matrix.shape[1]))
    for executor in (cuda.CsrScalarCuda(matrix, device=device), cuda.CsrVectorCuda(matrix, device=device),
                     cuda.HBPCuda(build_hbp(matrix), device=device)):
        with pytest.raises(TypeError, match="x must have dtype float64"):
            executor(x.astype(np.float32))
        with pytest.raises(ValueError, match="length"):
            executor(x[:-1])
        with pytest.raises(ValueError, match="x is on"):
            executor(np.ones(matrix.shape[1]))  # a host array
        with pytest.raises(TypeError, match="out must have dtype float64"):
            executor(x, out=xp.asarray(np.ones(matrix.shape[0], np.float32)))
        out = xp.asarray(np.full(matrix.shape[0], np.nan))
        assert executor(x, out=out) is out
