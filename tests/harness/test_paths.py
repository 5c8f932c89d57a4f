"""Cache and data folders from the environment; whole-or-nothing file writes."""

import os

import pytest

from reproduce.harness import paths


def test_cache_dir_follows_repro_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "c"))
    assert paths.cache_dir("suitesparse") == tmp_path / "c" / "suitesparse"
    assert (tmp_path / "c" / "suitesparse").is_dir()


def test_env_dirs_keeps_existing_folders_in_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.setenv("X_DIRS", os.pathsep.join([str(b), str(tmp_path / "missing"), "", str(a)]))
    assert paths.env_dirs("X_DIRS") == [b, a]


def test_atomic_write_replaces_whole_or_keeps_old(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "page.html"
    paths.atomic_write_text(target, "old")
    assert target.read_text() == "old" and target.stat().st_mode & 0o777 == 0o644

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(paths.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        paths.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["page.html"]
