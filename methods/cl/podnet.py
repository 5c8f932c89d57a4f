"""PodNet: pooled outputs distillation for small-tasks incremental learning (Douillard et al., ECCV 2020).

A baseline of eTag's Table C.5 (docs/papers/etag.md). Unlike eTag it stores exemplars: 20
images per class, chosen by herding (:mod:`methods.cl.exemplars`), trained on with each new
task's data. Written from the paper, with the details it leaves open settled from the
published implementation PyCIL names (``models/podnet.py``, ``convs/linears.py``).

**Local similarity classifier** (LSC, :class:`LocalSimilarityClassifier`): ``K`` proxies
``theta_{c,k}`` per class; with ``s_{c,k} = cos(theta_{c,k}, h)`` for the embedding ``h``,
``y_hat_c = sum_k softmax_k(s_{c,k}) s_{c,k}`` and the logit is ``eta y_hat_c``, ``eta`` a
learned scale. It is trained with the NCA loss with margin ``delta`` (:func:`nca_loss`):

    L_LSC = -log( exp(eta (y_hat_y - delta)) / sum_{c != y} exp(eta y_hat_c) ),

over the seen classes (the denominator leaves out the true class).

**Pooled outputs distillation** at each task ``t > 0``, against the frozen model of the
previous task on the same (current + exemplar) batch:

- POD-spatial (:func:`pod_spatial_loss`) on the output maps ``h_l`` (``(C, H, W)``) of every
  stage ``l`` of the extractor: the squared activations summed over the width and over the
  height, concatenated to ``(C H + C W)`` per image, L2-normalised; the loss is the mean over
  images and stages of the L2 distance between the old and new model's vectors;
- POD-flat (:func:`pod_flat_loss`) on the final embedding: ``1 - cos(h_new, h_old)``.

``L = L_LSC + lambda (lambda_c POD-spatial + lambda_f POD-flat)``, with the adaptive weight
``lambda = sqrt(n_seen / n_new)`` (:func:`adaptive_factor`, the published form).

**Class-balanced fine-tuning** (after each task ``t > 0``, once the memory holds 20 herded
images of every seen class): the classifier (proxies and scale) alone trains on the memory for
``finetune_epochs`` with the NCA loss, the extractor frozen.

Hyper-parameters (PyCIL's ``podnet.py`` defaults): ``K`` 10 proxies, margin 0.6, ``eta``
initialised to 1, ``lambda_c`` 5, ``lambda_f`` 1, 20 exemplars per class, 20 fine-tuning
epochs at 0.005 where the network's learning rate is 0.1 (ratio 0.05).

Deviations (ours):
- the network trains with the shared optimizer (:class:`~methods.cl.incremental.AdamSchedule`,
  eTag's Adam settings) instead of SGD (lr 0.1, momentum 0.9, weight decay 5e-4, cosine
  schedule over 160 epochs); the fine-tuning uses Adam at ``finetune_lr_factor`` times it;
- the backbone is our reduced ResNet-18 with its four stages distilled (published: a
  ResNet-32's three stages);
- the margin subtracts from the true class only, as the paper writes it: PyCIL's ``nca``
  subtracts it from every similarity, which cancels it in the softmax;
- the old classes' proxies keep training after their task (PyCIL sets their learning rate to
  0; the paper does not freeze them);
- the fine-tuning trains the classifier only, as the paper and PodNet's own code (``tuning:
  classifier``); PyCIL also tunes the extractor there, with the distillation terms. Its
  batches are the memory's stored (un-augmented) images, whose features are computed once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet
from methods.cl.etag import torchvision_init_
from methods.cl.exemplars import ExemplarLearner, ExemplarMemory
from methods.cl.incremental import AdamSchedule, Batches, frozen_copy


def pod_spatial_vectors(maps: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C H + C W)``: squared maps summed over the width, then the height; L2-normalised."""
    if maps.dim() != 4:
        raise ValueError(f"POD-spatial needs (N, C, H, W) maps, got shape {tuple(maps.shape)}")
    squared = maps.pow(2)
    return F.normalize(torch.cat([squared.sum(3).flatten(1), squared.sum(2).flatten(1)], 1), dim=1)


