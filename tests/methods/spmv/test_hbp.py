"""HBP layout, preprocessing and CPU SpMV (methods/spmv/hbp.py, hbp_cpu.py) and the cache sizes its CPU block shape
comes from (methods/spmv/machine.py).

The layout is checked array by array against the contract in hbp.py's docstring (dtypes, lengths, pointers, the slot
order and group cuts each ordering gives, lanes longest first, the round-by-round positions of the nonzeros), and
decoded from that contract alone into the matrix, which must be the input exactly. The executor is checked against
scipy (componentwise error), bitwise against the numba CSR kernel (both add each row's products one at a time in
column order), across calls and thread counts; the serial reference against scipy. The orderings themselves (hash
placement against the authors' probing, the DP against brute force): tests/methods/spmv/test_ordering.py."""

import dataclasses

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.spmv import machine
from methods.spmv.accuracy import componentwise_error
from methods.spmv.csr import spmv_numba
from methods.spmv.hbp import (
    GPU_BLOCK_SHAPE,
    ORDERINGS,
    WARP_SIZE,
    HBPMatrix,
    build_hbp,
    cpu_block_shape,
    preprocess_timed,
)
from methods.spmv.hbp_cpu import HBPCpuExecutor, balanced_panels, column_major_blocks, spmv_hbp, spmv_hbp_serial
from methods.spmv.ordering import hash_slot_order, regular_arrangement
from reproduce.harness.data import synthetic
from tests.methods.spmv.cases import EDGE_CASES, TOLERANCE, edge_matrix, matrix_files, shared_matrix

# The layout's index arrays and their dtypes, in declaration order (``values`` follows: float64 or float32).
INDEX_DTYPES = {"row_block_ptr": np.int32, "block_col": np.int32, "block_nz_ptr": np.int64,
                "block_group_ptr": np.int32, "group_slot_ptr": np.int32, "group_nz_offset": np.uint32,
                "slot_row": np.uint16, "slot_last": np.uint16, "cols": np.uint16}
EXECUTOR_THREADS = (1, 2, 3, 7)
MIB = 1024 * 1024


def _canonical(matrix) -> sp.csr_matrix:
    """Sorted indices, duplicates summed, explicit zeros kept: what HBP stores."""
    canonical = sp.csr_matrix(matrix, copy=True)
    canonical.sum_duplicates()
    return canonical


def _exclusive_sum(counts: np.ndarray) -> np.ndarray:
    """Shape (n + 1,): 0, then the running total."""
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))


# ---------------------------------------------------------------- the layout contract


