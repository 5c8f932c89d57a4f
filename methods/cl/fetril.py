"""FeTrIL: feature translation for exemplar-free class-incremental learning (Petit et al., WACV 2023).

A baseline of eTag's Table B.2 (docs/papers/etag.md). FeTrIL learns a representation once
and never changes it: the network trains on the first task only, then its feature
extractor is frozen. Each class keeps one number from its own task, its mean feature
``mu_c`` (no exemplar, no image is stored). At every later task the classifier is refitted
over all classes seen so far, on

- the real features of the new classes, and
- pseudo-features of each old class ``c``, made by translating the features of one new
  class ``n`` to ``c``'s mean (the paper's Eq. 1)::

      f_hat_c = f_n + (mu_c - mu_n)          for every feature f_n of class n,

  so that the pseudo-features of ``c`` have exactly the mean ``mu_c`` and the spread of
  ``n`` (:func:`translate_features`).

The source class ``n`` is the new class whose mean is nearest to ``mu_c`` in Euclidean
distance (the paper's default FeTrIL^1, "most similar new class"; the published
implementation's ``compute_distances.py`` takes the argmin of the Euclidean distances
between class means and translates every feature of that class).

The classifier is a linear SVM, as in the paper: scikit-learn's ``LinearSVC`` (one-vs-rest,
squared hinge, L2 penalty, primal solver), on L2-normalised features, with ``C = 1`` and
tolerance ``1e-4`` (the published implementation's defaults: ``regul = 1.0``,
``toler = 0.0001`` in its configs; scikit-learn is a declared dependency of this suite, so the
paper's SVM is used, not its fully-connected variant FeTrIL^fc). The SVM is also the
classifier after the first task, fitted on the first classes' real features, as the
published implementation does at its state 0.

The learner (:class:`FeTrIL`) behind the :class:`~methods.cl.incremental.IncrementalLearner`
interface:

- task 0: the backbone and its own linear head train with cross-entropy over the first
  task's classes (the shared :class:`~methods.cl.incremental.AdamSchedule`, so the first task
  is trained exactly as fine-tuning's); ``end_task`` then computes the class means and fits
  the SVM;
- task ``t > 0``: the extractor's parameters are frozen (``requires_grad`` off, batch norm in
  eval mode) and the loop's epochs do nothing; ``end_task`` extracts the new classes'
  features in one pass, stores their means, builds the pseudo-features of the old classes
  and refits the SVM over all seen classes.

Inference (:class:`FeTrILNet`, the learner's ``.net``): ``logits = W normalize(f(x)) + b``,
``W`` and ``b`` the SVM's per-class hyperplanes; classes not yet seen have bias ``-inf``.

Deviations (ours):
- the first task trains with the shared Adam schedule and plain cross-entropy on our
  ResNet-18, not the published LUCIR-style SGD training followed by AugMix fine-tuning;
- the features behind the means and the SVM come from one pass of the loop's training
  batches, which carry the loop's augmentation (random crop and flip) where the published
  implementation extracts them from un-augmented images;
- all training features are L2-normalised (the published ``train_classifiers.py`` leaves its
  first chunk of 512 un-normalised, an accident).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.svm import LinearSVC
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet, resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.exemplar_free import FineTune
from methods.cl.incremental import AdamSchedule, Batches


def translate_features(features: torch.Tensor, labels: torch.Tensor, class_means: torch.Tensor,
                       old_classes: Sequence[int], new_classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-features of the old classes, translated from the nearest new class (the paper's Eq. 1).

    Parameters
    ----------
    features : torch.Tensor
        ``(N, d)`` features of the new classes' samples (the frozen extractor's).
    labels : torch.Tensor
        ``(N,)`` their classes, each in ``new_classes``.
    class_means : torch.Tensor
        ``(n_classes, d)`` mean feature of each class; the rows of ``old_classes`` and
        ``new_classes`` are used (the new rows must be the means of ``features``).
    old_classes, new_classes : sequence of int

    Returns
    -------
    pseudo : torch.Tensor
        ``(M, d)``: for each old class ``c``, every feature of its source class
        ``n = argmin_n ||mu_c - mu_n||_2`` moved by ``mu_c - mu_n``.
    pseudo_labels : torch.Tensor
        ``(M,)`` the old class of each row.
    """
    if not len(new_classes):
        raise ValueError("translation needs at least one new class")
    old = torch.tensor(list(old_classes), dtype=torch.long, device=features.device)
    new = torch.tensor(list(new_classes), dtype=torch.long, device=features.device)
    if not torch.isin(labels, new).all():
        raise ValueError("every feature to translate must belong to a new class")
    if not len(old):
        return features.new_zeros(0, features.shape[1]), labels.new_zeros(0)
    sources = new[torch.cdist(class_means[old], class_means[new]).argmin(1)]
    pseudo, pseudo_labels = [], []
    for target, source in zip(old.tolist(), sources.tolist()):
        rows = features[labels == source]
        pseudo.append(rows + (class_means[target] - class_means[source]))
        pseudo_labels.append(torch.full((len(rows),), target, dtype=labels.dtype, device=labels.device))
    return torch.cat(pseudo), torch.cat(pseudo_labels)


