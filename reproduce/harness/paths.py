"""Where the harness keeps things on disk, from environment variables that are checked.

- cache: downloaded matrices and datasets, measured machine bandwidth.
  ``$REPRO_CACHE``, else the user's cache dir (``~/.cache/repro`` on Linux).
- local data: ``$REPRO_MATRIX_DIRS`` and ``$REPRO_DATA_DIRS``, ``os.pathsep``-separated
  lists of folders searched before the cache.
- mirrors: ``$REPRO_DATA_URL`` and ``$REPRO_SUITESPARSE_URL``, http(s) base URLs.

Every path from the environment is expanded (``~``) and resolved to an absolute path. One
that names a file instead of a folder is a :class:`~reproduce.harness.errors.DataError`
naming the variable; a data folder that does not exist is skipped with a warning naming it,
never silently; a mirror must be an http(s) URL.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from reproduce.harness.errors import DataError

CACHE_VARIABLE = "REPRO_CACHE"


def _env_path(variable: str, entry: str) -> Path:
    """``entry`` of ``variable`` as an absolute path; DataError if it exists but is not a folder."""
    path = Path(entry).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise DataError(f"{variable} names {path}, which is not a folder; point {variable} at a folder.")
    return path


def cache_dir(*parts: str) -> Path:
    """The cache folder (created on demand), or a subfolder of it.

    ``$REPRO_CACHE`` is resolved to an absolute path; DataError if it names a file.
    """
    root = os.environ.get(CACHE_VARIABLE)
    base = _env_path(CACHE_VARIABLE, root) if root else Path(platformdirs.user_cache_dir("repro"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_dirs(variable: str) -> list[Path]:
    """The folders listed in the ``os.pathsep``-separated ``variable``, resolved, in order.

    Empty entries are ignored. An entry that exists but is not a folder raises DataError
    naming the variable. An entry that does not exist is skipped with a warning naming it
    (tox and CI point these variables at ``../shared/data`` by default, which a machine
    may lack, and the suite then runs on what it has).
    """
    folders = []
    for entry in os.environ.get(variable, "").split(os.pathsep):
        if not entry:
            continue
        path = _env_path(variable, entry)
        if path.is_dir():
            folders.append(path)
        else:
            warnings.warn(f"{variable} lists {path}, which does not exist; it is skipped.", RuntimeWarning,
                          stacklevel=2)
    return folders


def env_url(variable: str) -> str | None:
    """The http(s) base URL in ``variable`` without its trailing ``/``, or None when unset or empty.

    Raises DataError for any other scheme (``file:``, ``ftp:``) or a URL without a host.
    """
    value = os.environ.get(variable, "").strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DataError(f"{variable}={value!r} is not an http:// or https:// URL with a host; fix or unset it.")
    return value


# A leftover of an interrupted write (a download's ``.part`` file, an extraction's ``.partial`` folder) that
# nothing has modified for this long is dead: a live download writes a chunk at least every read timeout
# (60 s) and a live extraction a member every few seconds, so a second worker's work in progress is kept.
STALE_AFTER_S = 600.0


def _last_modified(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, of everything under it (seconds)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for parent, folders, files in os.walk(path):
            for name in (*folders, *files):
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return newest


def remove_stale(folder: Path, pattern: str, idle_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete what matches ``pattern`` (a glob) in ``folder`` and was not modified for ``idle_s`` seconds:
    the leftovers of writes a killed process never finished. Returns what was deleted; a leftover that
    vanishes meanwhile (another process cleaned it) is passed over."""
    removed, now = [], time.time()
    for path in sorted(Path(folder).glob(pattern)):
        try:
            if now - _last_modified(path) < idle_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all.

    The text goes to a temporary file in the same folder, is flushed to disk, and is
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows), so whatever
    kills the process, ``path`` holds either its old content or the new one. The file
    is made readable by all (0644), as an ordinary file would be.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_key(config: dict, fields: tuple[str, ...]) -> str:
    """A short stable hash of ``config``'s ``fields``: names a cached artifact built from them."""
    text = json.dumps({name: config.get(name) for name in fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_weights(module, path: Path, train: Callable[[], object]):
    """``module`` with the weights saved at ``path``, or trained by ``train()`` and saved there first.

    ``train`` trains ``module`` in place. The state dict is written to a temporary file and
    renamed, so an interrupted run leaves no half-written weights; the next run trains again.
    A saved file is loaded with ``torch.load(weights_only=True)``: tensors and plain
    containers only, never code, so a file planted in the cache cannot run anything; one
    that does not load raises DataError naming it. Returns ``module``.
    """
    import pickle

    import torch

    path = Path(path)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
            reason = (str(error).splitlines() or [""])[0]
            raise DataError(
                f"The cached weights {path} do not load as plain tensors ({type(error).__name__}: {reason}); "
                "delete the file and the next run trains them again."
            ) from None
        module.load_state_dict(state)
        return module
    train()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(module.state_dict(), tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return module
