"""The runner: records, resuming after a failing unit and after SIGKILL, config changes."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reproduce.harness import claims as claims_mod
from reproduce.harness.artifact import Summary
from reproduce.harness.device import describe_cpu
from reproduce.harness.errors import ArtifactError
from reproduce.harness.records import load_records, read_record
from reproduce.harness.runner import run_artifact
from tests.harness.toy_artifact import ARTIFACT

TOY = Path(__file__).with_name("toy_artifact.py")


@pytest.fixture
def cpu():
    return describe_cpu("test")


def record_files(out: Path) -> list[Path]:
    return sorted(out.glob("toy/sweep/*/*.json"))


def test_records_carry_what_design_asks(tmp_path, cpu):
    result = run_artifact(ARTIFACT, "smoke", cpu, seed=3, out=tmp_path, progress=False)
    assert result.counts == {"ran": 6, "reused": 0, "failed": 0, "skipped": 0}
    obj = json.loads(record_files(tmp_path)[0].read_text())
    for key in ("schema", "paper", "artifact", "unit", "scale", "status", "metrics", "config", "config_hash",
                "seed", "data", "device", "environment", "started", "duration_s"):
        assert key in obj, key
    assert obj["metrics"]["value"] == {"value": 0.0, "unit": "x"}
    assert obj["seed"] == 3 and obj["device"]["kind"] == "cpu"
    assert {"python", "packages", "git"} <= set(obj["environment"])
    assert result.summary.table["value"].mean() == pytest.approx(2.5)
    csv = (tmp_path / "toy" / "sweep" / "smoke" / f"summary.{obj['config_hash']}.csv").read_text()
    assert csv.splitlines()[0] == "unit,value" and len(csv.splitlines()) == 7


def test_failing_unit_is_recorded_and_sweep_goes_on(tmp_path, cpu):
    first = run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False, overrides={"fail": ["u02"]})
    statuses = {r.unit: r.status for r in first.records}
    assert statuses.pop("u02") == "failed" and set(statuses.values()) == {"ok"}
    failed = next(r for r in first.records if r.status == "failed")
    assert "RuntimeError: unit u02 broke on purpose" in failed.error
    assert first.summary.table["value"].mean() == pytest.approx(13 / 5)  # the five ok units only


def test_failed_units_are_retried_and_ok_units_reused(tmp_path, cpu):
    calls = []

    def flaky(unit, ctx):
        calls.append(unit.id)
        if unit.id == "u04" and calls.count("u04") == 1:
            raise MemoryError("out of memory")
        return ARTIFACT.run_unit(unit, ctx)

    artifact = dataclasses.replace(ARTIFACT, run_unit=flaky)
    first = run_artifact(artifact, "smoke", cpu, out=tmp_path, progress=False)
    assert first.counts["failed"] == 1
    second = run_artifact(artifact, "smoke", cpu, out=tmp_path, progress=False)
    assert second.counts == {"ran": 1, "reused": 5, "failed": 0, "skipped": 0}
    assert calls.count("u04") == 2 and calls.count("u00") == 1
    assert len(record_files(tmp_path)) == 6


def test_force_reruns_and_skip_is_recorded(tmp_path, cpu):
    run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False, overrides={"skip": ["u01"]})
    again = run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False, overrides={"skip": ["u01"]},
                         force=True)
    assert again.counts["ran"] == 6 and again.counts["skipped"] == 1
    skipped = [r for r in again.records if r.status == "skipped"]
    assert skipped[0].reason == "not on this machine"


def test_changed_config_writes_new_records_beside_old(tmp_path, cpu):
    run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False)
    changed = run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False, overrides={"factor": 2.0})
    assert changed.counts["ran"] == 6
    assert len(record_files(tmp_path)) == 12
    assert changed.summary.table["value"].mean() == pytest.approx(5.0)


@pytest.mark.parametrize("field", ["measured", "samples", "withheld"])
def test_a_summary_key_that_is_no_claim_is_an_error_naming_it_and_the_claims(tmp_path, cpu, monkeypatch, field):
    claim = claims_mod.Claim(id="mean-value", text="the mean", value=2.5, unit="x", better="higher",
                             tolerance={"rel": 0.1}, source="toy", confidence="verified", scales=("smoke",))
    monkeypatch.setattr(claims_mod, "load_claims", lambda paper: [claim])
    values = {"measured": 2.5, "samples": [2.5], "withheld": "below the floor"}

    def misspelt(records, ctx):
        return Summary(table=ARTIFACT.summarize(records, ctx).table, **{field: {"mean-valeu": values[field]}})

    artifact = dataclasses.replace(ARTIFACT, claims=("mean-value",), summarize=misspelt)
    with pytest.raises(ArtifactError, match=rf"summary's {field} has 'mean-valeu' \(did you mean 'mean-value'\?\), "
                                            r"which is not one of the artifact's claims \(mean-value\)"):
        run_artifact(artifact, "smoke", cpu, out=tmp_path, progress=False)
    assert len(record_files(tmp_path)) == 6  # the units' records are kept
    spelt = dataclasses.replace(artifact, summarize=lambda records, ctx: Summary(
        table=ARTIFACT.summarize(records, ctx).table, **{field: {"mean-value": values[field]}}))
    verdicts = run_artifact(spelt, "smoke", cpu, out=tmp_path, progress=False).verdicts
    assert [v.claim.id for v in verdicts] == ["mean-value"]


def test_the_cli_reports_a_summary_key_that_is_no_claim_in_one_line(tmp_path, capsys):
    from reproduce.harness.cli import script_main

    artifact = dataclasses.replace(ARTIFACT, summarize=lambda records, ctx: Summary(
        table=ARTIFACT.summarize(records, ctx).table, measured={"mean": 1.0}))
    assert script_main(artifact, ["--scale", "smoke", "--device", "cpu", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: toy/sweep: the summary's measured has 'mean', which is not one of the artifact's claims (it " \
           "declares none)" in err and "Traceback" not in err


def test_sigkill_midway_loses_nothing_and_duplicates_nothing(tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, str(TOY), "--scale", "quick", "--out", str(out), "--no-progress", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(record_files(out)) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = record_files(out)
    assert 8 <= len(written) < 40, "the kill should land mid-sweep"
    assert all(read_record(p) is not None for p in written), "a record was half-written"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"reused {len(written)} from earlier runs" in done.stdout
    records = load_records(out, "toy", "sweep", "quick")
    assert sorted(r.unit for r in records) == [f"u{i:02d}" for i in range(40)]
    assert all(r.status == "ok" for r in records)
