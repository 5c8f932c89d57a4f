"""Every artifact runs at smoke scale with no failed unit and a summary (CI runs all)."""

import pytest

from reproduce.harness.device import describe_cpu
from reproduce.harness.runner import discover, run_artifact

ARTIFACTS = discover()


def test_artifacts_are_discovered():
    assert "hbp/correctness" in ARTIFACTS


@pytest.mark.parametrize("artifact_id", sorted(ARTIFACTS))
def test_smoke(artifact_id, tmp_path):
    result = run_artifact(ARTIFACTS[artifact_id], "smoke", describe_cpu("test"), out=tmp_path, progress=False)
    failed = [f"{r.unit}: {r.error}" for r in result.records if r.status == "failed"]
    assert not failed, failed
    assert result.summary is not None and len(result.summary.table) > 0
