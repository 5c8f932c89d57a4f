"""Rehearsal continual learning: task streams, backbones, a reservoir buffer, ER, DER++, ER-ACE, metrics,
the regularisation baselines oEWC and SI, mammoth's LwF, CLS-ER, the frequency-domain methods CLFD and
FDINet, E2Net on its elastic ResNet, and the exemplar-free class-incremental eTag with its fine-tuning and
LwF baselines, and the herding exemplar memory of the baselines that store images."""

from methods.cl.backbones import ResNet, count_parameters, resnet18
from methods.cl.buffer import ReservoirBuffer, capacity_for_bytes
from methods.cl.clfd import ClassAwareSelection, CLFDNet, FrequencyEncoder
from methods.cl.clser import CLSER, consistency_targets
from methods.cl.derpp import DERPP
from methods.cl.e2net import E2Net, sample_config, search_representative, stage_schedule
from methods.cl.elastic import CIFAR10_CHOICES, CIFAR100_CHOICES, ElasticResNet, SubnetConfig, SubnetResNet
from methods.cl.er import ER, ERACE, Augmentation, Learner
from methods.cl.etag import AuxiliaryResNet, ETag, FeatureCVAE, rotate_batch, table_c6_parameters, torchvision_init_
from methods.cl.exemplar_free import FineTune, LwF
from methods.cl.exemplars import ExemplarLearner, ExemplarMemory, herding_order
from methods.cl.fdinet import FDINet
from methods.cl.incremental import (
    AdamSchedule,
    IncrementalLearner,
    IncrementalResult,
    average_incremental_accuracy,
    class_splits,
    evaluate_seen,
    old_task_factor,
    train_incremental,
)
from methods.cl.lwf_warmup import WarmupLwF
from methods.cl.metrics import backward_transfer, final_average_accuracy, forgetting
from methods.cl.model import ContinualNet, PlainNet
from methods.cl.regularization import SI, OnlineEWC, QuadraticPenalty
from methods.cl.streams import STREAMS, StreamSpec, Task, black_level, random_crop_flip, split_tasks, to_tensor
from methods.cl.training import StreamResult, evaluate, joint_tasks, train_stream
from methods.cl.wavelets import DWT2d

__all__ = [
    "CIFAR10_CHOICES", "CIFAR100_CHOICES", "DERPP", "ER", "ERACE", "STREAMS", "AdamSchedule", "Augmentation",
    "AuxiliaryResNet", "CLFDNet", "ClassAwareSelection", "ContinualNet", "DWT2d", "E2Net", "ETag", "ElasticResNet",
    "FDINet", "FeatureCVAE", "FineTune", "FrequencyEncoder", "IncrementalLearner", "IncrementalResult", "Learner",
    "LwF", "PlainNet", "ResNet", "ReservoirBuffer", "StreamResult", "StreamSpec", "SubnetConfig", "SubnetResNet",
    "Task", "average_incremental_accuracy", "backward_transfer", "black_level", "capacity_for_bytes", "class_splits",
    "count_parameters", "evaluate", "evaluate_seen", "final_average_accuracy", "forgetting", "joint_tasks",
    "old_task_factor", "random_crop_flip", "resnet18", "rotate_batch", "sample_config", "search_representative",
    "split_tasks", "stage_schedule", "table_c6_parameters", "to_tensor", "torchvision_init_", "train_incremental",
    "train_stream",
    # the CLFD table's baselines
    "CLSER", "SI", "OnlineEWC", "QuadraticPenalty", "WarmupLwF", "consistency_targets",
    # the herding memory of the exemplar-based baselines of eTag's tables
    "ExemplarLearner", "ExemplarMemory", "herding_order",
]
