"""R-DFCIL: relation-guided representation learning for data-free class-incremental learning (Gao et al., ECCV 2022).

A baseline of eTag's Table B.2 (docs/papers/etag.md). Data-free: no exemplar is stored;
old classes are recalled through images synthesised from the frozen old model. Written
from the paper, with the details it leaves open settled from the published implementation
(``module.py`` and its ``cl_lite`` library: ``GenerativeInversion``, ``RKDAngleLoss``, the
CIFAR generator, the fine-tuning mixin, ``config/cifar100.yaml``).

**Model inversion** (after each task but the last): ABD's, shared in :mod:`methods.cl.inversion`
(its docstring gives the loss): a fresh generator per task, trained against the frozen network
over the old classes; a synthetic image's class is the old model's argmax.

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

import math
from collections.abc import Sequence
from itertools import chain

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet, resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.incremental import AdamSchedule, Batches, IncrementalLearner
from methods.cl.inversion import ModelInversion, cross_entropy_over, invert_network


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
        """Freeze the network as the next task's old model and train a fresh generator against it."""
        self.inversion = invert_network(self, self.image_shape, self.inversion_steps, self.inversion_batch,
                                        self.inversion_lr, **self.inversion_options)
        self.old_net = self.inversion.old_net

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
