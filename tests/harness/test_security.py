"""Hostile and damaged inputs: archives, pickles, cached weights and downloads cut off midway.

Each test tries one attack and checks it is refused with one clear DataError and that
nothing was written where a later run would trust it. (The report's escaping is tested in
test_report.py, in headless Chromium; environment paths in test_paths.py.)
"""

import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from reproduce.harness.data import archives, images, pickles
from reproduce.harness.data.archives import Limits, extract, read_members
from reproduce.harness.data.datasets import REGISTRY, fetch, file_digest
from reproduce.harness.data.images import cifar
from reproduce.harness.data.pickles import restricted_loads
from reproduce.harness.data.suitesparse import locate_matrix
from reproduce.harness.errors import DataError
from reproduce.harness.paths import STALE_AFTER_S, cache_dir, cached_weights, remove_stale

MATRIX = b"%%MatrixMarket matrix coordinate real general\n2 2 1\n1 1 1.0\n"


def _tar(path: Path, members: list[tuple[str, bytes, dict]]) -> Path:
    """A tar.gz of ``(name, payload, TarInfo attributes)`` members, in order."""
    with tarfile.open(path, "w:gz") as archive:
        for name, payload, attributes in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            for key, value in attributes.items():
                setattr(info, key, value)
            archive.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


def _zip(path: Path, members: list[tuple[str, bytes, int]]) -> Path:
    """A deflated zip of ``(name, payload, unix mode)`` members (mode 0: none recorded)."""
    with zipfile.ZipFile(path, "w") as bundle:
        for name, payload, mode in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = mode << 16
            bundle.writestr(info, payload)
    return path


def _files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


SAFE = ("data/ok.txt", b"fine", {})
UNSAFE_TAR = {
    "dotdot": (("../escape.txt", b"pwned", {}), "a '..' component"),
    "nested-dotdot": (("data/../../escape.txt", b"pwned", {}), "a '..' component"),
    "absolute": (("/tmp/escape.txt", b"pwned", {}), "an absolute path"),
    "symlink-out": (("data/link", b"", {"type": tarfile.SYMTYPE, "linkname": "../../escape.txt"}), "symbolic link"),
    "symlink-abs": (("data/link", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}), "symbolic link"),
    "hardlink-out": (("data/hard", b"", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}), "outside the archive"),
    "hardlink-dotdot": (("data/hard", b"", {"type": tarfile.LNKTYPE, "linkname": "../x"}), "outside the archive"),
    "device": (("data/dev", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}), "a device file"),
    "fifo": (("data/fifo", b"", {"type": tarfile.FIFOTYPE}), "a FIFO"),
}


@pytest.mark.parametrize("case", list(UNSAFE_TAR))
@pytest.mark.parametrize("unsafe_first", [True, False], ids=["unsafe-first", "unsafe-last"])
def test_tar_with_an_unsafe_member_is_refused_and_writes_nothing(tmp_path, case, unsafe_first):
    member, why = UNSAFE_TAR[case]
    members = [member, SAFE] if unsafe_first else [SAFE, member]
    (tmp_path / "in").mkdir()
    archive = _tar(tmp_path / "in" / "archive.tar.gz", members)
    target = tmp_path / "work" / "out"

    with pytest.raises(DataError, match=rf"archive\.tar\.gz contains an unsafe member .*{why}.*archive was refused"):
        extract(archive, target)

    assert not target.exists()
    assert _files_under(tmp_path) == ["in", "in/archive.tar.gz"]
    assert not Path("/tmp/escape.txt").exists()


@pytest.mark.parametrize(
    ("name", "mode", "why"),
    [("../escape.txt", 0o100644, "a '..' component"), ("/abs.txt", 0o100644, "an absolute path"),
     ("c:/win.txt", 0o100644, "an absolute path"), ("data\\..\\x", 0o100644, "backslash"),
     ("data/link", 0o120777, "a symbolic link"), ("data/fifo", 0o010644, "not a regular file")],
)
def test_zip_with_an_unsafe_member_is_refused_and_writes_nothing(tmp_path, name, mode, why):
    archive = _zip(tmp_path / "archive.zip", [("data/ok.txt", b"fine", 0o100644), (name, b"../../escape", mode)])
    target = tmp_path / "out"

    with pytest.raises(DataError, match=rf"archive\.zip contains an unsafe member .*{why}.*the archive was refused"):
        extract(archive, target)
    with pytest.raises(DataError, match="the archive was refused"):
        read_members(archive, ["data/ok.txt"])

    assert _files_under(tmp_path) == ["archive.zip"]


