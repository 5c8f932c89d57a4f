"""Where the harness keeps things on disk.

- cache: downloaded matrices and datasets, measured machine bandwidth.
  ``$REPRO_CACHE``, else the user's cache dir (``~/.cache/repro`` on Linux).
- local data: ``$REPRO_MATRIX_DIRS`` and ``$REPRO_DATA_DIRS``, ``os.pathsep``-separated
  lists of folders searched before the cache.
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
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


def config_key(config: dict, fields: tuple[str, ...]) -> str:
    """A short stable hash of ``config``'s ``fields``: names a cached artifact built from them."""
    text = json.dumps({name: config.get(name) for name in fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_weights(module, path: Path, train: Callable[[], object]):
    """``module`` with the weights saved at ``path``, or trained by ``train()`` and saved there first.

    ``train`` trains ``module`` in place. The state dict is written to a temporary file and
    renamed, so an interrupted run leaves no half-written weights; the next run trains again.
    Returns ``module``.
    """
    import torch

    path = Path(path)
    if path.is_file():
        module.load_state_dict(torch.load(path, map_location="cpu"))
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
