"""Data-free replay by model inversion: synthetic old-class images from a frozen old model.

Shared by ABD (Smith et al., ICCV 2021; :mod:`methods.cl.abd`) and R-DFCIL (Gao et al.,
ECCV 2022; :mod:`methods.cl.rdfcil`), which builds on ABD's inversion. Written from the
papers, with the details they leave open settled from the published implementations (ABD's
``Teacher`` and CIFAR generator; R-DFCIL's ``GenerativeInversion``, which follows it).

A generator ``G`` (:class:`InversionGenerator`, DCGAN-like, ``z ~ N(0, I)`` of size 1000) is
trained against the frozen old model ``M`` (restricted to the old classes' logits) by

    L_inv = CE(M(x_hat) / tau, argmax M(x_hat))                  content (pseudo-label)
          + 1 + sum_k p_k log p_k / log K                        class balance (diversity:
                                                                 ABD's information entropy),
                                                                 p = batch mean of softmax(M(x_hat))
          + alpha_pr * MSE(x_hat, blur(x_hat))                   smoothness prior
          + alpha_rf * mean_l KL(N(mu_l, s2_l) || N(mu_hat_l, s2_hat_l))   batch-norm statistics,

the last over every batch norm ``l`` of ``M``: ``mu_l``, ``s2_l`` its running mean and variance,
``mu_hat_l``, ``s2_hat_l`` the batch mean and variance of its input on ``x_hat`` (the KL per
channel, averaged over channels; :func:`batchnorm_statistics_loss`). The generator is
unconditional: a synthetic image's class is the old model's argmax over the old classes.
Both published implementations use ``tau`` 1000, ``alpha_pr`` 1e-3, ``alpha_rf`` 50, Adam at
1e-3 and batches of 128 (ABD: 10,000 steps per task; R-DFCIL: 5,000).

:func:`cross_entropy_over` is the "local" cross-entropy both methods train new classes with.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.incremental import IncrementalLearner, frozen_copy


def cross_entropy_over(logits: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor,
                       weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``(B, n_classes)`` logits restricted to the columns ``classes`` ``(K,)``.

    With ``classes`` the current task's, this is the local CE of ABD and R-DFCIL: the logits
    of every other class take no part, so their gradient is zero. ``weight`` ``(K,)`` weights
    each class (a weighted mean, as ``F.cross_entropy``); ``reduction="none"`` returns the
    ``(B,)`` per-row terms. Every label must be in ``classes``.
    """
    matches = labels[:, None] == classes[None, :]
    if not matches.any(1).all():
        raise ValueError("a label is outside the classes the cross-entropy covers")
    return F.cross_entropy(logits[:, classes], matches.float().argmax(1), weight=weight, reduction=reduction)


