"""The RDD artifact: unit order, the full-scale path on tiny fakes in the real formats, the claims' measurements,
the learning floors and the metric's sanity."""

import pytest
import torch

import reproduce.diffusion_quality as diffusion_quality
from methods.diffusion import InceptionFeatures
from reproduce.harness.artifact import Context
from reproduce.harness.device import describe_cpu
from reproduce.harness.records import Record, metric
from reproduce.rdd import distillation

QUICK = distillation.ARTIFACT.scales["quick"]
BASE = QUICK["base_steps"]


def _record(method, fids, seed=0, noise=None):
    metrics = {}
    for s, fid in fids.items():
        metrics.update({f"fid_{s}": metric(fid, "FID"), f"is_{s}": metric(1.5, "IS"),
                        f"precision_{s}": metric(50.0, "%"), f"sample_seconds_{s}": metric(0.01 * s, "s"),
                        f"nfe_{s}": metric(s)})
    if noise is not None:
        metrics["noise_fid"] = metric(noise, "FID")
    return Record(paper="rdd", artifact="distillation", unit=f"{method}-s{seed}", scale="quick", status="ok",
                  config={}, seed=0, params={"method": method, "seed": seed}, metrics=metrics,
                  data={"features": "proxy"})


def _seed(seed, teacher, pd_1, rdd_1, noise=400.0):
    """One seed's records: the teacher at its grid (``teacher``) and its one-step DDIM at 10x that, PD's and RDD's
    students (one-step FIDs ``pd_1`` and ``rdd_1``, the others in between)."""
    return [_record("teacher", {BASE: teacher, 8: teacher + 2, 4: 3 * teacher, 2: 6 * teacher, 1: 10 * teacher},
                    seed, noise),
            _record("pd", {8: teacher + 3, 4: pd_1 - 4, 2: pd_1 - 2, 1: pd_1}, seed),
            _record("rdd", {8: teacher + 3, 4: rdd_1 - 4, 2: rdd_1 - 2, 1: rdd_1}, seed)]


def test_units_are_three_per_seed_with_the_teachers_evaluations_early():
    ctx = Context("quick", QUICK, 0, describe_cpu("test"))
    ids = [u.id for u in distillation.units(ctx)]
    assert ids == ["rdd", "teacher", "teacher-s1", "teacher-s2", "pd", "rdd-s1", "pd-s1", "rdd-s2", "pd-s2"]


def test_summary_judges_the_one_step_gain_from_each_seeds_paired_gain():
    ctx = Context("quick", QUICK, 0, describe_cpu("test"))
    records = _seed(0, 5.0, 15.0, 13.0) + _seed(1, 6.0, 16.0, 14.5) + _seed(2, 5.5, 15.0, 12.5)
    summary = distillation.summarize(records, ctx)
    assert summary.samples["fid-1step-gain"] == [pytest.approx(2.0), pytest.approx(1.5), pytest.approx(2.5)]
    assert summary.measured == {"fid-1step-gain": pytest.approx(2.0), "speedup-vs-ddim": pytest.approx(BASE)}
    assert not summary.withheld and len(summary.table) == 5 + 4 + 4
    row = summary.table[(summary.table["method"] == "pd") & (summary.table["steps"] == 1)].iloc[0]
    assert row["fid"] == pytest.approx(46 / 3) and row["seeds"] == 3
    assert any(note.startswith("Metric sanity: no distilled model scores better than the teacher")
               for note in summary.notes)


def test_a_teacher_near_noise_or_a_student_no_better_than_one_step_ddim_is_below_the_floor():
    ctx = Context("quick", QUICK, 0, describe_cpu("test"))
    weak_teacher = distillation.summarize(_seed(0, 50.0, 150, 140, noise=300) + _seed(1, 55.0, 160, 150, noise=300),
                                          ctx)
    assert "the teacher's" in weak_teacher.withheld["fid-1step-gain"]
    weak_student = distillation.summarize(_seed(0, 5.0, 40.0, 38.0) + _seed(1, 5.0, 42.0, 40.0), ctx)
    reason = weak_student.withheld["fid-1step-gain"]
    assert reason.startswith("below the learning floor: PD's one-step") and "against 50" in reason


def test_a_distilled_model_better_than_its_teacher_in_every_seed_makes_the_metric_unreliable():
    ctx = Context("quick", QUICK, 0, describe_cpu("test"))
    records = _seed(0, 20.0, 30.0, 10.0) + _seed(1, 21.0, 31.0, 12.0) + _seed(2, 19.0, 29.0, 11.0)
    summary = distillation.summarize(records, ctx)
    assert summary.withheld["fid-1step-gain"].startswith("metric unreliable at this scale: rdd at 1 steps")
    assert summary.measured["fid-1step-gain"] == pytest.approx(19.0)  # measured and shown, not judged


def test_full_scale_units_run_on_the_real_formats(fake_full_data, tmp_path, monkeypatch):
    """Teacher, PD and RDD on the fake CIFAR-10 archive, with the Inception extractor (random weights, same layout)."""
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(InceptionFeatures(num_classes=1008, fid_blocks=True).state_dict(), weights)
    monkeypatch.setattr(diffusion_quality, "fetch", lambda name, download=True: {weights.name: weights})
    # Frechet distances of 2,048-d features cost seconds each; the Inception path is checked in test_mpqdm.
    scored = []

    def cheap_quality(samples, reference, extractor):
        scored.append(tuple(samples.shape))
        return {"fid": float(samples.float().std()), "is": 1.0, "precision": 0.0}

    monkeypatch.setattr(distillation, "sample_quality", cheap_quality)
    config = {**distillation.ARTIFACT.scales["full"], "side": 8, "base_steps": 16, "base_train_steps": 2,
              "round_steps": 1, "batch_size": 4, "round_batch": 4, "samples": 4, "sample_batch": 4,
              "reference_images": 6, "classifier_width": 4, "classifier_epochs": 1, "seeds": [0],
              "unet": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4}}
    ctx = Context("full", config, 0, describe_cpu("test"))
    outcomes = {u.id: distillation.run_unit(u, ctx) for u in distillation.units(ctx)}
    assert set(outcomes["teacher"].metrics) >= {"fid_16", "fid_8", "fid_1", "nfe_16", "noise_fid"}
    assert outcomes["rdd"].metrics["nfe_1"]["value"] == 1 and "fid_1" in outcomes["pd"].metrics
    assert outcomes["rdd"].data["features"].startswith("FID Inception")
    assert scored == [(4, 3, 8, 8)] * (5 + 1 + 4 + 4)  # the teacher's five step counts and noise, PD's and RDD's four
