"""The LeNet-5, masks, toy data and GA settings the pruning tests share (methods/pruning/)."""

import torch

from methods.pruning import GAConfig, LeNet5, full_masks

# A GA small enough for a test: 6 genomes, 3 generations, 2 rounds.
SMALL_GA = GAConfig(population=6, generations=3, rounds=2, tournament=2, elite=1, mutation_rate=0.6,
                    max_prune=0.4, restore_rate=0.3, max_restore=0.2)


def lenet(seed: int = 0) -> LeNet5:
    """A LeNet-5 initialised from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return LeNet5().eval()


def random_masks(model: LeNet5, keep: float, seed: int) -> dict:
    """Masks of ``model``'s prunable layers keeping each weight with probability ``keep``."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(mask.shape, generator=generator) < keep for name, mask in full_masks(model).items()}


def toy_data(count: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random 1x28x28 inputs (N, 1, 28, 28) and labels 0..9 (N,)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 1, 28, 28, generator=generator), torch.randint(0, 10, (count,), generator=generator)


def assert_valid_genome(genome: dict, model: LeNet5) -> None:
    """A genome holds one bool mask per prunable layer of ``model``, in order, each of its weight's shape."""
    reference = full_masks(model)
    assert list(genome) == list(reference)
    for name, mask in genome.items():
        assert mask.dtype == torch.bool and mask.shape == reference[name].shape
