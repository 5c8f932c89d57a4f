"""SuiteSparse matrices by ``Group/Name``: local folders first, then the cache, then a download.

Search order for a matrix ``Group/Name``:

1. every folder in ``$REPRO_MATRIX_DIRS`` (in order), trying in each the files
   ``Group__Name.mtx``, ``Group/Name.mtx``, ``Group/Name/Name.mtx``, ``Name.mtx`` and
   ``Name/Name.mtx``, each also gzip-compressed with ``.gz`` appended;
2. the cache, ``cache_dir("suitesparse")/Group/Name/Name.mtx``;
3. a download of the collection's Matrix Market tarball ``<base>/MM/Group/Name.tar.gz``,
   where ``<base>`` is ``$REPRO_SUITESPARSE_URL`` or the collection's own site. Only
   ``Name/Name.mtx`` is taken from the tarball, into the cache.

The collection's index (every matrix with its size, for ``--matrices all``) is the
collection's own ``files/ssstats.csv`` (:func:`collection_index`): from
``$REPRO_SUITESPARSE_INDEX`` (a local file or an http(s) URL) when set, else from
``<base>/files/ssstats.csv``, so one loopback mirror laid out like the collection's site
serves both the index and the tarballs. A downloaded index is cached for
:data:`INDEX_MAX_AGE_DAYS` days, as ssgetpy caches its own.

The collection publishes no checksums, so no matrix file can be verified: its sha256 as
found is recorded in the provenance with ``verified: false``. A download is written to a
scratch folder and its tarball extracted by :mod:`reproduce.harness.data.archives` (every
member checked, the folder renamed into the cache only when complete), so an interrupted
or hostile download leaves nothing a later run would read.
"""

import contextlib
import csv
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests
import scipy.sparse as sp

from reproduce.harness.data.archives import extract
from reproduce.harness.data.mtx import read_header, read_matrix_market
from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir, env_dirs, env_url

COLLECTION_URL = "https://sparse.tamu.edu"
MATRIX_DIRS_VARIABLE = "REPRO_MATRIX_DIRS"
MIRROR_VARIABLE = "REPRO_SUITESPARSE_URL"
INDEX_VARIABLE = "REPRO_SUITESPARSE_INDEX"
INDEX_PATH = "files/ssstats.csv"
INDEX_MAX_AGE_DAYS = 90
# ssstats.csv, after its two header lines (the count of matrices, the date of the last
# revision): one line per matrix in id order, these columns, then others we do not read.
INDEX_COLUMNS = ("group", "name", "rows", "cols", "nnz", "isReal", "isBinary", "isND", "posdef", "psym", "nsym",
                 "kind")
NAME_PART = re.compile(r"[A-Za-z0-9_.-]+")
MATRIX_SUFFIXES = (".mtx", ".mtx.gz")
DOWNLOAD_TIMEOUT_S = 60
SEARCH_LIMIT = 100


@dataclass(frozen=True)
class MatrixSource:
    """Where a matrix file came from.

    Attributes
    ----------
    name : str
        ``"Group/Name"`` (or the file's stem for an explicit file without a group).
    path : Path
        The ``.mtx`` or ``.mtx.gz`` file.
    source : str
        ``"local"`` (a folder of ``$REPRO_MATRIX_DIRS`` or an explicit file),
        ``"cache"`` or ``"download"``.
    url : str or None
        The tarball's URL for a download, else None.
    sha256 : str
        Hex SHA-256 of the file at ``path``.
    """

    name: str
    path: Path
    source: str
    url: str | None
    sha256: str

    def provenance(self) -> dict:
        """The JSON-serialisable record of this source: source, name, file, sha256, url, verified.

        ``verified`` is always False: the collection publishes no checksum to compare with,
        so ``sha256`` is what the file had when it was read, not a checked value.
        """
        return {
            "source": self.source,
            "name": self.name,
            "file": str(self.path),
            "sha256": self.sha256,
            "url": self.url,
            "verified": False,
        }


