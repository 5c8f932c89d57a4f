"""How a reproduction script declares one paper artifact (a table or a figure).

A script ``reproduce/<paper>/<name>.py`` builds one :class:`Artifact` named ``ARTIFACT``:
which claims it checks, the config of each scale, how to list the units of work, how to
run one unit, and how to turn the unit records into a table, claim measurements and
plots. The runner (:mod:`reproduce.harness.runner`) does everything else: devices,
seeds, records, resuming, progress, verdicts and the terminal summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from reproduce.harness.device import Device
    from reproduce.harness.records import Record
    from reproduce.harness.stats import Samples

SCALES = ("smoke", "quick", "full")
# The kinds of device a run can use (``--device``): the CPU, a CUDA GPU, and the emulated CUDA
# device (cuda_emu), which only artifacts that declare it run on.
DEVICE_KINDS = ("cpu", "cuda", "cuda-emu")
DEFAULT_DEVICES = ("cpu", "cuda")


class SkipUnit(Exception):  # noqa: N818 - raised to say "skip", not an error
    """Raised by ``run_unit`` when a unit cannot run here; the message is the reason."""


@dataclass(frozen=True)
class Unit:
    """One unit of work (a matrix, a seed, a method x setting).

    ``id`` names the record file, so it is short and filesystem-safe; ``params`` are
    JSON values stored in the record.
    """

    id: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What a unit runs with: the scale, its resolved config, the seed and the device."""

    scale: str
    config: dict
    seed: int
    device: Device

    def rng(self, unit: Unit | str) -> np.random.Generator:
        """A generator seeded by the run's seed and the unit's id (stable across runs)."""
        name = unit.id if isinstance(unit, Unit) else unit
        salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, salt])


@dataclass
class Outcome:
    """What ``run_unit`` returns: metrics (``records.metric`` dicts) and data provenance."""

    metrics: dict[str, dict]
    data: dict = field(default_factory=dict)


@dataclass
class Summary:
    """The aggregate of a run's records.

    ``table`` has one row per unit or per aggregate; ``measured`` maps claim ids (of the
    artifact's ``claims``: any other key is an error) to the measured value that
    :func:`reproduce.harness.claims.judge` compares; ``samples`` maps claim ids to what that
    value is the statistic of (:class:`~reproduce.harness.stats.Samples`: per
    seed, matrix or repeated timing; a plain list is one stratum whose mean it is), so that the
    verdict follows their confidence interval; ``withheld`` maps claim ids to the reason a
    measured comparison is not judged (:mod:`reproduce.harness.sanity`: its reference model is
    below the learning floor, or the metric is unreliable at this scale); ``figures`` are
    ``(caption, Figure)`` pairs, each built with ``matplotlib.figure.Figure()`` (never pyplot, so no
    backend is chosen and nothing global holds it) and saved by the report with ``Figure.savefig``;
    ``notes`` are sentences shown with the table.
    """

    table: pd.DataFrame
    measured: dict[str, float] = field(default_factory=dict)
    samples: dict[str, Samples | list[float]] = field(default_factory=dict)
    withheld: dict[str, str] = field(default_factory=dict)
    figures: list[tuple[str, Figure]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Artifact:
    """A paper's table or figure, as the harness runs it.

    Parameters
    ----------
    paper, name : str
        ``reproduce/<paper>/<name>.py``; the artifact's id is ``paper/name``.
    title : str
        What the artifact shows, as the paper captions it.
    scales : dict[str, dict]
        The config of each scale in :data:`SCALES` this artifact supports.
    needs : dict[str, str]
        Per scale, one sentence on what it needs (data, downloads, a GPU).
    units : callable(Context) -> list[Unit]
    run_unit : callable(Unit, Context) -> Outcome
    summarize : callable(list[Record], Context) -> Summary
    claims : tuple[str, ...]
        Ids in ``reproduce/<paper>/claims.toml`` that ``summarize`` measures.
    options : dict[str, dict]
        Extra command-line flags: ``"--flag": argparse keyword arguments``. A flag given
        on the command line overrides the config key of the same (dest) name.
    fetch : callable(Context) -> list[str], optional
        Pre-downloads what a scale needs; returns a line per item for ``repro fetch``.
    unhashed_keys : tuple of str
        Config keys that change how units run but not what they measure (``keep_matrices``):
        left out of the config hash, so giving them or not never splits a sweep in two.
    timed : bool
        Whether the claims rest on times or memory measured inside units: then units never run
        at once on shared CPU cores (a ``--executor local`` run on the CPU runs this artifact's
        units one after another in this process), so no unit's measurement overlaps another's.
    devices : tuple of str
        The device kinds (:data:`DEVICE_KINDS`) whose runs this artifact supports; default
        ``("cpu", "cuda")``. The emulated CUDA device (``"cuda-emu"``) runs CUDA kernels on the
        CPU for correctness and memory traffic, so only an artifact whose ``run_unit`` handles
        it lists it; ``repro run`` refuses (one target) or skips (``all``, a paper) the others
        there. Its times are never compared with a paper's: every claim is "not run" on it.
    """

    paper: str
    name: str
    title: str
    scales: dict[str, dict]
    needs: dict[str, str]
    units: Callable[[Context], list[Unit]]
    run_unit: Callable[[Unit, Context], Outcome]
    summarize: Callable[[list[Record], Context], Summary]
    claims: tuple[str, ...] = ()
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetch: Callable[[Context], list[str]] | None = None
    unhashed_keys: tuple[str, ...] = ()
    timed: bool = False
    devices: tuple[str, ...] = DEFAULT_DEVICES

    def __post_init__(self):
        unknown = set(self.scales) - set(SCALES)
        if unknown or "smoke" not in self.scales:
            raise ValueError(f"{self.id}: scales must include smoke and be among {SCALES}")
        if not self.devices or set(self.devices) - set(DEVICE_KINDS):
            raise ValueError(f"{self.id}: devices must be among {DEVICE_KINDS}, not {self.devices}")

    def option_keys(self) -> dict[str, str]:
        """The config key each of ``options`` sets (argparse's ``dest``), mapped to its flag."""
        return {kwargs.get("dest", flag.lstrip("-").replace("-", "_")): flag for flag, kwargs in self.options.items()}

    def runs_on(self, device_kind: str) -> bool:
        """Whether this artifact's units run on a device of ``device_kind`` (see ``devices``)."""
        return device_kind in self.devices

    @property
    def id(self) -> str:
        return f"{self.paper}/{self.name}"
