"""Regu2D (its DP arrangement: tests/methods/spmv/test_ordering.py): the format and its CPU SpMV against scipy; the CUDA
kernel ``regu2d_spmv`` (through :class:`~methods.spmv.cuda.Regu2DCuda`) against scipy on a GPU and on the emulated CUDA
device, on the shared matrices, the generated edge cases and random matrices, with 32 to 1024 threads per block.

On the emulated device the kernel's result is also bitwise the CPU SpMV's: both sum each row block by block,
each block in column order, without FMA (the emulator compiles ISO C++, where GCC does not contract a * b + c,
and numba does not without fastmath); nvcc contracts to FMA, so on a GPU only the tolerance applies. The shared
matrices all fit the emulator (at most ~61k entries; the whole folder takes about 1.5 s per launch geometry
and dtype there), so none is left out."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.spmv import cuda, cuda_layouts
from methods.spmv.accuracy import componentwise_error
from methods.spmv.cuda_backends import backend
from methods.spmv.ordering import regular_arrangement
from methods.spmv.regu2d import Regu2DMatrix, adaptive_block_width, build_regu2d, preprocess_timed, spmv_regu2d
from reproduce.harness.data import synthetic
from tests.methods.spmv.cases import EDGE_CASES, TOLERANCE, VALUE_DTYPES, edge_matrix, matrix_files, shared_matrix

# ---------------------------------------------------------------- the format and its CPU SpMV


def _assert_spmv_matches_scipy(matrix: sp.csr_matrix, by_dtype: dict, rng: np.random.Generator) -> None:
    """CPU SpMV against scipy in fp64 (the CUDA kernel: the device tests at the end of this file)."""
    x = rng.uniform(-1.0, 1.0, matrix.shape[1])
    for dtype, layout in by_dtype.items():
        x_rounded = x.astype(dtype).astype(np.float64)
        matrix_rounded = matrix.astype(dtype).astype(np.float64)
        reference = matrix_rounded @ x_rounded
        y = spmv_regu2d(layout, x)
        assert y.dtype == np.dtype(dtype) and y.shape == (matrix.shape[0],)
        error = componentwise_error(matrix_rounded, x_rounded, y.astype(np.float64), reference)
        assert error <= TOLERANCE[dtype], f"{np.dtype(dtype).name}: error {error:.3g}"


def _assert_round_trip(matrix: sp.csr_matrix, layout: Regu2DMatrix) -> None:
    """to_csr gives back the canonical matrix exactly: same indptr, indices and (rounded) data."""
    back = layout.to_csr()
    canonical = sp.csr_matrix(matrix, copy=True)
    canonical.sum_duplicates()
    assert back.shape == canonical.shape and layout.nnz == canonical.nnz
    np.testing.assert_array_equal(back.indptr, canonical.indptr)
    np.testing.assert_array_equal(back.indices, canonical.indices)
    np.testing.assert_array_equal(back.data, canonical.data.astype(layout.dtype))


def _assert_layout_invariants(matrix: sp.csr_matrix, layout: Regu2DMatrix) -> None:
    """The contract of methods/spmv/regu2d.py: pointers, DP slices, padding, compressed indices."""
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    nrows, ncols = matrix.shape
    height, width, c = layout.block_height, layout.block_width, layout.slice_height
    if c <= 32:
        cuda_layouts.check_regu2d_layout(layout)
    assert layout.cols.dtype == (np.uint16 if width <= 65536 else np.int32) and layout.slot_row.dtype == np.uint16
    assert layout.panel_block_ptr.shape == (-(-nrows // height) + 1,)
    assert layout.panel_block_ptr[-1] == layout.n_blocks and layout.block_slice_ptr[-1] == layout.n_slices
    assert layout.slice_slot_ptr[-1] == layout.n_slots and layout.slice_nz_ptr[-1] == layout.n_stored
    assert int(layout.slot_len.sum()) == matrix.nnz == layout.nnz
    for pointer in (layout.block_slice_ptr, layout.slice_slot_ptr, layout.slice_nz_ptr):
        assert np.all(np.diff(pointer) >= 1), "every block, slice has at least one slice, slot, entry"
    assert np.all(np.diff(layout.panel_block_ptr) >= 0)
    triples = []
    for panel in range(layout.n_panels):
        blocks = range(layout.panel_block_ptr[panel], layout.panel_block_ptr[panel + 1])
        assert np.all(np.diff(layout.block_col[blocks.start:blocks.stop]) > 0), "blocks by ascending column block"
        for block in blocks:
            col0 = int(layout.block_col[block]) * width
            slices = range(layout.block_slice_ptr[block], layout.block_slice_ptr[block + 1])
            slots = slice(layout.slice_slot_ptr[slices.start], layout.slice_slot_ptr[slices.stop])
            rows, counts = layout.slot_row[slots].astype(np.int64), layout.slot_len[slots]
            assert np.unique(rows).size == rows.size and rows.max() < min(height, nrows - panel * height)
            in_row_order = np.argsort(rows)
            order, sizes = regular_arrangement(counts[in_row_order], layout.slice_overhead, c)
            np.testing.assert_array_equal(rows, rows[in_row_order][order], err_msg="slots sorted by count, stably")
            assert np.diff(layout.slice_slot_ptr[slices.start:slices.stop + 1]).tolist() == sizes.tolist(), "DP cuts"
            for s in slices:
                first, k = layout.slice_slot_ptr[s], layout.slice_slot_ptr[s + 1] - layout.slice_slot_ptr[s]
                lengths = layout.slot_len[first:first + k]
                steps = lengths[-1]
                assert layout.slice_nz_ptr[s + 1] - layout.slice_nz_ptr[s] == k * steps, "k x L, L the longest"
                grid = np.arange(steps)[:, None] * k + np.arange(k)[None, :] + layout.slice_nz_ptr[s]
                real = np.arange(steps)[:, None] < lengths[None, :]
                assert np.all(layout.values[grid[~real]] == 0) and np.all(layout.cols[grid[~real]] == 0), "padding"
                columns = col0 + layout.cols[grid].astype(np.int64)
                assert np.all(columns[real] < min(col0 + width, ncols))
                for lane in range(k):
                    lane_cols = columns[:lengths[lane], lane]
                    assert np.all(np.diff(lane_cols) > 0), "a lane holds its row's columns in order"
                    row = panel * height + int(layout.slot_row[first + lane])
                    triples += [(row, int(col), value) for col, value in
                                zip(lane_cols, layout.values[grid[:lengths[lane], lane]])]
    coo = matrix.tocoo()
    assert sorted(triples) == sorted(zip(coo.row.tolist(), coo.col.tolist(), coo.data.astype(layout.dtype).tolist()))


@pytest.mark.parametrize("file_name", matrix_files())
def test_shared_matrices(file_name, suitesparse_dir):
    path = suitesparse_dir / file_name
    if not path.is_file():
        pytest.skip(f"{file_name} is not in {suitesparse_dir}")
    matrix = shared_matrix(path)
    by_dtype = {dtype: build_regu2d(matrix, dtype=dtype) for dtype in TOLERANCE}
    _assert_spmv_matches_scipy(matrix, by_dtype, np.random.default_rng(0))
    _assert_spmv_matches_scipy(matrix, {np.float64: build_regu2d(matrix, 64, 1024, 32)}, np.random.default_rng(1))
    _assert_round_trip(matrix, by_dtype[np.float64])
    _assert_layout_invariants(matrix, by_dtype[np.float64])


@pytest.mark.parametrize(("spec", "block_height", "block_width"), [case[1:] for case in EDGE_CASES],
                         ids=[case[0] for case in EDGE_CASES])
@pytest.mark.parametrize("slice_height", [None, 3, 32])
def test_edge_cases(spec, block_height, block_width, slice_height):
    matrix = edge_matrix(spec)
    by_dtype = {dtype: build_regu2d(matrix, block_height, block_width, slice_height, dtype=dtype)
                for dtype in TOLERANCE}
    by_dtype_adaptive = {dtype: build_regu2d(matrix, slice_height=slice_height, dtype=dtype) for dtype in TOLERANCE}
    for layouts in (by_dtype, by_dtype_adaptive):
        _assert_spmv_matches_scipy(matrix, layouts, np.random.default_rng(2))
        _assert_round_trip(matrix, layouts[np.float64])
        _assert_layout_invariants(matrix, layouts[np.float64])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 80), st.integers(0, 80), st.floats(0.0, 1.0), st.sampled_from([1, 2, 3, 7, 32, 33, 512]),
       st.sampled_from([1, 2, 5, 16, 64, 4096]), st.sampled_from([1, 2, 8, 16, 32]), st.integers(0, 40),
       st.integers(0, 2**32 - 1))
def test_random_matrices_round_trip_and_spmv(nrows, ncols, density, block_height, block_width, slice_height,
                                             slice_overhead, seed):
    rng = np.random.default_rng(seed)
    matrix = sp.random(nrows, ncols, density=density, format="csr", rng=rng,
                       data_rvs=lambda n: rng.uniform(-1.0, 1.0, n))
    by_dtype = {dtype: build_regu2d(matrix, block_height, block_width, slice_height, slice_overhead, dtype)
                for dtype in TOLERANCE}
    _assert_round_trip(matrix, by_dtype[np.float64])
    _assert_round_trip(matrix, by_dtype[np.float32])
    _assert_spmv_matches_scipy(matrix, by_dtype, rng)
    _assert_layout_invariants(matrix, by_dtype[np.float64])


def test_adaptive_partitioning_and_index_compression():
    assert adaptive_block_width(10**6, 8) == 32768 and adaptive_block_width(10**6, 4) == 65536
    assert adaptive_block_width(300, 8) == 300 and adaptive_block_width(0, 8) == 1
    assert adaptive_block_width(10**6, 8, x_slice_bytes=8 * 1024) == 1024
    wide = synthetic.generate({"generator": "random_uniform", "nrows": 40, "ncols": 140_000, "density": 0.001},
                              np.random.default_rng(3))
    narrow = build_regu2d(wide)
    assert narrow.block_width == 32768 and narrow.cols.dtype == np.uint16 and np.unique(narrow.block_col).size == 5
    assert build_regu2d(wide, block_width=65536).cols.dtype == np.uint16
    one_block = build_regu2d(wide, block_width=140_000)
    assert one_block.cols.dtype == np.int32 and one_block.n_blocks == 1
    _assert_round_trip(wide, one_block)
    _assert_spmv_matches_scipy(wide, {np.float64: one_block}, np.random.default_rng(4))


def test_dp_slices_split_long_rows_off_and_pad_little():
    """31 rows of one nonzero and one of 100 in one block: the long row gets its own slice of 100 entries."""
    rows = np.r_[np.arange(32), np.full(99, 31)]
    cols = np.r_[np.arange(31), np.arange(100)]
    matrix = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(32, 100))
    layout = build_regu2d(matrix, slice_height=32, slice_overhead=32)
    assert np.diff(layout.slice_slot_ptr).tolist() == [31, 1] and layout.n_stored == 131 == layout.nnz
    full_slices = build_regu2d(matrix, slice_height=32, slice_overhead=10_000)
    assert full_slices.n_slices == 1 and full_slices.n_stored == 3200 and full_slices.padding_fraction > 0.95
    np.testing.assert_array_equal(spmv_regu2d(full_slices, np.ones(100)), matrix @ np.ones(100))


def test_bytes_per_nonzero_counts_every_array():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 20_000, "ncols": 50_000, "mean_row_length": 6},
                                np.random.default_rng(5))
    layout = build_regu2d(matrix)
    expected = (layout.n_stored * (8 + 2) + layout.n_slots * (2 + 4) + (layout.n_slices + 1) * (4 + 8)
                + (layout.n_blocks + 1) * 4 + layout.n_blocks * 4 + (layout.n_panels + 1) * 4)
    assert layout.nbytes() == expected
    assert layout.bytes_per_nonzero() == pytest.approx(expected / matrix.nnz)
    assert layout.bytes_per_nonzero() < 8 + 4 + 4 * (matrix.shape[0] + 1) / matrix.nnz, "smaller than CSR"
    assert np.isnan(build_regu2d(sp.csr_matrix((3, 3))).bytes_per_nonzero())


def test_results_do_not_depend_on_the_thread_count():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 6000, "ncols": 20000, "mean_row_length": 6},
                                np.random.default_rng(6))
    layout = build_regu2d(matrix)
    x = np.random.default_rng(7).uniform(-1.0, 1.0, matrix.shape[1])
    threads = numba.get_num_threads()
    try:
        results = []
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            results.append(spmv_regu2d(layout, x))
    finally:
        numba.set_num_threads(threads)
    for y in results[1:]:
        np.testing.assert_array_equal(y, results[0])
    out = np.empty(matrix.shape[0])
    assert spmv_regu2d(layout, x, out=out) is out


def test_preprocess_timed_reports_each_phase():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 2000, "ncols": 9000, "mean_row_length": 8},
                                np.random.default_rng(8))
    layout, seconds = preprocess_timed(matrix)
    assert set(seconds) == {"split", "reorder", "emit", "total"} and all(v >= 0 for v in seconds.values())
    assert seconds["total"] == pytest.approx(seconds["split"] + seconds["reorder"] + seconds["emit"])
    assert layout.slice_height == 8 and layout.slice_overhead == 8


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="real part"):
        build_regu2d(sp.csr_matrix(np.array([[1 + 1j]])))
    for bad in ({"block_height": 0}, {"block_height": 70_000}, {"block_width": 0}, {"slice_height": 0},
                {"slice_overhead": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_regu2d(sp.eye(3, format="csr"), **bad)
    with pytest.raises(TypeError):
        build_regu2d(np.eye(3))
    layout = build_regu2d(sp.eye(3, format="csr"))
    with pytest.raises(ValueError, match="expected"):
        spmv_regu2d(layout, np.ones(4))
    with pytest.raises(ValueError, match="out must have"):
        spmv_regu2d(layout, np.ones(3), out=np.empty(3, np.float32))


def test_kernel_check_rejects_slices_wider_than_a_warp():
    layout = build_regu2d(sp.csr_matrix(np.ones((64, 4))), slice_height=64)
    with pytest.raises(ValueError, match="slice_height <= 32"):
        cuda_layouts.check_regu2d_layout(layout)
    with pytest.raises(ValueError, match="slice_height <= 32"):
        cuda.Regu2DCuda(layout, device="cuda-emu")


# ---------------------------------------------------------------- the CUDA kernel, on a GPU and the emulated device


# A GPU (skipped without one) and the emulated CUDA device (always run).
DEVICES = [pytest.param("cuda", marks=pytest.mark.cuda), pytest.param("cuda-emu", marks=pytest.mark.cuda_emu)]
THREADS_PER_BLOCK = [32, 256, 1024]  # one warp for every slice of a panel, the default, the most a block has


def _check_kernel(matrix: sp.csr_matrix, layout: Regu2DMatrix, device: str, what: str, threads_per_block: int = 256,
                  seed: int = 9, repeat: bool | None = None) -> None:
    """Regu2DCuda against scipy (componentwise); on the emulated device also bitwise against the CPU SpMV.

    ``repeat`` (default: on the GPU only) calls it again into a NaN-filled ``out``, which must come back
    bitwise the same. On the emulated device the first result already lands in NaN-filled memory
    (its ``empty`` fills every byte with 0xff), so a row the kernel skips fails either way; the
    repeat there costs a second launch of a kernel that keeps no state between calls.
    """
    xp = backend(device)
    dtype = layout.dtype
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, matrix.shape[1]).astype(dtype)
    executor = cuda.Regu2DCuda(layout, threads_per_block=threads_per_block, device=device)
    x_device = xp.asarray(x)
    first = xp.asnumpy(executor(x_device))
    assert first.dtype == dtype and first.shape == (matrix.shape[0],)
    matrix_rounded = matrix.astype(dtype).astype(np.float64)
    reference = matrix_rounded @ x.astype(np.float64)
    error = componentwise_error(matrix_rounded, x.astype(np.float64), first, reference)
    assert error <= TOLERANCE[dtype.type], f"{what} {dtype.name} on {device}: componentwise error {error:.3g}"
    if device == "cuda-emu":
        np.testing.assert_array_equal(first, spmv_regu2d(layout, x), err_msg=f"{what}: emulated kernel vs CPU")
    if repeat if repeat is not None else device == "cuda":
        out = xp.asarray(np.full(matrix.shape[0], np.nan, dtype))
        assert executor(x_device, out=out) is out
        np.testing.assert_array_equal(xp.asnumpy(out), first, err_msg=f"{what} on {device}: repeated call differs")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("file_name", matrix_files())
def test_kernel_on_shared_matrices(file_name, dtype, device, suitesparse_dir):
    path = suitesparse_dir / file_name
    if not path.is_file():
        pytest.skip(f"{file_name} is not in {suitesparse_dir}")
    matrix = shared_matrix(path)
    _check_kernel(matrix, build_regu2d(matrix, slice_height=32, dtype=dtype), device, file_name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("spec", "block_height", "block_width"), [case[1:] for case in EDGE_CASES],
                         ids=[case[0] for case in EDGE_CASES])
def test_kernel_on_edge_cases(spec, block_height, block_width, dtype, device):
    matrix = edge_matrix(spec)
    for layout in (build_regu2d(matrix, block_height, block_width, 32, dtype=dtype),
                   build_regu2d(matrix, slice_height=7, dtype=dtype)):
        _check_kernel(matrix, layout, device, f"{block_height} x {block_width} slices of {layout.slice_height}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threads_per_block", THREADS_PER_BLOCK)
def test_kernel_launch_geometries(threads_per_block, device):
    """Panels of more slices than warps (32 threads), of fewer (1024), short panels and many column blocks."""
    cases = [("power_law", {"generator": "power_law", "nrows": 3000, "ncols": 9000, "mean_row_length": 10}, 512, 1024),
             ("panels_of_33", {"generator": "banded", "n": 300, "half_width": 40}, 33, 100),
             ("one_row_panels", {"generator": "random_uniform", "nrows": 20, "ncols": 500, "density": 0.1}, 1, 64)]
    for name, spec, block_height, block_width in cases:
        matrix = edge_matrix(spec)
        for dtype in TOLERANCE:
            layout = build_regu2d(matrix, block_height, block_width, 32, dtype=dtype)
            _check_kernel(matrix, layout, device, f"{name} {threads_per_block} threads", threads_per_block)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20, deadline=None)
@given(st.integers(0, 70), st.integers(0, 70), st.floats(0.0, 1.0), st.sampled_from([1, 2, 7, 32, 33, 512]),
       st.sampled_from([1, 5, 16, 4096, 70_000]), st.sampled_from([1, 3, 16, 32]), st.sampled_from(THREADS_PER_BLOCK),
       st.sampled_from(VALUE_DTYPES), st.integers(0, 2**32 - 1))
def test_kernel_on_random_matrices(device, nrows, ncols, density, block_height, block_width, slice_height,
                                   threads_per_block, dtype, seed):
    rng = np.random.default_rng(seed)
    matrix = sp.random(nrows, ncols, density=density, format="csr", rng=rng,
                       data_rvs=lambda n: rng.uniform(-1.0, 1.0, n))
    layout = build_regu2d(matrix, block_height, block_width, slice_height, dtype=dtype)
    _check_kernel(matrix, layout, device, f"{nrows} x {ncols} in {block_height} x {block_width}", threads_per_block,
                  seed, repeat=True)