def _expected_arrangement(ordering: str, counts: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The slot order (indices into the block's rows in row order) and group sizes the ordering gives."""
    if ordering == "dp":
        return regular_arrangement(counts)
    order = hash_slot_order(counts, height) if ordering == "hash" else np.argsort(counts, kind="stable")
    m = counts.shape[0]
    return order, np.array([min(WARP_SIZE, m - start) for start in range(0, m, WARP_SIZE)], np.int64)


def _assert_block_orders(hbp: HBPMatrix, lengths: np.ndarray) -> None:
    """Each block's slots: the ordering's order and cuts, then each group's lanes by length, longest first, stably."""
    slot_bounds = hbp.group_slot_ptr[hbp.block_group_ptr]
    for block in range(hbp.n_blocks):
        first, end = slot_bounds[block], slot_bounds[block + 1]
        rows = hbp.slot_row[first:end].astype(np.int64)
        by_row = np.argsort(rows)
        order, sizes = _expected_arrangement(hbp.ordering, lengths[first:end][by_row], hbp.block_height)
        arranged = by_row[order]  # slots of the block (offsets from first) in the ordering's order
        group = np.repeat(np.arange(sizes.shape[0]), sizes)
        lanes = arranged[np.lexsort((np.arange(arranged.shape[0]), -lengths[first:end][arranged], group))]
        np.testing.assert_array_equal(rows, rows[lanes], err_msg=f"block {block}: slot order ({hbp.ordering})")
        groups = hbp.group_slot_ptr[hbp.block_group_ptr[block]:hbp.block_group_ptr[block + 1] + 1]
        np.testing.assert_array_equal(np.diff(groups), sizes, err_msg=f"block {block}: group cuts ({hbp.ordering})")


def _assert_layout_invariants(matrix, hbp: HBPMatrix, check_orders: bool = True) -> None:
    """The contract of methods/spmv/hbp.py's docstring, array by array, and the matrix decoded from it alone."""
    canonical = _canonical(matrix)
    nrows, ncols = canonical.shape
    height, width = hbp.block_height, hbp.block_width
    n_rowblocks, n_colblocks = -(-nrows // height), -(-ncols // width)
    assert hbp.shape == (nrows, ncols) and 1 <= height <= 65536 and 1 <= width <= 65536
    arrays = hbp.arrays()
    assert list(arrays) == [*INDEX_DTYPES, "values"]
    for name, dtype in INDEX_DTYPES.items():
        assert arrays[name].dtype == dtype, f"{name} is {arrays[name].dtype}, not {np.dtype(dtype)}"
    assert hbp.values.dtype in (np.float64, np.float32)
    assert all(array.ndim == 1 and array.flags.c_contiguous for array in arrays.values())
    n_blocks, n_groups, n_slots, nnz = hbp.n_blocks, hbp.n_groups, hbp.n_slots, hbp.nnz
    assert nnz == canonical.nnz and hbp.n_rowblocks == n_rowblocks
    expected_lengths = {"row_block_ptr": n_rowblocks + 1, "block_col": n_blocks, "block_nz_ptr": n_blocks + 1,
                        "block_group_ptr": n_blocks + 1, "group_slot_ptr": n_groups + 1, "group_nz_offset": n_groups,
                        "slot_row": n_slots, "slot_last": n_slots, "cols": nnz, "values": nnz}
    assert {name: array.shape[0] for name, array in arrays.items()} == expected_lengths

    # Pointers: from 0 to the total; every stored block has groups and nonzeros, every group 1 to 32 slots.
    for name, total in (("row_block_ptr", n_blocks), ("block_nz_ptr", nnz), ("block_group_ptr", n_groups),
                        ("group_slot_ptr", n_slots)):
        assert arrays[name][0] == 0 and arrays[name][-1] == total, name
    assert np.all(np.diff(hbp.row_block_ptr) >= 0)
    assert np.all(np.diff(hbp.block_nz_ptr) >= 1), "every stored block has a nonzero"
    assert np.all(np.diff(hbp.block_group_ptr) >= 1), "every stored block has a group"
    group_sizes = np.diff(hbp.group_slot_ptr)
    assert np.all((group_sizes >= 1) & (group_sizes <= WARP_SIZE)), "groups of 1 to 32 slots"

    block_rb = np.repeat(np.arange(n_rowblocks), np.diff(hbp.row_block_ptr))
    group_block = np.repeat(np.arange(n_blocks), np.diff(hbp.block_group_ptr))
    slot_group = np.repeat(np.arange(n_groups), group_sizes)
    slot_block = group_block[slot_group]
    block_col = hbp.block_col.astype(np.int64)
    assert np.all((block_col >= 0) & (block_col < n_colblocks))
    assert np.all(np.diff(block_col)[block_rb[1:] == block_rb[:-1]] > 0), "a row block's blocks by column block"

    # Slots: rows inside the block, each row once per block; lanes longest first within a group.
    slot_rb = block_rb[slot_block]
    assert np.all(hbp.slot_row < np.minimum(height, nrows - slot_rb * height)), "slot_row within the block"
    rows = slot_rb * height + hbp.slot_row
    assert np.unique(slot_block * max(nrows, 1) + rows).shape[0] == n_slots, "a row has one slot per block"
    lengths = hbp.slot_last.astype(np.int64) + 1
    assert np.all(lengths <= width)
    assert np.all(np.diff(lengths)[slot_group[1:] == slot_group[:-1]] <= 0), "lanes longest first"

    # Nonzeros: groups back to back inside their block (group_nz_offset), the blocks back to back.
    group_nz = np.add.reduceat(lengths, hbp.group_slot_ptr[:-1]) if n_groups else np.zeros(0, np.int64)
    group_start = _exclusive_sum(group_nz)
    np.testing.assert_array_equal(hbp.block_nz_ptr, group_start[hbp.block_group_ptr], err_msg="block_nz_ptr")
    np.testing.assert_array_equal(hbp.group_nz_offset.astype(np.int64),
                                  group_start[:-1] - hbp.block_nz_ptr[group_block], err_msg="group_nz_offset")

    # Element t of lane q of group g is at g's start + n_0 + ... + n_(t-1) + q, n_s its lanes longer than s.
    rounds = lengths[hbp.group_slot_ptr[:-1]] if n_groups else np.zeros(0, np.int64)
    round_base = _exclusive_sum(rounds)
    active = np.zeros(round_base[-1] + 1, np.int64)
    np.add.at(active, round_base[slot_group], 1)
    np.add.at(active, round_base[slot_group] + lengths, -1)
    before_round = _exclusive_sum(np.cumsum(active)[:-1])
    element_slot = np.repeat(np.arange(n_slots), lengths)
    element_round = np.arange(nnz) - np.repeat(_exclusive_sum(lengths)[:-1], lengths)
    lane = np.arange(n_slots) - hbp.group_slot_ptr[slot_group]
    base = round_base[slot_group[element_slot]]
    position = (hbp.block_nz_ptr[slot_block[element_slot]] + hbp.group_nz_offset[slot_group[element_slot]]
                + before_round[base + element_round] - before_round[base] + lane[element_slot])
    assert np.array_equal(np.bincount(position, minlength=nnz), np.ones(nnz, np.int64)), "each nonzero once"
    element_block = slot_block[element_slot]
    local_cols = hbp.cols[position].astype(np.int64)
    assert np.all(local_cols < np.minimum(width, ncols - block_col[element_block] * width)), "cols within the block"
    columns = block_col[element_block] * width + local_cols
    assert np.all(np.diff(columns)[element_slot[1:] == element_slot[:-1]] > 0), "a lane's columns ascending"
    element_rows = rows[element_slot]
    by_entry = np.lexsort((columns, element_rows))
    np.testing.assert_array_equal(element_rows[by_entry], np.repeat(np.arange(nrows), np.diff(canonical.indptr)))
    np.testing.assert_array_equal(columns[by_entry], canonical.indices)
    np.testing.assert_array_equal(hbp.values[position][by_entry], canonical.data.astype(hbp.dtype))
    if check_orders:
        _assert_block_orders(hbp, lengths)


def _assert_round_trip(matrix, hbp: HBPMatrix) -> None:
    """to_csr gives back the canonical matrix exactly: same indptr, indices and (rounded) data."""
    back = hbp.to_csr()
    canonical = _canonical(matrix)
    assert back.shape == canonical.shape and back.dtype == hbp.dtype and back.indices.dtype == np.int32
    np.testing.assert_array_equal(back.indptr, canonical.indptr)
    np.testing.assert_array_equal(back.indices, canonical.indices)
    np.testing.assert_array_equal(back.data, canonical.data.astype(hbp.dtype))


def _assert_spmv(matrix, hbp_by_dtype: dict, rng: np.random.Generator, threads: int = 3) -> None:
    """Executor, spmv_hbp and the serial reference against scipy (error vs an fp64 reference on the rounded inputs);
    the executor bitwise against the numba CSR kernel in the same dtype."""
    canonical = _canonical(matrix)
    x = rng.uniform(-1.0, 1.0, matrix.shape[1])
    for dtype, hbp in hbp_by_dtype.items():
        x_rounded = x.astype(dtype).astype(np.float64)
        matrix_rounded = canonical.astype(dtype).astype(np.float64)
        reference = matrix_rounded @ x_rounded
        results = {"executor": HBPCpuExecutor(hbp, threads=threads)(x), "spmv_hbp": spmv_hbp(hbp, x),
                   "serial": spmv_hbp_serial(hbp, x)}
        for name, y in results.items():
            assert y.dtype == np.dtype(dtype) and y.shape == (matrix.shape[0],)
            error = componentwise_error(matrix_rounded, x_rounded, y.astype(np.float64), reference)
            assert error <= TOLERANCE[dtype], f"{name} {np.dtype(dtype).name}: error {error:.3g}"
        numba_csr = spmv_numba(canonical.astype(dtype), x.astype(dtype))
        np.testing.assert_array_equal(results["executor"], numba_csr, err_msg=f"{np.dtype(dtype).name} vs numba CSR")
        np.testing.assert_array_equal(results["spmv_hbp"], numba_csr)


# ---------------------------------------------------------------- matrices: shared, edge cases, random


def _shapes(matrix) -> dict[str, tuple[int, int]]:
    return {"gpu": GPU_BLOCK_SHAPE, "cpu": cpu_block_shape(matrix.shape, 8), "small": (64, 256)}


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("file_name", matrix_files())
def test_shared_matrices(file_name, ordering, suitesparse_dir):
    path = suitesparse_dir / file_name
    if not path.is_file():
        pytest.skip(f"{file_name} is not in {suitesparse_dir}")
    matrix = shared_matrix(path)
    for name, (height, width) in _shapes(matrix).items():
        hbp_by_dtype = {dtype: build_hbp(matrix, ordering, height, width, dtype) for dtype in TOLERANCE}
        _assert_spmv(matrix, hbp_by_dtype, np.random.default_rng(0))
        _assert_round_trip(matrix, hbp_by_dtype[np.float64])
        _assert_round_trip(matrix, hbp_by_dtype[np.float32])
        _assert_layout_invariants(matrix, hbp_by_dtype[np.float64])
        for array_name, array in hbp_by_dtype[np.float32].arrays().items():
            if array_name != "values":
                np.testing.assert_array_equal(array, getattr(hbp_by_dtype[np.float64], array_name),
                                              err_msg=f"{name} {array_name}: fp32 and fp64 layouts differ")


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize(("spec", "block_height", "block_width"), [case[1:] for case in EDGE_CASES],
                         ids=[case[0] for case in EDGE_CASES])
def test_edge_cases(spec, block_height, block_width, ordering):
    matrix = edge_matrix(spec)
    hbp_by_dtype = {dtype: build_hbp(matrix, ordering, block_height, block_width, dtype) for dtype in TOLERANCE}
    _assert_spmv(matrix, hbp_by_dtype, np.random.default_rng(1))
    _assert_round_trip(matrix, hbp_by_dtype[np.float64])
    _assert_layout_invariants(matrix, hbp_by_dtype[np.float64])


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
    _assert_spmv(matrix, hbp_by_dtype, rng, threads=int(rng.integers(1, 8)))
    _assert_layout_invariants(matrix, hbp_by_dtype[np.float64])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from([1, 2, 8, 40, 120]), st.sampled_from([1, 3, 32, 64]),
       st.sampled_from([1, 7, 64]), st.sampled_from(ORDERINGS), st.integers(0, 2**32 - 1))
def test_random_skewed_rows(nrows, ncols, mean_row_length, block_height, block_width, ordering, seed):
    """Rows of very different lengths (power law) in small blocks: many groups per block, ragged rounds."""
    matrix = synthetic.generate({"generator": "power_law", "nrows": nrows, "ncols": ncols,
                                 "mean_row_length": min(mean_row_length, ncols)}, np.random.default_rng(seed))
    hbp = build_hbp(matrix, ordering, block_height, block_width)
    _assert_round_trip(matrix, hbp)
    _assert_layout_invariants(matrix, hbp)
    _assert_spmv(matrix, {np.float64: hbp}, np.random.default_rng(seed), threads=3)


def test_hand_written_layout():
    """A 5 x 6 matrix in 4 x 4 blocks, its arrays written from the contract by hand (every ordering agrees here).

    Block (0, 0) holds rows 0 (3 nonzeros), 1 (1) and 2 (2): one group, lanes longest first: rows 0, 2, 1; rounds
    of 3, 2 and 1 lanes. Block (0, 1): rows 0 and 2, one nonzero each. Row block 1 (row 4): one block per column
    block.
    """
    dense = np.array([[1, 2, 3, 0, 0, 4],
                      [0, 5, 0, 0, 0, 0],
                      [6, 0, 0, 7, 8, 0],
                      [0, 0, 0, 0, 0, 0],
                      [0, 0, 9, 0, 10, 11]], np.float64)
    expected = {"row_block_ptr": [0, 2, 4], "block_col": [0, 1, 0, 1], "block_nz_ptr": [0, 6, 8, 9, 11],
                "block_group_ptr": [0, 1, 2, 3, 4], "group_slot_ptr": [0, 3, 5, 6, 7], "group_nz_offset": [0, 0, 0, 0],
                "slot_row": [0, 2, 1, 0, 2, 0, 0], "slot_last": [2, 1, 0, 0, 0, 0, 1],
                "cols": [0, 0, 1, 1, 3, 2, 1, 0, 2, 0, 1], "values": [1, 6, 5, 2, 7, 3, 4, 8, 9, 10, 11]}
    x = np.array([1.0, 10.0, 100.0, 1000.0, 1e4, 1e5])
    for ordering in ORDERINGS:
        hbp = build_hbp(sp.csr_matrix(dense), ordering, block_height=4, block_width=4)
        for name, values in expected.items():
            np.testing.assert_array_equal(getattr(hbp, name), values, err_msg=f"{ordering} {name}")
        np.testing.assert_array_equal(hbp.to_csr().toarray(), dense)
        for y in (HBPCpuExecutor(hbp, threads=2)(x), spmv_hbp_serial(hbp, x)):
            np.testing.assert_array_equal(y, dense @ x)


def test_group_offsets_inside_a_block():
    """33 rows of lengths 1..33 in one block: groups of 32 and 1 (hash, sort) with the second group's nonzeros after
    the first's; lanes longest first."""
    rows = np.repeat(np.arange(33), np.arange(1, 34))
    cols = np.concatenate([np.arange(n) for n in range(1, 34)])
    matrix = sp.csr_matrix((np.arange(1.0, rows.size + 1), (rows, cols)), shape=(40, 40))
    for ordering in ("hash", "sort"):
        hbp = build_hbp(matrix, ordering, block_height=64, block_width=64)
        assert hbp.group_slot_ptr.tolist() == [0, 32, 33]
        first_group = hbp.slot_last[:32].astype(np.int64) + 1
        assert hbp.group_nz_offset.tolist() == [0, int(first_group.sum())]
        assert np.all(np.diff(first_group) <= 0)
        _assert_layout_invariants(matrix, hbp)
    dp = build_hbp(matrix, "dp", block_height=64, block_width=64)
    last_group = dp.group_slot_ptr[-2]
    assert dp.slot_row[last_group] == 32 and dp.slot_last[last_group] == 32, "the longest row leads its group"
    _assert_layout_invariants(matrix, dp)


def test_sixteen_bit_offsets_at_their_limits():
    """Blocks of 65536 x 65536: slot_row, cols and slot_last reach 65535; entries on both sides of each boundary."""
    n = 70_000
    edges = [0, 1, 65534, 65535, 65536, 65537, n - 1]
    rows, cols = np.meshgrid(edges, edges, indexing="ij")
    matrix = sp.csr_matrix((np.linspace(-1.0, 1.0, rows.size), (rows.ravel(), cols.ravel())), shape=(n, n))
    for ordering in ORDERINGS:
        hbp = build_hbp(matrix, ordering, block_height=65536, block_width=65536)
        assert hbp.slot_row.max() == 65535 and hbp.cols.max() == 65535 and hbp.n_blocks == 4
        _assert_round_trip(matrix, hbp)
        _assert_layout_invariants(matrix, hbp)
        _assert_spmv(matrix, {np.float64: hbp}, np.random.default_rng(2))
    dense_row = sp.csr_matrix((np.arange(1.0, 65538), (np.r_[np.ones(65536, np.int64), 2], np.r_[np.arange(65536), 7])),
                              shape=(3, 65536))
    for ordering in ORDERINGS:
        hbp = build_hbp(dense_row, ordering, block_height=65536, block_width=65536)
        assert dict(zip(hbp.slot_row.tolist(), hbp.slot_last.tolist())) == {1: 65535, 2: 0}
        assert hbp.n_groups == (2 if ordering == "dp" else 1), "the DP splits the long row off"
        _assert_round_trip(dense_row, hbp)
        _assert_layout_invariants(dense_row, hbp)
        _assert_spmv(dense_row, {np.float64: hbp, np.float32: build_hbp(dense_row, ordering, 65536, 65536,
                                                                        np.float32)}, np.random.default_rng(3))


def test_the_last_row_block_is_kept_and_many_column_blocks_are_stored():
    matrix = synthetic.generate({"generator": "random_uniform", "nrows": 1024, "ncols": 300, "density": 0.05},
                                np.random.default_rng(2))
    hbp = build_hbp(matrix, "hash", block_height=512, block_width=1)
    assert hbp.n_rowblocks == 2 and np.all(np.diff(hbp.row_block_ptr) > 256)
    assert np.unique(hbp.block_col).size > 256
    assert hbp.n_slots == matrix.nnz and np.all(hbp.slot_last == 0), "one column per block: a nonzero per slot"


def test_explicit_zeros_are_kept_and_duplicates_summed():
    rows, cols = np.array([0, 0, 1, 1, 2]), np.array([1, 1, 0, 2, 2])
    matrix = sp.coo_matrix((np.array([1.5, 2.0, 0.0, -1.0, 3.0]), (rows, cols)), shape=(4, 3))
    hbp = build_hbp(matrix, block_height=2, block_width=2)
    back = hbp.to_csr()
    assert hbp.nnz == 4 and back[0, 1] == 3.5
    assert back.nnz == 4, "the explicit zero at (1, 0) stays stored"
    assert hbp.n_slots == 4 and hbp.block_col.tolist() == [0, 1, 1]
    _assert_layout_invariants(matrix, hbp)


def test_any_sparse_input_gives_the_canonical_layout():
    """Unsorted columns, duplicates, int64 indices, CSC and COO: the layout of the canonical CSR matrix."""
    canonical = synthetic.generate({"generator": "power_law", "nrows": 300, "ncols": 200, "mean_row_length": 9},
                                   np.random.default_rng(4))
    rng = np.random.default_rng(5)
    coo = canonical.tocoo()
    twice = rng.permutation(np.r_[np.arange(coo.nnz), np.arange(coo.nnz)])
    halves = rng.uniform(0.0, 1.0, coo.nnz)  # each entry split in two duplicates that sum back to it
    first = np.zeros(twice.shape[0], np.bool_)
    first[np.unique(twice, return_index=True)[1]] = True  # the first of the two copies of each entry
    split = sp.coo_matrix((np.where(first, (coo.data * halves)[twice], (coo.data * (1 - halves))[twice]),
                           (coo.row[twice], coo.col[twice])), shape=canonical.shape)
    reversed_rows = np.concatenate([np.arange(start, end)[::-1] for start, end in
                                    zip(canonical.indptr[:-1], canonical.indptr[1:])])
    unsorted = sp.csr_matrix((canonical.data[reversed_rows], canonical.indices[reversed_rows], canonical.indptr),
                             shape=canonical.shape)
    wide_indices = canonical.copy()
    wide_indices.indices, wide_indices.indptr = canonical.indices.astype(np.int64), canonical.indptr.astype(np.int64)
    assert wide_indices.indices.dtype == np.int64  # scipy's constructor would narrow them to int32
    expected = build_hbp(canonical, "dp", 32, 64)
    for name, matrix in (("csc", canonical.tocsc()), ("coo", coo), ("unsorted", unsorted), ("int64", wide_indices),
                         ("csr_array", sp.csr_array(canonical))):
        hbp = build_hbp(matrix, "dp", 32, 64)
        for array_name, array in expected.arrays().items():
            np.testing.assert_array_equal(getattr(hbp, array_name), array, err_msg=f"{name} {array_name}")
    duplicates = build_hbp(split, "dp", 32, 64)
    for array_name, array in expected.arrays().items():
        if array_name != "values":
            np.testing.assert_array_equal(getattr(duplicates, array_name), array, err_msg=f"duplicates {array_name}")
    np.testing.assert_allclose(duplicates.values, expected.values, rtol=1e-15, atol=0)
    assert not unsorted.has_sorted_indices


def test_values_dtype():
    matrix = sp.random(30, 40, density=0.2, format="csr", rng=np.random.default_rng(3))
    assert build_hbp(matrix).dtype == np.float64
    assert build_hbp(matrix.astype(np.float32)).dtype == np.float32
    assert build_hbp(matrix.astype(np.float32), dtype=np.float64).dtype == np.float64
    assert build_hbp((matrix > 0.5).astype(np.int64)).dtype == np.float64
    assert build_hbp(matrix, block_height=np.int64(8), block_width=np.int32(8)).block_height == 8


def test_complex_input_and_bad_arguments_are_refused():
    eye = sp.eye(3, format="csr")
    with pytest.raises(ValueError, match="real part"):
        build_hbp(sp.csr_matrix(np.array([[1 + 1j]])))
    with pytest.raises(ValueError, match="ordering"):
        build_hbp(eye, ordering="bogus")
    with pytest.raises(ValueError, match="ordering"):
        preprocess_timed(eye, ordering="HASH")
    for name in ("block_height", "block_width"):
        for bad in (0, -1, 65537, 1.5, "8", None):
            with pytest.raises(ValueError, match=name):
                build_hbp(eye, **{name: bad})
    assert build_hbp(eye, block_height=65536, block_width=65536).n_blocks == 1
    with pytest.raises(ValueError, match="float64 or float32"):
        build_hbp(eye, dtype=np.int32)
    with pytest.raises(TypeError):
        build_hbp(np.eye(3))


def test_preprocess_timed_reports_each_phase_and_is_deterministic():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 2000, "ncols": 9000, "mean_row_length": 8},
                                np.random.default_rng(3))
    threads = numba.get_num_threads()
    for ordering in ORDERINGS:
        hbp, seconds = preprocess_timed(matrix, ordering, 64, 512)
        assert set(seconds) == {"count", "build", "total"}
        assert all(value >= 0 for value in seconds.values())
        assert seconds["total"] == pytest.approx(seconds["count"] + seconds["build"])
        assert hbp.ordering == ordering and (hbp.block_height, hbp.block_width) == (64, 512)
        try:
            numba.set_num_threads(1)
            serial = build_hbp(matrix, ordering, 64, 512)
        finally:
            numba.set_num_threads(threads)
        for name, array in hbp.arrays().items():
            np.testing.assert_array_equal(array, getattr(serial, name), err_msg=f"{ordering} {name}")
            assert array.dtype == getattr(serial, name).dtype


