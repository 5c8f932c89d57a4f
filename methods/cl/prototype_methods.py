"""Prototype-based exemplar-free class-incremental baselines of eTag's Table B.2: PASS, IL2A and SSRE.

All three keep, instead of exemplars, one *prototype* per old class: the mean of its
pooled features ``mu_c`` (``(d,)``), computed once after the class's task with the network
of that task, and replay it through the classifier while the network learns new classes;
all three pull the new features towards the old network's with an L2 feature distillation.
They differ in how the prototypes are augmented and in what else they add. Every learner
runs on :class:`PrototypeNet` (a :class:`~methods.cl.backbones.ResNet` without its own head,
plus one linear head), behind the :class:`~methods.cl.incremental.IncrementalLearner`
interface, with eTag's shared optimizer (:class:`~methods.cl.incremental.AdamSchedule`), and
stores no exemplar (``stored_exemplars == 0``): what is kept are feature statistics.

Shared notation: ``f = phi(x)`` the pooled features, ``W, b`` the head, ``tau`` the training
temperature (every loss below is a cross-entropy of ``logits / tau``, ``tau = 0.1`` in the
three published implementations), ``S`` the classes seen so far (the cross-entropy is taken
over their logits only, as :class:`~methods.cl.exemplar_free.FineTune`), ``phi_old`` the
frozen network of the previous task, and
``L_fkd = lambda_fkd * ||phi(x) - phi_old(x)||_2`` over the whole batch (eTag's unsquared
:func:`~methods.cl.etag.feature_distance`, which is ``torch.dist`` as in the three codes).

PASS (Zhu et al., CVPR 2021; :class:`PASS`)
    *Self-supervised label augmentation*: every image is seen at 0/90/180/270 degrees
    (:func:`~methods.cl.etag.rotate_batch`) and labelled ``4y + k`` over a head of ``4K``
    outputs; at inference only the ``4y`` (un-rotated) logits are used.
    *Prototype augmentation*: for old classes, ``mu_c + r * e`` with ``e ~ N(0, I_d)`` is
    classified as ``4c``, where the radius ``r = sqrt(mean_c tr(Sigma_c) / d)`` is computed
    once, on the first task's classes (``Sigma_c`` the unbiased covariance of class ``c``'s
    features). Loss at task ``t > 0``:
    ``CE(rotated batch) + lambda_proto * CE(W (mu_c + r e) + b, 4c) + L_fkd``;
    one augmented prototype per image of the batch, classes uniform over the old ones.
    Defaults ``lambda_proto = 10``, ``lambda_fkd = 10``, ``tau = 0.1``: the published
    implementation's (``protoAug_weight``, ``kd_weight``, ``temp``).

IL2A (Zhu et al., NeurIPS 2021; :class:`IL2A`)
    *Class augmentation*: each batch is extended ``mix_times = 4`` times by mixup of pairs
    (a random permutation of the batch, only the pairs of different classes) with
    ``lambda ~ Beta(20, 20)``, a draw outside ``[0.4, 0.6]`` replaced by 0.5; a mix of the
    current task's classes ``a > b`` (their positions in the task) is the auxiliary class
    ``a (a - 1) / 2 + b`` of an extra head of ``n (n - 1) / 2`` outputs (``n`` new
    classes), trained jointly with the real classes and discarded at test time.
    *Semantic augmentation*: each old class keeps its mean ``mu_c`` and covariance
    ``Sigma_c``; infinitely many samples ``mu_c + N(0, lambda Sigma_c)`` are replaced by the
    ISDA upper bound of their expected cross-entropy (Wang et al. 2019, Eq. 10), i.e. the CE
    of the logits ``z_j = w_j^T mu_c + b_j + (lambda / 2) (w_j - w_c)^T Sigma_c (w_j - w_c)``
    (:func:`semantic_shift`). Loss at ``t > 0``:
    ``CE(batch + mixes, real and auxiliary classes) + lambda_proto * CE(z, c) + L_fkd``.
    Defaults ``lambda = 2.5`` (``ratio``), ``lambda_proto = 10`` (``seman_weight``),
    ``lambda_fkd = 10``, ``tau = 0.1``, ``alpha = 20``, ``mix_times = 4``: the published
    implementation's. Tasks of a single class have no pair to mix: there the class
    augmentation is off (no auxiliary head).

SSRE (Zhu et al., CVPR 2022; :class:`SSRE`)
    *Dynamic structure reorganisation*: for each task after the first, every 3x3
    convolution of the residual blocks gets a parallel 1x1 branch initialised to zero
    (:class:`ReparamConv`); the main branch (all other backbone weights, batch norm
    included, whose statistics stay frozen in eval mode) is frozen and only the side
    branches and the head train. After the task the side branch is merged into the 3x3
    kernel, ``K <- K + pad(A)`` (structural re-parameterisation: convolution is linear and
    the zero-padded 1x1 kernel is the 3x3 kernel's centre tap at the same stride, so the
    merged network computes exactly what the two branches did, and the network size stays
    that of ResNet-18).
    *Prototype selection*: a new sample's similarity to the old classes is
    ``s_i = max_c cos(f_i, mu_c)``; the samples with ``s_i > threshold`` are distilled and
    the others learn the new classes:
    ``mean_i (1 - m_i) CE_i + lambda_fkd * sum_i m_i ||f_i - f_old_i||_2
    + lambda_proto * CE(W (mu_c + r e) + b, c)`` with ``m_i = [s_i > threshold]``
    (:func:`distillation_mask`), prototypes augmented as in PASS.
    Defaults ``threshold = 0.8`` (the published third-party implementation, PyCIL's),
    ``lambda_proto = 10``, ``lambda_fkd = 1``, ``tau = 0.1`` (the authors' published
    implementation).

Deviations from the papers (ours, so that the table compares methods, not protocols):
- the optimizer, epochs, batch size and augmentation are eTag's (shared by every learner;
  the three codes use Adam 1e-3, weight decay 2e-4, x0.1 every 45 epochs, batch 64, 100
  epochs, and colour jitter / AutoAugment that the other rows do not get);
- the backbone is the suite's ResNet-18 with a single head over all classes from the start
  (the codes grow the head; SSRE's and PASS's ResNet-18 differ in small ways);
- prototypes are the means of the task's features over one more epoch of its (augmented)
  training batches, as the codes take them from the training loader;
- SSRE: both published implementations weight the samples by the similarity itself
  (``m_i = s_i``) and feed bare prototypes without noise; ``threshold=None`` gives the
  former, ``proto_noise=False`` the latter. The authors' code also folds batch norm into
  the convolutions after the first task; we keep batch norm after the merged convolution
  (frozen from task 1 on), which leaves the merge exact;
- IL2A and SSRE draw one prototype per image of the batch, as PASS (the codes: the batch size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import BasicBlock, ResNet, resnet18
from methods.cl.etag import feature_distance, rotate_batch, torchvision_init_
from methods.cl.exemplar_free import FineTune
from methods.cl.incremental import AdamSchedule, Batches, frozen_copy

# -- networks ------------------------------------------------------------------------------------------------------


class PrototypeNet(nn.Module):
    """A feature extractor and one linear head with ``outputs_per_class`` outputs per class.

    Parameters
    ----------
    backbone : ResNet
        Built with ``num_classes=0`` (no head of its own); ``features(x) -> (N, d)``.
    n_classes : int
        ``K``, every class of the dataset (the head covers them from the start).
    outputs_per_class : int
        ``m``: 4 for PASS's joint (class, rotation) head, whose column ``4c + k`` is class
        ``c`` at ``k`` quarter turns; 1 otherwise.

    Notes
    -----
    ``head(f)`` maps ``(N, d)`` to all ``(N, m K)`` outputs; ``classify(f)`` keeps the
    columns ``m c`` (the un-rotated class logits), ``(N, K)``; ``forward(x)`` is
    ``classify(features(x))``, the inference network.
    """

    def __init__(self, backbone: ResNet, n_classes: int, outputs_per_class: int = 1):
        super().__init__()
        if backbone.fc is not None:
            raise ValueError("build the backbone with num_classes=0: PrototypeNet adds the head")
        if n_classes < 1 or outputs_per_class < 1:
            raise ValueError(f"need n_classes >= 1 and outputs_per_class >= 1, got {n_classes}, {outputs_per_class}")
        self.backbone = backbone
        self.n_classes = n_classes
        self.outputs_per_class = outputs_per_class
        self.feature_dim = backbone.feature_dim
        self.fc = nn.Linear(backbone.feature_dim, n_classes * outputs_per_class)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)[:, ::self.outputs_per_class]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class ReparamConv(nn.Module):
    """A 3x3 convolution with an optional parallel 1x1 branch that merges into it (SSRE's structure reorganisation).

    ``forward(x) = conv(x) + adapter(x)`` while the branch exists. :meth:`expand` adds the
    branch (zero weights, same stride, no bias, so the output is unchanged);
    :meth:`merge` folds it into the 3x3 kernel, ``K <- K + pad(A, 1)``, and removes it.

    Parameters
    ----------
    conv : nn.Conv2d
        3x3, padding 1, no dilation or groups (the BasicBlock convolutions).
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("ReparamConv needs a plain 3x3 convolution with padding 1")
        self.conv = conv
        self.adapter: nn.Conv2d | None = None

    def expand(self) -> None:
        if self.adapter is not None:
            raise RuntimeError("the side branch already exists; merge it first")
        weight = self.conv.weight
        self.adapter = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, 1, self.conv.stride, bias=False)
        self.adapter.to(weight)
        nn.init.zeros_(self.adapter.weight)

    @torch.no_grad()
    def merge(self) -> None:
        if self.adapter is None:
            return
        self.conv.weight += F.pad(self.adapter.weight, [1, 1, 1, 1])
        self.adapter = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out if self.adapter is None else out + self.adapter(x)


