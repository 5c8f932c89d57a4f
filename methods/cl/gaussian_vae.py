"""Gaussian pieces of the feature-level VAEs of BI-R and the generative classifier (van de Ven et al.).

Both methods model a vector ``x`` of ``D`` frozen-extractor features with a VAE whose decoder is
a unit-variance Gaussian observation model, ``p(x|z) = N(x; g(z), I)``, and whose encoder is a
diagonal Gaussian ``q(z|x) = N(mu(x), diag exp(logvar(x)))`` (the published implementations'
choice for features: "MSE" reconstruction, evaluated as a unit-variance Gaussian). The training
loss is the negative ELBO divided by ``D``: the reconstruction NLL averaged over the ``D`` units
plus the KL (or its one-sample estimate) divided by ``D`` (the published implementations'
scaling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...``, each followed by a ReLU (an empty stack for one size)."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, diag exp(logvar))`` summed over the last dimension: ``(..., d)`` -> ``(...)`` nats."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 / logvar.exp()).sum(-1)


def unit_gaussian_nll(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``-log N(x; mean, I)`` averaged over the ``D`` units, then over the batch: ``(B, D)`` -> scalar."""
    return (0.5 * (LOG_2PI + (x - mean) ** 2)).mean()


def standard_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per row: ``(B, z)`` -> ``(B,)`` nats (Kingma & Welling, App. B)."""
    return -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn on the CPU from ``generator`` (the global
    generator of ``mu``'s device when None); same shape as ``mu``."""
    if generator is None:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn(mu.shape, generator=generator, device="cpu").to(mu.device)
    return mu + (0.5 * logvar).exp() * eps
