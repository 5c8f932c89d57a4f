"""``--matrices all``: the collection's index (ssstats.csv), size filters, a sharded sweep that
downloads each matrix from a loopback mirror just before its unit and deletes it after."""

import io
import tarfile

import pytest

from reproduce.harness.cli import main
from reproduce.harness.data import suitesparse
from reproduce.harness.data.mtx import read_matrix_market
from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir
from reproduce.harness.records import load_records

# Real shared matrices, served by the mirror as the collection packs them.
SERVED = ["Newman/karate", "HB/ash219", "HB/west0479", "Bai/olm1000"]
# In the index but never served: every size filter below must keep it out.
HUGE = "Fake,huge,5000000,5000000,900000000,1,0,0,0,0,0,synthetic problem,900000000"


def _tarball(mtx: bytes, name: str) -> bytes:
    """``Name/Name.mtx`` in a tar.gz, as the collection's MM tarballs hold it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        folder = tarfile.TarInfo(name)
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        member = tarfile.TarInfo(f"{name}/{name}.mtx")
        member.size = len(mtx)
        archive.addfile(member, io.BytesIO(mtx))
    return buffer.getvalue()


def _index_row(name: str, path) -> str:
    """The matrix's ssstats.csv line: Group, Name, nrows, ncols, nnz, isReal, isBinary, isND, posdef, psym, nsym,
    kind, then the number of stored entries."""
    group, matrix_name = name.split("/")
    matrix = read_matrix_market(path)
    header = path.read_text().splitlines()[0]
    kind = next(line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                if line.lstrip("% ").startswith("kind:"))
    binary = int("pattern" in header)
    return f"{group},{matrix_name},{matrix.shape[0]},{matrix.shape[1]},{matrix.nnz},{1 - binary},{binary},0,0,1,1," \
           f"{kind},{matrix.nnz}"


@pytest.fixture
def mirror(http_root, suitesparse_dir, monkeypatch):
    """A loopback mirror laid out like the collection's site (files/ssstats.csv, MM/Group/Name.tar.gz).

    Yields ``(root, {name: nnz})``; REPRO_MATRIX_DIRS is unset so every matrix comes from the mirror.
    """
    root, base_url = http_root
    rows, sizes = [], {}
    for name in SERVED:
        path = suitesparse_dir / f"{name.replace('/', '__')}.mtx"
        group, matrix_name = name.split("/")
        tarball = root / "MM" / group / f"{matrix_name}.tar.gz"
        tarball.parent.mkdir(parents=True, exist_ok=True)
        tarball.write_bytes(_tarball(path.read_bytes(), matrix_name))
        rows.append(_index_row(name, path))
        sizes[name] = int(rows[-1].split(",")[4])
    rows.insert(2, HUGE)
    (root / "files").mkdir()
    (root / "files" / "ssstats.csv").write_text("\n".join([str(len(rows)), "17-Oct-2023 18:21:39", *rows]) + "\n")
    monkeypatch.delenv("REPRO_MATRIX_DIRS", raising=False)
    monkeypatch.delenv("REPRO_SUITESPARSE_INDEX", raising=False)
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", base_url)
    return root, sizes


def _cached_matrices() -> list:
    return sorted(cache_dir("suitesparse").rglob("*.mtx"))


def test_index_is_read_in_id_order_and_filtered(mirror):
    _, sizes = mirror
    everything = suitesparse.collection_index()
    assert [e["name"] for e in everything] == ["Newman/karate", "HB/ash219", "Fake/huge", "HB/west0479",
                                               "Bai/olm1000"]
    assert [e["id"] for e in everything] == [1, 2, 3, 4, 5]
    karate = everything[0]
    assert (karate["rows"], karate["nnz"], karate["dtype"], karate["kind"]) == (34, 156, "binary",
                                                                                 "undirected graph")
    small = suitesparse.collection_index(max_nnz=1000)
    assert {e["name"] for e in small} == {n for n, nnz in sizes.items() if nnz <= 1000}
    assert [e["name"] for e in suitesparse.collection_index(min_nnz=10**6)] == ["Fake/huge"]
    assert [e["name"] for e in suitesparse.collection_index(max_rows=40)] == ["Newman/karate"]


def test_index_from_a_local_file_and_bad_indexes(mirror, tmp_path, monkeypatch, dead_url):
    root, _ = mirror
    local = tmp_path / "ssstats.csv"
    local.write_text((root / "files" / "ssstats.csv").read_text())
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", dead_url)
    monkeypatch.setenv("REPRO_SUITESPARSE_INDEX", str(local))
    assert len(suitesparse.collection_index()) == 5
    lines = local.read_text().splitlines()
    local.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="declares 5 matrices but lists 4"):
        suitesparse.collection_index()
    local.write_text("\n".join([lines[0], lines[1], "HB,x,many,3,4,1,0,0,0,1,1,kind", *lines[3:]]))
    with pytest.raises(DataError, match=r"line 3: not an ssstats.csv row"):
        suitesparse.collection_index()
    monkeypatch.setenv("REPRO_SUITESPARSE_INDEX", str(tmp_path / "nowhere.csv"))
    with pytest.raises(DataError, match="REPRO_SUITESPARSE_INDEX names .*nowhere.csv, which is not a file"):
        suitesparse.collection_index()
    monkeypatch.delenv("REPRO_SUITESPARSE_INDEX")
    with pytest.raises(DataError, match=r"Cannot download the SuiteSparse index from .*files/ssstats.csv .*"
                                        r"REPRO_SUITESPARSE_INDEX"):
        suitesparse.collection_index()


def test_downloaded_index_is_cached(mirror):
    root, _ = mirror
    assert len(suitesparse.collection_index()) == 5
    (root / "files" / "ssstats.csv").unlink()
    assert len(suitesparse.collection_index()) == 5


def test_whole_collection_sweep_sharded_against_the_mirror(mirror, tmp_path, monkeypatch, capsys):
    import reproduce.hbp.spmv as spmv

    root, sizes = mirror
    monkeypatch.setattr(spmv, "cpu_bandwidth", lambda: {"triad_gbs": 10.0})  # not measured in a unit test
    out = tmp_path / "results"
    args = ["run", "hbp/spmv", "--scale", "smoke", "--device", "cpu", "--out", str(out), "--no-progress",
            "--matrices", "all", "--max-nnz", "100000"]
    shares = []
    for shard in ("1/2", "2/2"):
        assert main([*args, "--shard", shard]) == 0
        text = capsys.readouterr().out
        line = next(line for line in text.splitlines() if line.startswith(f"shard {shard}:"))
        shares.append(int(line.split()[2]))
        assert " of 4 units" in line
    assert sum(shares) == 4

    records = load_records(out, "hbp", "spmv", "smoke")
    assert sorted(r.unit for r in records) == sorted(name.replace("/", "__") for name in SERVED)
    assert len({r.config_hash for r in records}) == 1 and all(r.status == "ok" for r in records)
    for record in records:
        name = record.params["matrix"]
        assert record.params["index"]["nnz"] == sizes[name] == record.value("nnz")
        assert record.data["source"] == "download" and record.data["deleted_after_use"] is True
        assert record.data["url"].endswith(f"/MM/{name}.tar.gz")
    assert _cached_matrices() == [], "each matrix is deleted once its unit has read it"

    for tarball in (root / "MM").rglob("*.tar.gz"):
        tarball.unlink()
    assert main([*args, "--shard", "1/2"]) == 0
    assert f"reused {shares[0]} from earlier runs" in capsys.readouterr().out


def test_keep_matrices_keeps_downloads_and_the_config_hash(mirror, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["run", "hbp/correctness", "--scale", "smoke", "--device", "cpu", "--out", str(out), "--no-progress",
            "--matrices", "all", "--max-nnz", "2000"]
    assert main([*args, "--keep-matrices"]) == 0
    assert "3 ok, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in _cached_matrices()) == ["ash219.mtx", "karate.mtx", "west0479.mtx"]
    assert all(r.data["source"] == "download" and "deleted_after_use" not in r.data
               for r in load_records(out, "hbp", "correctness", "smoke"))
    assert main(args) == 0
    assert "reused 3 from earlier runs" in capsys.readouterr().out


def test_collection_options_misused_are_one_line_errors(mirror, tmp_path, capsys):
    base = ["run", "hbp/correctness", "--scale", "smoke", "--device", "cpu", "--out", str(tmp_path), "--no-progress"]
    assert main([*base, "--matrices", "all", "HB/west0479"]) == 2
    assert "--matrices all stands alone" in capsys.readouterr().err
    assert main([*base, "--max-nnz", "10"]) == 2
    assert "use them with --matrices all" in capsys.readouterr().err
    assert main([*base, "--matrices", "all", "--min-nnz", "10", "--max-nnz", "20"]) == 2
    assert "no matrix of the SuiteSparse index passes --min-nnz 10, --max-nnz 20" in capsys.readouterr().err


def test_size_filters_keep_out_of_the_artifacts_own_config_keys():
    from reproduce.harness.cli import _overrides, build_parser
    from reproduce.hbp.preprocessing import ARTIFACT as PREPROCESSING

    args = build_parser(PREPROCESSING).parse_args(["run", "hbp/preprocessing", "--matrices", "all", "--min-nnz", "5",
                                                   "--max-rows", "9"])
    overrides = _overrides(args, PREPROCESSING)
    assert overrides == {"matrices": ["all"], "index_min_nnz": 5, "index_max_rows": 9}
    assert PREPROCESSING.scales["quick"]["min_nnz"] == 2000, "hbp/preprocessing's own min_nnz is untouched"