def reparameterisable(backbone: ResNet) -> ResNet:
    """Wrap each BasicBlock's two 3x3 convolutions in a :class:`ReparamConv`, in place (SSRE's backbone)."""
    for block in backbone.modules():
        if isinstance(block, BasicBlock):
            block.conv1 = ReparamConv(block.conv1)
            block.conv2 = ReparamConv(block.conv2)
    return backbone


def reparam_convs(module: nn.Module) -> list[ReparamConv]:
    return [layer for layer in module.modules() if isinstance(layer, ReparamConv)]


# -- prototypes ----------------------------------------------------------------------------------------------------


@dataclass
class ClassStatistics:
    """Feature statistics of some classes.

    Attributes
    ----------
    classes : torch.Tensor
        ``(C,)`` int64 class ids, ascending.
    means : torch.Tensor
        ``(C, d)`` the prototypes ``mu_c``.
    variances : torch.Tensor
        ``(C,)`` ``tr(Sigma_c) / d``: the mean over dimensions of the unbiased feature variance.
    covariances : torch.Tensor or None
        ``(C, d, d)`` unbiased covariances ``Sigma_c`` (only when asked for).
    """

    classes: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    covariances: torch.Tensor | None = None


def class_statistics(features: torch.Tensor, labels: torch.Tensor, covariance: bool = False) -> ClassStatistics:
    """Per-class mean, mean variance and (optionally) covariance of ``(N, d)`` features with ``(N,)`` labels."""
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"need (N, d) features and (N,) labels, got {tuple(features.shape)} and {tuple(labels.shape)}")
    classes, counts = labels.unique(sorted=True, return_counts=True)
    if len(classes) == 0 or int(counts.min()) < 2:
        raise ValueError("every class needs at least two feature vectors for its variance")
    rows = [features[labels == c] for c in classes]
    return ClassStatistics(classes=classes, means=torch.stack([r.mean(0) for r in rows]),
                           variances=torch.stack([r.var(0).mean() for r in rows]),
                           covariances=torch.stack([torch.cov(r.T) for r in rows]) if covariance else None)


