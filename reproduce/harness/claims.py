"""The papers' numbers (``reproduce/<paper>/claims.toml``) and verdicts against them.

A claim is one number of a paper with its tolerance and direction (``docs/claims.md``).
:func:`judge` compares a measurement with it, from the 95% confidence interval of its samples
(seeds, matrices, repeated timings; :mod:`reproduce.harness.stats`) where it has two or more:

- ``reproduced``: the interval lies within tolerance or better than the paper in the claim's
  direction (for a deterministic claim, or a single sample, the value does); a claim with no
  better direction (``better = "neither"``: a count that should equal the paper's) must lie
  within tolerance on both sides;
- ``not reproduced``: the interval lies wholly outside tolerance on the worse side; the gap is
  reported;
- ``inconclusive``: the interval straddles the tolerance boundary (the note gives the interval
  and about how many seeds would decide), or the claim rests on one sample and is not
  ``deterministic``: one seed cannot carry a verdict;
- ``not run``: nothing was measured, or this scale or device does not check the claim;
- ``not judged``: the claim's confidence is ``unverified``, or the artifact withheld the
  comparison (its reference model is below the learning floor, or the metric is unreliable at
  this scale); the measurement is shown only.

Claims read off a chart (``approximate``) are judged but flagged as indicative. A claim whose
number was measured on another class of device than the run's (``platform``) is judged but
labelled ``(other device)``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reproduce.harness.errors import ReproError
from reproduce.harness.stats import Samples

REPRODUCE_DIR = Path(__file__).resolve().parents[1]
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run", "not judged")
JUDGED = ("reproduced", "not reproduced", "inconclusive")
CONFIDENCES = ("verified", "approximate", "unverified")
# The classes of device a paper measures on (``platform``): a time, a speed-up or a memory figure
# depends on it; an accuracy does not (no platform).
PLATFORMS = ("cpu", "gpu", "edge-gpu")
EDGE_GPU_NAMES = ("jetson", "orin", "xavier", "tegra")
# The direction in which a measurement beats the paper; "neither": a value that should equal the paper's
# (a parameter count, a model size), within tolerance on both sides.
DIRECTIONS = ("higher", "lower", "neither")
OTHER_DEVICE = "(other device)"


@dataclass(frozen=True)
class Claim:
    """One number of a paper; its fields are described in ``docs/claims.md``.

    ``requires`` (optional) names the device the claim needs: a kind (``"cuda"``), or a
    kind and a part of the device's name (``"cuda:RTX 4090"``, case-insensitive) for a
    number measured on one model. On other devices the claim is ``not run``, with the
    measured value still shown.

    ``why`` says where the tolerance comes from (the paper's std, a chart's reading error, a
    device difference). ``deterministic`` marks a number every seed gives alike (a parameter or
    FLOP count), which one sample may decide. ``platform`` (:data:`PLATFORMS`) is the class of
    device the paper measured a device-dependent number on (a time, a speed-up, memory).
    """

    id: str
    text: str
    value: float
    unit: str
    better: str
    tolerance: dict
    source: str
    confidence: str
    scales: tuple[str, ...]
    setting: dict = field(default_factory=dict)
    std: float | None = None
    requires: str | None = None
    why: str = ""
    deterministic: bool = False
    platform: str | None = None

    def __post_init__(self):
        if self.better not in DIRECTIONS:
            raise ReproError(f"claim {self.id!r}: better must be one of {DIRECTIONS}, not {self.better!r}")
        if self.confidence not in CONFIDENCES:
            raise ReproError(f"claim {self.id!r}: confidence must be one of {CONFIDENCES}")
        if len(self.tolerance) != 1 or next(iter(self.tolerance)) not in ("rel", "abs", "window"):
            raise ReproError(f"claim {self.id!r}: tolerance must be one of rel, abs or window")
        if self.platform is not None and self.platform not in PLATFORMS:
            raise ReproError(f"claim {self.id!r}: platform must be one of {PLATFORMS}, not {self.platform!r}")

    def bounds(self) -> tuple[float, float]:
        """The interval of values within tolerance, in the claim's unit."""
        kind, width = next(iter(self.tolerance.items()))
        if kind == "window":
            low, high = width
            return float(low), float(high)
        spread = abs(self.value) * width if kind == "rel" else width
        return self.value - spread, self.value + spread

    def passing(self) -> tuple[float, float]:
        """The values that reproduce the claim: within tolerance or better than the paper in its direction,
        i.e. from the tolerance's worse end outwards on the better side (the band itself for ``"neither"``)."""
        low, high = self.bounds()
        return (low if self.better != "lower" else -math.inf), (high if self.better != "higher" else math.inf)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict and what it rests on."""

    claim: Claim
    status: str
    measured: float | None = None
    gap: float | None = None
    note: str = ""
    ci: tuple[float, float] | None = None  # the 95% interval of the statistic, when judged from samples
    samples: int | None = None  # samples per stratum (seeds, repeats) the verdict rests on
    device_match: bool | None = None  # whether the run's device class is the paper's; None: no platform

    @property
    def indicative(self) -> bool:
        return self.claim.confidence == "approximate"

    @property
    def label(self) -> str:
        """The status as tables show it: with ``(1 sample)``, ``(indicative)`` and ``(other device)`` where
        they apply."""
        marks = [" (1 sample)" if self.samples == 1 else "",
                 " (indicative)" if self.indicative and self.status in JUDGED else "",
                 f" {OTHER_DEVICE}" if self.device_match is False and self.status in JUDGED else ""]
        return self.status + "".join(marks)


def load_claims(paper: str, root: Path | None = None) -> list[Claim]:
    """The claims of ``paper`` from ``<root>/<paper>/claims.toml`` (empty if none).

    ``root`` defaults to the ``reproduce`` package folder.
    """
    path = Path(root if root is not None else REPRODUCE_DIR) / paper / "claims.toml"
    if not path.exists():
        return []
    try:
        entries = tomllib.loads(path.read_text()).get("claim", [])
    except tomllib.TOMLDecodeError as err:
        raise ReproError(f"{path}: not valid TOML ({err})") from None
    claims = []
    for entry in entries:
        try:
            claims.append(Claim(**{**entry, "scales": tuple(entry["scales"])}))
        except (TypeError, KeyError) as err:
            raise ReproError(f"{path}: claim {entry.get('id', '?')!r} is malformed ({err})") from None
    ids = [c.id for c in claims]
    if len(ids) != len(set(ids)):
        raise ReproError(f"{path}: claim ids are not unique")
    return claims


def device_matches(requires: str | None, device_kind: str, device_name: str = "") -> bool:
    """Whether a device of ``device_kind`` named ``device_name`` satisfies ``requires``."""
    if not requires:
        return True
    kind, _, model = requires.partition(":")
    return kind == device_kind and model.strip().lower() in device_name.lower()


def device_class(device_kind: str, device_name: str = "") -> str:
    """The :data:`PLATFORMS` class of a device: a CUDA device is an edge GPU when its name says so
    (Jetson, Orin, Xavier, Tegra); the emulated CUDA device counts as the CPU it runs on."""
    if device_kind != "cuda":
        return "cpu"
    return "edge-gpu" if any(name in device_name.lower() for name in EDGE_GPU_NAMES) else "gpu"


def judge(claim: Claim, measured: float | None, scale: str, device_kind: str = "cpu",
          device_name: str = "", samples: Samples | Sequence[float] | None = None,
          withheld: str | None = None) -> Verdict:
    """The verdict on ``claim`` for a value measured at ``scale`` on the given device.

    ``samples`` are what ``measured`` is the statistic of (:class:`~reproduce.harness.stats.Samples`,
    or a plain sequence whose mean it is); with two or more per stratum the verdict follows their
    95% interval. Without them, or with one, a claim that is not ``deterministic`` is at most
    ``inconclusive (1 sample)``. ``withheld`` is the artifact's reason not to judge a measured
    comparison (below the learning floor, an unreliable metric): the verdict is ``not judged``.
    """
    if scale not in claim.scales:
        return Verdict(claim, "not run", measured, note=f"checked at {' or '.join(claim.scales)} scale")
    if not device_matches(claim.requires, device_kind, device_name):
        return Verdict(claim, "not run", measured, note=f"needs a {claim.requires} device")
    if measured is None:
        return Verdict(claim, "not run", note="not measured in this run")
    if claim.confidence == "unverified":
        return Verdict(claim, "not judged", measured, note="unverified source: shown, never judged")
    if withheld:
        return Verdict(claim, "not judged", measured, note=withheld)
    match = None if claim.platform is None else claim.platform == device_class(device_kind, device_name)
    drawn = Samples.of(samples) if samples is not None else None
    interval = drawn.interval() if drawn is not None else None
    if interval is not None:
        verdict = _judge_interval(claim, measured, drawn, interval)
    else:
        verdict = _judge_point(claim, measured)
        if not claim.deterministic:
            side = "within tolerance or better" if verdict.status == "reproduced" else "outside tolerance"
            verdict = Verdict(claim, "inconclusive", measured, gap=verdict.gap, samples=1,
                              note=f"its one sample lies {side}; one seed cannot carry a verdict")
    return dataclasses.replace(verdict, device_match=match)


def _judge_point(claim: Claim, measured: float) -> Verdict:
    """:func:`judge` of one value: within tolerance or better than the paper, or not."""
    low, high = claim.bounds()
    floor, ceiling = claim.passing()
    if floor <= measured <= ceiling:
        return Verdict(claim, "reproduced", measured, gap=measured - claim.value)
    return Verdict(claim, "not reproduced", measured, gap=measured - claim.value,
                   note=f"outside [{low:.4g}, {high:.4g}]")


def _judge_interval(claim: Claim, measured: float, samples: Samples, interval: tuple[float, float]) -> Verdict:
    """:func:`judge` from the interval of ``samples`` against :meth:`Claim.passing` (for ``better = "neither"``
    the boundary named is the end of the band the interval crosses)."""
    low, high = claim.bounds()
    floor, ceiling = claim.passing()
    ci_low, ci_high = interval
    passing = floor <= ci_low and ci_high <= ceiling
    failing = ci_high < floor or ci_low > ceiling
    boundary = floor if ci_low < floor or math.isinf(ceiling) else ceiling  # the finite end the interval crosses
    per = samples.per_stratum
    strata = f" in each of {len(samples.strata)} strata ({samples.statistic})" if len(samples.strata) > 1 else ""
    where = f"95% interval [{ci_low:.4g}, {ci_high:.4g}] of {per} samples{strata}"
    common = {"gap": measured - claim.value, "ci": interval, "samples": per}
    if passing:
        return Verdict(claim, "reproduced", measured, note=where, **common)
    if failing:
        return Verdict(claim, "not reproduced", measured, note=f"{where}, outside [{low:.4g}, {high:.4g}]", **common)
    needed = samples.to_decide(interval, boundary)
    decide = f"about {needed} samples at this spread would decide" if needed else "the mean sits on the boundary"
    return Verdict(claim, "inconclusive", measured, note=f"{where} straddles {boundary:.4g}; {decide}", **common)
