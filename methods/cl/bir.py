"""BI-R: brain-inspired replay (van de Ven, Siegelmann & Tolias, Nature Communications 2020).

A baseline of eTag's Table B.3 (docs/papers/etag.md). Generative replay in which the generator
is the classifier itself, with four modifications the paper takes from the brain:

- **Replay through feedback**: one model (:class:`FeedbackVAE`) is both the classifier and a
  VAE. Its encoder's last hidden layer ``h`` feeds the softmax classifier and the latent
  ``q(z|x) = N(mu(h), diag exp(logvar(h)))``; its decoder (the "feedback" connections) maps
  ``z`` back to the input.
- **Internal replay**: the input is not the image but the output of pre-trained, frozen
  convolutional layers (:mod:`methods.cl.frozen_features`); replay generates those internal
  representations, never pixels. The frozen layers never change.
- **Conditional replay**: the prior is a Gaussian mixture with one mode per class,
  ``p(z|y=c) = N(m_c, diag exp(v_c))`` with trainable ``m_c, v_c``. A sample of class ``c``
  is decoded from ``z ~ p(z|c)``; replay draws the classes uniformly among the old ones.
- **Gating based on internal context**: each class ``c`` has a fixed random binary mask on each
  hidden layer of the decoder that zeroes a fraction ``gate_fraction`` of its units (0.7 on
  CIFAR-100); the decoder is gated by the class of a real sample, by the class drawn for a
  generated one, and, for a replayed sample passed through the current model, by the mixture of
  the masks weighted by the previous model's soft prediction ``softmax(scores / T)``.
- **Distillation**: replayed samples are labelled with the previous model's soft outputs
  (its logits ``scores`` over the old classes, temperature ``T = 2``). The current model's
  logits ``y_hat`` over **every seen class** learn them, the targets given probability 0 on the
  current task's classes (the published implementation pads them with zeros, class-incremental
  scenario): ``T^2 * CE([softmax(scores / T), 0], softmax(y_hat / T))``. The padding is what
  keeps the new classes' logits below the old ones' on replayed samples.

Loss of one step at task ``t`` (tasks counted from 1), the published implementation's weighting::

    L = (1/t) L_current + (1 - 1/t) L_replay,
    L_current = recon + variational + CE(y_hat over the seen classes, y)
    L_replay  = recon + variational + distillation,

with ``recon = -log N(x; g(z), I)`` averaged over the ``D`` feature units, and ``variational =
(log q(z|x) - log p(z)) / D`` for one ``z ~ q(z|x)``, where ``log p(z)`` is the mode of the
label for current data and the mixture weighted by ``softmax(scores / T)`` for replayed data.
The replayed batch is as large as the current one; the previous model (a frozen copy at the end
of the last task) is both the generator and the teacher.

Hyper-parameters: the published implementation's CIFAR-100 class-incremental defaults: two
hidden layers of 2000 units (``--fc-layers 3 --fc-units 2000``), a 100-dimensional latent,
class-based decoder gates with ``dg_prop = 0.7``, distillation temperature 2, one mode per
class, the classifier on the encoder's last hidden layer ("beforeZ"). Its optimizer (Adam,
learning rate 1e-4, 5,000 iterations of batch 256 per task) is replaced here by the suite's
shared one and the loop's epochs, for a fair comparison.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.frozen_features import FrozenFeatureLearner, FrozenFeatureNet
from methods.cl.gaussian_vae import gaussian_log_density, mlp, reparameterize, unit_gaussian_nll
from methods.cl.incremental import AdamSchedule, frozen_copy


def class_gates(n_classes: int, units: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Fixed random binary masks, one per class: ``(n_classes, units)``, each row with exactly
    ``round(fraction * units)`` zeros at positions drawn from ``generator``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the gated fraction must lie in [0, 1), got {fraction}")
    off = round(fraction * units)
    gates = torch.ones(n_classes, units, device="cpu")
    for row in gates:
        row[torch.randperm(units, generator=generator, device="cpu")[:off]] = 0.0
    return gates


class FeedbackVAE(nn.Module):
    """BI-R's model on ``(N, D)`` features: a classifier whose encoder is a VAE's, with a gated decoder.

    Parameters
    ----------
    features : int
        ``D``, the frozen extractor's output size.
    n_classes : int
    hidden : int
        Units of each of the two hidden layers of the encoder and of the decoder (2000).
    latent : int
        Size of ``z`` (100).
    gate_fraction : float
        Fraction of each decoder hidden layer a class's mask switches off (0.7).
    generator : torch.Generator
        CPU generator of the masks.

    Notes
    -----
    ``forward(x)`` returns the ``(N, n_classes)`` logits of the classifier on the encoder's last
    hidden layer. The buffer ``gates`` ``(2, n_classes, hidden)`` holds the masks of the two
    decoder hidden layers; ``prior_means`` and ``prior_logvars`` ``(n_classes, latent)`` are the
    trainable modes of the class-conditional prior (initialised ``N(0, 1)``, as published).
    """

    def __init__(self, features: int, n_classes: int, *, hidden: int = 2000, latent: int = 100,
                 gate_fraction: float = 0.7, generator: torch.Generator):
        super().__init__()
        self.encoder = mlp([features, hidden, hidden])
        self.classifier = nn.Linear(hidden, n_classes)
        self.to_mu = nn.Linear(hidden, latent)
        self.to_logvar = nn.Linear(hidden, latent)
        self.prior_means = nn.Parameter(torch.randn(n_classes, latent, device=self.classifier.weight.device))
        self.prior_logvars = nn.Parameter(torch.randn(n_classes, latent, device=self.classifier.weight.device))
        self.decoder = nn.ModuleList([nn.Linear(latent, hidden), nn.Linear(hidden, hidden)])
        self.output = nn.Linear(hidden, features)
        masks = torch.stack([class_gates(n_classes, hidden, gate_fraction, generator) for _ in self.decoder])
        self.register_buffer("gates", masks.to(self.classifier.weight.device))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, D)`` -> ``mu``, ``logvar`` ``(N, latent)`` of ``q(z|x)`` and the last hidden layer ``(N, hidden)``."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))

    def decode(self, z: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        """``(N, latent)`` -> ``(N, D)`` Gaussian means, each hidden layer multiplied by its gate
        ``class_weights @ mask``; ``class_weights`` ``(N, n_classes)`` is one-hot (a class's mask) or a
        probability vector (the weighted mixture of the masks)."""
        h = z
        for layer, masks in zip(self.decoder, self.gates):
            h = F.relu(layer(h)) * (class_weights @ masks)
        return self.output(h)

    def log_prior(self, z: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        """``log sum_c w_c N(z; m_c, diag exp(v_c))``: ``z`` ``(N, latent)``, weights ``(N, n_classes)`` -> ``(N,)``."""
        per_mode = gaussian_log_density(z.unsqueeze(1), self.prior_means, self.prior_logvars)
        return torch.logsumexp(per_mode + class_weights.clamp_min(1e-40).log(), 1)

    @torch.no_grad()
    def sample(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One ``z ~ p(z|c)`` per entry of ``classes`` ``(N,)``, decoded with the gates of ``c``: ``(N, D)``."""
        z = reparameterize(self.prior_means[classes], self.prior_logvars[classes], generator)
        return self.decode(z, F.one_hot(classes, len(self.prior_means)).float())


def vae_terms(model: FeedbackVAE, x: torch.Tensor, class_weights: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reconstruction and variational terms (module docstring) of ``(N, D)`` features, and the hidden layer.

    ``class_weights`` ``(N, n_classes)`` gates the decoder and weights the prior's modes.
    """
    mu, logvar, h = model.encode(x)
    z = reparameterize(mu, logvar, generator)
    recon = unit_gaussian_nll(x, model.decode(z, class_weights))
    variational = (gaussian_log_density(z, mu, logvar) - model.log_prior(z, class_weights)).mean() / x.shape[1]
    return recon, variational, h


def distillation(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * CE([softmax(teacher / T), 0], softmax(logits / T))``, averaged over rows (Hinton et al. 2015, with
    the published implementation's ``T^2`` factor).

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)`` the student's logits over the seen classes, the ``K_old`` old classes first.
    teacher : torch.Tensor
        ``(B, K_old)`` the previous model's logits over the old classes; its softmax is padded with
        probability 0 for the ``K - K_old`` new classes.
    """
    padding = teacher.new_zeros(len(teacher), logits.shape[1] - teacher.shape[1])
    targets = torch.cat([F.softmax(teacher / temperature, 1), padding], 1)
    return temperature ** 2 * -(targets * F.log_softmax(logits / temperature, 1)).sum(1).mean()


class BrainInspiredReplay(FrozenFeatureLearner):
    """BI-R (module docstring) behind the :class:`~methods.cl.incremental.IncrementalLearner` interface.

    Parameters
    ----------
    net : FrozenFeatureNet
        Its ``model`` a :class:`FeedbackVAE`.
    generator : torch.Generator
    optim : AdamSchedule, optional
        The extractor's pre-training and the feedback model's optimizer.
    temperature : float
        Distillation temperature ``T`` (2).

    Attributes
    ----------
    previous : FeedbackVAE or None
        Frozen copy of the model at the end of the last task: the generator and the teacher.
    last_replay : tuple of torch.Tensor or None
        The last step's replayed features ``(B, D)``, their drawn classes ``(B,)`` and the teacher's
        old-class logits ``(B, n_old)``, kept for inspection.
    """

    def __init__(self, net: FrozenFeatureNet, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 temperature: float = 2.0):
        super().__init__(net, generator=generator, optim=optim)
        self.temperature = temperature
        self.previous: FeedbackVAE | None = None
        self.last_replay: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def begin_features(self) -> None:
        self.optimizer, self.scheduler = self.optim.build(self.net.model.parameters())
        self.previous = frozen_copy(self.net.model) if self.old_classes else None
        self.old_index = torch.tensor(self.old_classes, dtype=torch.long, device=self.device)

    def replay(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` internal representations of old classes drawn uniformly, decoded by the previous model
        from their classes' prior modes, with the previous model's old-class logits (the soft targets)."""
        drawn = torch.randint(len(self.old_index), (count,), generator=self.generator, device="cpu").to(self.device)
        classes = self.old_index[drawn]
        features = self.previous.sample(classes, self.generator)
        with torch.no_grad():
            scores = self.previous(features)[:, self.old_index]
        return features, classes, scores

    def feature_losses(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``L = (1/t) L_current + (1 - 1/t) L_replay`` (module docstring) on ``(B, D)`` features and as many
        replayed ones; ``L_current`` alone at the first task."""
        model = self.net.model
        n_classes = len(model.prior_means)
        recon, variational, h = vae_terms(model, features, F.one_hot(labels, n_classes).float(), self.generator)
        prediction = self.current_loss(model.classifier(h), labels)
        current = recon + variational + prediction
        terms = {"recon": recon.detach(), "variational": variational.detach(), "prediction": prediction.detach()}
        if self.previous is None:
            return {**terms, "total": current}
        replayed, classes, scores = self.replay(len(features))
        self.last_replay = (replayed, classes, scores)
        weights = torch.zeros(len(replayed), n_classes, device=self.device)
        weights[:, self.old_index] = F.softmax(scores / self.temperature, 1)
        recon_r, variational_r, h_r = vae_terms(model, replayed, weights, self.generator)
        distill = distillation(model.classifier(h_r)[:, self.seen_index], scores, self.temperature)
        new_share = 1.0 / (self.task + 1)
        total = new_share * current + (1 - new_share) * (recon_r + variational_r + distill)
        return {**terms, "recon_replay": recon_r.detach(), "variational_replay": variational_r.detach(),
                "distillation": distill.detach(), "total": total}


def build(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
          optim: AdamSchedule | None = None, hidden: int = 2000, latent: int = 100, gate_fraction: float = 0.7,
          temperature: float = 2.0) -> BrainInspiredReplay:
    """BI-R on the reduced ResNet-18 (eTag's code's initialisation); the keywords: :class:`FeedbackVAE`'s and
    :class:`BrainInspiredReplay`'s (the published CIFAR-100 defaults)."""
    backbone = torchvision_init_(resnet18(n_classes, width, channels))
    model = FeedbackVAE(backbone.feature_dim, n_classes, hidden=hidden, latent=latent, gate_fraction=gate_fraction,
                        generator=generator)
    return BrainInspiredReplay(FrozenFeatureNet(backbone, model), generator=generator, optim=optim,
                               temperature=temperature)