def test_read_members_refuses_an_unsafe_member_before_the_wanted_one(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("../escape.txt", b"x", {}), SAFE])
    with pytest.raises(DataError, match="unsafe member '../escape.txt'"):
        read_members(archive, ["data/ok.txt"])


def test_sizes_and_member_counts_are_bounded(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("data/big.bin", bytes(2048), {}), SAFE])
    with pytest.raises(DataError, match=r"'data/big\.bin' \(2048 bytes, above the 1024-byte member limit\)"):
        extract(archive, tmp_path / "out", limits=Limits(member_bytes=1024))
    with pytest.raises(DataError, match="exceeds the 2050-byte total limit"):
        extract(archive, tmp_path / "out", limits=Limits(total_bytes=2050))
    with pytest.raises(DataError, match="more than 1 members"):
        read_members(archive, ["data/ok.txt"], limits=Limits(members=1))
    bomb = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(1 << 20), 0o100644)])
    assert bomb.stat().st_size < 10_000
    with pytest.raises(DataError, match="above the 65536-byte member limit"):
        extract(bomb, tmp_path / "out", limits=Limits(member_bytes=1 << 16))
    assert _files_under(tmp_path) == ["a.tar.gz", "bomb.zip"]


def test_a_safe_tar_extracts_with_root_members_and_inner_hard_links(tmp_path):
    archive = _tar(tmp_path / "m.tar.gz", [
        ("m", b"", {"type": tarfile.DIRTYPE, "mode": 0o7777}),
        ("./m/m.mtx", MATRIX, {"mode": 0o4755}),
        ("m/copy.mtx", b"", {"type": tarfile.LNKTYPE, "linkname": "m/m.mtx"}),
        ("m/extra.txt", b"companion", {}),
        ("other/skip.txt", b"outside the root", {}),
    ])

    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as bundle:
        bundle.writestr("m/m.mtx", MATRIX)  # no Unix file type recorded, as zips written on Windows
        bundle.writestr("m/sub/", b"")
    assert _files_under(extract(tmp_path / "plain.zip", tmp_path / "zip", root="m")) == ["m.mtx", "sub"]
    everything = extract(archive, tmp_path / "all")
    only = extract(archive, tmp_path / "cache" / "G" / "m", root="m", members=["m.mtx", "copy.mtx"])

    assert _files_under(everything) == ["m", "m/copy.mtx", "m/extra.txt", "m/m.mtx", "other", "other/skip.txt"]
    assert _files_under(only) == ["copy.mtx", "m.mtx"]
    assert (only / "copy.mtx").read_bytes() == MATRIX and not (only / "copy.mtx").is_symlink()
    assert (only / "m.mtx").stat().st_mode & 0o7777 == 0o644  # no setuid bit from the archive
    assert _files_under(tmp_path / "cache") == ["G", "G/m", "G/m/copy.mtx", "G/m/m.mtx"]
    assert read_members(tmp_path / "plain.zip", ["m/m.mtx"]) == {"m/m.mtx": MATRIX}



def test_a_tarball_made_with_tar_c_dir_dot_extracts_its_root_member_as_the_root(tmp_path):
    source = tmp_path / "source"
    (source / "m").mkdir(parents=True)
    (source / "m" / "m.mtx").write_bytes(MATRIX)
    (source / "top.txt").write_bytes(b"top")
    with tarfile.open(tmp_path / "dot.tar.gz", "w:gz") as archive:  # what `tar -C source .` writes
        archive.add(source, arcname=".")
    assert next(iter(tarfile.open(tmp_path / "dot.tar.gz"))).name == "."
    with zipfile.ZipFile(tmp_path / "dot.zip", "w") as bundle:
        bundle.writestr("./", b"")
        bundle.writestr("./m/m.mtx", MATRIX)

    assert _files_under(extract(tmp_path / "dot.tar.gz", tmp_path / "all")) == ["m", "m/m.mtx", "top.txt"]
    assert _files_under(extract(tmp_path / "dot.tar.gz", tmp_path / "m", root="m")) == ["m.mtx"]
    assert _files_under(extract(tmp_path / "dot.zip", tmp_path / "zip")) == ["m", "m/m.mtx"]


