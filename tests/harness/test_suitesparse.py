"""SuiteSparse lookup: local folders, the cache, downloads from a loopback mirror, ssgetpy."""

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
import requests

from reproduce.harness.data import suitesparse
from reproduce.harness.data.mtx import read_matrix_market
from reproduce.harness.data.suitesparse import (
    MatrixSource,
    load_matrix,
    load_matrix_file,
    local_matrices,
    locate_matrix,
    search_collection,
)
from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir

GROUP, NAME = "Newman", "karate"
MATRIX = f"{GROUP}/{NAME}"


@pytest.fixture
def karate(suitesparse_dir) -> Path:
    """A real small shared matrix file."""
    return suitesparse_dir / f"{GROUP}__{NAME}.mtx"


@pytest.fixture
def no_local_dirs(monkeypatch):
    """No REPRO_MATRIX_DIRS, so lookups go to the cache and the mirror."""
    monkeypatch.delenv("REPRO_MATRIX_DIRS", raising=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_files() -> list[Path]:
    return [path for path in cache_dir().rglob("*") if not path.is_dir()]


def _add_member(archive: tarfile.TarFile, name: str, payload: bytes, **attributes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    for key, value in attributes.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(payload) if info.isfile() else None)


def _pack(members: list[tuple[str, bytes, dict]]) -> bytes:
    """A tar.gz holding the given (name, payload, TarInfo attributes) members, in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload, attributes in members:
            _add_member(archive, name, payload, **attributes)
    return buffer.getvalue()


def _serve(root: Path, payload: bytes) -> Path:
    """Put a tarball where the collection keeps it: MM/<Group>/<Name>.tar.gz."""
    path = root / "MM" / GROUP / f"{NAME}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _collection_tarball(matrix_file: Path) -> bytes:
    """The matrix packed as the collection packs it, with a companion file as some tarballs have."""
    return _pack(
        [
            (f"{NAME}", b"", {"type": tarfile.DIRTYPE}),
            (f"{NAME}/{NAME}.mtx", matrix_file.read_bytes(), {}),
            (f"{NAME}/{NAME}_nodename.txt", b"node names\n", {}),
        ]
    )


@pytest.mark.parametrize(
    "layout",
    [
        "Newman__karate.mtx",
        "Newman/karate.mtx",
        "Newman/karate/karate.mtx",
        "karate.mtx",
        "karate/karate.mtx",
        "Newman__karate.mtx.gz",
        "Newman/karate/karate.mtx.gz",
    ],
)
def test_lookup_in_matrix_dirs_under_each_naming_scheme(karate, tmp_path, monkeypatch, layout):
    folder = tmp_path / "matrices"
    placed = folder / layout
    placed.parent.mkdir(parents=True, exist_ok=True)
    contents = karate.read_bytes()
    placed.write_bytes(gzip.compress(contents) if layout.endswith(".gz") else contents)
    monkeypatch.setenv("REPRO_MATRIX_DIRS", str(folder))

    source = locate_matrix(MATRIX, download=False)

    assert source == MatrixSource(MATRIX, placed, "local", None, _sha256(placed))
    matrix, loaded = load_matrix(MATRIX, download=False)
    assert loaded == source
    assert (matrix != read_matrix_market(karate)).nnz == 0


def test_provenance_is_json_with_the_manifest_checksum(suitesparse_dir, karate, monkeypatch):
    monkeypatch.setenv("REPRO_MATRIX_DIRS", str(suitesparse_dir))
    with (suitesparse_dir / "MANIFEST.csv").open(newline="") as handle:
        published = {row["file"]: row["sha256"] for row in csv.DictReader(handle)}
    provenance = locate_matrix(MATRIX).provenance()
    assert json.loads(json.dumps(provenance)) == {
        "source": "local",
        "name": MATRIX,
        "file": str(karate),
        "sha256": published[karate.name],
        "url": None,
        "verified": False,
    }


def test_search_order_first_folder_then_most_specific_name(karate, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    (second / "Newman__karate.mtx").write_bytes(karate.read_bytes())
    (first / "karate.mtx").write_bytes(karate.read_bytes())
    (first / "Newman__karate.mtx").write_bytes(karate.read_bytes())
    monkeypatch.setenv("REPRO_MATRIX_DIRS", f"{first}{os.pathsep}{second}")
    assert locate_matrix(MATRIX).path == first / "Newman__karate.mtx"


def test_local_dirs_win_over_the_cache(karate, tmp_path, monkeypatch):
    cached = cache_dir("suitesparse", GROUP, NAME) / f"{NAME}.mtx"
    cached.write_bytes(karate.read_bytes())
    monkeypatch.setenv("REPRO_MATRIX_DIRS", str(karate.parent))
    assert locate_matrix(MATRIX, download=False).source == "local"
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("REPRO_MATRIX_DIRS", str(tmp_path / "empty"))
    assert locate_matrix(MATRIX, download=False) == MatrixSource(MATRIX, cached, "cache", None, _sha256(karate))


def test_every_shared_matrix_loads_by_name(suitesparse_dir, monkeypatch):
    monkeypatch.setenv("REPRO_MATRIX_DIRS", str(suitesparse_dir))
    with (suitesparse_dir / "MANIFEST.csv").open(newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert local_matrices() == sorted(f"{row['group']}/{row['name']}" for row in manifest)
    for row in manifest:
        matrix, source = load_matrix(f"{row['group']}/{row['name']}", download=False)
        assert source.source == "local" and source.sha256 == row["sha256"]
        assert matrix.shape == (int(row["rows"]), int(row["cols"]))


def test_local_matrices_lists_grouped_layouts_only(tmp_path, no_local_dirs):
    folder = tmp_path / "matrices"
    for relative in [
        "HB__west0479.mtx",
        "HB__west0497.mtx.gz",
        "Bai/olm1000.mtx",
        "Rajat/rajat11/rajat11.mtx.gz",
        "bare.mtx",
        "alone/alone.mtx",
        "notes.txt",
        "Group/readme.txt",
        "bad name__x.mtx",
    ]:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    assert local_matrices([folder]) == ["Bai/olm1000", "HB/west0479", "HB/west0497", "Rajat/rajat11"]
    assert local_matrices() == []


def test_load_matrix_file_names_the_matrix_from_the_file(karate, tmp_path):
    matrix, source = load_matrix_file(karate)
    assert source == MatrixSource(MATRIX, karate, "local", None, _sha256(karate))
    assert matrix.shape == (34, 34)
    plain = tmp_path / "karate.mtx.gz"
    plain.write_bytes(gzip.compress(karate.read_bytes()))
    assert load_matrix_file(plain)[1].name == "karate"
    with pytest.raises(DataError, match=r"missing\.mtx: no such Matrix Market file"):
        load_matrix_file(tmp_path / "missing.mtx")


@pytest.mark.parametrize(
    "name", ["karate", "Newman/karate/x", "../etc", "Newman/..", "Newman/kar ate", "Newman/", "", "a/b;rm"]
)
def test_invalid_names_are_refused(name):
    with pytest.raises(DataError, match=r"is not a SuiteSparse matrix name; use 'Group/Name'"):
        locate_matrix(name, download=False)


def test_not_found_without_download(no_local_dirs):
    with pytest.raises(DataError, match=r"Newman/karate .*downloads are off.*REPRO_MATRIX_DIRS.*smoke scale"):
        locate_matrix(MATRIX, download=False)


def test_download_from_mirror_then_cache(karate, http_root, dead_url, no_local_dirs, monkeypatch):
    root, base_url = http_root
    _serve(root, _collection_tarball(karate))
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", base_url + "/")

    matrix, source = load_matrix(MATRIX)

    cached = cache_dir("suitesparse") / GROUP / NAME / f"{NAME}.mtx"
    url = f"{base_url}/MM/{GROUP}/{NAME}.tar.gz"
    assert source == MatrixSource(MATRIX, cached, "download", url, _sha256(karate))
    assert cached.read_bytes() == karate.read_bytes()
    assert _cache_files() == [cached]
    assert (matrix != read_matrix_market(karate)).nnz == 0

    monkeypatch.setenv("REPRO_SUITESPARSE_URL", dead_url)
    assert locate_matrix(MATRIX) == MatrixSource(MATRIX, cached, "cache", None, _sha256(karate))


def test_offline_names_matrix_url_and_remedy(dead_url, no_local_dirs, monkeypatch):
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", dead_url)
    with pytest.raises(DataError) as error:
        locate_matrix(MATRIX)
    message = str(error.value)
    assert f"Newman/karate from {dead_url}/MM/Newman/karate.tar.gz" in message
    assert "cannot be reached" in message
    assert "Newman__karate.mtx" in message and "REPRO_MATRIX_DIRS" in message
    assert "smoke scale runs without downloads" in message
    assert _cache_files() == []


def test_missing_on_the_server(http_root, no_local_dirs, monkeypatch):
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", http_root[1])
    with pytest.raises(
        DataError, match=r"Cannot download SuiteSparse matrix Newman/karate from .*\(HTTP 404 .*REPRO_MATRIX_DIRS"
    ):
        locate_matrix(MATRIX)
    assert _cache_files() == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "html"])
def test_corrupt_tarball_leaves_nothing(karate, http_root, no_local_dirs, monkeypatch, damage):
    root, base_url = http_root
    tarball = _collection_tarball(karate)
    payload = {
        "garbage": bytes(range(256)) * 16,
        "truncated": tarball[: len(tarball) // 2],
        "html": b"<html><body>Service unavailable</body></html>",
    }[damage]
    _serve(root, payload)
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", base_url)
    with pytest.raises(DataError, match=r"download of Newman/karate from .* is not a readable archive"):
        locate_matrix(MATRIX)
    assert _cache_files() == []


def test_tarball_without_the_matrix(http_root, no_local_dirs, monkeypatch):
    root, base_url = http_root
    _serve(root, _pack([("other/other.mtx", b"%%MatrixMarket matrix coordinate real general\n1 1 0\n", {})]))
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", base_url)
    with pytest.raises(DataError, match=r"lacks the member karate/karate\.mtx"):
        locate_matrix(MATRIX)
    assert _cache_files() == []


def test_tarball_with_a_broken_matrix(http_root, no_local_dirs, monkeypatch):
    root, base_url = http_root
    _serve(root, _pack([(f"{NAME}/{NAME}.mtx", b"not a matrix\n", {})]))
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", base_url)
    with pytest.raises(DataError, match=r"download of Newman/karate .* is not a valid Matrix Market file"):
        locate_matrix(MATRIX)
    assert _cache_files() == []


@pytest.mark.parametrize(
    "unsafe",
    [
        ("../escaped.mtx", b"x", {}),
        ("karate/../../escaped.mtx", b"x", {}),
        ("/tmp/escaped.mtx", b"x", {}),
        ("karate/link.mtx", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
        (f"{NAME}/{NAME}.mtx", b"", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink-as-matrix"],
)
def test_tarball_with_unsafe_member_is_refused(karate, http_root, no_local_dirs, monkeypatch, tmp_path, unsafe):
    root, base_url = http_root
    _serve(root, _pack([(f"{NAME}/{NAME}.mtx", karate.read_bytes(), {}), unsafe]))
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", base_url)
    with pytest.raises(DataError, match=r"contains an unsafe member .*the archive was refused"):
        locate_matrix(MATRIX)
    assert _cache_files() == []
    assert not any(path.name == "escaped.mtx" for path in tmp_path.rglob("*"))


def test_module_import_does_not_import_ssgetpy():
    code = "import sys, reproduce.harness.data.suitesparse; assert 'ssgetpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_search_without_ssgetpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "ssgetpy", None)
    with pytest.raises(DataError, match=r"ssgetpy cannot be imported .*pip install ssgetpy"):
        search_collection(limit=5)


def test_search_when_ssgetpy_import_fails_offline(tmp_path, monkeypatch):
    package = tmp_path / "fake" / "ssgetpy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ConnectionError('cannot fetch ssstats.csv')\n")
    monkeypatch.delitem(sys.modules, "ssgetpy", raising=False)
    monkeypatch.syspath_prepend(str(package.parent))
    with pytest.raises(DataError, match=r"ssgetpy failed \(ConnectionError: cannot fetch ssstats\.csv\).*offline"):
        search_collection(limit=5)


def test_search_when_the_query_fails(monkeypatch):
    def search(**kwargs):
        raise requests.ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "ssgetpy", types.SimpleNamespace(search=search))
    with pytest.raises(DataError, match=r"ssgetpy failed \(ConnectionError: offline\)"):
        search_collection(limit=5, group="HB")


def test_search_passes_limit_and_returns_plain_records(monkeypatch):
    calls = []
    found = types.SimpleNamespace(
        id=1,
        group="HB",
        name="bcsstk09",
        rows=1083,
        cols=1083,
        nnz=18437,
        dtype="real",
        is2d3d=False,
        isspd=True,
        psym=1.0,
        nsym=1.0,
        kind="structural problem",
    )

    def search(**kwargs):
        calls.append(kwargs)
        return [found]

    monkeypatch.setitem(sys.modules, "ssgetpy", types.SimpleNamespace(search=search))
    records = search_collection(limit=3, group="HB", isspd=True)
    assert calls == [{"limit": 3, "group": "HB", "isspd": True}]
    assert records == [
        {
            "name": "HB/bcsstk09",
            "id": 1,
            "group": "HB",
            "rows": 1083,
            "cols": 1083,
            "nnz": 18437,
            "dtype": "real",
            "is2d3d": False,
            "isspd": True,
            "psym": 1.0,
            "nsym": 1.0,
            "kind": "structural problem",
        }
    ]
    json.dumps(records)
    assert search_collection(group="HB") and calls[-1]["limit"] == suitesparse.SEARCH_LIMIT