# ---------------------------------------------------------------- the executor


@pytest.fixture(scope="module")
def power_law_hbp():
    """Rows of very different lengths, empty row blocks (rows 3000 to 3599), ncols not a multiple of the block width,
    nonzeros in the last column."""
    matrix = synthetic.generate({"generator": "power_law", "nrows": 6000, "ncols": 20000, "mean_row_length": 6},
                                np.random.default_rng(5))
    matrix = sp.vstack([matrix[:3000], sp.csr_matrix((600, 20000)), matrix[3000:5400]], format="csr")
    matrix = _canonical(matrix + sp.csr_matrix((np.ones(50), (np.arange(0, 3000, 60), np.full(50, 19999))),
                                               shape=matrix.shape))
    assert matrix[3000:3600].nnz == 0 and matrix.shape == (6000, 20000)
    hbp = build_hbp(matrix, "hash", block_height=256, block_width=4096)
    assert np.sum(np.diff(hbp.row_block_ptr) == 0) == 2
    return matrix, hbp


def test_executor_is_deterministic_across_calls_and_thread_counts(power_law_hbp):
    matrix, hbp = power_law_hbp
    x = np.random.default_rng(6).uniform(-1.0, 1.0, matrix.shape[1])
    expected = spmv_numba(matrix, x)
    numba_threads = numba.get_num_threads()
    try:
        for numba_count in sorted({1, numba_threads}):
            numba.set_num_threads(numba_count)
            for threads in EXECUTOR_THREADS:
                executor = HBPCpuExecutor(hbp, threads=threads)
                assert executor.threads == threads
                np.testing.assert_array_equal(executor.panels, balanced_panels(hbp, threads))
                for _ in range(3):
                    np.testing.assert_array_equal(executor(x), expected, err_msg=f"{threads} panels")
                out = np.full(matrix.shape[0], np.nan)
                assert executor(x, out=out) is out
                np.testing.assert_array_equal(out, expected)
                np.testing.assert_array_equal(spmv_hbp(hbp, x, threads=threads), expected)
    finally:
        numba.set_num_threads(numba_threads)
    serial = spmv_hbp_serial(hbp, x)
    assert componentwise_error(matrix, x, serial, matrix @ x) <= TOLERANCE[np.float64]


