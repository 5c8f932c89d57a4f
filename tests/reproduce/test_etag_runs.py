"""The eTag artifacts' unit runner on tiny fakes of the real on-disk formats (full scale), and their summaries."""

import dataclasses

import numpy as np
import pytest

import reproduce.continual as continual
from reproduce.etag import runs, table_b2, table_c5, table_c6
from reproduce.harness.artifact import Context
from reproduce.harness.claims import judge, load_claims
from reproduce.harness.device import describe_cpu
from reproduce.harness.records import Record

TINY = {"width": 2, "epochs": 1, "generator_epochs": 1, "batch_size": 64, "synthetic_batch": 8, "seeds": [0]}


def _records(artifact, ctx, units):
    return [Record(paper="etag", artifact=artifact.ARTIFACT.name, unit=u.id, scale=ctx.scale, params=u.params,
                   config={}, seed=0, device={}, environment={}, status="ok",
                   **vars(artifact.ARTIFACT.run_unit(u, ctx))) for u in units]


@pytest.mark.parametrize(("dataset", "first", "n_classes"), [("seq-cifar100", 50, 100), ("seq-tinyimg", 100, 200)])
def test_table_b2_full_units_run_on_the_real_formats(fake_full_data, dataset, first, n_classes):
    ctx = Context("full", {**table_b2.ARTIFACT.scales["full"], **TINY}, 0, describe_cpu("test"))
    units = table_b2.units(ctx)
    assert {(u.params["dataset"], u.params["first"], u.params["tasks"]) for u in units} == {
        (d, f, t) for d, f in (("seq-cifar100", 50), ("seq-tinyimg", 100)) for t in (5, 10, 20)}
    unit = next(u for u in units if u.params["dataset"] == dataset and u.params["tasks"] == 5
                and u.params["method"] == "etag")
    outcome = runs.run_incremental_unit(unit, ctx)
    splits = outcome.data["splits"]
    assert [len(s) for s in splits] == [first] + [(n_classes - first) // 5] * 5
    assert sorted(c for s in splits for c in s) == list(range(n_classes))
    assert len(outcome.data["seen_accuracy"]) == 6
    assert outcome.metrics["exemplars_stored"]["value"] == 0
    assert outcome.metrics["train_seconds"]["value"] > 0 and outcome.metrics["test_seconds"]["value"] > 0


def test_the_memory_budget_of_a_method_with_exemplars_adds_its_images_as_bytes():
    from reproduce.etag import table_b1

    ctx = Context("smoke", table_b1.ARTIFACT.scales["smoke"], 0, describe_cpu("test"))
    outcomes = {u.params["method"]: runs.run_incremental_unit(u, ctx) for u in table_b1.units(ctx)
                if u.params["method"] in ("der", "gfr")}
    der = outcomes["der"].metrics
    stored = der["exemplars_stored"]["value"]
    assert stored > 0 and outcomes["gfr"].metrics["exemplars_stored"]["value"] == 0
    # The synthetic set's images are 3 x 32 x 32; one byte per value, as Table C.6 counts exemplars.
    network_mb = 4 * der["trained_parameters"]["value"] / runs.MIB  # DER has no generator: all of it is kept
    assert der["memory_budget_mb"]["value"] == pytest.approx(network_mb + stored * 3 * 32 * 32 / runs.MIB)


def test_class_order_depends_on_the_seed_only(fake_full_data):
    """Every method of one seed learns the same class order; another seed permutes differently."""
    ctx = Context("full", {**table_c5.ARTIFACT.scales["full"], **TINY, "methods": ["finetune", "lwf"],
                           "seeds": [0, 1]}, 0, describe_cpu("test"))
    orders = {(u.params["method"], u.params["seed"]): runs.run_incremental_unit(u, ctx).data["class_order"]
              for u in table_c5.units(ctx)}
    assert orders["finetune", 0] == orders["lwf", 0] != orders["finetune", 1]


def test_table_b2_summary_measures_per_seed_gains_at_a_quick_like_scale(images_dir, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIRS", str(images_dir))
    continual.load_stream.cache_clear()
    config = {**table_b2.ARTIFACT.scales["quick"], **TINY, "train_per_class": 4, "test_per_class": 2, "seeds": [0, 1]}
    ctx = Context("quick", config, 0, describe_cpu("test"))
    records = _records(table_b2, ctx, table_b2.units(ctx))
    continual.load_stream.cache_clear()
    summary = table_b2.summarize(records, ctx)
    assert set(summary.measured) == {*table_b2.GAINS, "exemplars-stored"}  # eTag over each baseline
    assert summary.measured["exemplars-stored"] == 0
    by_seed = {(r.params["method"], r.params["seed"]): r.value("average_incremental_accuracy") for r in records}
    for _, baseline in table_b2.GAINS.values():
        drawn = summary.samples[f"gain-vs-{baseline}"]
        assert drawn.statistic == "min"
        assert list(drawn.strata.values()) == [[pytest.approx(by_seed["etag", s] - by_seed[baseline, s])
                                                for s in (0, 1)]]
        assert summary.measured[f"gain-vs-{baseline}"] == pytest.approx(drawn.point())
    assert set(summary.table["method"]) == set(table_b2.ARTIFACT.scales["quick"]["methods"])
    assert (summary.table["seeds"] == 2).all()
    assert any("learning floor" in note for note in summary.notes)


def test_the_learning_floor_is_a_multiple_of_a_guess_that_knows_only_the_newest_task():
    sizes = [5, 1, 1, 1, 1, 1]
    assert runs.guess_accuracy(sizes) == pytest.approx(100.0 / np.arange(5, 11))
    assert runs.learning_floor(sizes) == pytest.approx(1.5 * np.mean(100.0 / np.arange(5, 11)))
    assert runs.learning_floor(sizes) == pytest.approx(21.14, abs=0.01)


def _fake(method: str, seed: int, accuracy: float, first_task: float = 90.0) -> Record:
    """A successful table_b2 record on 5 + 5 x 1 classes with the given A (no training)."""
    matrix = [[first_task if j == 0 else (50.0 if j == i else 0.0) if j <= i else None for j in range(6)]
              for i in range(6)]
    metrics = {m: {"value": 0.0, "unit": ""} for m in runs.METRICS}
    metrics["average_incremental_accuracy"] = {"value": accuracy, "unit": "%"}
    return Record(paper="etag", artifact="table_b2", unit=f"{method}-{seed}", scale="quick", status="ok", config={},
                  seed=0, metrics=metrics, params={"dataset": "mnist-offline", "first": 5, "tasks": 5,
                                                   "method": method, "seed": seed},
                  data={"task_accuracy": matrix, "splits": [[0, 1, 2, 3, 4], [5], [6], [7], [8], [9]],
                        "seen_accuracy": [first_task] * 6})


def test_a_gain_over_a_baseline_below_the_learning_floor_is_withheld_with_both_numbers():
    accuracies = {"etag": (60.0, 62.0, 64.0), "finetune": (18.0, 19.0, 20.0), "lwf": (25.0, 26.0, 27.0)}
    records = [_fake(method, seed, value) for method, values in accuracies.items() for seed, value in enumerate(values)]
    ctx = Context("quick", table_b2.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    summary = table_b2.summarize(records, ctx)
    assert summary.samples["gain-vs-finetune"].strata == {"mnist-offline 5+5": [42.0, 43.0, 44.0]}
    assert summary.samples["gain-vs-lwf"].strata == {"mnist-offline 5+5": [35.0, 36.0, 37.0]}
    assert set(summary.withheld) == {"gain-vs-finetune"}
    assert "19 < 21.14" in summary.withheld["gain-vs-finetune"]
    assert any("lwf's A against the learning floor: mnist-offline 5+5: 26.00% (floor 21.14%)" in n
               for n in summary.notes)
    # Every method's accuracy on each new task right after learning it, per seed.
    assert any("mnist-offline 5+5 etag: 50.00, 50.00, 50.00" in n and "right after learning it" in n
               for n in summary.notes)
    assert any("A (%) per seed" in n and "mnist-offline 5+5 finetune: 18.00, 19.00, 20.00" in n for n in summary.notes)


def test_table_c5_judges_its_claims_from_the_seeds(fake_full_data):
    ctx = Context("full", {**table_c5.ARTIFACT.scales["full"], **TINY, "methods": ["b1"], "seeds": [0, 1]}, 0,
                  describe_cpu("test"))
    records = _records(table_c5, ctx, table_c5.units(ctx))
    # The baselines' rows: the same runs relabelled (their units run at smoke scale), with distinct accuracies.
    for method, shift in (("podnet", 1.0), ("abd", 2.0)):
        for r in list(records):
            if r.params["method"] == "b1":
                metrics = {**r.metrics, "average_incremental_accuracy": {
                    "value": r.value("average_incremental_accuracy") + shift, "unit": "%"}}
                records.append(dataclasses.replace(r, params={**r.params, "method": method}, metrics=metrics))
    summary = table_c5.summarize(records, ctx)
    assert set(summary.samples) == {f"c5-{kind}-{method}" for kind in ("train-time", "test-time")
                                    for method in ("b1", "podnet", "abd")} | {"c5-acc-podnet", "c5-acc-abd"}
    by_seed = sorted((r for r in records if r.params["method"] == "b1"), key=lambda r: r.params["seed"])
    times = [r.value("train_seconds") for r in by_seed]
    assert summary.samples["c5-train-time-b1"].strata == {"": times}
    assert summary.measured["c5-train-time-b1"] == pytest.approx(np.mean(times))
    assert summary.samples["c5-acc-abd"].strata == {"": [r.value("average_incremental_accuracy") + 2 for r in by_seed]}
    assert summary.samples["c5-train-time-podnet"].strata == {"": times}
    assert set(table_c5.ARTIFACT.claims) >= {"c5-acc-podnet", "c5-train-time-abd", "c5-test-time-podnet"}
    assert table_c5.ARTIFACT.timed


def test_table_c6_counts_match_the_paper_exactly():
    ctx = Context("quick", table_c6.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    summary = table_c6.summarize(_records(table_c6, ctx, table_c6.units(ctx)), ctx)
    assert round(summary.measured["c6-params-c100-jointfine"], 2) == 11.22
    assert round(summary.measured["c6-params-c100-etag"], 2) == 43.20
    assert round(summary.measured["c6-mem-c100-jointfine"], 2) == 42.80
    assert summary.measured["c6-mem-c100-etag"] == pytest.approx(45.38, abs=0.02)


def test_table_c6_accounts_for_heads_generator_prototypes_exemplars_and_the_imagenet_stem():
    config = {**table_c6.ARTIFACT.scales["full"], "methods": ["jointfine", "epass", "gfr", "il2m"]}
    ctx = Context("full", config, 0, describe_cpu("test"))
    records = _records(table_c6, ctx, table_c6.units(ctx))
    value = {(r.params["dataset"], r.params["method"], m): r.value(m) for r in records
             for m in ("parameters_m", "memory_budget_mb")}
    fine = value["c100", "jointfine", "parameters_m"]
    assert round(value["c100", "epass", "parameters_m"] - fine, 2) == 30.52  # the first three auxiliary heads
    assert round(value["c100", "gfr", "parameters_m"] - fine, 2) == 1.46  # the generator
    assert value["in100", "jointfine", "parameters_m"] - fine == pytest.approx((7 * 7 - 3 * 3) * 3 * 64 / 1e6)
    memory = value["c100", "jointfine", "memory_budget_mb"]
    assert value["c100", "epass", "memory_budget_mb"] - memory == pytest.approx(4 * (100 * 512 + 1) / 2**20)
    assert value["c100", "il2m", "memory_budget_mb"] - memory == pytest.approx(20 * 100 * 3 * 32 * 32 / 2**20)
    assert value["in100", "il2m", "memory_budget_mb"] > 300  # 224 x 224 exemplars


def test_counts_are_deterministic_and_decided_by_one_sample():
    claims = {c.id: c for c in load_claims("etag")}
    assert all(c.why for c in claims.values())
    assert all(claims[i].deterministic for i in claims if i.startswith("c6-") or i == "exemplars-stored")
    assert all(claims[i].platform == "gpu" for i in claims if i.startswith("c5-") and "-time-" in i)
    ctx = Context("quick", table_c6.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    summary = table_c6.summarize(_records(table_c6, ctx, table_c6.units(ctx)), ctx)
    for claim, value in summary.measured.items():
        assert judge(claims[claim], value, "quick").status == "reproduced", claim
    # The 1% tolerance rejects counting the generator's encoder into eTag's memory budget (+6.6%).
    assert judge(claims["c6-mem-c100-etag"], 1.066 * 45.38, "quick").status == "not reproduced"


def test_collapse_notes_name_the_methods_that_score_only_the_newest_task_and_pairs_that_must_coincide():
    def collapsed(method, seed, first_task):
        record = _fake(method, seed, 26.0, first_task)
        record.data["task_accuracy"] = [[first_task if j == 0 and i == 0 else 100.0 if j == i else 0.0
                                         if j < i else None for j in range(6)] for i in range(6)]
        return record

    records = [collapsed("finetune", s, 90.0 + s) for s in (0, 1)] + [collapsed("lwf", s, 90.0 + s) for s in (0, 1)]
    records += [collapsed("other", 0, 80.0), collapsed("other", 1, 91.0)]
    records += [_fake("etag", 0, 60.0), _fake("etag", 1, 61.0)]
    rows = runs.seed_rows(records)
    assert runs.newest_only_steps(np.array(records[0].data["task_accuracy"], dtype=float)) == 5
    notes = runs.collapse_notes(rows)
    assert [n.split(":")[0] for n in notes if "steps after the first" in n] == ["finetune", "lwf", "other"]
    assert [n.split(" predicted")[0] for n in notes if "coincide" in n] == ["finetune and lwf"]  # other: 80 != 90
    assert not any(n.startswith("etag") for n in notes)
