"""The speed-up samples the HBP claims are judged on: one stratum per matrix, one sample per timed round.

The artifacts time a baseline and HBP in interleaved rounds (baseline, HBP, baseline, HBP, ...;
:func:`interleaved_rounds`), so round ``r`` of each saw the same state of the machine. In a
round each runs a short batch and keeps its fastest call: on a busy machine a call of
microseconds that loses its core for a time slice would otherwise make one round's speed-up
many times too high or too low. The speed-up of round ``r`` is
``baseline_r / hbp_r`` (a ratio of times, unit "x"); a matrix's speed-up is the mean over its
rounds, and a claim's value is its statistic over matrices ("mean over matrices" for the
preprocessing claims, "max over matrices" for the SpMV ones). The interval of that statistic
(:meth:`reproduce.harness.stats.Samples.interval`) resamples each matrix's rounds on its own,
so it shows how far timing noise moves the claim's value on these matrices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reproduce.harness.stats import Samples

MAX_BATCH = 1000  # calls of one function per round, at most


def interleaved_rounds(calls: Mapping[str, Callable[[], Mapping[str, float]]], rounds: int, min_round_s: float,
                       max_batch: int = MAX_BATCH) -> tuple[dict[str, list[Mapping[str, float]]], dict[str, float]]:
    """Per name, the seconds of each of ``rounds`` interleaved rounds, and its mean calls per round.

    ``calls[name]()`` does the work once and returns its own seconds, ``{"total": s, ...}`` (other keys:
    phases of it), so that what is timed (a build's passes, a GPU's events) stays the caller's. Round after
    round, each name in turn runs a batch: calls until the batch has lasted ``min_round_s`` on the host clock
    (at least one call, at most ``max_batch``), keeping the seconds of its fastest call (least ``"total"``).
    A batch bounded in time, not in calls, keeps a round's cost when a busy machine slows every call."""
    times = {name: [] for name in calls}
    counts = dict.fromkeys(calls, 0)
    for _ in range(rounds):
        for name, call in calls.items():
            batch, begin = [], time.perf_counter()
            while not batch or (len(batch) < max_batch and time.perf_counter() - begin < min_round_s):
                batch.append(call())
            times[name].append(min(batch, key=lambda seconds: seconds["total"]))
            counts[name] += len(batch)
    return times, {name: count / rounds for name, count in counts.items()}


def round_speedups(baseline: Sequence[float], new: Sequence[float]) -> list[float]:
    """``baseline[r] / new[r]`` per round: times of the same rounds, in one unit, both positive.

    Raises ValueError when the rounds differ in number (the times were not interleaved)."""
    baseline, new = np.asarray(baseline, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if baseline.shape != new.shape:
        raise ValueError(f"{baseline.size} baseline rounds against {new.size}: speed-ups pair rounds one to one")
    return (baseline / new).tolist()


def speedup_samples(per_matrix: Mapping[str, Sequence[float]], statistic: str) -> Samples | None:
    """Samples of ``statistic`` over matrices of their per-round speed-ups (``per_matrix``: matrix -> speed-ups);
    rounds that are not finite and positive (a time of zero) are left out, and so is a matrix left with none.
    None when no matrix has any."""
    strata = {}
    for matrix, speedups in per_matrix.items():
        kept = [float(v) for v in speedups if np.isfinite(v) and v > 0]
        if kept:
            strata[matrix] = kept
    return Samples(strata, statistic) if strata else None



# On an idle machine the rounds of one executor agree within tens of percent (each is the fastest call
# of its batch); a busy one stalls calls by a scheduler's time slice, a thousand times a 0.1 ms build.
MAX_ROUND_SPREAD = 3.0  # slowest / fastest round of one executor beyond which a matrix's rounds are noise
MAX_NOISY_FRACTION = 0.25  # above this fraction of matrices left out, the claim is withheld


@dataclass(frozen=True)
class ClaimSamples:
    """What a speed-up claim is judged on (:func:`claim_samples`): its samples, the reason to withhold it
    (or None) and a note on the matrices left out (or None)."""

    samples: Samples | None
    withheld: str | None
    note: str | None


def claim_samples(rounds: Mapping[str, Mapping[str, Sequence[float]]], baseline: str, new: str, statistic: str,
                  max_spread: float = MAX_ROUND_SPREAD) -> ClaimSamples:
    """``statistic`` over matrices of ``new``'s per-round speed-up over ``baseline``.

    ``rounds`` maps a matrix to each executor's time per round (any unit). A matrix where the slowest round of
    either executor took more than ``max_spread`` times its fastest is left out (its rounds measured the
    machine's load, not the executors); when more than :data:`MAX_NOISY_FRACTION` of the matrices are, the
    claim is withheld with the numbers."""
    spreads = {matrix: max(_spread(times[baseline]), _spread(times[new])) for matrix, times in rounds.items()}
    noisy = {matrix: spread for matrix, spread in spreads.items() if spread > max_spread}
    samples = speedup_samples({matrix: round_speedups(times[baseline], times[new])
                               for matrix, times in rounds.items() if matrix not in noisy}, statistic)
    if not noisy:
        return ClaimSamples(samples, None, None)
    worst = max(noisy, key=noisy.get)
    what = (f"in {len(noisy)} of {len(rounds)} matrices the slowest round of {baseline} or {new} took more than "
            f"{max_spread:g}x the fastest (at most {noisy[worst]:.3g}x, {worst}): the machine was busy")
    withheld = None
    if samples is None or len(noisy) > MAX_NOISY_FRACTION * len(rounds):
        withheld = f"timings unreliable: {what}; rerun on an idle machine"
    return ClaimSamples(samples, withheld, f"{new} against {baseline}: {what}, so they are left out.")


def _spread(times: Sequence[float]) -> float:
    """Slowest / fastest of ``times`` (inf when the fastest is not positive)."""
    fastest = min(times)
    return max(times) / fastest if fastest > 0 else float("inf")
