"""The HBP artifacts on the emulated CUDA device (``--device cuda-emu``), through the command line.

What only artifacts that declare the device run there, that hbp/correctness and hbp/spmv check
every CUDA executor and record its memory traffic, that no claim is judged from emulated times,
and that the report shows the traffic columns.
"""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest

from reproduce.harness import cli, report, runner
from reproduce.harness.artifact import Context, SkipUnit, Unit
from reproduce.harness.device import Device
from reproduce.harness.errors import ReproError
from reproduce.harness.records import load_records
from reproduce.hbp import correctness, executors, spmv

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                reason="the emulated CUDA device needs a host C++ compiler (g++ or $CXX)")

EMULATED_ARTIFACTS = ("hbp/correctness", "hbp/spmv")
CUDA_EXECUTORS = ("csr_scalar", "csr_vector", "hbp_cuda", "hbp_cuda_sort", "hbp_cuda_dp", "regu2d_cuda")
EMULATED = Device(kind="cuda-emu", index=None, name="emulated CUDA device", reason="test",
                  extra={"timing_comparable": False})


def test_only_the_hbp_kernel_artifacts_declare_the_emulated_device():
    declared = sorted(a.id for a in runner.discover().values() if a.runs_on("cuda-emu"))
    assert declared == list(EMULATED_ARTIFACTS)


