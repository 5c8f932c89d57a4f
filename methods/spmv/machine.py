"""What the CPU's caches hold: the sizes the CPU block shape of the blocked formats is chosen from."""

from __future__ import annotations

import functools
import os
from pathlib import Path

# Where the kernel exposes nothing (not Linux, a container without sysfs): a common server core.
FALLBACK_CACHES = {"L1d": 32 * 1024, "L2": 1024 * 1024, "L3": 32 * 1024 * 1024}
_SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


@functools.cache
def cpu_caches() -> dict[str, int]:
    """Bytes of each data cache level of one core (L3: the whole cache the core shares), from sysfs.

    Returns
    -------
    dict of str to int
        Keys ``"L1d"``, ``"L2"``, ``"L3"``; a level that sysfs does not list keeps the value of
        :data:`FALLBACK_CACHES` (:func:`caches_measured` tells the two apart).
    """
    sizes = dict(FALLBACK_CACHES)
    sizes.update(_sysfs_caches())
    return sizes


def caches_measured() -> bool:
    """Whether :func:`cpu_caches` read this machine's sizes (True) or fell back (False)."""
    return bool(_sysfs_caches())


@functools.cache
def _sysfs_caches() -> dict[str, int]:
    found = {}
    if not _SYSFS_CACHE.is_dir():
        return found
    for index in sorted(_SYSFS_CACHE.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and level in ("1", "2", "3"):
            found["L1d" if level == "1" else f"L{level}"] = size
    return found


def _parse_size(text: str) -> int:
    """'1024K' -> 1048576, '32M' -> 33554432, '512' -> 512."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
