"""Verdicts on constructed claims: within tolerance, better, worse, unverified, not run."""

import numpy as np
import pytest

from reproduce.harness.claims import Claim, judge, load_claims
from reproduce.harness.errors import ReproError


def make_claim(**overrides) -> Claim:
    fields = dict(id="c", text="A is 3.5x faster than B.", value=3.5, unit="x", better="higher",
                  tolerance={"rel": 0.25}, source="arXiv:0000.00000, abstract", confidence="verified",
                  scales=("quick", "full"))
    return Claim(**{**fields, **overrides})


@pytest.mark.parametrize("measured, status", [
    (3.5, "reproduced"),        # exactly the paper
    (2.7, "reproduced"),        # within 25 % below
    (9.0, "reproduced"),        # better than the paper, far outside the window
    (2.5, "not reproduced"),    # worse, outside tolerance
])
def test_higher_is_better(measured, status):
    verdict = judge(make_claim(), measured, "quick")
    assert verdict.status == status
    assert verdict.gap == pytest.approx(measured - 3.5)


@pytest.mark.parametrize("measured, status", [(11.0, "reproduced"), (5.0, "reproduced"), (13.0, "not reproduced")])
def test_lower_is_better_with_absolute_tolerance(measured, status):
    claim = make_claim(value=11.0, unit="FID", better="lower", tolerance={"abs": 1.5})
    assert judge(claim, measured, "full").status == status


def test_window_tolerance():
    claim = make_claim(value=23.5, better="lower", tolerance={"window": [23.0, 24.0]})
    assert judge(claim, 23.9, "full").status == "reproduced"
    assert judge(claim, 24.5, "full").status == "not reproduced"
    assert judge(claim, 22.0, "full").status == "reproduced"  # better than the paper


def test_unverified_is_shown_but_never_judged():
    verdict = judge(make_claim(confidence="unverified"), 1.0, "quick")
    assert verdict.status == "not judged"
    assert verdict.measured == 1.0


def test_approximate_is_judged_and_marked_indicative():
    verdict = judge(make_claim(confidence="approximate"), 3.4, "quick")
    assert verdict.status == "reproduced" and verdict.indicative


def test_not_run_for_other_scale_missing_value_or_device():
    assert judge(make_claim(scales=("full",)), 3.5, "quick").status == "not run"
    assert judge(make_claim(), None, "quick").status == "not run"
    gpu = make_claim(requires="cuda")
    assert judge(gpu, 3.5, "quick", "cpu").status == "not run"
    assert judge(gpu, 3.5, "quick", "cuda").status == "reproduced"
    model = make_claim(requires="cuda:RTX 4090")
    assert judge(model, 3.5, "quick", "cuda", "NVIDIA H200").status == "not run"
    assert judge(model, 3.5, "quick", "cuda", "NVIDIA GeForce RTX 4090").status == "reproduced"


def test_malformed_claims_are_clear_errors(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "claims.toml").write_text('[[claim]]\nid = "x"\nvalue = 1\n')
    with pytest.raises(ReproError, match="claim 'x' is malformed"):
        load_claims("p", tmp_path)
    with pytest.raises(ReproError, match="better must be"):
        make_claim(better="up")


def test_every_shipped_claims_file_loads():
    claims = load_claims("hbp")
    assert {c.id for c in claims} == {"pre-vs-sort", "pre-vs-regu2d", "spmv-orin-max", "spmv-4090-max"}
    assert {c.requires for c in claims if c.id.startswith("spmv")} == {"cuda:Orin", "cuda:4090"}


@pytest.mark.parametrize(("samples", "status"), [
    ([3.4, 3.6, 3.5, 3.7, 3.3], "reproduced"),            # the whole interval above 3.5 - 25%
    ([1.0, 1.2, 0.9, 1.1, 1.0], "not reproduced"),         # the whole interval below it
    ([1.5, 4.0, 2.0, 3.5, 2.6, 3.0], "inconclusive"),      # the interval straddles 2.625
])
def test_samples_are_judged_by_their_interval(samples, status):
    claim = make_claim(value=3.5, better="higher", tolerance={"rel": 0.25})
    verdict = judge(claim, float(np.mean(samples)), "full", samples=samples)
    assert verdict.status == status and verdict.samples == len(samples)
    low, high = verdict.ci
    assert low <= np.mean(samples) <= high and f"of {len(samples)} samples" in verdict.note
    if status == "inconclusive":
        assert "straddles 2.625" in verdict.note and "samples at this spread would decide" in verdict.note


def test_lower_is_better_intervals_and_a_single_sample_keep_the_point_verdict():
    claim = make_claim(value=10.0, better="lower", tolerance={"abs": 1.0})
    assert judge(claim, 10.0, "full", samples=[9.8, 10.2, 10.1, 9.9]).status == "reproduced"
    assert judge(claim, 12.0, "full", samples=[11.8, 12.2, 12.1, 11.9]).status == "not reproduced"
    assert judge(claim, 11.0, "full", samples=[9.0, 13.0, 10.5, 11.5]).status == "inconclusive"
    point = judge(claim, 10.5, "full", samples=[10.5])
    assert point.status == "reproduced" and point.ci is None
