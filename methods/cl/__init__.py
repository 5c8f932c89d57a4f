"""Rehearsal continual learning: task streams, backbones, a reservoir buffer, ER, DER++, ER-ACE,
metrics, and the frequency-domain methods CLFD and FDINet."""

from methods.cl.backbones import ResNet, count_parameters, resnet18
from methods.cl.buffer import ReservoirBuffer, capacity_for_bytes
from methods.cl.clfd import ClassAwareSelection, CLFDNet, FrequencyEncoder
from methods.cl.derpp import DERPP
from methods.cl.er import ER, ERACE, Augmentation, Learner
from methods.cl.fdinet import FDINet
from methods.cl.metrics import backward_transfer, final_average_accuracy, forgetting
from methods.cl.model import ContinualNet, PlainNet
from methods.cl.streams import STREAMS, StreamSpec, Task, black_level, random_crop_flip, split_tasks, to_tensor
from methods.cl.training import StreamResult, evaluate, joint_tasks, train_stream
from methods.cl.wavelets import DWT2d

__all__ = [
    "DERPP", "DWT2d", "ER", "ERACE", "STREAMS", "Augmentation", "CLFDNet", "ClassAwareSelection", "ContinualNet",
    "FDINet", "FrequencyEncoder", "Learner", "PlainNet", "ReservoirBuffer", "ResNet", "StreamResult", "StreamSpec",
    "Task", "backward_transfer", "black_level", "capacity_for_bytes", "count_parameters", "evaluate",
    "final_average_accuracy", "forgetting", "joint_tasks", "random_crop_flip", "resnet18", "split_tasks",
    "to_tensor", "train_stream",
]
