"""Verdicts on constructed claims: within tolerance, better, worse, unverified, not run, from intervals,
from one sample, withheld, and on another class of device."""

import numpy as np
import pytest

from reproduce.harness.claims import Claim, device_class, judge, load_claims
from reproduce.harness.errors import ReproError
from reproduce.harness.stats import Samples


def make_claim(**overrides) -> Claim:
    """A claim whose point verdicts are final (``deterministic``) unless the test says otherwise."""
    fields = dict(id="c", text="A is 3.5x faster than B.", value=3.5, unit="x", better="higher",
                  tolerance={"rel": 0.25}, source="arXiv:0000.00000, abstract", confidence="verified",
                  scales=("quick", "full"), deterministic=True)
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



@pytest.mark.parametrize("measured, status", [(11.27, "reproduced"), (11.2, "reproduced"), (11.0, "not reproduced"),
                                              (11.5, "not reproduced")])
def test_a_count_that_should_equal_the_papers_fails_on_either_side(measured, status):
    claim = make_claim(value=11.27, unit="M", better="neither", tolerance={"rel": 0.01})
    assert judge(claim, measured, "full").status == status


def test_a_two_sided_claim_judged_from_intervals_names_the_boundary_it_straddles():
    claim = make_claim(value=10.0, better="neither", tolerance={"abs": 1.0}, deterministic=False)
    assert judge(claim, 10.0, "full", samples=[9.8, 10.2, 10.1, 9.9]).status == "reproduced"
    assert judge(claim, 8.0, "full", samples=[7.8, 8.2, 8.1, 7.9]).status == "not reproduced"
    assert judge(claim, 12.0, "full", samples=[11.8, 12.2, 12.1, 11.9]).status == "not reproduced"
    high = judge(claim, 11.0, "full", samples=[10.0, 12.0, 10.5, 11.5])
    assert high.status == "inconclusive" and "straddles 11" in high.note
    low = judge(claim, 9.0, "full", samples=[8.0, 10.0, 8.5, 9.5])
    assert low.status == "inconclusive" and "straddles 9" in low.note

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


def test_lower_is_better_intervals_and_a_single_sample_of_a_deterministic_claim_keep_the_point_verdict():
    claim = make_claim(value=10.0, better="lower", tolerance={"abs": 1.0})
    assert judge(claim, 10.0, "full", samples=[9.8, 10.2, 10.1, 9.9]).status == "reproduced"
    assert judge(claim, 12.0, "full", samples=[11.8, 12.2, 12.1, 11.9]).status == "not reproduced"
    assert judge(claim, 11.0, "full", samples=[9.0, 13.0, 10.5, 11.5]).status == "inconclusive"
    point = judge(claim, 10.5, "full", samples=[10.5])
    assert point.status == "reproduced" and point.ci is None


@pytest.mark.parametrize("measured", [3.5, 9.0, 1.0])
def test_one_sample_of_a_learned_outcome_is_at_most_inconclusive(measured):
    claim = make_claim(deterministic=False)
    for samples in (None, [measured], Samples({"a": [measured], "b": [measured]}, "max")):
        verdict = judge(claim, measured, "quick", samples=samples)
        assert verdict.status == "inconclusive" and verdict.samples == 1
        assert verdict.label == "inconclusive (1 sample)"
        assert ("within tolerance" in verdict.note) == (measured != 1.0)


def test_stratified_samples_judge_the_claims_statistic():
    claim = make_claim(value=3.0, tolerance={"rel": 0.1}, deterministic=False)
    # The max over matrices of per-matrix mean speed-ups: matrix b (mean 3.2) carries it.
    samples = Samples({"a": [1.0, 1.1, 0.9], "b": [3.1, 3.2, 3.3], "c": [2.0, 2.1, 1.9]}, "max")
    verdict = judge(claim, samples.point(), "quick", samples=samples)
    assert samples.point() == pytest.approx(3.2)
    assert verdict.status == "reproduced" and verdict.samples == 3
    assert 3.1 <= verdict.ci[0] <= 3.2 <= verdict.ci[1] <= 3.3 and "in each of 3 strata (max)" in verdict.note


def test_a_withheld_comparison_is_shown_not_judged():
    verdict = judge(make_claim(), 3.5, "quick", samples=[3.4, 3.5, 3.6], withheld="below the learning floor: x")
    assert verdict.status == "not judged" and verdict.note == "below the learning floor: x" and verdict.measured == 3.5


@pytest.mark.parametrize(("kind", "name", "platform", "match", "label"), [
    ("cpu", "AMD EPYC", "edge-gpu", False, "reproduced (other device)"),
    ("cuda", "NVIDIA Jetson AGX Orin", "edge-gpu", True, "reproduced"),
    ("cuda", "NVIDIA H200", "edge-gpu", False, "reproduced (other device)"),
    ("cuda", "NVIDIA H200", "gpu", True, "reproduced"),
    ("cpu", "AMD EPYC", None, None, "reproduced"),
])
def test_a_claim_measured_on_another_class_of_device_is_judged_and_labelled(kind, name, platform, match, label):
    verdict = judge(make_claim(platform=platform), 3.5, "quick", kind, name)
    assert verdict.status == "reproduced" and verdict.device_match is match and verdict.label == label
    assert device_class(kind, name) in ("cpu", "gpu", "edge-gpu")


def test_an_unknown_platform_is_refused():
    with pytest.raises(ReproError, match="platform must be one of"):
        make_claim(platform="phone")


def test_every_shipped_claim_says_why_its_tolerance_is_what_it_is():
    from reproduce.harness.runner import discover

    papers = sorted({artifact.paper for artifact in discover().values()})
    claims = [claim for paper in papers for claim in load_claims(paper)]
    assert len(claims) > 300
    assert [c.id for c in claims if len(c.why.split()) < 3] == []


def test_every_registered_claim_belongs_to_exactly_one_artifact_that_checks_it():
    # A claim no artifact lists is in no report: it can be neither judged nor shown as not run. One listed by
    # two would get two verdicts.
    from reproduce.harness.runner import discover

    artifacts = discover().values()
    attached = [(artifact.paper, claim) for artifact in artifacts for claim in artifact.claims]
    papers = sorted({artifact.paper for artifact in artifacts})
    registered = {(paper, claim.id) for paper in papers for claim in load_claims(paper)}
    assert sorted(registered - set(attached)) == []
    assert sorted(set(attached) - registered) == []
    assert sorted({pair for pair in attached if attached.count(pair) > 1}) == []
