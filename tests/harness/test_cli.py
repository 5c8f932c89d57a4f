"""The ``repro`` command as a user runs it: list, run, env, errors without tracebacks."""

import json
import subprocess
import sys

from reproduce.harness.cli import main


def test_list_shows_artifacts_claims_needs_and_devices(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "hbp/correctness" in text and "smoke: nothing" in text
    correctness = text[text.index("hbp/correctness:"):].split("\n\n")[0]
    preprocessing = text[text.index("hbp/preprocessing:"):].split("\n\n")[0]
    assert "devices: cpu, cuda, cuda-emu" in correctness and "devices: cpu, cuda\n" in preprocessing


def test_run_smoke_then_resume(tmp_path, capsys):
    args = ["run", "hbp/correctness", "--scale", "smoke", "--out", str(tmp_path), "--no-progress",
            "--device", "cpu"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "7 ok, 0 failed" in first and "within 1e-12" in first
    assert main(args) == 0
    assert "reused 7 from earlier runs" in capsys.readouterr().out


def test_a_run_of_several_artifacts_ends_with_the_wall_time_of_each(tmp_path, capsys):
    assert main(["run", "hbp", "--scale", "smoke", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("wall time per artifact:"):].splitlines()
    assert [line.split()[0] for line in table[1:5]] == ["hbp/correctness", "hbp/preprocessing", "hbp/spmv", "total"]
    assert out.count("\nwall time: ") == 3
    assert "verdicts over all artifacts: 0 reproduced" in out


def test_artifact_options_reach_the_config(tmp_path, capsys, suitesparse_dir, monkeypatch):
    monkeypatch.setenv("REPRO_MATRIX_DIRS", str(suitesparse_dir))
    args = ["run", "hbp/correctness", "--out", str(tmp_path), "--no-progress", "--device", "cpu",
            "--matrices", "HB/west0479", "Newman/karate"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 ok" in out and "HB/west0479" in out


def test_unknown_target_and_bad_device_are_one_line_errors(capsys):
    assert main(["run", "nope/table9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no artifact or paper named 'nope/table9'") and "Traceback" not in err
    assert main(["run", "hbp", "--device", "tpu"]) == 2
    assert "--device must be" in capsys.readouterr().err


def test_a_bad_set_fails_before_any_unit_runs(tmp_path, capsys):
    assert main(["run", "hbp", "--scale", "smoke", "--device", "cpu", "--out", str(tmp_path), "--no-progress",
                 "--set", "repeat=3"]) == 2
    err = capsys.readouterr().err
    assert "error: --set repeat: hbp/correctness at smoke scale has no config key 'repeat'" in err
    assert "Traceback" not in err and not list(tmp_path.rglob("*.json"))


def test_env_prints_the_recorded_environment(capsys):
    assert main(["env", "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"]["kind"] == "cpu" and "numpy" in info["environment"]["packages"]


def test_script_and_console_entry_points(tmp_path):
    script = subprocess.run([sys.executable, "reproduce/hbp/correctness.py", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert script.returncode == 0 and "--matrices" in script.stdout and "--scale" in script.stdout
    assert "--set KEY=VALUE" in script.stdout
    console = subprocess.run(["repro", "run", "--help"], capture_output=True, text=True, timeout=120)
    assert console.returncode == 0 and "--device" in console.stdout and "--set KEY=VALUE" in console.stdout
