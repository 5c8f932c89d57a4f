"""HBP layout, preprocessing and CPU SpMV: against scipy, a naive hash placement and the layout contract."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.spmv.accuracy import componentwise_error
from methods.spmv.hbp import ORDERINGS, WARP_SIZE, build_hbp, hash_slot_order, preprocess_timed
from methods.spmv.hbp_cpu import HBPCpuExecutor, spmv_hbp, spmv_hbp_serial
from methods.spmv.regu2d import regular_arrangement
from reproduce.harness.data import synthetic
from tests.methods.spmv_cases import EDGE_CASES, TOLERANCE, edge_matrix, matrix_files, shared_matrix


def _assert_spmv_matches_scipy(matrix: sp.csr_matrix, hbp_by_dtype: dict, rng: np.random.Generator) -> None:
    """Serial reference and threaded executor against scipy, fp64 and fp32 (error vs an fp64 reference)."""
    x = rng.uniform(-1.0, 1.0, matrix.shape[1])
    for dtype, hbp in hbp_by_dtype.items():
        x_rounded = x.astype(dtype).astype(np.float64)
        matrix_rounded = matrix.astype(dtype).astype(np.float64)
        reference = matrix_rounded @ x_rounded
        with HBPCpuExecutor(hbp, threads=2, fixed_fraction=0.5, chunk_blocks=3) as executor:
            results = {"executor": executor(x), "serial": spmv_hbp_serial(hbp, x)}
        for name, y in results.items():
            assert y.dtype == np.dtype(dtype) and y.shape == (matrix.shape[0],)
            error = componentwise_error(matrix_rounded, x_rounded, y.astype(np.float64), reference)
            assert error <= TOLERANCE[dtype], f"{name} {np.dtype(dtype).name}: error {error:.3g}"


def _assert_round_trip(matrix: sp.csr_matrix, hbp) -> None:
    """to_csr gives back the canonical matrix exactly: same indptr, indices and (rounded) data."""
    back = hbp.to_csr()
    canonical = sp.csr_matrix(matrix, copy=True)
    canonical.sum_duplicates()
    assert back.shape == canonical.shape
    np.testing.assert_array_equal(back.indptr, canonical.indptr)
    np.testing.assert_array_equal(back.indices, canonical.indices)
    np.testing.assert_array_equal(back.data, canonical.data.astype(hbp.dtype))


def _interleaved_positions(lengths: list[int]) -> list[list[int]]:
    """Offsets of each lane's elements when rounds emit element t of every lane longer than t."""
    positions = [[] for _ in lengths]
    offset = 0
    for t in range(max(lengths)):
        for lane, length in enumerate(lengths):
            if length > t:
                positions[lane].append(offset)
                offset += 1
    return positions


