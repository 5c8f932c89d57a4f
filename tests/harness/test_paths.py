"""Cache and data folders from the environment; whole-or-nothing file writes."""

import os

import pytest

from reproduce.harness import paths
from reproduce.harness.errors import DataError


def test_cache_dir_follows_repro_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "c"))
    assert paths.cache_dir("suitesparse") == tmp_path / "c" / "suitesparse"
    assert (tmp_path / "c" / "suitesparse").is_dir()


def test_env_dirs_resolves_folders_in_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("X_DIRS", os.pathsep.join(["b", "", str(a)]))
    assert paths.env_dirs("X_DIRS") == [b, a]


def test_env_dirs_refuses_a_file_and_warns_of_a_missing_folder(tmp_path, monkeypatch):
    (tmp_path / "file.txt").write_text("")
    monkeypatch.setenv("X_DIRS", str(tmp_path / "file.txt"))
    with pytest.raises(DataError, match=r"X_DIRS names .*file\.txt, which is not a folder"):
        paths.env_dirs("X_DIRS")
    monkeypatch.setenv("X_DIRS", os.pathsep.join([str(tmp_path / "missing"), str(tmp_path)]))
    with pytest.warns(RuntimeWarning, match=r"X_DIRS lists .*missing, which does not exist; it is skipped"):
        assert paths.env_dirs("X_DIRS") == [tmp_path]


def test_cache_dir_is_resolved_and_must_be_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPRO_CACHE", "relative")
    assert paths.cache_dir("x") == tmp_path / "relative" / "x"
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "file"))
    with pytest.raises(DataError, match="REPRO_CACHE names .*file, which is not a folder"):
        paths.cache_dir()


@pytest.mark.parametrize("url", ["file:///etc", "ftp://host/x", "http://", "/local/path"])
def test_env_url_accepts_http_only(monkeypatch, url):
    monkeypatch.setenv("X_URL", url)
    with pytest.raises(DataError, match="X_URL=.* is not an http:// or https:// URL"):
        paths.env_url("X_URL")
    monkeypatch.setenv("X_URL", "https://mirror.example/data/")
    assert paths.env_url("X_URL") == "https://mirror.example/data"
    monkeypatch.delenv("X_URL")
    assert paths.env_url("X_URL") is None


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