def locate_matrix(name: str, *, download: bool = True) -> MatrixSource:
    """Find the Matrix Market file of a SuiteSparse matrix, downloading it if allowed.

    Parameters
    ----------
    name : str
        ``"Group/Name"`` as in the collection, e.g. ``"HB/bcsstk09"``.
    download : bool
        Whether to download the matrix when it is neither local nor cached.

    Returns
    -------
    MatrixSource
        The file found (or downloaded into the cache) and its provenance.

    Raises
    ------
    DataError
        If the name is invalid, or the matrix is not available and cannot be downloaded.
    """
    group, matrix_name = _split_name(name)
    local_file = _find_local(group, matrix_name)
    if local_file is not None:
        return _matrix_source(name, local_file, "local")
    cached_file = _cache_path(group, matrix_name)
    if cached_file.is_file():
        return _matrix_source(name, cached_file, "cache")
    if not download:
        raise DataError(
            f"SuiteSparse matrix {name} is neither in a folder of {MATRIX_DIRS_VARIABLE} nor in the cache "
            f"and downloads are off; {_placement_hint(group, matrix_name)} or allow downloads; "
            "the smoke scale runs without downloads."
        )
    url = _tarball_url(group, matrix_name)
    _download_into_cache(group, matrix_name, url, cached_file)
    return _matrix_source(name, cached_file, "download", url)


def load_matrix(name: str, *, download: bool = True) -> tuple[sp.csr_matrix, MatrixSource]:
    """Locate a SuiteSparse matrix by ``Group/Name`` and read it.

    Returns
    -------
    matrix : scipy.sparse.csr_matrix
        As :func:`reproduce.harness.data.mtx.read_matrix_market` returns it: full
        storage, canonical, float64 or complex128 values.
    source : MatrixSource
        Where the file came from.
    """
    source = locate_matrix(name, download=download)
    return read_matrix_market(source.path), source


