"""A Matrix Market reader that returns canonical CSR and says what is wrong with a bad file.

The banner and the size line are parsed by hand; the entry lines are parsed in bulk by
pandas' C reader. Only when that bulk parse fails, or an index is out of range, is the
file scanned line by line to name the offending line in the error message.

Supported: ``matrix`` objects in ``coordinate`` and ``array`` format; fields ``real``,
``integer``, ``pattern`` and ``complex``; symmetries ``general``, ``symmetric``,
``skew-symmetric`` and ``hermitian``; plain or gzip-compressed files (``.mtx``,
``.mtx.gz``, recognised by their content).
"""

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import scipy.sparse as sp

from reproduce.harness.errors import DataError

BANNER = "%%matrixmarket"
FORMATS = ("coordinate", "array")
FIELDS = ("real", "integer", "pattern", "complex")
SYMMETRIES = ("general", "symmetric", "skew-symmetric", "hermitian")
VALUE_COLUMNS = {"real": 1, "integer": 1, "pattern": 0, "complex": 2}
GZIP_MAGIC = b"\x1f\x8b"
MAX_BANNER_BYTES = 1024
INT32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class MatrixMarketHeader:
    """What the banner and the size line of a Matrix Market file declare.

    Attributes
    ----------
    object : str
        Always ``"matrix"``.
    format : str
        ``"coordinate"`` or ``"array"``.
    field : str
        ``"real"``, ``"integer"``, ``"pattern"`` or ``"complex"``.
    symmetry : str
        ``"general"``, ``"symmetric"``, ``"skew-symmetric"`` or ``"hermitian"``.
    nrows, ncols : int
        The matrix dimensions.
    entries : int
        The number of entries stored in the file: the size line's count for coordinate
        files; for array files the values a dense column-major listing holds (one
        triangle for symmetric matrices, without the diagonal for skew-symmetric ones).
    """

    object: str
    format: str
    field: str
    symmetry: str
    nrows: int
    ncols: int
    entries: int

    @property
    def index_fields(self) -> int:
        """How many fields of an entry line are indices (2 for coordinate, 0 for array)."""
        return 2 if self.format == "coordinate" else 0

    @property
    def fields_per_entry(self) -> int:
        """How many whitespace-separated fields each entry line holds."""
        return self.index_fields + VALUE_COLUMNS[self.field]


def read_header(path: str | Path) -> MatrixMarketHeader:
    """Read and validate the banner and the size line of a Matrix Market file.

    Parameters
    ----------
    path : str or Path
        A ``.mtx`` file, plain or gzip-compressed.

    Returns
    -------
    MatrixMarketHeader
        The declared format, field, symmetry, shape and stored entry count.

    Raises
    ------
    DataError
        If the file is missing, unreadable, or its banner or size line is invalid.
    """
    path = Path(path)
    with _open_matrix_file(path) as handle:
        header, _ = _parse_header(handle, path)
    return header


def read_matrix_market(path: str | Path) -> sp.csr_matrix:
    """Read a Matrix Market file into a canonical CSR matrix with full storage.

    Symmetric, skew-symmetric and hermitian files are expanded to both triangles (the
    diagonal is not duplicated; the mirrored entries are negated for skew-symmetric and
    conjugated for hermitian files). Duplicate entries are summed. Explicit zeros of a
    coordinate file are kept; zeros of an array (dense) file are not stored.

    Parameters
    ----------
    path : str or Path
        A ``.mtx`` file, plain or gzip-compressed.

    Returns
    -------
    scipy.sparse.csr_matrix
        Shape ``(nrows, ncols)`` with sorted indices and no duplicates. ``data`` is
        float64 for real, integer and pattern files (pattern entries are 1.0) and
        complex128 for complex files. ``indptr`` and ``indices`` are int32 when the
        dimensions and the entry count fit in int32, int64 otherwise.

    Raises
    ------
    DataError
        If the file is missing or broken; the message names the file and the problem
        (bad banner, unsupported type, bad size line, truncated file, too many entries,
        an index out of range, a non-numeric value), with the line where there is one.
    """
    path = Path(path)
    with _open_matrix_file(path) as handle:
        header, first_data_line = _parse_header(handle, path)
        columns = _read_entry_columns(handle, header, path, first_data_line)
    rows, cols, values = _coordinates(header, columns, path, first_data_line)
    rows, cols, values = _expand_symmetry(header.symmetry, rows, cols, values)
    return _to_csr(rows, cols, values, (header.nrows, header.ncols))


