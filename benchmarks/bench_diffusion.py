"""Diffusion (MPQ-DM, RDD): the quantized UNet, OMQ, TRD distillation, DDIM sampling and RDD's relational loss.

- :class:`QuantizedUnet`: one forward of a tiny pixel-space UNet (``methods.diffusion.models.tiny_unet``)
  fake-quantized and calibrated by MPQ-DM's ``prepare_quantized`` (OMQ + QA-LoRA) at each bit setting
  of the paper's tables, against the full-precision UNet (``W32A32``).
- :class:`OmqAllocation`: OMQ on one convolution (smoothing, per-channel kurtosis, the group-size search
  by output MSE; ``omq_allocate``), at the base weight widths of the tables.
- :class:`TrdDistillation`: one TRD window of MPQ-DM's data-free distillation (``MPQDMTrainer.distill_step`` on
  two DDIM steps, the TRD term added at the window's end), with and without TRD.
- :class:`DdimStep`: one DDIM step: the noise-predicting model's (``ddim_sample`` with one step, MPQ-DM's
  sampler) and RDD's x-predicting one (``rdd.ddim_step``).
- :class:`RelationalLoss`: RDD's CFD + IS_P2P + M_P2P on a proxy classifier, forward and backward.

Images are 1 x 16 x 16 (MNIST-sized models at a quarter of the side), seeded Gaussian noise.
"""

import torch

from benchmarks.common import DEVICES, synchronize, torch_setup
from methods.diffusion.features import ProxyClassifier
from methods.diffusion.models import ddim_scheduler, tiny_unet
from methods.diffusion.mpqdm import MPQDMTrainer, collect_calibration_inputs, omq_allocate, prepare_quantized
from methods.diffusion.quant import QuantLayer, set_step
from methods.diffusion.rdd import RelationalDistillation, X0Model, ddim_step
from methods.diffusion.sampling import ddim_sample

SIDE = 16
CHANNELS = (16, 32)
BATCH = 4
STEPS = 2  # DDIM steps of the temporal activation quantizers (and of the calibration trajectory)
BITS = {"W32A32": None, "W8A8": (8, 8), "W4A8": (4, 8), "W3A6": (3, 6), "W2A4": (2, 4)}


def _unet(device):
    """The seeded tiny UNet in eval mode, its DDIM scheduler, and a noise batch (BATCH, 1, SIDE, SIDE)."""
    unet = tiny_unet(SIDE, 1, CHANNELS, layers_per_block=1, seed=0).to(device).eval()
    noise = torch.randn((BATCH, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(1)).to(device)
    return unet, ddim_scheduler(), noise


def _quantized(unet, scheduler, noise, w_bits: int, a_bits: int):
    """MPQ-DM's quantized copy of ``unet`` (OMQ, rank-4 QA-LoRA, "max" ranges), calibrated on a DDIM trajectory."""
    calib = collect_calibration_inputs(unet, scheduler, noise, STEPS, generator=torch.Generator().manual_seed(2))
    model, _ = prepare_quantized(unet, "omq_trd", w_bits, a_bits, STEPS, calib, lora_rank=4, omq_samples=BATCH,
                                 weight_method="max", act_method="max")
    return model.eval()


class QuantizedUnet:
    """One forward pass (no gradient) of the UNet at a bit setting; ``W32A32`` is the full-precision model."""

    params = (list(BITS), DEVICES)
    param_names = ["bits", "device"]
    version = "1"

    def setup(self, bits, device):
        device, _ = torch_setup(device)
        unet, scheduler, self.x = _unet(device)
        self.model = unet if BITS[bits] is None else _quantized(unet, scheduler, self.x, *BITS[bits])
        if BITS[bits] is not None:
            set_step(self.model, 0)
        self.t = torch.full((BATCH,), 500, dtype=torch.long, device=device)
        self.device = device

    def time_forward(self, bits, device):
        with torch.no_grad():
            self.model(self.x, self.t)
        synchronize(self.device)


class OmqAllocation:
    """OMQ's allocation for one 3x3 convolution of ``channels`` in and out channels, on an (8, C, 16, 16) batch."""

    params = ([2, 3, 4], [32, 128])
    param_names = ["bits", "channels"]
    version = "1"

    def setup(self, bits, channels):
        _, generator = torch_setup()
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.layer = QuantLayer(conv, bits, 8, 1)
        # Activations with a few outlier channels, the case OMQ's smoothing is for.
        self.inputs = torch.randn((8, channels, SIDE, SIDE), generator=generator)
        self.inputs[:, :: max(1, channels // 4)] *= 20.0

    def time_allocate(self, bits, channels):
        omq_allocate(self.layer, self.inputs, bits, weight_method="max")


class TrdDistillation:
    """One TRD window (two ``distill_step`` calls) of W3A6 MPQ-DM distillation along the full-precision trajectory."""

    params = ([False, True], DEVICES)
    param_names = ["trd", "device"]
    version = "1"

    def setup(self, trd, device):
        device, _ = torch_setup(device)
        unet, self.scheduler, self.x = _unet(device)
        quantized = _quantized(unet, self.scheduler, self.x, 3, 6)
        self.trainer = MPQDMTrainer(unet, quantized, self.scheduler, n_steps=STEPS, trd=trd)
        self.scheduler.set_timesteps(STEPS)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]
        self.device = device

    def time_window(self, trd, device):
        for step, t in enumerate(self.timesteps):
            self.trainer.distill_step(self.x, t, step)
        synchronize(self.device)


class DdimStep:
    """One DDIM step of a BATCH of samples: MPQ-DM's noise-predicting sampler, RDD's x-predicting one."""

    params = (["eps", "x0"], DEVICES)
    param_names = ["model", "device"]
    version = "1"

    def setup(self, model, device):
        device, _ = torch_setup(device)
        self.unet, self.scheduler, self.z = _unet(device)
        self.x0_model = X0Model(self.unet, base_steps=64).to(device)
        self.device = device

    def time_step(self, model, device):
        with torch.no_grad():
            if model == "eps":
                ddim_sample(self.unet, self.scheduler, BATCH, steps=1, generator=torch.Generator().manual_seed(3),
                            batch_size=BATCH)
            else:
                ddim_step(self.x0_model, self.z, 2, 1, 2)
        synchronize(self.device)


class RelationalLoss:
    """RDD's relational terms of a student's x_hat against the PD target, forward and backward."""

    params = ([8, 32], DEVICES)
    param_names = ["batch", "device"]
    version = "1"

    def setup(self, batch, device):
        device, generator = torch_setup(device)
        classifier = ProxyClassifier(in_channels=1, width=16).to(device)
        self.loss = RelationalDistillation(classifier, memory_size=4096, contrast_size=1024).to(device).train()
        self.target = torch.rand((batch, 1, SIDE, SIDE), generator=generator).to(device) * 2 - 1
        self.student = (self.target + 0.1 * torch.randn(self.target.shape, generator=generator).to(device))
        self.student.requires_grad_(True)
        self.generator = generator
        self.device = device

    def time_loss(self, batch, device):
        self.loss(self.student, self.target, generator=self.generator).total.backward()
        synchronize(self.device)