def load_matrix_file(path: str | Path) -> tuple[sp.csr_matrix, MatrixSource]:
    """Read an explicit Matrix Market file.

    The name is ``Group/Name`` for a file named ``Group__Name.mtx`` (or ``.mtx.gz``),
    otherwise the file name without its suffixes.

    Returns
    -------
    matrix : scipy.sparse.csr_matrix
        As :func:`reproduce.harness.data.mtx.read_matrix_market` returns it.
    source : MatrixSource
        With source ``"local"`` and no URL.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such Matrix Market file; check the path.")
    stem = _matrix_stem(path.name) or path.name
    name = stem.replace("__", "/", 1)
    return read_matrix_market(path), _matrix_source(name, path, "local")


def local_matrices(dirs: Iterable[str | Path] | None = None) -> list[str]:
    """The ``Group/Name`` of every Matrix Market file in the given folders, sorted.

    Parameters
    ----------
    dirs : iterable of str or Path, optional
        The folders to list; by default those of ``$REPRO_MATRIX_DIRS``.

    Returns
    -------
    list of str
        Unique names, from files laid out as ``Group__Name.mtx``, ``Group/Name.mtx`` or
        ``Group/Name/Name.mtx`` (each also ``.gz``). Files that carry no group
        (``Name.mtx``, ``Name/Name.mtx``) are left out: load them with
        :func:`load_matrix_file`.
    """
    folders = env_dirs(MATRIX_DIRS_VARIABLE) if dirs is None else [Path(folder) for folder in dirs]
    names = {name for folder in folders for name in _names_in_folder(folder) if _is_matrix_name(name)}
    return sorted(names)


def search_collection(limit: int = SEARCH_LIMIT, **filters) -> list[dict]:
    """Search the collection's index with ssgetpy.

    ssgetpy is imported here, not at module import, because importing it downloads the
    collection's index (and creates ``~/.ssgetpy``).

    Parameters
    ----------
    limit : int
        The most matrices to return (ssgetpy silently caps results at 10 otherwise).
    **filters
        Passed to ``ssgetpy.search``: ``group``, ``name``, ``rowbounds``, ``colbounds``,
        ``nzbounds``, ``dtype``, ``isspd``, ``is2d3d``, ``kind``.

    Returns
    -------
    list of dict
        One dict per matrix: name (``Group/Name``), id, group, rows, cols, nnz, dtype,
        is2d3d, isspd, psym, nsym, kind.

    Raises
    ------
    DataError
        If ssgetpy is missing, cannot reach its index, or fails in any other way.
    """
    try:
        import ssgetpy

        return [_search_record(matrix) for matrix in ssgetpy.search(limit=limit, **filters)]
    except ImportError as exc:
        raise DataError(
            f"ssgetpy cannot be imported ({exc}); install it (pip install ssgetpy) to search the collection, "
            "or name matrices as Group/Name directly."
        ) from exc
    except Exception as exc:
        raise DataError(
            f"Searching the SuiteSparse index with ssgetpy failed ({type(exc).__name__}: {exc}); "
            "it needs the network to fetch its index, so name matrices as Group/Name directly when offline."
        ) from exc


def collection_index(*, min_nnz: int | None = None, max_nnz: int | None = None,
                     max_rows: int | None = None) -> list[dict]:
    """Every matrix in the collection's index, in id order, optionally filtered by size.

    The index is ``ssstats.csv`` (see the module docstring for where it comes from), read
    here rather than through ssgetpy, whose import fetches the index from the collection
    itself and so cannot be pointed at a mirror or a file.

    Parameters
    ----------
    min_nnz, max_nnz : int, optional
        Keep matrices with at least / at most this many nonzeros (as the index counts them:
        the whole matrix, both triangles of a symmetric one).
    max_rows : int, optional
        Keep matrices with at most this many rows.

    Returns
    -------
    list of dict
        As :func:`search_collection` returns them: name (``Group/Name``), id, group, rows,
        cols, nnz, dtype, is2d3d, isspd, psym, nsym, kind.

    Raises
    ------
    DataError
        If the index cannot be read or fetched, or is not in ssstats.csv's format.
    """
    path, label = _index_file()
    entries = parse_index(path.read_text(encoding="utf-8", errors="replace"), label)
    return [entry for entry in entries
            if (min_nnz is None or entry["nnz"] >= min_nnz) and (max_nnz is None or entry["nnz"] <= max_nnz)
            and (max_rows is None or entry["rows"] <= max_rows)]


def parse_index(text: str, label: str = "ssstats.csv") -> list[dict]:
    """The entries of an index in ssstats.csv's format (see :data:`INDEX_COLUMNS`).

    Line 1 is the number of matrices and must match the lines that follow; line 2 the
    date of the last revision; line ``k + 2`` the matrix with id ``k``. Entries whose
    ``Group/Name`` could not name a file here are left out (none in the collection today).
    """
    lines = text.splitlines()
    try:
        declared = int(lines[0])
        rows = list(csv.reader(lines[2:]))
    except (IndexError, ValueError, csv.Error):
        raise DataError(f"{label} is not a SuiteSparse index (ssstats.csv): its first line is not the number of "
                        "matrices") from None
    rows = [row for row in rows if row]
    if len(rows) != declared:
        raise DataError(f"{label} declares {declared} matrices but lists {len(rows)}; it is truncated or not "
                        "ssstats.csv")
    entries = []
    for matrix_id, row in enumerate(rows, start=1):
        try:
            fields = dict(zip(INDEX_COLUMNS, row[: len(INDEX_COLUMNS)], strict=True))
            entry = {"name": f"{fields['group']}/{fields['name']}", "id": matrix_id, "group": fields["group"],
                     "rows": int(fields["rows"]), "cols": int(fields["cols"]), "nnz": int(fields["nnz"]),
                     "dtype": "binary" if int(fields["isBinary"]) else ("real" if int(fields["isReal"]) else "complex"),
                     "is2d3d": bool(int(fields["isND"])), "isspd": bool(int(fields["posdef"])),
                     "psym": float(fields["psym"]), "nsym": float(fields["nsym"]), "kind": fields["kind"]}
        except ValueError:
            raise DataError(f"{label}, line {matrix_id + 2}: not an ssstats.csv row ({','.join(row)[:80]!r})") from None
        if _is_matrix_name(entry["name"]):
            entries.append(entry)
    return entries


def _index_file() -> tuple[Path, str]:
    """The index as a local file (reading ``$REPRO_SUITESPARSE_INDEX`` or downloading it), and its label."""
    value = os.environ.get(INDEX_VARIABLE, "").strip()
    if value and "://" not in value:
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"{INDEX_VARIABLE} names {path}, which is not a file; point it at a copy of the "
                            "collection's ssstats.csv, or unset it to download the index.")
        return path, str(path)
    url = env_url(INDEX_VARIABLE) or f"{env_url(MIRROR_VARIABLE) or COLLECTION_URL}/{INDEX_PATH}"
    cached = cache_dir("suitesparse") / f"ssstats.{hashlib.sha256(url.encode()).hexdigest()[:12]}.csv"
    if cached.is_file() and time.time() - cached.stat().st_mtime < INDEX_MAX_AGE_DAYS * 86400:
        return cached, url
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".index-") as scratch:
        fetched = _download(url, Path(scratch), "ssstats.csv", what="the SuiteSparse index",
                            remedy=f"set {INDEX_VARIABLE} to a local copy of ssstats.csv, or {MIRROR_VARIABLE} "
                                   "to a reachable mirror")
        parse_index(fetched.read_text(encoding="utf-8", errors="replace"), url)
        os.replace(fetched, cached)
    return cached, url


def remove_downloaded(name: str) -> None:
    """Delete the cached file of matrix ``Group/Name`` (and its folder, and the group's when empty)."""
    group, matrix_name = _split_name(name)
    folder = _cache_path(group, matrix_name).parent
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


def _search_record(matrix) -> dict:
    """The plain-data view of one ``ssgetpy`` matrix."""
    return {
        "name": f"{matrix.group}/{matrix.name}",
        "id": matrix.id,
        "group": matrix.group,
        "rows": matrix.rows,
        "cols": matrix.cols,
        "nnz": matrix.nnz,
        "dtype": matrix.dtype,
        "is2d3d": matrix.is2d3d,
        "isspd": matrix.isspd,
        "psym": matrix.psym,
        "nsym": matrix.nsym,
        "kind": matrix.kind,
    }


def _split_name(name: str) -> tuple[str, str]:
    """Validate ``Group/Name`` and return its two parts."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(NAME_PART.fullmatch(part) and part.strip(".") for part in parts):
        raise DataError(
            f"{name!r} is not a SuiteSparse matrix name; use 'Group/Name' made of letters, digits, "
            "'_', '-' and '.', for example 'HB/bcsstk09'."
        )
    return parts[0], parts[1]


def _matrix_stem(filename: str) -> str | None:
    """``filename`` without ``.mtx`` or ``.mtx.gz``, or None if it has neither suffix."""
    for suffix in MATRIX_SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def _local_candidates(folder: Path, group: str, name: str) -> Iterator[Path]:
    """The files that may hold ``group/name`` in one folder, most specific first."""
    for stem in (f"{group}__{name}", f"{group}/{name}", f"{group}/{name}/{name}", name, f"{name}/{name}"):
        for suffix in MATRIX_SUFFIXES:
            yield folder / f"{stem}{suffix}"


def _find_local(group: str, name: str) -> Path | None:
    """The first existing candidate file in the folders of ``$REPRO_MATRIX_DIRS``."""
    for folder in env_dirs(MATRIX_DIRS_VARIABLE):
        for candidate in _local_candidates(folder, group, name):
            if candidate.is_file():
                return candidate
    return None


def _names_in_folder(folder: Path) -> Iterator[str]:
    """The ``Group/Name`` (not yet validated) of each file laid out by a grouped scheme."""
    for path in folder.glob("*"):
        stem = _matrix_stem(path.name)
        if path.is_file() and stem and "__" in stem:
            yield stem.replace("__", "/", 1)
    for path in folder.glob("*/*"):
        stem = _matrix_stem(path.name)
        if path.is_file() and stem and stem != path.parent.name:
            yield f"{path.parent.name}/{stem}"
    for path in folder.glob("*/*/*"):
        stem = _matrix_stem(path.name)
        if path.is_file() and stem == path.parent.name:
            yield f"{path.parent.parent.name}/{stem}"


def _is_matrix_name(name: str) -> bool:
    """Whether ``name`` is a valid ``Group/Name``."""
    try:
        _split_name(name)
    except DataError:
        return False
    return True


def _cache_path(group: str, name: str) -> Path:
    """Where the cache keeps ``group/name`` (the file may not exist)."""
    return cache_dir("suitesparse") / group / name / f"{name}.mtx"


def _tarball_url(group: str, name: str) -> str:
    """The collection's (or the mirror's) Matrix Market tarball of ``group/name``."""
    base = env_url(MIRROR_VARIABLE) or COLLECTION_URL
    return f"{base}/MM/{group}/{name}.tar.gz"


def _placement_hint(group: str, name: str) -> str:
    """Where the user can put the file by hand."""
    return f"place {group}__{name}.mtx (or {name}.mtx) in a folder listed in {MATRIX_DIRS_VARIABLE}"


def _matrix_source(name: str, path: Path, source: str, url: str | None = None) -> MatrixSource:
    """A :class:`MatrixSource` with the file's sha256."""
    return MatrixSource(name=name, path=path, source=source, url=url, sha256=_sha256(path))


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _download_into_cache(group: str, matrix_name: str, url: str, target: Path) -> None:
    """Download the tarball and extract its ``Name/Name.mtx`` into ``target``'s folder, whole or not at all.

    The tarball goes to a scratch folder inside the cache (removed afterwards, whatever
    happens); :func:`~reproduce.harness.data.archives.extract` checks every member and
    renames the new folder into place only once the matrix file is written and its header
    reads as Matrix Market.
    """
    name = f"{group}/{matrix_name}"
    label = f"The download of {name} from {url}"

    def check(folder: Path) -> None:
        try:
            read_header(folder / target.name)
        except DataError as exc:
            raise DataError(f"{label} is not a valid Matrix Market file ({exc}); it was discarded.") from None

    with tempfile.TemporaryDirectory(dir=cache_dir("suitesparse"), prefix=".download-") as scratch:
        tarball = _fetch(group, matrix_name, url, Path(scratch))
        extract(tarball, target.parent, root=matrix_name, members=[target.name], check=check, label=label)


