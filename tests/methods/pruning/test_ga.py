"""The GA of methods/pruning/ga.py: its operators, fitness, elitism over rounds, determinism from a seed."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.pruning import (
    FitnessWeights,
    LeNet5,
    Objectives,
    conv_flops,
    dense_conv_flops,
    evolve,
    fitness,
    full_masks,
    masked_forward,
    parameter_count,
    remaining_parameters,
    train,
)
from methods.pruning.ga import crossover, mutate, tournament
from tests.methods.pruning.cases import SMALL_GA, assert_valid_genome, lenet, random_masks, toy_data


def test_crossover_takes_each_layer_whole_from_one_parent():
    model = lenet()
    first, second = random_masks(model, 0.5, seed=1), random_masks(model, 0.5, seed=2)
    swapped = set()
    for seed in range(10):
        child1, child2 = crossover(first, second, torch.Generator().manual_seed(seed))
        for child in (child1, child2):
            assert_valid_genome(child, model)
        for name in first:
            from_first = torch.equal(child1[name], first[name]) and torch.equal(child2[name], second[name])
            from_second = torch.equal(child1[name], second[name]) and torch.equal(child2[name], first[name])
            assert from_first or from_second
            if from_second:
                swapped.add(name)
    assert swapped == set(first)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), keep=st.floats(0.0, 1.0))
def test_mutation_keeps_genomes_valid_and_leaves_its_parent_alone(seed, keep):
    model = lenet()
    parent = random_masks(model, keep, seed=seed)
    before = {name: mask.clone() for name, mask in parent.items()}
    magnitudes = {name: layer.weight.detach().abs() for name, layer in model.named_children()}
    mutant = mutate(parent, magnitudes, SMALL_GA, torch.Generator().manual_seed(seed))
    assert_valid_genome(mutant, model)
    assert all(torch.equal(parent[name], before[name]) for name in parent)
    pruning_only = mutate(parent, magnitudes, dataclasses.replace(SMALL_GA, restore_rate=0.0),
                          torch.Generator().manual_seed(seed))
    assert all(not (pruning_only[name] & ~parent[name]).any() for name in parent)
    restoring_only = mutate(parent, magnitudes, dataclasses.replace(SMALL_GA, mutation_rate=0.0, restore_rate=1.0),
                            torch.Generator().manual_seed(seed))
    assert all(not (parent[name] & ~restoring_only[name]).any() for name in parent)


def test_mutation_prunes_small_weights_first():
    model = lenet()
    magnitudes = {name: layer.weight.detach().abs() for name, layer in model.named_children()}
    config = dataclasses.replace(SMALL_GA, mutation_rate=1.0, max_prune=0.9, restore_rate=0.0)
    pruned_magnitude, kept_magnitude = [], []
    for seed in range(20):
        mutant = mutate(full_masks(model), magnitudes, config, torch.Generator().manual_seed(seed))
        pruned_magnitude.append(magnitudes["fc1"][~mutant["fc1"]].mean())
        kept_magnitude.append(magnitudes["fc1"][mutant["fc1"]].mean())
    assert torch.stack(pruned_magnitude).mean() < torch.stack(kept_magnitude).mean()


def test_tournament_returns_the_fittest_entrant():
    scores = [5.0, 1.0, 3.0, 0.5, 4.0]
    generator = torch.Generator().manual_seed(0)
    assert tournament(scores, len(scores), generator) == 3
    assert all(tournament(scores, 1, generator) in range(len(scores)) for _ in range(10))


@settings(max_examples=50, deadline=None)
@given(base=st.tuples(*[st.floats(0, 1)] * 3), step=st.floats(1e-3, 1), which=st.integers(0, 2),
       weights=st.tuples(*[st.floats(0.01, 10)] * 3))
def test_fitness_is_monotone_in_each_objective(base, step, which, weights):
    weights = FitnessWeights(*weights)
    worse = list(base)
    worse[which] += step
    assert fitness(Objectives(*worse), weights) > fitness(Objectives(*base), weights)


def _toy_problem(model: LeNet5):
    """Objectives from the masks alone: error grows as conv1 loses weights (no training needed)."""
    total, dense_flops = parameter_count(model), dense_conv_flops(model)
    evaluations = []

    def evaluate(masks):
        evaluations.append({name: mask.clone() for name, mask in masks.items()})
        return Objectives(1 - float(masks["conv1"].float().mean()), conv_flops(model, masks) / dense_flops,
                          remaining_parameters(model, masks) / total)

    def retrain(masks):
        return {name: layer.weight.detach().abs() for name, layer in model.named_children()}

    return evaluate, retrain, evaluations


def test_elitism_keeps_the_best_and_the_population_restarts_from_the_elite():
    model = lenet()
    evaluate, retrain, evaluations = _toy_problem(model)
    weights = FitnessWeights(error=1.0, computation=0.5, parameters=0.5)
    config = dataclasses.replace(SMALL_GA, rounds=3, generations=4)
    result = evolve(full_masks(model), evaluate=evaluate, retrain=retrain, magnitudes=retrain(None),
                    weights=weights, config=config, generator=torch.Generator().manual_seed(0))
    per_round = [result.best_fitness[start:start + config.generations + 1]
                 for start in range(0, len(result.best_fitness), config.generations + 1)]
    assert len(per_round) == config.rounds
    for scores in per_round:  # elitism: the best never gets worse within a round
        assert all(later <= earlier for earlier, later in zip(scores, scores[1:]))
    assert result.best_fitness[-1] < fitness(evaluate(full_masks(model)), weights)
    assert fitness(result.best_objectives, weights) == pytest.approx(result.best_fitness[-1])
    assert len(result.population) == config.population
    assert_valid_genome(result.best, model)


# ---------------------------------------------------------------- determinism


def _seeded_run(seed: int):
    model = lenet(seed)
    inputs, labels = toy_data(48, seed)
    generator = torch.Generator().manual_seed(seed)
    total, dense_flops = parameter_count(model), dense_conv_flops(model)

    def evaluate(masks):
        with torch.no_grad():
            error = float((masked_forward(model, masks, inputs).argmax(1) != labels).float().mean())
        return Objectives(error, conv_flops(model, masks) / dense_flops, remaining_parameters(model, masks) / total)

    def retrain(masks):
        train(model, inputs, labels, epochs=1, generator=generator, masks=masks, batch_size=16)
        return {name: layer.weight.detach().abs() for name, layer in model.named_children()}

    result = evolve(full_masks(model), evaluate=evaluate, retrain=retrain, magnitudes=retrain(full_masks(model)),
                    weights=FitnessWeights(1.0, 0.3, 0.3), config=SMALL_GA, generator=generator)
    return result, model


def test_ga_with_a_seed_is_deterministic():
    (first, model1), (second, model2) = _seeded_run(7), _seeded_run(7)
    assert first.best_fitness == second.best_fitness
    assert first.population == second.population
    assert all(torch.equal(first.best[name], second.best[name]) for name in first.best)
    assert all(torch.equal(a, b) for a, b in zip(model1.state_dict().values(), model2.state_dict().values()))
    third, _ = _seeded_run(8)
    assert third.best_fitness != first.best_fitness
