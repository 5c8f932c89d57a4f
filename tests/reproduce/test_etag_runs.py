"""The eTag artifacts' unit runner on tiny fakes of the real on-disk formats (full scale), and their summaries."""

import pytest

import reproduce.continual as continual
from reproduce.etag import runs, table_b2, table_c5, table_c6
from reproduce.harness.artifact import Context
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


def test_class_order_depends_on_the_seed_only(fake_full_data):
    """Every method of one seed learns the same class order; another seed permutes differently."""
    ctx = Context("full", {**table_c5.ARTIFACT.scales["full"], **TINY, "methods": ["finetune", "lwf"],
                           "seeds": [0, 1]}, 0, describe_cpu("test"))
    orders = {(u.params["method"], u.params["seed"]): runs.run_incremental_unit(u, ctx).data["class_order"]
              for u in table_c5.units(ctx)}
    assert orders["finetune", 0] == orders["lwf", 0] != orders["finetune", 1]


def test_table_b2_summary_measures_the_gains_at_a_quick_like_scale(images_dir, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIRS", str(images_dir))
    continual.load_stream.cache_clear()
    ctx = Context("quick", {**table_b2.ARTIFACT.scales["quick"], **TINY, "train_per_class": 4, "test_per_class": 2},
                  0, describe_cpu("test"))
    summary = table_b2.summarize(_records(table_b2, ctx, table_b2.units(ctx)), ctx)
    continual.load_stream.cache_clear()
    assert set(summary.measured) == {"gain-vs-finetune", "gain-vs-lwf", "exemplars-stored"}
    assert summary.measured["exemplars-stored"] == 0
    assert set(summary.table["method"]) == {"etag", "finetune", "lwf"}


def test_table_c6_counts_match_the_paper_exactly():
    ctx = Context("quick", table_c6.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    summary = table_c6.summarize(_records(table_c6, ctx, table_c6.units(ctx)), ctx)
    assert round(summary.measured["c6-params-c100-jointfine"], 2) == 11.22
    assert round(summary.measured["c6-params-c100-etag"], 2) == 43.20
    assert round(summary.measured["c6-mem-c100-jointfine"], 2) == 42.80
    assert summary.measured["c6-mem-c100-etag"] == pytest.approx(45.38, abs=0.02)
