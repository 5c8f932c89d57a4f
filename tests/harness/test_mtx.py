"""The Matrix Market reader against scipy.io.mmread on real matrices, on every variant, on broken files."""

import csv
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from reproduce.harness.data.mtx import MatrixMarketHeader, read_header, read_matrix_market
from reproduce.harness.errors import DataError

REAL = "%%MatrixMarket matrix coordinate real general\n"
SHARED_MATRICES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "suitesparse"


def _shared_matrix_names() -> list[str]:
    """The .mtx file names of the first matrix folder found (as the suitesparse_dir fixture finds it)."""
    folders = [Path(entry) for entry in os.environ.get("REPRO_MATRIX_DIRS", "").split(os.pathsep) if entry]
    for folder in [*folders, SHARED_MATRICES]:
        if folder.is_dir():
            return sorted(path.name for path in folder.glob("*.mtx"))
    return []


def _manifest(folder: Path) -> dict[str, dict]:
    """MANIFEST.csv rows by file name, or an empty dict when the folder has none."""
    manifest = folder / "MANIFEST.csv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def _scipy_csr(path: Path) -> sp.csr_matrix:
    """scipy's reading of the file as canonical CSR (scipy expands symmetric storage)."""
    reference = sp.csr_matrix(scipy.io.mmread(path))
    reference.sum_duplicates()
    return reference


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _assert_same_matrix(ours: sp.csr_matrix, reference: sp.csr_matrix) -> None:
    """Same shape and structure exactly, values to 1e-15 relative, and our dtypes."""
    assert isinstance(ours, sp.csr_matrix)
    assert ours.has_sorted_indices and ours.has_canonical_format
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(ours.indptr, reference.indptr)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    expected_dtype = np.complex128 if np.iscomplexobj(reference.data) else np.float64
    assert ours.dtype == expected_dtype
    np.testing.assert_allclose(ours.data, reference.data.astype(expected_dtype), rtol=1e-15, atol=0)


@pytest.mark.parametrize("filename", _shared_matrix_names())
def test_real_matrix_matches_scipy(suitesparse_dir, filename):
    path = suitesparse_dir / filename
    ours = read_matrix_market(path)
    _assert_same_matrix(ours, _scipy_csr(path))
    assert ours.indices.dtype == np.int32 and ours.indptr.dtype == np.int32


@pytest.mark.parametrize("filename", _shared_matrix_names())
def test_real_header_matches_manifest(suitesparse_dir, filename):
    row = _manifest(suitesparse_dir).get(filename)
    if row is None:
        pytest.skip(f"{filename} is not in MANIFEST.csv")
    header = read_header(suitesparse_dir / filename)
    assert header == MatrixMarketHeader(
        "matrix",
        "coordinate",
        row["field"],
        row["symmetry"],
        int(row["rows"]),
        int(row["cols"]),
        int(row["entries_stored"]),
    )


def test_gzip_file_reads_like_the_plain_one(suitesparse_dir, tmp_path):
    plain = suitesparse_dir / "HB__bcsstk09.mtx"
    compressed = tmp_path / "HB__bcsstk09.mtx.gz"
    compressed.write_bytes(gzip.compress(plain.read_bytes()))
    _assert_same_matrix(read_matrix_market(compressed), read_matrix_market(plain))
    assert read_header(compressed) == read_header(plain)


def test_skew_symmetric_is_expanded_with_negated_mirror(tmp_path):
    path = _write(
        tmp_path,
        "skew.mtx",
        "%%MatrixMarket matrix coordinate real skew-symmetric\n3 3 2\n2 1 1.5\n3 2 -4\n",
    )
    expected = np.array([[0, -1.5, 0], [1.5, 0, 4], [0, -4, 0]])
    ours = read_matrix_market(path)
    np.testing.assert_array_equal(ours.toarray(), expected)
    _assert_same_matrix(ours, _scipy_csr(path))


def test_hermitian_is_expanded_with_conjugated_mirror(tmp_path):
    path = _write(
        tmp_path,
        "herm.mtx",
        "%%MatrixMarket matrix coordinate complex hermitian\n2 2 3\n1 1 2 0\n2 1 1 -3\n2 2 5 0\n",
    )
    expected = np.array([[2, 1 + 3j], [1 - 3j, 5]])
    ours = read_matrix_market(path)
    assert ours.dtype == np.complex128
    np.testing.assert_array_equal(ours.toarray(), expected)
    _assert_same_matrix(ours, _scipy_csr(path))


def test_symmetric_diagonal_is_not_duplicated(tmp_path):
    path = _write(tmp_path, "sym.mtx", "%%MatrixMarket matrix coordinate real symmetric\n2 2 2\n1 1 3\n2 1 7\n")
    np.testing.assert_array_equal(read_matrix_market(path).toarray(), [[3, 7], [7, 0]])