@pytest.mark.parametrize("stage_x", [False, True])
def test_executor_with_and_without_the_x_tile(power_law_hbp, stage_x):
    """Reading x directly or through a per-panel tile (the default above one core's L2) gives the same bits,
    over every column block (the last one narrower) and the empty row blocks."""
    matrix, hbp = power_law_hbp
    x = np.random.default_rng(7).uniform(-1.0, 1.0, matrix.shape[1])
    for threads in (1, 3):
        executor = HBPCpuExecutor(hbp, threads=threads, stage_x=stage_x)
        assert executor.stage_x is stage_x
        np.testing.assert_array_equal(executor(x), spmv_numba(matrix, x))
    assert HBPCpuExecutor(hbp).stage_x is (matrix.shape[1] * 8 > machine.cpu_caches()["L2"])
    order, block_row = column_major_blocks(hbp, balanced_panels(hbp, 3))
    assert sorted(order.tolist()) == list(range(hbp.n_blocks))
    np.testing.assert_array_equal(block_row, np.repeat(np.arange(hbp.n_rowblocks), np.diff(hbp.row_block_ptr)))


def test_executor_default_threads(power_law_hbp):
    _, hbp = power_law_hbp
    executor = HBPCpuExecutor(hbp)
    assert executor.threads == numba.get_num_threads()
    np.testing.assert_array_equal(executor.panels, balanced_panels(hbp, numba.get_num_threads()))


