"""Confidence intervals for the statistics claims name, and how many samples a verdict would need.

:func:`mean_interval` is a percentile bootstrap (``scipy.stats.bootstrap``) of the mean of a
claim's samples (per seed, per matrix, per repeated timing), with a fixed number of resamples and
a fixed seed, so the same samples always give the same interval. :func:`samples_to_decide` is
the power estimate an ``inconclusive`` verdict reports: the samples at which a normal interval
of the observed spread would no longer straddle the claim's boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 0


def mean_interval(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile-bootstrap ``confidence`` interval of the mean of ``samples`` (at least 2, finite).

    All samples equal give the degenerate interval (v, v).
    """
    values = np.asarray(samples, dtype=np.float64)
    if values.size < 2 or not np.isfinite(values).all():
        raise ValueError(f"an interval needs at least 2 finite samples, got {values.tolist()}")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=RESAMPLES,
                             method="percentile", random_state=np.random.default_rng(SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def samples_to_decide(samples: Sequence[float], boundary: float, confidence: float = CONFIDENCE) -> int | None:
    """Samples at which the normal interval of the mean, at the observed spread, would clear ``boundary``;
    None when the mean sits on the boundary (no number of samples decides)."""
    values = np.asarray(samples, dtype=np.float64)
    distance = abs(float(values.mean()) - boundary)
    if distance == 0:
        return None
    z = stats.norm.ppf(0.5 + confidence / 2)
    return max(values.size + 1, math.ceil((z * float(values.std(ddof=1)) / distance) ** 2))