def _expected_block_arrangement(hbp, counts: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The slot order (indices into the block's rows in row order) and group sizes of the ordering."""
    m = counts.shape[0]
    if hbp.ordering == "dp":
        order, sizes = regular_arrangement(counts)
        return order, list(sizes)
    order = hash_slot_order(counts, hbp.block_height) if hbp.ordering == "hash" else np.argsort(counts, kind="stable")
    return order, [min(WARP_SIZE, m - start) for start in range(0, m, WARP_SIZE)]


def _assert_layout_invariants(matrix: sp.csr_matrix, hbp) -> None:
    """The layout contract of methods/spmv/hbp.py, checked array by array."""
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    nrows, ncols = matrix.shape
    height, width = hbp.block_height, hbp.block_width
    int32_fields = ["block_row", "block_col", "block_group_ptr", "group_slot_ptr", "slot_row", "cols", "next",
                    "merge_slot"]
    assert all(getattr(hbp, name).dtype == np.int32 for name in int32_fields)
    assert hbp.group_nz_ptr.dtype == np.int64 and hbp.merge_ptr.dtype == np.int64
    assert hbp.block_group_ptr[0] == 0 and hbp.group_slot_ptr[0] == 0 and hbp.group_nz_ptr[0] == 0
    assert hbp.block_group_ptr[-1] == hbp.n_groups and hbp.group_slot_ptr[-1] == hbp.n_slots
    assert hbp.group_nz_ptr[-1] == matrix.nnz == hbp.nnz
    for pointer in (hbp.block_group_ptr, hbp.group_slot_ptr, hbp.group_nz_ptr):
        assert np.all(np.diff(pointer) >= 1), "every block, group has at least one group, slot, nonzero"
    group_sizes = np.diff(hbp.group_slot_ptr)
    assert group_sizes.size == 0 or (group_sizes.min() >= 1 and group_sizes.max() <= WARP_SIZE)
    block_keys = hbp.block_row.astype(np.int64) * (ncols + 1) + hbp.block_col
    assert np.all(np.diff(block_keys) > 0), "blocks are row-block-major, then by column block, without repeats"

    visited = np.zeros(hbp.nnz, np.int64)
    triples = []
    for block in range(hbp.n_blocks):
        rb, cb = int(hbp.block_row[block]), int(hbp.block_col[block])
        block_rows, block_counts = [], []
        for group in range(hbp.block_group_ptr[block], hbp.block_group_ptr[block + 1]):
            first_slot, end_slot = hbp.group_slot_ptr[group], hbp.group_slot_ptr[group + 1]
            nz_start, nz_end = hbp.group_nz_ptr[group], hbp.group_nz_ptr[group + 1]
            lane_chains = []
            for lane, slot in enumerate(range(first_slot, end_slot)):
                row = int(hbp.slot_row[slot])
                assert rb * height <= row < min((rb + 1) * height, nrows)
                chain = [nz_start + lane]
                while hbp.next[chain[-1]] != -1:
                    chain.append(chain[-1] + hbp.next[chain[-1]])
                    assert nz_start <= chain[-1] < nz_end, "a chain stays inside its group"
                columns = hbp.cols[chain]
                assert np.all(np.diff(columns) > 0), "a chain visits its row's columns in order"
                assert np.all((columns >= cb * width) & (columns < min((cb + 1) * width, ncols)))
                visited[chain] += 1
                triples += [(row, int(col), value) for col, value in zip(columns, hbp.values[chain])]
                lane_chains.append(chain)
                block_rows.append(row)
                block_counts.append(len(chain))
            expected = _interleaved_positions([len(chain) for chain in lane_chains])
            assert [[int(nz - nz_start) for nz in chain] for chain in lane_chains] == expected
        rows_order = np.argsort(block_rows, kind="stable")
        order, sizes = _expected_block_arrangement(hbp, np.array(block_counts)[rows_order])
        np.testing.assert_array_equal(np.array(block_rows), np.array(block_rows)[rows_order][order])
        block_groups = slice(hbp.block_group_ptr[block], hbp.block_group_ptr[block + 1] + 1)
        assert list(np.diff(hbp.group_slot_ptr[block_groups])) == sizes
    assert np.all(visited == 1), "every stored nonzero appears in exactly one chain"
    coo = matrix.tocoo()
    assert sorted(triples) == sorted(zip(coo.row.tolist(), coo.col.tolist(), coo.data.astype(hbp.dtype).tolist()))

    assert np.array_equal(np.sort(hbp.merge_slot), np.arange(hbp.n_slots)), "merge covers each slot once"
    slot_block = np.repeat(np.arange(hbp.n_blocks), np.diff(hbp.group_slot_ptr[hbp.block_group_ptr]))
    for row in range(nrows):
        slots = hbp.merge_slot[hbp.merge_ptr[row]:hbp.merge_ptr[row + 1]]
        assert np.all(hbp.slot_row[slots] == row)
        row_colblocks = np.unique(matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]] // width)
        np.testing.assert_array_equal(hbp.block_col[slot_block[slots]], row_colblocks)


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("file_name", matrix_files())
def test_shared_matrices(file_name, ordering, suitesparse_dir):
    path = suitesparse_dir / file_name
    if not path.is_file():
        pytest.skip(f"{file_name} is not in {suitesparse_dir}")
    matrix = shared_matrix(path)
    hbp_by_dtype = {dtype: build_hbp(matrix, ordering, dtype=dtype) for dtype in TOLERANCE}
    _assert_spmv_matches_scipy(matrix, hbp_by_dtype, np.random.default_rng(0))
    _assert_round_trip(matrix, hbp_by_dtype[np.float64])
    _assert_layout_invariants(matrix, hbp_by_dtype[np.float64])


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize(("spec", "block_height", "block_width"), [case[1:] for case in EDGE_CASES],
                         ids=[case[0] for case in EDGE_CASES])
def test_edge_cases(spec, block_height, block_width, ordering):
    matrix = edge_matrix(spec)
    hbp_by_dtype = {dtype: build_hbp(matrix, ordering, block_height, block_width, dtype) for dtype in TOLERANCE}
    _assert_spmv_matches_scipy(matrix, hbp_by_dtype, np.random.default_rng(1))
    _assert_round_trip(matrix, hbp_by_dtype[np.float64])
    _assert_layout_invariants(matrix, hbp_by_dtype[np.float64])


def test_the_last_row_block_is_kept_and_many_column_blocks_are_stored():
    matrix = synthetic.generate({"generator": "random_uniform", "nrows": 1024, "ncols": 300, "density": 0.05},
                                np.random.default_rng(2))
    hbp = build_hbp(matrix, "hash", block_height=512, block_width=1)
    assert set(hbp.block_row.tolist()) == {0, 1}
    assert np.unique(hbp.block_col).size > 256
    assert hbp.n_slots == matrix.nnz, "with one column per block every slot holds one nonzero"


def test_explicit_zeros_are_kept_and_duplicates_summed():
    rows, cols = np.array([0, 0, 1, 1, 2]), np.array([1, 1, 0, 2, 2])
    matrix = sp.coo_matrix((np.array([1.5, 2.0, 0.0, -1.0, 3.0]), (rows, cols)), shape=(4, 3))
    hbp = build_hbp(matrix, block_height=2, block_width=2)
    back = hbp.to_csr()
    assert hbp.nnz == 4 and back[0, 1] == 3.5
    assert back.nnz == 4, "the explicit zero at (1, 0) stays stored"


def test_complex_input_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="real part"):
        build_hbp(sp.csr_matrix(np.array([[1 + 1j]])))
    with pytest.raises(ValueError, match="ordering"):
        build_hbp(sp.eye(3, format="csr"), ordering="bogus")
    with pytest.raises(ValueError, match="block_width"):
        build_hbp(sp.eye(3, format="csr"), block_width=0)
    with pytest.raises(ValueError, match="float64 or float32"):
        build_hbp(sp.eye(3, format="csr"), dtype=np.int32)
    with pytest.raises(TypeError):
        build_hbp(np.eye(3))