def test_every_row_is_written(power_law_hbp):
    """Rows without nonzeros come back 0 in a NaN-filled out, in an all-zero matrix too."""
    matrix, hbp = power_law_hbp
    empty_rows = np.flatnonzero(np.diff(matrix.indptr) == 0)
    assert empty_rows.size > 0
    out = np.full(matrix.shape[0], np.nan)
    HBPCpuExecutor(hbp, threads=3)(np.ones(matrix.shape[1]), out=out)
    assert np.all(out[empty_rows] == 0) and np.all(np.isfinite(out))
    zero = build_hbp(sp.csr_matrix((700, 30)), block_height=64)
    out = np.full(700, np.nan)
    HBPCpuExecutor(zero, threads=3)(np.ones(30), out=out)
    assert np.all(out == 0)


def test_executor_never_reads_x_past_its_end(power_law_hbp, dtype):
    matrix, _ = power_law_hbp
    hbp = build_hbp(matrix, "hash", block_height=256, block_width=4096, dtype=dtype)
    ncols = matrix.shape[1]
    assert ncols % hbp.block_width and hbp.block_col.max() == ncols // hbp.block_width
    backing = np.full(ncols + 2 * hbp.block_width, np.nan, dtype)
    backing[:ncols] = np.random.default_rng(8).uniform(-1.0, 1.0, ncols)
    x = backing[:ncols]
    expected = spmv_numba(matrix.astype(dtype), x.copy())
    for threads in EXECUTOR_THREADS:
        np.testing.assert_array_equal(HBPCpuExecutor(hbp, threads=threads)(x), expected)
    assert np.all(np.isfinite(spmv_hbp_serial(hbp, x)))


