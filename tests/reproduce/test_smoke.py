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


@pytest.mark.cuda
def test_hbp_preprocessing_builds_on_the_gpu(tmp_path):
    """On a GPU the preprocessing artifact times the GPU build kernels (every ordering) and a device copy."""
    from reproduce.harness.device import select_device

    result = run_artifact(ARTIFACTS["hbp/preprocessing"], "smoke", select_device("cuda"), out=tmp_path, progress=False)
    assert [r.status for r in result.records] == ["ok"] * len(result.records)
    for record in result.records:
        assert record.data["preprocessing_device"] == "cuda"
        assert record.value("hash_total_ms") > 0 and record.value("copy_ms") > 0
        rounds = record.data["total_ms_rounds"]  # every round of every ordering, for the claims' intervals
        assert {len(times) for times in rounds.values()} == {result.context.config["repeats"]}
    assert any("ran on the GPU" in note for note in result.summary.notes)


@pytest.mark.cuda
def test_hbp_spmv_judges_its_claims_from_interleaved_gpu_rounds(tmp_path):
    """On a GPU every executor is timed by CUDA events in interleaved rounds, and both SpMV claims get one stratum
    of HBP's per-round speed-ups per matrix, whose max over matrices is the measured value."""
    from reproduce.harness.device import select_device

    result = run_artifact(ARTIFACTS["hbp/spmv"], "smoke", select_device("cuda"), out=tmp_path, progress=False)
    for record in result.records:
        assert {len(times) for times in record.data["ms_rounds"].values()} == {result.context.config["repeats"]}
    for claim in ("spmv-orin-max", "spmv-4090-max"):
        drawn = result.summary.samples[claim]
        assert drawn.statistic == "max" and len(drawn.strata) == len(result.records)
        assert result.summary.measured[claim] == pytest.approx(max(r.value("speedup") for r in result.records))
