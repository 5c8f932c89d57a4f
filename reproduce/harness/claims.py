"""The papers' numbers (``reproduce/<paper>/claims.toml``) and verdicts against them.

A claim is one number of a paper with its tolerance and direction (DESIGN.md, "Claims").
:func:`judge` compares a measured value with it:

- ``reproduced``: within tolerance, or better than the paper in the claim's direction;
- ``not reproduced``: outside tolerance on the worse side; the gap is reported;
- ``not run``: nothing was measured, or this scale or device does not check the claim;
- ``not judged``: the claim's confidence is ``unverified``; the measurement is shown only.

Claims read off a chart (``approximate``) are judged but flagged as indicative.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from reproduce.harness.errors import ReproError

REPRODUCE_DIR = Path(__file__).resolve().parents[1]
VERDICTS = ("reproduced", "not reproduced", "not run", "not judged")
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
          device_name: str = "") -> Verdict:
    """The verdict on ``claim`` for a value measured at ``scale`` on the given device."""
    if scale not in claim.scales:
        return Verdict(claim, "not run", measured, note=f"checked at {' or '.join(claim.scales)} scale")
    if not device_matches(claim.requires, device_kind, device_name):
        return Verdict(claim, "not run", measured, note=f"needs a {claim.requires} device")
    if measured is None:
        return Verdict(claim, "not run", note="not measured in this run")
    if claim.confidence == "unverified":
        return Verdict(claim, "not judged", measured, note="unverified source: shown, never judged")
    low, high = claim.bounds()
    better_than_paper = measured > claim.value if claim.better == "higher" else measured < claim.value
    if low <= measured <= high or better_than_paper:
        return Verdict(claim, "reproduced", measured, gap=measured - claim.value)
    return Verdict(claim, "not reproduced", measured, gap=measured - claim.value,
                   note=f"outside [{low:.4g}, {high:.4g}]")
