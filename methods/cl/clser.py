"""CLS-ER (Arani, Sarfraz & Zonooz, ICLR 2022): experience replay with two semantic memories.

Besides the working model ``f`` (trained by SGD), CLS-ER keeps two exponential moving averages
of its weights, a *plastic* and a *stable* semantic memory. After every step each memory is
updated with probability ``r`` (its update frequency):

    theta_m <- a * theta_m + (1 - a) * theta_f,   a = min(1 - 1 / (step + 1), alpha_m)

(the published implementation's warm-up of the rate; ``step`` counts the steps so far). The
plastic memory updates often, the stable one rarely. The loss on a step is

    CE(f(x), y) + CE(f(x_b), y_b) + lambda * MSE(f(x_b), z_b)

for the current batch ``(x, y)`` and a buffer minibatch ``(x_b, y_b)``, where ``z_b`` holds, per
buffer sample, the logits of whichever memory gives the sample's true class the higher softmax
probability (:func:`consistency_targets`; the paper's Eq. 3-4). Evaluation uses the stable
memory, as the paper reports.

As in the published implementation, the averages run over the parameters only: each memory's
batch-norm statistics follow its own forward passes on buffer samples (in train mode).
Choice (ours, as ``methods.cl.er``): the buffer minibatch goes through its own forward pass
rather than being concatenated with the current batch, and one forward pass of it serves both
its cross-entropy and the consistency term. On a :class:`~methods.cl.clfd.CLFDNet` the same
learner is CLFD-CLS-ER: the buffer holds frequency features and the memories, deep copies of
the whole network, classify them past the encoder (top-k selection only, as at test time).
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.er import ER
from methods.cl.model import ContinualNet


def consistency_targets(stable: torch.Tensor, plastic: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the logits ``(N, K)`` of the memory more confident in the true class (ties: plastic).

    ``stable`` and ``plastic`` are the two memories' logits on the same samples, ``labels`` int64 ``(N,)``.
    """
    rows = torch.arange(len(labels), device=labels.device)
    use_stable = F.softmax(stable, 1)[rows, labels] > F.softmax(plastic, 1)[rows, labels]
    return torch.where(use_stable.unsqueeze(1), stable, plastic)


def _memory(net: ContinualNet) -> ContinualNet:
    """A copy of ``net`` that no optimiser trains."""
    memory = copy.deepcopy(net)
    for parameter in memory.parameters():
        parameter.requires_grad_(False)
    return memory


class CLSER(ER):
    """CLS-ER on a :class:`~methods.cl.model.ContinualNet` with a reservoir buffer.

    Parameters
    ----------
    net : ContinualNet
    reg_weight : float
        ``lambda``, the weight of the consistency loss.
    plastic_rate, stable_rate : float
        Update frequencies ``r`` in [0, 1] of the two memories.
    plastic_alpha, stable_alpha : float
        Their largest decay ``alpha`` in [0, 1).
    **kwargs
        As :class:`~methods.cl.er.Learner` (``buffer`` required; ``generator`` also draws the updates).

    The published implementation's best arguments (CLFD's table uses them): Seq-CIFAR-10 buffer 50,
    lambda 0.15, r 0.5 / 0.1 (plastic / stable), alpha 0.999 / 0.999, lr 0.1; buffer 125, lambda 0.15,
    r 0.9 / 0.2; Seq-Tiny-ImageNet lambda 0.1, r 0.16 / 0.08 (buffer 50), 0.16 / 0.1 (125).
    """

    name = "clser"

    def __init__(self, net, *, reg_weight: float, plastic_rate: float, stable_rate: float, plastic_alpha: float,
                 stable_alpha: float, **kwargs):
        super().__init__(net, **kwargs)
        for label, value in (("plastic_rate", plastic_rate), ("stable_rate", stable_rate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must lie in [0, 1], not {value}")
        for label, value in (("plastic_alpha", plastic_alpha), ("stable_alpha", stable_alpha)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{label} must lie in [0, 1), not {value}")
        self.reg_weight = reg_weight
        self.rates = {"plastic": plastic_rate, "stable": stable_rate}
        self.alphas = {"plastic": plastic_alpha, "stable": stable_alpha}
        self.memories = {"plastic": _memory(net), "stable": _memory(net)}
        self.step = 0

    @property
    def plastic(self) -> ContinualNet:
        return self.memories["plastic"]

    @property
    def stable(self) -> ContinualNet:
        return self.memories["stable"]

    def replay_loss(self) -> torch.Tensor:
        """``CE(f(x_b), y_b) + lambda * MSE(f(x_b), z_b)`` on one buffer minibatch."""
        encoded, labels, _ = self.replay()
        logits = self.net.classify(encoded)
        with torch.no_grad():
            targets = consistency_targets(self.stable.classify(encoded), self.plastic.classify(encoded), labels)
        return F.cross_entropy(logits, labels) + self.reg_weight * F.mse_loss(logits, targets)

    def observe(self, inputs: torch.Tensor, labels: torch.Tensor, raw_inputs: torch.Tensor) -> float:
        """One step of the working model, then the stochastic updates of the memories."""
        for memory in self.memories.values():
            memory.train()  # evaluation leaves the stable memory in eval mode
        loss = super().observe(inputs, labels, raw_inputs)
        self.step += 1
        self.update_memories()
        return loss

    @torch.no_grad()
    def update_memories(self) -> dict[str, bool]:
        """Draw, plastic then stable, whether each memory updates this step, and update it; returns the draws."""
        updated = {}
        for name, memory in self.memories.items():
            updated[name] = bool(torch.rand(1, generator=self.generator) < self.rates[name])
            if updated[name]:
                decay = min(1.0 - 1.0 / (self.step + 1), self.alphas[name])
                for average, parameter in zip(memory.parameters(), self.net.parameters(), strict=True):
                    average.mul_(decay).add_(parameter.detach(), alpha=1.0 - decay)
        return updated

    def eval_net(self) -> ContinualNet:
        """The stable memory: CLS-ER's reported model."""
        return self.stable

    def storage_bytes(self) -> int:
        """The buffer and both memories' parameters and buffers."""
        tensors = [t for memory in self.memories.values() for t in (*memory.parameters(), *memory.buffers())]
        return super().storage_bytes() + sum(t.numel() * t.element_size() for t in tensors)
