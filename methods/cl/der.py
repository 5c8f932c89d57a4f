"""DER: dynamically expandable representation (Yan, Xie & He, CVPR 2021), a baseline of eTag's Table B.1.

Class-incremental learning with exemplars, by growing the representation:

- at each task a new feature extractor (a ResNet-18 of base ``width``) joins the network; the
  extractors of earlier tasks are frozen (parameters and batch-norm statistics). The new one
  starts from the previous extractor's weights (the published implementation's choice, PyCIL's
  ``DERNet.update_fc``); the first from eTag's initialisation;
- the classifier reads the concatenation of every extractor's pooled features, ``(N, k d)``
  after ``k`` tasks; at each task it is rebuilt one extractor wider, keeping the old classes'
  weights on the old features (:meth:`ExpandableNet.expand`);
- an auxiliary classifier on the new extractor's features alone predicts the new classes and
  one "old" output shared by every old class (:func:`auxiliary_labels`), which pushes the new
  extractor towards features the old ones lack; its cross-entropy is added to the classifier's
  (the paper's ``L = L_Ht + lambda_a L_Ht^a``, ``lambda_a = 1``);
- the task's images are trained together with an exemplar memory kept by herding on the
  concatenated features (:class:`~methods.cl.exemplars.ExemplarMemory`, PyCIL's
  ``memory_size`` of 2,000 images shared by the seen classes);
- after each task but the first, the classifier is re-balanced between old and new classes as
  the published implementation does (PyCIL's ``weight_align``, from Zhao et al.'s WA): the new
  classes' weight rows are scaled so that their mean L2 norm equals the old classes'
  (:func:`align_new_weights`). The paper instead re-trains the classifier on a class-balanced
  subset; PyCIL's way is the one we follow.

Not implemented: the paper's channel masks, their sparsity loss and the pruning they allow
(PyCIL omits them too, "DER w/o P" in the paper's tables): each task adds a whole extractor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet
from methods.cl.etag import torchvision_init_
from methods.cl.exemplar_free import FineTune
from methods.cl.exemplars import ExemplarLearner, ExemplarMemory
from methods.cl.incremental import AdamSchedule, Batches


def auxiliary_labels(labels: torch.Tensor, new_classes: Sequence[int]) -> torch.Tensor:
    """Targets of DER's auxiliary classifier: 0 for every old class, ``1 + i`` for the ``i``-th new class.

    Parameters
    ----------
    labels : torch.Tensor
        ``(B,)`` int64 class ids (the task's images and old-class exemplars).
    new_classes : sequence of int
        The current task's classes, in the order of the auxiliary outputs ``1 .. len(new_classes)``.

    Returns
    -------
    torch.Tensor
        ``(B,)`` int64 in ``0 .. len(new_classes)``.
    """
    new = torch.tensor(list(new_classes), device=labels.device)
    match = labels[:, None] == new[None, :]
    return (match.long() * torch.arange(1, len(new) + 1, device=labels.device)).sum(1)


@torch.no_grad()
def align_new_weights(fc: nn.Linear, old_classes: Sequence[int], new_classes: Sequence[int]) -> float:
    """Weight aligning (PyCIL's ``weight_align``): scale the new classes' rows to the old rows' mean norm, in place.

    ``gamma = mean_{c old} ||W_c||_2 / mean_{c new} ||W_c||_2``; ``W_c <- gamma W_c`` for every new
    class ``c`` (biases unchanged). Returns ``gamma``.
    """
    weight = fc.weight
    old, new = list(old_classes), list(new_classes)
    gamma = weight[old].norm(dim=1).mean() / weight[new].norm(dim=1).mean()
    weight[new] *= gamma
    return float(gamma)


class ExpandableNet(nn.Module):
    """DER's super-feature network: one extractor per task, a classifier on their concatenated features.

    Parameters
    ----------
    num_classes : int
        Rows of the classifier: every class of the stream (those not seen yet are never trained
        and are ignored by the seen-class argmax).
    width : int
        Base width of each extractor (a ResNet-18 of ``8 * width`` pooled features; 64 in the paper).
    in_channels : int
    blocks : tuple of int
        BasicBlocks per stage; (2, 2, 2, 2) is ResNet-18.

    Attributes
    ----------
    extractors : nn.ModuleList
        One :class:`~methods.cl.backbones.ResNet` without head per task so far; all but the last frozen.
    fc : nn.Linear
        ``(k d) -> num_classes`` on the concatenation of the ``k`` extractors' features.
    aux_fc : nn.Linear or None
        ``d -> n_new + 1`` on the newest extractor's features (None in the first task, which has no
        old class).

    Notes
    -----
    ``forward(x)`` maps ``(N, C, H, W)`` to ``(N, num_classes)`` logits. ``train()`` leaves the
    frozen extractors in eval mode, so their batch-norm statistics do not move.
    """

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3, blocks: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        self.num_classes, self.width, self.in_channels, self.blocks = num_classes, width, in_channels, tuple(blocks)
        first = torchvision_init_(ResNet(0, width, in_channels, self.blocks))
        self.extractor_dim = first.feature_dim
        self.extractors = nn.ModuleList([first])
        self.fc = nn.Linear(self.extractor_dim, num_classes)
        self.aux_fc: nn.Linear | None = None

    @property
    def feature_dim(self) -> int:
        """``k d``: the concatenated features' size after ``k`` tasks."""
        return self.extractor_dim * len(self.extractors)

    def extractor_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each extractor's pooled features ``[(N, d)] * k``; the frozen ones computed without a graph."""
        with torch.no_grad():
            frozen = [extractor.features(x) for extractor in self.extractors[:-1]]
        return [*frozen, self.extractors[-1].features(x)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the concatenated ``(N, k d)`` features (the oldest extractor's first)."""
        return torch.cat(self.extractor_features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def train(self, mode: bool = True) -> ExpandableNet:
        super().train(mode)
        for extractor in self.extractors[:-1]:
            extractor.eval()
        return self

    def expand(self, old_classes: Sequence[int], n_new: int) -> None:
        """Add a task's extractor (a copy of the last one), freeze the others, widen the classifier, new aux head.

        The new classifier keeps the old classes' rows on the old features' columns (weights and
        biases); the rest (new classes' rows, the new extractor's columns) is freshly initialised.
        """
        device = self.fc.weight.device
        previous = self.extractors[-1]
        for parameter in previous.parameters():
            parameter.requires_grad_(False)
        extractor = ResNet(0, self.width, self.in_channels, self.blocks).to(device)
        extractor.load_state_dict(previous.state_dict())
        self.extractors.append(extractor)
        old_fc, old = self.fc, torch.tensor(list(old_classes), dtype=torch.long, device=device)
        self.fc = nn.Linear(self.feature_dim, self.num_classes).to(device)
        with torch.no_grad():
            self.fc.weight[old, :old_fc.in_features] = old_fc.weight[old]
            self.fc.bias[old] = old_fc.bias[old]
        self.aux_fc = nn.Linear(self.extractor_dim, n_new + 1).to(device)
        self.train(self.training)


class DER(ExemplarLearner, FineTune):
    """DER (docs/papers/etag.md, "Table B.1's baselines"): expansion, auxiliary loss, exemplars, weight aligning.

    Per task ``t``: for ``t > 0`` the network grows by one extractor (:meth:`ExpandableNet.expand`);
    each step minimises the seen-class cross-entropy of the classifier on the concatenated features
    (:class:`~methods.cl.exemplar_free.FineTune`'s, over the logits of the classes seen so far, as
    PyCIL's classifier of ``total_classes`` outputs) on the task's images and the exemplars, plus
    ``aux_weight`` times the auxiliary classifier's cross-entropy over the new classes and one "old"
    output (:func:`auxiliary_labels`; ``t > 0`` only). After the task's epochs the new classes'
    weights are aligned to the old ones (``t > 0``, :func:`align_new_weights`), then the memory herds
    the task's classes on the concatenated features.

    Parameters
    ----------
    net : ExpandableNet
    generator : torch.Generator
    memory : ExemplarMemory
        2,000 images in all by default (:func:`build`; PyCIL's ``memory_size``).
    optim : AdamSchedule, optional
        eTag's optimizer, shared by every learner of the tables (PyCIL's DER uses SGD, see the docs).
        The frozen extractors get no gradient, so it leaves them untouched.
    aux_weight : float
        ``lambda_a``, 1 (the paper's and PyCIL's).
    """

    def __init__(self, net: ExpandableNet, *, generator: torch.Generator, memory: ExemplarMemory,
                 optim: AdamSchedule | None = None, aux_weight: float = 1.0):
        super().__init__(net, generator=generator, memory=memory, optim=optim)
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux_weight = aux_weight

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        if task > 0:
            self.net.expand(self.seen_classes, len(classes))
        super().begin_task(task, classes)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        features = self.net.extractor_features(inputs)
        terms = {"current": self.current_loss(self.net.fc(torch.cat(features, 1)), labels)}
        if self.net.aux_fc is not None:
            aux_logits = self.net.aux_fc(features[-1])
            terms["aux"] = self.aux_weight * F.cross_entropy(aux_logits, auxiliary_labels(labels, self.classes))
        return {**terms, "total": sum(terms.values())}

    def exemplar_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Herding's features: the concatenation of every extractor's (PyCIL's ``extract_vector``)."""
        return self.net.features(inputs)

    def end_task(self, batches: Batches, last: bool) -> None:
        """Align the new classes' weights (tasks after the first), then herd the task's classes into the memory."""
        if self.task > 0:
            align_new_weights(self.net.fc, self.old_classes, self.classes)
        super().end_task(batches, last)


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator, optim: AdamSchedule | None = None,
          memory_size: int = 2000, memory_per_class: int | None = None, aux_weight: float = 1.0) -> DER:
    """DER on a fresh :class:`ExpandableNet` of ResNet-18s of base ``width``, eTag's initialisation.

    Parameters
    ----------
    n_classes, width, channels : int
        Classes of the stream, each extractor's base width, input channels.
    generator, optim
        As :class:`DER`.
    memory_size : int
        Exemplars in all, shared equally by the seen classes: 2,000 (PyCIL's default).
    memory_per_class : int, optional
        A fixed count per class instead (PyCIL's ``fixed_memory`` with ``memory_per_class``, 20);
        overrides ``memory_size``.
    aux_weight : float
        ``lambda_a``, 1.
    """
    memory = (ExemplarMemory(per_class=memory_per_class) if memory_per_class is not None
              else ExemplarMemory(budget=memory_size))
    return DER(ExpandableNet(n_classes, width, channels), generator=generator, memory=memory, optim=optim,
               aux_weight=aux_weight)
