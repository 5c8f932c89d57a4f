"""Confidence intervals and the power estimate of reproduce/harness/stats.py."""

import numpy as np
import pytest

from reproduce.harness.stats import mean_interval, samples_to_decide


def test_the_interval_holds_the_mean_and_is_reproducible():
    samples = np.random.default_rng(3).normal(10.0, 2.0, 40)
    low, high = mean_interval(samples)
    assert low < samples.mean() < high
    assert (low, high) == mean_interval(samples)  # fixed seed and resamples
    # About the normal interval's half-width, 1.96 * sd / sqrt(n).
    assert (high - low) / 2 == pytest.approx(1.96 * samples.std(ddof=1) / np.sqrt(40), rel=0.2)


def test_more_samples_narrow_the_interval():
    rng = np.random.default_rng(4)
    few, many = mean_interval(rng.normal(0, 1, 5)), mean_interval(rng.normal(0, 1, 500))
    assert many[1] - many[0] < (few[1] - few[0]) / 3


def test_equal_samples_give_a_point_and_bad_samples_are_refused():
    assert mean_interval([2.5, 2.5, 2.5]) == (2.5, 2.5)
    for bad in ([1.0], [1.0, float("nan")], []):
        with pytest.raises(ValueError, match="at least 2 finite samples"):
            mean_interval(bad)


def test_samples_to_decide_follows_the_spread_and_the_distance():
    samples = [9.0, 11.0, 10.0, 12.0, 8.0]  # mean 10, sd ~1.58
    near, far = samples_to_decide(samples, 9.8), samples_to_decide(samples, 9.0)
    assert near > far >= len(samples) + 1
    assert near == int(np.ceil((1.96 * np.std(samples, ddof=1) / 0.2) ** 2))
    assert samples_to_decide(samples, 10.0) is None
