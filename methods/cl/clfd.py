"""CLFD: Continual Learning in the Frequency Domain (Liu et al., NeurIPS 2024, arXiv 2410.06645).

Two parts, named in the paper's Fig. 1 caption, written from the authors' code (EMLS-ICTCAS/CLFD,
``backbone/DWTNet.py``, ``models/*_clfd.py``) as docs/papers/clfd.md describes them
(the paper's own section and equation numbers were not available to us):

- FFE, the frequency-domain feature encoder: a Haar DWT of the normalised
  image and three bias-free 1x1 convolutions (low: LL -> 1, global: all bands -> 1,
  high: LH/HL/HH -> 1 channel) give a 3 x H/2 x W/2 input to an unchanged ResNet-18. FFE
  trains during task 0 only and is frozen from the start of task 0's last epoch. The
  replay buffer stores FFE outputs of non-augmented inputs: a quarter of an image, so
  four times the items for the same bytes.
- CFFS, class-aware frequency-domain feature selection: a global top-k mask
  on the pooled feature (train and test), and during training a per-class Bernoulli mask
  on current-task samples whose keep probabilities follow each class's top-k counts and,
  for a new class, the counts of the most and least similar old classes, where
  similarity is the cosine between class sums of the LL sub-band.

:class:`CLFDNet` is a :class:`~methods.cl.model.ContinualNet`, so it plugs into ER,
DER++ and ER-ACE (``methods.cl.er``, ``methods.cl.derpp``) with their losses unchanged.

Choices the description leaves open (ours; docs/papers/clfd.md): the top-k counts ``A`` come from current-task
training samples only and accumulate over the whole stream; masked features are not
rescaled; the late update runs at the end of every epoch ``e > 0`` with
``e + 1 > 0.4 * n_epochs`` for every class seen so far, and not after a later task's first
epoch (which runs the similarity update instead); instead of emptying and refilling the
buffer at task 0's last epoch, nothing is stored before the encoder is frozen, which
leaves the same buffer and the same seen count (the number of task-0 samples).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.model import ContinualNet
from methods.cl.wavelets import DWT2d


class FrequencyEncoder(nn.Module):
    """FFE: Haar DWT and three bias-free 1x1 convolutions, ``C * 8`` weights (24 for RGB).

    Parameters
    ----------
    in_channels : int
        Image channels ``C``.
    wavelet : str
        PyWavelets name; CLFD uses ``"haar"``.

    Notes
    -----
    ``forward(x)``: ``(N, C, H, W)`` -> ``(features (N, 3, H/2, W/2), ll (N, C, H/2, W/2))``.
    The three output channels are in the order (low, global, high) (ours; the order is
    immaterial to the network that follows).
    """

    def __init__(self, in_channels: int = 3, wavelet: str = "haar"):
        super().__init__()
        self.dwt = DWT2d(wavelet)
        self.low = nn.Conv2d(in_channels, 1, 1, bias=False)
        self.all = nn.Conv2d(4 * in_channels, 1, 1, bias=False)
        self.high = nn.Conv2d(3 * in_channels, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ll, lh, hl, hh = self.dwt(x)
        high = torch.cat([lh, hl, hh], 1)
        features = torch.cat([self.low(ll), self.all(torch.cat([ll, high], 1)), self.high(high)], 1)
        return features, ll


class ClassAwareSelection(nn.Module):
    """CFFS state: top-k counts ``A`` and keep probabilities ``P`` per class.

    Parameters
    ----------
    n_features : int
        Size ``d`` of the pooled feature (512 for ResNet-18).
    n_classes : int
    keep : float
        Fraction kept by the global top-k: ``k = int(keep * d)`` (0.6 -> 307 of 512).
    warmup : float
        Fraction of a task's epochs before the late update of ``P`` starts (0.4).

    Attributes
    ----------
    counts : torch.Tensor
        float ``(n_classes, d)``: how often feature ``j`` was in the top-k of a current-task
        training sample of class ``c``.
    probs : torch.Tensor
        float ``(n_classes, d)``: Bernoulli keep probability of feature ``j`` for class ``c``.
    ll_sums : torch.Tensor or None
        float ``(n_classes, C*H/2*W/2)``: per-class sum of non-augmented LL sub-bands.
    """

    def __init__(self, n_features: int, n_classes: int, keep: float = 0.6, warmup: float = 0.4):
        super().__init__()
        self.n_features = n_features
        self.k = int(keep * n_features)
        self.keep = keep
        self.warmup = warmup
        self.register_buffer("counts", torch.zeros(n_classes, n_features))
        self.register_buffer("probs", torch.ones(n_classes, n_features))
        self.ll_sums: torch.Tensor | None = None

    def topk_mask(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` -> 0/1 mask of the ``k`` entries of largest magnitude per row."""
        top = features.detach().abs().topk(self.k, dim=1).indices
        return torch.zeros_like(features).scatter_(1, top, 1.0)

    def init_classes(self, classes: tuple[int, ...], first_task: bool) -> None:
        """Initial ``P``: task 0's classes keep the first ``int(1.1 * k_frac * d)`` features with
        certainty (337 of 512); a later task's classes keep every feature with probability 0.6."""
        rows = torch.tensor(classes, device=self.probs.device)
        if first_task:
            self.probs[rows] = 0.0
            self.probs[rows, :int(self.n_features * 1.1 * self.keep)] = 1.0
        else:
            self.probs[rows] = self.keep

    def accumulate_ll(self, ll: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
        """Add each sample's flattened LL sub-band ``(N, C, h, w)`` to its class's sum."""
        flat = ll.detach().flatten(1).float()
        if self.ll_sums is None:
            self.ll_sums = torch.zeros(n_classes, flat.shape[1], device=flat.device)
        self.ll_sums.index_add_(0, labels, flat)

    def similarity_update(self, new_classes: tuple[int, ...], old_classes: list[int]) -> None:
        """``P`` of each new class from the counts of its most and least similar old classes.

        With ``s_ij`` the cosine similarity of LL sums, ``n`` the number of nonzero ``s_ij``
        and ``S = sum_j s_ij``: ``p_max = 1 - exp(-A_max * ((s_max+1) n / (S+n)) / max A_max)``,
        ``p_min = exp(-A_min * ((S+n) / ((s_min+1) n)) / max A_min)``, ``P_i = (p_min + p_max) / 2``.
        """
        if not old_classes or self.ll_sums is None:
            return
        old = torch.tensor(old_classes, device=self.probs.device)
        for new in new_classes:
            sims = F.cosine_similarity(self.ll_sums[new].unsqueeze(0), self.ll_sums[old], dim=1)
            nonzero = sims != 0
            if not bool(nonzero.any()):
                continue
            n = float(nonzero.sum())
            total = float(sims[nonzero].sum())
            best = int(sims.argmax())
            worst = int(torch.where(nonzero, sims, torch.full_like(sims, float("inf"))).argmin())
            max_factor = (float(sims[best]) + 1.0) * n / (total + n)
            min_factor = (total + n) / ((float(sims[worst]) + 1.0) * n)
            a_max, a_min = self.counts[old[best]], self.counts[old[worst]]
            p_max = 1.0 - torch.exp(-a_max * max_factor / a_max.max().clamp_min(1.0))
            p_min = torch.exp(-a_min * min_factor / a_min.max().clamp_min(1.0))
            self.probs[new] = (p_min + p_max) / 2.0

    def late_update(self, classes: list[int]) -> None:
        """After the warm-up: ``P_c = 1 - exp(-2 A_c / max A_c)`` for each class with counts."""
        for cls in classes:
            peak = self.counts[cls].max()
            if peak > 0:
                self.probs[cls] = 1.0 - torch.exp(-2.0 * self.counts[cls] / peak)

    def mask(self, features: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """The mask applied to ``(N, d)`` features: top-k, times ``Bernoulli(P[y])`` if ``labels`` is given.

        Given labels also add the top-k indicators to ``counts``.
        """
        selected = self.topk_mask(features)
        if labels is None:
            return selected
        self.counts.index_add_(0, labels, selected)
        draws = torch.rand(features.shape, generator=generator).to(features.device)
        return selected * (draws < self.probs[labels]).to(features.dtype)


class CLFDNet(ContinualNet):
    """FFE -> ResNet features -> CFFS mask -> linear head (paper Fig. 1).

    Parameters
    ----------
    backbone : nn.Module
        A :class:`~methods.cl.backbones.ResNet` with 3 input channels (it sees H/2 x W/2).
    in_channels : int
        Image channels.
    n_classes : int
    black : torch.Tensor
        ``(in_channels,)`` normalised black pixel.
    generator : torch.Generator
        CPU generator for the Bernoulli masks.
    keep, warmup : float
        CFFS's top-k fraction (0.6) and late-update warm-up fraction (0.4).
    """

    downsample = 2

    def __init__(self, backbone: nn.Module, in_channels: int, n_classes: int, black: torch.Tensor,
                 generator: torch.Generator, keep: float = 0.6, warmup: float = 0.4, wavelet: str = "haar"):
        super().__init__(black)
        self.encoder = FrequencyEncoder(in_channels, wavelet)
        self.backbone = backbone
        self.n_classes = n_classes
        self.generator = generator
        self.selection = ClassAwareSelection(backbone.feature_dim, n_classes, keep, warmup)
        self.frozen = False
        self.task = -1
        self.task_classes: tuple[int, ...] = ()
        self.old_classes: list[int] = []
        self.n_epochs = 1
        self.collect_ll = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]

    def classify(self, encoded: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.backbone.features(encoded)
        selected = self.selection.mask(features, labels if self.training else None, self.generator)
        return self.backbone.classify(features * selected)

    def stores_replay(self) -> bool:
        return self.frozen

    def freeze_encoder(self) -> None:
        """Freeze FFE (from task 0's last epoch on, as the authors' code does)."""
        self.frozen = True
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)

    def begin_task(self, task: int, classes: tuple[int, ...], n_epochs: int) -> None:
        if self.task >= 0:
            self.old_classes = sorted(set(self.old_classes) | set(self.task_classes))
        self.task, self.task_classes, self.n_epochs = task, tuple(classes), n_epochs
        self.selection.init_classes(self.task_classes, first_task=task == 0)

    def begin_epoch(self, epoch: int) -> None:
        last = epoch == self.n_epochs - 1
        if self.task == 0 and last:
            self.freeze_encoder()
        # LL statistics: task 0's last epoch, a later task's first epoch (the authors' code).
        self.collect_ll = (self.task == 0 and last) or (self.task > 0 and epoch == 0)

    def end_epoch(self, epoch: int) -> None:
        if self.task > 0 and epoch == 0:
            self.selection.similarity_update(self.task_classes, self.old_classes)
        elif epoch > 0 and epoch + 1 > self.selection.warmup * self.n_epochs:
            self.selection.late_update(sorted(set(self.old_classes) | set(self.task_classes)))

    @torch.no_grad()
    def observe_inputs(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        if self.collect_ll:
            self.selection.accumulate_ll(self.encoder.dwt(x)[0], labels, self.n_classes)

