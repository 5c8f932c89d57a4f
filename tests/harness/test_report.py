"""The HTML report: verdicts, counts, inline plots, escaping, self-containment, determinism, verdicts.json."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape
from matplotlib.figure import Figure

from reproduce.harness import claims as claims_mod
from reproduce.harness import report
from reproduce.harness.artifact import Artifact, Outcome, Summary
from reproduce.harness.forest import forest_entries, forest_figure
from reproduce.harness.records import Record, metric, write_record
from reproduce.harness.stats import Samples

PAPER = "toy"
SCRIPT_TEXT = '<script>alert("x")</script>'

CLAIMS_TOML = f"""
[[claim]]
id = "speedup"
text = "Toy is 2x faster than the baseline."
value = 2.0
unit = "x"
better = "higher"
tolerance = {{ rel = 0.25 }}
source = "Toy paper, abstract"
confidence = "verified"
scales = ["smoke", "quick"]
platform = "gpu"

[[claim]]
id = "accuracy"
text = 'Toy reaches 90% accuracy {SCRIPT_TEXT}.'
value = 90.0
unit = "%"
better = "higher"
tolerance = {{ abs = 1.0 }}
source = "Toy paper, Fig. 3"
confidence = "approximate"
scales = ["smoke"]

[[claim]]
id = "params"
text = "Toy has 10 M parameters."
value = 10.0
unit = "M"
better = "lower"
tolerance = {{ rel = 0.1 }}
source = "Toy paper, Table 1"
confidence = "verified"
scales = ["smoke"]
deterministic = true

[[claim]]
id = "fid"
text = "Toy reaches an FID of 5."
value = 5.0
unit = ""
better = "lower"
tolerance = {{ abs = 0.5 }}
source = "Toy paper, Table 2"
confidence = "verified"
scales = ["full"]

