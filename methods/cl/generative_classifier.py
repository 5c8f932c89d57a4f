"""GC: class-incremental learning with generative classifiers (van de Ven, Li & Tolias, CVPR-W 2021).

A baseline of eTag's Table B.3 (docs/papers/etag.md). Each class ``c`` gets its own VAE, trained
only on the features of class ``c``; nothing of it is touched again once its task is over, so
there is no forgetting by construction. A test input is assigned to the class whose VAE gives
it the highest likelihood (Bayes' rule with a uniform class prior)::

    y_hat(x) = argmax_c  log p(x | c),

with ``log p(x|c)`` estimated by importance sampling from the class's encoder (the paper's
Eq. 2; Burda et al. 2016)::

    log p(x|c) ~= logsumexp_s [ log p_c(x|z_s) + log p(z_s) - log q_c(z_s|x) ] - log S,
    z_s ~ q_c(z|x),  s = 1..S,

``p(z) = N(0, I)``, ``p_c(x|z) = N(x; g_c(z), I)`` (unit variance), ``q_c(z|x)`` the encoder's
diagonal Gaussian (:func:`importance_log_likelihood`).

On CIFAR-100 the VAEs model the output of pre-trained, frozen convolutional layers
(:mod:`methods.cl.frozen_features`: here pre-trained on the first task, our deviation). Each
class's VAE (:class:`ClassVAE`) has one hidden layer of 85 units and a 20-dimensional latent,
trained with Adam at learning rate 1e-3 on the negative ELBO divided by the feature size (the
published implementation's CIFAR-100 command: ``--fc-layers=2 --fc-units=85 --z-dim=20``, its
default ``lr 0.001``). The estimate uses ``S = 10`` importance samples by default (the published
implementation's default ``--eval-s``); its CIFAR-100 runs use ``S = 10,000``, which
``etag/table_b3``'s full scale sets (on a CPU, 10,000 samples cost about 10 minutes of
evaluation at ``table_b2``'s quick scale). Here the loop's epochs over the task's batches replace the
published 500 iterations of batch 256 per class, every batch training each present class's
VAE on that class's rows only (the loss is a sum of per-class terms, so no VAE's gradient
depends on another class's data).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from methods.cl.backbones import resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.frozen_features import FrozenFeatureLearner, FrozenFeatureNet
from methods.cl.gaussian_vae import gaussian_log_density, mlp, reparameterize, standard_kl, unit_gaussian_nll
from methods.cl.incremental import AdamSchedule


class ClassVAE(nn.Module):
    """One class's VAE on ``(N, D)`` features: MLP encoder to ``(mu, logvar)``, MLP decoder to the Gaussian mean.

    Parameters
    ----------
    features : int
        ``D``, the feature size.
    hidden : int
        Units of the encoder's and the decoder's hidden layer (85); 0: no hidden layer (linear maps).
    latent : int
        Size of ``z`` (20).
    """

    def __init__(self, features: int, hidden: int = 85, latent: int = 20):
        super().__init__()
        width = hidden or features
        self.encoder = mlp([features, hidden] if hidden else [features])
        self.to_mu = nn.Linear(width, latent)
        self.to_logvar = nn.Linear(width, latent)
        self.decoder = nn.Sequential(*mlp([latent, hidden] if hidden else [latent]),
                                     nn.Linear(hidden or latent, features))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, D)`` -> the mean and log-variance of ``q(z|x)``, each ``(N, latent)``."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Negative ELBO of ``(N, D)`` features divided by ``D``, averaged over rows (one ``z`` sample each)."""
        mu, logvar = self.encode(x)
        recon = self.decoder(reparameterize(mu, logvar, generator))
        return unit_gaussian_nll(x, recon) + standard_kl(mu, logvar).mean() / x.shape[1]


