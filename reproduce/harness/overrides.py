"""Command-line overrides of an artifact's config: ``--set key=value``, typed by the value they replace.

``--set`` (repeatable, on ``repro run`` and on every ``reproduce/<paper>/<name>.py``) changes
one key of the scale's config; a nested key is named with dots (``--set ga.population=16``).
The text after ``=`` is read as the type of the value it replaces:

- an integer, a float (an integer is accepted), or a string (the text as it is);
- a boolean: ``true``/``false``, ``yes``/``no``, ``on``/``off`` or ``1``/``0``;
- a list: a JSON array (``[0, 1, 2]``, ``["a,b", "c"]``) or comma-separated items (``0,1,2``;
  one item is a list of one; nothing after ``=`` is the empty list), each item read as the
  type of the list's items (any JSON value, else a string, when the list is empty);
- a key whose value is None: any JSON value, else a string;
- ``null`` sets any key to None.

A table (a dict) is not replaced whole: its keys are set one by one (an empty table, whose keys
have no values to be typed by, takes a JSON object). Assignments apply in order, after the
artifact's own flags (``--seeds``, ``--matrices``), so the last one of a key wins. A key the
config does not have is a :class:`~reproduce.harness.errors.ConfigError` that names the close
matches; a run of several artifacts (a paper, ``all``) checks every one before any unit runs. The
overridden value is part of the run's config, so it is in every record and in the config hash:
records made with an override never mix with those made without it (except for an artifact's
``unhashed_keys``, which are never in the hash).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from reproduce.harness.errors import ConfigError, close_matches

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table", list: "a list"}


def apply_settings(config: dict, assignments: Sequence[str], where: str, flags: dict[str, str] | None = None) -> dict:
    """A copy of ``config`` with each ``key=value`` of ``assignments`` applied in turn.

    ``where`` names the config in errors (``"gaprune/lenet_mnist at quick scale"``); ``flags``
    maps config keys to the command-line flags that also set them, named when such a key is
    not in the config. Raises ConfigError for a malformed assignment, an unknown key, a table
    given a value, or a value that does not read as the type it replaces.
    """
    config = copy.deepcopy(config)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE (for example --set seeds=0,1), not {assignment!r}")
        parent, name = _parent(config, key, where, flags or {})
        default = parent[name]
        if isinstance(default, dict) and default:
            raise ConfigError(f"--set {key}: {key} is a table ({', '.join(map(str, default))}) in {where}; set its "
                              f"keys one by one, as --set {key}.{next(iter(default))}=VALUE")
        parent[name] = None if text.strip() == "null" else _read(text, default, key, where)
    return config


def config_keys(config: dict, prefix: str = "") -> list[str]:
    """Every key of ``config`` as ``--set`` names it: nested keys joined by dots, tables included."""
    keys = []
    for name, value in config.items():
        keys.append(f"{prefix}{name}")
        if isinstance(value, dict):
            keys += config_keys(value, f"{prefix}{name}.")
    return keys


def _parent(config: dict, key: str, where: str, flags: dict[str, str]) -> tuple[dict, str]:
    """The table holding the dotted ``key`` and the key's last part; ConfigError if it is not there."""
    parent, parts = config, key.split(".")
    for depth, part in enumerate(parts):
        level = ".".join(parts[:depth])
        if not isinstance(parent, dict):
            raise ConfigError(f"--set {key}: {level} is not a table in {where}; set it whole, as --set {level}=VALUE")
        if part not in parent:
            hint = close_matches(key, config_keys(config))
            if key in flags:
                hint += f" (it is set by {flags[key]})"
            elif not hint:
                hint = f"; its keys{f' under {level}' if level else ''}: {', '.join(map(str, parent)) or 'none'}"
            raise ConfigError(f"--set {key}: {where} has no config key {key!r}{hint}")
        if depth < len(parts) - 1:
            parent = parent[part]
    return parent, parts[-1]


def _read(text: str, default: Any, key: str, where: str) -> Any:
    """``text`` as the type of ``default``, the value of ``key`` (see the module docstring); ConfigError if not."""
    what = f"--set {key}={text}: {key}"
    if isinstance(default, dict):  # an empty table: no keys to type, so any JSON object
        return _conform(_json(text, f"{what} is an empty table in {where}, and this is not a JSON object"), dict,
                        what, where)
    if isinstance(default, (list, tuple)):
        item = _item_type(default)
        stripped = text.strip()
        if stripped.startswith("["):
            values = _conform(_json(stripped, f"{what} is a list in {where}, and this is not a JSON array"), list,
                              what, where)
            return [_conform(value, item, f"{what}[{i}]", where) for i, value in enumerate(values)]
        if item is dict:
            raise ConfigError(f"{what} is a list of tables in {where}: give a JSON array, as [{{\"name\": ...}}]")
        return [_scalar(part.strip(), item, f"{what}[{i}]", where)
                for i, part in enumerate(stripped.split(","))] if stripped else []
    return _scalar(text, type(default) if default is not None else None, what, where)


def _json(text: str, failure: str) -> Any:
    """``text`` read as JSON; ConfigError ``failure`` (with the parser's reason) if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{failure} ({err.msg})") from None


def _item_type(values: Sequence) -> type | None:
    """The one type of ``values``' items, or None when it has none or several."""
    kinds = {type(value) for value in values}
    return kinds.pop() if len(kinds) == 1 else None


def _scalar(text: str, kind: type | None, what: str, where: str) -> Any:
    """One value as ``kind`` (None: a JSON value, else the text); ``what`` names it in errors."""
    if kind is str:
        return text
    if kind is bool:
        if text.strip().lower() in TRUE + FALSE:
            return text.strip().lower() in TRUE
        raise ConfigError(f"{what} is a boolean in {where} (true/false, yes/no, on/off, 1/0), not {text!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        if kind is None:
            return text
        raise ConfigError(f"{what} is {KINDS.get(kind, kind.__name__)} in {where}, not {text!r}") from None
    return _conform(value, kind, what, where)


def _conform(value: Any, kind: type | None, what: str, where: str) -> Any:
    """``value`` (read as JSON) checked against ``kind``; an integer is accepted for a float."""
    if kind is None or (type(value) is kind) or (kind is float and type(value) is int):
        return float(value) if kind is float else value
    raise ConfigError(f"{what} is {KINDS.get(kind, kind.__name__)} in {where}, not {json.dumps(value)}")
