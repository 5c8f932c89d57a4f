"""The CUDA SpMV kernels and executors (methods/spmv/cuda.py, methods/spmv/kernels/*.cu).

CPU tests (always run): the kernel sources compile for Orin, the RTX 4090 and H100/H200
(nvcc --ptx, and NVRTC as CuPy calls it, where present); the argument table matches the
``.cu`` signatures and the layout's dtypes; the module imports without CuPy or a GPU and
executors say what is missing; the HBP schedule covers every block once; and a NumPy
emulation of the HBP kernels reproduces scipy on our layout.

GPU tests (``@pytest.mark.cuda``): every executor against scipy on the shared SuiteSparse
matrices and on edge cases, fp64 and fp32, in several launch configurations, and repeated
calls (the queue counter is zeroed every launch, hbp.md section 5).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from methods.spmv import cuda
from methods.spmv.accuracy import componentwise_error
from reproduce.harness.data import synthetic
from reproduce.harness.errors import DeviceError
from reproduce.harness.timing import time_cuda

ARCHES = ["87", "89", "90"]  # Jetson AGX Orin, RTX 4090, H100/H200
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
ORDERINGS = ["hash", "sort", "dp"]
C_TYPES = {"int": "int32", "long long": "int64", "unsigned short": "uint16", "VALUE_T": "value", "COL_T": "col"}
NO_BUILDER = "methods/spmv/hbp.py (the layout builder) is not there yet"

# Edge cases (hbp.md section 7): empty rows, one dense row, all zero, one column, rectangular,
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


def reference_layout(matrix: sp.csr_matrix, block_height: int = 512, block_width: int = 4096) -> SimpleNamespace:
    """Our HBP layout (methods/spmv/hbp.py's contract), rows kept in their original order, groups of 32.

    Written from the contract alone, independently of the real builder, so the kernels can
    be checked whether or not that builder exists; slow (Python loops), for small matrices.
    """
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    nrows, ncols = matrix.shape
    block_row, block_col, slot_row, cols, values, nxt = [], [], [], [], [], []
    block_group_ptr, group_slot_ptr, group_nz_ptr = [0], [0], [0]
    row_slots = [[] for _ in range(nrows)]
    for first_row in range(0, nrows, block_height):
        pieces = {}  # column block -> [(row, its columns in the block, their values)]
        for row in range(first_row, min(first_row + block_height, nrows)):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            row_cols, row_values = matrix.indices[start:end], matrix.data[start:end]
            for cb in np.unique(row_cols // block_width):
                inside = row_cols // block_width == cb
                pieces.setdefault(int(cb), []).append((row, row_cols[inside], row_values[inside]))
        for cb in sorted(pieces):
            block_row.append(first_row // block_height)
            block_col.append(cb)
            for g in range(0, len(pieces[cb]), 32):
                group = pieces[cb][g:g + 32]
                lengths = [len(c) for _, c, _ in group]
                position, end = {}, len(cols)
                for t in range(max(lengths)):  # round t: element t of every lane that has one
                    for lane, length in enumerate(lengths):
                        if t < length:
                            position[lane, t] = end
                            end += 1
                cols.extend([0] * (end - len(cols)))
                values.extend([0.0] * (end - len(values)))
                nxt.extend([0] * (end - len(nxt)))
                for (lane, t), k in position.items():
                    cols[k] = group[lane][1][t]
                    values[k] = group[lane][2][t]
                    nxt[k] = position[lane, t + 1] - k if t + 1 < lengths[lane] else -1
                for row, _, _ in group:
                    row_slots[row].append(len(slot_row))
                    slot_row.append(row)
                group_slot_ptr.append(len(slot_row))
                group_nz_ptr.append(len(cols))
            block_group_ptr.append(len(group_slot_ptr) - 1)
    merge_ptr = np.zeros(nrows + 1, dtype=np.int64)
    merge_ptr[1:] = np.cumsum([len(s) for s in row_slots])
    merge_slot = [s for slots in row_slots for s in slots]
    i32 = np.int32
    return SimpleNamespace(
        shape=(nrows, ncols), block_height=block_height, block_width=block_width,
        block_row=np.array(block_row, i32), block_col=np.array(block_col, i32),
        block_group_ptr=np.array(block_group_ptr, i32), group_slot_ptr=np.array(group_slot_ptr, i32),
        group_nz_ptr=np.array(group_nz_ptr, np.int64), slot_row=np.array(slot_row, i32),
        cols=np.array(cols, i32), values=np.array(values, matrix.dtype), next=np.array(nxt, i32),
        merge_ptr=merge_ptr, merge_slot=np.array(merge_slot, i32),
    )


def layouts_for(matrix: sp.csr_matrix, block_height: int = 512, block_width: int = 4096) -> dict:
    """The reference layout, plus the builder's hash / sort / dp layouts once methods/spmv/hbp.py exists."""
    layouts = {"reference": reference_layout(matrix, block_height, block_width)}
    try:
        from methods.spmv.hbp import build_hbp
    except ImportError:
        return layouts  # the reference layout alone still exercises the kernels
    for ordering in ORDERINGS:
        layouts[ordering] = build_hbp(matrix, ordering=ordering, block_height=block_height, block_width=block_width)
    return layouts


def edge_matrix(case: str, dtype: str = "float64") -> sp.csr_matrix:
    return synthetic.generate(EDGE_CASES[case], np.random.default_rng(7)).astype(dtype)


def suitesparse_matrices(folder: Path) -> list[tuple[str, sp.csr_matrix]]:
    """The real-valued shared SuiteSparse matrices as float64 CSR (complex ones left out)."""
    from reproduce.harness.data.suitesparse import load_matrix_file

    found = []
    for path in sorted(folder.glob("*.mtx")):
        matrix, source = load_matrix_file(path)
        if not np.iscomplexobj(matrix.data):
            found.append((source.name, matrix.astype(np.float64)))
    assert found, f"no real matrices in {folder}"
    return found


def assert_close(matrix, x, y, dtype: str, what: str) -> None:
    """y (NumPy or CuPy) against scipy in fp64 on the same (possibly fp32) data."""
    y = y.get() if hasattr(y, "get") else y
    assert y.dtype == np.dtype(dtype), f"{what}: result dtype {y.dtype}, expected {dtype}"
    reference = matrix.astype(np.float64) @ x.astype(np.float64)
    error = componentwise_error(matrix.astype(np.float64), x.astype(np.float64), y, reference)
    assert error <= TOLERANCE[dtype], f"{what}: componentwise error {error:.3g} > {TOLERANCE[dtype]}"


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
    for name in sorted(set(cuda.KERNEL_FILES.values())):
        found.update(parse_signatures((cuda.KERNEL_DIR / f"{name}.cu").read_text()))
    assert found == cuda.KERNEL_ARGUMENTS
    assert {k: cuda.KERNEL_FILES[k] for k in found} == cuda.KERNEL_FILES


def test_argument_table_matches_the_layout_dtypes():
    for kernel in ("hbp_spmv", "hbp_merge"):
        for name, kind in cuda.KERNEL_ARGUMENTS[kernel]:
            if name in cuda.HBP_LAYOUT_DTYPES:
                assert kind == cuda.HBP_LAYOUT_DTYPES[name] + "*", (kernel, name)
    assert set(cuda.HBP_DEVICE_ARRAYS) <= set(cuda.HBP_LAYOUT_DTYPES)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_builder_layout_has_the_kernel_dtypes(dtype):
    """methods/spmv/hbp.py's arrays have exactly the dtypes the kernels declare (nothing is cast)."""
    hbp_module = pytest.importorskip("methods.spmv.hbp", reason=NO_BUILDER)
    matrix = edge_matrix("rows_multiple_of_512", dtype)
    for ordering in ORDERINGS:
        layout = hbp_module.build_hbp(matrix, ordering=ordering)
        cuda.check_hbp_layout(layout)
        assert layout.values.dtype == np.dtype(dtype), ordering
        arrays = {name: np.ascontiguousarray(getattr(layout, name)) for name, _ in cuda.KERNEL_ARGUMENTS["hbp_spmv"]
                  if name in cuda.HBP_LAYOUT_DTYPES}
        scalars = {"n_blocks": len(layout.block_col), "fixed_per_warp": 0, "ncols": matrix.shape[1]}
        packed = cuda.pack_arguments("hbp_spmv", {**scalars, **arrays}, dtype)
        assert [type(a) for a in packed[:3]] == [np.int32] * 3


def test_pack_arguments_checks_types_order_and_range():
    i32, i64 = np.zeros(3, np.int32), np.zeros(3, np.int64)
    values = np.zeros(3)
    packed = cuda.pack_arguments("csr_scalar", {"nrows": 2, "row_ptr": i64, "cols": i32, "values": values}, "float64")
    assert isinstance(packed[0], np.int32) and packed[1] is i64
    with pytest.raises(TypeError, match="row_ptr must have dtype int64, not int32"):
        cuda.pack_arguments("csr_scalar", {"nrows": 2, "row_ptr": i32}, "float64")
    with pytest.raises(TypeError, match="values must have dtype float32"):
        cuda.pack_arguments("csr_scalar", {"nrows": 2, "row_ptr": i64, "cols": i32, "values": values}, "float32")
    with pytest.raises(ValueError, match="takes"):
        cuda.pack_arguments("csr_scalar", {"row_ptr": i64}, "float64")
    with pytest.raises(OverflowError, match="nrows"):
        cuda.pack_arguments("csr_scalar", {"nrows": 2**31}, "float64")
    with pytest.raises(ValueError, match="contiguous"):
        cuda.pack_arguments("csr_scalar", {"nrows": 2, "row_ptr": np.zeros(6, np.int64)[::2]}, "float64")
    with pytest.raises(TypeError, match="float64 and float32"):
        cuda.value_type(np.complex128)


def test_loader_prepends_defines():
    source = cuda.kernel_source("hbp", {"VALUE_T": "float", "BLOCK_WIDTH": 1024, "CHUNK": 3})
    assert source.startswith("#define BLOCK_WIDTH 1024\n#define CHUNK 3\n#define VALUE_T float\n")
    assert source.endswith((cuda.KERNEL_DIR / "hbp.cu").read_text())


COMPILE_CASES = [
    ("csr", {}),  # as .ci/check_kernels.sh compiles it
    ("csr", {"VALUE_T": "double"}),
    ("csr", {"VALUE_T": "float"}),
    ("hbp", {}),
    ("hbp", {"VALUE_T": "double", "BLOCK_WIDTH": 4096, "CHUNK": 10}),
    ("hbp", {"VALUE_T": "float", "BLOCK_WIDTH": 1000, "CHUNK": 1}),
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
    source.write_text(cuda.kernel_source(name, defines))
    ptx = tmp_path / f"{name}.ptx"
    result = subprocess.run(["nvcc", "--ptx", f"-arch=sm_{arch}", "-Werror", "all-warnings", "-o", str(ptx),
                             str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for kernel, file in cuda.KERNEL_FILES.items():
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
    program = nvrtc.createProgram(cuda.kernel_source(name, defines), f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch=compute_{arch}", "-ftz=true"])
    except Exception:  # noqa: BLE001 - re-raised with the compiler's log
        pytest.fail(nvrtc.getProgramLog(program))
    finally:
        nvrtc.destroyProgram(program)


# ---------------------------------------------------------------- CPU: import and errors without a GPU


def test_module_imports_without_cupy():
    code = "import sys; sys.modules['cupy'] = None; import methods.spmv.cuda; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(cuda.__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_executor_without_cupy_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    matrix = sp.csr_matrix(np.eye(3))
    for make in (cuda.CsrScalarCuda, cuda.CsrVectorCuda, cuda.CsrCusparse):
        with pytest.raises(DeviceError, match="install the 'gpu' extra"):
            make(matrix)
    with pytest.raises(DeviceError, match="needs CuPy"):
        cuda.HBPCuda(reference_layout(matrix))


def test_executor_without_gpu_says_so():
    from reproduce.harness.device import cuda_device_count

    if cuda_device_count():
        pytest.skip("a CUDA GPU is visible: this checks the error on a machine without one")
    matrix = sp.csr_matrix(np.eye(3))
    for make in (cuda.CsrScalarCuda, cuda.CsrVectorCuda, cuda.CsrCusparse):
        with pytest.raises(DeviceError, match="CuPy|CUDA GPU"):
            make(matrix)
    with pytest.raises(DeviceError, match="CuPy|CUDA GPU"):
        cuda.HBPCuda(reference_layout(matrix))


# ---------------------------------------------------------------- CPU: schedule and kernel emulation


@pytest.mark.parametrize(("n_blocks", "warps", "chunk", "fixed"), [
    (0, 256, 10, None), (5, 256, 10, None), (1000, 256, 10, None), (1000, 256, 10, 0), (1000, 7, 3, 100),
    (257, 256, 1, None), (512, 256, 10, 2), (31, 1, 10, None),
])
def test_schedule_processes_every_block_once(n_blocks, warps, chunk, fixed):
    schedule = cuda.hbp_schedule(n_blocks, warps, chunk, fixed)
    assert schedule.fixed_per_warp == (n_blocks // warps if fixed is None else fixed)
    if fixed is None:
        assert 0 <= schedule.queue_size < warps  # the authors' rule: only the remainder competes
    order = cuda.warp_block_order(schedule)
    assert len(order) == warps
    assert sorted(b for blocks in order for b in blocks) == list(range(n_blocks))
    for w, blocks in enumerate(order):
        share = list(range(w * schedule.fixed_per_warp, (w + 1) * schedule.fixed_per_warp))
        assert blocks[:len(share)] == share


def test_launch_configuration():
    assert cuda.hbp_launch(256, 32, 4096, np.float64) == (256, 32 * 1024)  # the authors': 256 x 32 threads
    assert cuda.hbp_launch(256, 128, 4096, np.float32) == (64, 4 * 16 * 1024)
    assert cuda.hbp_launch(64, 64, 8192, np.float64) == (32, 2 * 64 * 1024)
    for threads in (0, 48, 2048, 96):  # 96: 3 warps do not divide 64 warps
        with pytest.raises(ValueError, match="multiple of 32"):
            cuda.hbp_launch(64, threads, 4096, np.float64)


def test_schedule_rejects_bad_parameters():
    with pytest.raises(ValueError, match="exceeds"):
        cuda.hbp_schedule(10, 4, 10, 3)
    with pytest.raises(ValueError, match="positive"):
        cuda.hbp_schedule(10, 0, 10)
    with pytest.raises(OverflowError, match="int32"):
        cuda.hbp_schedule(2**31 - 100, 256, 10)


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_emulated_kernels_match_scipy_on_edge_cases(case, dtype):
    matrix = edge_matrix(case, dtype)
    x = np.random.default_rng(3).uniform(-1, 1, matrix.shape[1]).astype(dtype)
    for name, layout in layouts_for(matrix).items():
        for warps, chunk, fixed in [(256, 10, None), (3, 2, None), (4, 1, 0)]:
            partial, y = cuda.emulate_hbp(layout, x, warps=warps, chunk=chunk, fixed_per_warp=fixed)
            assert not np.isnan(partial).any()
            assert_close(matrix, x, y, dtype, f"{case} {name} warps={warps}")


def test_emulated_kernels_with_small_blocks():
    """Many row and column blocks (block sizes 8 x 16), groups cut short at block ends."""
    matrix = edge_matrix("odd_sizes")[:200, :300]
    x = np.random.default_rng(4).standard_normal(300)
    for name, layout in layouts_for(matrix, block_height=8, block_width=16).items():
        assert len(layout.block_col) > 100
        _, y = cuda.emulate_hbp(layout, x, warps=5, chunk=3)
        assert_close(matrix, x, y, "float64", f"{name} 8 x 16 blocks")


def test_emulated_kernels_on_the_builder_layout(suitesparse_dir):
    hbp_module = pytest.importorskip("methods.spmv.hbp", reason=NO_BUILDER)
    for name, matrix in suitesparse_matrices(suitesparse_dir):
        if matrix.nnz > 20000:
            continue  # the emulation is a Python loop
        x = np.random.default_rng(5).standard_normal(matrix.shape[1])
        for ordering in ORDERINGS:
            _, y = cuda.emulate_hbp(hbp_module.build_hbp(matrix, ordering=ordering), x)
            assert_close(matrix, x, y, "float64", f"{name} {ordering}")


def test_layout_check_catches_contract_violations():
    layout = reference_layout(edge_matrix("empty_rows"))
    cuda.check_hbp_layout(layout)
    wrong_dtype = SimpleNamespace(**{**vars(layout), "group_nz_ptr": layout.group_nz_ptr.astype(np.int32)})
    with pytest.raises(TypeError, match="group_nz_ptr must have dtype int64"):
        cuda.check_hbp_layout(wrong_dtype)
    short = SimpleNamespace(**{**vars(layout), "merge_ptr": layout.merge_ptr[:-1]})
    with pytest.raises(ValueError, match="merge_ptr has length"):
        cuda.check_hbp_layout(short)
    big_group = SimpleNamespace(**{**vars(layout), "group_slot_ptr": layout.group_slot_ptr.copy()})
    big_group.group_slot_ptr[1] += 1  # group 0 gets 33 slots
    with pytest.raises(ValueError, match="1 to 32 slots"):
        cuda.check_hbp_layout(big_group)


# ---------------------------------------------------------------- GPU


def gpu_executors(matrix: sp.csr_matrix, layouts: dict) -> dict:
    """name -> executor for every CUDA method on ``matrix`` (fp64 or fp32), HBP for each layout."""
    import cupyx.scipy.sparse

    on_gpu = cupyx.scipy.sparse.csr_matrix(matrix)
    executors = {
        "csr_scalar": cuda.CsrScalarCuda(on_gpu),
        "csr_scalar_paper_launch": cuda.CsrScalarCuda(on_gpu, threads_per_block=32, blocks=256),
        "csr_vector": cuda.CsrVectorCuda(on_gpu),
        "cusparse": cuda.CsrCusparse(on_gpu),
    }
    for name, layout in layouts.items():
        executors[f"hbp_{name}"] = cuda.HBPCuda(layout)
        # All blocks competed for, 2 warps per thread block (64 KB fp64 tiles: the opt-in above 48 KB).
        executors[f"hbp_{name}_competitive"] = cuda.HBPCuda(layout, warps=64, chunk=1, threads_per_block=64,
                                                            fixed_per_warp=0)
    return executors


def check_on_gpu(matrix: sp.csr_matrix, layouts: dict, dtype: str, what: str) -> None:
    import cupy

    x = np.random.default_rng(11).uniform(-1, 1, matrix.shape[1]).astype(dtype)
    x_gpu = cupy.asarray(x)
    for name, executor in gpu_executors(matrix, layouts).items():
        first = executor(x_gpu)
        assert_close(matrix, x, first, dtype, f"{what} {name}")
        if isinstance(executor, cuda.HBPCuda):
            executor.partial.fill(np.nan)  # a block skipped by a drained counter would leave NaN
        again = executor(x_gpu, out=cupy.full(matrix.shape[0], np.nan, dtype=dtype))
        if isinstance(executor, cuda.CsrCusparse):
            # cuSPARSE's default CSR algorithm (ALG1) does not promise bitwise-repeatable sums.
            assert_close(matrix, x, again, dtype, f"{what} {name} again")
        else:
            # Our kernels give every row one fixed summation order, whichever warp claims a block.
            assert np.array_equal(first.get(), again.get()), f"{what} {name}: repeated call differs"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_executors_match_scipy_on_suitesparse(suitesparse_dir, dtype):
    hbp_module = pytest.importorskip("methods.spmv.hbp", reason=NO_BUILDER)
    for name, matrix in suitesparse_matrices(suitesparse_dir):
        matrix = matrix.astype(dtype)
        layouts = {ordering: hbp_module.build_hbp(matrix, ordering=ordering) for ordering in ORDERINGS}
        check_on_gpu(matrix, layouts, dtype, name)


@pytest.mark.cuda
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_executors_match_scipy_on_edge_cases(case, dtype):
    matrix = edge_matrix(case, dtype)
    check_on_gpu(matrix, layouts_for(matrix), dtype, case)


@pytest.mark.cuda
@pytest.mark.parametrize(("block_height", "block_width", "threads_per_block"), [
    (8, 16, 32),  # many small blocks: the competitive queue and tile reloads
    (512, 8192, 32),  # one 64 KB tile per thread block: the shared-memory opt-in above 48 KB
])
def test_gpu_hbp_block_sizes(block_height, block_width, threads_per_block):
    import cupy

    matrix = edge_matrix("rows_multiple_of_512")
    x = np.random.default_rng(12).standard_normal(matrix.shape[1])
    for name, layout in layouts_for(matrix, block_height, block_width).items():
        executor = cuda.HBPCuda(layout, warps=256, threads_per_block=threads_per_block)
        assert_close(matrix, x, executor(cupy.asarray(x)), "float64", f"{name} {block_height} x {block_width}")


@pytest.mark.cuda
def test_gpu_spmv_and_merge_separately_and_timing():
    import cupy

    matrix = edge_matrix("rows_multiple_of_512")
    executor = cuda.HBPCuda(reference_layout(matrix))
    x = cupy.asarray(np.random.default_rng(13).standard_normal(matrix.shape[1]))
    y = executor(x)
    partial = executor.spmv_only(x).copy()
    expected_partial, _ = cuda.emulate_hbp(reference_layout(matrix), x.get())
    np.testing.assert_allclose(partial.get(), expected_partial, rtol=1e-10, atol=1e-12)  # FMA vs NumPy
    assert np.array_equal(executor.merge_only().get(), y.get())
    timing = time_cuda(lambda: executor(x), repeats=5, warmup=2)
    assert timing.repeats == 5 and all(0 < s < 1 for s in timing.seconds)
    with pytest.raises(TypeError, match="x must have dtype float64"):
        executor(x.astype(cupy.float32))
    with pytest.raises(ValueError, match="length"):
        executor(x[:-1])
