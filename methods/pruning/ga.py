"""The heuristic genetic algorithm of arXiv:1906.00399 (Yang et al., ICANN 2019).

What the paper gives (its method as far as it is known, docs/papers/gaprune.md;
the full text's section numbers are not known):

- a genome is one gene per layer, the layer's parameter tensor under a mask
  (:data:`~methods.pruning.masks.Masks`);
- the fitness, minimised, is a weighted sum of the error rate, the remaining-computation
  rate and a sparsity term, the weights being the user's emphasis (:func:`fitness`);
- a two-step loop: the GA prunes, then the elite is retrained and the population is
  re-initialised from the retrained elite (:func:`evolve`).

Everything else is ours, chosen for a small, seeded, CPU-only search:

- granularity: every gene is a weight-level mask, conv layers included. Filter-level
  conv masks (the usual choice to save FLOPs) cap what LeNet-5 can reach: one conv1 filter
  alone costs 19,600 of the 357,600 conv MACs, so a 16x FLOP ratio would leave one conv1
  and one conv2 filter (93% accuracy when trained so in our trials, against 97.8%), and
  12x one conv1 and four conv2 filters. Weight-level masks thin both layers instead;
  the price is that the time saving needs a sparse kernel (:mod:`methods.pruning.slim`);
- sparsity term: the remaining-parameter rate (nonzero parameters / all), so that all
  three terms are rates in [0, 1] and lower is better;
- selection: tournaments of :attr:`GAConfig.tournament` individuals; elitism keeps the
  :attr:`GAConfig.elite` best unchanged into the next generation;
- crossover: uniform over layers, each child takes each layer's whole mask from one
  parent (layer masks are never cut, so a child is always a valid genome);
- mutation ("heuristic"): each layer, with probability :attr:`GAConfig.mutation_rate`,
  prunes a fraction drawn from U(0, :attr:`GAConfig.max_prune`) of its kept weights,
  choosing those with the smallest ``|w| * u``, u ~ U(0, 1): random, but biased toward
  small weights; with probability :attr:`GAConfig.restore_rate` it also restores a
  fraction drawn from U(0, :attr:`GAConfig.max_restore`) of its pruned weights, chosen
  uniformly (they come back with their latent values);
- the population is re-initialised as the elite plus mutants of it; individuals are
  scored without retraining, on a fixed validation subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from methods.pruning.masks import Masks


@dataclass(frozen=True)
class FitnessWeights:
    """Coefficients of the three objectives (the user's emphasis; values are ours)."""

    error: float
    computation: float
    parameters: float


@dataclass(frozen=True)
class Objectives:
    """What the fitness weighs, each a rate in [0, 1], lower is better.

    Attributes
    ----------
    error : float
        Fraction of the validation images misclassified.
    computation : float
        Remaining conv FLOPs / dense conv FLOPs.
    parameters : float
        Remaining nonzero parameters / all parameters.
    """

    error: float
    computation: float
    parameters: float


def fitness(objectives: Objectives, weights: FitnessWeights) -> float:
    """The paper's weighted linear combination of the three rates; minimised."""
    return (weights.error * objectives.error + weights.computation * objectives.computation
            + weights.parameters * objectives.parameters)


@dataclass(frozen=True)
class GAConfig:
    """Sizes and rates of the GA (all ours: the paper gives none).

    Attributes
    ----------
    population : int
        Individuals per generation.
    generations : int
        Generations per round (after the initial population of the round).
    rounds : int
        GA-then-retrain rounds.
    tournament : int
        Individuals per selection tournament.
    elite : int
        Best individuals copied unchanged into the next generation.
    crossover_rate : float
        Probability that a pair of parents is crossed (else copied).
    mutation_rate : float
        Per layer, probability of a pruning mutation.
    max_prune : float
        Upper bound of the fraction of a layer's kept weights one mutation prunes.
    restore_rate : float
        Per layer, probability of a restoring mutation.
    max_restore : float
        Upper bound of the fraction of a layer's pruned weights one mutation restores.
    """

    population: int = 12
    generations: int = 4
    rounds: int = 12
    tournament: int = 3
    elite: int = 2
    crossover_rate: float = 0.9
    mutation_rate: float = 0.4
    max_prune: float = 0.4
    restore_rate: float = 0.05
    max_restore: float = 0.1

    def __post_init__(self):
        if not 1 <= self.elite < self.population:
            raise ValueError("elite must be at least 1 and below the population size")
        if not 1 <= self.tournament <= self.population:
            raise ValueError("tournament must be between 1 and the population size")


@dataclass
class GAResult:
    """What :func:`evolve` returns.

    Attributes
    ----------
    best : Masks
        The elite after the last retraining.
    best_objectives : Objectives
        Its objectives after that retraining.
    best_fitness : list of float
        Best fitness of every generation, rounds concatenated (``rounds * (generations + 1)``
        values: each round's initial population, then each generation).
    round_objectives : list of Objectives
        The elite of each round after its retraining.
    population : list of Objectives
        The last generation (before the last retraining): the GA's trade-off front.
    """

    best: Masks
    best_objectives: Objectives
    best_fitness: list[float] = field(default_factory=list)
    round_objectives: list[Objectives] = field(default_factory=list)
    population: list[Objectives] = field(default_factory=list)


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def crossover(first: Masks, second: Masks, generator: torch.Generator) -> tuple[Masks, Masks]:
    """Uniform layer-wise crossover: each layer's mask swaps between the children with probability 1/2."""
    child1, child2 = {}, {}
    for name in first:
        swap = _uniform(generator) < 0.5
        child1[name], child2[name] = (second[name], first[name]) if swap else (first[name], second[name])
    return child1, child2


def _prune_some(mask: torch.Tensor, magnitude: torch.Tensor, fraction: float,
                generator: torch.Generator) -> torch.Tensor:
    """Prune ``fraction`` of the kept entries of ``mask``, those with the smallest ``|w| * u``."""
    kept = mask.flatten().nonzero().squeeze(1)
    count = int(fraction * len(kept))
    if count == 0:
        return mask
    score = magnitude.flatten()[kept] * torch.rand(len(kept), generator=generator).to(magnitude)  # CPU draws
    chosen = kept[torch.topk(score, count, largest=False).indices]
    pruned = mask.flatten().clone()
    pruned[chosen] = False
    return pruned.view_as(mask)


def _restore_some(mask: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Restore ``fraction`` of the pruned entries of ``mask``, chosen uniformly."""
    pruned = (~mask).flatten().nonzero().squeeze(1)
    count = int(fraction * len(pruned))
    if count == 0:
        return mask
    chosen = pruned[torch.randperm(len(pruned), generator=generator)[:count]]
    restored = mask.flatten().clone()
    restored[chosen] = True
    return restored.view_as(mask)


def mutate(genome: Masks, magnitudes: dict[str, torch.Tensor], config: GAConfig,
           generator: torch.Generator) -> Masks:
    """A mutant of ``genome`` (module docstring); ``genome`` itself is not changed.

    Parameters
    ----------
    genome : dict of str to bool Tensor
    magnitudes : dict of str to Tensor
        ``|w|`` of each layer's latent weights, same shapes as the masks.
    config : GAConfig
    generator : torch.Generator
    """
    mutant = {}
    for name, mask in genome.items():
        if _uniform(generator) < config.mutation_rate:
            mask = _prune_some(mask, magnitudes[name], config.max_prune * _uniform(generator), generator)
        if _uniform(generator) < config.restore_rate:
            mask = _restore_some(mask, config.max_restore * _uniform(generator), generator)
        mutant[name] = mask
    return mutant


def tournament(scores: list[float], size: int, generator: torch.Generator) -> int:
    """Index of the fittest (lowest score) of ``size`` individuals drawn without replacement."""
    entrants = torch.randperm(len(scores), generator=generator)[:size].tolist()
    return min(entrants, key=lambda index: (scores[index], index))


def _ranked(scores: list[float]) -> list[int]:
    """Indices by ascending fitness; ties keep the earlier individual first (elites stay first)."""
    return sorted(range(len(scores)), key=lambda index: (scores[index], index))


def evolve(initial: Masks, *, evaluate: Callable[[Masks], Objectives],
           retrain: Callable[[Masks], dict[str, torch.Tensor]], magnitudes: dict[str, torch.Tensor],
           weights: FitnessWeights, config: GAConfig, generator: torch.Generator) -> GAResult:
    """Prune by the GA, retraining the elite between rounds (the paper's two-step loop).

    Parameters
    ----------
    initial : dict of str to bool Tensor
        The starting genome (all True for a dense pre-trained network).
    evaluate : callable(Masks) -> Objectives
        Scores a genome on the network's current weights (no training).
    retrain : callable(Masks) -> dict of str to Tensor
        Fine-tunes the network under the elite's masks (changing what ``evaluate`` sees)
        and returns the new ``|w|`` of each layer's latent weights.
    magnitudes : dict of str to Tensor
        ``|w|`` of each layer's latent weights before the first round.
    weights : FitnessWeights
    config : GAConfig
    generator : torch.Generator
        The only source of randomness.

    Returns
    -------
    GAResult
    """
    result = GAResult(best=initial, best_objectives=evaluate(initial))
    elite = initial
    for _ in range(config.rounds):
        genomes = [elite] + [mutate(elite, magnitudes, config, generator) for _ in range(config.population - 1)]
        objectives = [evaluate(genome) for genome in genomes]
        scores = [fitness(objective, weights) for objective in objectives]
        result.best_fitness.append(min(scores))
        for _ in range(config.generations):
            ranked = _ranked(scores)
            kept = ranked[:config.elite]
            children = []
            while len(children) < config.population - config.elite:
                first = genomes[tournament(scores, config.tournament, generator)]
                second = genomes[tournament(scores, config.tournament, generator)]
                if _uniform(generator) < config.crossover_rate:
                    first, second = crossover(first, second, generator)
                children += [mutate(first, magnitudes, config, generator),
                             mutate(second, magnitudes, config, generator)]
            children = children[:config.population - config.elite]
            genomes = [genomes[index] for index in kept] + children
            objectives = [objectives[index] for index in kept] + [evaluate(child) for child in children]
            scores = [fitness(objective, weights) for objective in objectives]
            result.best_fitness.append(min(scores))
        elite = genomes[_ranked(scores)[0]]
        result.population = objectives
        magnitudes = retrain(elite)
        result.best, result.best_objectives = elite, evaluate(elite)
        result.round_objectives.append(result.best_objectives)
    return result
