"""The EGOR artifact: units, the full-scale path on COCO's real format, the claims' measurements, clear failures."""

import shutil

import pytest
import torch

import reproduce.egor.runs as runs
from methods.detection.detector import ResNet50
from reproduce.egor import incremental
from reproduce.egor.data import digit_canvas_sets
from reproduce.harness.artifact import Context
from reproduce.harness.data.images import shared_image_set
from reproduce.harness.device import describe_cpu
from reproduce.harness.errors import ReproError
from reproduce.harness.records import Record, metric
from reproduce.harness.report import table_html


def _context(scale, **overrides):
    return Context(scale, {**incremental.ARTIFACT.scales[scale], **overrides}, 0, describe_cpu("test"))


def test_units_are_each_method_over_the_seeds_with_generation_once_per_split():
    units = incremental.units(_context("full"))
    ids = [u.id for u in units]
    assert ids[:4] == ["40+40-finetune-s0", "40+40-finetune-s1", "40+40-finetune-s2", "40+40-egor-s0"]
    assert ids[5:7] == ["40+40-egor-s2", "40+40-generation-s0"] and ids[-1] == "70+10-distill-s2"
    assert len(ids) == 4 * (3 * 3 + 1)
    # Two units in a row (two local workers) are never of the same seed, so they never both train its detector.
    methods = [u for u in units if u.params["method"] != "generation"]
    assert all(a.params["seed"] != b.params["seed"] for a, b in zip(methods, methods[1:])
               if a.params["n_old"] == b.params["n_old"])


def test_digit_canvases_are_coco_records_with_boxes_inside_the_canvas():
    train, val = digit_canvas_sets("digits-canvas", 20, 5, 64, seed=0, side=(16, 28))
    assert len(train.coco["images"]) == 20 and len(val.coco["images"]) == 5
    for record in train.coco["images"]:
        image = train.image(record)
        assert image.shape == (3, 64, 64) and 0 <= float(image.min()) and float(image.max()) <= 1
        boxes, labels = train.targets(record)
        assert ((boxes >= 0) & (boxes <= 64)).all() and ((labels >= 0) & (labels < 10)).all()
    assert {a["category_id"] for a in train.coco["annotations"]} <= set(range(1, 11))


def _record(method, ap_old, ap_new, ap_all, split=5, seed=0, before=40.0, untrained=0.5):
    metrics = {name: metric(value, "AP") for name, value in (
        ("ap_old", ap_old), ("ap50_old", ap_old), ("ap_new", ap_new), ("ap50_new", ap_new), ("ap_all", ap_all),
        ("ap50_all", ap_all), ("ap_old_before", before), ("ap_old_untrained", untrained))}
    metrics.update(train_seconds=metric(1.0, "s"), peak_memory_mb=metric(10.0, "MB"))
    return Record(paper="egor", artifact="incremental", unit=f"{method}-s{seed}", scale="quick", status="ok",
                  config={}, seed=0, params={"n_old": split, "method": method, "seed": seed}, metrics=metrics,
                  data={"new_category_ids": list(range(split + 1, 11))})


def _generation():
    return Record(paper="egor", artifact="incremental", unit="gen", scale="quick", status="ok", config={},
                  seed=0, params={"n_old": 5, "method": "generation", "seed": 0},
                  metrics={k: metric(v) for k, v in dict(
                      kept_mb=0.5, generator_mb=2.0, generated_images=50, inversion_seconds=3.0,
                      inversion_peak_mb=10.0, generator_train_seconds=9.0, generator_peak_mb=30.0,
                      generator_sample_seconds=1.0, generator_training_objects=100).items()},
                  data={"new_category_ids": [6, 7, 8, 9, 10]})


def _three_seeds(before=40.0):
    """Per seed s: fine-tuning, distillation and EGOR with EGOR's gains growing by s."""
    records = []
    for seed in range(3):
        records += [_record("finetune", 1.0, 30.0, 15.5, seed=seed, before=before),
                    _record("distill", 10.0, 24.0, 17.0, seed=seed, before=before),
                    _record("egor", 14.0 + seed, 27.0 + seed, 20.5 + seed, seed=seed, before=before)]
    return records


def test_summary_judges_each_comparison_on_per_seed_paired_gains():
    summary = incremental.summarize([*_three_seeds(), _generation()], _context("quick"))
    assert summary.measured == pytest.approx({"old-gain-vs-finetune": 14.0, "old-gain-vs-distill": 5.0,
                                              "new-kept-vs-finetune": 0.9333333, "all-gain-vs-distill": 4.5,
                                              "storage-vs-generator": 0.25})
    gains = summary.samples["old-gain-vs-distill"]
    assert gains.statistic == "min" and dict(gains.strata) == {"5+5": [4.0, 5.0, 6.0]}
    assert summary.samples["new-kept-vs-finetune"].strata["5+5"] == pytest.approx([0.9, 27.0 / 30 + 1 / 30,
                                                                                   29.0 / 30])
    assert "storage-vs-generator" not in summary.samples  # a count: judged on its value (deterministic)
    assert summary.withheld == {}
    assert len(summary.table) == 3 and set(summary.table["seeds"]) == {3} and summary.figures


