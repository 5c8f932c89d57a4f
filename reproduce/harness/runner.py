"""Runs an artifact's units at one scale, records each, and summarises the run.

Units run where the executor puts them (:mod:`reproduce.harness.executors`: this
process by default, local worker processes, or submitit jobs); ``--shard I/N`` keeps this
run to one of N disjoint parts of the sweep (:class:`Shard`). Records are one file per
unit whoever writes them, so shards and jobs merge in one results folder.

The summary table of each run is also written as CSV beside its records
(``summary.<confighash>.csv``), one row per unit where the artifact's table has one.

Resumable: a unit whose record exists under the same config hash with status ``ok`` or
``skipped`` is not run again (``force=True`` redoes it); a ``failed`` unit is retried.
A unit that raises is recorded as failed with its error and the sweep goes on; Ctrl-C
or a kill stops the sweep between atomic writes, so every record already written stays
whole and nothing is half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import pkgutil
import re
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from reproduce.harness import claims as claims_mod
from reproduce.harness.artifact import Artifact, Context, SkipUnit, Summary, Unit
from reproduce.harness.device import Device, timing_comparable
from reproduce.harness.environment import environment
from reproduce.harness.errors import EXPECTED_ERRORS, ArtifactError, ReproError, close_matches
from reproduce.harness.executors import Executor, InlineExecutor
from reproduce.harness.overrides import apply_settings
from reproduce.harness.paths import atomic_write_text
from reproduce.harness.records import Record, config_hash, find_record, latest_config, load_records, write_record

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def discover() -> dict[str, Artifact]:
    """Every artifact of every paper: ``{"paper/name": Artifact}``, sorted by id."""
    found = {}
    for paper in sorted(p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()):
        if paper == "harness":
            continue
        package = importlib.import_module(f"reproduce.{paper}")
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"reproduce.{paper}.{info.name}")
            artifact = getattr(module, "ARTIFACT", None)
            if isinstance(artifact, Artifact):
                found[artifact.id] = artifact
    return dict(sorted(found.items()))


def select(target: str, artifacts: dict[str, Artifact]) -> list[Artifact]:
    """The artifacts named by ``target``: ``all``, a paper, or ``paper/name``."""
    if target == "all":
        return list(artifacts.values())
    chosen = [a for key, a in artifacts.items() if key == target or a.paper == target]
    if not chosen:
        raise ReproError(f"no artifact or paper named {target!r}; `repro list` shows them all")
    return chosen


def resolve_config(artifact: Artifact, scale: str, overrides: dict | None = None, settings: Sequence[str] = ()) -> dict:
    """The artifact's config at ``scale`` with command-line overrides applied.

    ``overrides`` are the values of the artifact's own flags (``Artifact.options``), by config key;
    ``settings`` are ``--set key=value`` assignments (:mod:`reproduce.harness.overrides`), applied
    after them and typed by the value each replaces. ConfigError for an unknown key or a bad value.
    """
    if scale not in artifact.scales:
        raise ReproError(f"{artifact.id} has no {scale!r} scale; it has {', '.join(artifact.scales)}")
    config = dict(artifact.scales[scale])
    config.update({k: v for k, v in (overrides or {}).items() if v is not None})
    where = f"{artifact.id} at {scale} scale"
    return apply_settings(config, settings, where, artifact.option_keys()) if settings else config


def run_identity(artifact: Artifact, ctx: Context) -> dict:
    """Everything that makes two runs' results differ; its hash names the records.

    Config keys in ``artifact.unhashed_keys`` (how units run, not what they measure, such
    as ``keep_matrices``) are left out, so they never split one sweep into two configs.
    """
    config = {key: value for key, value in ctx.config.items() if key not in artifact.unhashed_keys}
    return {"artifact": artifact.id, "scale": ctx.scale, "config": config, "seed": ctx.seed,
            "device": {"kind": ctx.device.kind, "name": ctx.device.name}}


@dataclass(frozen=True)
class Shard:
    """One of ``count`` disjoint parts of a sweep: ``--shard index/count``, ``index`` from 1.

    A unit belongs to shard ``1 + (sha256(unit id) mod count)``. That depends on the unit's
    id alone, so shards worked out on different machines (even from SuiteSparse indexes of
    different dates) never overlap and together cover every unit.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` as a Shard; ReproError unless ``1 <= I <= N``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise ReproError(f"--shard takes I/N with 1 <= I <= N (for example 2/4), not {text!r}")
        return cls(int(match[1]), int(match[2]))

    def holds(self, unit_id: str) -> bool:
        """Whether the unit named ``unit_id`` belongs to this shard."""
        digest = hashlib.sha256(unit_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class UnitTask:
    """Runs one unit of a run and writes its record: what an executor sends to a worker or a job.

    Picklable (the artifact's functions are module-level), so it runs the same in this
    process, in a spawned worker and in a submitit job.
    """

    artifact: Artifact
    context: Context
    identity: dict
    config_hash: str
    out: Path
    begun: str

    def __call__(self, unit: Unit) -> str:
        """Run ``unit``, write its record atomically, return its status."""
        record = _run_unit(self.artifact, unit, self.context, self.identity, self.config_hash)
        write_record(self.out, record)
        return record.status

    def lost(self, unit: Unit, reason: str) -> str:
        """Record ``unit`` as failed: the process or job running it ended without returning.

        A record the unit wrote itself since this run began (a job that died after writing
        it) is kept as it is; otherwise a failed record with ``reason`` is written, so the
        unit is neither lost nor taken as done, and the next run retries it.
        """
        art = self.artifact
        found = find_record(self.out, art.paper, art.name, self.context.scale, unit.id, self.config_hash)
        if found is not None and found.started >= self.begun:
            return found.status
        fields = _record_fields(art, unit, self.context, self.identity, self.config_hash)
        write_record(self.out, Record(status="failed", error=reason, **fields))
        return "failed"

    def on_device(self, index: int) -> UnitTask:
        """The same task on CUDA device ``index`` (a local worker bound to one GPU of several)."""
        from reproduce.harness.device import describe_cuda

        device = describe_cuda(index, f"{self.context.device.reason}; a local worker bound to cuda:{index}")
        return dataclasses.replace(self, context=dataclasses.replace(self.context, device=device))


@dataclass
class RunResult:
    """A finished run: its records (this config only), their summary and verdicts.

    ``records`` hold every unit of the sweep recorded under this config, including other
    shards' when they share the results folder; ``share`` are the ids of the units this
    run was responsible for (all of them without ``shard``).
    """

    artifact: Artifact
    context: Context
    records: list[Record]
    summary: Summary | None
    verdicts: list[claims_mod.Verdict]
    counts: dict[str, int]
    shard: Shard | None = None
    share: frozenset[str] = frozenset()
    total_units: int = 0


def run_artifact(artifact: Artifact, scale: str, device: Device, *, seed: int = 0, out: Path = Path("results"),
                 force: bool = False, overrides: dict | None = None, settings: Sequence[str] = (),
                 progress: bool = True, executor: Executor | None = None, shard: Shard | None = None) -> RunResult:
    """Run the units of ``artifact`` at ``scale`` on ``device``; see the module docstring.

    ``overrides`` and ``settings`` change the scale's config (:func:`resolve_config`). ``executor``
    runs the units still to do (default: :class:`InlineExecutor`, one after another in this
    process; also for a ``timed`` artifact when the executor's workers would share the CPU
    cores); ``shard`` keeps the run to that part of the sweep.
    """
    if not artifact.runs_on(device.kind):
        raise ReproError(f"{artifact.id} does not run on --device {device.kind}; it runs on "
                         f"{', '.join(artifact.devices)}")
    ctx = Context(scale=scale, config=resolve_config(artifact, scale, overrides, settings), seed=seed, device=device)
    identity = run_identity(artifact, ctx)
    chash = config_hash(identity)
    units = artifact.units(ctx)
    ids = [u.id for u in units]
    if len(ids) != len(set(ids)):
        raise ReproError(f"{artifact.id}: unit ids are not unique")
    share = [unit for unit in units if shard is None or shard.holds(unit.id)]
    _remove_stale_temporaries(out, artifact, scale)
    counts = {"ran": 0, "reused": 0, "failed": 0, "skipped": 0}
    todo = []
    for unit in share:
        done = find_record(out, artifact.paper, artifact.name, scale, unit.id, chash)
        if done is not None and done.status in ("ok", "skipped") and not force:
            counts["reused"] += 1
        else:
            todo.append(unit)
    task = UnitTask(artifact, ctx, identity, chash, Path(out), _now())
    if executor is None or (artifact.timed and getattr(executor, "shares_cores", False)):
        executor = InlineExecutor()
    with tqdm(total=len(todo), desc=artifact.id, unit="unit", disable=not progress, file=sys.stderr,
              leave=False) as bar:
        for unit, status in executor.run(task, todo):
            bar.update(1)
            bar.set_postfix_str(unit.id, refresh=False)
            counts["ran"] += 1
            counts["failed"] += status == "failed"
            counts["skipped"] += status == "skipped"
    records = [r for r in load_records(out, artifact.paper, artifact.name, scale)
               if r.config_hash == chash and r.unit in set(ids)]
    summary, verdicts = judge_records(artifact, records, ctx)
    if summary is not None:
        table_path = Path(out) / artifact.paper / artifact.name / scale / f"summary.{chash}.csv"
        atomic_write_text(table_path, summary.table.to_csv(index=False))
    return RunResult(artifact, ctx, records, summary, verdicts, counts, shard=shard,
                     share=frozenset(unit.id for unit in share), total_units=len(units))


def _remove_stale_temporaries(out: Path, artifact: Artifact, scale: str) -> None:
    """Delete temporary files that a killed earlier run left behind (never records).

    Only files older than a minute go, so a concurrent sweep's write in flight is safe.
    """
    for stale in (Path(out) / artifact.paper / artifact.name / scale).glob(".*.tmp"):
        if time.time() - stale.stat().st_mtime > 60:
            stale.unlink(missing_ok=True)


def _now() -> str:
    """The current UTC time as records store it (ISO 8601, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record_fields(artifact: Artifact, unit: Unit, ctx: Context, identity: dict, chash: str) -> dict:
    """The fields every record of ``unit`` carries, whatever its outcome."""
    return dict(paper=artifact.paper, artifact=artifact.name, unit=unit.id, scale=ctx.scale,
                config=identity, config_hash=chash, seed=ctx.seed, params=unit.params,
                device=ctx.device.to_json(), environment=environment(), started=_now())


def _run_unit(artifact: Artifact, unit: Unit, ctx: Context, identity: dict, chash: str) -> Record:
    clock = time.perf_counter()
    fields = _record_fields(artifact, unit, ctx, identity, chash)
    try:
        outcome = artifact.run_unit(unit, ctx)
    except SkipUnit as skip:
        return Record(status="skipped", reason=str(skip), duration_s=time.perf_counter() - clock, **fields)
    except EXPECTED_ERRORS as err:
        return Record(status="failed", error=str(err), duration_s=time.perf_counter() - clock, **fields)
    except Exception as err:  # noqa: BLE001 - a failing unit is recorded and the sweep goes on
        detail = "".join(traceback.format_exception(err, limit=-3)).strip()
        return Record(status="failed", error=f"{type(err).__name__}: {err}\n{detail}",
                      duration_s=time.perf_counter() - clock, **fields)
    return Record(status="ok", metrics=outcome.metrics, data=outcome.data,
                  duration_s=time.perf_counter() - clock, **fields)


UNCOMPARABLE_TIMES = ("measured on the emulated CUDA device (cuda-emu), whose times are not comparable with a GPU's "
                      "or a CPU's: its runs check correctness and count memory traffic, and no claim is judged there")


def judge_records(artifact: Artifact, records: list[Record], ctx: Context):
    """The summary of ``records`` and the verdict on each claim the artifact checks.

    A key of the summary's ``measured``, ``samples`` or ``withheld`` that is not one of the
    artifact's claims (a misspelt id) is an ArtifactError naming it, not a value dropped unseen.

    On a device whose times say nothing of a real one (the emulated CUDA device,
    :func:`~reproduce.harness.device.timing_comparable`) every claim is "not run", with the
    measured value, if any, shown.
    """
    ok = [r for r in records if r.status == "ok"]
    summary = artifact.summarize(ok, ctx) if ok else None
    if summary is not None:
        _check_claim_keys(artifact, summary)
    measured = summary.measured if summary else {}
    samples = summary.samples if summary else {}
    withheld = summary.withheld if summary else {}
    paper_claims = {c.id: c for c in claims_mod.load_claims(artifact.paper)}
    missing = [cid for cid in artifact.claims if cid not in paper_claims]
    if missing:
        raise ReproError(f"{artifact.id} checks claims not in {artifact.paper}/claims.toml: {missing}")
    if not timing_comparable(ctx.device):
        verdicts = [claims_mod.Verdict(paper_claims[cid], "not run", measured.get(cid), note=UNCOMPARABLE_TIMES)
                    for cid in artifact.claims]
    else:
        verdicts = [claims_mod.judge(paper_claims[cid], measured.get(cid), ctx.scale, ctx.device.kind,
                                     ctx.device.name, samples.get(cid), withheld.get(cid))
                    for cid in artifact.claims]
    return summary, verdicts


def _check_claim_keys(artifact: Artifact, summary: Summary) -> None:
    """ArtifactError naming any key of the summary's ``measured``, ``samples`` or ``withheld`` that is not one
    of ``artifact.claims``: only declared claims are judged, so any other key would be dropped unseen."""
    for field in ("measured", "samples", "withheld"):
        for key in getattr(summary, field):
            if key not in artifact.claims:
                raise ArtifactError(
                    f"{artifact.id}: the summary's {field} has {key!r}{close_matches(key, artifact.claims)}, which "
                    f"is not one of the artifact's claims ({', '.join(artifact.claims) or 'it declares none'}); "
                    f"correct the key in reproduce/{artifact.paper}/{artifact.name}.py, or declare the claim there "
                    f"and in reproduce/{artifact.paper}/claims.toml")


def latest_run(artifact: Artifact, scale: str, out: Path) -> tuple[list[Record], Context] | None:
    """The records of the most recent config of ``artifact`` at ``scale``, with its context."""
    records = latest_config(load_records(out, artifact.paper, artifact.name, scale))
    if not records:
        return None
    first = records[0]
    device = Device(**{k: v for k, v in first.device.items() if k in Device.__dataclass_fields__})
    ctx = Context(scale=scale, config=first.config["config"], seed=first.seed, device=device)
    return records, ctx