[[claim]]
id = "memory"
text = "Toy needs 1.2 GB."
value = 1.2
unit = "GB"
better = "lower"
tolerance = {{ rel = 0.1 }}
source = "a talk"
confidence = "unverified"
scales = ["smoke"]
"""

DEVICE = {"kind": "cpu", "index": None, "name": "Test CPU <x86>", "reason": "forced by --device cpu",
          "memory_bytes": 8 * 2**30, "cores": 2, "compute_capability": None, "driver_version": None,
          "cuda_version": None, "peak_bandwidth_gbs": None, "extra": {}}
ENVIRONMENT = {"python": "3.11.7", "implementation": "CPython", "platform": "Linux-test",
               "executable": "/usr/bin/python3", "packages": {"numpy": "2.1.0", "pandas": "2.2.0"},
               "git": {"commit": "0123456789abcdef", "dirty": True}}


def _summarize(records, ctx):
    """Mean speed-up of the ok units with its per-unit samples (a GPU claim judged on the CPU), the first unit's
    accuracy as one sample of a learned outcome, a deterministic parameter count, and one plot."""
    table = pd.DataFrame({
        "unit": [r.unit for r in records],
        "speedup": [r.value("speedup") for r in records],
        "accuracy": [r.value("accuracy") for r in records],
    })
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.bar(table["unit"], table["speedup"])
    return Summary(table=table,
                   measured={"speedup": float(table["speedup"].mean()),
                             "accuracy": float(table["accuracy"].iloc[0]), "params": 12.0, "memory": 1.5},
                   samples={"speedup": table["speedup"].tolist(), "accuracy": [float(table["accuracy"].iloc[0])]},
                   figures=[("Speed-up per unit", fig)], notes=["Means over <b>ok</b> units."])


def _artifact(name: str, claims: tuple[str, ...], summarize=_summarize) -> Artifact:
    return Artifact(paper=PAPER, name=name, title=f"Toy {name} & friends",
                    scales={"smoke": {"n": 3}, "quick": {"n": 30}}, needs={"quick": "the toy matrices"},
                    units=lambda ctx: [], run_unit=lambda unit, ctx: Outcome(metrics={}),
                    summarize=summarize, claims=claims)


def _record(name: str, unit: str, status: str, started: str, **fields) -> Record:
    identity = {"artifact": f"{PAPER}/{name}", "scale": "smoke", "config": {"n": 3}, "seed": 7,
                "device": {"kind": "cpu", "name": DEVICE["name"]}}
    return Record(paper=PAPER, artifact=name, unit=unit, scale="smoke", status=status, config=identity,
                  seed=7, device=DEVICE, environment=ENVIRONMENT, started=started, duration_s=0.5, **fields)


@pytest.fixture
def claims_root(tmp_path, monkeypatch):
    """A claims.toml for the toy paper, found by runner.judge_records through load_claims."""
    root = tmp_path / "reproduce"
    (root / PAPER).mkdir(parents=True)
    (root / PAPER / "claims.toml").write_text(CLAIMS_TOML)
    load = claims_mod.load_claims
    monkeypatch.setattr(claims_mod, "load_claims", lambda paper, root=root: load(paper, root))
    return root


@pytest.fixture
def results(tmp_path, claims_root):
    """Records of toy/table1 at smoke: two ok units (speed-ups 2.1 and 2.3), one failed, one skipped."""
    out = tmp_path / "results"
    write_record(out, _record("table1", "m1", "ok", "2025-01-02T03:04:00+00:00",
                              metrics={"speedup": metric(2.1, "x"), "accuracy": metric(80.0, "%")},
                              data={"source": "bundled", "file": "m1.mtx", "sha256": "ab" * 32}))
    write_record(out, _record("table1", "m2", "ok", "2025-01-02T03:05:00+00:00",
                              metrics={"speedup": metric(2.3, "x"), "accuracy": metric(82.0, "%")}))
    write_record(out, _record("table1", "m3", "failed", "2025-01-02T03:03:00+00:00",
                              error="ValueError: <boom> & more"))
    write_record(out, _record("table1", "m4", "skipped", "2025-01-02T03:02:00+00:00",
                              reason="needs a GPU"))
    return out


@pytest.fixture
def artifacts():
    return {f"{PAPER}/table1": _artifact("table1", ("speedup", "accuracy", "params", "fid", "memory")),
            f"{PAPER}/fig2": _artifact("fig2", ("fid",))}


class _Tables(HTMLParser):
    """Collects every table as rows of cell texts, keyed by the table's first class."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self._rows = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            name = (dict(attrs).get("class") or "").split()
            self._rows = self.tables.setdefault(name[-1] if name else "", [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._rows = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def counts_lines(html: str) -> list[str]:
    """The text of every verdict-counts paragraph."""
    paragraphs = re.findall(r'<p class="counts">(.*?)</p>', html, flags=re.DOTALL)
    return [" ".join(re.sub(r"<[^>]+>", " ", p).split()) for p in paragraphs]


def _rows_by_first_cell(rows: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row for row in rows[1:]}


REMOTE = re.compile(r"""(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""",
                    re.IGNORECASE)


def test_index_counts_and_rows(results, artifacts, tmp_path):
    index = report.build_report(results, tmp_path / "reports", artifacts)
    html = index.read_text()
    rows = tables(html)["index"]
    header = rows[0]
    assert header[4:10] == ["reproduced", "not reproduced", "inconclusive", "not run", "not judged",
                            "of which on other device"]
    by_name = {row[1]: row for row in rows[1:]}
    table1 = by_name["table1"]
    assert table1[0] == PAPER
    assert table1[2] == "Toy table1 & friends"
    assert table1[3] == "smoke"
    assert table1[4:10] == ["1", "1", "1", "1", "1", "1"]
    assert table1[10] == "2 / 1 / 1"
    assert table1[11] == "cpu: Test CPU <x86>"
    assert table1[12] == "2025-01-02 03:05 UTC"
    fig2 = by_name["fig2"]
    assert fig2[3] == "not run"
    assert fig2[4:10] == ["0", "0", "0", "1", "0", "0"]
    assert 'href="toy/table1.html"' in html and 'href="toy/fig2.html"' in html
    assert (tmp_path / "reports" / "toy" / "table1.html").exists()


def test_the_front_page_links_the_asv_site_where_it_exists(results, artifacts, tmp_path):
    """reports/asv/index.html (``asv publish``'s site) is linked, relative to the front page, only once it is there."""
    reports = tmp_path / "reports"
    (reports / "asv").mkdir(parents=True)
    assert 'href="asv/index.html"' not in report.build_report(results, reports, artifacts).read_text()
    (reports / "asv" / "index.html").write_text("<html></html>")
    assert 'href="asv/index.html"' in report.build_report(results, reports, artifacts).read_text()


def test_the_front_page_gives_the_suite_tally_by_scale_and_headline(results, artifacts, tmp_path):
    html = report.build_report(results, tmp_path / "reports", artifacts).read_text()
    assert counts_lines(html)[0] == (
        "1 reproduced (1 on other device) 1 not reproduced 1 inconclusive 2 not run 1 not judged")
    rows = tables(html)["tally"]
    assert rows[0] == ["Runs", "reproduced", "not reproduced", "inconclusive", "not run", "not judged",
                       "of which on other device"]
    assert rows[1:] == [["smoke scale", "1", "1", "1", "1", "1", "1"],
                        ["headline (largest scale per artifact)", "1", "1", "1", "2", "1", "1"]]
    assert 'href="verdicts.json"' in html


VERDICT_KEYS = {"paper", "artifact", "claim", "scale", "verdict", "label", "measured", "ci", "samples",
                "deterministic", "device_match", "platform", "value", "unit", "better", "bounds", "confidence",
                "note"}


def _strict_json(text: str):
    """``text`` parsed as JSON that refuses NaN and infinities, as strict readers (browsers, jq) do."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_verdicts_json_holds_every_verdict_per_claim_and_scale(results, artifacts, tmp_path):
    report.build_report(results, tmp_path / "reports", artifacts)
    document = _strict_json((tmp_path / "reports" / "verdicts.json").read_text())
    assert document["schema"] == 1
    entries = document["verdicts"]
    assert all(set(entry) == VERDICT_KEYS for entry in entries)
    assert [(e["artifact"], e["scale"], e["claim"]) for e in entries] == [
        ("fig2", None, "fid"),
        *[("table1", "smoke", claim) for claim in ("speedup", "accuracy", "params", "fid", "memory")]]
    by_claim = {e["claim"]: e for e in entries if e["artifact"] == "table1"}
    speedup = by_claim["speedup"]
    assert speedup["paper"] == PAPER and speedup["verdict"] == "reproduced"
    assert speedup["label"] == "reproduced (other device)" and speedup["device_match"] is False
    assert speedup["platform"] == "gpu" and speedup["deterministic"] is False and speedup["samples"] == 2
    assert speedup["measured"] == pytest.approx(2.2) and speedup["bounds"] == [1.5, 2.5]
    low, high = speedup["ci"]
    assert 2.1 <= low <= 2.2 <= high <= 2.3
    accuracy = by_claim["accuracy"]
    assert (accuracy["verdict"], accuracy["label"]) == ("inconclusive", "inconclusive (1 sample) (indicative)")
    assert accuracy["samples"] == 1 and accuracy["ci"] is None and accuracy["device_match"] is None
    params = by_claim["params"]
    assert (params["verdict"], params["deterministic"], params["samples"], params["ci"]) == (
        "not reproduced", True, None, None)
    assert by_claim["fid"]["verdict"] == "not run" and by_claim["fid"]["measured"] is None
    assert by_claim["memory"]["verdict"] == "not judged" and by_claim["memory"]["measured"] == 1.5
    assert {e["verdict"] for e in entries} <= set(claims_mod.VERDICTS)


def test_verdicts_json_writes_a_non_finite_measurement_as_null(claims_root, tmp_path):
    def nan_summary(records, ctx):
        return Summary(table=pd.DataFrame({"unit": ["m1"]}), measured={"memory": float("nan")})

    out = tmp_path / "results"
    write_record(out, _record("table1", "m1", "ok", "2025-01-02T03:04:00+00:00", metrics={"speedup": metric(2.0)}))
    artifacts = {f"{PAPER}/table1": _artifact("table1", ("memory",), summarize=nan_summary)}
    report.build_report(out, tmp_path / "reports", artifacts)
    text = (tmp_path / "reports" / "verdicts.json").read_text()
    assert "NaN" not in text
    [entry] = _strict_json(text)["verdicts"]
    assert entry["verdict"] == "not judged" and entry["measured"] is None


def test_the_forest_plot_has_a_panel_per_claim_with_its_band_interval_and_samples():
    gpu = claims_mod.Claim(id="speedup", text="t", value=2.0, unit="x", better="higher", tolerance={"rel": 0.25},
                           source="s", confidence="verified", scales=("quick",), platform="gpu")
    gain = claims_mod.Claim(id="gain", text="t", value=5.0, unit="pp", better="lower", tolerance={"abs": 1.5},
                            source="s", confidence="verified", scales=("quick",))
    per_matrix = Samples({"a": [1.0, 1.1, 0.9], "b": [3.1, 3.2, 3.3]}, "max")
    verdicts = [claims_mod.judge(gpu, per_matrix.point(), "quick", samples=per_matrix),
                claims_mod.judge(gain, 4.0, "quick", samples=[3.0, 4.0, 5.0]),
                claims_mod.judge(gain, 4.0, "full")]  # not run at this scale: no panel
    entries = forest_entries(verdicts, {"speedup": per_matrix, "gain": [3.0, 4.0, 5.0]})
    assert [v.claim.id for v, _ in entries] == ["speedup", "gain"]
    fig = forest_figure(entries)
    first, second = fig.axes
    assert "speedup: reproduced (other device)" in first.get_title(loc="left")
    assert "3 per stratum × 2 strata (max)" in first.get_title(loc="left") and first.get_xlabel() == "x"
    band = first.patches[0].get_path().get_extents().transformed(first.patches[0].get_patch_transform())
    assert (band.x0, band.x1) == pytest.approx((1.5, 2.5))  # the tolerance band
    points = sorted(x for line in first.lines for x in line.get_xdata() if line.get_marker() == "o")
    assert points == pytest.approx([0.9, 1.0, 1.1, 3.1, 3.2, 3.3])
    interval = first.collections[0].get_segments()[0][:, 0]
    assert tuple(interval) == pytest.approx(verdicts[0].ci)
    assert first.get_xlim()[0] < 0.9 and first.get_xlim()[1] > 3.3
    assert second.get_title(loc="left").startswith("gain: reproduced") and second.get_xlabel() == "pp"
    assert forest_figure([]) is None


def test_artifact_page_verdicts_figure_and_units(results, artifacts, tmp_path):
    report.build_report(results, tmp_path / "reports", artifacts)
    html = (tmp_path / "reports" / "toy" / "table1.html").read_text()
    found = tables(html)
    assert found["verdicts"][0][4:9] == ["Measured", "95% interval", "Samples", "Gap", "Verdict"]
    verdicts = _rows_by_first_cell(found["verdicts"])
    assert verdicts["speedup"][8].startswith("reproduced (other device) 95% interval [2.1, 2.3] of 2 samples")
    assert verdicts["speedup"][2] == "2 x ↑ higher is better"
    assert verdicts["speedup"][3] == "±25%"
    assert verdicts["speedup"][4] == "2.200 x"
    assert verdicts["speedup"][5] == "[2.100, 2.300] x"
    assert verdicts["speedup"][6] == "2"
    assert verdicts["speedup"][7] == "+0.2000 x (+10.0%)"
    assert verdicts["accuracy"][8].startswith("inconclusive (1 sample) (indicative) its one sample lies outside")
    assert verdicts["accuracy"][4:7] == ["80.00 %", "—", "1"]
    assert verdicts["params"][8] == "not reproduced outside [9, 11]"
    assert verdicts["params"][4:7] == ["12.00 M", "—", "—"]
    assert verdicts["fid"][8].startswith("not run")
    assert verdicts["memory"][8].startswith("not judged")
    assert verdicts["memory"][9] == "unverified"
    assert counts_lines(html) == [
        "1 reproduced (1 on other device) 1 not reproduced 1 inconclusive 1 not run 1 not judged"]
    marks = unescape(" ".join(re.sub(r"<[^>]+>", "", re.search(r'<p class="marks muted">(.*?)</p>', html, re.DOTALL)[1])
                              .split()))
    assert "(1 sample): one sample" in marks and "(indicative): the paper's value is read off a chart" in marks
    assert "(other device): measured on another class of device" in marks

    summary = _rows_by_first_cell(found["data"])
    assert summary["m1"] == ["m1", "2.100", "80.00"]
    problems = _rows_by_first_cell(found["problems"])
    assert problems["m3"][1:] == ["failed", "ValueError: <boom> & more"]
    assert problems["m4"][1:] == ["skipped", "needs a GPU"]
    assert "ValueError: &lt;boom&gt; &amp; more" in html

    environment = {row[0]: row for row in found["environment"]}
    assert "0123456789abcdef" in environment["Git commit"][1] and "dirty: yes" in environment["Git commit"][1]
    assert environment["Seed"][1] == "7"
    assert "memory_bytes: 8.0 GiB" in environment["Device"][1]
    assert '"n": 3' in environment["Config"][1]
    assert "numpy 2.1.0" in environment["Packages"][1]

    plot = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]{100,})" alt="Speed-up per unit">', html)
    assert plot and base64.b64decode(plot[1]).startswith(b"\x89PNG\r\n\x1a\n")  # the summary's Figure, saved
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"\s+alt="Forest plot of speedup, accuracy">',
                     html)
    assert "Run on the emulated CUDA device" not in html


EMULATED_DEVICE = {**DEVICE, "kind": "cuda-emu", "name": "emulated CUDA device", "memory_bytes": None,
                   "extra": {"timing_comparable": False, "workers": 2}}


def test_a_run_on_the_emulated_device_is_marked_and_never_judged(claims_root, artifacts, tmp_path):
    out = tmp_path / "results"
    ok = {"speedup": metric(2.2, "x"), "accuracy": metric(90.0, "%")}
    for unit in ("m1", "m2"):
        record = _record("table1", unit, "ok", "2025-01-02T03:04:00+00:00", metrics=ok)
        record.device = EMULATED_DEVICE
        record.config = {**record.config, "device": {"kind": "cuda-emu", "name": EMULATED_DEVICE["name"]}}
        write_record(out, record)
    index = report.build_report(out, tmp_path / "reports", artifacts).read_text()
    row = {row[1]: row for row in tables(index)["index"][1:]}["table1"]
    assert row[11] == "cuda-emu: emulated CUDA device"
    assert row[4:10] == ["0", "0", "0", "5", "0", "0"]
    html = (tmp_path / "reports" / "toy" / "table1.html").read_text()
    assert "Run on the emulated CUDA device" in html and "not comparable" in html
    verdicts = _rows_by_first_cell(tables(html)["verdicts"])
    assert verdicts["speedup"][4] == "2.200 x" and verdicts["speedup"][8].startswith("not run")
    assert "emulated CUDA device (cuda-emu), whose times are not comparable" in verdicts["speedup"][8]
    assert "Forest plot" not in html  # nothing judged, nothing to plot


def test_pages_are_escaped_and_self_contained(results, artifacts, tmp_path):
    report.build_report(results, tmp_path / "reports", artifacts)
    for page in sorted((tmp_path / "reports").rglob("*.html")):
        html = page.read_text()
        assert not REMOTE.search(html), page
        assert "<script" not in html.lower(), page
        assert "http://" not in html and "https://" not in html, page
    page = (tmp_path / "reports" / "toy" / "table1.html").read_text()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "Means over &lt;b&gt;ok&lt;/b&gt; units." in page


def test_never_run_artifact_page_shows_not_run(results, artifacts, tmp_path):
    report.build_report(results, tmp_path / "reports", artifacts)
    html = (tmp_path / "reports" / "toy" / "fig2.html").read_text()
    assert "No records at any scale" in html
    verdicts = _rows_by_first_cell(tables(html)["verdicts"])
    assert list(verdicts) == ["fid"]
    assert verdicts["fid"][8].startswith("not run")
    assert "repro run toy/fig2 --scale SCALE" in html


def test_empty_results_show_every_artifact_not_run(claims_root, artifacts, tmp_path):
    index = report.build_report(tmp_path / "no-results", tmp_path / "reports", artifacts)
    rows = tables(index.read_text())["index"]
    assert {row[1]: row[3] for row in rows[1:]} == {"fig2": "not run", "table1": "not run"}


def test_building_twice_gives_identical_files(results, artifacts, tmp_path):
    reports = tmp_path / "reports"

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(reports)): p.read_bytes() for p in sorted(reports.rglob("*")) if p.is_file()}

    report.build_report(results, reports, artifacts)
    first = snapshot()
    report.build_report(results, reports, artifacts)
    assert snapshot() == first
    assert sorted(first) == ["index.html", "toy/fig2.html", "toy/table1.html", "verdicts.json"]


def test_failing_summary_is_shown_not_fatal(results, artifacts, tmp_path):
    def broken(records, ctx):
        raise RuntimeError("summary <bug>")

    artifacts[f"{PAPER}/table1"] = _artifact("table1", ("speedup",), summarize=broken)
    index = report.build_report(results, tmp_path / "reports", artifacts)
    names = [row[1] for row in tables(index.read_text())["index"][1:]]
    assert names == ["fig2", "table1 error"]
    html = (tmp_path / "reports" / "toy" / "table1.html").read_text()
    assert "The summary failed: RuntimeError: summary &lt;bug&gt;" in html


def test_records_without_artifact_are_listed(results, artifacts, tmp_path):
    del artifacts[f"{PAPER}/table1"]
    html = report.build_report(results, tmp_path / "reports", artifacts).read_text()
    assert "no longer exists (not reported): toy/table1." in html


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (float("nan"), "—"), (0.0, "0"), (3.53125, "3.531"), (12345.6, "12346"),
    (0.012344, "0.01234"), (1.5e-5, "1.500e-05"), (2.5e7, "2.500e+07"), (42, "42"), ("csr", "csr"),
])
def test_format_number(value, text):
    assert report.format_number(value) == text


def _chromium() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


def _load_in_chromium(browser: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM of ``page`` after loading, and the console lines Chromium logged for it."""
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-extensions", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               "--dump-dom", page.as_uri()]
    env = {**os.environ, "HOME": str(profile)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Chromium did not finish loading {page} within 90 s")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines()
               if ("CONSOLE" in line or "Uncaught" in line) and page.name in line]
    return done.stdout, console


@pytest.mark.browser
def test_pages_load_in_headless_chromium_without_console_errors(results, artifacts, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (looked for chromium, chromium-browser, google-chrome)")
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><body><script>missingFunction();</script></body></html>')
    _, console = _load_in_chromium(browser, control, tmp_path / "profile-control")
    if not any("Uncaught" in line for line in console):
        pytest.skip("this Chromium does not log console errors to stderr, so the check would prove nothing")

    index = report.build_report(results, tmp_path / "reports", artifacts)
    dom, console = _load_in_chromium(browser, index, tmp_path / "profile-index")
    assert console == []
    assert '<table class="index">' in dom and "toy/table1.html" in dom

    page = tmp_path / "reports" / "toy" / "table1.html"
    dom, console = _load_in_chromium(browser, page, tmp_path / "profile-page")
    assert console == []
    verdicts = _rows_by_first_cell(tables(dom)["verdicts"])
    assert sorted(verdicts) == ["accuracy", "fid", "memory", "params", "speedup"]
    assert verdicts["speedup"][8].startswith("reproduced (other device)")
    assert 'src="data:image/png;base64,' in dom


MATRIX_NAME = "<script>alert(1)</script>"
UNIT_NAME = "<img src=x onerror=alert(2)>"


def _hostile_summary(records, ctx):
    """A summary whose table, note and caption carry the hostile matrix name, as a real one would."""
    table = pd.DataFrame({"matrix": [MATRIX_NAME], "speedup": [2.2]})
    fig = Figure(figsize=(2, 2))
    ax = fig.subplots()
    ax.set_title(MATRIX_NAME)
    return Summary(table=table, measured={"speedup": 2.2}, figures=[(f"Speed-up on {MATRIX_NAME}", fig)],
                   notes=[f"Matrix {MATRIX_NAME} from {UNIT_NAME}"])


@pytest.fixture
def hostile_results(tmp_path, claims_root):
    """A record whose unit id, matrix name, file, error and device name are markup."""
    out = tmp_path / "hostile-results"
    write_record(out, _record("table1", UNIT_NAME, "ok", "2025-01-02T03:04:00+00:00",
                              metrics={"speedup": metric(2.2, "x")},
                              data={"source": "download", "name": MATRIX_NAME, "file": f"/data/{MATRIX_NAME}.mtx",
                                    "sha256": "ab" * 32, "verified": False}))
    write_record(out, _record("table1", "m2", "failed", "2025-01-02T03:05:00+00:00",
                              error=f"DataError: {MATRIX_NAME} is not a matrix"))
    return out


def test_a_hostile_matrix_name_is_escaped_everywhere(hostile_results, tmp_path):
    artifacts = {f"{PAPER}/table1": _artifact("table1", ("speedup", "accuracy"), summarize=_hostile_summary)}
    report.build_report(hostile_results, tmp_path / "reports", artifacts)
    for page in (tmp_path / "reports").rglob("*.html"):
        html = page.read_text()
        assert "<script" not in html.lower() and "<img src=x" not in html, page
        assert f'content="{escape(report.CONTENT_SECURITY_POLICY)}"' in html
    html = (tmp_path / "reports" / "toy" / "table1.html").read_text()
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # table, note, caption, data file, error
    assert "&lt;img src=x onerror=alert(2)&gt;" in html


@pytest.mark.browser
def test_a_hostile_matrix_name_shows_as_text_in_headless_chromium(hostile_results, tmp_path):
    from tests.harness.devtools import Chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (looked for chromium, chromium-browser, google-chrome)")
    artifacts = {f"{PAPER}/table1": _artifact("table1", ("speedup", "accuracy"), summarize=_hostile_summary)}
    report.build_report(hostile_results, tmp_path / "reports", artifacts)
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><html><body><p>control</p><script>alert(1); missingFunction();</script>"
                       "</body></html>")

    chromium = Chromium(browser, tmp_path / "profile")
    try:
        seen_control = chromium.load(control)
        assert seen_control.dialogs == ["alert: 1"], "the DevTools session must see a dialog when one opens"
        assert seen_control.errors, "the DevTools session must see an uncaught error when one is thrown"
        pages = [tmp_path / "reports" / "index.html", tmp_path / "reports" / "toy" / "table1.html"]
        seen = {page.name: chromium.load(page) for page in pages}
    finally:
        chromium.close()

    for name, page in seen.items():
        assert (page.dialogs, page.errors, page.console, page.scripts) == ([], [], [], 0), name
    text = seen["table1.html"].text
    assert text.count(MATRIX_NAME) >= 4 and UNIT_NAME in text