def test_executor_arguments_and_out(power_law_hbp):
    matrix, hbp = power_law_hbp
    nrows, ncols = matrix.shape
    x = np.ones(ncols)
    executor = HBPCpuExecutor(hbp, threads=2)
    out = np.empty(nrows)
    assert executor(x, out=out) is out
    np.testing.assert_array_equal(executor(list(x)), executor(x))
    np.testing.assert_array_equal(executor(x.astype(np.float32)), executor(x))
    strided = np.random.default_rng(10).uniform(-1.0, 1.0, 2 * ncols)[::2]
    np.testing.assert_array_equal(executor(strided), executor(strided.copy()))
    for bad_x in (np.ones(ncols + 1), np.ones(ncols - 1), np.ones((ncols, 1)), np.ones((1, ncols))):
        with pytest.raises(ValueError, match="expected"):
            executor(bad_x)
        with pytest.raises(ValueError, match="expected"):
            spmv_hbp_serial(hbp, bad_x)
    for bad_out in (np.empty(nrows, np.float32), np.empty(nrows + 1), np.empty(nrows - 1), np.empty((nrows, 1)),
                    np.empty(2 * nrows)[::2], [0.0] * nrows, np.empty(nrows, np.int64)):
        with pytest.raises(ValueError, match="out must be"):
            executor(x, out=bad_out)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="threads"):
            HBPCpuExecutor(hbp, threads=bad)


def test_fp32_executor_computes_in_fp32(power_law_hbp):
    matrix, _ = power_law_hbp
    hbp = build_hbp(matrix, "dp", block_height=256, block_width=4096, dtype=np.float32)
    x = np.random.default_rng(9).uniform(-1.0, 1.0, matrix.shape[1])
    y = HBPCpuExecutor(hbp, threads=3)(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, spmv_numba(matrix.astype(np.float32), x.astype(np.float32)))
    out = np.empty(matrix.shape[0], np.float32)
    assert HBPCpuExecutor(hbp)(x, out=out) is out
    with pytest.raises(ValueError, match="out must be"):
        HBPCpuExecutor(hbp)(x, out=np.empty(matrix.shape[0]))


def test_serial_reference_refuses_groups_wider_than_a_warp():
    hbp = build_hbp(sp.csr_matrix(np.ones((33, 1))), "sort", block_height=64, block_width=1)
    assert hbp.group_slot_ptr.tolist() == [0, 32, 33]
    merged = dataclasses.replace(hbp, block_group_ptr=np.array([0, 1], np.int32),
                                 group_slot_ptr=np.array([0, 33], np.int32), group_nz_offset=np.zeros(1, np.uint32))
    with pytest.raises(ValueError, match="more than 32"):
        spmv_hbp_serial(merged, np.ones(1))


# ---------------------------------------------------------------- panels


