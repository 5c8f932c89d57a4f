"""Executors and shards: a sweep through submitit's local executor and through local worker
processes, with a unit that fails and one whose process is SIGKILLed, then resumed; and
``--shard I/N`` splitting a sweep into disjoint parts that cover it."""

import pytest

from reproduce.harness.cli import main
from reproduce.harness.device import describe_cpu
from reproduce.harness.errors import ReproError
from reproduce.harness.executors import LocalExecutor, SubmititExecutor, parse_parameters
from reproduce.harness.records import load_records
from reproduce.harness.runner import Shard, run_artifact
from tests.harness.toy_artifact import ARTIFACT, attempts

UNITS = [f"u{i:02d}" for i in range(5)]


@pytest.fixture
def cpu():
    return describe_cpu("test")


def _flaky_sweep(tmp_path, cpu, executor):
    """Run five toy units where u01's process is killed and u03 raises (first attempt only), then resume."""
    out, ledger = tmp_path / "results", tmp_path / "ledger"
    ledger.mkdir()
    overrides = {"n": 5, "ledger": str(ledger), "kill_once": ["u01"], "fail_once": ["u03"]}

    first = run_artifact(ARTIFACT, "smoke", cpu, out=out, progress=False, overrides=overrides, executor=executor)

    assert first.counts == {"ran": 5, "reused": 0, "failed": 2, "skipped": 0}
    by_unit = {r.unit: r for r in first.records}
    assert sorted(by_unit) == UNITS
    assert {u: r.status for u, r in by_unit.items()} == {
        "u00": "ok", "u01": "failed", "u02": "ok", "u03": "failed", "u04": "ok"}
    assert "RuntimeError: unit u03 broke on purpose" in by_unit["u03"].error
    killed = by_unit["u01"]
    assert killed.config_hash == by_unit["u00"].config_hash and killed.params == {"i": 1}

    second = run_artifact(ARTIFACT, "smoke", cpu, out=out, progress=False, overrides=overrides, executor=executor)

    assert second.counts == {"ran": 2, "reused": 3, "failed": 0, "skipped": 0}
    files = sorted(out.glob("toy/sweep/smoke/*.json"))
    assert [f.name.split(".")[0] for f in files] == UNITS, "one record file per unit, none lost or doubled"
    records = load_records(out, "toy", "sweep", "smoke")
    assert all(r.status == "ok" for r in records)
    assert {r.unit: r.value("value") for r in records} == {u: float(i) for i, u in enumerate(UNITS)}
    assert {u: attempts(ledger, u) for u in UNITS} == {"u00": 1, "u01": 2, "u02": 1, "u03": 2, "u04": 1}
    assert second.summary.table["value"].mean() == pytest.approx(2.0)
    return killed


def test_submitit_sweep_with_failed_and_killed_units_resumes_without_loss(tmp_path, cpu):
    pytest.importorskip("submitit", reason="submitit is optional (the 'cluster' extra)")
    announced = []
    executor = SubmititExecutor(folder=tmp_path / "jobs", cluster="local", poll_s=0.2, announce=announced.append)
    killed = _flaky_sweep(tmp_path, cpu, executor)
    assert "ended without a result" in killed.error and str(tmp_path / "jobs") in killed.error
    assert len(announced) == 2 and announced[0].startswith("submitted 5 units to local")


def test_local_workers_with_failed_and_killed_units_resume_without_loss(tmp_path, cpu):
    killed = _flaky_sweep(tmp_path, cpu, LocalExecutor(workers=2, threads=1))
    assert "worker process running this unit was killed by signal 9" in killed.error


def test_local_executor_refuses_zero_workers():
    with pytest.raises(ReproError, match="--workers must be at least 1"):
        LocalExecutor(workers=0)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_every_unit(count):
    ids = [f"Group__matrix{i}" for i in range(200)]
    parts = [{i for i in ids if Shard(index, count).holds(i)} for index in range(1, count + 1)]
    assert set().union(*parts) == set(ids)
    assert sum(len(part) for part in parts) == len(ids)
    if count > 1:
        assert all(part for part in parts), "200 units should reach every shard"


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "2", "a/b", "-1/2"])
def test_bad_shard_specs_are_refused(text):
    with pytest.raises(ReproError, match="--shard takes I/N"):
        Shard.parse(text)


def test_sharded_runs_merge_into_one_sweep(tmp_path, cpu):
    shards = [Shard.parse(f"{i}/3") for i in (1, 2, 3)]
    results = [run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False, shard=s) for s in shards]
    shares = [r.share for r in results]
    assert sorted(u for share in shares for u in share) == [f"u{i:02d}" for i in range(6)]
    assert [r.counts["ran"] for r in results] == [len(share) for share in shares]
    assert len(results[-1].records) == 6 and results[-1].summary.table["value"].mean() == pytest.approx(2.5)
    again = run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False)
    assert again.counts == {"ran": 0, "reused": 6, "failed": 0, "skipped": 0}


def test_submitit_parameters_parse():
    assert parse_parameters(["timeout_min=120", "slurm_partition=gpu", "mem_gb=7.5"]) == {
        "timeout_min": 120, "slurm_partition": "gpu", "mem_gb": 7.5}
    with pytest.raises(ReproError, match="KEY=VALUE"):
        parse_parameters(["timeout_min"])


def test_cli_shard_and_executor_options(tmp_path, capsys):
    args = ["run", "hbp/correctness", "--scale", "smoke", "--out", str(tmp_path), "--no-progress",
            "--device", "cpu", "--shard", "1/2", "--executor", "local", "--workers", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "shard 1/2:" in out and "of 7 units" in out
    with pytest.raises(SystemExit):
        main(["run", "hbp/correctness", "--shard", "3/2"])
    assert "--shard takes I/N" in capsys.readouterr().err


class _SharedCoresExecutor:
    """Stands for local CPU workers; records whether the runner handed it any unit."""

    shares_cores = True

    def __init__(self):
        self.used = False

    def run(self, task, units):
        self.used = True
        for unit in units:
            yield unit, task(unit)


@pytest.mark.parametrize("timed", [True, False])
def test_a_timed_artifact_never_runs_units_at_once_on_shared_cores(tmp_path, cpu, timed):
    import dataclasses

    artifact = dataclasses.replace(ARTIFACT, timed=timed)
    executor = _SharedCoresExecutor()
    result = run_artifact(artifact, "smoke", cpu, out=tmp_path, progress=False, executor=executor,
                          overrides={"n": 2, "ledger": str(tmp_path)})
    assert result.counts["ran"] == 2 and executor.used is not timed
    assert LocalExecutor(workers=2).shares_cores and not LocalExecutor(workers=1).shares_cores
    assert not LocalExecutor(workers=2, gpus=[0, 1]).shares_cores
