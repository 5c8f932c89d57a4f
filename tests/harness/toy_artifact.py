"""A small artifact for harness tests; runnable as a script (used by the SIGKILL test).

Unit ``u<i>`` returns ``value = i * factor``; units listed in the config's ``fail`` raise,
units in ``skip`` are skipped, and each unit sleeps ``sleep`` seconds first.

With ``ledger`` (a folder) in the config, every attempt at a unit appends a line to
``<ledger>/<unit>``, so tests can count how often each unit ran across processes and jobs;
then units in ``fail_once`` raise and units in ``kill_once`` SIGKILL their own process on
their first attempt only, as a flaky node or an out-of-memory kill would.
"""

import os
import signal
import time
from pathlib import Path

import pandas as pd

from reproduce.harness.artifact import Artifact, Outcome, SkipUnit, Summary, Unit
from reproduce.harness.records import metric


def units(ctx):
    return [Unit(f"u{i:02d}", {"i": i}) for i in range(ctx.config["n"])]


def attempts(ledger, unit_id: str) -> int:
    """How many times unit ``unit_id`` has been attempted, by the ledger."""
    path = Path(ledger) / unit_id
    return len(path.read_text().splitlines()) if path.exists() else 0


def _note_attempt(unit, config) -> int:
    """Append this attempt to the ledger; the attempt's number (0 without a ledger)."""
    if "ledger" not in config:
        return 0
    with open(Path(config["ledger"]) / unit.id, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    return attempts(config["ledger"], unit.id)


def run_unit(unit, ctx):
    attempt = _note_attempt(unit, ctx.config)
    time.sleep(ctx.config.get("sleep", 0.0))
    if unit.id in ctx.config.get("kill_once", []) and attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if unit.id in ctx.config.get("fail", []) or (unit.id in ctx.config.get("fail_once", []) and attempt == 1):
        raise RuntimeError(f"unit {unit.id} broke on purpose")
    if unit.id in ctx.config.get("skip", []):
        raise SkipUnit("not on this machine")
    return Outcome(metrics={"value": metric(unit.params["i"] * ctx.config["factor"], "x")},
                   data={"source": "generated"})


def summarize(records, ctx):
    table = pd.DataFrame([{"unit": r.unit, "value": r.value("value")} for r in records])
    return Summary(table=table)


ARTIFACT = Artifact(
    paper="toy", name="sweep", title="A toy sweep",
    scales={"smoke": {"n": 6, "factor": 1.0}, "quick": {"n": 40, "factor": 1.0, "sleep": 0.05}},
    needs={"smoke": "nothing", "quick": "nothing"},
    units=units, run_unit=run_unit, summarize=summarize,
    options={"--factor": {"type": float}, "--fail": {"nargs": "+"}},
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
