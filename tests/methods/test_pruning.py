"""GA pruning of LeNet-5: counts by hand, the slimmed network, GA operators, baselines, determinism."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.pruning import (
    FitnessWeights,
    GAConfig,
    LeNet5,
    Objectives,
    SlimLeNet,
    SparseConv2d,
    conv_flops,
    dense_conv_flops,
    evolve,
    fitness,
    full_masks,
    iterative_prune,
    live_channels,
    masked_forward,
    parameter_count,
    remaining_parameters,
    train,
)
from methods.pruning.baselines import global_masks
from methods.pruning.flops import conv_macs
from methods.pruning.ga import crossover, mutate, tournament
from methods.pruning.masks import pruned_copy

SMALL_GA = GAConfig(population=6, generations=3, rounds=2, tournament=2, elite=1, mutation_rate=0.6,
                    max_prune=0.4, restore_rate=0.3, max_restore=0.2)


def _lenet(seed: int = 0) -> LeNet5:
    torch.manual_seed(seed)
    return LeNet5().eval()


def _random_masks(model: LeNet5, keep: float, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(mask.shape, generator=generator) < keep for name, mask in full_masks(model).items()}


def _toy_data(count: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 1, 28, 28, generator=generator), torch.randint(0, 10, (count,), generator=generator)


# ---------------------------------------------------------------- counts by hand


def test_lenet5_parameters_and_conv_flops_by_hand():
    model = _lenet()
    # conv1 6*(1*25)+6, conv2 16*(6*25)+16, fc1 400*120+120, fc2 120*84+84, fc3 84*10+10.
    assert parameter_count(model) == 156 + 2416 + 48120 + 10164 + 850 == 61706
    # conv1: 6 filters x 25 taps x 28*28 outputs; conv2: 16 x (6*25) x 10*10; a FLOP per multiply and per add.
    assert conv_macs(model) == {"conv1": 6 * 25 * 28 * 28, "conv2": 16 * 150 * 10 * 10}
    assert dense_conv_flops(model) == conv_flops(model) == 2 * (117_600 + 240_000) == 715_200


def test_conv_flops_count_only_kept_weights_on_live_channels():
    model = _lenet()
    masks = {name: torch.zeros_like(mask) for name, mask in full_masks(model).items()}
    masks["conv1"][0].view(-1)[:10] = True  # 10 weights of filter 0
    masks["conv1"][1].view(-1)[:4] = True  # filter 1: nothing in conv2 reads it -> dead
    masks["conv2"][3, 0].view(-1)[:7] = True  # filter 3 reads channel 0 with 7 weights
    masks["conv2"][3, 2].view(-1)[:5] = True  # ... and 5 weights on channel 2, which is constant
    masks["conv2"][9, 0].view(-1)[:6] = True  # filter 9 varies but fc1 never reads it -> dead
    masks["fc1"].view(120, 16, 25)[0, 3, 0] = True
    live1, live2 = live_channels(model, masks)
    assert live1.nonzero().flatten().tolist() == [0]
    assert live2.nonzero().flatten().tolist() == [3]
    assert conv_macs(model, masks) == {"conv1": 10 * 28 * 28, "conv2": 7 * 10 * 10}
    # Every kept weight counts as a parameter, dead or not; so do all 236 biases.
    assert remaining_parameters(model, masks) == 10 + 4 + 7 + 5 + 6 + 1 + 236


# ---------------------------------------------------------------- slimmed network and sparse kernel


@pytest.mark.parametrize("case", ["random", "dead channels", "nothing left"])
@pytest.mark.parametrize("kernel", ["dense", "sparse"])
def test_slim_lenet_computes_the_masked_network(case, kernel):
    model = _lenet()
    masks = _random_masks(model, 0.2, seed=1)
    if case == "dead channels":
        masks["conv1"][[0, 4]] = False  # constant channels, folded into conv2's bias
        masks["conv2"][[2, 11]] = False  # constant filters, folded into fc1's bias
        masks["fc1"].view(120, 16, 25)[:, 7] = False  # filter 7 is read by nothing
    if case == "nothing left":
        masks["conv1"][:] = False
    inputs = _toy_data(32)[0]
    slim = SlimLeNet(model, masks)
    with torch.no_grad():
        torch.testing.assert_close(slim(inputs, kernel), masked_forward(model, masks, inputs), atol=1e-5, rtol=1e-5)
    assert slim.channels == tuple(int(live.sum()) for live in live_channels(model, masks))


@pytest.mark.parametrize("padding", [0, 2])
def test_sparse_conv_matches_conv2d(padding):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(5, 3, 5, 5, generator=generator) * (torch.rand(5, 3, 5, 5, generator=generator) < 0.3)
    bias = torch.randn(5, generator=generator)
    inputs = torch.randn(4, 3, 12, 12, generator=generator)
    expected = F.conv2d(inputs, weight, bias, padding=padding)
    torch.testing.assert_close(SparseConv2d(weight, bias, padding)(inputs), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- GA operators


def _assert_valid(genome: dict, model: LeNet5):
    reference = full_masks(model)
    assert list(genome) == list(reference)
    for name, mask in genome.items():
        assert mask.dtype == torch.bool and mask.shape == reference[name].shape


def test_crossover_takes_each_layer_whole_from_one_parent():
    model = _lenet()
    first, second = _random_masks(model, 0.5, seed=1), _random_masks(model, 0.5, seed=2)
    swapped = set()
    for seed in range(10):
        child1, child2 = crossover(first, second, torch.Generator().manual_seed(seed))
        for child in (child1, child2):
            _assert_valid(child, model)
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
    model = _lenet()
    parent = _random_masks(model, keep, seed=seed)
    before = {name: mask.clone() for name, mask in parent.items()}
    magnitudes = {name: layer.weight.detach().abs() for name, layer in model.named_children()}
    mutant = mutate(parent, magnitudes, SMALL_GA, torch.Generator().manual_seed(seed))
    _assert_valid(mutant, model)
    assert all(torch.equal(parent[name], before[name]) for name in parent)
    pruning_only = mutate(parent, magnitudes, dataclasses.replace(SMALL_GA, restore_rate=0.0),
                          torch.Generator().manual_seed(seed))
    assert all(not (pruning_only[name] & ~parent[name]).any() for name in parent)
    restoring_only = mutate(parent, magnitudes, dataclasses.replace(SMALL_GA, mutation_rate=0.0, restore_rate=1.0),
                            torch.Generator().manual_seed(seed))
    assert all(not (parent[name] & ~restoring_only[name]).any() for name in parent)


def test_mutation_prunes_small_weights_first():
    model = _lenet()
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
    model = _lenet()
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
    _assert_valid(result.best, model)


# ---------------------------------------------------------------- training under masks and baselines


def test_pruned_weights_stay_zero_through_fine_tuning():
    model = _lenet()
    masks = _random_masks(model, 0.3, seed=4)
    latent = {name: layer.weight.detach().clone() for name, layer in model.named_children()}
    inputs, labels = _toy_data()
    train(model, inputs, labels, epochs=2, generator=torch.Generator().manual_seed(0), masks=masks, batch_size=16)
    pruned = pruned_copy(model, masks)
    for name, layer in model.named_children():
        assert torch.equal(layer.weight[~masks[name]], latent[name][~masks[name]])  # never moved
        assert not pruned.get_submodule(name).weight[~masks[name]].any()
        assert not torch.equal(layer.weight[masks[name]], latent[name][masks[name]])  # the rest trained
    torch.testing.assert_close(pruned(inputs), masked_forward(model, masks, inputs))


def test_global_masks_keep_exactly_the_best_allowed_weights():
    scores = {"a": torch.tensor([[0.9, 0.1], [0.5, 0.7]]), "b": torch.tensor([0.8, 0.95, 0.2])}
    allowed = {"a": torch.tensor([[True, True], [True, False]]), "b": torch.ones(3, dtype=torch.bool)}
    masks = global_masks(scores, 3, allowed)
    assert masks["a"].tolist() == [[True, False], [False, False]]
    assert masks["b"].tolist() == [True, True, False]


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_iterative_pruning_reaches_the_target_and_prunes_monotonically(criterion):
    model = _lenet()
    inputs, labels = _toy_data()
    keep = 3000
    history = []

    def finetune(masks):
        history.append(masks)
        train(model, inputs, labels, epochs=1, generator=torch.Generator().manual_seed(0), masks=masks, batch_size=32)

    masks = iterative_prune(model, keep, criterion=criterion, steps=3, finetune=finetune,
                            generator=torch.Generator().manual_seed(1))
    assert sum(int(mask.sum()) for mask in masks.values()) == keep
    for earlier, later in zip(history, history[1:]):
        assert all(not (later[name] & ~earlier[name]).any() for name in later)
    assert remaining_parameters(model, masks) == keep + 236


def test_magnitude_pruning_keeps_the_largest_weights():
    model = _lenet()
    masks = iterative_prune(model, 500, criterion="magnitude", steps=1, finetune=lambda masks: None,
                            generator=torch.Generator().manual_seed(0))
    weights = torch.cat([layer.weight.detach().abs().flatten() for layer in model.children()])
    kept = torch.cat([mask.flatten() for mask in masks.values()])
    assert weights[kept].min() >= weights[~kept].max()


# ---------------------------------------------------------------- determinism


def _seeded_run(seed: int):
    model = _lenet(seed)
    inputs, labels = _toy_data(48, seed)
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
