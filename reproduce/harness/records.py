"""Run records: one JSON file per unit of work, written atomically.

A record lives at ``<out>/<paper>/<artifact>/<scale>/<unit>.<confighash>.json``. The
config hash covers everything that changes a result (the scale's resolved config, the
seed, the device), so a rerun with the same config finds the record and skips the unit,
while a changed config writes new records beside the old ones. The report uses, per
artifact and scale, the records of the most recent config.

Records are written to a temporary file in the same folder, flushed to disk, then
renamed over the final name (``os.replace`` is atomic on POSIX and Windows): a record
either exists whole or not at all, whatever kills the process.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.harness.paths import atomic_write_text

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")


def config_hash(config: dict) -> str:
    """SHA-256 (first 12 hex digits) of the config's canonical JSON."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def metric(value: float | int | bool | None, unit: str = "") -> dict:
    """One measured quantity as stored in a record: ``{"value": v, "unit": u}``.

    JSON has no infinities or NaN: NaN is stored as null and +-inf as the strings
    ``"inf"`` / ``"-inf"``, which :meth:`Record.value` turns back into floats.
    """
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        value = None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return {"value": value, "unit": unit}


@dataclass
class Record:
    """The outcome of one unit of work; see docs/design.md, "Records", for each field."""

    paper: str
    artifact: str
    unit: str
    scale: str
    status: str
    config: dict
    seed: int
    metrics: dict[str, dict] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    started: str = ""
    duration_s: float = 0.0
    schema: int = SCHEMA_VERSION
    config_hash: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"record status must be one of {STATUSES}, not {self.status!r}")
        if not self.config_hash:
            self.config_hash = config_hash(self.config)

    def value(self, name: str) -> Any:
        """The value of metric ``name`` (infinities restored), or None when absent."""
        value = self.metrics.get(name, {}).get("value")
        return float(value) if value in ("inf", "-inf") else value

    def to_json(self) -> dict:
        return {
            "schema": self.schema, "paper": self.paper, "artifact": self.artifact,
            "unit": self.unit, "scale": self.scale, "status": self.status,
            "error": self.error, "reason": self.reason, "metrics": self.metrics,
            "params": self.params, "config": self.config, "config_hash": self.config_hash,
            "seed": self.seed, "data": self.data, "device": self.device,
            "environment": self.environment, "started": self.started,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Record:
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


def record_path(out: Path, paper: str, artifact: str, scale: str, unit: str, chash: str) -> Path:
    """Where the record of one unit under one config lives.

    Raises ValueError for a part that is not one plain file name (empty, ``.``/``..``, a
    ``/``, ``\\`` or NUL in it, or a leading ``.``), so no record is written outside its
    folder whatever a unit id holds.
    """
    for part in (paper, artifact, scale, unit, chash):
        if not part or part.startswith(".") or any(char in part for char in "/\\\0"):
            raise ValueError(f"{part!r} cannot name a record file; unit ids must be plain file names")
    return Path(out) / paper / artifact / scale / f"{unit}.{chash}.json"


def write_record(out: Path, record: Record) -> Path:
    """Write ``record`` atomically and return its path."""
    path = record_path(out, record.paper, record.artifact, record.scale, record.unit, record.config_hash)
    text = json.dumps(record.to_json(), indent=1, sort_keys=True, allow_nan=False, default=_jsonable)
    atomic_write_text(path, text)
    return path


def _jsonable(obj: Any) -> Any:
    """Turn NumPy scalars and arrays, and paths, into JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def read_record(path: Path) -> Record | None:
    """The record at ``path``, or None when the file is not a readable record."""
    try:
        obj = json.loads(Path(path).read_text())
        return Record.from_json(obj) if obj.get("schema") == SCHEMA_VERSION else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def find_record(out: Path, paper: str, artifact: str, scale: str, unit: str, chash: str) -> Record | None:
    """The stored record of this unit under this config, if one exists."""
    path = record_path(out, paper, artifact, scale, unit, chash)
    return read_record(path) if path.exists() else None


def load_records(out: Path, paper: str | None = None, artifact: str | None = None,
                 scale: str | None = None) -> list[Record]:
    """Every readable record under ``out``, optionally filtered; sorted by path."""
    pattern = "/".join([paper or "*", artifact or "*", scale or "*", "*.json"])
    records = (read_record(p) for p in sorted(Path(out).glob(pattern)))
    return [r for r in records if r is not None]


def latest_config(records: list[Record]) -> list[Record]:
    """The records that share the config hash of the most recently started record."""
    if not records:
        return []
    newest = max(records, key=lambda r: r.started)
    return [r for r in records if r.config_hash == newest.config_hash]
