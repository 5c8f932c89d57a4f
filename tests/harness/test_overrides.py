"""``--set key=value``: values typed by the ones they replace, nested keys, clear errors, the config hash."""

import json

import pytest

from reproduce.harness.cli import script_main
from reproduce.harness.device import describe_cpu
from reproduce.harness.errors import ConfigError
from reproduce.harness.overrides import apply_settings, config_keys
from reproduce.harness.records import load_records
from reproduce.harness.runner import discover, resolve_config, run_artifact
from tests.harness.toy_artifact import ARTIFACT

CONFIG = {"seeds": [0, 1, 2], "lr": 0.1, "epochs": 3, "data": "bundled", "download": False, "threads": None,
          "names": [], "ga": {"population": 8, "rates": {"mutation": 0.4}}, "settings": [{"tasks": 2}],
          "extra": {}}


def _set(*assignments):
    return apply_settings(CONFIG, assignments, "toy/sweep at smoke scale")


@pytest.mark.parametrize(("assignment", "key", "value"), [
    ("epochs=5", "epochs", 5),
    ("lr=0.01", "lr", 0.01),
    ("lr=1", "lr", 1.0),
    ("data=offline", "data", "offline"),
    ("download=yes", "download", True),
    ("download=Off", "download", False),
    ("threads=2", "threads", 2),
    ("threads=two", "threads", "two"),
    ("epochs=null", "epochs", None),
    ("seeds=4,5", "seeds", [4, 5]),
    ("seeds=[4, 5, 6]", "seeds", [4, 5, 6]),
    ("seeds=7", "seeds", [7]),
    ("seeds=", "seeds", []),
    ("names=a,b", "names", ["a", "b"]),
    ("names=[\"a,b\", 3]", "names", ["a,b", 3]),
    ("settings=[{\"tasks\": 5}]", "settings", [{"tasks": 5}]),
    ("extra={\"iterations\": 5}", "extra", {"iterations": 5}),
])
def test_a_value_is_read_as_the_type_it_replaces(assignment, key, value):
    config = _set(assignment)
    assert config[key] == value and type(config[key]) is type(value)


def test_nested_keys_take_dots_and_the_original_config_is_left_alone():
    config = _set("ga.population=16", "ga.rates.mutation=0.25", "ga.population=24")
    assert config["ga"] == {"population": 24, "rates": {"mutation": 0.25}}  # the last assignment wins
    assert CONFIG["ga"] == {"population": 8, "rates": {"mutation": 0.4}}


@pytest.mark.parametrize(("assignment", "message"), [
    ("ga.populaton=16", "has no config key 'ga.populaton' (did you mean 'ga.population'?)"),
    ("ga.zzz=1", "has no config key 'ga.zzz'; its keys under ga: population, rates"),
    ("seeds.first=1", "seeds is not a table in toy/sweep at smoke scale; set it whole, as --set seeds=VALUE"),
    ("epochs", "--set takes KEY=VALUE"),
    ("=3", "--set takes KEY=VALUE"),
    ("epochs=2.5", "--set epochs=2.5: epochs is an integer in toy/sweep at smoke scale, not 2.5"),
    ("lr=fast", "lr is a number in toy/sweep at smoke scale, not 'fast'"),
    ("download=maybe", "download is a boolean in toy/sweep at smoke scale (true/false, yes/no, on/off, 1/0), not "
                       "'maybe'"),
    ("seeds=0,x", "--set seeds=0,x: seeds[1] is an integer in toy/sweep at smoke scale, not 'x'"),
    ("seeds=[0, 1.5]", "seeds[1] is an integer in toy/sweep at smoke scale, not 1.5"),
    ("seeds=[0,", "seeds is a list in toy/sweep at smoke scale, and this is not a JSON array"),
    ("settings=tasks", "settings is a list of tables in toy/sweep at smoke scale: give a JSON array"),
    ("extra=5", "extra is a table in toy/sweep at smoke scale, not 5"),
    ("extra.iterations=5", "has no config key 'extra.iterations'; its keys under extra: none"),
    ("ga=3", "ga is a table (population, rates) in toy/sweep at smoke scale; set its keys one by one, as "
             "--set ga.population=VALUE"),
])
def test_a_bad_assignment_is_a_config_error_that_says_what_to_do(assignment, message):
    with pytest.raises(ConfigError) as caught:
        _set(assignment)
    assert message in str(caught.value)


def test_a_key_set_by_a_flag_of_the_artifact_names_the_flag():
    with pytest.raises(ConfigError, match=r"no config key 'fail' \(it is set by --fail\)"):
        resolve_config(ARTIFACT, "smoke", settings=["fail=u01"])
    assert resolve_config(ARTIFACT, "smoke", {"fail": ["u01"]}, ["fail=u02,u03"])["fail"] == ["u02", "u03"]


def _text(value) -> str:
    """``value`` as a user would write it after ``--set key=``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value)


def test_every_key_of_every_shipped_config_reads_back_its_own_value():
    for artifact in discover().values():
        for scale, config in artifact.scales.items():
            for key in config_keys(config):
                value = config
                for part in key.split("."):
                    value = value[part]
                if isinstance(value, dict):
                    continue
                again = apply_settings(config, [f"{key}={_text(value)}"], f"{artifact.id} at {scale} scale")
                assert json.dumps(again, sort_keys=True) == json.dumps(config, sort_keys=True), (artifact.id, key)


def test_an_override_is_recorded_and_splits_the_config_hash(tmp_path):
    cpu = describe_cpu("test")
    plain = run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False)
    same = run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False, settings=["factor=1"])
    changed = run_artifact(ARTIFACT, "smoke", cpu, out=tmp_path, progress=False, settings=["factor=3", "n=2"])
    assert same.counts["reused"] == 6  # setting a key to its own value is the same config
    assert changed.counts == {"ran": 2, "reused": 0, "failed": 0, "skipped": 0}
    assert [r.value("value") for r in changed.records] == [0.0, 3.0]
    assert changed.records[0].config["config"] == {"n": 2, "factor": 3.0}
    assert changed.records[0].config_hash != plain.records[0].config_hash


def test_scripts_take_set_and_report_a_bad_key_in_one_line(tmp_path, capsys):
    common = ["--scale", "smoke", "--device", "cpu", "--out", str(tmp_path), "--no-progress"]
    assert script_main(ARTIFACT, [*common, "--set", "n=3", "--set", "factor=2.5"]) == 0
    records = load_records(tmp_path, "toy", "sweep", "smoke")
    assert sorted(r.value("value") for r in records) == [0.0, 2.5, 5.0]
    capsys.readouterr()
    assert script_main(ARTIFACT, [*common, "--set", "factr=2"]) == 2
    err = capsys.readouterr().err
    assert "error: --set factr: toy/sweep at smoke scale has no config key 'factr' (did you mean 'factor'?)" in err
    assert "Traceback" not in err