@contextmanager
def _open_matrix_file(path: Path) -> Iterator[BinaryIO]:
    """Open a plain or gzip file for binary reading; turn I/O failures into DataError."""
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) if compressed else raw as handle:
                yield handle
    except FileNotFoundError:
        raise DataError(f"{path}: no such Matrix Market file; check the path.") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the file ({exc}); it may be corrupt or truncated.") from exc


def _parse_header(handle: BinaryIO, path: Path) -> tuple[MatrixMarketHeader, int]:
    """Parse the banner, skip comments, parse the size line.

    Returns the header and the 1-based number of the first line after the size line.
    """
    banner = handle.readline(MAX_BANNER_BYTES)
    kind = _parse_banner(banner, path)
    line_number = 1
    for line in iter(handle.readline, b""):
        line_number += 1
        if line.strip() and not line.lstrip().startswith(b"%"):
            return _parse_size_line(line, kind, path, line_number), line_number + 1
    raise DataError(f"{path}: the file ends before its size line; it is truncated or not a Matrix Market file.")


def _parse_banner(banner: bytes, path: Path) -> tuple[str, str, str, str]:
    """Validate ``%%MatrixMarket object format field symmetry``; return the four words."""
    tokens = banner.decode("latin-1").lower().split()
    if len(tokens) != 5 or tokens[0] != BANNER:
        raise DataError(
            f"{path}: the first line {_shown(banner)} is not a Matrix Market banner "
            "such as '%%MatrixMarket matrix coordinate real general'."
        )
    matrix_object, storage, field, symmetry = tokens[1:]
    for what, value, allowed in (
        ("object", matrix_object, ("matrix",)),
        ("format", storage, FORMATS),
        ("field", field, FIELDS),
        ("symmetry", symmetry, SYMMETRIES),
    ):
        if value not in allowed:
            raise DataError(f"{path}: unsupported Matrix Market {what} {value!r}; supported: {', '.join(allowed)}.")
    if storage == "array" and field == "pattern":
        raise DataError(f"{path}: 'array pattern' is not a valid Matrix Market type (an array stores values).")
    return matrix_object, storage, field, symmetry


def _parse_size_line(line: bytes, kind: tuple[str, str, str, str], path: Path, line_number: int) -> MatrixMarketHeader:
    """Parse ``rows cols entries`` (coordinate) or ``rows cols`` (array)."""
    matrix_object, storage, field, symmetry = kind
    expected = "rows cols entries" if storage == "coordinate" else "rows cols"
    tokens = line.split()
    if len(tokens) != len(expected.split()) or not all(token.isdigit() for token in tokens):
        raise DataError(
            f"{path}: line {line_number} should be the size line '{expected}' "
            f"(non-negative integers) but reads {_shown(line)}."
        )
    nrows, ncols = int(tokens[0]), int(tokens[1])
    if symmetry != "general" and nrows != ncols:
        raise DataError(f"{path}: a {symmetry} matrix must be square, but the size line says {nrows} x {ncols}.")
    entries = int(tokens[2]) if storage == "coordinate" else _array_entries(nrows, ncols, symmetry)
    return MatrixMarketHeader(matrix_object, storage, field, symmetry, nrows, ncols, entries)


def _array_entries(nrows: int, ncols: int, symmetry: str) -> int:
    """How many values an array file lists: all, one triangle, or the strict triangle."""
    if symmetry == "general":
        return nrows * ncols
    if symmetry == "skew-symmetric":
        return nrows * (nrows - 1) // 2
    return nrows * (nrows + 1) // 2


def _read_entry_columns(
    handle: BinaryIO, header: MatrixMarketHeader, path: Path, first_data_line: int
) -> list[np.ndarray]:
    """Parse all entry lines in bulk; return one array per field (int64 indices, float64 values)."""
    dtypes = {position: np.float64 for position in range(header.fields_per_entry)}
    dtypes.update({position: np.int64 for position in range(header.index_fields)})
    try:
        table = pd.read_csv(
            handle,
            sep=r"\s+",
            header=None,
            dtype=dtypes,
            comment="%",
            engine="c",
            na_filter=False,
            nrows=header.entries + 1,
            encoding="latin-1",
        )
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=range(header.fields_per_entry))
    except (ValueError, OverflowError) as exc:
        raise DataError(_describe_bad_entries(path, header, first_data_line, str(exc))) from None
    if table.shape[1] != header.fields_per_entry:
        raise DataError(_describe_bad_entries(path, header, first_data_line, f"{table.shape[1]} fields per line"))
    _check_entry_count(len(table), header, path)
    return [table[position].to_numpy(dtype=dtypes[position]) for position in range(header.fields_per_entry)]


