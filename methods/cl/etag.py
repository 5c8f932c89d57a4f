"""eTag: class-incremental learning via embedding distillation and task-oriented generation (Huang et al., AAAI 2024).

Exemplar-free class-incremental learning (arXiv 2304.10103), written from the method
description in docs/papers/etag.md, with details it leaves open settled from the
authors' code (libo-huang/eTag, ``eTag_train.py``, ``models/resnet_aug.py``, ``models/cvae.py``):

- Hierarchical embedding distillation: a ResNet-18 (:class:`AuxiliaryResNet`) with one
  auxiliary classifier after each of its 4 stages, trained on 0/90/180/270 degree rotations
  (:func:`rotate_batch`, labels ``4y + k``); for ``t > 0`` the first three auxiliary heads
  are distilled from the frozen old network (KL at temperature 3) and the pooled features
  are pulled towards the old ones by an unsquared L2 distance (:func:`incremental_loss`).
- Task-oriented generation: a conditional VAE over the pooled features
  (:class:`FeatureCVAE`), trained after each task but the last with the network frozen, so
  that the current classifier labels its features correctly, and distilled from the
  previous generator (:func:`generator_loss`). Its old-class features replace exemplars
  when the classifier learns the next task.
- :class:`ETag` puts these together behind the :class:`~methods.cl.incremental.IncrementalLearner`
  interface. No exemplar and no prototype is ever stored.
- GFR (Liu et al., CVPR-W 2020), a baseline of the appendix's Table B.1, is a configuration of the
  same learner: a ResNet-18 without auxiliary heads, no self-supervision, distillation of the pooled
  features only (:func:`feature_distillation_loss`) and the conditional VAE without the classifier
  terms (the appendix: GFR uses eTag's generator; its eGFR adds eTag's embedding distillation).

Choices the description leaves open (from the public code unless marked ours):
- rotations are stacked rotation-major: the un-rotated copies are the first ``B`` rows (ours;
  the code interleaves them, which only reorders the batch);
- the main classifier's CE at task 0 uses the un-rotated rows of the rotated forward pass,
  so batch norm sees the 4B-row batch; the auxiliary losses train the backbone too;
- ``||f - f_old||_2`` is ``torch.dist`` over the whole ``(4B, d)`` batch (one Frobenius norm);
- the generator's reconstruction and KL terms are summed over dimensions and averaged over
  the batch; its distillation term is summed over the batch of generated features;
- at task 0 the generator's CE on reconstructions is unweighted (there is no old class);
- ``F = n_old / n_new`` (:func:`~methods.cl.incremental.old_task_factor`);
- convolutions get the code's (torchvision's) Kaiming-normal fan-out initialisation (:func:`torchvision_init_`);
- at inference only the main classifier runs; the auxiliary heads are skipped (ours).

Parameter count (Table C.6, our reading): the paper's 43.20 M for eTag on CIFAR-100 equals
the backbone (11.22 M) + the first three auxiliary heads (30.52 M) + the generator (1.46 M)
exactly; its eGFR, eLucir and ePASS rows also add 30.52 M to their base networks. We infer
that the code's fourth head (a stride-1 copy of the last stage + FC, 9.65 M) is not counted
(:func:`table_c6_parameters`). The network trained here has all four heads (51.39 M), as the code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import BasicBlock, ResNet, count_parameters
from methods.cl.incremental import AdamSchedule, Batches, IncrementalLearner, frozen_copy, old_task_factor


def rotate_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-supervised expansion (the paper's self-supervision): each image at 0/90/180/270 degrees.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, S, S)`` square images.
    y : torch.Tensor
        ``(B,)`` int64 class labels.

    Returns
    -------
    x4 : torch.Tensor
        ``(4B, C, S, S)``: rows ``kB .. (k+1)B - 1`` are ``torch.rot90(x, k, (2, 3))``
        (counter-clockwise as displayed); the first ``B`` rows are ``x`` itself.
    y4 : torch.Tensor
        ``(4B,)`` joint labels ``4 y + k`` over ``4 * n_classes`` (class, rotation) pairs.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations need square images, got {tuple(x.shape[-2:])}")
    x4 = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(4)])
    y4 = torch.cat([4 * y + k for k in range(4)])
    return x4, y4


def jigsaw_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Jigsaw self-supervision (appendix Table C.2): each image with its 2 x 2 tiles in 4 orders.

    Copy ``k`` moves the tile at reading position ``i`` (top-left, top-right, bottom-left,
    bottom-right) to position ``(i + k) % 4`` (ours: the appendix names the task, not its
    permutations; four cyclic orders give as many copies as the rotations).

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, H, W)`` with even ``H`` and ``W``.
    y : torch.Tensor
        ``(B,)`` int64 class labels.

    Returns
    -------
    x4, y4 : torch.Tensor
        ``(4B, C, H, W)`` (the first ``B`` rows are ``x``) and labels ``4 y + k``.
    """
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"jigsaw tiles need even image sides, got {height} x {width}")
    rows = x.split(height // 2, dim=2)
    tiles = [tile for row in rows for tile in row.split(width // 2, dim=3)]
    copies = []
    for k in range(4):
        placed = [tiles[(i - k) % 4] for i in range(4)]
        copies.append(torch.cat([torch.cat(placed[:2], 3), torch.cat(placed[2:], 3)], 2))
    return torch.cat(copies), torch.cat([4 * y + k for k in range(4)])


CHANNEL_ORDERS = tuple(itertools.permutations(range(3)))


def channel_permutation_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour-channel permutation self-supervision (appendix Table C.2): each RGB image in all 6 channel orders.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, 3, H, W)``.
    y : torch.Tensor
        ``(B,)`` int64 class labels.

    Returns
    -------
    x6, y6 : torch.Tensor
        ``(6B, 3, H, W)``: rows ``kB .. (k+1)B - 1`` have the channels in the order
        ``CHANNEL_ORDERS[k]`` (the first is the identity), and labels ``6 y + k``.
    """
    if x.shape[1] != 3:
        raise ValueError(f"colour-channel permutation needs 3 channels, got {x.shape[1]}")
    return (torch.cat([x[:, list(order)] for order in CHANNEL_ORDERS]),
            torch.cat([len(CHANNEL_ORDERS) * y + k for k in range(len(CHANNEL_ORDERS))]))


def plain_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """No self-supervision (the ablations' "no SS"): the batch and its class labels unchanged."""
    return x, y


# Self-supervised task -> (batch expansion, copies per image). Rotation is eTag's; the others are the
# alternatives of appendix Table C.2 and the ablations' "no SS" (Table C.1).
SELF_SUPERVISION = {"rotation": (rotate_batch, 4), "jigsaw": (jigsaw_batch, 4),
                    "colorperm": (channel_permutation_batch, len(CHANNEL_ORDERS)), "none": (plain_batch, 1)}


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """A ResNet stage: ``blocks`` BasicBlocks, the first with ``stride``."""
    return nn.Sequential(*[BasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                           for i in range(blocks)])


def torchvision_init_(module: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-out, ReLU) convolutions and unit/zero batch norms, in place (the code's init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def global_average_pool() -> nn.Sequential:
    """``(N, C, H, W)`` -> ``(N, C)``: the mean over positions (the ResNet's and VGG's pooling)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


class AuxiliaryHead(nn.Module):
    """An HSAKD auxiliary classifier: backbone stages, pooling, FC to ``transforms * num_classes``.

    ``pool`` maps the stages' ``(N, C, H, W)`` output to ``(N, feature_dim)``; default global
    average pooling (ResNet, VGG; a backbone with another pooling, such as TinyViT's normalised
    token mean, passes its own copy).
    """

    def __init__(self, stages: nn.Sequential, feature_dim: int, outputs: int, pool: nn.Module | None = None):
        super().__init__()
        self.stages = stages
        self.pool = global_average_pool() if pool is None else pool
        self.fc = nn.Linear(feature_dim, outputs)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(feature_map)))


class AuxiliaryResNet(nn.Module):
    """ResNet-18 (CIFAR 3x3 stem) with an auxiliary classifier per stage (its hierarchical embedding distillation).

    Parameters
    ----------
    num_classes : int
        Outputs of the main classifier, all classes from the start (100 for CIFAR-100).
    width : int
        Base width; stages have ``width * (1, 2, 4, 8)`` channels, features ``8 * width`` (512 at 64).
    in_channels : int
    blocks : tuple of int
        BasicBlocks per stage; (2, 2, 2, 2) is ResNet-18.
    transforms : int
        Copies per image of the self-supervised task (:data:`SELF_SUPERVISION`): 4 rotations in
        eTag, 1 without self-supervision (the heads then predict the class alone).
    heads : bool
        Build the auxiliary classifiers (eTag). False: none, the plain ResNet-18 of GFR
        (``aux_heads`` is empty and ``forward`` returns an empty list for them).

    Notes
    -----
    The main network is :class:`~methods.cl.backbones.ResNet` (``self.backbone``). Head ``i``
    stacks copies of the stages after stage ``i`` and an FC to ``transforms * num_classes``
    (class, transform) outputs; the last head, with no stage after it, stacks one more stage
    of the last width at stride 1 (``models/resnet_aug.py``: ``block_extractor4``).
    ``forward(x)`` maps ``(N, C, H, W)`` to ``(logits (N, num_classes), features (N, 8 * width),
    [aux (N, transforms * num_classes)] * len(blocks))``; the heads see the stage outputs without
    detaching, so their losses train the backbone too. Other backbones with the same interface:
    :class:`methods.cl.aux_backbones.AuxiliaryNet` (appendix Table C.3).
    """

    nonnegative_features = True  # pooled after a ReLU: the generator's decoder ends with one

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3, blocks: Sequence[int] = (2, 2, 2, 2),
                 transforms: int = 4, heads: bool = True):
        super().__init__()
        if transforms < 1:
            raise ValueError(f"transforms must be >= 1, got {transforms}")
        self.backbone = ResNet(num_classes, width, in_channels, tuple(blocks))
        self.num_classes = num_classes
        self.transforms = transforms
        self.feature_dim = self.backbone.feature_dim
        widths = [width * 2 ** i for i in range(len(blocks))]
        built = []
        for index in range(len(blocks) if heads else 0):
            if index + 1 < len(blocks):
                stages = [_stage(widths[j - 1], widths[j], blocks[j], 2) for j in range(index + 1, len(blocks))]
            else:
                stages = [_stage(widths[-1], widths[-1], blocks[-1], 1)]
            built.append(AuxiliaryHead(nn.Sequential(*stages), widths[-1], transforms * num_classes))
        self.aux_heads = nn.ModuleList(built)
        torchvision_init_(self)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each stage, ``[(N, width * 2**i, H_i, W_i)]``."""
        out = F.relu(self.backbone.bn1(self.backbone.conv1(x)))
        maps = []
        for stage in self.backbone.stages:
            out = stage(out)
            maps.append(out)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> pooled ``(N, 8 * width)`` features (no auxiliary head runs)."""
        return self.backbone.features(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The main classifier: ``(N, 8 * width)`` -> ``(N, num_classes)``."""
        return self.backbone.classify(features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        maps = self.feature_maps(x)
        features = F.adaptive_avg_pool2d(maps[-1], 1).flatten(1)
        return self.classify(features), features, [head(m) for head, m in zip(self.aux_heads, maps)]


class FeatureCVAE(nn.Module):
    """The conditional VAE over pooled features (the paper's task-oriented generation; ``models/cvae.py``).

    Parameters
    ----------
    feature_dim : int
        ``d``, the pooled feature size (512).
    n_classes : int
        ``K``, the size of the one-hot condition (100).
    hidden : int
        Width of the hidden layers (512).
    latent : int
        Size of ``z`` (200).

    Notes
    -----
    Encoder: ``(d + K) -> hidden -> hidden`` with ReLU, then linear ``mu`` and ``logvar``
    heads ``hidden -> latent``. Decoder: ``(latent + K) -> hidden -> hidden -> d`` with a
    ReLU after every layer, the last included (the pooled features it imitates are
    non-negative); ``nonnegative=False`` leaves the last layer linear, for a backbone whose
    features take both signs (TinyViT's layer-normalised ones, appendix Table C.3).
    """

    def __init__(self, feature_dim: int = 512, n_classes: int = 100, hidden: int = 512, latent: int = 200,
                 nonnegative: bool = True):
        super().__init__()
        self.n_classes = n_classes
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(feature_dim + n_classes, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent + n_classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, feature_dim), *([nn.ReLU()] if nonnegative else []))

    def _one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.n_classes).to(like)

    def encode(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, d)``, ``(N,)`` -> ``mu``, ``logvar``, each ``(N, latent)``."""
        hidden = self.encoder(torch.cat([features, self._one_hot(labels, features)], 1))
        return self.mu(hidden), self.logvar(hidden)

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(N, latent)``, ``(N,)`` -> features ``(N, d)``."""
        return self.decoder(torch.cat([z, self._one_hot(labels, z)], 1))

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, latent)`` standard normal draws (from ``generator`` on the CPU), on the decoder's device."""
        weight = self.decoder[0].weight
        return torch.randn(n, self.latent, generator=generator).to(weight)

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction ``(N, d)``, ``mu`` and ``logvar`` ``(N, latent)``, by the reparameterisation trick."""
        mu, logvar = self.encode(features, labels)
        noise = torch.randn(mu.shape, generator=generator).to(mu)
        return self.decode(mu + noise * torch.exp(0.5 * logvar), labels), mu, logvar

    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Features ``(N, d)`` of the classes ``labels`` ``(N,)``, decoded from ``z ~ N(0, I)``."""
        return self.decode(self.sample_latent(len(labels), generator), labels)


def table_c6_parameters(net: AuxiliaryResNet, cvae: FeatureCVAE) -> int:
    """The parameters the paper's Table C.6 counts for eTag: backbone, first three auxiliary heads, generator.

    At width 64, 100 classes: 11,220,132 + 30,521,776 + 1,461,136 = 43,203,044 (the
    paper's 43.20 M); the fourth head the code trains (9,646,480) is not counted.
    """
    return count_parameters(net.backbone) + sum(count_parameters(h) for h in net.aux_heads[:3]) + count_parameters(cvae)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """``tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))``, averaged over the batch (Hinton et al.)."""
    return F.kl_div(F.log_softmax(student / tau, 1), F.softmax(teacher / tau, 1), reduction="batchmean") * tau ** 2


def aux_distillation(aux: Sequence[torch.Tensor], aux_old: Sequence[torch.Tensor], tau: float = 3.0) -> torch.Tensor:
    """``sum_i KL_tau(aux_i || aux_i_old)`` over every auxiliary head but the last (the first 3 of ResNet-18)."""
    return sum(distill_kl(new, old, tau) for new, old in zip(aux[:-1], aux_old[:-1]))


def feature_distance(features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
    """``||f - f_old||_2``: the unsquared L2 norm of the whole ``(N, d)`` difference (``torch.dist``)."""
    return torch.dist(features, old_features, 2)


def task0_loss(logits: torch.Tensor, labels: torch.Tensor, aux: Sequence[torch.Tensor],
               rotated_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Task-0 loss (docs/papers/etag.md): CE of the main classifier + the sum of the auxiliary CEs.

    Without auxiliary heads (``aux`` empty: GFR's network) it is the main classifier's CE alone.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)`` main logits of the un-rotated images.
    labels : torch.Tensor
        ``(B,)`` classes.
    aux : sequence of torch.Tensor
        Each ``(4B, 4K)``: an auxiliary head on the rotated batch.
    rotated_labels : torch.Tensor
        ``(4B,)`` labels ``4y + k``.

    Returns
    -------
    dict
        ``current`` (main CE), ``aux`` (sum over heads; absent without heads), ``total``: tensors whose
        terms add to ``total``.
    """
    terms = {"current": F.cross_entropy(logits, labels)}
    if aux:
        terms["aux"] = sum(F.cross_entropy(head, rotated_labels) for head in aux)
    return {**terms, "total": sum(terms.values())}


def replay_terms(logits: torch.Tensor, labels: torch.Tensor, synthetic_logits: torch.Tensor,
                 synthetic_labels: torch.Tensor, factor: float) -> dict[str, torch.Tensor]:
    """The classifier's two CE terms at task ``t > 0``: ``CE(real current) / (F+1)`` and ``CE(replayed old) F/(F+1)``.

    ``logits`` ``(B, K)`` of the real current images with their classes ``labels`` ``(B,)``;
    ``synthetic_logits`` ``(M, K)`` of replayed old-class features (generated, or prototypes in the
    ablations) with ``synthetic_labels`` ``(M,)``; ``factor`` is ``F``. Returns ``current`` and ``old``.
    """
    return {"current": F.cross_entropy(logits, labels) / (factor + 1),
            "old": F.cross_entropy(synthetic_logits, synthetic_labels) * factor / (factor + 1)}


def incremental_loss(logits: torch.Tensor, labels: torch.Tensor, synthetic_logits: torch.Tensor,
                     synthetic_labels: torch.Tensor, aux: Sequence[torch.Tensor], aux_old: Sequence[torch.Tensor],
                     features: torch.Tensor, old_features: torch.Tensor, *, factor: float, tradeoff: float = 1.0,
                     tau: float = 3.0) -> dict[str, torch.Tensor]:
    """Task ``t > 0`` loss of the network with eTag's embedding distillation (docs/papers/etag.md).

    ``CE(real current) / (F+1) + CE(generated old) * F/(F+1)
    + tradeoff * (F * sum_{i<last} KL_tau(aux_i || aux_i_old) + F * ||f - f_old||_2)``.

    Parameters
    ----------
    logits, labels : torch.Tensor
        ``(B, K)`` main logits of the real (un-rotated) current images and their ``(B,)`` classes.
    synthetic_logits, synthetic_labels : torch.Tensor
        ``(M, K)`` main logits of generated old-class features and their ``(M,)`` classes.
    aux, aux_old : sequence of torch.Tensor
        The new and frozen old network's auxiliary logits on the rotated batch, each ``(4B, 4K)``.
    features, old_features : torch.Tensor
        ``(4B, d)`` pooled features of the rotated batch, new and old network.
    factor : float
        ``F``, :func:`~methods.cl.incremental.old_task_factor`.
    tradeoff : float
        1.0 in eTag.
    tau : float
        KD temperature, 3.

    Returns
    -------
    dict
        ``current``, ``old``, ``kd``, ``feature`` (each as it enters the total) and ``total``.
    """
    terms = replay_terms(logits, labels, synthetic_logits, synthetic_labels, factor)
    terms["kd"] = tradeoff * factor * aux_distillation(aux, aux_old, tau)
    terms["feature"] = tradeoff * factor * feature_distance(features, old_features)
    return {**terms, "total": sum(terms.values())}


def feature_distillation_loss(logits: torch.Tensor, labels: torch.Tensor, synthetic_logits: torch.Tensor,
                              synthetic_labels: torch.Tensor, features: torch.Tensor, old_features: torch.Tensor, *,
                              factor: float, tradeoff: float = 1.0) -> dict[str, torch.Tensor]:
    """Task ``t > 0`` loss of GFR (Liu et al., CVPR-W 2020): feature distillation and generative feature replay.

    ``CE(real current) / (F+1) + CE(generated old) * F/(F+1) + tradeoff * F * ||f - f_old||_2``: the
    classifier learns the current classes from real features and the old ones from replayed features,
    while the extractor's pooled features of the current images are kept close to the frozen old
    extractor's (GFR's feature distillation; the published implementation's default weights the
    unsquared L2 distance by ``tradeoff = 1`` times ``F``, and weights the two CEs as here). No
    auxiliary head and no self-supervision: eTag's loss (:func:`incremental_loss`) without its
    auxiliary KD, on the un-expanded batch.

    Parameters
    ----------
    logits, labels, synthetic_logits, synthetic_labels : torch.Tensor
        As :func:`incremental_loss`.
    features, old_features : torch.Tensor
        ``(B, d)`` pooled features of the real current images, new and frozen old extractor.
    factor, tradeoff : float
        As :func:`incremental_loss`.

    Returns
    -------
    dict
        ``current``, ``old``, ``feature`` (each as it enters the total) and ``total``.
    """
    terms = replay_terms(logits, labels, synthetic_logits, synthetic_labels, factor)
    terms["feature"] = tradeoff * factor * feature_distance(features, old_features)
    return {**terms, "total": sum(terms.values())}


def logit_distillation_loss(logits: torch.Tensor, labels: torch.Tensor, synthetic_logits: torch.Tensor,
                            synthetic_labels: torch.Tensor, old_class_logits: torch.Tensor,
                            old_model_logits: torch.Tensor, *, factor: float, tradeoff: float = 1.0,
                            tau: float = 3.0) -> dict[str, torch.Tensor]:
    """Task ``t > 0`` loss with the ablations' naive KD (appendix Table C.1, "KD naive"): plain logit distillation.

    ``CE(real current) / (F+1) + CE(replayed old) * F/(F+1) + tradeoff * F * KL_tau(z_old-classes || z_old)``:
    the embedding distillation (auxiliary heads and feature distance) is replaced by Hinton's KD of the
    main classifier's old-class logits (ours: the appendix names the switch, not its form; the old
    classes' logits, as LwF, at eTag's temperature and weight).

    Parameters
    ----------
    logits, labels, synthetic_logits, synthetic_labels : torch.Tensor
        As :func:`incremental_loss`.
    old_class_logits, old_model_logits : torch.Tensor
        ``(B, K_old)``: the current and the frozen old network's main logits of the old classes on the
        real current images.
    factor, tradeoff, tau : float
        As :func:`incremental_loss`.

    Returns
    -------
    dict
        ``current``, ``old``, ``kd`` and ``total``.
    """
    terms = replay_terms(logits, labels, synthetic_logits, synthetic_labels, factor)
    terms["kd"] = tradeoff * factor * distill_kl(old_class_logits, old_model_logits, tau)
    return {**terms, "total": sum(terms.values())}


def generator_loss(features: torch.Tensor, reconstruction: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                   reconstruction_logits: torch.Tensor | None, labels: torch.Tensor, *, factor: float,
                   tradeoff: float = 1.0, vae_tradeoff: float = 1e-3, synthetic_logits: torch.Tensor | None = None,
                   synthetic_labels: torch.Tensor | None = None, synthetic: torch.Tensor | None = None,
                   synthetic_previous: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The generator's loss (docs/papers/etag.md).

    ``sum MSE(recon, f) / B + KL(q(z|f, y) || N(0, I)) / B
    + tradeoff * (CE(C(recon), y) / (F+1) + CE(C(G_t(z, c_old)), c_old) * F/(F+1))
    + vae_tradeoff * F * sum MSE(G_t(z, c_old), G_{t-1}(z, c_old))``, with ``C`` the
    current (frozen) main classifier. At task 0 (``factor = 0``, no ``synthetic*``) the
    old-class terms vanish. The ablations' naive generation (appendix Table C.1, "GE naive") passes no
    classifier logits (``reconstruction_logits`` and ``synthetic_logits`` None): a conditional VAE
    distilled from its predecessor, with no task-oriented term.

    Parameters
    ----------
    features : torch.Tensor
        ``(B, d)`` real features of current-task images (frozen network).
    reconstruction, mu, logvar : torch.Tensor
        The CVAE's output on ``features``: ``(B, d)``, ``(B, latent)``, ``(B, latent)``.
    reconstruction_logits : torch.Tensor or None
        ``(B, K)`` classifier logits of ``reconstruction``; None: no ``current`` term.
    labels : torch.Tensor
        ``(B,)`` classes.
    factor : float
        ``F``; 0 at task 0.
    synthetic_logits, synthetic_labels : torch.Tensor, optional
        ``(M, K)`` logits of generated old-class features ``synthetic`` and their classes.
    synthetic, synthetic_previous : torch.Tensor, optional
        ``(M, d)`` features of the same ``(z, c_old)`` from the current and previous generator.

    Returns
    -------
    dict
        ``reconstruction``, ``kl``, ``current``, ``old``, ``distill`` (each as it enters
        the total) and ``total``.
    """
    batch = features.shape[0]
    reconstruction_term = F.mse_loss(reconstruction, features, reduction="sum") / batch
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / batch
    zero = reconstruction_term.new_zeros(())
    current = old = distill = zero
    if reconstruction_logits is not None:
        current = tradeoff * F.cross_entropy(reconstruction_logits, labels) / (factor + 1)
    if synthetic_logits is not None:
        old = tradeoff * F.cross_entropy(synthetic_logits, synthetic_labels) * factor / (factor + 1)
    if synthetic is not None:
        distill = vae_tradeoff * factor * F.mse_loss(synthetic, synthetic_previous, reduction="sum")
    return {"reconstruction": reconstruction_term, "kl": kl, "current": current, "old": old, "distill": distill,
            "total": reconstruction_term + kl + current + old + distill}


GENERATIONS = ("task", "naive", "prototype")
DISTILLATIONS = ("embedding", "logit", "feature")


class ETag(IncrementalLearner):
    """eTag (docs/papers/etag.md): embedding distillation and task-oriented generation, exemplar-free.

    Per task ``t``: the network trains for the loop's ``epochs`` with :func:`task0_loss`
    (``t = 0``, train mode) or :func:`incremental_loss` (``t > 0``, eval mode so batch-norm
    statistics stay frozen, against a frozen copy of the previous network and with
    ``synthetic_batch`` generated old-class features per step, classes drawn uniformly over
    the old classes); then, except after the last task, the generator trains for
    ``generator_epochs`` epochs with the network frozen (:func:`generator_loss`), distilled
    from a frozen copy of itself as it was before this task.

    Three switches give the variants of the appendix's ablations (Tables C.1, C.2 and C.4), and GFR
    (Table B.1), as configurations of this one learner; the defaults are eTag.

    Parameters
    ----------
    net : AuxiliaryResNet
        On the target device; its heads' ``transforms`` must match ``self_supervision``. Any network with
        its interface works: :class:`methods.cl.aux_backbones.AuxiliaryNet` (VGG-11, TinyViT).
    generator : torch.Generator
        CPU generator for shuffling, augmentation, generated classes and latent draws.
    generator_epochs : int
        Epochs of the generator per task (100 in the paper); required, no default (the
        public code's default of 1 is a defect).
    optim : AdamSchedule, optional
        The network's optimizer, default ``AdamSchedule()``: Adam, lr 1e-3, weight decay 2e-4, x0.1 every 30 epochs,
        gradient norm clipped at 1e4.
    generator_lr : float
        Adam learning rate of the generator: 1e-4 (appendix A.4; the code's default 1e-3
        differs). No weight decay, no schedule, a fresh optimizer per task (as the code).
    tradeoff, vae_tradeoff : float
        1.0 and 1e-3.
    tau : float
        KD temperature, 3.
    synthetic_batch : int
        Generated old-class features per step: 128 (the batch size).
    hidden, latent : int
        Generator widths, 512 and 200.
    self_supervision : str
        The self-supervised expansion of every batch (:data:`SELF_SUPERVISION`): ``"rotation"``
        (eTag), ``"jigsaw"`` or ``"colorperm"`` (Table C.2), or ``"none"`` (Table C.1's "no SS": no
        expanded batch, the auxiliary heads predict the class alone).
    distillation : str
        ``"embedding"`` (eTag's hierarchical embedding distillation, :func:`incremental_loss`) or
        ``"logit"`` (Table C.1's "KD naive", :func:`logit_distillation_loss`: the auxiliary heads are
        then trained at task 0 only and not run after it), or ``"feature"`` (GFR, Table B.1's baseline,
        :func:`feature_distillation_loss`: the pooled features alone are distilled, and the network has no
        auxiliary head, so ``self_supervision`` must be ``"none"``; with ``generation="naive"`` this is GFR
        with eTag's conditional VAE as the appendix runs it).
    generation : str
        Where old-class features come from at ``t > 0``: ``"task"`` (eTag's task-oriented generator),
        ``"naive"`` (Table C.1's "GE naive": the same conditional VAE without the classifier terms of
        :func:`generator_loss`), or ``"prototype"`` (Table C.4's "fixed prototype", PASS's prototype
        augmentation: each class's mean feature, kept when its task ends, plus Gaussian noise of radius
        ``r``, with ``r^2`` the mean over the first task's classes of their features' variance averaged
        over dimensions; no generator).

    Attributes
    ----------
    cvae : FeatureCVAE or None
        None with ``generation="prototype"``.
    prototypes : torch.Tensor or None
        ``(K, d)`` class-mean features of the classes learned so far (rows of other classes are zero),
        with ``generation="prototype"``; ``radius`` its noise scale.
    old_net : AuxiliaryResNet or None
        Frozen copy of the network at the end of the previous task.
    factor : float
        ``F`` of the current task (0 at task 0).
    """

    def __init__(self, net: AuxiliaryResNet, *, generator: torch.Generator, generator_epochs: int,
                 optim: AdamSchedule | None = None, generator_lr: float = 1e-4, tradeoff: float = 1.0,
                 vae_tradeoff: float = 1e-3, tau: float = 3.0, synthetic_batch: int = 128, hidden: int = 512,
                 latent: int = 200, self_supervision: str = "rotation", distillation: str = "embedding",
                 generation: str = "task"):
        super().__init__(net, generator=generator, optim=optim)
        if generator_epochs < 1:
            raise ValueError(f"generator_epochs must be >= 1, got {generator_epochs}")
        for name, value, options in (("self_supervision", self_supervision, tuple(SELF_SUPERVISION)),
                                     ("distillation", distillation, DISTILLATIONS),
                                     ("generation", generation, GENERATIONS)):
            if value not in options:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")
        self.expand, copies = SELF_SUPERVISION[self_supervision]
        plain = distillation == "feature"
        if plain != (len(net.aux_heads) == 0):
            raise ValueError(f"distillation {distillation!r} needs a network {'without' if plain else 'with'} "
                             f"auxiliary heads; build it with heads={not plain}")
        if plain and self_supervision != "none":
            raise ValueError(f"distillation 'feature' (GFR) has no auxiliary head for the self-supervised task "
                             f"{self_supervision!r}; use self_supervision='none'")
        if net.transforms != copies:
            raise ValueError(f"self_supervision {self_supervision!r} makes {copies} copies of each image, but the "
                             f"network's auxiliary heads predict {net.transforms}; build it with transforms={copies}")
        self.self_supervision, self.distillation, self.generation = self_supervision, distillation, generation
        self.generator_epochs = generator_epochs
        self.generator_lr = generator_lr
        self.tradeoff = tradeoff
        self.vae_tradeoff = vae_tradeoff
        self.tau = tau
        self.synthetic_batch = synthetic_batch
        self.cvae = (None if generation == "prototype"
                     else FeatureCVAE(net.feature_dim, net.num_classes, hidden, latent,
                                 nonnegative=net.nonnegative_features).to(self.device))
        self.prototypes: torch.Tensor | None = None
        self.radius = 0.0
        self.old_net: AuxiliaryResNet | None = None
        self.factor = 0.0

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.old_net = frozen_copy(self.net) if task > 0 else None
        self.factor = old_task_factor(len(self.old_classes), len(self.classes)) if task > 0 else 0.0

    def draw_old_classes(self, n: int) -> torch.Tensor:
        """``(n,)`` classes drawn uniformly over the old classes, on the network's device."""
        old = torch.tensor(self.old_classes)
        return old[torch.randint(len(old), (n,), generator=self.generator)].to(self.device)

    @torch.no_grad()
    def replay(self, labels: torch.Tensor) -> torch.Tensor:
        """``(M, d)`` old-class features for the classes ``labels`` ``(M,)``: generated, or prototypes plus noise."""
        if self.generation == "prototype":
            noise = torch.randn(len(labels), self.prototypes.shape[1], generator=self.generator).to(self.prototypes)
            return self.prototypes[labels] + self.radius * noise
        return self.cvae.generate(labels, self.generator)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = len(labels)
        if self.task == 0:
            expanded, expanded_labels = self.expand(inputs, labels)
            self.net.train()
            logits, _, aux = self.net(expanded)
            return task0_loss(logits[:batch], labels, aux, expanded_labels)
        self.net.eval()
        synthetic_labels = self.draw_old_classes(self.synthetic_batch)
        synthetic_logits = self.net.classify(self.replay(synthetic_labels))
        if self.distillation == "logit":
            old = torch.tensor(self.old_classes, device=self.device)
            logits = self.net.classify(self.net.features(inputs))
            with torch.no_grad():
                old_logits = self.old_net.classify(self.old_net.features(inputs))
            return logit_distillation_loss(logits, labels, synthetic_logits, synthetic_labels, logits[:, old],
                                           old_logits[:, old], factor=self.factor, tradeoff=self.tradeoff, tau=self.tau)
        if self.distillation == "feature":
            features = self.net.features(inputs)
            with torch.no_grad():
                old_features = self.old_net.features(inputs)
            return feature_distillation_loss(self.net.classify(features), labels, synthetic_logits, synthetic_labels,
                                             features, old_features, factor=self.factor, tradeoff=self.tradeoff)
        expanded, _ = self.expand(inputs, labels)
        _, features, aux = self.net(expanded)
        with torch.no_grad():
            _, old_features, old_aux = self.old_net(expanded)
        return incremental_loss(self.net.classify(features[:batch]), labels, synthetic_logits, synthetic_labels, aux,
                                old_aux, features, old_features, factor=self.factor, tradeoff=self.tradeoff,
                                tau=self.tau)

    def generator_losses(self, inputs: torch.Tensor, labels: torch.Tensor,
                         previous: FeatureCVAE | None) -> dict[str, torch.Tensor]:
        """The generator's loss terms on one batch, the network frozen (``previous``: G_{t-1}, None at task 0).

        With ``generation="naive"`` the classifier terms are left out (no classifier logits are formed).
        """
        self.net.eval()
        fc = self.net.backbone.fc
        weight, bias = fc.weight.detach(), fc.bias.detach()
        task_oriented = self.generation == "task"
        with torch.no_grad():
            features = self.net.features(inputs)
        reconstruction, mu, logvar = self.cvae(features, labels, self.generator)
        extra = {}
        if previous is not None:
            old_labels = self.draw_old_classes(self.synthetic_batch)
            z = self.cvae.sample_latent(len(old_labels), self.generator)
            synthetic = self.cvae.decode(z, old_labels)
            with torch.no_grad():
                synthetic_previous = previous.decode(z, old_labels)
            extra = {"synthetic": synthetic, "synthetic_previous": synthetic_previous}
            if task_oriented:
                extra.update(synthetic_logits=F.linear(synthetic, weight, bias), synthetic_labels=old_labels)
        reconstruction_logits = F.linear(reconstruction, weight, bias) if task_oriented else None
        return generator_loss(features, reconstruction, mu, logvar, reconstruction_logits, labels,
                              factor=self.factor, tradeoff=self.tradeoff, vae_tradeoff=self.vae_tradeoff, **extra)

    def end_task(self, batches: Batches, last: bool) -> None:
        """Train the generator (or keep the task's prototypes) on this task's data; not after the last task."""
        if last:
            return
        if self.generation == "prototype":
            self.keep_prototypes(batches)
            return
        previous = frozen_copy(self.cvae) if self.task > 0 else None
        optimizer = torch.optim.Adam(self.cvae.parameters(), lr=self.generator_lr)
        self.cvae.train()
        for epoch in range(self.generator_epochs):
            for inputs, labels in batches():
                terms = self.generator_losses(inputs, labels, previous)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                self.record({name: value.detach() for name, value in terms.items()})
            self.close_epoch("generator", epoch)

    @torch.no_grad()
    def keep_prototypes(self, batches: Batches) -> None:
        """Keep each current class's mean pooled feature over one epoch of its data; at task 0 also the radius."""
        self.net.eval()
        features, labels = zip(*[(self.net.features(x), y) for x, y in batches()])
        features, labels = torch.cat(features), torch.cat(labels)
        if self.prototypes is None:
            self.prototypes = features.new_zeros(self.net.num_classes, features.shape[1])
        variances = []
        for c in self.classes:
            own = features[labels == c]
            self.prototypes[c] = own.mean(0)
            variances.append(own.var(0, unbiased=False).mean())
        if self.task == 0:
            self.radius = float(torch.stack(variances).mean().sqrt())

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Main-classifier logits ``(N, K)`` in eval mode; the auxiliary heads are not run."""
        self.net.eval()
        return self.net.classify(self.net.features(inputs.to(self.device)))


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator, optim: AdamSchedule | None,
          generator_epochs: int, self_supervision: str = "rotation", distillation: str = "embedding",
          network: Callable[..., nn.Module] = AuxiliaryResNet, **hyper) -> ETag:
    """eTag (or an ablation variant, or GFR) on a fresh network with auxiliary heads (eTag's :class:`AuxiliaryResNet`).

    Parameters
    ----------
    n_classes, width, channels : int
        Classes of the whole stream, the ResNet-18's base width, input channels.
    generator, optim, generator_epochs, self_supervision, distillation
        As :class:`ETag`; the auxiliary heads predict as many transforms as ``self_supervision`` makes,
        and ``distillation="feature"`` (GFR) builds the network without them (ResNet-18 only).
    network : callable
        ``network(n_classes, width, channels, transforms=...)`` -> the network with auxiliary heads:
        :class:`AuxiliaryResNet` (ResNet-18, eTag's) or one of
        :data:`methods.cl.aux_backbones.NETWORKS` (appendix Table C.3).
    **hyper
        The other keyword arguments of :class:`ETag` (``generator_lr``, ``synthetic_batch``,
        ``generation``, ...).
    """
    without_heads = {"heads": False} if distillation == "feature" else {}
    net = network(n_classes, width, channels, transforms=SELF_SUPERVISION[self_supervision][1], **without_heads)
    return ETag(net, generator=generator, optim=optim, generator_epochs=generator_epochs,
                self_supervision=self_supervision, distillation=distillation, **hyper)
