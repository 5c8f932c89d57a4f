"""Tensors the methods create follow the device of their inputs (issue: every artifact's CUDA path).

Checked on PyTorch's ``meta`` device, which, like a GPU, refuses to mix its tensors with CPU ones:
a function that creates a CPU tensor and combines it with its (meta) inputs raises here as it
would on CUDA. Random draws stay on the CPU generators (so a seed gives the same draws on any
device) and are moved. Functions with data-dependent steps (``.item()``, boolean masks), which
the meta device cannot run, are left to the first run on a GPU (``.ci/gpu_check.sh``).
"""

import torch

from methods.detection.inversion import InversionConfig, _augment
from methods.diffusion.conditional import class_condition
from methods.pruning.flops import conv_output_sizes
from methods.pruning.lenet import LeNet5

META = torch.device("meta")


def test_inversion_augmentation_stays_on_the_images_device():
    images = torch.zeros(2, 3, 32, 32, device=META)
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0], [0.0, 0.0, 31.0, 31.0]], device=META)
    config = InversionConfig(resolution=32, flip=True, brightness=0.2, erase_probability=1.0)
    for seed in range(4):  # every branch: flips, no flips, brightness, erasing
        out_images, out_boxes = _augment(images, boxes, config, torch.Generator().manual_seed(seed))
        assert out_images.device == META and out_boxes.device == META


def test_class_condition_keeps_the_labels_device():
    condition = class_condition(torch.tensor([0, 3], device=META), 1.5)
    assert condition["class_labels"].device == META and condition["guidance_scale"].device == META


def test_conv_output_sizes_probes_on_the_models_device():
    assert conv_output_sizes(LeNet5().to(META)) == conv_output_sizes(LeNet5())
