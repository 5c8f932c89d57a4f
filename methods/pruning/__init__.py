"""Multi-objective pruning of LeNet-5 by a genetic algorithm (arXiv:1906.00399) and its baselines.

- :mod:`~methods.pruning.lenet`: the classic LeNet-5, training and error under masks;
- :mod:`~methods.pruning.masks`: pruning masks and the parameters they leave;
- :mod:`~methods.pruning.flops`: live channels and conv FLOPs of a pruned network;
- :mod:`~methods.pruning.slim`: the pruned network without its dead channels, with a
  dense or a direct sparse conv kernel (for timing);
- :mod:`~methods.pruning.ga`: the GA (genome, fitness, operators, the prune-retrain loop);
- :mod:`~methods.pruning.baselines`: global magnitude and random pruning with fine-tuning.
"""

from methods.pruning.baselines import iterative_prune
from methods.pruning.flops import conv_flops, dense_conv_flops, live_channels
from methods.pruning.ga import FitnessWeights, GAConfig, GAResult, Objectives, evolve, fitness
from methods.pruning.lenet import LeNet5, error_rate, masked_forward, to_inputs, train
from methods.pruning.masks import Masks, full_masks, layer_density, parameter_count, remaining_parameters
from methods.pruning.slim import SlimLeNet, SparseConv2d

__all__ = [
    "FitnessWeights", "GAConfig", "GAResult", "LeNet5", "Masks", "Objectives", "SlimLeNet", "SparseConv2d",
    "conv_flops", "dense_conv_flops", "error_rate", "evolve", "fitness", "full_masks", "iterative_prune",
    "layer_density", "live_channels", "masked_forward", "parameter_count", "remaining_parameters", "to_inputs",
    "train",
]