def _check_entry_count(found: int, header: MatrixMarketHeader, path: Path) -> None:
    """Compare the number of entry lines with what the size line declares."""
    if found < header.entries:
        raise DataError(
            f"{path}: the file ends after {found} of the {header.entries} entries its size line declares; "
            "it is truncated (download or copy it again)."
        )
    if found > header.entries:
        raise DataError(
            f"{path}: the file holds more entries than the {header.entries} its size line declares; "
            "the size line or the file is wrong."
        )


def _coordinates(
    header: MatrixMarketHeader, columns: list[np.ndarray], path: Path, first_data_line: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based row and column indices and the values of the stored entries."""
    values = _values(header.field, columns[header.index_fields :], header.entries)
    if header.format == "array":
        rows, cols = _array_positions(header)
        keep = values != 0
        return rows[keep], cols[keep], values[keep]
    rows, cols = columns[0], columns[1]
    if rows.size and (rows.min() < 1 or rows.max() > header.nrows or cols.min() < 1 or cols.max() > header.ncols):
        raise DataError(_describe_bad_entries(path, header, first_data_line, "an index out of range"))
    return rows - 1, cols - 1, values


def _values(field: str, value_columns: list[np.ndarray], count: int) -> np.ndarray:
    """The entry values as float64 (real, integer, pattern -> 1.0) or complex128."""
    if field == "pattern":
        return np.ones(count, dtype=np.float64)
    if field == "complex":
        real, imaginary = value_columns
        values = np.empty(count, dtype=np.complex128)
        values.real, values.imag = real, imaginary
        return values
    return value_columns[0]


def _array_positions(header: MatrixMarketHeader) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each value of an array file, listed column by column."""
    if header.symmetry == "general":
        cols, rows = np.divmod(np.arange(header.entries, dtype=np.int64), header.nrows)
        return rows, cols
    offset = 1 if header.symmetry == "skew-symmetric" else 0
    cols, rows = np.triu_indices(header.nrows, k=offset)
    return rows.astype(np.int64), cols.astype(np.int64)


def _expand_symmetry(
    symmetry: str, rows: np.ndarray, cols: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add the mirror image of every off-diagonal entry of a symmetric-type matrix."""
    if symmetry == "general":
        return rows, cols, values
    off_diagonal = rows != cols
    mirrored = values[off_diagonal]
    if symmetry == "skew-symmetric":
        mirrored = -mirrored
    elif symmetry == "hermitian":
        mirrored = np.conj(mirrored)
    return (
        np.concatenate([rows, cols[off_diagonal]]),
        np.concatenate([cols, rows[off_diagonal]]),
        np.concatenate([values, mirrored]),
    )


def _to_csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Canonical CSR (sorted, duplicates summed) with int32 indices where they fit."""
    index_dtype = np.int32 if max(*shape, values.size) <= INT32_MAX else np.int64
    matrix = sp.csr_matrix(sp.coo_matrix((values, (rows.astype(index_dtype), cols.astype(index_dtype))), shape=shape))
    matrix.sum_duplicates()
    matrix.indices = matrix.indices.astype(index_dtype, copy=False)
    matrix.indptr = matrix.indptr.astype(index_dtype, copy=False)
    return matrix


def _describe_bad_entries(path: Path, header: MatrixMarketHeader, first_data_line: int, fallback: str) -> str:
    """Scan the entry lines (error path only) and describe the first bad one."""
    with _open_matrix_file(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split(b"%", 1)[0].split()
            if line_number < first_data_line or not fields:
                continue
            problem = _entry_problem(fields, header)
            if problem:
                return f"{path}: line {line_number} {problem}: {_shown(line)}."
    return f"{path}: cannot parse the entry lines ({fallback})."


def _entry_problem(fields: list[bytes], header: MatrixMarketHeader) -> str | None:
    """What is wrong with one entry line, or None."""
    if len(fields) != header.fields_per_entry:
        return f"has {len(fields)} fields where a {header.format} {header.field} entry has {header.fields_per_entry}"
    for what, token, limit in zip(("row", "column"), fields[: header.index_fields], (header.nrows, header.ncols)):
        try:
            index = int(token)
        except ValueError:
            return f"has a {what} index {token.decode('latin-1')!r} that is not an integer"
        if not 1 <= index <= limit:
            return f"has {what} index {index} outside 1..{limit} (indices are 1-based)"
    for token in fields[header.index_fields :]:
        try:
            float(token)
        except ValueError:
            return f"has a value {token.decode('latin-1')!r} that is not a number"
    return None


def _shown(line: bytes) -> str:
    """A line of the file as quoted text for a message, cut to 80 characters."""
    return repr(line.strip()[:80].decode("latin-1"))
