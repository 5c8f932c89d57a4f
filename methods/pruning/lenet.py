"""LeNet-5 and the loops that train and evaluate it, optionally under pruning masks.

The paper (arXiv:1906.00399, abstract) prunes "pre-trained LeNet" on MNIST
without naming the variant. Ours is the classic LeNet-5 layout (LeCun et al. 1998,
conv-pool-conv-pool-fc-fc-fc) in its common modern form: ReLU and max pooling instead of
scaled tanh and trainable subsampling, and a fully connected C3 instead of the original
partial connection table. The 28x28 digit is padded by 2, as LeCun's 32x32 input was.

Pruning is expressed by masks (:mod:`methods.pruning.masks`): the module keeps dense
*latent* weights and every forward pass here uses ``weight * mask``. Training through a
mask therefore leaves the pruned entries of the latent weights untouched and the
effective (masked) weights exactly zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn
from torch.func import functional_call

from methods.pruning.masks import Masks, masked_weights

# MNIST pixel statistics (of the 60,000 training digits, scaled to [0, 1]).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class LeNet5(nn.Module):
    """The classic LeNet-5 for 28x28 grayscale digits.

    ``conv1`` 1->6 5x5 (padding 2): (N, 1, 28, 28) -> (N, 6, 28, 28), max-pool -> 14x14;
    ``conv2`` 6->16 5x5: -> (N, 16, 10, 10), max-pool -> 5x5; ``fc1`` 400->120,
    ``fc2`` 120->84, ``fc3`` 84->10 (logits). 61,706 parameters, 357,600 conv
    multiply-accumulates per image.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional stack: (N, 1, 28, 28) -> (N, 16, 5, 5)."""
        # Pooling before ReLU: the same result (both are monotone), on a quarter of the values.
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        return F.relu(F.max_pool2d(self.conv2(x), 2))

    def classifier(self, features: torch.Tensor) -> torch.Tensor:
        """The fully connected head: (N, 16, 5, 5) -> logits (N, 10)."""
        x = F.relu(self.fc1(features.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) -> normalised float32 inputs (N, 1, 28, 28)."""
    return images.float().div(255).sub(MNIST_MEAN).div(MNIST_STD).unsqueeze(1)


def masked_forward(model: nn.Module, masks: Masks | None, inputs: torch.Tensor) -> torch.Tensor:
    """``model(inputs)`` with each masked layer's weight replaced by ``weight * mask``."""
    if not masks:
        return model(inputs)
    return functional_call(model, masked_weights(model, masks), (inputs,))


def train(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, epochs: int, generator: torch.Generator,
          masks: Masks | None = None, batch_size: int = 64, lr: float = 1e-3) -> None:
    """Train ``model`` in place by Adam on cross-entropy, through ``masks`` if given.

    The paper does not give its schedule; Adam, batch 64 and a constant learning rate are
    ours. A new optimiser is made per call, so a pruned entry, whose gradient is zero
    under its mask from the first step, is never moved.

    Parameters
    ----------
    model : nn.Module
    inputs : Tensor, float32 (N, 1, 28, 28)
    labels : Tensor, int64 (N,)
    epochs : int
        Passes over the data, each in a fresh order drawn from ``generator``.
    generator : torch.Generator
        The only source of randomness (batch order).
    masks : dict of str to bool Tensor, optional
        Layer name -> mask shaped like that layer's weight.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(masked_forward(model, masks, inputs[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()


@torch.no_grad()
def error_rate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, masks: Masks | None = None,
               batch_size: int = 2500) -> float:
    """Fraction of ``inputs`` (N, 1, 28, 28) misclassified, through ``masks`` if given."""
    model.eval()
    wrong = 0
    for start in range(0, len(labels), batch_size):
        logits = masked_forward(model, masks, inputs[start:start + batch_size])
        wrong += int((logits.argmax(1) != labels[start:start + batch_size]).sum())
    return wrong / max(len(labels), 1)
