"""``repro compare``: per-unit ratios between two results folders, their summary, plot and errors."""

import pytest

from reproduce.harness.cli import main
from reproduce.harness.compare import compare_results, worst_cases
from reproduce.harness.device import describe_cpu
from reproduce.harness.errors import DataError, ReproError
from reproduce.harness.runner import run_artifact
from tests.harness.toy_artifact import ARTIFACT


@pytest.fixture
def two_runs(tmp_path):
    """Toy results at factor 1 (A, u05 skipped) and factor 3 (B, u04 failing)."""
    cpu = describe_cpu("test")
    a, b = tmp_path / "a", tmp_path / "b"
    run_artifact(ARTIFACT, "smoke", cpu, out=a, progress=False, overrides={"skip": ["u05"]})
    run_artifact(ARTIFACT, "smoke", cpu, out=b, progress=False, overrides={"factor": 3.0, "fail": ["u04"]})
    return a, b


def test_ratios_match_units_and_skip_zero_values(two_runs):
    a, b = two_runs
    comparison = compare_results(a, b)
    # u00 has value 0 (no ratio), u04 failed in B and u05 was skipped in A: u01..u03 remain.
    assert sorted(comparison.ratios["unit"]) == ["u01", "u02", "u03"]
    assert comparison.ratios["ratio"].tolist() == pytest.approx([3.0, 3.0, 3.0])
    assert comparison.no_ratio == 1
    assert comparison.matched == 4 and comparison.unmatched == {"a": 1, "b": 1}
    row = comparison.summary.iloc[0]
    assert (row["artifact"], row["metric"], row["units"]) == ("sweep", "value", 3)
    assert row["geomean"] == pytest.approx(3.0) and row["unit_of_measure"] == "x"


def test_worst_cases_take_both_directions(two_runs, tmp_path):
    a, b = two_runs
    comparison = compare_results(a, b)
    comparison.ratios.loc[comparison.ratios["unit"] == "u02", "ratio"] = 0.1
    comparison.ratios.loc[comparison.ratios["unit"] == "u03", "ratio"] = 5.0
    assert worst_cases(comparison, top=2)["unit"].tolist() == ["u02", "u03"]


def test_cli_prints_summary_and_writes_the_plot(two_runs, tmp_path, capsys):
    a, b = two_runs
    plot = tmp_path / "plots" / "ratios.png"
    assert main(["compare", str(a), str(b), "--metric", "value", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "ratio = B / A" in out and "4 units matched" in out and "toy/sweep" in out
    assert "furthest from 1" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_to_compare_is_one_clear_error(two_runs, tmp_path, capsys):
    a, _ = two_runs
    quick = tmp_path / "quick"
    run_artifact(ARTIFACT, "quick", describe_cpu("test"), out=quick, progress=False, overrides={"n": 2, "sleep": 0})
    with pytest.raises(ReproError, match=r"no unit is in both folders: .*toy/sweep \(smoke\): 5 units.*"
                                         r"toy/sweep \(quick\): 2 units"):
        compare_results(a, quick)
    with pytest.raises(ReproError, match=r"none has metric 'gflops'.*metrics there: value"):
        compare_results(a, a, metric="gflops")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no ok record"):
        compare_results(a, tmp_path / "empty")
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a folder of results" in err and "Traceback" not in err


def test_the_asv_site_is_linked_where_it_exists(two_runs, tmp_path, monkeypatch, capsys):
    """``repro compare`` names reports/asv/index.html (``asv publish``'s site) only once it is there."""
    a, b = two_runs
    monkeypatch.chdir(tmp_path)
    site = tmp_path / "reports" / "asv" / "index.html"
    site.parent.mkdir(parents=True)
    assert main(["compare", str(a), str(b)]) == 0
    assert "benchmarks over commits" not in capsys.readouterr().out  # a folder without asv's front page
    site.write_text("<html></html>")
    assert main(["compare", str(a), str(b)]) == 0
    assert f"benchmarks over commits (asv): {site.resolve().as_uri()}" in capsys.readouterr().out
