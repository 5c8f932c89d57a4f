"""R-DFCIL: relation-guided representation learning for data-free class-incremental learning (Gao et al., ECCV 2022).

A baseline of eTag's Table B.2 (docs/papers/etag.md). Data-free: no exemplar is stored;
old classes are recalled through images synthesised from the frozen old model. Written
from the paper, with the details it leaves open settled from the published implementation
(``module.py`` and its ``cl_lite`` library: ``GenerativeInversion``, ``RKDAngleLoss``, the
CIFAR generator, the fine-tuning mixin, ``config/cifar100.yaml``).

**Model inversion** (after each task but the last; :class:`ModelInversion`). A generator
``G`` (:class:`InversionGenerator`, DCGAN-like, ``z ~ N(0, I)`` of size 1000) is trained
against the frozen old model ``M`` (restricted to the old classes' logits) by

    L_inv = CE(M(x_hat) / tau, argmax M(x_hat))                  content (pseudo-label)
          + 1 + sum_k p_k log p_k / log K                        class balance (diversity),
                                                                 p = batch mean of softmax(M(x_hat))
          + alpha_pr * MSE(x_hat, blur(x_hat))                   smoothness prior
          + alpha_rf * mean_l KL(N(mu_l, s2_l) || N(mu_hat_l, s2_hat_l))   batch-norm statistics,

the last over every batch norm ``l`` of ``M``: ``mu_l``, ``s2_l`` its running mean and variance,
``mu_hat_l``, ``s2_hat_l`` the batch mean and variance of its input on ``x_hat`` (the KL per
channel, averaged over channels; :func:`batchnorm_statistics_loss`). The generator is
unconditional: a synthetic image's class is the old model's argmax over the old classes.

**Incremental task** ``t > 0``, per batch of current images ``x`` and as many synthetic
``x_hat`` (the new model ``N`` in train mode, the old one frozen):

- local CE: the cross-entropy of ``N(x)`` over the current task's classes only
  (:func:`cross_entropy_over`), so new-class training does not push old logits down (with a
  single new class it is identically zero: such a class is learned only by the head
  fine-tuning below);
- hard KD: ``|| N(x_hat)_old - M(x_hat) ||_1`` (mean absolute difference of the old
  classes' logits, ``nn.L1Loss``);
- relation-guided distillation (RRL): the angle-wise relational KD of Park et al. (2019)
  between projected features of the new and old model on the current images,
  ``mean |psi(P_s f_N(x)) - psi(P_t f_M(x))|``, with ``psi(e)_{jik} = <(e_i - e_j)/|e_i - e_j|,
  (e_k - e_j)/|e_k - e_j|>`` over all triplets of the batch (:func:`angle_relations`) and
  ``P_s``, ``P_t`` learned linear projections to ``2d`` (:class:`RelationDistillation`);

weighted as the published implementation: with ``a = log2(n_new / 2 + 1)`` and
``b = sqrt(n_old / n_new)`` (:func:`loss_weights`),
``L = lambda_ce (1 + 1/a) / b * CE_local + lambda_hkd a b * HKD + lambda_rkd a b * RRL``.

**Classification-head fine-tuning** (after the task's epochs, ``t > 0``): the extractor frozen
(eval mode), the linear head alone trains for ``finetune_epochs`` on real and synthetic
features together with a class-balanced CE over all seen classes (class ``c`` weighted by
``count_total / count_c``, normalised to a minimum of 1, the counts being the real and
synthetic labels of the task's training), ``lambda_ce * CE_balanced + lambda_hkd a b * HKD``.

Hyper-parameters (the published ``config/cifar100.yaml``, the paper's Sec. 4.1): ``lambda_ce``
0.5, ``lambda_hkd`` 0.15, ``lambda_rkd`` 0.5; inversion 5000 steps of Adam at 1e-3 on
batches of 128, ``tau`` 1000, ``alpha_pr`` 1e-3, ``alpha_rf`` 50; 40 fine-tuning epochs at
0.005 where the network's base learning rate is 0.1 (ratio 0.05).

Deviations (ours):
- the network trains with the shared optimizer (:class:`~methods.cl.incremental.AdamSchedule`,
  eTag's Adam settings) instead of SGD (lr 0.1, momentum 0.9, weight decay 5e-4, decays at 80
  and 120 of 200 epochs); the fine-tuning uses Adam at ``finetune_lr_factor`` (0.05, the
  published ratio) times the shared learning rate, constant;
- the backbone is our reduced ResNet-18 with a biased linear head (the published CIFAR
  network is a ResNet-32 with a bias-free head);
- the loop's ``epochs`` are the main phase and ``finetune_epochs`` come on top (the published
  schedule counts its 40 fine-tuning epochs within its 200); the class weights of the
  fine-tuning are those of the main phase's counts, fixed (the published code keeps
  counting during fine-tuning, which leaves the ratios unchanged in expectation);
- the generator's spatial sizes follow the input's (``ceil(H/4)``, ``ceil(H/2)``, ``H``), so
  any image size works; at 32x32 it is the published CIFAR generator.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from itertools import chain

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet, resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.incremental import AdamSchedule, Batches, IncrementalLearner, frozen_copy


def cross_entropy_over(logits: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``(B, n_classes)`` logits restricted to the columns ``classes`` ``(K,)``.

    With ``classes`` the current task's, this is R-DFCIL's local CE: the logits of every
    other class take no part, so their gradient is zero. ``weight`` ``(K,)`` weights each
    class (a weighted mean, as ``F.cross_entropy``). Every label must be in ``classes``.
    """
    matches = labels[:, None] == classes[None, :]
    if not matches.any(1).all():
        raise ValueError("a label is outside the classes the cross-entropy covers")
    return F.cross_entropy(logits[:, classes], matches.float().argmax(1), weight=weight)


