"""Where the harness keeps things on disk.

- cache: downloaded matrices and datasets, measured machine bandwidth.
  ``$REPRO_CACHE``, else the user's cache dir (``~/.cache/repro`` on Linux).
- local data: ``$REPRO_MATRIX_DIRS`` and ``$REPRO_DATA_DIRS``, ``os.pathsep``-separated
  lists of folders searched before the cache.
"""

import os
import tempfile
from pathlib import Path

import platformdirs


def cache_dir(*parts: str) -> Path:
    """The cache folder (created on demand), or a subfolder of it."""
    root = os.environ.get("REPRO_CACHE")
    base = Path(root).expanduser() if root else Path(platformdirs.user_cache_dir("repro"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_dirs(variable: str) -> list[Path]:
    """The existing folders listed in the ``os.pathsep``-separated variable, in order."""
    value = os.environ.get(variable, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p and Path(p).expanduser().is_dir()]


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
