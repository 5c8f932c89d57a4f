"""The repository documents itself: no tracked file points outside it for its notes, and every
page under ``docs/`` that a tracked file names exists.

The papers' notes, the design and the claims schema live in ``docs/`` (``docs/design.md``,
``docs/claims.md``, ``docs/papers/<paper>.md``); a clone of the repository alone must resolve
every reference its code, comments and docs make. Only the test data stays outside it.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# References to notes outside the repository: the sibling folder of paper notes, the external
# design document, and "the sheet" (the external per-paper notes). Words that merely contain
# "sheet" (spreadsheet, stylesheet) do not match.
OUTSIDE = {
    "shared/papers": re.compile(r"shared/papers"),
    "DESIGN.md": re.compile(r"\bDESIGN\.md\b"),
    "a sheet": re.compile(r"(?<![A-Za-z])sheets?\b", re.IGNORECASE),
    "a bare paper note": re.compile(r"(?<![/\w-])(hbp|clfd|fdinet|e2net|etag|mpqdm|rdd|egor|ga_pruning|harness)\.md\b"),
}
DOCS_PATH = re.compile(r"\bdocs/[\w./-]+?\.md\b")


def _tracked_text_files() -> dict[str, str]:
    """Every file git tracks that reads as UTF-8 text, by its path relative to the root."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"not a git checkout: {err}")
    texts = {}
    for name in filter(None, listed.stdout.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def _hits(pattern: re.Pattern, texts: dict[str, str]) -> list[str]:
    """``path:line: text`` of every line of ``texts`` where ``pattern`` matches."""
    return [f"{name}:{number}: {line.strip()}" for name, text in texts.items()
            for number, line in enumerate(text.splitlines(), 1) if pattern.search(line)]


@pytest.fixture(scope="module")
def tracked():
    texts = _tracked_text_files()
    assert "README.md" in texts and "docs/design.md" in texts
    return texts


@pytest.mark.parametrize("what", sorted(OUTSIDE))
def test_no_tracked_file_refers_to_notes_outside_the_repository(tracked, what):
    this = str(Path(__file__).resolve().relative_to(ROOT))
    assert _hits(OUTSIDE[what], {k: v for k, v in tracked.items() if k != this}) == []


def test_every_docs_page_named_in_a_tracked_file_exists(tracked):
    named = {match for text in tracked.values() for match in DOCS_PATH.findall(text)}
    assert "docs/design.md" in named
    assert sorted(page for page in named if not (ROOT / page).is_file()) == []


def test_every_relative_link_between_docs_pages_resolves(tracked):
    links = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")
    broken = [f"{name}: {target}" for name, text in tracked.items() if name.endswith(".md")
              for target in links.findall(text) if not (ROOT / name).parent.joinpath(target).exists()]
    assert broken == []


def test_every_paper_package_has_its_page():
    papers = sorted(p.name for p in (ROOT / "reproduce").iterdir() if (p / "claims.toml").is_file())
    assert papers and [p for p in papers if not (ROOT / "docs" / "papers" / f"{p}.md").is_file()] == []


@pytest.mark.parametrize("text, outside", [
    ("see ../shared/papers/rdd.md section 3", True),
    ("(sheet: 5,000)", True),
    ("the paper sheet's suggestion", True),
    ("as the sheets say", True),
    ("egor.md, section 2", True),
    ("the design (DESIGN.md)", True),
    ("see docs/papers/rdd.md", False),
    ("docs/design.md and docs/hbp-cuda.md", False),
    ("the inline stylesheet", False),
    ("a spreadsheet of results", False),
])
def test_the_patterns_catch_outside_references_and_nothing_else(text, outside):
    assert any(pattern.search(text) for pattern in OUTSIDE.values()) is outside
