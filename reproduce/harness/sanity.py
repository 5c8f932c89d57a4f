"""Reasons not to judge a measured comparison: a reference model below its learning floor, and a
metric that says a derived model beats the model it derives from.

An artifact puts what these return (a sentence, or None) in ``Summary.withheld`` under the
claims they concern; :func:`reproduce.harness.claims.judge` then says ``not judged`` with the
sentence, and the measured value is still shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reproduce.harness.stats import Samples


def below_floor(what: str, value: float, floor: float, reason: str) -> str | None:
    """The ``not judged`` note when ``what`` (a reference model's score, higher is better) is below
    ``floor``, the least at which the models have learned enough for a comparison to mean
    anything (``reason`` says how the floor is set); None when it clears the floor."""
    if value >= floor:
        return None
    return f"below the learning floor: {what} {value:.4g} < {floor:.4g} ({reason})"


def better_than_source(derived: Sequence[float], source: Sequence[float], better: str, what: str) -> str | None:
    """The ``not judged`` note when a derived (quantized, distilled) model scores better than the model it
    derives from by more than the 95% interval of their per-seed differences: the metric measures
    noise at this scale. ``derived`` and ``source`` are paired by seed; ``better`` is the metric's
    direction (``"higher"`` or ``"lower"``). None when they cannot show it (under two pairs) or it
    does not hold."""
    if len(derived) != len(source):
        raise ValueError(f"derived and source are paired by seed: {len(derived)} against {len(source)} values")
    gains = np.asarray(derived, dtype=np.float64) - np.asarray(source, dtype=np.float64)
    if better == "lower":
        gains = -gains
    interval = Samples.of(gains.tolist()).interval() if len(gains) >= 2 else None
    if interval is None or interval[0] <= 0:
        return None
    return (f"metric unreliable at this scale: {what} scores better than the model it derives from "
            f"(gain {gains.mean():.3g}, 95% interval [{interval[0]:.3g}, {interval[1]:.3g}] over {len(gains)} seeds)")