def test_preprocess_timed_reports_each_phase():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 2000, "ncols": 9000, "mean_row_length": 8},
                                np.random.default_rng(3))
    for ordering in ORDERINGS:
        hbp, seconds = preprocess_timed(matrix, ordering)
        assert set(seconds) == {"split", "reorder", "emit", "total"}
        assert all(value >= 0 for value in seconds.values())
        assert seconds["total"] == pytest.approx(seconds["split"] + seconds["reorder"] + seconds["emit"])
        assert hbp.ordering == ordering


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 80), st.integers(0, 80), st.floats(0.0, 1.0), st.sampled_from([1, 2, 3, 7, 32, 33, 512]),
       st.sampled_from([1, 2, 5, 16, 64, 4096]), st.sampled_from(ORDERINGS), st.integers(0, 2**32 - 1))
def test_random_matrices_round_trip_and_spmv(nrows, ncols, density, block_height, block_width, ordering, seed):
    rng = np.random.default_rng(seed)
    matrix = sp.random(nrows, ncols, density=density, format="csr", rng=rng,
                       data_rvs=lambda n: rng.uniform(-1.0, 1.0, n))
    hbp_by_dtype = {dtype: build_hbp(matrix, ordering, block_height, block_width, dtype) for dtype in TOLERANCE}
    _assert_round_trip(matrix, hbp_by_dtype[np.float64])
    _assert_round_trip(matrix, hbp_by_dtype[np.float32])
    _assert_spmv_matches_scipy(matrix, hbp_by_dtype, rng)
    _assert_layout_invariants(matrix, hbp_by_dtype[np.float64])


def _naive_hash_order(counts: list[int], table_size: int) -> list[int]:
    """The authors' placement probe by probe: O(rows x table size)."""
    table = [-1] * table_size
    for row, count in enumerate(counts):
        home = (count >> 4) << 8
        if home >= table_size:
            slot = max(s for s in range(table_size) if table[s] < 0)
        else:
            probes = [home] + [s for step in range(1, table_size) for s in (home + step, home - step)]
            slot = next(s for s in probes if 0 <= s < table_size and table[s] < 0)
        table[slot] = row
    return [row for row in table if row >= 0]


_COUNT = st.one_of(st.integers(1, 15), st.integers(16, 31), st.integers(32, 5000), st.sampled_from([1, 16, 32, 48]))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([1, 2, 5, 32, 256, 257, 300, 512, 1024]), st.data())
def test_hash_placement_matches_naive_probing(table_size, data):
    counts = data.draw(st.lists(_COUNT, max_size=table_size))
    order = hash_slot_order(np.array(counts, dtype=np.int32), table_size)
    assert order.tolist() == _naive_hash_order(counts, table_size)


