"""A small artifact for harness tests; runnable as a script (used by the SIGKILL test).

Unit ``u<i>`` returns ``value = i * factor``; units listed in the config's ``fail`` raise,
units in ``skip`` are skipped, and each unit sleeps ``sleep`` seconds first.
"""

import time

import pandas as pd

from reproduce.harness.artifact import Artifact, Outcome, SkipUnit, Summary, Unit
from reproduce.harness.records import metric


def units(ctx):
    return [Unit(f"u{i:02d}", {"i": i}) for i in range(ctx.config["n"])]


def run_unit(unit, ctx):
    time.sleep(ctx.config.get("sleep", 0.0))
    if unit.id in ctx.config.get("fail", []):
        raise RuntimeError(f"unit {unit.id} broke on purpose")
    if unit.id in ctx.config.get("skip", []):
        raise SkipUnit("not on this machine")
    return Outcome(metrics={"value": metric(unit.params["i"] * ctx.config["factor"], "x")},
                   data={"source": "generated"})


def summarize(records, ctx):
    table = pd.DataFrame([{"unit": r.unit, "value": r.value("value")} for r in records])
    return Summary(table=table, measured={"mean-value": float(table["value"].mean())})


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
