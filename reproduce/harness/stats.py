"""Confidence intervals for the statistics claims name, and how many samples a verdict would need.

A claim's measurement is a statistic of :class:`Samples`: the values of one or more strata (a
matrix, a task, a setting), each with its samples (seeds, repeated timings). The statistic is
the mean of each stratum's samples, then ``mean``, ``max``, ``min`` or ``geomean`` over the
strata (one stratum: its mean). :meth:`Samples.interval` is a stratified percentile bootstrap
(``scipy.stats.bootstrap`` with one sample per stratum, resampled independently, as rliable
does across tasks), with a fixed number of resamples and a fixed seed, so the same samples
always give the same interval. :meth:`Samples.to_decide` is the power estimate an
``inconclusive`` verdict reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 0
STATISTICS = ("mean", "max", "min", "geomean")


def _over_strata(means: np.ndarray, statistic: str) -> np.ndarray:
    """``statistic`` over axis 0 of per-stratum means (strata x ...)."""
    if statistic == "geomean":
        return np.exp(np.log(means).mean(axis=0))
    return getattr(np, statistic)(means, axis=0)


@dataclass(frozen=True)
class Samples:
    """The samples a claim's measured value is a statistic of.

    ``strata`` maps a stratum's name (a matrix, a setting; ``""`` when there is one) to its
    samples: one value per seed or per repeated timing, in the claim's unit. ``statistic`` is
    taken over the strata's means (:data:`STATISTICS`); ``geomean`` needs positive values.
    """

    strata: Mapping[str, Sequence[float]]
    statistic: str = "mean"

    def __post_init__(self):
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, not {self.statistic!r}")
        if not self.strata or any(len(values) == 0 for values in self.strata.values()):
            raise ValueError("every stratum needs at least one sample")
        values = np.concatenate([np.asarray(v, dtype=np.float64) for v in self.strata.values()])
        if not np.isfinite(values).all() or (self.statistic == "geomean" and (values <= 0).any()):
            raise ValueError(f"samples must be finite{' and positive' if self.statistic == 'geomean' else ''}")

    @classmethod
    def of(cls, values: Samples | Sequence[float]) -> Samples:
        """``values`` as Samples: a plain sequence is one stratum whose mean is the statistic."""
        return values if isinstance(values, Samples) else cls({"": list(values)})

    @property
    def per_stratum(self) -> int:
        """The fewest samples of any stratum: the seeds (or repeats) the interval rests on."""
        return min(len(values) for values in self.strata.values())

    @property
    def count(self) -> int:
        """All samples of all strata."""
        return sum(len(values) for values in self.strata.values())

    def point(self) -> float:
        """The statistic of the samples as measured."""
        means = np.array([np.mean(values) for values in self.strata.values()])
        return float(_over_strata(means, self.statistic))

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """The stratified percentile-bootstrap ``confidence`` interval of :meth:`point`, or None when no
        stratum has two samples (nothing to resample). Strata of one sample enter as constants."""
        arrays = [np.asarray(values, dtype=np.float64) for values in self.strata.values()]
        varying = [a for a in arrays if a.size >= 2 and np.ptp(a) > 0]
        if not varying:
            return None if all(a.size < 2 for a in arrays) else (self.point(), self.point())
        fixed = [a.mean() for a in arrays if not (a.size >= 2 and np.ptp(a) > 0)]
        statistic = self.statistic

        def resampled(*data, axis=-1):
            means = [d.mean(axis=axis) for d in data]
            shape = np.shape(means[0])
            means += [np.full(shape, value) for value in fixed]
            return _over_strata(np.stack(means), statistic)

        result = stats.bootstrap(tuple(varying), resampled, confidence_level=confidence, n_resamples=RESAMPLES,
                                 method="percentile", paired=False, vectorized=True,
                                 random_state=np.random.default_rng(SEED))
        return float(result.confidence_interval.low), float(result.confidence_interval.high)

    def to_decide(self, interval: tuple[float, float], boundary: float) -> int | None:
        """Samples per stratum at which an interval like ``interval`` would clear ``boundary``: its
        half-width shrinks as one over the square root of the samples. None when the statistic sits
        on the boundary (no number of samples decides)."""
        distance = abs(self.point() - boundary)
        if distance == 0:
            return None
        half_width = (interval[1] - interval[0]) / 2
        return max(self.per_stratum + 1, math.ceil(self.per_stratum * (half_width / distance) ** 2))

