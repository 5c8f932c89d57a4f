"""The image datasets the papers use: official files, checksums, and a verified fetcher.

Each file is looked up, first hit wins, in

1. the folders of ``$REPRO_DATA_DIRS`` as ``<dir>/<file>``, ``<dir>/<dataset>/<file>``
   and the dataset's extra layouts (torchvision's ``MNIST/raw`` for MNIST);
2. the cache, ``cache_dir("datasets", <dataset>)``;
3. a download from ``$REPRO_DATA_URL/<dataset>/<file>`` when that mirror is set, else
   from the official URLs in order.

Every copy, local or downloaded, must match its published checksum before anything reads
it. A download goes to a hidden ``.<file>.*.part`` beside its cache path and is renamed
into place only after its checksum matched; one that is cut off or does not match is
deleted, so no later run reads a partial file (it downloads the file again). A ``.part`` that a killed
process left is deleted at the next download of the same file, once nothing has written it for
:data:`~reproduce.harness.paths.STALE_AFTER_S`. All expected failures are
:class:`~reproduce.harness.errors.DataError` with one sentence saying what to do.

Checksums: every md5 and size below was cross-checked against several independent public
sources (torchvision's and other libraries' dataset code, download scripts and logs). Only
the two MNIST test-set md5s were also recomputed from real bytes (the shared copies in
``shared/data/images/mnist``); the other archives could not be downloaded to recompute theirs.
Each entry says where its values come from.
"""

import functools
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests

from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir, env_dirs, env_url, remove_stale