class InversionGenerator(nn.Module):
    """The generator of the model inversion (the published CIFAR generator, from ABD): ``z`` -> image.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)`` of the images to synthesise.
    latent : int
        Size of ``z``: 1000.
    hidden : int
        Channels of the first convolutions: 128 (the last hidden layer has ``hidden // 2``).

    Notes
    -----
    ``Linear(latent, hidden * h0 * w0)`` with ``h0 = ceil(H/4)``, batch norm, nearest upsampling
    to ``ceil(H/2)``, conv 3x3 + batch norm + LeakyReLU(0.2), upsampling to ``H``, conv 3x3
    to ``hidden // 2`` + batch norm + LeakyReLU, conv 3x3 to ``C``, tanh, and a final batch
    norm without affine parameters. The two inner batch norms have ``eps = 0.8``, as published
    (DCGAN code's ``BatchNorm2d(c, 0.8)``, where 0.8 lands on ``eps``).
    """

    def __init__(self, image_shape: Sequence[int], latent: int = 1000, hidden: int = 128):
        super().__init__()
        channels, height, width = (int(s) for s in image_shape)
        self.latent = latent
        self.hidden = hidden
        self.sizes = [(math.ceil(height / 4), math.ceil(width / 4)), (math.ceil(height / 2), math.ceil(width / 2)),
                      (height, width)]
        self.project = nn.Linear(latent, hidden * self.sizes[0][0] * self.sizes[0][1])
        self.bn0 = nn.BatchNorm2d(hidden)
        self.block1 = nn.Sequential(nn.Conv2d(hidden, hidden, 3, 1, 1), nn.BatchNorm2d(hidden, 0.8),
                                    nn.LeakyReLU(0.2))
        self.block2 = nn.Sequential(nn.Conv2d(hidden, hidden // 2, 3, 1, 1), nn.BatchNorm2d(hidden // 2, 0.8),
                                    nn.LeakyReLU(0.2), nn.Conv2d(hidden // 2, channels, 3, 1, 1), nn.Tanh(),
                                    nn.BatchNorm2d(channels, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, latent)`` -> ``(N, C, H, W)``."""
        out = self.bn0(self.project(z).view(len(z), self.hidden, *self.sizes[0]))
        out = self.block1(F.interpolate(out, size=self.sizes[1]))
        return self.block2(F.interpolate(out, size=self.sizes[2]))


def class_balance(logits: torch.Tensor) -> torch.Tensor:
    """``1 + sum_k p_k log p_k / log K``, ``p`` the batch mean of ``softmax(logits)`` ``(N, K)``: 0 when uniform."""
    if logits.shape[1] < 2:
        return logits.new_zeros(())
    mean = F.softmax(logits, 1).mean(0)
    return 1 + (mean * mean.clamp_min(1e-12).log()).sum() / math.log(logits.shape[1])


def gaussian_kernel(size: int = 5, sigma: float = math.sqrt(2)) -> torch.Tensor:
    """``(size, size)`` normalised Gaussian, standard deviation ``sigma`` pixels.

    The default is the published kernel's: it computes ``exp(-((x - m) / 2)^2)``, a Gaussian of
    standard deviation ``sqrt(2)``.
    """
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    line = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = line[:, None] * line[None, :]
    return kernel / kernel.sum()


def smoothness_prior(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``MSE(x, blur(x))`` of ``(N, C, H, W)`` images, the blur a depthwise ``kernel`` on reflect padding."""
    channels, pad = images.shape[1], kernel.shape[-1] // 2
    weight = kernel.to(images)[None, None].expand(channels, 1, *kernel.shape)
    smooth = F.conv2d(F.pad(images, (pad, pad, pad, pad), mode="reflect"), weight, groups=channels)
    return F.mse_loss(images, smooth)


def batchnorm_statistics_loss(records: Sequence[tuple[nn.BatchNorm2d, torch.Tensor]]) -> torch.Tensor:
    """Mean over batch norms of ``KL(N(running) || N(batch))`` per channel, averaged over channels.

    Parameters
    ----------
    records : sequence of (nn.BatchNorm2d, torch.Tensor)
        Each batch norm of the old model with its input ``(N, C, H, W)`` on the synthetic batch.

    Notes
    -----
    Per channel, with batch mean ``m``, batch variance ``v`` (biased) and running ``m_r``,
    ``v_r``: ``0.5 (log(v / v_r) + (v_r + (m_r - m)^2) / v - 1)``, zero iff they match.
    """
    if not records:
        raise ValueError("the old model has no batch norm to match")
    terms = []
    for module, inputs in records:
        mean = inputs.mean((0, 2, 3))
        var = inputs.transpose(0, 1).flatten(1).var(1, unbiased=False) + 1e-8
        running_mean, running_var = module.running_mean, module.running_var + 1e-8
        terms.append(0.5 * (torch.log(var / running_var) + (running_var + (running_mean - mean) ** 2) / var - 1).mean())
    return torch.stack(terms).mean()


@contextlib.contextmanager
def batchnorm_inputs(model: nn.Module) -> Iterator[list[tuple[nn.BatchNorm2d, torch.Tensor]]]:
    """Collect ``(module, input)`` of every ``BatchNorm2d`` of ``model`` during the forward passes inside the block."""
    records: list[tuple[nn.BatchNorm2d, torch.Tensor]] = []
    handles = [module.register_forward_hook(lambda m, args, out: records.append((m, args[0])))
               for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


class ModelInversion:
    """Synthetic old-class images from a frozen old model (the module docstring's ``L_inv``).

    Parameters
    ----------
    old_net : nn.Module
        The frozen old model, eval mode: ``(N, C, H, W)`` -> ``(N, n_classes)`` logits.
    old_classes : sequence of int
        The classes it has learned; only their logits are used.
    image_shape : tuple of int
        ``(C, H, W)``.
    latent, hidden : int
        :class:`InversionGenerator` sizes (1000, 128).
    tau : float
        Temperature of the content CE: 1000.
    alpha_pr, alpha_rf : float
        Weights of the smoothness prior (1e-3) and of the batch-norm statistics (50).
    generator : InversionGenerator, optional
        Continue training this generator (ABD keeps one generator across tasks) instead of a
        fresh one; its ``latent`` and ``hidden`` then win over the arguments.
    """

    def __init__(self, old_net: nn.Module, old_classes: Sequence[int], image_shape: Sequence[int], *,
                 latent: int = 1000, hidden: int = 128, tau: float = 1000.0, alpha_pr: float = 1e-3,
                 alpha_rf: float = 50.0, generator: InversionGenerator | None = None):
        if not len(old_classes):
            raise ValueError("inversion needs at least one old class")
        self.old_net = old_net
        device = next(old_net.parameters()).device
        self.old_index = torch.tensor(list(old_classes), device=device)
        self.generator = InversionGenerator(image_shape, latent, hidden).to(device) if generator is None else generator
        self.tau = tau
        self.alpha_pr = alpha_pr
        self.alpha_rf = alpha_rf
        self.kernel = gaussian_kernel().to(device)

    def draw(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """``(n, C, H, W)`` images from ``z ~ N(0, I)`` (drawn on the CPU from ``rng``), in the generator's mode."""
        weight = self.generator.project.weight
        return self.generator(torch.randn(n, self.generator.latent, generator=rng).to(weight))

    def losses(self, n: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """The inversion loss terms (weighted as they enter ``total``) on ``n`` fresh synthetic images."""
        images = self.draw(n, rng)
        with batchnorm_inputs(self.old_net) as records:
            logits = self.old_net(images)[:, self.old_index]
        content = F.cross_entropy(logits / self.tau, logits.detach().argmax(1))
        balance = class_balance(logits)
        prior = self.alpha_pr * smoothness_prior(images, self.kernel)
        statistics = self.alpha_rf * batchnorm_statistics_loss(records)
        return {"content": content, "balance": balance, "prior": prior, "statistics": statistics,
                "total": content + balance + prior + statistics}

    def fit(self, steps: int, batch: int, lr: float, rng: torch.Generator,
            record: Callable[[dict[str, torch.Tensor], int], None] | None = None) -> None:
        """Train the generator for ``steps`` Adam steps at ``lr`` on batches of ``batch`` synthetic images.

        ``record(terms, step)``, if given, receives the detached loss terms of each step.
        """
        if steps < 0 or batch < 2:
            raise ValueError(f"inversion needs steps >= 0 and batches of >= 2, got {steps} and {batch}")
        optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr)
        self.generator.train()
        for step in range(steps):
            terms = self.losses(batch, rng)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            if record is not None:
                record({name: value.detach() for name, value in terms.items()}, step)
        self.generator.eval()

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Synthetic images (generator in eval mode), their classes and the old model's old-class logits.

        Returns ``(n, C, H, W)`` images, ``(n,)`` labels (the argmax of the old model over the old
        classes) and those ``(n, K)`` logits, the targets of the hard KD.
        """
        self.generator.eval()
        images = self.draw(n, rng)
        logits = self.old_net(images)[:, self.old_index]
        return images, self.old_index[logits.argmax(1)], logits


def invert_network(learner: IncrementalLearner, image_shape: Sequence[int] | None, steps: int, batch: int,
                   lr: float, generator: InversionGenerator | None = None, **options) -> ModelInversion:
    """Freeze ``learner.net`` as the next task's old model and train a generator against it.

    The old model covers ``learner.seen_classes``. The inversion's loss terms go to the
    learner's :attr:`~methods.cl.incremental.IncrementalLearner.history` as phase
    ``"inversion"``, ten entries per inversion (one per step when ``steps < 10``).

    Parameters
    ----------
    learner : IncrementalLearner
        At the end of a task.
    image_shape : tuple of int
        ``(C, H, W)`` of the training images (None, before any training batch, is an error).
    steps, batch, lr : int, int, float
        Adam steps of the generator, synthetic images per step, learning rate.
    generator : InversionGenerator, optional
        A generator to continue training (see :class:`ModelInversion`).
    **options
        :class:`ModelInversion`'s ``latent``, ``hidden``, ``tau``, ``alpha_pr``, ``alpha_rf``.

    Returns
    -------
    ModelInversion
        Its ``old_net`` is the frozen copy.
    """
    if image_shape is None:
        raise RuntimeError("the inversion needs the image shape of a training batch")
    inversion = ModelInversion(frozen_copy(learner.net), learner.seen_classes, image_shape, generator=generator,
                               **options)
    log_every = max(steps // 10, 1)

    def record(terms: dict[str, torch.Tensor], step: int) -> None:
        learner.record(terms)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            learner.close_epoch("inversion", step)

    inversion.fit(steps, batch, lr, learner.generator, record)
    return inversion
