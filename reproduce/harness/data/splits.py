"""Seeded splits of a dataset into disjoint parts, and the provenance of data drawn from several sets.

A split is fixed by its own seed, not the run's: every run, seed and unit trains, selects
and tests on the same images, so two runs differ only in what they are meant to vary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reproduce.harness.errors import DataError


def seeded_parts(count: int, sizes: Sequence[int | None], seed: int) -> list[np.ndarray]:
    """Disjoint index arrays into ``count`` items: a permutation by ``np.random.default_rng(seed)``
    cut into consecutive parts of ``sizes``.

    The last size may be ``None``: that part takes every index the others leave. Items beyond
    the parts are unused. Raises DataError when the parts need more than ``count`` items.
    """
    rest = bool(sizes) and sizes[-1] is None
    fixed = list(sizes[:-1] if rest else sizes)
    if any(size is None or size < 0 for size in fixed):
        raise ValueError(f"sizes must be non-negative integers, only the last may be None: {list(sizes)}")
    if sum(fixed) > count:
        raise DataError(f"the split asks for {sum(fixed)} items ({' + '.join(map(str, fixed))}) from a set of "
                        f"{count}; ask for fewer")
    order = np.random.default_rng(seed).permutation(count)
    bounds = np.cumsum([0, *fixed])
    parts = [order[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
    return [*parts, order[bounds[-1]:]] if rest else parts


def joint_provenance(parts: dict[str, dict]) -> dict:
    """One provenance (``{"source", "files", "notes"}``, as :class:`~reproduce.harness.data.images.ImageSet`
    has) of data drawn from several sets: ``parts`` maps each role (``"train"``, ``"test"``) to the
    provenance of the set it came from. Sources and notes are listed by role; files are merged."""
    return {"source": "; ".join(f"{role}: {part['source']}" for role, part in parts.items()),
            "files": {name: digest for part in parts.values() for name, digest in part["files"].items()},
            "notes": "; ".join(f"{role}: {part['notes']}" for role, part in parts.items())}