def _assert_balanced_panels(hbp: HBPMatrix, parts: int) -> None:
    panels = balanced_panels(hbp, parts)
    assert panels.dtype == np.int64 and 1 <= panels.shape[0] <= parts + 1
    if hbp.n_rowblocks == 0:
        assert panels.tolist() == [0]
        return
    assert panels[0] == 0 and panels[-1] == hbp.n_rowblocks and np.all(np.diff(panels) > 0)
    before_rowblock = hbp.block_nz_ptr[hbp.row_block_ptr]
    panel_nnz = np.diff(before_rowblock[panels])
    largest_rowblock = int(np.diff(before_rowblock).max())
    assert np.all(np.abs(panel_nnz - hbp.nnz / parts) <= largest_rowblock), (panel_nnz, largest_rowblock)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 400), st.integers(1, 200), st.sampled_from([1, 4, 20, 64]), st.integers(1, 12),
       st.integers(0, 2**32 - 1))
def test_balanced_panels_on_random_matrices(nrows, ncols, block_height, parts, seed):
    matrix = synthetic.generate({"generator": "power_law", "nrows": nrows, "ncols": ncols,
                                 "mean_row_length": min(6, ncols)}, np.random.default_rng(seed)) if nrows else \
        sp.csr_matrix((0, ncols))
    _assert_balanced_panels(build_hbp(matrix, "sort", block_height, 64), parts)


def test_balanced_panels_examples(power_law_hbp):
    _, hbp = power_law_hbp
    for parts in (1, 2, 3, 7, 16, hbp.n_rowblocks, 10 * hbp.n_rowblocks):
        _assert_balanced_panels(hbp, parts)
    assert balanced_panels(hbp, 1).tolist() == [0, hbp.n_rowblocks]
    # Row blocks of 100, 1, 1, 1 and 1 nonzeros in two panels: the big one alone.
    rows = np.r_[np.zeros(100, np.int64), 1, 2, 3, 4]
    cols = np.r_[np.arange(100), 0, 0, 0, 0]
    skewed = build_hbp(sp.csr_matrix((np.ones(104), (rows, cols)), shape=(5, 100)), block_height=1)
    assert balanced_panels(skewed, 2).tolist() == [0, 1, 5]
    assert balanced_panels(skewed, 4).tolist() == [0, 1, 5], "empty panels are dropped"
    assert balanced_panels(build_hbp(sp.csr_matrix((6, 4)), block_height=2), 3).tolist() == [0, 3]
    # The big row block last: the cut goes before it (the boundary nearest half the nonzeros), not after it,
    # which would leave one panel holding everything.
    tail_heavy = build_hbp(sp.csr_matrix((np.ones(104), (np.r_[0, 1, 2, 3, np.full(100, 4)],
                                                          np.r_[0, 0, 0, 0, np.arange(100)])), shape=(5, 100)),
                           block_height=1)
    assert balanced_panels(tail_heavy, 2).tolist() == [0, 4, 5]


# ---------------------------------------------------------------- block shape and bytes


@pytest.mark.parametrize(("shape", "itemsize", "threads", "l2_bytes", "expected"), [
    ((10**6, 10**6), 8, 1, MIB, (65536, 16384)),  # W: 1 MiB / 8 / 8 B; H: 1 MiB / 2 / 8 B = 65536 (the cap)
    ((10**6, 10**6), 4, 1, MIB, (65536, 32768)),  # fp32 doubles W; H stays at the cap
    ((10**6, 10**6), 8, 16, MIB, (15648, 16384)),  # H: ceil(10^6 / 64) = 15625, up to a multiple of 32
    ((10**6, 10**6), 4, 16, MIB, (15648, 32768)),
    ((10**7, 10**7), 8, 1, 256 * 1024, (16384, 4096)),
    ((10**7, 10**7), 4, 1, 256 * 1024, (32768, 8192)),
    ((10**7, 10**7), 8, 1, 4 * MIB, (65536, 65536)),  # both capped by 16-bit offsets
    ((10**7, 10**7), 8, 1, 3 * MIB, (65536, 32768)),  # not a power of two: the largest one below
    ((10**7, 10**7), 8, 1, 2 * MIB + 1, (65536, 32768)),
    ((10**7, 3000), 8, 1, MIB, (65536, 3000)),  # W cut to ncols
    ((100, 300), 8, 2, MIB, (32, 300)),  # H: ceil(100 / 8) = 13, at least 32
    ((1000, 5), 8, 2, MIB, (128, 5)),  # ceil(1000 / 8) = 125 -> 128
    ((1024, 5), 8, 2, MIB, (128, 5)),
    ((1025, 5), 8, 2, MIB, (160, 5)),
    ((0, 0), 8, 4, MIB, (32, 1)),
    ((10**6, 10**6), 8, 1, 1, (1, 1)),
])
def test_cpu_block_shape_rule(shape, itemsize, threads, l2_bytes, expected):
    height, width = cpu_block_shape(shape, itemsize, threads=threads, l2_bytes=l2_bytes)
    assert (height, width) == expected and type(height) is int and type(width) is int


def test_cpu_block_shape_defaults_to_this_machine():
    for shape in ((10**6, 10**6), (5000, 300)):
        for itemsize in (8, 4):
            assert cpu_block_shape(shape, itemsize) == cpu_block_shape(
                shape, itemsize, threads=machine.available_cpus(), l2_bytes=machine.cpu_caches()["L2"])


def _csr_bytes(matrix: sp.csr_matrix, itemsize: int) -> int:
    """CSR with int32 indices: values, column indices and row pointers."""
    return (itemsize + 4) * matrix.nnz + 4 * (matrix.shape[0] + 1)


def _expected_nbytes(hbp: HBPMatrix) -> int:
    """Every array of the contract: pointers, per-block, per-group, per-slot and per-nonzero bytes."""
    return (4 * (hbp.n_rowblocks + 1) + 4 * hbp.n_blocks + (8 + 4) * (hbp.n_blocks + 1) + 4 * (hbp.n_groups + 1)
            + 4 * hbp.n_groups + (2 + 2) * hbp.n_slots + (2 + hbp.values.itemsize) * hbp.nnz)


