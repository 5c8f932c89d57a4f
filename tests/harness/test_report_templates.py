"""The report's templates and stylesheet are package files that the loader finds, in the tree and once installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jinja2
import jinja2.meta
import pytest

from reproduce.harness import report

ROOT = Path(report.__file__).resolve().parents[2]
TEMPLATES = Path(report.__file__).resolve().parent / report.TEMPLATE_DIR


def test_the_loader_finds_every_template_and_each_parses():
    env = report._templates()
    files = sorted(path.name for path in TEMPLATES.iterdir())
    assert sorted(env.list_templates()) == files
    assert {"base.html.j2", "macros.html.j2", "index.html.j2", "artifact.html.j2", "report.css"} <= set(files)
    for name in files:
        source = env.loader.get_source(env, name)[0]
        referenced = set(jinja2.meta.find_referenced_templates(env.parse(source)))
        assert referenced <= set(files), f"{name} refers to a template that is not there: {referenced - set(files)}"


def test_the_stylesheet_is_inlined_as_it_is(tmp_path):
    index = report.build_report(tmp_path / "results", tmp_path / "reports", artifacts={}).read_text()
    assert f"<style>\n{(TEMPLATES / 'report.css').read_text()}</style>" in index


@pytest.mark.slow
def test_an_installed_copy_has_the_templates_and_renders_the_index(tmp_path):
    """setuptools' build_py copies what a wheel would hold (pyproject.toml's package data); the copy renders alone."""
    build, egg_base = tmp_path / "lib", tmp_path / "egg"
    egg_base.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info", "--egg-base", str(egg_base),
         "build_py", "--build-lib", str(build)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    installed = build / "reproduce" / "harness" / report.TEMPLATE_DIR
    assert sorted(path.name for path in installed.iterdir()) == sorted(path.name for path in TEMPLATES.iterdir())
    code = ("import sys; from pathlib import Path; from reproduce.harness import report; "
            "assert report.__file__.startswith(sys.argv[1]), report.__file__; "
            "report.build_report(Path(sys.argv[2]), Path(sys.argv[3]), artifacts={}); "
            "report._templates().get_template('artifact.html.j2')")
    results, pages = tmp_path / "results", tmp_path / "reports"
    run = subprocess.run([sys.executable, "-c", code, str(build), str(results), str(pages)], cwd=tmp_path,
                         env={"PYTHONPATH": str(build), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    index = (pages / "index.html").read_text()
    assert "<h1>Reproduction report</h1>" in index
    assert (TEMPLATES / "report.css").read_text() in index
