"""Intervals and the power estimate of reproduce/harness/stats.py."""

import numpy as np
import pytest

from reproduce.harness.stats import Samples


def test_the_interval_holds_the_mean_and_is_reproducible():
    samples = Samples.of(np.random.default_rng(3).normal(10.0, 2.0, 40).tolist())
    low, high = samples.interval()
    values = np.asarray(samples.strata[""])
    assert low < values.mean() < high
    assert (low, high) == samples.interval()  # fixed seed and resamples
    # About the normal interval's half-width, 1.96 * sd / sqrt(n).
    assert (high - low) / 2 == pytest.approx(1.96 * values.std(ddof=1) / np.sqrt(40), rel=0.2)


def test_more_samples_narrow_the_interval():
    rng = np.random.default_rng(4)
    few, many = Samples.of(rng.normal(0, 1, 5)).interval(), Samples.of(rng.normal(0, 1, 500)).interval()
    assert many[1] - many[0] < (few[1] - few[0]) / 3


def test_equal_samples_give_a_point_one_sample_none_and_bad_samples_are_refused():
    assert Samples.of([2.5, 2.5, 2.5]).interval() == (2.5, 2.5)
    assert Samples.of([2.5]).interval() is None
    assert Samples({"a": [1.0], "b": [2.0]}, "max").interval() is None
    for bad in ([], [1.0, float("nan")]):
        with pytest.raises(ValueError):
            Samples.of(bad)
    with pytest.raises(ValueError, match="positive"):
        Samples.of([1.0, -1.0]).__class__({"": [1.0, -1.0]}, "geomean")
    with pytest.raises(ValueError, match="statistic must be one of"):
        Samples({"": [1.0]}, "median")


@pytest.mark.parametrize("statistic", ["mean", "max", "min", "geomean"])
def test_strata_resample_apart_and_fixed_strata_enter_as_constants(statistic):
    rng = np.random.default_rng(5)
    strata = {"a": rng.normal(2.0, 0.2, 6).tolist(), "b": rng.normal(4.0, 0.2, 6).tolist(), "c": [3.0]}
    samples = Samples(strata, statistic)
    means = np.array([np.mean(v) for v in strata.values()])
    expected = {"mean": means.mean(), "max": means.max(), "min": means.min(),
                "geomean": np.exp(np.log(means).mean())}[statistic]
    assert samples.point() == pytest.approx(expected)
    low, high = samples.interval()
    assert low <= samples.point() <= high and high - low < 1.0
    assert samples.per_stratum == 1 and samples.count == 13


def test_samples_to_decide_follow_the_interval_and_the_distance():
    samples = Samples.of([9.0, 11.0, 10.0, 12.0, 8.0])  # mean 10
    interval = samples.interval()
    half = (interval[1] - interval[0]) / 2
    near, far = samples.to_decide(interval, 9.8), samples.to_decide(interval, 9.0)
    assert near > far >= 6
    assert near == pytest.approx(5 * (half / 0.2) ** 2, abs=1.5)
    assert samples.to_decide(interval, 10.0) is None
