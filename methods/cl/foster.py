"""FOSTER: feature boosting and compression for class-incremental learning (Wang et al., ECCV 2022).

A baseline of eTag's appendix Table B.1 (docs/papers/etag.md, "Table B.1's baseline FOSTER"). FOSTER
keeps a herding exemplar memory (:mod:`methods.cl.exemplars`) and learns every task after the first
in two stages, so that the network grows for one task and shrinks back to one backbone:

1. **Feature boosting** (:class:`BoostedNet`). The network of the previous task, ``phi_old`` with its
   classifier ``W_old``, is frozen (parameters and batch-norm statistics). A new extractor ``phi_new``
   (initialised as a copy of ``phi_old``) trains beside it; a classifier ``W`` over the concatenated
   feature ``[phi_old(x), phi_new(x)]`` (``2d`` wide) scores every class, its old-class rows on the
   ``phi_old`` block initialised from ``W_old``. The loss on a batch of task rows and exemplars
   (the paper's logits alignment, feature enhancement and distillation terms)::

       L_boost = CE(o / w, y) + CE(W_new phi_new(x), y) + lambda * KD_T(o_old-classes, W_old phi_old(x))

   with ``o = W [phi_old(x), phi_new(x)]`` the combined logits, ``W_new`` the new module's own
   classifier, and ``w`` the class-balanced weights of :func:`class_balanced_weights` with ``beta_1``:
   the logits of each class are divided by its weight (:func:`adjusted_cross_entropy`), which
   shrinks the rarely seen (old) classes' logits during training so that the classifier learns to
   score them higher, correcting the bias of training on 20 exemplars beside hundreds of new rows.
   ``KD_T`` is the soft cross-entropy at temperature ``T`` over the old classes
   (:func:`methods.cl.exemplar_free.soft_cross_entropy`, no ``T^2`` factor).
2. **Feature compression** (:meth:`FOSTER.compress`). A single-backbone student, initialised from
   ``phi_old`` and ``W_old`` (its new-class rows fresh), learns the boosted teacher's logits by
   balanced knowledge distillation (:func:`balanced_distillation`): the teacher's softened
   probabilities are re-weighted by the class-balanced weights (``beta_2``) and renormalised before
   the soft cross-entropy. The student replaces the teacher: it is the network evaluated after the
   task, the memory is herded with its features, and it is the ``phi_old`` of the next task. The
   network used at inference is therefore always one ResNet-18 and its head.

Hyper-parameters (the published implementation's defaults, its ``foster.json``): ``beta_1 = 0.96``,
``beta_2 = 0.97``, ``lambda = 1`` (``lambda_okd``), ``T = 2``, 20 exemplars per class (its
``fixed_memory`` with ``memory_per_class = 20``; ``memory_size`` gives a fixed total instead), the
combined classifier's new-class block on the old features fine-tuned (``oofc = "ft"``), no weight
alignment of teacher or student. The class counts behind the weights are those of the training
set (task rows plus exemplars), so old classes count their exemplars only; the published
implementation does the same (old classes count ``memory_per_class``), with no oversampling of old
classes. The compression runs ``compression_epochs`` epochs (published: 130 against 170 boosting
epochs); default here, as many as the task's boosting stage ran, i.e. the run's network epochs.

Deviations (ours; docs/papers/etag.md): both stages and the first task use the suite's shared
:class:`~methods.cl.incremental.AdamSchedule` (eTag's optimizer, for a fair comparison) instead of
SGD (lr 0.1, cosine, weight decay 5e-4; none in compression); CE and distillation are taken over the
logits of the seen classes of the suite's fixed ``n_classes`` head (the published heads grow); the
per-step accuracy is the student's, where the published code evaluates the boosted teacher at each
step and logs the student's beside it; herding ranks images by the student's features, where the
published code uses the teacher's concatenated features.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet, resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.exemplar_free import FineTune, soft_cross_entropy
from methods.cl.exemplars import ExemplarLearner, ExemplarMemory
from methods.cl.incremental import AdamSchedule, Batches, frozen_copy

DEFAULT_EXEMPLARS_PER_CLASS = 20


def class_balanced_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-class weights from the effective number of samples (Cui et al., CVPR 2019), as FOSTER uses them.

    ``w_k = (1 - beta) / (1 - beta ** n_k)``, rescaled so that the ``K`` weights sum to ``K``: a
    class seen rarely (an old class, through its exemplars) weighs more than 1, a frequent one less.

    Parameters
    ----------
    counts : torch.Tensor
        ``(K,)`` training samples of each class (``>= 1``).
    beta : float
        In ``(0, 1)``; FOSTER's ``beta_1 = 0.96`` (boosting) and ``beta_2 = 0.97`` (compression).

    Returns
    -------
    torch.Tensor
        ``(K,)`` float32 weights on ``counts``' device, mean 1.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must lie in (0, 1), got {beta}")
    counts = counts.double()
    if counts.numel() == 0 or bool((counts < 1).any()):
        raise ValueError("every class needs at least one training sample to be weighted")
    weights = (1.0 - beta) / (1.0 - beta ** counts)
    return (weights * len(weights) / weights.sum()).float()


def adjusted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """FOSTER's logits alignment: cross-entropy of the logits divided class-wise by ``weights``.

    ``-mean_i log softmax(o_i / w)[y_i]`` for logits ``o`` ``(B, K)``, labels ``(B,)`` in ``[0, K)`` and
    weights ``(K,)`` (:func:`class_balanced_weights`); the published implementation's form.
    """
    return F.cross_entropy(logits / weights, labels)


def balanced_distillation(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    """FOSTER's balanced knowledge distillation of the compression stage.

    ``q = softmax(teacher / T) * w``, renormalised over the classes; the loss is
    ``-mean_i sum_k q_ik log softmax(student_i / T)_k`` (no ``T^2`` factor, as published).

    Parameters
    ----------
    student, teacher : torch.Tensor
        ``(B, K)`` logits of the student (with gradient) and of the teacher.
    weights : torch.Tensor
        ``(K,)`` class-balanced weights (:func:`class_balanced_weights` with ``beta_2``).
    temperature : float
        ``T`` (2).
    """
    target = F.softmax(teacher / temperature, dim=1) * weights
    target = target / target.sum(1, keepdim=True)
    return -(target * F.log_softmax(student / temperature, dim=1)).sum(1).mean()


def _fresh_linear(in_features: int, out_features: int, like: torch.Tensor) -> nn.Linear:
    return nn.Linear(in_features, out_features, device=like.device, dtype=like.dtype)


class BoostedNet(nn.Module):
    """The boosting stage's network: a frozen old ResNet beside a new one, one classifier on both features.

    Parameters
    ----------
    old : ResNet
        The previous task's network (features ``(N, d)`` and classifier ``fc``); copied here and
        frozen (``requires_grad`` off, always in eval mode, so its batch-norm statistics stay).
    old_classes : sequence of int
        Classes learned before this task: their rows of the combined classifier start as ``old.fc``'s
        on the old feature block.

    Attributes
    ----------
    old : ResNet
        ``phi_old`` and ``W_old``, frozen.
    new : ResNet
        ``phi_new``, a trainable copy of ``old``'s extractor; its ``fc`` is the new module's own
        classifier ``W_new`` (``d -> n_classes``, fresh).
    fc : nn.Linear
        ``W``: ``2d -> n_classes`` on ``[phi_old(x), phi_new(x)]``.
    """

    def __init__(self, old: ResNet, old_classes: Sequence[int]):
        super().__init__()
        self.old = frozen_copy(old)
        self.new = copy.deepcopy(self.old).requires_grad_(True).train()
        weight = old.fc.weight
        n_classes, d = weight.shape
        self.new.fc = _fresh_linear(d, n_classes, weight)
        self.fc = _fresh_linear(2 * d, n_classes, weight)
        rows = torch.tensor(list(old_classes), dtype=torch.long, device=weight.device)
        with torch.no_grad():
            self.fc.weight[rows, :d] = old.fc.weight[rows]
            self.fc.bias[rows] = old.fc.bias[rows]

    def train(self, mode: bool = True) -> BoostedNet:
        """Train or eval mode for the new module and the classifier; the old network stays in eval mode."""
        super().train(mode)
        self.old.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, 2d)``: ``[phi_old(x), phi_new(x)]``."""
        return torch.cat([self.old.features(x), self.new.features(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, n_classes)`` combined logits ``W [phi_old(x), phi_new(x)]``."""
        return self.fc(self.features(x))

    def boosting_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three logits of the boosting loss, each ``(N, n_classes)``: combined ``W [phi_old, phi_new]``,
        the new module's ``W_new phi_new`` and the old network's ``W_old phi_old`` (no gradient)."""
        old_features = self.old.features(x)
        new_features = self.new.features(x)
        combined = self.fc(torch.cat([old_features, new_features], dim=1))
        return combined, self.new.fc(new_features), self.old.fc(old_features)


class FOSTER(ExemplarLearner, FineTune):
    """FOSTER (the module docstring): feature boosting, then compression back into one backbone.

    Parameters
    ----------
    net : ResNet
        The single-backbone network (with its ``n_classes`` head), on the target device.
    memory : ExemplarMemory
        The herding exemplar memory.
    generator : torch.Generator
        CPU generator for shuffling and augmentation.
    optim : AdamSchedule, optional
        The optimizer of every stage, default ``AdamSchedule()`` (eTag's settings).
    beta_boosting : float
        ``beta_1`` of the logits alignment's class weights: 0.96.
    beta_compression : float
        ``beta_2`` of the balanced distillation's class weights: 0.97.
    kd_weight : float
        ``lambda`` of the boosting stage's distillation from the old network: 1.
    temperature : float
        ``T`` of both distillations: 2.
    compression_epochs : int, optional
        Epochs of the compression stage per task; default, as many as the task's boosting stage ran.

    Attributes
    ----------
    class_counts : torch.Tensor
        ``(n_classes,)`` samples of each class in the current task's training set (rows + exemplars).
    """

    def __init__(self, net: ResNet, *, memory: ExemplarMemory, generator: torch.Generator,
                 optim: AdamSchedule | None = None, beta_boosting: float = 0.96, beta_compression: float = 0.97,
                 kd_weight: float = 1.0, temperature: float = 2.0, compression_epochs: int | None = None):
        super().__init__(net, memory=memory, generator=generator, optim=optim)
        for name, beta in (("beta_boosting", beta_boosting), ("beta_compression", beta_compression)):
            if not 0.0 < beta < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {beta}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if compression_epochs is not None and compression_epochs < 1:
            raise ValueError(f"compression_epochs must be >= 1, got {compression_epochs}")
        self.n_classes = net.fc.out_features
        self.beta_boosting = beta_boosting
        self.beta_compression = beta_compression
        self.kd_weight = kd_weight
        self.temperature = temperature
        self.compression_epochs = compression_epochs
        self.class_counts = torch.zeros(self.n_classes, dtype=torch.long)
        self.boosting_epochs = 0

    def training_set(self, task_x: torch.Tensor, task_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's rows plus the exemplars; counts each class's samples for the class weights."""
        x, y = super().training_set(task_x, task_y)
        self.class_counts = torch.bincount(y.cpu(), minlength=self.n_classes)
        return x, y

    def class_weights(self, beta: float) -> torch.Tensor:
        """``(len(seen_classes),)`` class-balanced weights of the seen classes, in ``seen_index`` order."""
        return class_balanced_weights(self.class_counts[self.seen_index.cpu()], beta).to(self.device)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        """Task ``t > 0``: the boosting network grows around the previous task's (compressed) one."""
        if task > 0:
            self.net = BoostedNet(self.net, self.seen_classes)
        super().begin_task(task, classes)
        self.boosting_epochs = 0
        if task > 0:
            self.old_index = torch.tensor(self.old_classes, device=self.device)
            self.boost_weights = self.class_weights(self.beta_boosting)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Task 0: CE over the seen classes. Later: ``L_boost`` (the module docstring), each term reported."""
        self.net.train()
        if self.task == 0:
            return super().losses(inputs, labels)
        combined, own, old = self.net.boosting_outputs(inputs)
        targets = self.position[labels]
        aligned = adjusted_cross_entropy(combined[:, self.seen_index], targets, self.boost_weights)
        enhance = F.cross_entropy(own[:, self.seen_index], targets)
        distill = self.kd_weight * soft_cross_entropy(combined[:, self.old_index], old[:, self.old_index],
                                                      self.temperature)
        return {"aligned": aligned, "new_module": enhance, "distill": distill, "total": aligned + enhance + distill}

    def end_epoch(self, epoch: int) -> None:
        super().end_epoch(epoch)
        self.boosting_epochs += 1

    def student_from(self, teacher: BoostedNet) -> ResNet:
        """The compression's student: ``phi_old`` and ``W_old`` copied, trainable, the task's class rows fresh."""
        student = copy.deepcopy(teacher.old).requires_grad_(True).train()
        fresh = _fresh_linear(student.fc.in_features, self.n_classes, student.fc.weight)
        rows = torch.tensor(self.classes, dtype=torch.long, device=fresh.weight.device)
        with torch.no_grad():
            student.fc.weight[rows] = fresh.weight[rows]
            student.fc.bias[rows] = fresh.bias[rows]
        return student

    def compression_loss(self, student: ResNet, teacher: BoostedNet, inputs: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
        """Balanced KD of ``student`` from the eval-mode ``teacher`` on ``(B, C, H, W)`` inputs, seen classes only."""
        with torch.no_grad():
            target = teacher(inputs)[:, self.seen_index]
        return balanced_distillation(student(inputs)[:, self.seen_index], target, weights, self.temperature)

    def compress(self, batches: Batches) -> ResNet:
        """Distil the boosted network (``self.net``) into a one-backbone student; returns the student."""
        teacher = self.net.eval()
        student = self.student_from(teacher)
        weights = self.class_weights(self.beta_compression)
        optimizer, scheduler = self.optim.build(student.parameters())
        for epoch in range(self.compression_epochs or self.boosting_epochs):
            for inputs, _ in batches():
                student.train()
                loss = self.compression_loss(student, teacher, inputs, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(student.parameters(), self.optim.clip_norm)
                optimizer.step()
                self.record({"compression": loss.detach()})
            self.close_epoch("compression", epoch)
            scheduler.step()
        return student

    def end_task(self, batches: Batches, last: bool) -> None:
        """Task ``t > 0``: compress, and keep the student as the network. Then herd the memory with it."""
        if self.task > 0:
            self.net = self.compress(batches)
        super().end_task(batches, last)

    def exemplar_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, d)`` pooled features of the (single-backbone) network."""
        return self.net.features(inputs)


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
          optim: AdamSchedule | None = None, memory_size: int | None = None,
          exemplars_per_class: int | None = None, **hyper) -> FOSTER:
    """FOSTER on the reduced ResNet-18 (eTag's initialisation) with a herding memory.

    ``memory_size`` (a fixed total) or ``exemplars_per_class`` (default 20, the published
    implementation's); ``hyper``: ``beta_boosting``, ``beta_compression``, ``kd_weight``,
    ``temperature`` and ``compression_epochs`` of :class:`FOSTER`.
    """
    if memory_size is None and exemplars_per_class is None:
        exemplars_per_class = DEFAULT_EXEMPLARS_PER_CLASS
    memory = ExemplarMemory(budget=memory_size, per_class=exemplars_per_class)
    net = torchvision_init_(resnet18(n_classes, width, channels))
    return FOSTER(net, memory=memory, generator=generator, optim=optim, **hyper)