def prototype_radius(variances: torch.Tensor) -> float:
    """PASS's radius ``r = sqrt(mean_c tr(Sigma_c) / d)`` from the ``(C,)`` per-class ``tr(Sigma_c) / d``."""
    return float(variances.mean().sqrt())


def distillation_mask(features: torch.Tensor, prototypes: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """SSRE's prototype selection: ``m_i = [max_c cos(f_i, mu_c) > threshold]``, ``(N,)`` in {0, 1}.

    ``features`` ``(N, d)``, ``prototypes`` ``(C, d)``. ``threshold=None`` returns the
    similarity ``s_i = max_c cos(f_i, mu_c)`` itself (the published implementations' soft weight).
    """
    similarity = (F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T).max(1).values
    return similarity if threshold is None else (similarity > threshold).to(features.dtype)


def semantic_shift(weight: torch.Tensor, covariances: torch.Tensor, targets: torch.Tensor,
                   strength: float) -> torch.Tensor:
    """IL2A's semantic augmentation: ``(lambda / 2) (w_j - w_y)^T Sigma_y (w_j - w_y)`` added to logit ``j``.

    The ISDA bound (Wang et al. 2019, Eq. 10) of the expected CE over ``f ~ N(mu_y, lambda Sigma_y)``.

    Parameters
    ----------
    weight : torch.Tensor
        ``(C, d)`` head rows of the classes scored.
    covariances : torch.Tensor
        ``(B, d, d)`` covariance of each sample's class.
    targets : torch.Tensor
        ``(B,)`` each sample's class as a row of ``weight``.
    strength : float
        ``lambda`` (IL2A's ``ratio``).

    Returns
    -------
    torch.Tensor
        ``(B, C)``; zero in each sample's own class.
    """
    difference = weight.unsqueeze(0) - weight[targets].unsqueeze(1)
    return 0.5 * strength * torch.einsum("bcd,bde,bce->bc", difference, covariances, difference)


def pair_index(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """IL2A's auxiliary class of a mix of two different classes at positions ``a != b``: ``hi (hi - 1) / 2 + lo``.

    A bijection from the unordered pairs of ``n`` positions onto ``0 .. n (n - 1) / 2 - 1``.
    """
    high, low = torch.maximum(first, second), torch.minimum(first, second)
    return high * (high - 1) // 2 + low


def class_mixup(inputs: torch.Tensor, positions: torch.Tensor, generator: torch.Generator, *, alpha: float = 20.0,
                times: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """IL2A's class augmentation: mixes of pairs of different classes, labelled by :func:`pair_index`.

    Parameters
    ----------
    inputs : torch.Tensor
        ``(B, C, H, W)``.
    positions : torch.Tensor
        ``(B,)`` each image's class as its position in the current task.
    generator : torch.Generator
        CPU generator: permutations and the Beta draws.
    alpha : float
        ``lambda ~ Beta(alpha, alpha)``, a draw outside ``[0.4, 0.6]`` replaced by 0.5.
    times : int
        Random permutations of the batch; each contributes its pairs of different classes.

    Returns
    -------
    mixed : torch.Tensor
        ``(M, C, H, W)`` ``lambda x_i + (1 - lambda) x_perm(i)``, ``M <= times * B``.
    labels : torch.Tensor
        ``(M,)`` auxiliary classes.
    """
    mixed, labels = [], []
    for _ in range(times):
        partner = torch.randperm(len(positions), generator=generator).to(positions.device)
        keep = positions != positions[partner]
        # numpy's Beta sampler, seeded from the CPU generator (torch's takes no generator).
        seed = int(torch.randint(2**62, (1,), generator=generator))
        lam = np.random.default_rng(seed).beta(alpha, alpha, int(keep.sum()))
        lam = torch.as_tensor(np.where((lam < 0.4) | (lam > 0.6), 0.5, lam)).to(inputs).view(-1, 1, 1, 1)
        mixed.append(lam * inputs[keep] + (1 - lam) * inputs[partner][keep])
        labels.append(pair_index(positions[keep], positions[partner][keep]))
    return torch.cat(mixed), torch.cat(labels)


# -- learners ------------------------------------------------------------------------------------------------------


class PrototypeLearner(FineTune):
    """What PASS, IL2A and SSRE share: temperature CE over the seen classes, feature distillation, prototypes.

    Per task: :meth:`begin_task` freezes a copy of the network (``t > 0``); the subclass's
    :meth:`losses` trains; :meth:`end_task` (except after the last task) passes one more
    epoch of the task's batches through the network in eval mode and stores each new
    class's :class:`ClassStatistics` (old classes keep theirs); after the first task it also
    sets PASS's radius :func:`prototype_radius`.

    Parameters
    ----------
    net : PrototypeNet
    generator : torch.Generator
    optim : AdamSchedule, optional
    temperature : float
        ``tau``, the logits of every CE are divided by it.
    lambda_proto, lambda_fkd : float
        Weights of the prototype and the feature-distillation terms.
    proto_noise : bool
        Add ``r * N(0, I)`` to the replayed prototypes (PASS's prototype augmentation).
    covariance : bool
        Keep each class's ``(d, d)`` covariance (IL2A).

    Attributes
    ----------
    old_net : PrototypeNet or None
    statistics : ClassStatistics or None
        Of every class learned so far (after the first :meth:`end_task`).
    radius : float
        ``r`` (0 before the first task ends).
    """

    def __init__(self, net: PrototypeNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 temperature: float, lambda_proto: float, lambda_fkd: float, proto_noise: bool,
                 covariance: bool = False):
        super().__init__(net, generator=generator, optim=optim)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if lambda_proto < 0 or lambda_fkd < 0:
            raise ValueError(f"loss weights must be >= 0, got lambda_proto={lambda_proto}, lambda_fkd={lambda_fkd}")
        self.temperature = temperature
        self.lambda_proto = lambda_proto
        self.lambda_fkd = lambda_fkd
        self.proto_noise = proto_noise
        self.covariance = covariance
        self.old_net: PrototypeNet | None = None
        self.statistics: ClassStatistics | None = None
        self.radius = 0.0

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.old_net = frozen_copy(self.net) if task > 0 else None

    def rebuild_optimizer(self, extra: Sequence[nn.Parameter] = ()) -> None:
        """A fresh optimizer over the network's trainable parameters and ``extra`` (a per-task head)."""
        trainable = [p for p in self.net.parameters() if p.requires_grad] + list(extra)
        self.optimizer, self.scheduler = self.optim.build(trainable)

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """``CE(logits / tau, targets)``."""
        return F.cross_entropy(logits / self.temperature, targets, reduction=reduction)

    def feature_distillation(self, features: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``lambda_fkd * ||phi(x) - phi_old(x)||_2`` over the whole batch."""
        with torch.no_grad():
            old = self.old_net.features(inputs)
        return self.lambda_fkd * feature_distance(features, old)

    def sample_prototypes(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` old-class prototypes, classes uniform over the old classes.

        Returns ``(n, d)`` features (``mu_c``, plus ``r * N(0, I)`` if ``proto_noise``),
        ``(n,)`` class ids and ``(n,)`` rows of :attr:`statistics`.
        """
        stats = self.statistics
        rows = torch.randint(len(stats.classes), (n,), generator=self.generator).to(stats.means.device)
        prototypes = stats.means[rows]
        if self.proto_noise:
            noise = torch.randn(prototypes.shape, generator=self.generator).to(prototypes)
            prototypes = prototypes + self.radius * noise
        return prototypes, stats.classes[rows], rows

    @torch.no_grad()
    def end_task(self, batches: Batches, last: bool) -> None:
        """Store the new classes' feature statistics (not after the last task); the radius after the first."""
        if last:
            return
        self.net.eval()
        features, labels = [], []
        for inputs, targets in batches():
            features.append(self.net.features(inputs))
            labels.append(targets)
        new = class_statistics(torch.cat(features), torch.cat(labels), self.covariance)
        if self.statistics is None:
            self.radius = prototype_radius(new.variances)
            self.statistics = new
            return
        old = self.statistics
        self.statistics = ClassStatistics(
            torch.cat([old.classes, new.classes]), torch.cat([old.means, new.means]),
            torch.cat([old.variances, new.variances]),
            torch.cat([old.covariances, new.covariances]) if self.covariance else None)


class PASS(PrototypeLearner):
    """PASS (Zhu et al., CVPR 2021): rotation label augmentation, prototype augmentation, feature distillation.

    See the module docstring for the loss. Train mode (batch norm updates) in every task, as
    the published implementation.

    Parameters
    ----------
    net : PrototypeNet
        With ``outputs_per_class=4``.
    generator : torch.Generator
    optim : AdamSchedule, optional
    temperature : float
        0.1 (``temp``).
    lambda_proto : float
        10 (``protoAug_weight``).
    lambda_fkd : float
        10 (``kd_weight``).
    """

    def __init__(self, net: PrototypeNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 temperature: float = 0.1, lambda_proto: float = 10.0, lambda_fkd: float = 10.0):
        if net.outputs_per_class != 4:
            raise ValueError("PASS needs a PrototypeNet with outputs_per_class=4 (a class x rotation head)")
        super().__init__(net, generator=generator, optim=optim, temperature=temperature, lambda_proto=lambda_proto,
                         lambda_fkd=lambda_fkd, proto_noise=True)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.joint_columns = (4 * self.seen_index[:, None] + torch.arange(4, device=self.device)).flatten()

    def joint_targets(self, joint_labels: torch.Tensor) -> torch.Tensor:
        """Labels ``4y + k`` -> positions ``4 pos(y) + k`` among :attr:`joint_columns`."""
        return 4 * self.position[joint_labels // 4] + joint_labels % 4

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        rotated, rotated_labels = rotate_batch(inputs, labels)
        features = self.net.features(rotated)
        current = self.cross_entropy(self.net.head(features)[:, self.joint_columns], self.joint_targets(rotated_labels))
        if self.old_net is None:
            return {"current": current, "total": current}
        prototypes, proto_labels, _ = self.sample_prototypes(len(labels))
        proto = self.lambda_proto * self.cross_entropy(self.net.head(prototypes)[:, self.joint_columns],
                                                       self.joint_targets(4 * proto_labels))
        distill = self.feature_distillation(features, rotated)
        return {"current": current, "proto": proto, "distill": distill, "total": current + proto + distill}


class IL2A(PrototypeLearner):
    """IL2A (Zhu et al., NeurIPS 2021): class augmentation, semantic augmentation of prototypes, feature distillation.

    See the module docstring for the loss. The auxiliary head of the mixed classes
    (:attr:`mix_head`, ``d -> n (n - 1) / 2``) is built afresh for each task with at least
    two classes, trained with the network and never used at inference. Train mode in every task.

    Parameters
    ----------
    net : PrototypeNet
    generator : torch.Generator
    optim : AdamSchedule, optional
    temperature : float
        0.1.
    lambda_proto : float
        10 (``seman_weight``).
    lambda_fkd : float
        10 (``kd_weight``).
    ratio : float
        2.5, the semantic augmentation strength ``lambda``.
    alpha : float
        20, the Beta parameter of the mixup.
    mix_times : int
        4 permutations of the batch per step.
    """

    def __init__(self, net: PrototypeNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 temperature: float = 0.1, lambda_proto: float = 10.0, lambda_fkd: float = 10.0, ratio: float = 2.5,
                 alpha: float = 20.0, mix_times: int = 4):
        super().__init__(net, generator=generator, optim=optim, temperature=temperature, lambda_proto=lambda_proto,
                         lambda_fkd=lambda_fkd, proto_noise=False, covariance=True)
        if ratio < 0 or alpha <= 0 or mix_times < 0:
            raise ValueError(f"need ratio >= 0, alpha > 0, mix_times >= 0; got {ratio}, {alpha}, {mix_times}")
        self.ratio = ratio
        self.alpha = alpha
        self.mix_times = mix_times
        self.mix_head: nn.Linear | None = None

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        n = len(self.classes)
        self.mix_head = None
        if n >= 2 and self.mix_times:
            self.mix_head = nn.Linear(self.net.feature_dim, n * (n - 1) // 2).to(self.device)
        self.task_position = torch.full_like(self.position, -1)
        self.task_position[torch.tensor(self.classes, device=self.device)] = torch.arange(n, device=self.device)
        self.rebuild_optimizer(() if self.mix_head is None else tuple(self.mix_head.parameters()))

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        targets = self.position[labels]
        if self.mix_head is not None:
            mixed, mixed_labels = class_mixup(inputs, self.task_position[labels], self.generator, alpha=self.alpha,
                                              times=self.mix_times)
            inputs = torch.cat([inputs, mixed])
        features = self.net.features(inputs)
        logits = self.net.classify(features)[:, self.seen_index]
        if self.mix_head is not None:
            logits = torch.cat([logits, self.mix_head(features)], 1)
            targets = torch.cat([targets, len(self.seen_index) + mixed_labels])
        current = self.cross_entropy(logits, targets)
        if self.old_net is None:
            return {"current": current, "total": current}
        prototypes, proto_labels, rows = self.sample_prototypes(len(labels))
        proto_targets = self.position[proto_labels]
        # One (C, d) x (d, d) product per distinct class drawn, not per prototype.
        distinct, inverse = rows.unique(return_inverse=True)
        weight = self.net.fc.weight[self.seen_index]
        shift = semantic_shift(weight, self.statistics.covariances[distinct],
                               self.position[self.statistics.classes[distinct]], self.ratio)[inverse]
        proto_logits = self.net.classify(prototypes)[:, self.seen_index] + shift
        proto = self.lambda_proto * self.cross_entropy(proto_logits, proto_targets)
        distill = self.feature_distillation(features, inputs)
        return {"current": current, "proto": proto, "distill": distill, "total": current + proto + distill}


class SSRE(PrototypeLearner):
    """SSRE (Zhu et al., CVPR 2022): structure reorganisation, prototype selection, prototype augmentation.

    See the module docstring for the loss. Task 0 trains the whole network (train mode)
    with the CE only. At each later task :meth:`begin_task` adds the zero side branches and
    freezes the main branch; :meth:`losses` runs in eval mode (batch-norm statistics
    frozen); :meth:`end_task` merges the branches (after every task, the last included, so
    that the inference network is always the plain ResNet-18) and unfreezes the network.
    Besides the loss terms, :meth:`losses` reports ``selected``, the fraction of the batch
    distilled (not part of the total).

    Parameters
    ----------
    net : PrototypeNet
        Its backbone passed through :func:`reparameterisable`.
    generator : torch.Generator
    optim : AdamSchedule, optional
    temperature : float
        0.1.
    lambda_proto : float
        10.
    lambda_fkd : float
        1 (the authors' implementation; PyCIL uses 2).
    threshold : float or None
        0.8, the cosine similarity above which a new sample is distilled; None weights each
        sample by its similarity (the published implementations).
    proto_noise : bool
        True: prototypes augmented as in PASS (the published implementations use bare means).
    """

    def __init__(self, net: PrototypeNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 temperature: float = 0.1, lambda_proto: float = 10.0, lambda_fkd: float = 1.0,
                 threshold: float | None = 0.8, proto_noise: bool = True):
        if not reparam_convs(net):
            raise ValueError("SSRE needs a backbone with ReparamConv layers: pass it through reparameterisable()")
        if threshold is not None and not -1 <= threshold <= 1:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        super().__init__(net, generator=generator, optim=optim, temperature=temperature, lambda_proto=lambda_proto,
                         lambda_fkd=lambda_fkd, proto_noise=proto_noise)
        self.threshold = threshold

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        if task == 0:
            return
        for layer in reparam_convs(self.net):
            layer.expand()
        for name, parameter in self.net.backbone.named_parameters():
            parameter.requires_grad_(".adapter." in name)
        self.rebuild_optimizer()

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        targets = self.position[labels]
        if self.old_net is None:
            self.net.train()
            current = self.cross_entropy(self.net(inputs)[:, self.seen_index], targets)
            return {"current": current, "total": current}
        self.net.eval()
        features = self.net.features(inputs)
        with torch.no_grad():
            old_features = self.old_net.features(inputs)
            selected = distillation_mask(features, self.statistics.means, self.threshold)
        per_sample = self.cross_entropy(self.net.classify(features)[:, self.seen_index], targets, reduction="none")
        current = (per_sample * (1 - selected)).mean()
        distill = self.lambda_fkd * (selected * (features - old_features).norm(dim=1)).sum()
        prototypes, proto_labels, _ = self.sample_prototypes(len(labels))
        proto = self.lambda_proto * self.cross_entropy(self.net.classify(prototypes)[:, self.seen_index],
                                                       self.position[proto_labels])
        return {"current": current, "proto": proto, "distill": distill, "selected": selected.mean().detach(),
                "total": current + proto + distill}

    def end_task(self, batches: Batches, last: bool) -> None:
        """Merge the side branches into the 3x3 kernels and unfreeze, then store the prototypes."""
        for layer in reparam_convs(self.net):
            layer.merge()
        self.net.requires_grad_(True)
        super().end_task(batches, last)


# -- builders ------------------------------------------------------------------------------------------------------


def _backbone(width: int, channels: int) -> ResNet:
    return resnet18(0, width, channels)


def _prototype_net(backbone: ResNet, n_classes: int, outputs_per_class: int) -> PrototypeNet:
    """The net with eTag's code's Kaiming fan-out initialisation (on torch's default device: build it inside
    ``with device:`` for another)."""
    return torchvision_init_(PrototypeNet(backbone, n_classes, outputs_per_class))


def build_pass(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
               optim: AdamSchedule | None = None, **hyper) -> PASS:
    """PASS on ResNet-18 (base ``width``, ``channels`` input channels) with a ``4 n_classes`` head.

    ``hyper``: :class:`PASS`'s ``temperature`` (0.1), ``lambda_proto`` (10), ``lambda_fkd`` (10).
    Every tensor a learner makes follows the network's device.
    """
    return PASS(_prototype_net(_backbone(width, channels), n_classes, 4), generator=generator, optim=optim,
                **hyper)


def build_il2a(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
               optim: AdamSchedule | None = None, **hyper) -> IL2A:
    """IL2A on ResNet-18. ``hyper``: :class:`IL2A`'s ``temperature`` (0.1), ``lambda_proto`` (10),
    ``lambda_fkd`` (10), ``ratio`` (2.5), ``alpha`` (20), ``mix_times`` (4)."""
    return IL2A(_prototype_net(_backbone(width, channels), n_classes, 1), generator=generator, optim=optim,
                **hyper)


def build_ssre(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
               optim: AdamSchedule | None = None, **hyper) -> SSRE:
    """SSRE on ResNet-18 with re-parameterisable block convolutions. ``hyper``: :class:`SSRE`'s
    ``temperature`` (0.1), ``lambda_proto`` (10), ``lambda_fkd`` (1), ``threshold`` (0.8), ``proto_noise`` (True)."""
    backbone = reparameterisable(_backbone(width, channels))
    return SSRE(_prototype_net(backbone, n_classes, 1), generator=generator, optim=optim, **hyper)
