"""ABD, "Always Be Dreaming": data-free class-incremental learning (Smith et al., ICCV 2021).

A baseline of eTag's Tables B.3 and C.5 (docs/papers/etag.md). Data-free: no exemplar is
stored; old classes are recalled through images synthesised from the frozen old model.
Written from the paper, with the details it leaves open settled from the published
implementation (``AlwaysBeDreaming`` and ``Teacher`` of its data-free learner, the CIFAR-100
experiment scripts).

**Model inversion** (after each task but the last): :mod:`methods.cl.inversion` (content CE
on the old model's own argmax over the old classes, the information-entropy class-balance
term, the smoothness prior and the batch-norm statistics match). As published, one generator
serves the whole run: each task's inversion continues training the previous one against the
newly frozen model.

**Incremental task** ``t > 0``: each batch of ``B`` real images ``x`` (labels ``y``, new
classes) is joined by ``B`` synthetic ones ``x_hat`` with their pseudo-labels ``y_hat`` (the
old model's argmax over the old classes). With ``f`` the new network's features, ``W`` its
head, ``f'`` and ``W'`` those of the frozen old model, ``n_old``, ``n_new``, ``n_seen`` the
class counts and the class weights ``w_c = n_old / n_seen`` for old classes and
``n_new / n_seen`` for new ones (:func:`class_weights`, the published class balancing):

- local CE: ``mean_{real i} w_{y_i} CE(W f(x_i) restricted to the new
  classes, y_i)``. Old classes' logits take no part, so real data of the new classes never
  pushes their head rows (:func:`~methods.cl.inversion.cross_entropy_over`);
- fine-tuning CE of the head: ``mean_{all 2B rows} w_{y_i} CE(W sg[f(x_i)], y_i)``
  over every output of the head, ``sg`` a gradient stop: real and synthetic rows train the
  head alone, not the extractor (the published code computes it over all of the head's
  outputs, seen or not);
- importance-weighted feature distillation: ``mu mean_{all 2B rows}
  ||W'_old (f(x_i) - f'(x_i))||^2 / n_old``, ``W'_old`` the old head's rows of the old classes:
  a feature's change is weighted by how much it moves the old classes' logits
  (:func:`importance_weighted_distillation`). The published code applies it to the real and
  the synthetic rows alike.

``L = local CE + fine-tuning CE + KD``; at the first task, plain CE over every output of the
head (as published: the head's unseen classes are pushed down from the start).

Hyper-parameters (the published CIFAR-100 scripts): ``mu`` 0.1; the inversion 10,000 Adam
steps per task at 1e-3 on batches of 128, ``tau`` 1000, ``alpha_pr`` 1e-3, ``alpha_rf`` 50,
``z`` of size 1000, generator width 128.

Deviations (ours):
- the network trains with the shared optimizer (:class:`~methods.cl.incremental.AdamSchedule`,
  eTag's Adam settings) instead of SGD (lr 0.1, momentum 0.9, weight decay 2e-4, decays at
  100, 150, 200 of 250 epochs); the backbone is our reduced ResNet-18 (published: ResNet-32);
- the generator's Adam state restarts at each task (the published optimizer object lives
  across tasks; the weights are carried over in both);
- the fine-tuning CE takes the features of the same forward pass, detached (the published
  code runs a second forward pass in train mode under ``no_grad``: the same values and
  gradients, one more update of the batch norms' running statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet, resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.incremental import AdamSchedule, Batches, IncrementalLearner
from methods.cl.inversion import ModelInversion, cross_entropy_over, invert_network


def class_weights(n_classes: int, old_classes: Sequence[int], new_classes: Sequence[int]) -> torch.Tensor:
    """``(n_classes,)`` ABD's class balancing: ``n_old / n_seen`` on old classes, ``n_new / n_seen`` on new ones.

    A batch holds as many synthetic (old) as real (new) rows, so an old class has ``n_new / n_old``
    times the rows of a new one; these weights make every seen class count alike. Unseen
    classes get weight 1 (they never occur as labels).
    """
    n_seen = len(old_classes) + len(new_classes)
    if not new_classes:
        raise ValueError("a task needs at least one new class")
    weights = torch.ones(n_classes)
    weights[list(old_classes)] = len(old_classes) / n_seen
    weights[list(new_classes)] = len(new_classes) / n_seen
    return weights


def importance_weighted_distillation(features: torch.Tensor, old_features: torch.Tensor,
                                     old_head: torch.Tensor) -> torch.Tensor:
    """ABD's importance-weighted feature distillation: ``mean_i ||W' (f_i - f'_i)||^2 / K``.

    Parameters
    ----------
    features, old_features : torch.Tensor
        ``(N, D)`` features of the new and of the frozen old network on the same rows.
    old_head : torch.Tensor
        ``(K, D)``: the old head's weight rows of the ``K`` old classes (the importance of each
        feature to each old logit; the bias cancels in the difference).

    Returns
    -------
    torch.Tensor
        Scalar: the squared change of the old classes' logits under the old head, summed over
        the ``K`` classes, divided by ``K`` and averaged over rows.
    """
    if features.shape != old_features.shape or features.shape[1] != old_head.shape[1]:
        raise ValueError(f"shapes do not match: features {tuple(features.shape)}, old features "
                         f"{tuple(old_features.shape)}, old head {tuple(old_head.shape)}")
    return ((features - old_features) @ old_head.T).pow(2).sum(1).mean() / old_head.shape[0]


class ABD(IncrementalLearner):
    """ABD (the module docstring) behind the :class:`~methods.cl.incremental.IncrementalLearner` interface.

    Parameters
    ----------
    net : ResNet
        ``features`` / ``classify`` network over all classes, on the target device.
    generator : torch.Generator
        CPU generator for shuffling, augmentation and the generator's latent draws.
    optim : AdamSchedule, optional
        The network's optimizer, default ``AdamSchedule()`` (eTag's settings).
    mu : float
        Weight of the feature distillation: 0.1.
    inversion_steps : int
        Generator steps after each task but the last: 10,000.
    inversion_batch : int
        Synthetic images per generator step: 128.
    inversion_lr : float
        1e-3 (Adam).
    tau, alpha_pr, alpha_rf : float
        1000, 1e-3, 50 (:class:`~methods.cl.inversion.ModelInversion`).
    latent, generator_width : int
        The generator's ``z`` size (1000) and hidden channels (128).

    Attributes
    ----------
    inversion : ModelInversion or None
        The generator trained against the frozen network of the previous task
        (``inversion.old_net``).
    weights : torch.Tensor
        ``(n_classes,)`` the current task's :func:`class_weights`.
    """

    def __init__(self, net: ResNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 mu: float = 0.1, inversion_steps: int = 10000, inversion_batch: int = 128,
                 inversion_lr: float = 1e-3, tau: float = 1000.0, alpha_pr: float = 1e-3, alpha_rf: float = 50.0,
                 latent: int = 1000, generator_width: int = 128):
        super().__init__(net, generator=generator, optim=optim)
        if inversion_steps < 0:
            raise ValueError("inversion_steps must be >= 0")
        self.mu = mu
        self.inversion_steps = inversion_steps
        self.inversion_batch = inversion_batch
        self.inversion_lr = inversion_lr
        self.inversion_options = {"latent": latent, "hidden": generator_width, "tau": tau, "alpha_pr": alpha_pr,
                                  "alpha_rf": alpha_rf}
        self.inversion: ModelInversion | None = None
        self.image_shape: tuple[int, ...] | None = None
        self.weights = torch.ones(net.fc.out_features)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.new_index = torch.tensor(self.classes, device=self.device)
        self.old_index = torch.tensor(self.old_classes, dtype=torch.long, device=self.device)
        self.weights = class_weights(self.net.fc.out_features, self.old_classes, self.classes).to(self.device)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.image_shape = tuple(inputs.shape[1:])
        self.net.train()
        if self.task == 0:
            ce = F.cross_entropy(self.net(inputs), labels)
            return {"local": ce, "total": ce}
        synthetic, synthetic_labels, _ = self.inversion.sample(len(labels), self.generator)
        both, both_labels = torch.cat([inputs, synthetic]), torch.cat([labels, synthetic_labels])
        features = self.net.features(both)
        real = len(labels)
        local = (self.weights[labels] * cross_entropy_over(self.net.classify(features[:real]), labels,
                                                           self.new_index, reduction="none")).mean()
        head = (self.weights[both_labels] * F.cross_entropy(self.net.classify(features.detach()), both_labels,
                                                            reduction="none")).mean()
        old_net = self.inversion.old_net
        with torch.no_grad():
            old_features = old_net.features(both)
        kd = self.mu * importance_weighted_distillation(features, old_features, old_net.fc.weight[self.old_index])
        return {"local": local, "head": head, "kd": kd, "total": local + head + kd}

    def end_task(self, batches: Batches, last: bool) -> None:
        """Except after the last task, freeze the network and (re)train the generator against it."""
        if last:
            return
        previous = None if self.inversion is None else self.inversion.generator
        self.inversion = invert_network(self, self.image_shape, self.inversion_steps, self.inversion_batch,
                                        self.inversion_lr, generator=previous, **self.inversion_options)


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
          optim: AdamSchedule | None = None, **hyper) -> ABD:
    """ABD on the reduced ResNet-18 (eTag's code's initialisation); ``hyper``: :class:`ABD`'s."""
    net = torchvision_init_(resnet18(n_classes, width, channels))
    return ABD(net, generator=generator, optim=optim, **hyper)