DATA_DIRS_VARIABLE = "REPRO_DATA_DIRS"
MIRROR_VARIABLE = "REPRO_DATA_URL"
DOWNLOAD_TIMEOUT_S = 60
DOWNLOAD_CHUNK_BYTES = 1 << 20
OFFLINE_ADVICE = "or use a smaller scale (`--scale quick` or `--scale smoke`; `repro list` shows what each needs)"


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a dataset.

    Attributes
    ----------
    name : str
        The official file name.
    known_hash : str
        ``"<algorithm>:<hex digest>"`` as pooch writes it, e.g. ``"md5:9fb6..."``.
    size : int or None
        Size in bytes, if published.
    urls : tuple of str
        Download locations, tried in order (official first).
    """

    name: str
    known_hash: str
    size: int | None
    urls: tuple[str, ...]

    @property
    def algorithm(self) -> str:
        """The hash algorithm, e.g. ``"md5"``."""
        return self.known_hash.partition(":")[0]

    @property
    def digest(self) -> str:
        """The expected hex digest."""
        return self.known_hash.partition(":")[2]


@dataclass(frozen=True)
class Dataset:
    """A dataset: its files by name and the extra local layouts searched for them."""

    name: str
    title: str
    files: dict[str, RemoteFile]
    local_layouts: tuple[str, ...] = ()


def _files(*entries: RemoteFile) -> dict[str, RemoteFile]:
    return {entry.name: entry for entry in entries}


def _mnist_file(name: str, md5: str, size: int) -> RemoteFile:
    # The official host has often refused scripted downloads (HTTP 403), so the mirror
    # torchvision uses follows it; both serve byte-identical files (same md5).
    return RemoteFile(
        name,
        f"md5:{md5}",
        size,
        (f"http://yann.lecun.com/exdb/mnist/{name}", f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}"),
    )


def _cifar_file(name: str, md5: str, size: int) -> RemoteFile:
    return RemoteFile(name, f"md5:{md5}", size, (f"https://www.cs.toronto.edu/~kriz/{name}",))


def _coco_file(folder: str, name: str, md5: str, size: int) -> RemoteFile:
    return RemoteFile(name, f"md5:{md5}", size, (f"http://images.cocodataset.org/{folder}/{name}",))


REGISTRY: dict[str, Dataset] = {
    "mnist": Dataset(
        "mnist",
        "MNIST handwritten digits, IDX files (LeCun, Cortes, Burges)",
        _files(
            _mnist_file("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
            _mnist_file("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
            _mnist_file("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
            _mnist_file("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
        ),
        local_layouts=("MNIST/raw",),
    ),
    # The binary version is what a download fetches; the python version (pickled batches,
    # the copy torchvision keeps) is read when it is already local, after its md5 matched.
    # CIFAR-10's two md5s are those of the download table on the dataset's page
    # (www.cs.toronto.edu/~kriz/cifar.html, read in archived copies of it); CIFAR-100's are those
    # of torchvision's and other loaders' code, which cite that page. Neither was recomputed
    # here: no CIFAR archive can be downloaded on the machines this suite was built on.
    "cifar10": Dataset(
        "cifar10",
        "CIFAR-10, binary or python version (Krizhevsky, 2009)",
        _files(
            _cifar_file("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", 170_052_171),
            _cifar_file("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170_498_071),
        ),
    ),
    "cifar100": Dataset(
        "cifar100",
        "CIFAR-100, binary or python version (Krizhevsky, 2009)",
        _files(
            _cifar_file("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8", 168_513_733),
            _cifar_file("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169_001_437),
        ),
    ),
    "tiny_imagenet": Dataset(
        "tiny_imagenet",
        "Tiny ImageNet (200 classes, 64x64; Stanford CS231n)",
        _files(
            RemoteFile(
                "tiny-imagenet-200.zip",
                "md5:90528d7ca1a48142e341f4ef8d21d0de",
                248_100_043,
                ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
            )
        ),
    ),
    "coco2017": Dataset(
        "coco2017",
        "Microsoft COCO 2017 images and train/val annotations",
        _files(
            _coco_file("zips", "train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2", 19_336_861_798),
            _coco_file("zips", "val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80", 815_585_330),
            _coco_file("annotations", "annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c", 252_907_541),
        ),
    ),
    # Model weights fetched like data. The FID's Inception-v3 (TensorFlow's 2015-12-05 graph, ported by
    # pytorch-fid); only the sha256 prefix in its name is published (torch.hub's convention).
    "fid_inception": Dataset(
        "fid_inception",
        "Inception-v3 weights of the FID (TF 2015-12-05 graph as ported by pytorch-fid)",
        _files(RemoteFile(
            "pt_inception-2015-12-05-6726825d.pth", "sha256:6726825d", None,
            ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
             "pt_inception-2015-12-05-6726825d.pth",),
        )),
    ),
    # torchvision's ImageNet ResNet-50 (IMAGENET1K_V1), MMDetection's "torchvision://resnet50": the backbone
    # initialisation of EGOR's GFL R50-FPN. Its name carries the sha256 prefix (torch.hub's convention).
    "resnet50_imagenet": Dataset(
        "resnet50_imagenet",
        "torchvision's ImageNet ResNet-50 weights (IMAGENET1K_V1)",
        _files(RemoteFile("resnet50-0676ba61.pth", "sha256:0676ba61", None,
                          ("https://download.pytorch.org/models/resnet50-0676ba61.pth",))),
    ),
}

DATASETS: tuple[str, ...] = tuple(REGISTRY)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes; repeated calls on an unchanged file are free.

    Parameters
    ----------
    path : str or Path
        The file.
    algorithm : str
        A :mod:`hashlib` name such as ``"md5"`` or ``"sha256"``.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _digest(str(resolved), stat.st_size, stat.st_mtime_ns, algorithm)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    """Hash ``path``; ``size`` and ``mtime_ns`` only key the memo."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, algorithm).hexdigest()


