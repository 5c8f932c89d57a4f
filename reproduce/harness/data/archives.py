"""Reading and extracting downloaded archives (tar in any compression, zip) without trusting them.

Every place in the harness that opens an archive goes through this module, so one policy
holds everywhere. Each member is checked before anything is read or written, and one
unsafe member refuses the whole archive with a :class:`~reproduce.harness.errors.DataError`
that names it:

- its name must be relative, free of ``..`` components, drive letters, backslashes and
  NUL bytes (``./`` prefixes are dropped);
- it must be a regular file or a folder, or (tar only) a hard link to a file stored
  before it inside the archive, which is extracted as a copy of that file; symbolic links
  are refused (a link's target can only be judged against the links written before it, so
  none are written), and so are devices, FIFOs and sockets;
- its size, the total size and the number of members are bounded (:class:`Limits`):
  a corrupt header or a decompression bomb stops at the bound. Bytes are counted while
  they are copied too, so a header that understates its size cannot slip through.

:func:`extract` writes into a hidden temporary folder beside the destination and renames
it into place only when every member is written and the caller's ``check`` passed, so an
interrupted extraction never leaves a folder under the destination's name for a later run
to trust (a killed process can leave a ``.<name>.*.partial`` folder that no lookup reads; the next
extraction into the same place deletes it once nothing has written in it for ten minutes).
Files are written with mode 0644 and folders 0755, whatever the archive says (no setuid
bits, no owners). :func:`read_members` and :func:`open_zip` read members into memory
without writing anything. Python's ``tarfile`` ``filter="data"`` enforces a similar policy
for tar; we check ourselves to give tar and zip one set of clear messages.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from reproduce.harness.errors import DataError
from reproduce.harness.paths import remove_stale

COPY_CHUNK_BYTES = 1 << 20
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one archive may hold; the defaults admit COCO 2017 (19 GB, 118k images).

    Attributes
    ----------
    member_bytes : int
        The largest uncompressed member.
    total_bytes : int
        The largest sum of uncompressed members read or written.
    members : int
        The most members (files, folders and links together).
    """

    member_bytes: int = 8 * 2**30
    total_bytes: int = 64 * 2**30
    members: int = 1_000_000


LIMITS = Limits()


@dataclass(frozen=True)
class Member:
    """One checked archive member: its normalised name, kind and size.

    ``kind`` is ``"file"``, ``"dir"`` or ``"hardlink"``; ``link`` is a hard link's
    normalised target, relative to the archive's root.
    """

    name: str
    kind: str
    size: int
    link: str | None = None


class _Budget:
    """Counts members and bytes against :class:`Limits`; raises the archive's refusal."""

    def __init__(self, label: str, limits: Limits):
        self.label, self.limits = label, limits
        self.members = self.bytes = 0

    def admit(self, member: Member) -> None:
        self.members += 1
        if self.members > self.limits.members:
            raise _refused(self.label, member.name, f"more than {self.limits.members} members")
        self.charge(member.name, member.size)

    def charge(self, name: str, size: int) -> None:
        if size > self.limits.member_bytes:
            raise _refused(self.label, name, f"{size} bytes, above the {self.limits.member_bytes}-byte member limit")
        self.bytes += size
        if self.bytes > self.limits.total_bytes:
            raise _refused(self.label, name, f"the archive exceeds the {self.limits.total_bytes}-byte total limit")


def _refused(label: str, name: str, why: str) -> DataError:
    return DataError(f"{label} contains an unsafe member {name!r} ({why}); the archive was refused.")


def _unreadable(label: str, error: BaseException) -> DataError:
    return DataError(f"{label} is not a readable archive ({error}); delete it and fetch an intact copy.")