def _fetch(group: str, matrix_name: str, url: str, folder: Path) -> Path:
    """Download the tarball of ``group/matrix_name`` from ``url`` into ``folder``."""
    return _download(url, folder, "matrix.tar.gz", what=f"SuiteSparse matrix {group}/{matrix_name}",
                     remedy=f"{_placement_hint(group, matrix_name)}, or set {MIRROR_VARIABLE} to a reachable mirror; "
                            "the smoke scale runs without downloads")


def _download(url: str, folder: Path, fname: str, *, what: str, remedy: str) -> Path:
    """Download ``url`` into ``folder/fname`` with pooch; a network failure is a DataError naming ``what``."""
    downloader = pooch.HTTPDownloader(progressbar=_show_progress(), timeout=DOWNLOAD_TIMEOUT_S)
    try:
        with _quiet_pooch():
            fetched = pooch.retrieve(url, known_hash=None, fname=fname, path=folder, downloader=downloader)
    except (requests.RequestException, OSError) as exc:
        raise DataError(f"Cannot download {what} from {url} ({_failure_reason(exc)}); {remedy}.") from exc
    return Path(fetched)


def _show_progress() -> bool:
    """Show pooch's progress bar only on a terminal, and only if tqdm is there to draw it."""
    return sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None


@contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Silence pooch's info messages (its advice to pin a hash we cannot know)."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _failure_reason(exc: Exception) -> str:
    """A short reason for a failed download."""
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code} {response.reason}"
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return "the server cannot be reached; offline?"
    return f"{type(exc).__name__}: {exc}"
