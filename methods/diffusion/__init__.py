"""Diffusion models: tiny pixel-space UNets and schedules, DDPM training, DDIM sampling with a
pluggable (e.g. quantized) noise predictor, sample-quality metrics and their feature extractors;
class-conditional models with classifier-free guidance (``conditional``) and CompVis LDM
checkpoints converted to diffusers modules (``ldm_checkpoint``); fake quantization of UNets
(``quant``) and MPQ-DM's OMQ, TRD and distillation (``mpqdm``); RDD's x-predicting cosine
diffusion, progressive distillation and relational losses (``rdd``; its generic names carry an
``rdd_`` prefix here)."""

from methods.diffusion.conditional import (
    ClassConditionalUNet,
    PromptConditionalUNet,
    balanced_labels,
    class_condition,
    prompt_condition,
    random_class_groups,
)
from methods.diffusion.features import ExtractedFeatures, InceptionFeatures, ProxyClassifier, train_proxy
from methods.diffusion.metrics import (
    clip_score,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    precision_recall,
    sfid_from_features,
)
from methods.diffusion.models import ddim_scheduler, ddpm_scheduler, tiny_unet
from methods.diffusion.mpqdm import PRESETS as MPQDM_PRESETS
from methods.diffusion.mpqdm import (
    MethodPreset,
    MPQDMTrainer,
    OMQResult,
    OMQStorage,
    TimeSmoothedRelation,
    activation_absmax,
    apply_omq,
    collect_calibration_inputs,
    default_k_choices,
    kurtosis,
    omq_allocate,
    omq_channel_bits,
    omq_masks,
    omq_storage,
    prepare_quantized,
    relation_map,
    smoothing_factors,
    trd_loss,
    weight_absmax,
)
from methods.diffusion.quant import (
    FULL_PRECISION_NAMES,
    CalibrationBatch,
    ModelSize,
    QuantLayer,
    TemporalActivationQuantizer,
    WeightQuantizer,
    bit_allocation,
    calibrate,
    effective_bits,
    fake_quantize,
    init_range,
    is_full_precision_name,
    minmax_ptq,
    minmax_range,
    mse_range_search,
    quant_layers,
    quantize_model,
    round_ste,
    set_quant_state,
    set_step,
    stack_calibration,
    temporal_model_fn,
)
from methods.diffusion.rdd import (
    DistillRound,
    PDTarget,
    PixelQueue,
    ProjectionHead,
    RelationalDistillation,
    RelationalTerms,
    Samples,
    X0Model,
    cfd_loss,
    cosine_alpha_bar,
    distill_round,
    is_p2p_loss,
    m_p2p_loss,
    pd_target,
    pixel_relations,
    truncated_snr_loss,
)
from methods.diffusion.rdd import ddim as rdd_ddim
from methods.diffusion.rdd import ddim_step as rdd_ddim_step
from methods.diffusion.rdd import diffuse as rdd_diffuse
from methods.diffusion.rdd import predict as rdd_predict
from methods.diffusion.rdd import sample as rdd_sample
from methods.diffusion.rdd import train_base as rdd_train_base
from methods.diffusion.sampling import (
    Condition,
    cat_conditions,
    ddim_sample,
    ddim_trajectory,
    predict_eps,
    run_trajectory,
    slice_condition,
    unet_model_fn,
)
from methods.diffusion.training import lr_multiplier, shuffled_batches, train_ddpm

__all__ = [
    "ExtractedFeatures", "InceptionFeatures", "ProxyClassifier", "ddim_sample", "ddim_scheduler", "ddim_trajectory",
    "ddpm_scheduler", "feature_statistics", "fid_from_features", "frechet_distance", "inception_score",
    "lr_multiplier", "precision_recall", "run_trajectory", "sfid_from_features", "shuffled_batches", "tiny_unet",
    "train_ddpm", "train_proxy", "unet_model_fn", "Condition", "cat_conditions", "predict_eps", "slice_condition",
    # class-conditional models
    "ClassConditionalUNet", "PromptConditionalUNet", "balanced_labels", "class_condition", "prompt_condition",
    "random_class_groups", "clip_score",
    # quant
    "FULL_PRECISION_NAMES", "CalibrationBatch", "ModelSize", "QuantLayer", "TemporalActivationQuantizer",
    "WeightQuantizer",
    "bit_allocation", "calibrate", "effective_bits", "fake_quantize", "init_range", "is_full_precision_name",
    "minmax_ptq", "minmax_range", "mse_range_search", "quant_layers", "quantize_model", "round_ste",
    "set_quant_state", "set_step", "stack_calibration", "temporal_model_fn",
    # mpqdm
    "MPQDM_PRESETS", "MPQDMTrainer", "MethodPreset", "OMQResult", "OMQStorage", "TimeSmoothedRelation",
    "activation_absmax", "apply_omq", "collect_calibration_inputs", "default_k_choices", "kurtosis",
    "omq_allocate", "omq_channel_bits", "omq_masks", "omq_storage", "prepare_quantized", "relation_map",
    "smoothing_factors", "trd_loss", "weight_absmax",
    # rdd
    "DistillRound", "PDTarget", "PixelQueue", "ProjectionHead", "RelationalDistillation", "RelationalTerms", "Samples",
    "X0Model", "cfd_loss", "cosine_alpha_bar", "distill_round", "is_p2p_loss", "m_p2p_loss", "pd_target",
    "pixel_relations", "rdd_ddim", "rdd_ddim_step", "rdd_diffuse", "rdd_predict", "rdd_sample", "rdd_train_base",
    "truncated_snr_loss",
]