def safe_name(name: str, label: str) -> str:
    """``name`` with ``./`` prefixes and trailing ``/`` dropped; DataError if it could leave the root.

    Refused: absolute names, ``..`` components, Windows drive letters or backslashes, NUL
    bytes, and names that are empty once normalised.
    """
    if "\0" in name or "\\" in name:
        raise _refused(label, name, "a NUL byte or backslash in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refused(label, name, "an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refused(label, name, "a '..' component")
    if not parts:
        raise _refused(label, name, "an empty name")
    return "/".join(parts)


def _is_root(name: str) -> bool:
    """Whether ``name`` names the archive's root folder itself (``./`` or ``.``, as ``tar -C dir .`` writes
    it first): a relative name made only of ``.`` and empty components."""
    return bool(name) and not name.startswith("/") and all(part in ("", ".") for part in name.split("/"))


ROOT = Member(".", "dir", 0)


def _tar_member(info: tarfile.TarInfo, label: str) -> Member:
    """The checked view of a tar member; DataError for anything unsafe."""
    if info.isdir() and _is_root(info.name):
        return ROOT
    name = safe_name(info.name, label)
    if info.isfile():
        return Member(name, "file", info.size)
    if info.isdir():
        return Member(name, "dir", 0)
    if info.islnk():
        target = posixpath.normpath(info.linkname) if info.linkname else ""
        if info.linkname.startswith("/") or target in ("", ".") or target == ".." or target.startswith("../"):
            raise _refused(label, info.name, f"a hard link to {info.linkname!r}, outside the archive")
        return Member(name, "hardlink", 0, target)
    if info.issym():
        raise _refused(label, info.name, f"a symbolic link to {info.linkname!r}; links are never extracted")
    kind = "a device file" if info.ischr() or info.isblk() else "a FIFO" if info.isfifo() else "not a file"
    raise _refused(label, info.name, kind)


def _zip_member(info: zipfile.ZipInfo, label: str) -> Member:
    """The checked view of a zip member; DataError for anything unsafe."""
    if info.is_dir() and _is_root(info.filename):
        return ROOT
    name = safe_name(info.filename, label)
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when no Unix type was recorded (Windows, writestr)
    if info.is_dir():
        return Member(name, "dir", 0)
    if kind and kind != stat.S_IFREG:
        raise _refused(label, info.filename, "a symbolic link" if kind == stat.S_IFLNK else "not a regular file")
    return Member(name, "file", info.file_size)


def _in_root(name: str, root: str | None) -> str | None:
    """``name`` relative to ``root`` (``"."`` for the root itself), or None when it lies outside."""
    if root is None:
        return name
    if name == root:
        return "."
    return name[len(root) + 1 :] if name.startswith(root + "/") else None


def _copy(source, target_path: Path, member: Member, label: str) -> None:
    """Copy a member's bytes to a new file, refusing more bytes than its header declares."""
    written = 0
    with open(target_path, "xb") as target:
        while chunk := source.read(COPY_CHUNK_BYTES):
            written += len(chunk)
            if written > member.size:
                raise _refused(label, member.name, f"more bytes than the {member.size} it declares")
            target.write(chunk)
    os.chmod(target_path, 0o644)


def _write(member: Member, relative: str, folder: Path, opener: Callable, root: str | None, budget: _Budget) -> None:
    """Write one checked member under ``folder`` (the temporary extraction folder, which holds no links)."""
    path = folder / relative if relative != "." else folder
    _check_folders(relative, folder, member, budget.label)
    if member.kind == "dir":
        if path.exists() and not path.is_dir():
            raise _refused(budget.label, member.name, "a folder of the same name as a file written before it")
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    if relative == "." or path.exists():
        raise _refused(budget.label, member.name, "a second member of the same name")
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if member.kind == "file":
        with opener() as source:
            _copy(source, path, member, budget.label)
        return
    # A hard link becomes a copy of a regular file written before it (tar stores the target first).
    target = _in_root(member.link, root)
    source = folder / target if target not in (None, ".") else None
    if source is None or not source.is_file():
        raise _refused(budget.label, member.name, f"a hard link to {member.link!r}, not a file extracted before it")
    budget.charge(member.name, source.stat().st_size)
    shutil.copyfile(source, path)
    os.chmod(path, 0o644)


def _check_folders(relative: str, folder: Path, member: Member, label: str) -> None:
    """Refuse ``member`` when a folder on its path (``a`` of ``a/b.txt``) is a file written before it."""
    parts = relative.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        ancestor = "/".join(parts[:depth])
        if (folder / ancestor).is_file():
            raise _refused(label, member.name, f"its folder {ancestor!r} is a file written before it")


def _tar_entries(archive: tarfile.TarFile, label: str) -> Iterator[tuple[Member, Callable]]:
    for info in archive:
        yield _tar_member(info, label), (lambda info=info: archive.extractfile(info))


def _zip_entries(bundle: zipfile.ZipFile, label: str) -> Iterator[tuple[Member, Callable]]:
    for info in bundle.infolist():
        yield _zip_member(info, label), (lambda info=info: bundle.open(info))


@contextmanager
def _entries(path: Path, label: str, limits: Limits) -> Iterator[Iterator[tuple[Member, Callable]]]:
    """Checked ``(member, open)`` pairs of a zip (recognised by its contents) or a streamed tar."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as bundle:
            _check_zip(bundle, label, limits)
            yield _zip_entries(bundle, label)
    else:
        with tarfile.open(path, "r|*") as archive:
            yield _tar_entries(archive, label)


def _check_zip(bundle: zipfile.ZipFile, label: str, limits: Limits) -> None:
    """Check a zip's whole central directory before any member is read."""
    budget = _Budget(label, limits)
    for info in bundle.infolist():
        budget.admit(_zip_member(info, label))


def extract(
    archive: str | Path,
    destination: str | Path,
    *,
    root: str | None = None,
    members: Collection[str] | None = None,
    check: Callable[[Path], None] | None = None,
    label: str | None = None,
    limits: Limits = LIMITS,
) -> Path:
    """Extract a tar (any compression) or zip archive into ``destination``, whole or not at all.

    Parameters
    ----------
    archive : str or Path
        The archive; zip is recognised by its contents, anything else is read as tar.
    destination : str or Path
        The folder to create (its parent is created if needed). An existing folder of
        that name is replaced only after the new one is complete.
    root : str, optional
        A folder inside the archive whose contents become ``destination`` (e.g.
        ``"karate"`` for SuiteSparse's ``karate/karate.mtx``); members outside it are
        checked but not written.
    members : collection of str, optional
        Only these names (relative to ``root``) are written; every member is still checked.
    check : callable, optional
        Called with the complete temporary folder before the rename; raise (a DataError)
        to refuse the contents, and nothing is kept.
    label : str, optional
        How messages name the archive (default its path).
    limits : Limits
        Size and count bounds.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    DataError
        An unsafe member, a bound exceeded, an unreadable archive, or a wanted member
        missing; nothing is left at ``destination`` (an older copy stays as it was).
    """
    archive, destination = Path(archive), Path(destination)
    label = label or str(archive)
    root = safe_name(root, label) if root else None
    wanted = {safe_name(name, label) for name in members} if members is not None else None
    new_parent = not destination.parent.exists()
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(destination.parent, f".{destination.name}.*.partial")  # an earlier, killed extraction's
    partial = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"))
    try:
        budget, written = _Budget(label, limits), set()
        with _entries(archive, label, limits) as entries:
            for member, opener in entries:
                budget.admit(member)
                relative = _in_root(member.name, root)
                if relative is not None and (wanted is None or relative in wanted):
                    _write(member, relative, partial, opener, root, budget)
                    written.add(relative)
        if wanted is not None and wanted - written:
            missing = posixpath.join(root or "", sorted(wanted - written)[0])
            raise DataError(f"{label} lacks the member {missing}; it was refused.")
        if check is not None:
            check(partial)
        _move_into_place(partial, destination)
    except READ_ERRORS as error:
        raise _unreadable(label, error) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if new_parent and not destination.exists():
            with suppress(OSError):
                destination.parent.rmdir()  # only if still empty
    return destination


def _move_into_place(partial: Path, destination: Path) -> None:
    """Rename the finished folder to ``destination``, moving any older copy aside first."""
    os.chmod(partial, 0o755)
    if destination.is_symlink() or destination.exists():
        stale = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".stale"))
        os.replace(destination, stale / "old")
        os.rename(partial, destination)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.rename(partial, destination)


