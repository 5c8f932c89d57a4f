"""Records: atomic writes, config hashes, reading back, choosing the latest config."""

import json
import math

import numpy as np
import pytest

from reproduce.harness import paths
from reproduce.harness import records as rec
from reproduce.harness.records import Record, config_hash, latest_config, load_records, metric, write_record


def make(unit="u", status="ok", started="2026-01-01T00:00:00", config=None, **kw):
    return Record(paper="p", artifact="a", unit=unit, scale="smoke", status=status, config=config or {"k": 1},
                  seed=0, started=started, **kw)


def test_config_hash_is_order_independent_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_round_trip_with_numpy_values(tmp_path):
    record = make(metrics={"err": metric(np.float64(1e-17)), "n": metric(np.int64(5))})
    path = write_record(tmp_path, record)
    assert path.name == f"u.{record.config_hash}.json"
    back = rec.read_record(path)
    assert back.value("err") == 1e-17 and back.value("n") == 5
    assert back.to_json() == json.loads(path.read_text())


def test_non_finite_metrics_are_stored_as_valid_json(tmp_path):
    assert metric(math.nan)["value"] is None
    path = write_record(tmp_path, make(metrics={"x": metric(math.inf)}))
    assert rec.read_record(path).value("x") == math.inf


def test_a_failed_write_leaves_no_record_and_no_temporary(tmp_path, monkeypatch):
    write_record(tmp_path, make(unit="kept"))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(paths.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_record(tmp_path, make(unit="lost"))
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 1 and files[0].startswith("kept.")


def test_unreadable_files_are_ignored(tmp_path):
    write_record(tmp_path, make(unit="good"))
    folder = next(tmp_path.rglob("good.*.json")).parent
    (folder / "torn.abc.json").write_text('{"schema": 1, "paper"')
    (folder / "old.abc.json").write_text('{"schema": 0}')
    assert [r.unit for r in load_records(tmp_path)] == ["good"]


def test_latest_config_picks_the_newest_run():
    old = [make(unit=f"u{i}", config={"v": 1}, started="2026-01-01T00:00:00") for i in range(3)]
    new = [make(unit="u0", config={"v": 2}, started="2026-02-01T00:00:00")]
    assert latest_config(old + new) == new
    assert latest_config([]) == []


def test_status_is_validated():
    with pytest.raises(ValueError, match="status"):
        make(status="done")