def pod_spatial_loss(new_maps: Sequence[torch.Tensor], old_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """POD-spatial: mean over stages and images of ``||P(h_new) - P(h_old)||_2``, ``P`` :func:`pod_spatial_vectors`."""
    if len(new_maps) != len(old_maps) or not new_maps:
        raise ValueError(f"need the same, non-zero number of stages, got {len(new_maps)} and {len(old_maps)}")
    terms = []
    for new, old in zip(new_maps, old_maps, strict=True):
        if new.shape != old.shape:
            raise ValueError(f"maps of different shapes: {tuple(new.shape)} and {tuple(old.shape)}")
        terms.append((pod_spatial_vectors(new) - pod_spatial_vectors(old)).norm(dim=1).mean())
    return torch.stack(terms).mean()


def pod_flat_loss(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """POD-flat: ``mean_i (1 - cos(h_new_i, h_old_i))`` of ``(N, D)`` embeddings (a cosine embedding loss)."""
    return (1 - F.cosine_similarity(new, old, dim=1)).mean()


def adaptive_factor(n_seen: int, n_new: int) -> float:
    """PodNet's adaptive distillation weight ``sqrt(n_seen / n_new)`` (the published form; 0 with no old class)."""
    if n_new < 1 or n_seen < n_new:
        raise ValueError(f"need 1 <= n_new <= n_seen, got {n_new} and {n_seen}")
    return 0.0 if n_seen == n_new else math.sqrt(n_seen / n_new)


def nca_loss(similarities: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor | float,
             margin: float = 0.6) -> torch.Tensor:
    """The NCA loss with margin of PodNet's LSC, averaged over rows.

    Parameters
    ----------
    similarities : torch.Tensor
        ``(N, C)`` class similarities ``y_hat`` (unscaled, in ``[-1, 1]``), ``C >= 2``.
    labels : torch.Tensor
        ``(N,)`` int64 column of the true class.
    scale : torch.Tensor or float
        ``eta`` (the classifier's learned scale).
    margin : float
        ``delta``: 0.6.

    Returns
    -------
    torch.Tensor
        ``mean_i [ -eta (y_hat_{i,y} - delta) + log sum_{c != y} exp(eta y_hat_{i,c}) ]``.
    """
    if similarities.shape[1] < 2:
        raise ValueError("the NCA loss needs at least two classes")
    positive = similarities.gather(1, labels[:, None]).squeeze(1)
    others = (scale * similarities).masked_fill(F.one_hot(labels, similarities.shape[1]).bool(), float("-inf"))
    return (torch.logsumexp(others, 1) - scale * (positive - margin)).mean()


class LocalSimilarityClassifier(nn.Module):
    """PodNet's LSC: ``K`` cosine proxies per class, softmax-weighted, times a learned scale.

    Parameters
    ----------
    dim : int
        Embedding size ``D``.
    n_classes : int
        Classes ``C``.
    proxies : int
        ``K``: 10.

    Notes
    -----
    :meth:`similarities` maps ``(N, D)`` embeddings to ``(N, C)`` ``y_hat`` (each in ``[-1, 1]``);
    ``forward`` returns the logits ``scale * y_hat``. Proxies are initialised uniformly in
    ``+-1/sqrt(D)`` and the scale to 1 (PyCIL's ``CosineLinear``).
    """

    def __init__(self, dim: int, n_classes: int, proxies: int = 10):
        super().__init__()
        if proxies < 1:
            raise ValueError("the LSC needs at least one proxy per class")
        self.n_classes, self.proxies = n_classes, proxies
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(n_classes * proxies, dim).uniform_(-bound, bound))
        self.scale = nn.Parameter(torch.ones(()))

    def similarities(self, embeddings: torch.Tensor) -> torch.Tensor:
        cosines = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T
        per_class = cosines.view(len(embeddings), self.n_classes, self.proxies)
        return (F.softmax(per_class, 2) * per_class).sum(2)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * self.similarities(embeddings)


class PodNetwork(nn.Module):
    """A head-less reduced ResNet (:class:`~methods.cl.backbones.ResNet`) and an LSC over all classes.

    ``stage_outputs(x)`` maps ``(N, C, H, W)`` images to each stage's output maps and the
    pooled ``(N, D)`` embedding; ``forward(x)`` to ``(N, n_classes)`` logits.
    """

    def __init__(self, n_classes: int, width: int, channels: int, proxies: int = 10):
        super().__init__()
        self.backbone = torchvision_init_(ResNet(0, width, channels))
        self.classifier = LocalSimilarityClassifier(self.backbone.feature_dim, n_classes, proxies)

    def stage_outputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        out = F.relu(self.backbone.bn1(self.backbone.conv1(x)))
        maps = []
        for stage in self.backbone.stages:
            out = stage(out)
            maps.append(out)
        return maps, F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone.features(x))


