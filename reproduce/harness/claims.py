"""The papers' numbers (``reproduce/<paper>/claims.toml``) and verdicts against them.

A claim is one number of a paper with its tolerance and direction (DESIGN.md, "Claims").
:func:`judge` compares a measured value with it:

- ``reproduced``: within tolerance, or better than the paper in the claim's direction;
- ``not reproduced``: outside tolerance on the worse side; the gap is reported;
- ``inconclusive``: judged from samples (seeds, matrices, repeated timings) whose 95% confidence
  interval (:mod:`reproduce.harness.stats`) straddles the tolerance boundary; the note gives the
  interval and about how many samples would decide;
- ``not run``: nothing was measured, or this scale or device does not check the claim;
- ``not judged``: the claim's confidence is ``unverified``; the measurement is shown only.

Claims read off a chart (``approximate``) are judged but flagged as indicative.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reproduce.harness.errors import ReproError
from reproduce.harness.stats import mean_interval, samples_to_decide

REPRODUCE_DIR = Path(__file__).resolve().parents[1]
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run", "not judged")
CONFIDENCES = ("verified", "approximate", "unverified")


@dataclass(frozen=True)
class Claim:
    """One number of a paper; field meanings as in ``../shared/papers/claims/README.md``.

    ``requires`` (optional) names the device the claim needs: a kind (``"cuda"``), or a
    kind and a part of the device's name (``"cuda:RTX 4090"``, case-insensitive) for a
    number measured on one model. On other devices the claim is ``not run``, with the
    measured value still shown.
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

    def __post_init__(self):
        if self.better not in ("higher", "lower"):
            raise ReproError(f"claim {self.id!r}: better must be 'higher' or 'lower', not {self.better!r}")
        if self.confidence not in CONFIDENCES:
            raise ReproError(f"claim {self.id!r}: confidence must be one of {CONFIDENCES}")
        if len(self.tolerance) != 1 or next(iter(self.tolerance)) not in ("rel", "abs", "window"):
            raise ReproError(f"claim {self.id!r}: tolerance must be one of rel, abs or window")

    def bounds(self) -> tuple[float, float]:
        """The interval of values within tolerance, in the claim's unit."""
        kind, width = next(iter(self.tolerance.items()))
        if kind == "window":
            low, high = width
            return float(low), float(high)
        spread = abs(self.value) * width if kind == "rel" else width
        return self.value - spread, self.value + spread


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict and what it rests on."""

    claim: Claim
    status: str
    measured: float | None = None
    gap: float | None = None
    note: str = ""
    ci: tuple[float, float] | None = None  # the 95% interval of the mean, when judged from samples
    samples: int | None = None  # how many

    @property
    def indicative(self) -> bool:
        return self.claim.confidence == "approximate"


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


def judge(claim: Claim, measured: float | None, scale: str, device_kind: str = "cpu",
          device_name: str = "", samples: Sequence[float] | None = None) -> Verdict:
    """The verdict on ``claim`` for a value measured at ``scale`` on the given device.

    With ``samples`` (at least 2: the values whose mean ``measured`` is, per seed, matrix or
    repeated timing), the verdict follows their 95% bootstrap interval instead of the point:
    ``reproduced`` when it lies wholly on the passing side of the tolerance boundary,
    ``not reproduced`` when wholly on the failing side, ``inconclusive`` otherwise.
    """
    if scale not in claim.scales:
        return Verdict(claim, "not run", measured, note=f"checked at {' or '.join(claim.scales)} scale")
    if not device_matches(claim.requires, device_kind, device_name):
        return Verdict(claim, "not run", measured, note=f"needs a {claim.requires} device")
    if measured is None:
        return Verdict(claim, "not run", note="not measured in this run")
    if claim.confidence == "unverified":
        return Verdict(claim, "not judged", measured, note="unverified source: shown, never judged")
    if samples is not None and len(samples) >= 2:
        return _judge_interval(claim, measured, samples)
    low, high = claim.bounds()
    better_than_paper = measured > claim.value if claim.better == "higher" else measured < claim.value
    if low <= measured <= high or better_than_paper:
        return Verdict(claim, "reproduced", measured, gap=measured - claim.value)
    return Verdict(claim, "not reproduced", measured, gap=measured - claim.value,
                   note=f"outside [{low:.4g}, {high:.4g}]")


def _judge_interval(claim: Claim, measured: float, samples: Sequence[float]) -> Verdict:
    """:func:`judge` from the interval of ``samples``: the passing side of the boundary is everything within
    tolerance or better than the paper, i.e. from the tolerance's worse end outwards on the better side."""
    low, high = claim.bounds()
    ci_low, ci_high = mean_interval(samples)
    boundary = low if claim.better == "higher" else high
    passing = (ci_low >= boundary) if claim.better == "higher" else (ci_high <= boundary)
    failing = (ci_high < boundary) if claim.better == "higher" else (ci_low > boundary)
    where = f"95% interval [{ci_low:.4g}, {ci_high:.4g}] of {len(samples)} samples"
    common = {"gap": measured - claim.value, "ci": (ci_low, ci_high), "samples": len(samples)}
    if passing:
        return Verdict(claim, "reproduced", measured, note=where, **common)
    if failing:
        return Verdict(claim, "not reproduced", measured, note=f"{where}, outside [{low:.4g}, {high:.4g}]", **common)
    needed = samples_to_decide(samples, boundary)
    decide = f"about {needed} samples at this spread would decide" if needed else "the mean sits on the boundary"
    return Verdict(claim, "inconclusive", measured, note=f"{where} straddles {boundary:.4g}; {decide}", **common)
