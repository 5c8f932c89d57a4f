"""The terminal summary of a run: verdict labels, intervals, samples, and the tally with other-device verdicts apart."""

import dataclasses

import pytest

from reproduce.harness.claims import Claim, judge
from reproduce.harness.console import Tally, format_run, verdict_frame
from reproduce.harness.device import describe_cpu
from reproduce.harness.runner import run_artifact
from tests.harness.toy_artifact import ARTIFACT


def make_claim(claim_id: str, **fields) -> Claim:
    base = dict(id=claim_id, text="t", value=2.0, unit="x", better="higher", tolerance={"rel": 0.25}, source="s",
                confidence="verified", scales=("quick",))
    return Claim(**{**base, **fields})


@pytest.fixture
def verdicts():
    """On a CPU: a GPU speed-up reproduced from 4 samples, a second GPU one not reproduced, a CPU one reproduced,
    an accuracy from one seed, a deterministic count, and a claim this scale does not check."""
    return [
        judge(make_claim("gpu-speedup", platform="gpu"), 2.2, "quick", samples=[2.1, 2.2, 2.3, 2.2]),
        judge(make_claim("gpu-slow", platform="edge-gpu"), 1.0, "quick", samples=[0.9, 1.0, 1.1]),
        judge(make_claim("cpu-speedup", platform="cpu"), 2.2, "quick", samples=[2.1, 2.2, 2.3]),
        judge(make_claim("accuracy", value=90.0, unit="%", tolerance={"abs": 1.0}), 89.5, "quick"),
        judge(make_claim("params", value=10.0, unit="M", deterministic=True), 10.0, "quick"),
        judge(make_claim("fid", scales=("full",)), 2.0, "quick"),
    ]


def test_the_tally_counts_other_device_verdicts_apart(verdicts):
    tally = Tally.of(verdicts)
    assert tally.counts == {"reproduced": 3, "not reproduced": 1, "inconclusive": 1, "not run": 1, "not judged": 0}
    assert tally.other_device == {"reproduced": 1, "not reproduced": 1, "inconclusive": 0}
    assert tally.on_other_device == 2 and tally.total == 6
    assert tally.text() == ("3 reproduced (1 on other device), 1 not reproduced (1 on other device), "
                            "1 inconclusive, 1 not run, 0 not judged")


def test_verdict_rows_show_the_label_interval_and_samples(verdicts):
    frame = verdict_frame(verdicts).set_index("claim")
    assert list(frame.columns) == ["paper", "measured", "95% CI", "n", "gap", "verdict", "note"]
    assert frame.loc["gpu-speedup", "verdict"] == "reproduced (other device)"
    low, high = verdicts[0].ci
    assert frame.loc["gpu-speedup", "95% CI"] == f"[{low:.4g}, {high:.4g}]" and frame.loc["gpu-speedup", "n"] == "4"
    assert frame.loc["cpu-speedup", "verdict"] == "reproduced"
    assert frame.loc["accuracy", "verdict"] == "inconclusive (1 sample)"
    assert (frame.loc["accuracy", "95% CI"], frame.loc["accuracy", "n"]) == ("", "1")
    assert (frame.loc["params", "verdict"], frame.loc["params", "n"]) == ("reproduced", "")
    assert frame.loc["fid", "verdict"] == "not run"


def test_the_run_summary_ends_with_the_verdict_tally(tmp_path, verdicts):
    result = run_artifact(ARTIFACT, "smoke", describe_cpu("test"), out=tmp_path, progress=False)
    text = format_run(dataclasses.replace(result, verdicts=verdicts))
    lines = text.splitlines()
    assert lines[-1] == ("verdicts: 3 reproduced (1 on other device), 1 not reproduced (1 on other device), "
                         "1 inconclusive, 1 not run, 0 not judged")
    row = next(line for line in lines if line.lstrip().startswith("gpu-slow"))
    assert "not reproduced (other device)" in row and "[0.9" in row
    assert "verdicts:" not in format_run(result)  # an artifact that checks no claims has no tally
