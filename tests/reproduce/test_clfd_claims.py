"""CLFD's claims: the new rows and comparisons are measured (tests/harness/test_claims.py checks that every
claim belongs to one artifact).

The records are written by hand (no training), so each test states the values it expects.
"""

import pytest
import torch

import reproduce.continual as runs
from methods.cl import ReservoirBuffer
from reproduce.clfd import edge_chart, main_table
from reproduce.harness.claims import judge, load_claims
from tests.methods.cl.test_core import _tiny_net
from tests.reproduce.test_continual_summaries import _context, _record


def _quick_records(clser_class_il):
    """CLFD-ER-ACE at 30/32/34% class-IL against CLS-ER's per-seed values, plus the rows the gain ignores."""
    records = []
    for seed, clser in enumerate(clser_class_il):
        for method, variant, class_il in (("erace", "clfd", 30.0 + 2 * seed), ("erace", "plain", 50.0),
                                          ("clser", "plain", clser), ("clser", "clfd", 60.0)):
            records.append(_record("clfd", "main_table", "cifar10-subset", method, variant, seed, class_il=class_il))
    records.append(_record("clfd", "main_table", "cifar10-subset", "oewc", "plain", 0, buffer=0, class_il=10.0))
    return records


def test_abs_acc_gain_pairs_clfd_erace_with_clser_by_seed_and_respects_the_floor():
    ctx = _context(main_table)
    summary = main_table.summarize(_quick_records([20.0, 21.0, 22.0]), ctx)
    assert summary.samples["abs-acc-gain"].strata == {"cifar10-subset b50": [10.0, 11.0, 12.0]}
    assert summary.measured["abs-acc-gain"] == pytest.approx(11.0)
    assert "below the learning floor" in summary.withheld["abs-acc-gain"] and "21 < 30" in summary.withheld[
        "abs-acc-gain"]
    claim = {c.id: c for c in load_claims("clfd")}["abs-acc-gain"]
    assert judge(claim, 11.0, "quick", samples=summary.samples["abs-acc-gain"],
                 withheld=summary.withheld.get("abs-acc-gain")).status == "not judged"
    # With CLS-ER above the floor (30% = 1.5 x 20% on five tasks) the gain is judged.
    cleared = main_table.summarize(_quick_records([40.0, 41.0, 42.0]), ctx)
    assert "abs-acc-gain" not in cleared.withheld
    verdict = judge(claim, cleared.measured["abs-acc-gain"], "quick", samples=cleared.samples["abs-acc-gain"])
    assert cleared.measured["abs-acc-gain"] == pytest.approx(-9.0) and verdict.status == "not reproduced"
    # mem-gain stays over ER, DER++ and ER-ACE: CLS-ER's rows do not enter it.
    assert set(summary.samples["mem-gain"].strata) == {"cifar10-subset b50 erace"}


def test_full_summary_measures_the_baseline_rows():
    records = [_record("clfd", "main_table", "seq-tinyimg", method, "plain", seed, buffer=0, peak_memory_mb=500.0)
               for method in ("sgd", "oewc", "si", "lwf") for seed in range(3)]
    records += [_record("clfd", "main_table", "seq-tinyimg", "clser", variant, seed, buffer=125, class_il=16.0 + seed)
                for variant in ("plain", "clfd") for seed in range(3)]
    summary = main_table.summarize(records, _context(main_table, "full"))
    assert {"tin-nb-oewc-mem", "tin-nb-si-cil", "tin-nb-lwf-til", "tin-b125-clser-cil",
            "tin-b125-clfd-clser-mem"} <= set(summary.measured)
    assert "tin-nb-sgd-mem" not in summary.measured  # the table has no memory for its bounds
    assert summary.samples["tin-b125-clser-cil"].point() == pytest.approx(17.0)
    assert set(summary.measured) <= set(main_table.ARTIFACT.claims)


def test_edge_chart_measures_accuracy_and_hours_and_needs_an_orin_for_time():
    records = [_record("clfd", "edge_chart", "seq-cifar10", method, variant, seed, class_il=40.0 + seed,
                       train_seconds=3600.0 * (2.0 if variant == "clfd" else 6.0))
               for method in edge_chart.METHODS for variant in ("plain", "clfd") for seed in range(3)]
    summary = edge_chart.summarize(records, _context(edge_chart, "full"))
    assert set(summary.measured) == set(edge_chart.CLAIMS)
    assert summary.measured["edge-c10-clfd-clser-acc"] == pytest.approx(41.0)
    assert summary.measured["edge-c10-er-time"] == pytest.approx(6.0)
    claims = {c.id: c for c in load_claims("clfd")}
    on_cpu = judge(claims["edge-c10-er-time"], 6.0, "full", samples=summary.samples["edge-c10-er-time"])
    assert on_cpu.status == "not run" and "cuda:orin" in on_cpu.note
    on_orin = judge(claims["edge-c10-er-time"], 6.0, "full", "cuda", "Orin", samples=[6.0, 6.1, 5.9])
    assert on_orin.status == "reproduced"


def test_every_full_unit_builds_its_learner_with_the_published_arguments():
    """Each (stream, method, buffer) of the full sweeps has best arguments that its learner accepts."""
    seen = set()
    for artifact in (main_table, edge_chart):
        for unit in artifact.units(_context(artifact, "full")):
            method, buffer = unit.params["method"], unit.params["buffer"]
            stream = runs.DATASET_STREAMS[unit.params["dataset"]]
            hyper = runs.hyperparameters(stream, method, buffer)
            assert (stream, runs.SAME_ARGUMENTS.get(method, method), buffer) in runs.HYPERPARAMETERS
            learner_class = runs.LEARNERS[method]
            extra = {k: v for k, v in hyper.items() if k not in ("lr", "epochs")}
            learner_class(_tiny_net(), lr=hyper["lr"], generator=torch.Generator(),
                          buffer=ReservoirBuffer(4) if learner_class.uses_buffer else None, **extra)
            seen.add((stream, method, buffer))
    assert runs.hyperparameters("seq-tinyimg", "clser", 125)["stable_rate"] == 0.1
    assert runs.hyperparameters("seq-cifar10", "lwf", 0)["alpha"] == 3.0
    assert len(seen) == 2 * (5 + 2 * 4)  # per stream: five buffer-free methods, four rehearsal ones at two buffers