def read_members(
    archive: str | Path, wanted: Collection[str], *, label: str | None = None, limits: Limits = LIMITS
) -> dict[str, bytes]:
    """The bytes of the regular-file members named in ``wanted``, read in one pass, nothing written.

    Members are checked as by :func:`extract` up to the last wanted one (a tar is read as
    a stream and stops there; a zip's whole directory is checked first).

    Raises
    ------
    DataError
        An unsafe member, a bound exceeded, an unreadable archive, or a wanted member missing.
    """
    archive = Path(archive)
    label = label or str(archive)
    wanted = {safe_name(name, label) for name in wanted}
    found: dict[str, bytes] = {}
    try:
        budget = _Budget(label, limits)
        with _entries(archive, label, limits) as entries:
            for member, opener in entries:
                budget.admit(member)
                if member.name in wanted and member.kind == "file":
                    with opener() as source:
                        found[member.name] = source.read(member.size + 1)
                    if len(found[member.name]) > member.size:
                        raise _refused(label, member.name, f"more bytes than the {member.size} it declares")
                if found.keys() == wanted:
                    break
    except READ_ERRORS as error:
        raise _unreadable(label, error) from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"{label} lacks the member {missing[0]}; replace it with the official archive.")
    return found


@contextmanager
def open_zip(archive: str | Path, *, label: str | None = None, limits: Limits = LIMITS) -> Iterator[zipfile.ZipFile]:
    """A :class:`zipfile.ZipFile` whose every member passed the checks, for reading in memory.

    Read errors inside the ``with`` block (a damaged member) become DataError too.
    """
    archive = Path(archive)
    label = label or str(archive)
    try:
        with zipfile.ZipFile(archive) as bundle:
            _check_zip(bundle, label, limits)
            yield bundle
    except READ_ERRORS as error:
        raise _unreadable(label, error) from None