@torch.no_grad()
def importance_log_likelihood(vae: ClassVAE, x: torch.Tensor, samples: int, *, chunk: int = 256,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """The importance-sampled estimate of ``log p(x)`` under ``vae`` (module docstring), ``(N, D)`` -> ``(N,)`` nats.

    Parameters
    ----------
    vae : ClassVAE
    x : torch.Tensor
        ``(N, D)`` features.
    samples : int
        ``S`` importance samples per row.
    chunk : int
        Samples decoded at once per row (memory ``chunk x N x D``).
    generator : torch.Generator, optional
        CPU generator of the draws; default the global generator of ``x``'s device.
    """
    if samples < 1:
        raise ValueError(f"the estimate needs at least one importance sample, got {samples}")
    mu, logvar = vae.encode(x)
    terms = []
    for first in range(0, samples, chunk):
        count = min(chunk, samples - first)
        z = reparameterize(mu.expand(count, *mu.shape), logvar.expand(count, *logvar.shape), generator)
        log_px_z = gaussian_log_density(x, vae.decoder(z), torch.zeros_like(x))
        log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        terms.append(log_px_z + log_pz - gaussian_log_density(z, mu, logvar))
    return torch.logsumexp(torch.cat(terms), 0) - math.log(samples)


class GenerativeClassifierModel(nn.Module):
    """One :class:`ClassVAE` per class; ``forward`` returns the ``(N, n_classes)`` likelihood estimates.

    Parameters
    ----------
    features : int
        ``D``.
    n_classes : int
    hidden, latent : int
        Of each :class:`ClassVAE` (85 and 20).
    samples : int
        ``S`` importance samples of the estimate (10, the published default; its CIFAR-100 runs: 10,000).

    Notes
    -----
    The buffer ``trained`` ``(n_classes,)`` marks the classes whose VAE has been trained; the
    others score ``-inf``. The argmax of the scores over the seen classes is the prediction.
    """

    def __init__(self, features: int, n_classes: int, *, hidden: int = 85, latent: int = 20, samples: int = 10):
        super().__init__()
        self.vaes = nn.ModuleList(ClassVAE(features, hidden, latent) for _ in range(n_classes))
        self.samples = samples
        self.register_buffer("trained", torch.zeros(n_classes, dtype=torch.bool))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scores = features.new_full((len(features), len(self.vaes)), float("-inf"))
        for c in self.trained.nonzero().flatten().tolist():
            scores[:, c] = importance_log_likelihood(self.vaes[c], features, self.samples)
        return scores


class GenerativeClassifier(FrozenFeatureLearner):
    """GC (module docstring) behind the :class:`~methods.cl.incremental.IncrementalLearner` interface.

    Parameters
    ----------
    net : FrozenFeatureNet
        Its ``model`` a :class:`GenerativeClassifierModel`.
    generator : torch.Generator
    optim : AdamSchedule, optional
        The extractor's pre-training and the VAEs' optimizer (a fresh one per task, over the
        VAEs of the task's classes only).
    """

    def begin_features(self) -> None:
        vaes = [self.net.model.vaes[c] for c in self.classes]
        self.optimizer, self.scheduler = self.optim.build([p for vae in vaes for p in vae.parameters()])
        self.net.model.trained[list(self.classes)] = True

    def feature_losses(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sum over the batch's classes of each class's VAE loss on its own rows (module docstring)."""
        if not torch.isin(labels, torch.tensor(self.classes, device=labels.device)).all():
            raise ValueError("every training row must belong to the current task's classes")
        total = sum(self.net.model.vaes[c].loss(features[labels == c], self.generator)
                    for c in labels.unique().tolist())
        return {"vae": total.detach(), "total": total}


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
          optim: AdamSchedule | None = None, hidden: int = 85, latent: int = 20,
          samples: int = 10) -> GenerativeClassifier:
    """GC on the reduced ResNet-18 (eTag's code's initialisation); ``hidden``, ``latent``, ``samples``:
    :class:`GenerativeClassifierModel`'s (the published defaults)."""
    backbone = torchvision_init_(resnet18(n_classes, width, channels))
    model = GenerativeClassifierModel(backbone.feature_dim, n_classes, hidden=hidden, latent=latent, samples=samples)
    return GenerativeClassifier(FrozenFeatureNet(backbone, model), generator=generator, optim=optim)

