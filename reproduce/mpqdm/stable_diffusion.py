"""MPQ-DM on Stable Diffusion v1.4: CLIP score of the baseline and MPQ-DM at W2A6 (paper: Table 4).

Each unit quantizes Stable Diffusion's UNet at W2A6 with one method of the LDM rows
(:mod:`reproduce.mpqdm.runs`: the baseline, i.e. MPQ-DM's quantizer and QA-LoRA distillation without OMQ
and TRD, or MPQ-DM, OMQ + TRD), or keeps it in full precision, then samples one 512 x 512 image per
prompt and scores it with CLIP (:mod:`reproduce.mpqdm.text_to_image`). The methods of one seed share
calibration, distillation and sampling noise, so the CLIP-score gain of MPQ-DM over the baseline is
taken per seed. Both claims are a secondary summary's reading of Table 4 (unverified): shown next to
the measurement, never judged.

- ``full``: CompVis/stable-diffusion-v1-4 with 1,000 COCO 2014 validation captions (the paper: 10,000;
  ``--set prompt_count=10000``), 20 DDIM steps at guidance 7.5, 800 distillation epochs, one seed, on a
  CUDA GPU. It needs the ``transformers`` package (Stable Diffusion's text encoder, the CLIP score
  model), the pipeline's weights and the captions file; a unit names whichever are missing.
- ``smoke``: the same path on a tiny randomly initialised pipeline with stand-in text and CLIP
  encoders (no ``transformers`` needed); seconds, nothing measured.
"""

from __future__ import annotations

import pandas as pd

from reproduce.harness.artifact import Artifact, Context, Summary, Unit
from reproduce.harness.records import Record
from reproduce.mpqdm.lowbit import plot_samples
from reproduce.mpqdm.runs import METHODS
from reproduce.mpqdm.text_to_image import COCO_CAPTIONS, run_text_to_image_unit

CLIP_CLAIM, GAP_CLAIM = "sd-w2a6-clip", "sd-w2a6-clip-gap"
CLAIM_BITS = "W2A6"


def units(ctx: Context) -> list[Unit]:
    """Per seed: each bit setting x quantized method (distilled ones first), then the full-precision model."""
    config = ctx.config
    quantized = [m for m in config["methods"] if m != "fp"]
    order = [(bits, method) for bits in config["bits"] for method in quantized]
    order += [("W32A32", "fp")] if "fp" in config["methods"] else []
    return [Unit(("fp" if method == "fp" else f"{bits.lower()}-{method}") + (f"-s{seed}" if seed else ""),
                 {"bits": bits, "method": method, "seed": seed}) for bits, method in order for seed in config["seeds"]]


def summarize(records: list[Record], ctx: Context) -> Summary:
    """Mean CLIP score per (bits, method) over seeds; at W2A6, MPQ-DM's score and its per-seed gain over the
    baseline's (measured beyond smoke, whose models and CLIP are random stand-ins)."""
    rows = pd.DataFrame([{"bits": r.params["bits"], "method": r.params["method"], "seed": r.params.get("seed", 0),
                          "clip_score": float(r.value("clip_score"))} for r in records if r.status == "ok"])
    grouped = rows.groupby(["bits", "method"], sort=False)["clip_score"]
    table = grouped.agg(clip_score="mean", clip_sd="std", seeds="count").reset_index()
    table["method"] = pd.Categorical(table["method"], METHODS, ordered=True)
    table = table.sort_values(["bits", "method"]).reset_index(drop=True)
    first = next(r for r in records if r.status == "ok")
    notes = [f"Model: {first.data['model']['source']}; CLIP: {first.data['clip_model']}; "
             f"{first.data['model']['prompts']} prompts, one image each; DDIM {ctx.config['sample_steps']} steps at "
             f"guidance {ctx.config['guidance_sample']}; distillation {ctx.config['distill_epochs']} epochs."]
    measured, samples = {}, {}
    scores = rows[rows["bits"] == CLAIM_BITS].pivot_table(index="seed", columns="method", values="clip_score")
    if "omq_trd" in scores and ctx.scale != "smoke":
        measured[CLIP_CLAIM], samples[CLIP_CLAIM] = float(scores["omq_trd"].mean()), scores["omq_trd"].dropna().tolist()
    if {"omq_trd", "baseline"} <= set(scores.columns):
        gain = (scores["omq_trd"] - scores["baseline"]).dropna()
        notes.append(f"{CLAIM_BITS}: MPQ-DM's CLIP score is {gain.mean():+.3f} against the baseline's (per seed "
                     f"{', '.join(f'{g:+.3f}' for g in gain)}).")
        if ctx.scale != "smoke" and not gain.empty:
            measured[GAP_CLAIM], samples[GAP_CLAIM] = float(gain.mean()), gain.tolist()
    return Summary(table=table, measured=measured, samples=samples, notes=notes,
                   figures=[("Samples (first 16 prompts of each unit, first seed)", plot_samples(records))])


COMMON = {"bits": [CLAIM_BITS], "methods": ["baseline", "omq_trd", "fp"], "seeds": [0], "lora_rank": 32,
          "weight_init": "mse", "act_init": "mse", "guidance_calibration": 7.5, "guidance_train": 7.5,
          "guidance_sample": 7.5, "classes_per_batch": 4, "clip_model": "openai/clip-vit-large-patch14"}

ARTIFACT = Artifact(
    paper="mpqdm",
    name="stable_diffusion",
    title="Text-to-image with Stable Diffusion v1.4 at W2A6: CLIP score of the baseline and MPQ-DM (MPQ-DM)",
    claims=(CLIP_CLAIM, GAP_CLAIM),
    scales={
        "smoke": {**COMMON, "text_encoder": "stand-in", "pretrained": None, "builtin_prompts": True, "prompt_count": 4,
                  "tiny_pipeline": {"latent_side": 8, "channels": [8, 16], "text_width": 16}, "lora_rank": 2,
                  "sample_steps": 3, "calib_samples": 4, "distill_epochs": 1, "distill_batch": 4,
                  "classes_per_batch": 2, "sample_batch": 4, "cpu_threads": 1},
        "full": {**COMMON, "text_encoder": "clip", "pretrained": "CompVis/stable-diffusion-v1-4", "download": True,
                 "prompts": None, "prompt_count": 1000, "sample_steps": 20, "calib_samples": 32,
                 "distill_epochs": 800, "distill_batch": 4, "sample_batch": 8},
    },
    needs={
        "smoke": "nothing: a tiny random pipeline written to the cache; seconds.",
        "full": "the transformers package (Stable Diffusion's text encoder and CLIP), CompVis/stable-diffusion-v1-4 "
                f"(hub or a local diffusers folder), --prompts with {COCO_CAPTIONS}, and a CUDA GPU.",
    },
    options={
        "--pretrained": {"metavar": "MODEL", "help": "a Stable Diffusion pipeline in the diffusers layout: hub id or "
                         "local folder (default CompVis/stable-diffusion-v1-4)"},
        "--prompts": {"metavar": "FILE", "help": "COCO captions JSON (captions_val2014.json) or one prompt per line"},
        "--seeds": {"type": int, "nargs": "+", "metavar": "SEED", "help": "seeds of the quantized units"},
    },
    units=units,
    run_unit=run_text_to_image_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