@pytest.mark.parametrize("members, clash", [
    ([("a", b"file", {}), ("a/b.txt", b"inside", {})], "its folder 'a' is a file written before it"),
    ([("a", b"file", {}), ("a/c/b.txt", b"inside", {})], "its folder 'a' is a file written before it"),
    ([("a", b"file", {}), ("a/", b"", {"type": tarfile.DIRTYPE})], "a folder of the same name as a file"),
])
def test_a_member_under_a_file_of_the_same_name_is_refused_naming_the_clash(tmp_path, members, clash):
    archive = _tar(tmp_path / "clash.tar.gz", members)
    with pytest.raises(DataError, match=clash) as refused:
        extract(archive, tmp_path / "out")
    assert "not a readable archive" not in str(refused.value)
    assert not (tmp_path / "out").exists()

def test_an_extraction_that_fails_midway_leaves_no_folder_and_keeps_an_older_copy(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "a.tar.gz", [SAFE, ("data/two.txt", b"2", {})])
    target = tmp_path / "cache" / "out"

    def refuse(folder):
        assert _files_under(folder) == ["data", "data/ok.txt", "data/two.txt"]
        raise DataError("refused by the check")

    with pytest.raises(DataError, match="refused by the check"):
        extract(archive, target, check=refuse)
    assert _files_under(tmp_path / "cache") == []

    extract(archive, target)
    real_copy = archives._copy

    def crash_on_second(source, path, member, label):
        if member.name == "data/two.txt":
            raise KeyboardInterrupt  # the user pressing Ctrl-C in the middle
        real_copy(source, path, member, label)

    monkeypatch.setattr(archives, "_copy", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        extract(archive, target)
    assert _files_under(tmp_path / "cache") == ["out", "out/data", "out/data/ok.txt", "out/data/two.txt"]


def test_suitesparse_tarball_with_a_symlink_out_is_refused(http_server, monkeypatch, tmp_path):
    monkeypatch.delenv("REPRO_MATRIX_DIRS", raising=False)
    payload = _tar(tmp_path / "k.tar.gz", [("k/k.mtx", MATRIX, {}),
                                           ("k/evil", b"", {"type": tarfile.SYMTYPE, "linkname": "../../../x"})])
    base = http_server({"/MM/G/k.tar.gz": payload.read_bytes()})
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", base)
    with pytest.raises(DataError, match=r"download of G/k from .* unsafe member 'k/evil' \(a symbolic link"):
        locate_matrix("G/k")
    assert [p for p in cache_dir().rglob("*") if not p.is_dir()] == []


# ---------------------------------------------------------------- CIFAR's pickled batches


def _pickle(obj) -> bytes:
    # Protocol 3 pickles arrays as the Python 2 originals do (_reconstruct, ndarray, dtype), minus _codecs.
    return pickle.dumps(obj, protocol=3)


def _python2_global_names(data: bytes) -> bytes:
    """The pickle with NumPy 1's module name, as in the official files written by Python 2."""
    return data.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")


def _cifar10_python_archive(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A cifar-10-python.tar.gz with 2 images per batch; returns the test images and labels."""
    rng = np.random.default_rng(0)
    members, test = [], None
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 2).tolist()
        pickled = _pickle({"batch_label": batch, "data": data, "labels": labels, "filenames": ["a.png", "b.png"]})
        members.append((f"cifar-10-batches-py/{batch}", _python2_global_names(pickled), {}))
        test = data.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 2, "num_vis": 3072}
    members.append(("cifar-10-batches-py/batches.meta", _pickle(meta), {}))
    _tar(path, members)
    return test


@pytest.fixture
def python_cifar(tmp_path, monkeypatch):
    """A constructed cifar-10-python.tar.gz in ``REPRO_DATA_DIRS``; returns (path, test images, labels)."""
    folder = tmp_path / "data"
    folder.mkdir()
    archive = folder / "cifar-10-python.tar.gz"
    test_images, test_labels = _cifar10_python_archive(archive)
    monkeypatch.setenv("REPRO_DATA_DIRS", str(folder))
    monkeypatch.delenv("REPRO_DATA_URL", raising=False)
    return archive, test_images, test_labels


def _register(archive: Path, monkeypatch) -> None:
    """Make the registry's md5 of this archive's name the constructed archive's md5."""
    entry = REGISTRY["cifar10"].files[archive.name]
    checksum = f"md5:{file_digest(archive, 'md5')}"
    monkeypatch.setitem(REGISTRY["cifar10"].files, archive.name, dataclasses.replace(entry, known_hash=checksum))


def test_python_cifar_batches_load_once_their_checksum_matched(python_cifar, monkeypatch):
    archive, test_images, test_labels = python_cifar
    _register(archive, monkeypatch)

    test = images.load_cifar("cifar10", "test", download=False)

    np.testing.assert_array_equal(test.images, test_images)
    np.testing.assert_array_equal(test.labels, test_labels)
    assert test.classes == [f"class{i}" for i in range(10)]
    assert len(images.load_cifar("cifar10", "train", download=False)) == 10
    assert test.provenance["files"] == {archive.name: file_digest(archive)}
    assert test.provenance["verified"] is True  # its md5 is the (here monkeypatched) published one


def test_python_cifar_batch_with_a_wrong_checksum_is_never_unpickled(python_cifar, monkeypatch):
    archive = python_cifar[0]
    monkeypatch.setattr(cifar, "restricted_loads", lambda *args: pytest.fail("unpickled an unverified file"))
    monkeypatch.setattr(pickles.RestrictedUnpickler, "load", lambda self: pytest.fail("unpickled an unverified file"))

    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz has md5 [0-9a-f]{32} but the published md5"):
        images.load_cifar("cifar10", "test", download=False)
    with pytest.raises(DataError, match="it was not read"):
        images.read_cifar_python_archive(archive, "cifar10", "test")


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_with_a_forbidden_global_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    hostile = pickle.dumps({"data": _RunsACommand(marker)}, protocol=2)

    with pytest.raises(DataError, match=r"batch is a pickle that calls (posix|os)\.system, .* refused without running"):
        restricted_loads(hostile, "batch")
    assert not marker.exists()
    for other in (pickle.dumps(print), pickle.dumps(np.load), pickle.dumps(Path("x")), pickle.dumps(bytearray(3), 2)):
        with pytest.raises(DataError, match="is a pickle that calls"):
            restricted_loads(other, "batch")
    with pytest.raises(DataError, match="not a readable data pickle"):
        restricted_loads(b"\x80\x03X\x01", "batch")



# Pickles that name only allowed globals yet build arrays of Python objects, some from forged pointers
# (protocol 2 opcodes written by hand), and a dtype state that NumPy trusts blindly.
_ND, _REC, _DT = b"cnumpy\nndarray\n", b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy\ndtype\n"
FORGED = {
    "ndarray-reduce": b"\x80\x02" + _ND + b"K\x01\x85X\x01\x00\x00\x00OC\x08AAAAAAAA\x87R.",
    "ndarray-newobj": b"\x80\x02" + _ND + b"K\x01\x85X\x01\x00\x00\x00OC\x08AAAAAAAA\x87\x81.",
    "reconstruct-build-object-dtype": b"\x80\x02" + _REC + _ND + b"K\x00\x85C\x01b\x87R(K\x01K\x01\x85"
        + _DT + b"X\x02\x00\x00\x00O8\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb"
        + b"\x89C\x08AAAAAAAAtb.",
    "object-dtype-code": b"\x80\x02" + _DT + b"X\x01\x00\x00\x00O\x85R.",
    "malformed-dtype-state": b"\x80\x02" + _DT + b"X\x02\x00\x00\x00f4\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNb"
        + b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb.",
}


def _load_in_child(data: bytes) -> str:
    """What :func:`restricted_loads` made of ``data`` in a child process: the DataError's message or ``LOADED``.
    A forged pointer that got through would crash the child, failing the test, not pytest."""
    script = ("import sys\nfrom reproduce.harness.data.pickles import restricted_loads\n"
              "from reproduce.harness.errors import DataError\n"
              "try:\n    restricted_loads(sys.stdin.buffer.read(), 'batch')\nexcept DataError as error:\n"
              "    print(error)\nelse:\n    print('LOADED')\n")
    child = subprocess.run([sys.executable, "-c", script], input=data, capture_output=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, f"the child died ({child.returncode}): {child.stderr.decode()[-300:]}"
    return child.stdout.decode()


@pytest.mark.parametrize("name", list(FORGED) + ["structured-object-field", "object-array"])
def test_a_pickle_that_builds_an_object_array_is_refused_without_crashing(name):
    data = {"structured-object-field": lambda: pickle.dumps(np.zeros(2, dtype=[("a", "O")]), protocol=3),
            "object-array": lambda: pickle.dumps(np.array([1, None], dtype=object), protocol=4)}.get(
        name, lambda: FORGED[name])()
    message = _load_in_child(data)
    assert "LOADED" not in message and message.startswith("batch is ")


def test_thousands_of_damaged_array_pickles_are_refused_cleanly_and_never_crash_the_process():
    # Three random bytes changed per copy of a pickled array; the child counts what each load raised.
    script = ("import pickle, random, warnings\nimport numpy as np\n"
              "from reproduce.harness.data.pickles import restricted_loads\n"
              "from reproduce.harness.errors import DataError\nwarnings.simplefilter('ignore')\n"
              "base = pickle.dumps({'data': np.arange(60, dtype=np.uint8).reshape(3, 20), 'labels': [1, 2, 3]}, 2)\n"
              "rng = random.Random(0)\nrefused = 0\nfor _ in range(4000):\n    damaged = bytearray(base)\n"
              "    for _ in range(3):\n        damaged[rng.randrange(len(damaged))] = rng.randrange(256)\n"
              "    try:\n        restricted_loads(bytes(damaged), 'batch')\n    except DataError:\n"
              "        refused += 1\nprint(refused)\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, f"the child died ({child.returncode}): {child.stderr.decode()[-400:]}"
    assert int(child.stdout) > 1000  # most damaged copies are refused, none escapes as another exception

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_number_arrays_load_whatever_protocol_wrote_them(protocol):
    # 0-2 spell bytes through _codecs.encode (and b"" as bytes()), 5 rebuilds arrays through _frombuffer.
    batch = {"data": np.arange(24, dtype=np.uint8).reshape(2, 12), "labels": [3, 5],
             "big": np.arange(3).astype(">i8"), "fortran": np.asfortranarray(np.eye(3, dtype=np.float32)[:, :2]),
             "empty": np.zeros(0, dtype=np.int16), "raw": b"\x00\xff", "none": b""}
    data = pickle.dumps(batch, protocol=protocol)
    loaded, unrestricted = restricted_loads(data, "batch"), pickle.loads(data)  # noqa: S301 - our own pickle
    assert loaded["labels"] == [3, 5] and loaded["raw"] == b"\x00\xff" and loaded["none"] == b""
    for key in ("data", "big", "fortran", "empty"):
        assert np.array_equal(loaded[key], batch[key]), key
        # NumPy itself reads protocol 0's big-endian dtype as native: the same as pickle.loads is what counts.
        assert loaded[key].dtype == unrestricted[key].dtype, key


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_object_array_is_refused_whatever_protocol_wrote_it(protocol):
    message = _load_in_child(pickle.dumps({"data": np.array([1, "a", None], dtype=object)}, protocol=protocol))
    assert message.startswith("batch is a pickle that builds an array of dtype object"), message


@pytest.mark.parametrize("call", [b"c_codecs\nencode\n(Vx\nVrot13\ntR.", b"c_codecs\nencode\n(I1\nVlatin1\ntR.",
                                  b"c__builtin__\nbytes\n(I1000000000000\ntR."])
def test_the_bytes_globals_of_old_protocols_admit_only_the_calls_that_spell_bytes(call):
    # Another codec, a non-string, or bytes(n) (a memory bomb) would run code or allocate at the pickle's will.
    with pytest.raises(DataError, match="not a readable data pickle"):
        restricted_loads(call, "batch")


def test_a_protocol_5_pickle_with_out_of_band_buffers_is_refused():
    data = pickle.dumps(pickle.PickleBuffer(np.arange(4, dtype=np.uint8)), protocol=5, buffer_callback=lambda b: False)
    with pytest.raises(DataError, match="not a readable data pickle"):
        restricted_loads(data, "batch")

def test_a_verified_python_cifar_archive_with_a_hostile_batch_is_still_refused(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    archive = tmp_path / "cifar-10-python.tar.gz"
    _tar(archive, [("cifar-10-batches-py/test_batch", pickle.dumps(_RunsACommand(marker), protocol=2), {}),
                   ("cifar-10-batches-py/batches.meta", _pickle({"label_names": []}), {})])
    _register(archive, monkeypatch)

    with pytest.raises(DataError, match="test_batch is a pickle that calls"):
        images.read_cifar_python_archive(archive, "cifar10", "test")
    assert not marker.exists()


def test_cached_weights_never_run_code_from_the_cache(tmp_path):
    import torch  # a dependency of the suite: a broken install must fail here, not skip

    marker = tmp_path / "ran"
    planted = tmp_path / "weights.pt"
    torch.save({"weight": _RunsACommand(marker)}, planted)
    module = torch.nn.Linear(2, 2)

    with pytest.raises(DataError, match=r"cached weights .*weights\.pt do not load as plain tensors.*delete the file"):
        cached_weights(module, planted, train=lambda: pytest.fail("must not retrain over the user's file"))
    assert not marker.exists()

    good = tmp_path / "good.pt"
    cached_weights(module, good, train=lambda: torch.nn.init.zeros_(module.weight))
    other = torch.nn.Linear(2, 2)
    cached_weights(other, good, train=lambda: pytest.fail("the saved weights exist"))
    assert torch.equal(other.weight, torch.zeros(2, 2))


# ---------------------------------------------------------------- downloads cut off midway


class _CuttingHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files[path]``; while ``cut`` is set, sends half the body and drops the connection."""

    files: dict[str, bytes] = {}
    cut: str | None = None  # None, "with-length" (Content-Length of the whole) or "no-length"

    def do_GET(self):  # noqa: N802 - the base class's name
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.cut != "no-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.cut else body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def http_server():
    """Start a loopback server for ``{path: bytes}``; returns its base URL. The handler class controls cutting."""
    servers = []

    def start(files: dict[str, bytes], cut: str | None = None) -> str:
        handler = type("Handler", (_CuttingHandler,), {"files": files, "cut": cut})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        start.handler = handler
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


LABELS = "t10k-labels-idx1-ubyte.gz"


@pytest.mark.parametrize("cut", ["with-length", "no-length"])
def test_a_dataset_download_cut_midway_is_discarded_and_the_next_run_starts_clean(http_server, monkeypatch, cut):
    labels = gzip.compress(bytes(8) + bytes(range(10)) * 10, mtime=0)
    entry = REGISTRY["mnist"].files[LABELS]
    checksum = f"md5:{hashlib.md5(labels).hexdigest()}"
    monkeypatch.setitem(REGISTRY["mnist"].files, LABELS, dataclasses.replace(entry, known_hash=checksum))
    monkeypatch.delenv("REPRO_DATA_DIRS", raising=False)
    monkeypatch.setenv("REPRO_DATA_URL", http_server({f"/mnist/{LABELS}": labels}, cut=cut))
    cache = cache_dir("datasets", "mnist")

    refusal = rf"({LABELS} of mnist .*download failed|downloaded from .* published md5 of {LABELS})"
    with pytest.raises(DataError, match=refusal):
        fetch("mnist", [LABELS])
    assert _files_under(cache) == []  # no partial file, hidden or not

    http_server.handler.cut = None
    path = fetch("mnist", [LABELS])[LABELS]
    assert path.read_bytes() == labels and _files_under(cache) == [LABELS]


def _age(path: Path, seconds: float) -> Path:
    """Set ``path``'s (and, for a folder, its contents') modification time ``seconds`` in the past."""
    then = time.time() - seconds
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        os.utime(item, (then, then))
    return path


def test_what_a_killed_download_left_is_deleted_at_the_next_download_of_the_file(http_server, monkeypatch):
    labels = gzip.compress(bytes(8) + bytes(range(10)) * 10, mtime=0)
    entry = REGISTRY["mnist"].files[LABELS]
    monkeypatch.setitem(REGISTRY["mnist"].files, LABELS,
                        dataclasses.replace(entry, known_hash=f"md5:{hashlib.md5(labels).hexdigest()}"))
    monkeypatch.delenv("REPRO_DATA_DIRS", raising=False)
    monkeypatch.setenv("REPRO_DATA_URL", http_server({f"/mnist/{LABELS}": labels}))
    cache = cache_dir("datasets", "mnist")
    for name in (f".{LABELS}.dead.part", f".{LABELS}.live.part", ".other.gz.dead.part"):
        (cache / name).touch()
    stale = _age(cache / f".{LABELS}.dead.part", STALE_AFTER_S + 1)
    live = cache / f".{LABELS}.live.part"  # another worker's download in progress: written just now
    other = _age(cache / ".other.gz.dead.part", 2 * STALE_AFTER_S)  # another file's: left to its own download

    fetch("mnist", [LABELS])

    assert not stale.exists() and live.exists() and other.exists()  # only this file's dead leftovers go
    assert _files_under(cache) == sorted([f".{LABELS}.live.part", ".other.gz.dead.part", LABELS])


def test_what_a_killed_extraction_left_is_deleted_at_the_next_extraction_into_the_same_place(tmp_path):
    archive = _tar(tmp_path / "m.tar.gz", [("m/m.mtx", MATRIX, {})])
    dead = tmp_path / "out" / ".m.abc.partial"
    (dead / "m").mkdir(parents=True)
    (dead / "m" / "half.mtx").write_bytes(b"half")
    _age(dead, STALE_AFTER_S + 1)
    live = tmp_path / "out" / ".m.xyz.partial"
    live.mkdir()
    (_age(live, 2 * STALE_AFTER_S) / "being-written.mtx").write_bytes(b"now")  # old folder, fresh member

    extract(archive, tmp_path / "out" / "m", root="m")

    assert not dead.exists() and live.exists()
    assert remove_stale(tmp_path / "out", ".m.*.partial", idle_s=0.0) == [live] and not live.exists()

@pytest.mark.parametrize("cut", ["with-length", "no-length"])
def test_a_matrix_download_cut_midway_is_discarded_and_the_next_run_starts_clean(http_server, tmp_path, monkeypatch,
                                                                                cut):
    monkeypatch.delenv("REPRO_MATRIX_DIRS", raising=False)
    tarball = _tar(tmp_path / "k.tar.gz", [("k/k.mtx", MATRIX, {}), ("k/k_notes.txt", bytes(4096), {})])
    monkeypatch.setenv("REPRO_SUITESPARSE_URL", http_server({"/MM/G/k.tar.gz": tarball.read_bytes()}, cut=cut))

    with pytest.raises(DataError, match=r"(Cannot download SuiteSparse matrix G/k|download of G/k .* not a readable)"):
        locate_matrix("G/k")
    assert _files_under(cache_dir("suitesparse")) == []

    http_server.handler.cut = None
    source = locate_matrix("G/k")
    assert source.path.read_bytes() == MATRIX and source.provenance()["verified"] is False
    assert _files_under(cache_dir("suitesparse")) == ["G", "G/k", "G/k/k.mtx"]