@pytest.mark.parametrize(
    ("symmetry", "values", "expected"),
    [
        ("general", "1\n2\n0\n4\n5\n6\n", [[1, 4], [2, 5], [0, 6]]),
        ("symmetric", "1\n2\n3\n", None),
        ("skew-symmetric", "2\n", None),
    ],
)
def test_array_format(tmp_path, symmetry, values, expected):
    shape = "3 2" if symmetry == "general" else "2 2"
    path = _write(tmp_path, "dense.mtx", f"%%MatrixMarket matrix array real {symmetry}\n% a comment\n{shape}\n{values}")
    ours = read_matrix_market(path)
    reference = sp.csr_matrix(scipy.io.mmread(path))
    if expected is not None:
        np.testing.assert_array_equal(ours.toarray(), expected)
    np.testing.assert_array_equal(ours.toarray(), reference.toarray())
    assert ours.nnz == np.count_nonzero(reference.toarray())
    assert ours.has_canonical_format


def test_array_complex(tmp_path):
    path = _write(tmp_path, "dense.mtx", "%%MatrixMarket matrix array complex general\n2 1\n1 2\n0 -1\n")
    np.testing.assert_array_equal(read_matrix_market(path).toarray(), [[1 + 2j], [-1j]])


def test_empty_rows_and_columns_keep_the_shape(tmp_path):
    path = _write(tmp_path, "gaps.mtx", REAL + "5 4 2\n2 1 1.0\n4 3 2.0\n")
    ours = read_matrix_market(path)
    assert ours.shape == (5, 4)
    np.testing.assert_array_equal(ours.indptr, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ours.indices, [0, 2])


def test_duplicates_are_summed_and_indices_sorted(tmp_path):
    path = _write(
        tmp_path,
        "dups.mtx",
        REAL + "2 3 4\n1 3 1.0\n1 1 2.0\n1 3 0.5\n2 2 1.0\n",
    )
    ours = read_matrix_market(path)
    np.testing.assert_array_equal(ours.indices, [0, 2, 1])
    np.testing.assert_array_equal(ours.data, [2.0, 1.5, 1.0])
    _assert_same_matrix(ours, _scipy_csr(path))


def test_pattern_and_integer_become_float64(tmp_path):
    pattern = _write(tmp_path, "p.mtx", "%%MatrixMarket matrix coordinate pattern general\n2 2 2\n1 2\n2 1\n")
    integer = _write(tmp_path, "i.mtx", "%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 2 -7\n")
    assert read_matrix_market(pattern).dtype == np.float64
    np.testing.assert_array_equal(read_matrix_market(pattern).toarray(), [[0, 1], [1, 0]])
    assert read_matrix_market(integer).dtype == np.float64
    np.testing.assert_array_equal(read_matrix_market(integer).toarray(), [[0, -7], [0, 0]])


def test_no_entries(tmp_path):
    path = _write(tmp_path, "empty.mtx", REAL + "3 4 0\n")
    ours = read_matrix_market(path)
    assert ours.shape == (3, 4) and ours.nnz == 0
    np.testing.assert_array_equal(ours.indptr, [0, 0, 0, 0])


def test_comments_blank_lines_and_odd_spacing(tmp_path):
    path = _write(
        tmp_path,
        "odd.mtx",
        "%%MatrixMarket Matrix Coordinate Real General\n%\n\n% more\n  2   2  2 \n"
        "\n 1\t1   1e-3\n% inside\n2 2 -2.5E+2  \n\n",
    )
    np.testing.assert_array_equal(read_matrix_market(path).toarray(), [[1e-3, 0], [0, -250]])


def test_int64_indices_when_a_dimension_exceeds_int32(tmp_path):
    path = _write(tmp_path, "wide.mtx", REAL + "2 3000000000 1\n2 2999999999 1.0\n")
    ours = read_matrix_market(path)
    assert ours.indices.dtype == np.int64 and ours.indptr.dtype == np.int64
    np.testing.assert_array_equal(ours.indices, [2999999998])


def _truncated_copy(source: Path, folder: Path, dropped_lines: int) -> Path:
    lines = source.read_text().splitlines(keepends=True)
    path = folder / source.name
    path.write_text("".join(lines[:-dropped_lines]))
    return path