@pytest.mark.parametrize("table_size", [512, 1024])
def test_hash_placement_on_full_tables_of_equal_counts(table_size):
    rng = np.random.default_rng(4)
    for counts in (np.ones(table_size, np.int32), np.full(table_size, 40, np.int32),
                   rng.choice(np.array([1, 3, 17, 20, 33, 600], np.int32), table_size),
                   rng.integers(1, 40, table_size // 2).astype(np.int32)):
        assert hash_slot_order(counts, table_size).tolist() == _naive_hash_order(counts.tolist(), table_size)


@pytest.fixture(scope="module")
def power_law_hbp():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 6000, "ncols": 20000, "mean_row_length": 6},
                                np.random.default_rng(5))
    return matrix, build_hbp(matrix, "hash")


def test_executor_is_deterministic_across_calls_threads_and_allocations(power_law_hbp):
    matrix, hbp = power_law_hbp
    x = np.random.default_rng(6).uniform(-1.0, 1.0, matrix.shape[1])
    expected = spmv_hbp_serial(hbp, x)
    for threads in (1, 2):
        for fixed_fraction in (0.0, 0.5, 1.0):
            for chunk_blocks in (1, 10):
                with HBPCpuExecutor(hbp, threads, fixed_fraction, chunk_blocks) as executor:
                    for _ in range(3):
                        np.testing.assert_array_equal(executor(x), expected)


@pytest.mark.parametrize("fixed_fraction", [0.0, 0.5, 1.0])
def test_competitive_part_runs_on_every_call(power_law_hbp, fixed_fraction):
    """The authors' counter drained in the warm-up; here the second x must be fully recomputed."""
    matrix, hbp = power_law_hbp
    rng = np.random.default_rng(7)
    with HBPCpuExecutor(hbp, threads=2, fixed_fraction=fixed_fraction) as executor:
        assert hbp.n_blocks > 2 * executor.fixed_blocks_per_thread or fixed_fraction == 1.0
        for _ in range(3):
            x = rng.uniform(-1.0, 1.0, matrix.shape[1])
            assert componentwise_error(matrix, x, executor(x), matrix @ x) <= 1e-12


def test_executor_never_reads_x_past_its_end(power_law_hbp):
    matrix, hbp = power_law_hbp
    backing = np.full(matrix.shape[1] + 4096, np.nan)
    backing[:matrix.shape[1]] = np.random.default_rng(8).uniform(-1.0, 1.0, matrix.shape[1])
    x = backing[:matrix.shape[1]]
    assert np.all(np.isfinite(spmv_hbp(hbp, x))) and np.all(np.isfinite(spmv_hbp_serial(hbp, x)))


def test_executor_arguments_and_out(power_law_hbp):
    matrix, hbp = power_law_hbp
    x = np.ones(matrix.shape[1])
    with HBPCpuExecutor(hbp, threads=2) as executor:
        out = np.empty(matrix.shape[0])
        assert executor(x, out=out) is out
        with pytest.raises(ValueError, match="expected"):
            executor(np.ones(matrix.shape[1] + 1))
        with pytest.raises(ValueError, match="out must have"):
            executor(x, out=np.empty(matrix.shape[0], np.float32))
    for bad in ({"threads": 0}, {"fixed_fraction": 1.5}, {"chunk_blocks": 0}):
        with pytest.raises(ValueError):
            HBPCpuExecutor(hbp, **bad)


def test_bytes_per_nonzero_on_shared_matrices(suitesparse_dir):
    paths = sorted(path for path in suitesparse_dir.iterdir() if path.name.endswith((".mtx", ".mtx.gz")))
    for path in paths:
        matrix = shared_matrix(path)
        csr_bytes = matrix.data.nbytes + matrix.indices.astype(np.int32).nbytes + 4 * (matrix.shape[0] + 1)
        for ordering in ORDERINGS:
            hbp = build_hbp(matrix, ordering)
            assert hbp.nbytes() <= 3 * csr_bytes, f"{path.name} {ordering}: {hbp.bytes_per_nonzero():.1f} B/nnz"


def test_bytes_per_nonzero_on_a_power_law_matrix():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 200_000, "ncols": 200_000,
                                 "mean_row_length": 6}, np.random.default_rng(9))
    hbp = build_hbp(matrix, "hash")
    assert hbp.bytes_per_nonzero() <= 3 * 12
    slot_bytes = hbp.n_slots * (4 + 4) + hbp.n_groups * (4 + 8) + hbp.n_blocks * (4 + 4 + 4)
    assert hbp.nbytes() == hbp.nnz * 16 + slot_bytes + (hbp.shape[0] + 1) * 8 + 4 + 4 + 8
    assert hbp.workspace_nbytes() == hbp.n_slots * 8
    assert hbp.bytes_per_nonzero(workspace=True) == pytest.approx(hbp.bytes_per_nonzero() + 8 * hbp.n_slots / hbp.nnz)
