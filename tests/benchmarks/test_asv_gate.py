"""The regression gate of ``tox -e bench`` fails on a 4x regression and passes an unchanged pair.

A throwaway git repository holds a tiny package with one pure-Python function and an asv suite
tracking its cost, in three commits: A, B (A with an unrelated change to its README) and C (B with the
function doing its loop four times, 4x the cost). The gate (``tools/asv_gate.py``, the command tox
runs) must exit 0 from A to B and 1 from B to C, naming the regressed benchmark. The suite tracks the
function's step count (an asv ``track_`` benchmark) rather than timing it: the test is of the
gate's plumbing (exit status, asv's table, the results files), and CI's shared 2-core machines timed
an unchanged pair 1.64x apart and a 2x slowdown at 1.17x, so a timed suite made the test flaky.
asv builds each commit in a virtualenv of this interpreter's version, as ``asv.conf.json`` does, so
the first run installs asv's runner into it with pip (about a minute in all).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.asv_gate import continuous_command, run_gate
from tools.asv_spread import measurements, spread

pytestmark = pytest.mark.slow

WORK = '''"""A function whose cost the gate tracks."""

LOOPS = {loops}


def work(n: int = 20_000) -> int:
    """Run the loop LOOPS times; return how many steps it took (its cost, the same on any machine)."""
    steps = 0
    for _ in range(LOOPS):
        for _ in range(n):
            steps += 1
    return steps
'''
SUITE = '''import gatepkg


def track_work():
    return gatepkg.work()


track_work.unit = "steps"
'''
PYPROJECT = '''[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "gatepkg"
version = "0.1"

[tool.setuptools]
py-modules = ["gatepkg"]
'''


def _commit(repo: Path, message: str) -> str:
    git = ["git", "-c", "user.name=gate", "-c", "user.email=gate@example.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", message], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def gate_repo(tmp_path_factory):
    """``(repo, environ, {"A": sha, "B": sha, "C": sha})``; ``environ`` has a throwaway HOME for asv's machine file
    and no ``ASV_*`` variables, so the gate runs at its defaults."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("gate")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    config = json.loads((Path(__file__).resolve().parents[2] / "asv.conf.json").read_text())
    conf = {"version": 1, "project": "gatepkg", "repo": ".", "branches": ["main"], "dvcs": "git",
            "environment_type": "virtualenv", "pythons": [python], "matrix": {},
            "build_command": config["build_command"], "install_command": config["install_command"],
            "benchmark_dir": "benchmarks", "env_dir": ".asv/env", "results_dir": ".asv/results",
            "html_dir": ".asv/html", "launch_method": config["launch_method"]}
    (repo / "asv.conf.json").write_text(json.dumps(conf, indent=2))
    (repo / ".gitignore").write_text(".asv/\n")
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "benchmarks" / "bench_work.py").write_text(SUITE)
    (repo / "gatepkg.py").write_text(WORK.format(loops=1))
    (repo / "README.md").write_text("gatepkg\n")
    commits = {"A": _commit(repo, "fast")}
    (repo / "README.md").write_text("gatepkg: a function for the gate test\n")
    commits["B"] = _commit(repo, "unchanged code")
    (repo / "gatepkg.py").write_text(WORK.format(loops=4))
    commits["C"] = _commit(repo, "four times the cost")
    environ = {key: value for key, value in os.environ.items() if not key.startswith("ASV_")}
    environ.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    environ["HOME"] = str(repo)
    return repo, environ, commits


def _measured(repo: Path, environ: dict, commit: str) -> dict[str, float]:
    """What asv recorded at ``commit`` (seconds per benchmark), read by tools/asv_spread.py from the results file."""
    files = list((repo / ".asv" / "results" / environ.get("ASV_MACHINE", "local")).glob(f"{commit[:8]}-*.json"))
    assert len(files) == 1, files
    return measurements(files[0])


def test_the_gate_command_is_tox_s():
    """tox -e bench runs this script, and the command honours ASV_FACTOR (default 1.1)."""
    tox = (Path(__file__).resolve().parents[2] / "tox.ini").read_text()
    assert "python tools/asv_gate.py {posargs}" in tox
    assert continuous_command("a", "b", {})[3:6] == ["continuous", "--factor", "1.1"]
    assert continuous_command("a", "b", {"ASV_FACTOR": "1.3"})[5] == "1.3"


def test_unchanged_pair_passes(gate_repo):
    repo, environ, commits = gate_repo
    result = run_gate(repo, environ=environ, base=commits["A"], head=commits["B"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "PERFORMANCE DECREASED" not in output
    # Both commits were measured (a benchmark failing on both sides would also be "not changed").
    assert set(_measured(repo, environ, commits["A"])) == set(_measured(repo, environ, commits["B"])) == {
        "bench_work.track_work"}, output[-4000:]


def test_four_times_the_cost_fails(gate_repo):
    repo, environ, commits = gate_repo
    result = run_gate(repo, environ=environ, base=commits["B"], head=commits["C"])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "PERFORMANCE DECREASED" in output
    # asv's table: | Change | Before | After | Ratio | Benchmark |, "+" marking a regression.
    regressed = [cells for cells in ([cell.strip() for cell in line.split("|")] for line in output.splitlines())
              if cells[1:2] == ["+"] and "bench_work.track_work" in cells]
    assert len(regressed) == 1, output[-4000:]
    # tools/asv_spread.py reads from the results files the two values asv compared: 20,000 and 80,000 steps.
    (row,) = spread(_measured(repo, environ, commits["B"]), _measured(repo, environ, commits["C"])).itertuples()
    assert (row.suite, row.first, row.second, row.ratio, row.fold) == ("bench_work", 20_000, 80_000, 4.0, 4.0), row
    assert float(regressed[0][4]) == 4.0, regressed[0]
