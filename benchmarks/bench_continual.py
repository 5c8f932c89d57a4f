"""Continual learning (CLFD, FDINet, E2Net, eTag): one step of each method's training loop, on tiny networks.

- :class:`RehearsalStep`: one SGD step of ER, DER++ and ER-ACE (``methods.cl``), on a plain ResNet-18 and on
  CLFD's frequency-domain network (FFE + ResNet-18 + CFFS), in task 1 with a filled buffer, so that the replay
  loss, ER-ACE's masking and CLFD's class-aware selection all run; ``peakmem_`` for CLFD's memory claim.
- :class:`FdinetPass`: FDINet's forward + backward against the ResNet-18 it is compared with, at the paper's
  width ratio (ResNet-18 of base width ``w`` against branches of ``3w/8`` and ``9w/32``: 64 against 24 and 18).
- :class:`E2netSearch`: E2Net's representative-subnet search at a task boundary (``search_representative``).
- :class:`EtagGenerator`: one optimizer step of eTag's generator in task 1 (reconstruction, classification,
  KL and the distillation from the previous generator).

Images are seeded Gaussian tensors of a 16 x 16 Seq-CIFAR-10 stream; widths are a quarter of the paper's or less.
"""

import torch

from benchmarks.common import DEVICES, synchronize, torch_setup
from methods.cl import AuxiliaryResNet, ElasticResNet, ETag, ReservoirBuffer, search_representative
from methods.cl.elastic import CIFAR10_CHOICES
from methods.cl.incremental import frozen_copy
from reproduce.continual import LEARNERS, build_net, hyperparameters, stream_spec

SIDE = 16
WIDTH = 16
BATCH = 16
BUFFER_IMAGES = 50
STREAM = "seq-cifar10"


def _images(spec, n: int, classes: tuple[int, ...], generator: torch.Generator, device):
    """``n`` seeded (n, C, SIDE, SIDE) images and their labels, drawn uniformly from ``classes``."""
    x = torch.randn((n, spec.channels, spec.side, spec.side), generator=generator)
    y = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=generator)]
    return x.to(device), y.to(device)


class RehearsalStep:
    """One training step (forward, replay, backward, SGD, reservoir insertion) of a rehearsal learner."""

    params = (["er", "derpp", "erace"], ["plain", "clfd"], DEVICES)
    param_names = ["method", "network", "device"]
    version = "1"

    def setup(self, method, network, device):
        device, generator = torch_setup(device)
        spec = stream_spec(STREAM, SIDE)
        net = build_net(network, spec, {"width": WIDTH}, generator, device)
        # The buffer holds BUFFER_IMAGES images' bytes: CLFD's encoded items are a quarter of an image.
        side = spec.side // net.downsample
        buffer = ReservoirBuffer.from_bytes(BUFFER_IMAGES * spec.channels * spec.side ** 2 * 4,
                                            (3 if network == "clfd" else spec.channels, side, side))
        hyper = hyperparameters(STREAM, method, BUFFER_IMAGES)
        extra = {key: hyper[key] for key in ("alpha", "beta") if key in hyper}
        self.learner = LEARNERS[method](net, lr=hyper["lr"], generator=generator, buffer=buffer, minibatch=BATCH,
                                        **extra)
        first, second = (0, 1), (2, 3)
        # Task 0 (one epoch: CLFD freezes its encoder, so the buffer fills), then task 1's second epoch.
        self.learner.begin_task(0, first, 1)
        self.learner.begin_epoch(0)
        for _ in range(4):
            x, y = _images(spec, BATCH, first, generator, device)
            self.learner.observe(x, y, x)
        self.learner.end_epoch(0)
        self.learner.begin_task(1, second, 2)
        self.learner.begin_epoch(0)
        self.x, self.y = _images(spec, BATCH, second, generator, device)
        self.learner.observe(self.x, self.y, self.x)
        self.learner.end_epoch(0)
        self.learner.begin_epoch(1)
        self.device = device

    def time_step(self, method, network, device):
        self.learner.observe(self.x, self.y, self.x)
        synchronize(self.device)

    def peakmem_step(self, method, network, device):
        self.learner.observe(self.x, self.y, self.x)


class FdinetPass:
    """Forward + backward of a batch through FDINet (two branches on the Haar bands) or the ResNet-18 it replaces."""

    params = (["resnet18", "fdinet"], [8, 32], DEVICES)
    param_names = ["network", "batch", "device"]
    version = "1"

    def setup(self, network, batch, device):
        device, generator = torch_setup(device)
        spec = stream_spec(STREAM, SIDE)
        # The paper's ratio: FDINet's branches are 24 and 18 wide where the ResNet-18 is 64 wide.
        config = {"width": WIDTH, "low_width": WIDTH * 24 // 64, "high_width": WIDTH * 18 // 64}
        self.net = build_net("plain" if network == "resnet18" else "fdinet", spec, config, generator, device).train()
        self.x, self.y = _images(spec, batch, tuple(range(spec.n_classes)), generator, device)
        self.device = device

    def time_forward_backward(self, network, batch, device):
        self.net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(self.net(self.x), self.y).backward()
        synchronize(self.device)

    def peakmem_forward_backward(self, network, batch, device):
        self.net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(self.net(self.x), self.y).backward()


class E2netSearch:
    """E2Net's representative-subnet search: sort channels, score ``candidates`` sampled subnets on the probe."""

    params = ([10, 40], DEVICES)
    param_names = ["candidates", "device"]
    version = "1"

    def setup(self, candidates, device):
        device, generator = torch_setup(device)
        spec = stream_spec(STREAM, SIDE)
        self.net = ElasticResNet(spec.n_classes, WIDTH, spec.channels, expand_ratios=CIFAR10_CHOICES,
                                 width_mults=CIFAR10_CHOICES, block="basic").to(device)
        self.probe = torch.randn((BATCH, spec.channels, SIDE, SIDE), generator=generator).to(device)
        self.seed = generator.initial_seed()

    def time_search(self, candidates, device):
        # Stage 1 of E2Net's schedule (the subnets of the first elastic stage), a fresh generator per call.
        search_representative(self.net, self.probe, 1, torch.Generator().manual_seed(self.seed), candidates)


class EtagGenerator:
    """One Adam step of eTag's conditional VAE in task 1, the network frozen, distilled from task 0's generator."""

    params = ([16, 64], DEVICES)
    param_names = ["batch", "device"]
    version = "1"

    def setup(self, batch, device):
        device, generator = torch_setup(device)
        spec = stream_spec("seq-cifar100", SIDE)
        net = AuxiliaryResNet(spec.n_classes, WIDTH, spec.channels).to(device)
        self.learner = ETag(net, generator=generator, generator_epochs=1, synthetic_batch=batch,
                            hidden=4 * WIDTH, latent=2 * WIDTH)
        classes = list(range(spec.n_classes))
        self.learner.begin_task(0, classes[:50])
        self.learner.begin_task(1, classes[50:60])
        self.previous = frozen_copy(self.learner.cvae)
        self.optimizer = torch.optim.Adam(self.learner.cvae.parameters(), lr=self.learner.generator_lr)
        self.learner.cvae.train()
        self.x, self.y = _images(spec, batch, tuple(classes[50:60]), generator, device)
        self.device = device

    def time_generator_step(self, batch, device):
        terms = self.learner.generator_losses(self.x, self.y, self.previous)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        synchronize(self.device)