# The bytes a layout has whatever its size: the pointers' last entries (4 + 8 + 4 + 4) and one block with one group
# (4 + 8 + 4, 4 + 4). They dominate a 3-nonzero matrix (JGD_Kocay/Trec4: 86 bytes against CSR's 48).
FIXED_BYTES = 44


def test_bytes_per_nonzero_on_shared_matrices(suitesparse_dir):
    """Within 1.35 x CSR's bytes (12 + 4 (nrows + 1) / nnz per nonzero in fp64) with the CPU block shape."""
    paths = sorted(path for path in suitesparse_dir.iterdir() if path.name.endswith((".mtx", ".mtx.gz")))
    assert paths
    for path in paths:
        matrix = _canonical(shared_matrix(path))
        for threads in (None, 1, 64):
            shape = cpu_block_shape(matrix.shape, 8, threads=threads)
            for ordering in ORDERINGS:
                hbp = build_hbp(matrix, ordering, *shape)
                assert hbp.nbytes() == _expected_nbytes(hbp)
                assert hbp.bytes_per_nonzero() == pytest.approx(hbp.nbytes() / matrix.nnz)
                limit = 1.35 * _csr_bytes(matrix, 8) + FIXED_BYTES
                assert hbp.nbytes() <= limit, f"{path.name} {ordering} {shape}: {hbp.bytes_per_nonzero():.2f} B/nnz"


def test_bytes_per_nonzero_on_a_power_law_matrix():
    matrix = synthetic.generate({"generator": "power_law", "nrows": 200_000, "ncols": 200_000,
                                 "mean_row_length": 6}, np.random.default_rng(9))
    for dtype, itemsize in ((np.float64, 8), (np.float32, 4)):
        for threads in (1, 2, 16):
            hbp = build_hbp(matrix, "hash", *cpu_block_shape(matrix.shape, itemsize, threads=threads, l2_bytes=MIB),
                            dtype=dtype)
            assert hbp.nbytes() == _expected_nbytes(hbp)
            assert hbp.nbytes() <= 1.35 * _csr_bytes(matrix, itemsize), f"{np.dtype(dtype).name} {threads} threads"
    assert np.isnan(build_hbp(sp.csr_matrix((3, 3))).bytes_per_nonzero())
    assert build_hbp(sp.csr_matrix((3, 3))).nbytes() == _expected_nbytes(build_hbp(sp.csr_matrix((3, 3))))


# ---------------------------------------------------------------- machine


def test_cpu_caches_are_positive_ints():
    caches = machine.cpu_caches()
    assert set(caches) == {"L1d", "L2", "L3"}
    assert all(type(size) is int and size > 0 for size in caches.values())
    assert caches["L1d"] <= caches["L2"]
    assert type(machine.available_cpus()) is int and machine.available_cpus() >= 1
    assert isinstance(machine.caches_measured(), bool)


@pytest.mark.parametrize(("text", "size"), [("1024K", 1024**2), ("32M", 32 * 1024**2), ("512", 512), ("48K", 49152),
                                            ("48k", 49152), ("2G", 2 * 1024**3), ("36608K", 36608 * 1024)])
def test_parse_size(text, size):
    assert machine._parse_size(text) == size


@pytest.mark.parametrize("text", ["", "K", "1.5M", "12 KB", "abc"])
def test_parse_size_refuses_other_text(text):
    with pytest.raises(ValueError):
        machine._parse_size(text)


@pytest.fixture
def fake_sysfs(tmp_path, monkeypatch):
    """A sysfs cache folder under tmp_path in place of the machine's; the cached sizes are forgotten before and
    after."""
    machine.cpu_caches.cache_clear()
    machine._sysfs_caches.cache_clear()
    monkeypatch.setattr(machine, "_SYSFS_CACHE", tmp_path)
    yield tmp_path
    machine.cpu_caches.cache_clear()
    machine._sysfs_caches.cache_clear()


def _cache_entry(folder, name: str, **files: str) -> None:
    (folder / name).mkdir()
    for file_name, text in files.items():
        (folder / name / file_name).write_text(text + "\n")


def test_cpu_caches_read_from_sysfs(fake_sysfs):
    _cache_entry(fake_sysfs, "index0", level="1", type="Data", size="48K")
    _cache_entry(fake_sysfs, "index1", level="1", type="Instruction", size="32K")
    _cache_entry(fake_sysfs, "index2", level="2", type="Unified", size="2048K")
    _cache_entry(fake_sysfs, "index3", level="3", type="Unified", size="105M")
    _cache_entry(fake_sysfs, "index4", level="4", type="Unified", size="1G")  # not a level we keep
    assert machine.cpu_caches() == {"L1d": 48 * 1024, "L2": 2 * MIB, "L3": 105 * MIB}
    assert machine.caches_measured()


def test_cpu_caches_fall_back_per_level(fake_sysfs):
    _cache_entry(fake_sysfs, "index0", level="1", type="Data", size="64K")
    _cache_entry(fake_sysfs, "index2", level="2", type="Unified")  # no size file: skipped
    _cache_entry(fake_sysfs, "index3", level="3", type="Unified", size="lots")  # unreadable size: skipped
    assert machine.cpu_caches() == {**machine.FALLBACK_CACHES, "L1d": 64 * 1024}
    assert machine.caches_measured()


def test_cpu_caches_without_sysfs(fake_sysfs, monkeypatch):
    monkeypatch.setattr(machine, "_SYSFS_CACHE", fake_sysfs / "missing")
    assert machine.cpu_caches() == machine.FALLBACK_CACHES and not machine.caches_measured()
    assert machine.cpu_caches() is not machine.FALLBACK_CACHES
