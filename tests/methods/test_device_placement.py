"""Tensors the methods create follow the device of their inputs: every model family the artifacts
build, forward and backward, and the helpers that draw or build tensors of their own.

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


def _models():
    """Every model family the artifacts build, small, with an input of its kind (all on the CPU)."""
    from methods.cl.backbones import resnet18
    from methods.cl.elastic import ElasticResNet
    from methods.cl.etag import AuxiliaryResNet, FeatureCVAE
    from methods.cl.fdinet import FDINet
    from methods.detection.detector import gfl_detector
    from methods.diffusion.models import tiny_unet

    images = torch.rand(2, 3, 32, 32)
    return {
        "resnet18 (CLFD, DER++, ER-ACE)": (resnet18(10, width=8), (images,)),
        "FDINet": (FDINet(10, 3, torch.zeros(3)), (images,)),
        "E2Net's elastic ResNet": (ElasticResNet(10, width=8), (images,)),
        "eTag's auxiliary ResNet": (AuxiliaryResNet(10, width=8), (images,)),
        "eTag's feature CVAE": (FeatureCVAE(64, 10, 32, 16), (torch.rand(4, 64), torch.tensor([0, 1, 2, 3]))),
        "GFL detector (EGOR)": (gfl_detector(3, "small", width=8), (torch.rand(2, 3, 64, 64),)),
        "UNet (MPQ-DM, RDD)": (tiny_unet(sample_size=16, in_channels=1, block_out_channels=(8, 16), norm_num_groups=4),
                               (torch.rand(2, 1, 16, 16), torch.tensor([3, 4]))),
        "LeNet-5 (GA pruning)": (LeNet5(), (torch.rand(2, 1, 28, 28),)),
    }


def _first_tensor(output):
    """The first tensor of a model's output (a tensor, a tuple or list, or an output object)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple):
        return _first_tensor(output[0])
    return _first_tensor(next(value for value in vars(output).values() if isinstance(value, torch.Tensor | list)))


def test_every_model_runs_forward_and_backward_on_its_inputs_device():
    """Each model family's forward and backward create no tensor off their inputs' device: run on ``meta``
    (the weights and inputs moved there), a CPU tensor made inside would raise as it would on a GPU."""
    for name, (model, inputs) in _models().items():
        model = model.to(META)
        output = _first_tensor(model(*(tensor.to(META) for tensor in inputs)))
        assert output.device == META, name
        output.float().sum().backward()
        assert all(p.grad is None or p.grad.device == META for p in model.parameters()), name
