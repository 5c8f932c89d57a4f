"""GA pruning of LeNet-5: one generation's fitness evaluation, and the conv time of a pruned network.

- :class:`GaFitness`: the fitness of one GA generation (``methods.pruning.ga``): a population of mutants of a
  pruned genome, each scored on the validation images by its error under the masks, its conv FLOPs and its
  remaining parameters (the three objectives of ``Objectives``), weighted toward sparsity as in the
  artifact ``gaprune/lenet_mnist``.
- :class:`PrunedConv`: the conv stack (conv-relu-pool x 2) of LeNet-5 on a batch: the unpruned network, and
  the network magnitude-pruned to ``density`` of its weights then rebuilt without dead channels
  (``SlimLeNet``) with the direct sparse kernel (``sparse``) or ``F.conv2d`` on the live channels
  (``dense``), as the artifact times it.

The network is LeNet-5 with its seeded initial weights (the times do not depend on training); the images
are seeded Gaussian (N, 1, 28, 28) inputs.
"""

import torch

from benchmarks.common import torch_setup
from methods.pruning import LeNet5
from methods.pruning.baselines import global_masks
from methods.pruning.flops import conv_flops, dense_conv_flops
from methods.pruning.ga import FitnessWeights, GAConfig, Objectives, fitness, mutate
from methods.pruning.lenet import error_rate
from methods.pruning.masks import full_masks, parameter_count, prunable_layers, remaining_parameters
from methods.pruning.slim import SlimLeNet
from reproduce.gaprune.lenet_mnist import GA_QUICK, WEIGHTS


def _lenet(density: float):
    """Seeded LeNet-5 (eval mode), its ``|w|`` per prunable layer, and masks keeping the largest ``density`` of them."""
    model = LeNet5().eval()
    magnitudes = {name: layer.weight.detach().abs() for name, layer in prunable_layers(model).items()}
    masks = global_masks(magnitudes, int(density * sum(m.numel() for m in magnitudes.values())), full_masks(model))
    return model, magnitudes, masks


class GaFitness:
    """Objectives and fitness of a ``population`` of mutants on ``images`` validation images."""

    # The artifact's smoke and quick scales: populations of 4 and 8, fitness on 200 and 800 validation digits.
    params = ([4, 8], [200, 800])
    param_names = ["population", "images"]
    version = "1"

    def setup(self, population, images):
        _, generator = torch_setup()
        self.model, magnitudes, elite = _lenet(0.2)
        config = GAConfig(**{**GA_QUICK, "population": population})
        self.genomes = [elite] + [mutate(elite, magnitudes, config, generator) for _ in range(population - 1)]
        self.inputs = torch.randn((images, 1, 28, 28), generator=generator)
        self.labels = torch.randint(10, (images,), generator=generator)
        self.weights = FitnessWeights(**WEIGHTS["sparsity"])
        self.dense_flops, self.total = dense_conv_flops(self.model), parameter_count(self.model)

    def time_generation(self, population, images):
        for masks in self.genomes:
            fitness(Objectives(error_rate(self.model, self.inputs, self.labels, masks),
                               conv_flops(self.model, masks) / self.dense_flops,
                               remaining_parameters(self.model, masks) / self.total), self.weights)


class PrunedConv:
    """The conv stack of LeNet-5 on a (batch, 1, 28, 28) batch: ``unpruned``, or pruned to ``density`` and run by
    ``kernel``; the unpruned network has no density, and runs under the first one only (n/a under the others)."""

    params = (["unpruned", "sparse", "dense"], [0.05, 0.2], [64, 256])
    param_names = ["kernel", "density", "batch"]
    version = "1"

    def setup(self, kernel, density, batch):
        if kernel == "unpruned" and density != self.params[1][0]:
            raise NotImplementedError("the unpruned network has no density")
        _, generator = torch_setup()
        model, _, masks = _lenet(density)
        self.x = torch.randn((batch, 1, 28, 28), generator=generator)
        if kernel == "unpruned":
            self.stack = model.features
        else:
            slim = SlimLeNet(model, masks)
            self.stack = lambda x: slim.features(x, kernel)

    def time_conv(self, kernel, density, batch):
        with torch.no_grad():
            self.stack(self.x)