def test_an_ap_of_categories_without_ground_truth_reads_no_ground_truth_in_the_table():
    records = _three_seeds()
    for egor in records[2::3]:  # EGOR's three seeds: no old object in their test images
        egor.metrics["ap50_old"] = metric(float("nan"), "AP")
    table = incremental.summarize(records, _context("quick")).table.set_index("method")
    assert table.loc["egor", "ap50_old"] == incremental.NO_GROUND_TRUTH
    assert table.loc["distill", "ap50_old"] == pytest.approx(10.0)
    assert table.loc["egor", "ap_old"] == pytest.approx(15.0)
    assert "no ground truth" in table_html(table.reset_index())


def test_the_worst_split_decides_a_comparison():
    records = [*_three_seeds(), *[_record(m, old, 20.0, 15.0, split=7, seed=s)
                                  for s in range(3) for m, old in (("finetune", 0.0), ("distill", 5.0),
                                                                   ("egor", 4.0 + s))]]
    drawn = incremental.summarize(records, _context("quick")).samples["old-gain-vs-distill"]
    assert set(drawn.strata) == {"5+5", "7+3"} and drawn.point() == pytest.approx(0.0)


def test_comparisons_below_the_learning_floor_are_withheld_with_both_numbers():
    summary = incremental.summarize(_three_seeds(before=6.0), _context("quick"))
    old_claims = {"old-gain-vs-finetune", "old-gain-vs-distill", "all-gain-vs-distill"}
    assert set(summary.withheld) == old_claims  # fine-tuning's new-class AP (30) clears the floor
    assert all("6 < 10.5" in reason for reason in summary.withheld.values())
    assert any("Learning floor" in note and "cleared" in note for note in summary.notes)


@pytest.fixture
def coco_layout(tmp_path, monkeypatch):
    """COCO 2017's real layout (the shared tiny subset: real images and instances files) as <dir>/coco2017."""
    try:
        source = shared_image_set("coco2017_tiny")
    except ReproError as error:
        pytest.skip(f"the shared COCO subset is not available: {error}")
    shutil.copytree(source, tmp_path / "data" / "coco2017")
    monkeypatch.setenv("REPRO_DATA_DIRS", str(tmp_path / "data"))
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "resnet50-0676ba61.pth"
    torch.save({**ResNet50().state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, weights)
    monkeypatch.setattr(runs, "fetch", lambda name, download=True: {weights.name: weights})
    return tmp_path


FULL_OVERRIDES = {"splits": [40], "image_scale": [96, 64], "base_epochs": 1, "incremental_epochs": 1, "batch_size": 8,
                  "warmup": 2, "per_class": 1, "inversion": {"iterations": 1, "resolution": 64}, "inversion_batch": 40,
                  "generator": {"side": 16, "channels": [8, 16], "layers": 1, "steps": 1, "batch_size": 8,
                                "sample_steps": 1}, "download": False, "seeds": [0]}


@pytest.mark.slow
def test_full_scale_units_run_on_coco_in_its_real_layout(coco_layout):
    ctx = _context("full", **FULL_OVERRIDES)
    outcomes = {u.params["method"]: incremental.run_unit(u, ctx) for u in incremental.units(ctx)}
    egor = outcomes["egor"]
    old = egor.data["old_category_ids"]
    assert len(old) == 40 and max(old) == 44 and 12 not in old  # COCO's first 40 ids (1-44, with gaps)
    assert egor.data["task2_images"] > 0 and egor.data["generated_objects"] == 40
    for method in ("finetune", "distill", "egor"):
        assert 0.0 <= outcomes[method].metrics["ap_all"]["value"] <= 100.0
    assert outcomes["generation"].metrics["generated_images"]["value"] == 40


def test_a_diverging_loss_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    ctx = _context("smoke", lr=1e12, warmup=1)
    unit = incremental.units(ctx)[0]
    with pytest.raises(runs.TrainingDivergedError, match="diverged at iteration"):
        incremental.run_unit(unit, ctx)


def test_coco_zips_in_the_official_layout_are_extracted_into_the_cache(tmp_path, monkeypatch):
    """annotations_trainval2017.zip, train2017.zip and val2017.zip, built from the shared subset's real files."""
    import zipfile

    import reproduce.egor.data as data

    try:
        source = shared_image_set("coco2017_tiny")
    except ReproError as error:
        pytest.skip(f"the shared COCO subset is not available: {error}")
    zips = {}
    for name, folder in (("annotations_trainval2017.zip", "annotations"), ("train2017.zip", "train2017"),
                         ("val2017.zip", "val2017")):
        zips[name] = tmp_path / name
        with zipfile.ZipFile(zips[name], "w") as archive:
            for file in sorted((source / folder).iterdir())[:6 if folder != "annotations" else None]:
                archive.write(file, f"{folder}/{file.name}")
    monkeypatch.setenv("REPRO_DATA_DIRS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "fetch", lambda name, files, download: {f: zips[f] for f in files})
    root = data.coco_root(download=True)
    assert root == tmp_path / "cache" / "datasets" / "coco2017" / "extracted"
    assert (root / "annotations" / "instances_val2017.json").is_file() and len(list((root / "val2017").iterdir())) == 6
    monkeypatch.setattr(data, "fetch", lambda *a, **k: pytest.fail("a complete extraction is reused"))
    assert data.coco_root(download=False) == root
