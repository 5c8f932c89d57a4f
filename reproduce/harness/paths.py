"""Where the harness keeps things on disk.

- cache: downloaded matrices and datasets, measured machine bandwidth.
  ``$REPRO_CACHE``, else the user's cache dir (``~/.cache/repro`` on Linux).
- local data: ``$REPRO_MATRIX_DIRS`` and ``$REPRO_DATA_DIRS``, ``os.pathsep``-separated
  lists of folders searched before the cache.
"""

import os
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