def test_an_unsupported_artifact_is_one_error_line(tmp_path, capsys):
    status = cli.main(["run", "hbp/preprocessing", "--scale", "smoke", "--device", "cuda-emu", "--out",
                       str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_ERROR and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: hbp/preprocessing does not run on --device cuda-emu; the artifacts that do: "
                      "hbp/correctness, hbp/spmv"]
    assert not list(tmp_path.rglob("*.json"))


def test_run_all_runs_the_supported_artifacts_and_says_it_skipped_the_others(tmp_path, capsys, monkeypatch):
    ran = []

    def fake_run(artifact, scale, device, **kwargs):
        ran.append((artifact.id, scale, device.kind))
        return SimpleNamespace(id=artifact.id, records=[], share=frozenset(), verdicts=[])

    monkeypatch.setattr(runner, "run_artifact", fake_run)
    monkeypatch.setattr("reproduce.harness.console.format_run", lambda result: f"ran {result.id}")
    assert cli.main(["run", "all", "--scale", "smoke", "--device", "cuda-emu", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert ran == [(artifact_id, "smoke", "cuda-emu") for artifact_id in EMULATED_ARTIFACTS]
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "hbp/preprocessing" in skipped[0] and "hbp/correctness, hbp/spmv" in skipped[0]
    assert "ran hbp/spmv" in out


def test_the_runner_refuses_an_unsupported_device(tmp_path):
    with pytest.raises(ReproError, match="does not run on --device cuda-emu"):
        runner.run_artifact(runner.discover()["hbp/preprocessing"], "smoke", EMULATED, out=tmp_path, progress=False)


@pytest.mark.parametrize("module", [correctness, spmv])
def test_a_matrix_beyond_the_limit_is_skipped_with_the_reason(module, monkeypatch):
    monkeypatch.setattr(executors, "EMULATOR_MAX_NNZ", 100)
    reason = r"500 nonzeros exceed the emulated CUDA device's limit of 100 per matrix"
    artifact = module.ARTIFACT
    ctx = Context(scale="smoke", config=runner.resolve_config(artifact, "smoke"), seed=0, device=EMULATED)
    unit = Unit("gen_uniform", {"generated": {"name": "uniform", "generator": "random_uniform", "nrows": 100,
                                              "ncols": 100, "density": 0.05}})
    with pytest.raises(SkipUnit, match=reason):
        artifact.run_unit(unit, ctx)


@pytest.fixture(scope="module")
def emulated_results(tmp_path_factory):
    """Both HBP artifacts run at smoke scale on the emulated device through ``repro run``; their results folder."""
    out = tmp_path_factory.mktemp("emulated") / "results"
    with pytest.MonkeyPatch.context() as patch:
        # The kernels' shared libraries, compiled once for the module (the emulator also keeps them loaded).
        patch.setenv("REPRO_CACHE", str(out.parent / "cache"))
        for artifact_id in EMULATED_ARTIFACTS:
            status = cli.main(["run", artifact_id, "--scale", "smoke", "--device", "cuda-emu", "--out", str(out),
                               "--no-progress"])
            assert status == 0, artifact_id
    return out


def _records(out, name):
    records = load_records(out, "hbp", name, "smoke")
    assert len(records) == len(correctness.ARTIFACT.scales["smoke"]["generated"])
    return records


@pytest.mark.cuda_emu
def test_correctness_checks_every_cuda_executor_and_counts_its_traffic(emulated_results):
    for record in _records(emulated_results, "correctness"):
        assert record.status == "ok" and record.device["kind"] == "cuda-emu", record.unit
        assert record.device["extra"]["timing_comparable"] is False
        assert record.value("passed") is True and record.value("max_error") <= 1e-12
        assert "csr_cusparse_error" not in record.metrics
        for name in CUDA_EXECUTORS:
            assert f"{name}_error" in record.metrics
            no_reuse = record.value(f"{name}_sector_bytes_per_nnz")
            x_reuse = record.value(f"{name}_sector_bytes_per_nnz_xreuse")
            if record.value("nnz"):
                # Every kernel reads at least the values and columns once; reuse never adds traffic.
                assert x_reuse >= record.value("csr_min_bytes_per_nnz") * 0.5, (record.unit, name)
                assert 0 < x_reuse <= no_reuse, (record.unit, name)
            else:
                assert no_reuse is None and x_reuse is None


@pytest.mark.cuda_emu
def test_spmv_on_the_emulated_device_is_never_judged(emulated_results):
    records = _records(emulated_results, "spmv")
    for record in records:
        assert record.status == "ok" and record.device["kind"] == "cuda-emu"
        assert record.data["timing_comparable"] is False and record.data["preprocessing_device"] == "cuda-emu"
        assert record.value("csr_scalar_repeats") == 1 and record.value("hbp_cuda_ms") > 0
        assert record.value("csr_min_bytes_per_nnz") is None or record.value("hbp_cuda_sector_bytes_per_nnz") > 0
        for name in ("csr_scalar", "csr_vector", "hbp_cuda", "regu2d_cuda"):
            assert record.value(f"{name}_error") <= 1e-12, (record.unit, name)
        assert "csr_cusparse_ms" not in record.metrics
    found = runner.latest_run(spmv.ARTIFACT, "smoke", emulated_results)
    assert found is not None
    summary, verdicts = runner.judge_records(spmv.ARTIFACT, *found)
    assert [v.status for v in verdicts] == ["not run"] * len(spmv.ARTIFACT.claims)
    assert all("not comparable" in v.note for v in verdicts)
    assert summary.measured == {}
    assert any("not comparable" in note for note in summary.notes)
    assert "hbp_cuda B/nnz x reuse" in summary.table.columns and "CSR min B/nnz" in summary.table.columns


@pytest.mark.cuda_emu
def test_the_report_shows_the_emulated_device_and_the_traffic(emulated_results, tmp_path):
    artifacts = {artifact_id: runner.discover()[artifact_id] for artifact_id in EMULATED_ARTIFACTS}
    index = report.build_report(emulated_results, tmp_path / "reports", artifacts).read_text()
    assert index.count("cuda-emu: emulated CUDA device") == 2
    for name in ("correctness", "spmv"):
        page = (tmp_path / "reports" / "hbp" / f"{name}.html").read_text()
        assert "<th>CSR min B/nnz</th>" in page and "<th>hbp_cuda B/nnz</th>" in page
        assert "<th>csr_vector B/nnz x reuse</th>" in page
        assert "Run on the emulated CUDA device" in page and "Memory traffic counted on the emulated" in page