def loss_weights(n_old: int, n_new: int, lambda_ce: float, lambda_hkd: float,
                 lambda_rkd: float) -> tuple[float, float, float]:
    """Weights of local CE, hard KD and relational KD at a task with ``n_old`` old and ``n_new`` new classes.

    ``a = log2(n_new / 2 + 1)``, ``b = sqrt(n_old / n_new)``; returns
    ``(lambda_ce (1 + 1/a) / b, lambda_hkd a b, lambda_rkd a b)`` (the published ``register_losses``).
    """
    if n_old < 1 or n_new < 1:
        raise ValueError(f"the weights need old and new classes, got {n_old} old and {n_new} new")
    a, b = math.log2(n_new / 2 + 1), math.sqrt(n_old / n_new)
    return lambda_ce * (1 + 1 / a) / b, lambda_hkd * a * b, lambda_rkd * a * b


def angle_relations(embeddings: torch.Tensor) -> torch.Tensor:
    """Angle-wise relations of RKD (Park et al. 2019): ``(N, D)`` -> ``(N, N, N)``.

    Entry ``[j, i, k]`` is the cosine of the angle at ``e_j`` between ``e_i - e_j`` and
    ``e_k - e_j`` (0 where ``i == j`` or ``k == j``). Invariant to a common translation and
    scaling of the embeddings.
    """
    directions = F.normalize(embeddings[None, :, :] - embeddings[:, None, :], p=2, dim=2)
    return torch.bmm(directions, directions.transpose(1, 2))


def relation_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean |psi(student) - psi(teacher)|`` over all ``N^3`` angle relations of two ``(N, D)`` batches."""
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"relations need the same samples, got {student.shape[0]} and {teacher.shape[0]}")
    return F.l1_loss(angle_relations(student), angle_relations(teacher))


class RelationDistillation(nn.Module):
    """R-DFCIL's relation-guided distillation: learned projections ``d -> proj`` of new and old features, then RKD.

    Parameters
    ----------
    feature_dim : int
        ``d``.
    proj_dim : int, optional
        Default ``2 d`` (the published ``RKDAngleLoss(d, proj_dim=2 d)``).

    Notes
    -----
    ``forward(new (N, d), old (N, d))`` returns
    ``relation_distillation_loss(student(new), teacher(old))``; both projections train with
    the network (fresh ones at each task).
    """

    def __init__(self, feature_dim: int, proj_dim: int | None = None):
        super().__init__()
        proj_dim = 2 * feature_dim if proj_dim is None else proj_dim
        self.student = nn.Linear(feature_dim, proj_dim)
        self.teacher = nn.Linear(feature_dim, proj_dim)

    def forward(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return relation_distillation_loss(self.student(new), self.teacher(old))


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
    """

    def __init__(self, old_net: nn.Module, old_classes: Sequence[int], image_shape: Sequence[int], *,
                 latent: int = 1000, hidden: int = 128, tau: float = 1000.0, alpha_pr: float = 1e-3,
                 alpha_rf: float = 50.0):
        if not len(old_classes):
            raise ValueError("inversion needs at least one old class")
        self.old_net = old_net
        device = next(old_net.parameters()).device
        self.old_index = torch.tensor(list(old_classes), device=device)
        self.generator = InversionGenerator(image_shape, latent, hidden).to(device)
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