class PodNet(ExemplarLearner):
    """PodNet (the module docstring) behind the :class:`~methods.cl.incremental.IncrementalLearner` interface.

    Parameters
    ----------
    net : PodNetwork
        On the target device.
    generator : torch.Generator
        CPU generator for shuffling and augmentation.
    optim : AdamSchedule, optional
        The network's optimizer, default ``AdamSchedule()`` (eTag's settings).
    memory_per_class : int
        Exemplars per class: 20.
    margin : float
        NCA margin: 0.6.
    lambda_spatial, lambda_flat : float
        5 and 1.
    finetune_epochs : int
        Class-balanced fine-tuning epochs after each task ``t > 0``: 20; 0 skips it.
    finetune_lr_factor : float
        The fine-tuning's learning rate over the shared one: 0.05.
    """

    def __init__(self, net: PodNetwork, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 memory_per_class: int = 20, margin: float = 0.6, lambda_spatial: float = 5.0,
                 lambda_flat: float = 1.0, finetune_epochs: int = 20, finetune_lr_factor: float = 0.05):
        super().__init__(net, memory=ExemplarMemory(per_class=memory_per_class), generator=generator, optim=optim)
        if finetune_epochs < 0:
            raise ValueError("finetune_epochs must be >= 0")
        self.margin = margin
        self.lambda_spatial, self.lambda_flat = lambda_spatial, lambda_flat
        self.finetune_epochs, self.finetune_lr_factor = finetune_epochs, finetune_lr_factor
        self.old_net: PodNetwork | None = None
        self.factor = 0.0
        self.batch_size = 1

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.seen_index = torch.tensor(self.seen_classes, device=self.device)
        self.factor = adaptive_factor(len(self.seen_classes), len(self.classes))

    def lsc_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """NCA loss of the LSC over the seen classes on ``(B, D)`` embeddings with labels ``(B,)``."""
        classifier = self.net.classifier
        similarities = classifier.similarities(embeddings)[:, self.seen_index]
        columns = (labels[:, None] == self.seen_index[None, :]).float().argmax(1)
        return nca_loss(similarities, columns, classifier.scale, self.margin)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.batch_size = max(self.batch_size, len(labels))
        self.net.train()
        maps, embeddings = self.net.stage_outputs(inputs)
        lsc = self.lsc_loss(embeddings, labels)
        if self.old_net is None:
            return {"lsc": lsc, "total": lsc}
        with torch.no_grad():
            old_maps, old_embeddings = self.old_net.stage_outputs(inputs)
        spatial = self.factor * self.lambda_spatial * pod_spatial_loss(maps, old_maps)
        flat = self.factor * self.lambda_flat * pod_flat_loss(embeddings, old_embeddings)
        return {"lsc": lsc, "spatial": spatial, "flat": flat, "total": lsc + spatial + flat}

    def exemplar_features(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net.backbone.features(inputs)

    def finetune_classifier(self) -> None:
        """Train the LSC alone on the memory (class-balanced: the same count per class), the extractor frozen."""
        self.net.eval()
        with torch.no_grad():
            x = self.memory.x.to(self.device)
            embeddings = torch.cat([self.net.backbone.features(x[i:i + 256]) for i in range(0, len(x), 256)])
        labels = self.memory.y.to(self.device)
        classifier = self.net.classifier
        optimizer = torch.optim.Adam(classifier.parameters(), lr=self.optim.lr * self.finetune_lr_factor,
                                     weight_decay=self.optim.weight_decay)
        for epoch in range(self.finetune_epochs):
            order = torch.randperm(len(labels), generator=self.generator).to(self.device)
            for first in range(0, len(order), self.batch_size):
                batch = order[first:first + self.batch_size]
                loss = self.lsc_loss(embeddings[batch], labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.record({"balanced_lsc": loss.detach()})
            self.close_epoch("finetune", epoch)

    def end_task(self, batches: Batches, last: bool) -> None:
        """Herd the task's exemplars, fine-tune the LSC on the balanced memory (``t > 0``), freeze the old model."""
        super().end_task(batches, last)
        if self.task > 0 and self.finetune_epochs:
            self.finetune_classifier()
        if not last:
            self.old_net = frozen_copy(self.net)


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
          optim: AdamSchedule | None = None, proxies: int = 10, **hyper) -> PodNet:
    """PodNet on the reduced ResNet-18 (eTag's code's initialisation) with an LSC of ``proxies`` per class;
    ``hyper``: :class:`PodNet`'s."""
    return PodNet(PodNetwork(n_classes, width, channels, proxies), generator=generator, optim=optim, **hyper)
