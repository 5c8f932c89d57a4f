"""The MPQ-DM artifact: bit settings, its full-scale path on tiny fakes in the real formats, the claim's measurement."""

import numpy as np
import pytest
import torch

import reproduce.diffusion_quality as diffusion_quality
import reproduce.mpqdm.runs as runs
from methods.diffusion import InceptionFeatures, tiny_unet
from reproduce.harness.artifact import Context
from reproduce.harness.device import describe_cpu
from reproduce.harness.errors import DataError
from reproduce.harness.records import Record, metric
from reproduce.mpqdm import lowbit


def test_bit_settings_parse_and_bad_ones_are_data_errors():
    assert runs.parse_bits("W2A4") == (2, 4) and runs.parse_bits("w3a6") == (3, 6)
    with pytest.raises(DataError, match="W<bits>A<bits>"):
        runs.parse_bits("2-bit")


def test_units_cover_every_setting_and_method_once_plus_full_precision():
    ctx = Context("full", lowbit.ARTIFACT.scales["full"], 0, describe_cpu("test"))
    units = lowbit.units(ctx)
    assert len(units) == 3 * (1 + 4 * 4) and len({u.id for u in units}) == len(units)
    assert {u.params["bits"] for u in units} == {"W32A32", "W2A4", "W3A4", "W4A4", "W3A6"}
    assert {u.params["seed"] for u in units} == {0, 1, 2}