class RDFCIL(IncrementalLearner):
    """R-DFCIL (the module docstring) behind the :class:`~methods.cl.incremental.IncrementalLearner` interface.

    Parameters
    ----------
    net : ResNet
        ``features`` / ``classify`` network over all classes, on the target device.
    generator : torch.Generator
        CPU generator for shuffling, augmentation and the generator's latent draws.
    optim : AdamSchedule, optional
        The network's optimizer, default ``AdamSchedule()`` (eTag's settings).
    lambda_ce, lambda_hkd, lambda_rkd : float
        0.5, 0.15, 0.5 (:func:`loss_weights`).
    inversion_steps : int
        Generator steps after each task but the last: 5000.
    inversion_batch : int
        Synthetic images per generator step: 128.
    inversion_lr : float
        1e-3 (Adam).
    tau, alpha_pr, alpha_rf : float
        1000, 1e-3, 50 (:class:`ModelInversion`).
    latent, generator_width : int
        The generator's ``z`` size (1000) and hidden channels (128).
    finetune_epochs : int
        Epochs of the head fine-tuning after each task ``t > 0``: 40; 0 skips it.
    finetune_lr_factor : float
        The fine-tuning's Adam learning rate over the shared one: 0.05 (the published 0.005 / 0.1).

    Attributes
    ----------
    old_net : ResNet or None
        Frozen copy of the network at the end of the previous task.
    inversion : ModelInversion or None
        The generator trained against ``old_net``.
    relation : RelationDistillation or None
        The current task's projections.
    class_counts : torch.Tensor
        ``(n_classes,)`` real and synthetic labels seen in the current task's main phase.
    """

    def __init__(self, net: ResNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 lambda_ce: float = 0.5, lambda_hkd: float = 0.15, lambda_rkd: float = 0.5,
                 inversion_steps: int = 5000, inversion_batch: int = 128, inversion_lr: float = 1e-3,
                 tau: float = 1000.0, alpha_pr: float = 1e-3, alpha_rf: float = 50.0, latent: int = 1000,
                 generator_width: int = 128, finetune_epochs: int = 40, finetune_lr_factor: float = 0.05):
        super().__init__(net, generator=generator, optim=optim)
        if inversion_steps < 0 or finetune_epochs < 0:
            raise ValueError("inversion_steps and finetune_epochs must be >= 0")
        self.lambdas = (lambda_ce, lambda_hkd, lambda_rkd)
        self.inversion_steps = inversion_steps
        self.inversion_batch = inversion_batch
        self.inversion_lr = inversion_lr
        self.inversion_options = {"latent": latent, "hidden": generator_width, "tau": tau, "alpha_pr": alpha_pr,
                                  "alpha_rf": alpha_rf}
        self.finetune_epochs = finetune_epochs
        self.finetune_lr_factor = finetune_lr_factor
        self.old_net: ResNet | None = None
        self.inversion: ModelInversion | None = None
        self.relation: RelationDistillation | None = None
        self.weights = (1.0, 0.0, 0.0)
        self.image_shape: tuple[int, ...] | None = None
        self.class_counts = torch.zeros(net.fc.out_features)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.new_index = torch.tensor(self.classes, device=self.device)
        self.old_index = torch.tensor(self.old_classes, dtype=torch.long, device=self.device)
        self.seen_index = torch.tensor(self.seen_classes, device=self.device)
        self.class_counts = torch.zeros(self.net.fc.out_features, device=self.device)
        if task > 0:
            self.weights = loss_weights(len(self.old_classes), len(self.classes), *self.lambdas)
            self.relation = RelationDistillation(self.net.feature_dim).to(self.device)
            self.optimizer, self.scheduler = self.optim.build(chain(self.net.parameters(),
                                                                    self.relation.parameters()))

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.image_shape = tuple(inputs.shape[1:])
        self.net.train()
        features = self.net.features(inputs)
        local = self.weights[0] * cross_entropy_over(self.net.classify(features), labels, self.new_index)
        if self.task == 0:
            return {"local": local, "total": local}
        synthetic, synthetic_labels, old_logits = self.inversion.sample(len(labels), self.generator)
        with torch.no_grad():
            old_features = self.old_net.features(inputs)
        hard = self.weights[1] * F.l1_loss(self.net(synthetic)[:, self.old_index], old_logits)
        relation = self.weights[2] * self.relation(features, old_features)
        self.class_counts += torch.bincount(torch.cat([labels, synthetic_labels]),
                                            minlength=len(self.class_counts)).to(self.class_counts)
        return {"local": local, "hkd": hard, "rkd": relation, "total": local + hard + relation}

    def balanced_weights(self) -> torch.Tensor:
        """``(n_seen,)`` class weights of the fine-tuning CE: ``count_total / count_c``, the smallest scaled to 1."""
        counts = self.class_counts[self.seen_index].clamp_min(1)
        weights = counts.sum() / counts
        return weights / weights.min()

    def finetune_losses(self, inputs: torch.Tensor, labels: torch.Tensor,
                        class_weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head fine-tuning terms on one batch: class-balanced CE over seen classes on real + synthetic, and hard KD."""
        self.net.eval()
        synthetic, synthetic_labels, old_logits = self.inversion.sample(len(labels), self.generator)
        with torch.no_grad():
            features = self.net.features(torch.cat([inputs, synthetic]))
        logits = self.net.classify(features)
        balanced = self.lambdas[0] * cross_entropy_over(logits, torch.cat([labels, synthetic_labels]), self.seen_index,
                                                        class_weights)
        hard = self.weights[1] * F.l1_loss(logits[len(labels):, self.old_index], old_logits)
        return {"balanced": balanced, "hkd": hard, "total": balanced + hard}

    def finetune_head(self, batches: Batches) -> None:
        """Train only the linear head for ``finetune_epochs`` (the extractor frozen, eval mode)."""
        head = self.net.fc
        optimizer = torch.optim.Adam(head.parameters(), lr=self.optim.lr * self.finetune_lr_factor,
                                     weight_decay=self.optim.weight_decay)
        class_weights = self.balanced_weights()
        for epoch in range(self.finetune_epochs):
            for inputs, labels in batches():
                terms = self.finetune_losses(inputs, labels, class_weights)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                self.record({name: value.detach() for name, value in terms.items()})
            self.close_epoch("finetune", epoch)

    def invert(self) -> None:
        """Freeze the network as the next task's old model and train a generator against it."""
        if self.image_shape is None:
            raise RuntimeError("the inversion needs the image shape of a training batch")
        self.old_net = frozen_copy(self.net)
        self.inversion = ModelInversion(self.old_net, self.seen_classes, self.image_shape, **self.inversion_options)
        log_every = max(self.inversion_steps // 10, 1)

        def record(terms: dict[str, torch.Tensor], step: int) -> None:
            self.record(terms)
            if (step + 1) % log_every == 0 or step + 1 == self.inversion_steps:
                self.close_epoch("inversion", step)

        self.inversion.fit(self.inversion_steps, self.inversion_batch, self.inversion_lr, self.generator, record)

    def end_task(self, batches: Batches, last: bool) -> None:
        """Fine-tune the head (``t > 0``), then, except after the last task, invert the network."""
        if self.task > 0 and self.finetune_epochs:
            self.finetune_head(batches)
        if not last:
            self.invert()


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
          optim: AdamSchedule | None = None, **hyper) -> RDFCIL:
    """R-DFCIL on the reduced ResNet-18 (eTag's code's initialisation); ``hyper``: :class:`RDFCIL`'s."""
    net = torchvision_init_(resnet18(n_classes, width, channels))
    return RDFCIL(net, generator=generator, optim=optim, **hyper)
