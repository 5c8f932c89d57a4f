"""Verdicts on constructed claims: within tolerance, better, worse, unverified, not run."""

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