def test_truncated_real_file(suitesparse_dir, tmp_path):
    path = _truncated_copy(suitesparse_dir / "HB__bcsstk09.mtx", tmp_path, 10)
    with pytest.raises(DataError, match=r"HB__bcsstk09\.mtx: the file ends after 9750 of the 9760 entries.*truncated"):
        read_matrix_market(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3 3 2\n1 1 1.0\n", r"first line .* is not a Matrix Market banner"),
        ("%%MatrixMarket matrix coordinate real\n3 3 1\n1 1 1\n", r"not a Matrix Market banner"),
        ("%MatrixMarket matrix coordinate real general\n3 3 1\n1 1 1\n", r"not a Matrix Market banner"),
        ("", r"not a Matrix Market banner"),
        (
            "%%MatrixMarket matrix coordinate double general\n3 3 1\n1 1 1\n",
            r"unsupported Matrix Market field 'double'",
        ),
        ("%%MatrixMarket matrix sparse real general\n3 3 1\n1 1 1\n", r"unsupported Matrix Market format 'sparse'"),
        ("%%MatrixMarket vector coordinate real general\n3 1\n1 1\n", r"unsupported Matrix Market object 'vector'"),
        ("%%MatrixMarket matrix coordinate real upper\n3 3 1\n1 1 1\n", r"unsupported Matrix Market symmetry 'upper'"),
        ("%%MatrixMarket matrix array pattern general\n3 3\n", r"'array pattern' is not a valid"),
        (REAL + "% only comments\n", r"ends before its size line"),
        (REAL + "3 3\n1 1 1\n", r"line 2 should be the size line 'rows cols entries'"),
        (REAL + "3 x 1\n1 1 1\n", r"line 2 should be the size line"),
        (REAL + "3 3 -1\n", r"should be the size line .*non-negative"),
        ("%%MatrixMarket matrix array real general\n3 3 9\n", r"should be the size line 'rows cols'"),
        ("%%MatrixMarket matrix coordinate real symmetric\n3 2 1\n1 1 1\n", r"symmetric matrix must be square.*3 x 2"),
        (REAL + "3 3 3\n1 1 1\n2 2 2\n", r"ends after 2 of the 3 entries"),
        (REAL + "3 3 1\n1 1 1\n2 2 2\n", r"more entries than the 1 its size line"),
        ("%%MatrixMarket matrix array real general\n2 1\n1\n", r"ends after 1 of the 2 entries"),
        (REAL + "3 3 2\n1 1 1\n4 1 1\n", r"line 4 has row index 4 outside 1..3"),
        (REAL + "3 2 2\n1 1 1\n1 3 1\n", r"line 4 has column index 3 outside 1..2"),
        (REAL + "3 3 1\n0 1 1\n", r"line 3 has row index 0 outside 1..3 \(indices are 1-based\)"),
        (REAL + "3 3 2\n1 1 1\n2 2 abc\n", r"line 4 has a value 'abc' that is not a number"),
        (REAL + "3 3 1\nx 1 1\n", r"line 3 has a row index 'x' that is not an integer"),
        (REAL + "3 3 1\n1.5 1 1\n", r"line 3 has a row index '1.5' that is not"),
        (REAL + "3 3 2\n1 1 1\n2 2\n", r"line 4 has 2 fields where a coordinate real entry has 3"),
        (REAL + "3 3 2\n1 1 1 5\n2 2 2\n", r"line 3 has 4 fields"),
        (REAL + "3 3 2\n1 1 1\n2 2 2 5\n", r"line 4 has 4 fields"),
        (
            "%%MatrixMarket matrix coordinate complex general\n3 3 1\n1 1 1\n",
            r"line 3 has 3 fields where a coordinate complex entry has 4",
        ),
        (
            "%%MatrixMarket matrix coordinate pattern general\n3 3 1\n1 1 1\n",
            r"line 3 has 3 fields where a coordinate pattern entry has 2",
        ),
    ],
)
def test_broken_file_raises_data_error_naming_file_and_problem(tmp_path, text, message):
    path = _write(tmp_path, "broken.mtx", text)
    with pytest.raises(DataError, match=r"broken\.mtx: .*" + message):
        read_matrix_market(path)


def test_broken_header_is_reported_by_read_header(tmp_path):
    path = _write(tmp_path, "broken.mtx", REAL + "3 3\n")
    with pytest.raises(DataError, match=r"broken\.mtx: line 2 should be the size line"):
        read_header(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.mtx: no such Matrix Market file"):
        read_matrix_market(tmp_path / "nowhere.mtx")


def test_binary_garbage(tmp_path):
    path = tmp_path / "garbage.mtx"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"garbage\.mtx: the first line .* is not a Matrix Market banner"):
        read_matrix_market(path)


def test_truncated_gzip(suitesparse_dir, tmp_path):
    compressed = gzip.compress((suitesparse_dir / "HB__bcsstk09.mtx").read_bytes())
    path = tmp_path / "HB__bcsstk09.mtx.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match=r"HB__bcsstk09\.mtx\.gz: .*(corrupt or truncated|truncated)"):
        read_matrix_market(path)