def test_quick_units_are_three_seeds_of_the_claims_rows_and_a_min_max_probe_longest_first():
    ctx = Context("quick", lowbit.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    units = lowbit.units(ctx)
    settings = {(u.params["bits"], u.params["method"]) for u in units}
    assert settings == {("W32A32", "fp"), ("W2A4", "minmax"), ("W2A4", "baseline"), ("W2A4", "omq_trd"),
                        ("W4A4", "minmax")}
    assert [u.params["seed"] for u in units].count(2) == 5
    assert {"fp", "fp-s1", "w4a4-minmax-s2"} <= {u.id for u in units}
    distilled = [k for k, u in enumerate(units) if u.params["method"] in ("baseline", "omq_trd")]
    assert distilled == list(range(len(distilled)))  # the longest units first, so two workers end together


def _record(bits, method, fid, seed=0, noise=None):
    metrics = {"fid": metric(fid, "FID"), "weight_bits": metric(2.0, "bit")}
    if noise is not None:
        metrics["noise_fid"] = metric(noise, "FID")
    return Record(paper="mpqdm", artifact="lowbit", unit=f"{bits}-{method}-s{seed}", scale="quick", status="ok",
                  config={}, seed=0, params={"bits": bits, "method": method, "seed": seed}, metrics=metrics,
                  data={"features": "proxy", "bit_allocation": {"a": 2.0, "b": 2.0}, "sample_grid": []})


def test_summary_measures_the_w2a4_fid_reduction_against_the_baseline():
    ctx = Context("quick", lowbit.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    records = [_record("W32A32", "fp", 3.0), _record("W2A4", "baseline", 10.0), _record("W2A4", "omq_trd", 4.2),
               _record("W4A4", "baseline", 5.0), _record("W4A4", "omq_trd", 4.0)]
    summary = lowbit.summarize(records, ctx)
    assert summary.measured == {"w2a4-fid-drop": pytest.approx(58.0)}
    assert summary.samples == {"w2a4-fid-drop": [pytest.approx(58.0)]} and not summary.withheld
    assert "fp" in set(summary.table["method"])


def _seeds(fp, baseline, omq_trd, probe, noise):
    """Records of three seeds: per seed the FIDs of the full-precision model, the W2A4 baseline and MPQ-DM, and
    the W4A4 min-max probe; the full-precision records carry noise images' FID."""
    return [record for seed in range(3) for record in (
        _record("W32A32", "fp", fp[seed], seed, noise), _record("W2A4", "baseline", baseline[seed], seed),
        _record("W2A4", "omq_trd", omq_trd[seed], seed), _record("W4A4", "minmax", probe[seed], seed))]


def test_the_reduction_is_judged_from_each_seeds_paired_reduction_when_floor_and_metric_hold():
    ctx = Context("quick", lowbit.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    summary = lowbit.summarize(_seeds([10, 11, 9], [40, 50, 30], [20, 20, 18], [14, 12, 13], 300), ctx)
    assert summary.samples["w2a4-fid-drop"] == [pytest.approx(50.0), pytest.approx(60.0), pytest.approx(40.0)]
    assert summary.measured["w2a4-fid-drop"] == pytest.approx(50.0) and not summary.withheld
    assert any(note.startswith("Learning floor: the full-precision model's FID 10.00 against noise images' 300")
               for note in summary.notes)
    row = summary.table[(summary.table["bits"] == "W2A4") & (summary.table["method"] == "baseline")].iloc[0]
    assert row["fid"] == 40.0 and row["fid_sd"] == pytest.approx(10.0) and row["seeds"] == 3


def test_a_full_precision_model_near_noise_is_below_the_learning_floor():
    ctx = Context("quick", lowbit.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    summary = lowbit.summarize(_seeds([100, 110, 90], [140, 150, 130], [120, 120, 118], [114, 112, 113], 300), ctx)
    assert summary.withheld["w2a4-fid-drop"].startswith("below the learning floor")
    assert "100 against noise images' 300" in summary.withheld["w2a4-fid-drop"]
    assert summary.measured["w2a4-fid-drop"] > 0  # still measured and shown


def test_a_quantized_model_that_beats_full_precision_in_every_seed_makes_the_metric_unreliable():
    ctx = Context("quick", lowbit.ARTIFACT.scales["quick"], 0, describe_cpu("test"))
    summary = lowbit.summarize(_seeds([16, 17, 18], [40, 50, 30], [20, 20, 18], [4, 3.5, 5], 300), ctx)
    reason = summary.withheld["w2a4-fid-drop"]
    assert reason.startswith("metric unreliable at this scale: W4A4 minmax scores better") and "3 seeds" in reason
    assert "W2A4 baseline" not in reason  # worse than full precision, as it should be


@pytest.fixture
def full_scale_fakes(fake_full_data, tmp_path, monkeypatch):
    """A diffusers-format UNet folder and a stand-in for the FID Inception weights (random, same layout)."""
    folder = tmp_path / "ddpm"
    tiny_unet(sample_size=32, in_channels=3, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
              ).save_pretrained(folder)
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(InceptionFeatures(num_classes=1008, fid_blocks=True).state_dict(), weights)
    monkeypatch.setattr(diffusion_quality, "fetch", lambda name, download=True: {weights.name: weights})
    return folder


def test_full_scale_unit_runs_on_the_real_formats(full_scale_fakes):
    config = {**lowbit.ARTIFACT.scales["full"], "pretrained": str(full_scale_fakes), "distill_epochs": 1,
              "sample_steps": 2, "calib_samples": 2, "distill_batch": 2, "samples": 4, "sample_batch": 4,
              "reference_images": 6, "lora_rank": 2}
    ctx = Context("full", config, 0, describe_cpu("test"))
    unit = next(u for u in lowbit.units(ctx) if u.params["method"] == "omq_trd" and u.params["bits"] == "W2A4")
    outcome = runs.run_mpqdm_unit(unit, ctx)
    assert outcome.data["features"].startswith("FID Inception")
    assert outcome.data["model"] == {"source": str(full_scale_fakes)}
    assert 1.0 < outcome.metrics["weight_bits"]["value"] < 8.0
    assert outcome.data["bit_allocation"] and len(outcome.data["distill_loss"]) == 2


def test_a_missing_pretrained_model_is_one_clear_error(fake_full_data, tmp_path):
    config = {**lowbit.ARTIFACT.scales["full"], "pretrained": str(tmp_path / "nowhere")}
    with pytest.raises(DataError, match="cannot load the pretrained UNet"):
        runs.fp_model(config, None, torch.device("cpu"))


@pytest.fixture
def latent_pipeline(tmp_path, monkeypatch):
    """A tiny unconditional LDM in diffusers' pipeline format (UNet2DModel on 3 x 8 x 8 latents, a VQModel
    decoding them to 16 x 16 images), a reference folder of real-format PNGs, and stand-in Inception weights."""
    from diffusers import DDIMScheduler, LDMPipeline, VQModel
    from PIL import Image

    unet = tiny_unet(sample_size=8, in_channels=3, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
    vqvae = VQModel(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    num_vq_embeddings=16)
    LDMPipeline(vqvae=vqvae, unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "ldm")
    rng = np.random.default_rng(0)
    (tmp_path / "real" / "bedroom").mkdir(parents=True)
    for k in range(6):
        pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "real" / "bedroom" / f"{k}.png")
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(InceptionFeatures(num_classes=1008, fid_blocks=True).state_dict(), weights)
    monkeypatch.setattr(diffusion_quality, "fetch", lambda name, download=True: {weights.name: weights})
    return tmp_path


def test_full_scale_quantizes_a_latent_diffusion_pipeline_and_decodes_its_samples(latent_pipeline):
    config = {**lowbit.ARTIFACT.scales["full"], "pretrained": str(latent_pipeline / "ldm"), "dataset": "folder",
              "reference_folder": str(latent_pipeline / "real"), "side": 16, "distill_epochs": 1, "sample_steps": 2,
              "calib_samples": 2, "distill_batch": 2, "samples": 4, "sample_batch": 4, "reference_images": 6,
              "lora_rank": 2}
    ctx = Context("full", config, 0, describe_cpu("test"))
    unit = next(u for u in lowbit.units(ctx) if u.params["method"] == "omq_trd" and u.params["bits"] == "W2A4")
    outcome = runs.run_mpqdm_unit(unit, ctx)
    assert outcome.data["model"] == {"source": str(latent_pipeline / "ldm"), "pipeline": "LDMPipeline",
                                     "decoder": "VQModel"}
    assert np.asarray(outcome.data["sample_grid"]).shape == (4, 16, 16, 3)  # decoded pixels, not 8 x 8 latents
    assert 1.0 < outcome.metrics["weight_bits"]["value"] < 8.0 and np.isfinite(outcome.metrics["fid"]["value"])


def test_proxy_features_need_training_images(latent_pipeline):
    config = {**lowbit.ARTIFACT.scales["full"], "dataset": "folder", "features": "proxy",
              "reference_folder": str(latent_pipeline / "real"), "side": 16, "reference_images": 6}
    data = diffusion_quality.quality_data(config)
    with pytest.raises(DataError, match="use features = inception"):
        diffusion_quality.feature_extractor(config, data, torch.device("cpu"))


@pytest.mark.parametrize("kind", ["class-conditional", "unconditional"])
def test_full_scale_runs_a_compvis_ldm_checkpoint(kind, latent_pipeline, monkeypatch):
    """The cin256-v2 and lsun_bedrooms paths on tiny models of the same kinds (CompVis names, Lightning files)."""
    from tests.methods.diffusion.compvis_weights import ldm_betas, state_dict, write_lightning_checkpoint
    from tests.methods.diffusion.test_conditional import TINY, TINY_UNCOND

    reference = TINY if kind == "class-conditional" else TINY_UNCOND
    folder = latent_pipeline / "compvis"
    folder.mkdir()
    write_lightning_checkpoint(folder / "model.ckpt", {**state_dict(reference["shapes"]), "betas": ldm_betas()},
                               monkeypatch)
    architecture = {"name": "tiny", "unet": reference["spec"]["unet"], "first_stage": reference["spec"]["vq"],
                    "n_classes": reference["spec"]["n_classes"]}
    config = {**lowbit.ARTIFACT.scales["full"], "pretrained": str(folder), "ldm_architecture": architecture,
              "dataset": "folder", "reference_folder": str(latent_pipeline / "real"), "side": 16,
              "distill_epochs": 1, "sample_steps": 2, "calib_samples": 2, "distill_batch": 4, "samples": 4,
              "sample_batch": 3, "reference_images": 6, "lora_rank": 2}
    ctx = Context("full", config, 0, describe_cpu("test"))
    unit = next(u for u in lowbit.units(ctx) if u.params["method"] == "omq_trd" and u.params["bits"] == "W2A4")
    outcome = runs.run_mpqdm_unit(unit, ctx)
    assert outcome.data["model"]["format"] == "CompVis latent-diffusion checkpoint (tiny)"
    assert outcome.data["model"]["classes"] == (4 if reference is TINY else None)
    assert outcome.data["model"]["source"] == str(folder / "model.ckpt")
    assert np.asarray(outcome.data["sample_grid"]).shape == (4, 16, 16, 3)  # decoded by the VQ-f2 decoder
    assert 1.0 < outcome.metrics["weight_bits"]["value"] < 8.0 and np.isfinite(outcome.metrics["fid"]["value"])
    if reference is TINY_UNCOND:  # openaimodel's Conv1d attention stays in full precision, as in the public code
        assert not any(".attentions." in name for name in outcome.data["bit_allocation"])
    with pytest.raises(DataError, match=r"cannot use .*model.ckpt as a latent diffusion model: .*cin256-v2"):
        runs.fp_model({**config, "ldm_architecture": "cin256-v2"}, None, torch.device("cpu"))
    with pytest.raises(DataError, match="unknown LDM architecture 'cin512'"):
        runs.fp_model({**config, "ldm_architecture": "cin512"}, None, torch.device("cpu"))


def test_runs_of_the_papers_ldms_measure_their_table_leads_and_other_runs_do_not():
    ctx = Context("full", lowbit.ARTIFACT.scales["full"], 0, describe_cpu("test"))
    records = [_record("W2A4", "baseline", 20.0), _record("W2A4", "omq_trd", 11.5), _record("W3A6", "omq_trd", 7.0)]
    assert set(lowbit.summarize(records, ctx).measured) == {"w2a4-fid-drop"}  # a CIFAR-10 or MNIST run
    for record in records:
        record.data["model"] = {"format": "CompVis latent-diffusion checkpoint (cin256-v2)"}
        record.data["features"] = "FID Inception-v3 (pytorch-fid weights)"
    records[1].metrics["is"] = metric(136.0, "IS")
    measured = lowbit.summarize(records, ctx).measured
    assert measured["in256-w2a4-fid"] == 11.5 and measured["in256-w3a6-fid"] == 7.0
    assert measured["in256-w2a4-is"] == 136.0 and "in256-w3a6-is" not in measured  # not measured: not shown
    assert set(measured) <= {"w2a4-fid-drop", *lowbit.IMAGENET_LEADS}
    for record in records:
        record.data["model"] = {"format": "CompVis latent-diffusion checkpoint (lsun_bedrooms-ldm-vq-4)"}
    measured = lowbit.summarize(records, ctx).measured
    assert measured == {"w2a4-fid-drop": pytest.approx(42.5), "bed-w2a4-fid": 11.5,
                        "bed-w2a4-fid-gap": pytest.approx(8.5)}


def test_several_seeds_are_averaged_and_each_seeds_reduction_is_noted():
    config = {**lowbit.ARTIFACT.scales["quick"], "seeds": [0, 1]}
    ctx = Context("quick", config, 0, describe_cpu("test"))
    ids = [u.id for u in lowbit.units(ctx)]
    assert {"fp", "fp-s1", "w2a4-omq_trd", "w2a4-omq_trd-s1"} <= set(ids) and len(set(ids)) == len(ids)
    records = [_record("W32A32", "fp", 3.0), _record("W2A4", "baseline", 10.0), _record("W2A4", "omq_trd", 5.0),
               _record("W2A4", "baseline", 20.0, 1), _record("W2A4", "omq_trd", 18.0, 1)]
    summary = lowbit.summarize(records, ctx)
    row = summary.table[(summary.table["bits"] == "W2A4") & (summary.table["method"] == "omq_trd")].iloc[0]
    assert row["fid"] == 11.5 and row["seeds"] == 2
    assert summary.measured["w2a4-fid-drop"] == pytest.approx(30.0)  # the mean of the per-seed reductions
    assert any("per seed 50.0%, 10.0%" in note for note in summary.notes)