class FeTrILNet(nn.Module):
    """The inference network: the (frozen) ResNet's features, L2-normalised, then the SVM's hyperplanes.

    Parameters
    ----------
    backbone : ResNet
        ``features(x)`` maps ``(N, C, H, W)`` to ``(N, d)``; its own ``fc`` is the head of the
        first task's training only.

    Notes
    -----
    ``forward(x)`` returns ``(N, n_classes)`` SVM scores ``W normalize(f(x)) + b``. The
    hyperplanes are fitted, not trained by gradient: ``svm`` holds them with
    ``requires_grad`` off. Rows of classes not yet seen have weight 0 and bias ``-inf``.
    The buffer ``class_means`` ``(n_classes, d)`` holds the stored mean feature of each seen
    class (zeros for the others): with the SVM, all that FeTrIL keeps from a task.
    """

    def __init__(self, backbone: ResNet):
        super().__init__()
        self.backbone = backbone
        n_classes = backbone.fc.out_features
        self.svm = nn.Linear(backbone.feature_dim, n_classes)
        self.svm.requires_grad_(False)
        with torch.no_grad():
            self.svm.weight.zero_()
            self.svm.bias.fill_(float("-inf"))
        self.register_buffer("class_means", torch.zeros(n_classes, backbone.feature_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, d)`` raw (un-normalised) pooled features."""
        return self.backbone.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.svm(F.normalize(self.features(x), dim=1))


def fit_linear_svm(features: torch.Tensor, labels: torch.Tensor, *, c: float, tol: float,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-vs-rest linear SVMs (``LinearSVC``, primal) on L2-normalised ``(N, d)`` features.

    Returns
    -------
    classes : torch.Tensor
        ``(K,)`` the sorted classes present in ``labels``.
    weight, bias : torch.Tensor
        ``(K, d)`` and ``(K,)`` float32 hyperplanes, row ``k`` scoring ``classes[k]``. With two
        classes scikit-learn fits one hyperplane ``w`` for ``classes[1]``; the rows are then
        ``(-w, w)``, which gives the same decisions.
    """
    if len(torch.unique(labels)) < 2:
        raise ValueError("an SVM needs at least two classes")
    svm = LinearSVC(penalty="l2", loss="squared_hinge", dual=False, C=c, tol=tol, multi_class="ovr",
                    fit_intercept=True, random_state=seed)
    svm.fit(F.normalize(features, dim=1).cpu().double().numpy(), labels.cpu().numpy())
    weight, bias = svm.coef_, svm.intercept_
    if len(svm.classes_) == 2:
        weight, bias = np.concatenate([-weight, weight]), np.concatenate([-bias, bias])
    return (torch.as_tensor(svm.classes_), torch.as_tensor(weight, dtype=torch.float32),
            torch.as_tensor(bias, dtype=torch.float32))


class FeTrIL(FineTune):
    """FeTrIL (the module docstring): first task trained, extractor frozen, SVM on translated pseudo-features.

    Parameters
    ----------
    net : FeTrILNet
        On the target device.
    generator : torch.Generator
        CPU generator for shuffling, augmentation and the SVM's seed.
    optim : AdamSchedule, optional
        The first task's optimizer, default ``AdamSchedule()`` (eTag's settings).
    svm_c : float
        The SVM's regularisation ``C``: 1.0 (the published implementation's ``regul``).
    svm_tol : float
        The SVM solver's tolerance: 1e-4 (its ``toler``).

    Attributes
    ----------
    pseudo_features : tuple of torch.Tensor or None
        The ``(M, d)`` pseudo-features and ``(M,)`` labels of the last refit (None before a
        second task), kept for inspection.
    """

    def __init__(self, net: FeTrILNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 svm_c: float = 1.0, svm_tol: float = 1e-4):
        super().__init__(net, generator=generator, optim=optim)
        self.svm_c = svm_c
        self.svm_tol = svm_tol
        self.pseudo_features: tuple[torch.Tensor, torch.Tensor] | None = None

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        if task > 0:
            self.net.backbone.requires_grad_(False)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """First task only: CE of the backbone's own head over the first classes."""
        self.net.train()
        current = self.current_loss(self.net.backbone(inputs), labels)
        return {"current": current, "total": current}

    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """An optimizer step at the first task; nothing after it (the extractor is frozen)."""
        if self.task > 0:
            return {}
        return super().train_step(inputs, labels)

    def end_epoch(self, epoch: int) -> None:
        if self.task == 0:
            super().end_epoch(epoch)

    @torch.no_grad()
    def extract(self, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, d)`` features (eval mode) and ``(N,)`` labels of one pass over the task's batches."""
        self.net.eval()
        features, labels = [], []
        for inputs, batch_labels in batches():
            features.append(self.net.features(inputs))
            labels.append(batch_labels)
        return torch.cat(features), torch.cat(labels)

    def end_task(self, batches: Batches, last: bool) -> None:
        """Store the new classes' means, translate pseudo-features of the old ones, refit the SVM."""
        features, labels = self.extract(batches)
        means = self.net.class_means
        for c in self.classes:
            own = features[labels == c]
            if not len(own):
                raise ValueError(f"class {c} has no training sample in task {self.task}")
            means[c] = own.mean(0)
        if self.old_classes:
            pseudo, pseudo_labels = translate_features(features, labels, means, self.old_classes, self.classes)
            self.pseudo_features = (pseudo, pseudo_labels)
            features, labels = torch.cat([features, pseudo]), torch.cat([labels, pseudo_labels])
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        classes, weight, bias = fit_linear_svm(features, labels, c=self.svm_c, tol=self.svm_tol, seed=seed)
        rows = classes.to(self.device)
        with torch.no_grad():
            self.net.svm.weight[rows] = weight.to(self.device)
            self.net.svm.bias[rows] = bias.to(self.device)


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
          optim: AdamSchedule | None = None, **hyper) -> FeTrIL:
    """FeTrIL on the reduced ResNet-18 (eTag's code's initialisation).

    ``hyper``: ``svm_c`` and ``svm_tol`` of :class:`FeTrIL` (defaults 1.0 and 1e-4).
    """
    backbone = torchvision_init_(resnet18(n_classes, width, channels))
    return FeTrIL(FeTrILNet(backbone), generator=generator, optim=optim, **hyper)