def dataset(name: str) -> Dataset:
    """The registry entry of ``name``; DataError naming the known datasets otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.") from None


def _select(entry: Dataset, files: list[str] | tuple[str, ...] | None) -> list[RemoteFile]:
    names = list(entry.files) if files is None else list(files)
    unknown = [name for name in names if name not in entry.files]
    if unknown:
        raise DataError(f"{entry.name} has no file {unknown[0]!r}; its files are {', '.join(entry.files)}.")
    return [entry.files[name] for name in names]


def _check(path: Path, remote: RemoteFile) -> str | None:
    """The actual digest of ``path`` if it differs from the published one, else None.

    A published digest may be a prefix of at least 8 hex digits (torch.hub's convention for
    weight files, whose names carry the first digits of their sha256).
    """
    actual = file_digest(path, remote.algorithm)
    return None if len(remote.digest) >= 8 and actual.startswith(remote.digest) else actual


def _mismatch(what: str, remote: RemoteFile, actual: str, advice: str) -> DataError:
    return DataError(
        f"{what} has {remote.algorithm} {actual} but the published {remote.algorithm} of {remote.name} "
        f"is {remote.digest}; {advice}."
    )


def _local_candidates(entry: Dataset, remote: RemoteFile) -> list[Path]:
    layouts = ("", entry.name, *entry.local_layouts)
    return [folder / layout / remote.name for folder in env_dirs(DATA_DIRS_VARIABLE) for layout in layouts]


def _find_local(entry: Dataset, remote: RemoteFile) -> Path | None:
    """The first copy in ``$REPRO_DATA_DIRS``, checksum-verified; None if there is none."""
    for candidate in _local_candidates(entry, remote):
        if candidate.is_file():
            actual = _check(candidate, remote)
            if actual is not None:
                raise _mismatch(f"The local copy {candidate}", remote, actual, "replace it with an intact copy")
            return candidate
    return None


def verify(path: str | Path, name: str, file: str) -> None:
    """Raise DataError unless ``path`` has the published checksum of ``file`` of dataset ``name``.

    Readers of files that are unsafe to parse unverified (pickles) call this first.
    """
    remote = _select(dataset(name), [file])[0]
    actual = _check(Path(path), remote)
    if actual is not None:
        raise _mismatch(f"The file {path}", remote, actual, "it was not read; replace it with an intact copy")


def matches_published(path: str | Path) -> bool:
    """Whether ``path`` has the published checksum of a registered file of the same name (provenance's
    ``verified``); False for a file the registry does not know (a bundled or hand-made copy)."""
    path = Path(path)
    return any(remote.name == path.name and _check(path, remote) is None
               for entry in REGISTRY.values() for remote in entry.files.values())


def locate(name: str, file: str) -> Path | None:
    """A verified copy of ``file`` in ``$REPRO_DATA_DIRS`` or the cache, without downloading; None if absent.

    Raises
    ------
    DataError
        A local copy whose checksum differs (a corrupt cached copy is deleted instead).
    """
    entry = dataset(name)
    remote = _select(entry, [file])[0]
    return _find_local(entry, remote) or _find_cached(entry, remote)


def _cache_path(entry: Dataset, remote: RemoteFile) -> Path:
    return cache_dir("datasets", entry.name) / remote.name


def _find_cached(entry: Dataset, remote: RemoteFile) -> Path | None:
    """The cached copy if it is intact; a corrupt one is deleted so it is fetched again."""
    path = _cache_path(entry, remote)
    if not path.is_file():
        return None
    if _check(path, remote) is None:
        return path
    path.unlink()
    return None


def source_urls(entry: Dataset, remote: RemoteFile) -> tuple[str, ...]:
    """Where ``remote`` is downloaded from: the ``$REPRO_DATA_URL`` mirror if set, else the official URLs."""
    mirror = env_url(MIRROR_VARIABLE)
    return (f"{mirror}/{entry.name}/{remote.name}",) if mirror else remote.urls


def _show_progress() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


def _download_to(url: str, remote: RemoteFile, target: Path) -> None:
    """Download ``url`` beside ``target``, verify it, then move it into place.

    Raises
    ------
    requests.RequestException
        The server could not be reached or answered with an error.
    DataError
        The downloaded bytes do not match the published checksum (nothing is kept).
    """
    remove_stale(target.parent, f".{remote.name}.*.part")  # what an earlier, killed download of it left
    handle, partial_name = tempfile.mkstemp(dir=target.parent, prefix=f".{remote.name}.", suffix=".part")
    os.close(handle)
    partial = Path(partial_name)
    try:
        downloader = pooch.HTTPDownloader(
            progressbar=_show_progress(), chunk_size=DOWNLOAD_CHUNK_BYTES, timeout=DOWNLOAD_TIMEOUT_S
        )
        downloader(url, str(partial), None)
        actual = _check(partial, remote)
        if actual is not None:
            raise _mismatch(
                f"The file downloaded from {url}", remote, actual, "it was deleted, so check the mirror or retry later"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _failure_reason(error: requests.RequestException) -> str:
    if error.response is not None:
        return f"HTTP {error.response.status_code}"
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return "no connection"
    return type(error).__name__


def _unavailable(entry: Dataset, remote: RemoteFile, reason: str, still_missing: list[str]) -> DataError:
    others = f" (also missing: {', '.join(still_missing)})" if still_missing else ""
    return DataError(
        f"{remote.name} of {entry.name} is not available locally and {reason}{others}; "
        f"put {'the files' if still_missing else 'it'} in a folder "
        f"listed in {DATA_DIRS_VARIABLE} (as <dir>/{remote.name} or <dir>/{entry.name}/{remote.name}) or in "
        f"the cache folder {_cache_path(entry, remote).parent}, {OFFLINE_ADVICE}."
    )


def _download(entry: Dataset, remote: RemoteFile, still_missing: list[str]) -> Path:
    target = _cache_path(entry, remote)
    failures = []
    for url in source_urls(entry, remote):
        try:
            _download_to(url, remote, target)
        except requests.RequestException as error:
            failures.append(f"{url} ({_failure_reason(error)})")
        else:
            return target
    raise _unavailable(entry, remote, f"the download failed from {', '.join(failures)}", still_missing)


def fetch(name: str, files: list[str] | tuple[str, ...] | None = None, *, download: bool = True) -> dict[str, Path]:
    """Paths of verified copies of a dataset's files, downloading the missing ones.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    files : sequence of str, optional
        Official file names to fetch; all of the dataset's files by default.
    download : bool
        If False, only local folders and the cache are searched.

    Returns
    -------
    dict of str to Path
        File name -> path of a copy whose checksum matched.

    Raises
    ------
    DataError
        Unknown dataset or file, a copy with the wrong checksum, or a file that is
        neither local nor cached and cannot be downloaded.
    """
    entry = dataset(name)
    wanted = _select(entry, files)
    found = {remote.name: locate(name, remote.name) for remote in wanted}
    missing = [remote for remote in wanted if found[remote.name] is None]
    for index, remote in enumerate(missing):
        still_missing = [other.name for other in missing[index + 1 :]]
        if not download:
            raise _unavailable(entry, remote, "downloads are turned off", still_missing)
        found[remote.name] = _download(entry, remote, still_missing)
    return found


def describe(name: str) -> dict:
    """What ``repro fetch`` lists for a dataset.

    Returns
    -------
    dict
        ``{"dataset", "title", "cache", "total_bytes", "files": [{"name", "bytes",
        "hash", "urls"}]}``; ``bytes``/``total_bytes`` are None where a size is unknown.
    """
    entry = dataset(name)
    sizes = [remote.size for remote in entry.files.values()]
    return {
        "dataset": entry.name,
        "title": entry.title,
        "cache": str(cache_dir("datasets", entry.name)),
        "total_bytes": None if None in sizes else sum(sizes),
        "files": [
            {
                "name": remote.name,
                "bytes": remote.size,
                "hash": remote.known_hash,
                "urls": list(source_urls(entry, remote)),
            }
            for remote in entry.files.values()
        ],
    }
