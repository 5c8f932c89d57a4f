"""The RDD artifact: unit order, the full-scale path on tiny fakes in the real formats, the claims' measurements."""

import pytest
import torch

import reproduce.diffusion_quality as diffusion_quality
from methods.diffusion import InceptionFeatures
from reproduce.harness.artifact import Context
from reproduce.harness.device import describe_cpu
from reproduce.harness.records import Record, metric
from reproduce.rdd import distillation


def _record(method, fids, base=64):
    steps = (base, 8, 4, 2, 1) if method == "teacher" else (8, 4, 2, 1)
    metrics = {}
    for s in steps:
        metrics.update({f"fid_{s}": metric(fids[s], "FID"), f"is_{s}": metric(1.5, "IS"),
                        f"precision_{s}": metric(50.0, "%"), f"sample_seconds_{s}": metric(0.01 * s, "s"),
                        f"nfe_{s}": metric(s)})
    return Record(paper="rdd", artifact="distillation", unit=method, scale="quick", status="ok", config={}, seed=0,
                  params={"method": method}, metrics=metrics, data={"features": "proxy"})


def test_summary_measures_the_one_step_gain_and_the_evaluation_ratio():
    ctx = Context("quick", distillation.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    records = [_record("teacher", {64: 5.0, 8: 9.0, 4: 14.0, 2: 20.0, 1: 30.0}),
               _record("pd", {8: 8.0, 4: 9.0, 2: 11.0, 1: 15.0}), _record("rdd", {8: 8.0, 4: 8.5, 2: 10.0, 1: 13.0})]
    summary = distillation.summarize(records, ctx)
    assert summary.measured == {"fid-1step-gain": pytest.approx(2.0), "speedup-vs-ddim": pytest.approx(64.0)}
    assert len(summary.table) == 5 + 4 + 4


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
              "round_steps": 1, "batch_size": 4, "samples": 4, "sample_batch": 4, "reference_images": 6,
              "unet": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4}}
    ctx = Context("full", config, 0, describe_cpu("test"))
    outcomes = {u.id: distillation.run_unit(u, ctx) for u in distillation.units(ctx)}
    assert set(outcomes["teacher"].metrics) >= {"fid_16", "fid_8", "fid_1", "nfe_16"}
    assert outcomes["rdd"].metrics["nfe_1"]["value"] == 1 and "fid_1" in outcomes["pd"].metrics
    assert outcomes["rdd"].data["features"].startswith("FID Inception")
    assert scored == [(4, 3, 8, 8)] * (5 + 4 + 4)
