"""The software environment a result was produced in: Python, packages, git state."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("numpy", "scipy", "numba", "pandas", "torch", "cupy-cuda12x", "cupy", "pooch",
            "matplotlib", "asv", "repro-suite")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages a result may depend on (absent ones left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def git_state() -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the suite's own checkout.

    Dirty means tracked files differ from the commit; untracked files (results,
    reports) do not count.
    """
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


@functools.cache
def environment() -> dict:
    """Everything of the environment that a record stores."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": package_versions(),
        "git": git_state(),
    }
