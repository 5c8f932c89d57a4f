"""E2Net: stage schedule, elastic ResNet (counts, slicing, sorting, extraction), search, teacher, gate, loss, run."""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl import (
    CIFAR10_CHOICES,
    CIFAR100_CHOICES,
    DERPP,
    Augmentation,
    E2Net,
    ElasticResNet,
    PlainNet,
    ReservoirBuffer,
    SubnetConfig,
    count_parameters,
    sample_config,
    search_representative,
    split_tasks,
    stage_schedule,
    to_tensor,
    train_stream,
)
from methods.cl.e2net import batch_statistics_only
from methods.cl.streams import StreamSpec

STREAM = StreamSpec(n_tasks=3, classes_per_task=2, side=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                    crop_padding=1, flip=True)
BLACK = -torch.tensor(STREAM.mean) / torch.tensor(STREAM.std)


def elastic(width: int = 6, block: str = "bottleneck", choices=CIFAR100_CHOICES, seed: int = 0) -> ElasticResNet:
    """A tiny elastic net with random BN statistics, so that slicing them matters."""
    torch.manual_seed(seed)
    net = ElasticResNet(6, width=width, expand_ratios=choices, width_mults=choices, block=block)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net


def random_configs(net: ElasticResNet, count: int, seed: int) -> list[SubnetConfig]:
    generator = torch.Generator().manual_seed(seed)
    return [sample_config(net, 100, generator) for _ in range(count)] + [net.max_config()]


def images(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """6 classes of noisy 3x8x8 images; class c brightens channel c % 3 in the top or bottom half."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), per_class)
    pixels = rng.integers(0, 80, (len(labels), 8, 8, 3)).astype(np.uint8)
    for index, label in enumerate(labels):
        top = 4 * (label // 3)
        pixels[index, top:top + 4, :, label % 3] = 220
    return to_tensor(pixels, STREAM), torch.from_numpy(labels)


def learner(n_candidates: int = 40, subnet_weight: float = 0.05, seed: int = 0, capacity: int = 24) -> E2Net:
    net = PlainNet(elastic(width=4, choices=CIFAR10_CHOICES, seed=seed), BLACK)
    return E2Net(net, n_tasks=STREAM.n_tasks, alpha=0.2, beta=0.5, subnet_weight=subnet_weight,
                 n_candidates=n_candidates, probe_size=8, buffer=ReservoirBuffer(capacity), lr=0.05,
                 generator=torch.Generator().manual_seed(seed), augment=Augmentation(1, True), minibatch=8)


def after_first_task(model: E2Net, steps: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Task 0 for a few steps, then the search of task 1; returns a task-1 batch."""
    x, y = images(8, seed=1)
    model.begin_task(0, (0, 1), 1)
    for step in range(steps):
        rows = torch.arange(8 * step, 8 * step + 8) % 16
        model.observe(x[rows], y[rows], x[rows])
    model.begin_task(1, (2, 3), 1)
    return x[16:24], y[16:24]


def test_stage_schedule():
    assert stage_schedule(5) == [4, 7, 9, 10, 10]
    for n_tasks in range(1, 30):
        stages = stage_schedule(n_tasks)
        assert len(stages) == n_tasks and stages[0] == 4
        assert all(b > a for a, b in zip(stages[:-2], stages[1:-1]))  # at least +1 but on the last task
        assert all(b >= a for a, b in zip(stages, stages[1:]))
    assert stage_schedule(10)[6] == 20  # beyond 19 choices: our sampler clamps (the public one breaks)


@settings(max_examples=40, deadline=None)
@given(stage=st.integers(1, 25), earlier=st.integers(1, 25), seed=st.integers(0, 2 ** 16))
def test_sampled_configs_stay_inside_the_stage_and_above_the_minimum(stage, earlier, seed):
    net = elastic(width=8)
    generator = torch.Generator().manual_seed(seed)
    previous = sample_config(net, min(stage, earlier), generator)
    minimum = net.parameter_count(previous)
    for _ in range(5):
        config = sample_config(net, stage, generator, minimum_params=minimum)
        assert all(0 <= e < min(stage, len(net.expand_ratios)) for e in config.expand)
        assert all(0 <= w < min(stage, len(net.width_mults)) for w in config.width)
        assert net.parameter_count(config) >= minimum
    with pytest.raises(ValueError, match="no subnet"):
        sample_config(net, 1, generator, minimum_params=net.full_parameters)


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
def test_parameter_counts_and_occupancy(block):
    net = elastic(block=block)
    assert net.full_parameters == count_parameters(net)
    assert net.occupancy(net.max_config()) == 1.0
    for config in random_configs(net, 12, seed=3):
        count = net.parameter_count(config)
        assert count == count_parameters(net.extract(config))
        assert 0 < net.occupancy(config) <= 1 and net.occupancy(config) == count / count_parameters(net)
    smallest = SubnetConfig((0,) * net.n_blocks, (0,) * net.n_stages)
    assert net.occupancy(smallest) < 0.01


def test_basic_block_full_network_is_the_reduced_resnet18():
    assert ElasticResNet(10, block="basic").full_parameters == 11_173_962


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
def test_extracted_subnet_equals_the_sliced_working_net(block):
    net = elastic(block=block).eval()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        for config in random_configs(net, 6, seed=4):
            subnet = net.extract(config).eval()
            net.set_active(config)
            assert torch.allclose(net(x), subnet(x), atol=1e-5)
            assert torch.allclose(net.features(x), subnet.features(x), atol=1e-5)
        net.set_max()
        subnet = net.extract(net.max_config())
        stored = {t.data_ptr() for t in net.state_dict().values()}
        assert not stored & {t.data_ptr() for t in subnet.state_dict().values()}
        reference = net(x)
        for parameter in subnet.parameters():
            parameter.add_(1.0)
        assert torch.equal(net(x), reference)


def test_training_mode_slices_update_only_the_active_running_statistics():
    net = elastic()
    config = SubnetConfig((3,) * net.n_blocks, (4,) * net.n_stages)
    stem = net.plan(config)[0]
    before = net.bn1.running_mean.clone()
    net.set_active(config)
    net(torch.randn(4, 3, 8, 8))
    assert not torch.equal(net.bn1.running_mean[:stem], before[:stem])
    assert torch.equal(net.bn1.running_mean[stem:], before[stem:])


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
def test_sorting_channels_keeps_the_full_network_function(block):
    net = elastic(block=block).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        reference = net(x)
        weights = [p.clone() for p in net.parameters()]
        net.sort_channels()
        assert torch.allclose(net(x), reference, atol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    for elastic_block in net.blocks:
        for reader in list(elastic_block.convs)[1:]:
            importance = reader.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(importance[:-1] >= importance[1:])


def running_statistics(module):
    return [t.clone() for name, t in module.named_buffers() if name.endswith(("running_mean", "running_var"))]


def test_search_keeps_the_best_scored_candidate_under_the_limit():
    net = elastic(width=8)
    probe = torch.randn(8, 3, 8, 8)
    search_representative(net, probe, 25, torch.Generator().manual_seed(0), n_candidates=2)  # sorts the channels
    # Independent scores of the draws the search will make (sorting again changes nothing), normalised with batch
    # statistics as the search does; the limit is set just under the best-scoring draw, so that it binds.
    with torch.no_grad():
        reference = batch_statistics_only(net.extract(net.max_config())).eval()(probe)
        replay = torch.Generator().manual_seed(5)
        candidates = [sample_config(net, 25, replay) for _ in range(40)]
        scores = [float(F.mse_loss(batch_statistics_only(net.extract(c)).eval()(probe), reference))
                  * math.exp(-net.occupancy(c)) for c in candidates]
    limit = net.occupancy(candidates[int(np.argmin(scores))])
    qualifying = [i for i in range(40) if net.occupancy(candidates[i]) < limit]
    assert qualifying
    statistics = running_statistics(net)
    generator = torch.Generator().manual_seed(5)
    config, occupancy, score = search_representative(net, probe, 25, generator, n_candidates=40, top=40, limit=limit)
    assert occupancy == net.occupancy(config) < limit and net.training
    assert net.active_config == net.max_config()
    best = min(qualifying, key=scores.__getitem__)
    assert config == candidates[best] and score == pytest.approx(scores[best], rel=1e-4)
    with pytest.warns(RuntimeWarning, match="best subnets"):
        search_representative(net, probe, 25, torch.Generator().manual_seed(5), n_candidates=40, top=1, limit=limit)
    assert all(torch.equal(a, b) for a, b in zip(statistics, running_statistics(net), strict=True))
    with pytest.raises(ValueError, match="under"):
        search_representative(net, probe, 25, generator, n_candidates=5, limit=1e-6)
    # With nothing under the limit, the fallback (E2Net's previous subnet) is kept and scored like a candidate.
    kept, occupancy, kept_score = search_representative(net, probe, 25, generator, n_candidates=5, limit=1e-6,
                                                        fallback=config)
    assert kept == config and occupancy == net.occupancy(config) and kept_score == pytest.approx(score, rel=1e-4)


def test_teacher_stays_frozen_while_the_working_net_learns():
    model = learner()
    x, y = after_first_task(model)
    teacher = model.teacher
    assert teacher is not None and not teacher.training and 0 < model.occupancy < 0.95
    assert model.stages[0] == 4 and all(e < 4 for e in model.config.expand) and all(w < 4 for w in model.config.width)
    assert all(not p.requires_grad for p in teacher.parameters())
    optimized = {id(p) for group in model.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    frozen = copy.deepcopy(teacher.state_dict())
    working = [p.detach().clone() for p in model.net.parameters()]
    for _ in range(3):
        model.observe(x, y, x)
        assert model.net.backbone.active_config == model.net.backbone.max_config()
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    # The distillation term's subnet pass leaves the working net's running statistics alone.
    statistics = running_statistics(model.net)
    model.extra_loss(x)
    assert all(torch.equal(a, b) for a, b in zip(statistics, running_statistics(model.net), strict=True))
    assert all(m.running_mean is None for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any(not torch.equal(a, b) for a, b in zip(working, model.net.parameters()))
    assert model.teacher_parameter_count == model.net.backbone.parameter_count(model.config)
    teacher_bytes = sum(t.numel() * t.element_size() for t in teacher.state_dict().values())
    assert model.storage_bytes() == model.buffer.nbytes + teacher_bytes


def test_working_net_returns_to_the_max_config_after_a_failing_subnet_pass(monkeypatch):
    model = learner()
    x, _ = after_first_task(model)

    def broken(encoded, labels=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.net, "classify", broken)
    with pytest.raises(RuntimeError, match="boom"):
        model.subnet_loss(x)
    assert model.net.backbone.active_config == model.net.backbone.max_config()


def test_replay_gate_stores_at_rate_exp_minus_075_occupancy():
    model = learner()
    state = model.generator.get_state()
    assert all(model.admits() for _ in range(10))  # task 0: always, without a draw
    assert torch.equal(model.generator.get_state(), state)
    model.occupancy = 0.6
    trials, p = 2000, math.exp(-0.75 * 0.6)
    stored = sum(model.admits() for _ in range(trials))
    assert abs(stored - trials * p) < 4 * math.sqrt(trials * p * (1 - p))
    model = learner()
    x, y = after_first_task(model)
    seen = model.buffer.seen
    model.occupancy = 100.0  # exp(-75): nothing enters
    model.observe(x, y, x)
    assert model.buffer.seen == seen


def test_loss_adds_the_weighted_subnet_term_to_derpp():
    model = learner()
    x, y = after_first_task(model)
    with torch.no_grad():  # move the working net away from the teacher it was just copied into
        for parameter in model.net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    state = model.generator.get_state()

    def copy_of(weight: float) -> E2Net:
        other = learner(subnet_weight=weight)
        other.net.load_state_dict(model.net.state_dict())
        other.buffer = copy.deepcopy(model.buffer)
        other.teacher, other.config, other.occupancy = copy.deepcopy(model.teacher), model.config, model.occupancy
        other.generator.set_state(state)
        return other

    derpp = DERPP(copy.deepcopy(model.net), buffer=copy.deepcopy(model.buffer), alpha=0.2, beta=0.5, lr=0.05,
                  generator=torch.Generator().set_state(state), augment=Augmentation(1, True), minibatch=8)
    manual_net = copy.deepcopy(model.net).train()
    manual_net.backbone.set_active(model.config)
    with torch.no_grad():
        manual = float(F.mse_loss(manual_net(x), model.teacher(x)))
    assert manual > 0
    unweighted = copy_of(0.0).observe(x, y, x)
    assert unweighted == pytest.approx(derpp.observe(x, y, x), abs=1e-6)
    assert copy_of(0.05).observe(x, y, x) == pytest.approx(unweighted + 0.05 * manual, abs=1e-5)
    assert model.observe(x, y, x) == pytest.approx(unweighted + 0.05 * manual, abs=1e-5)


def test_tiny_stream_runs_three_tasks():
    x, y = images(12, seed=0)
    tx, ty = images(4, seed=1)
    tasks = split_tasks(y, ty, STREAM)
    model = learner(n_candidates=20)
    result = train_stream(model, x, y, tx, ty, tasks, n_epochs=1, batch_size=8)
    assert result.class_il.shape == result.task_il.shape == (3, 3)
    assert np.isfinite(np.diag(result.class_il)).all() and np.isnan(result.class_il[0, 1:]).all()
    assert model.teacher is not None and 0 < model.occupancy < 0.95 and model.score >= 0
    assert model.buffer.seen <= len(x) and len(model.buffer) == 24
    assert model.storage_bytes() > model.buffer.nbytes
    with pytest.raises(TypeError, match="ElasticResNet"):
        E2Net(PlainNet(torch.nn.Linear(2, 2), BLACK), n_tasks=3, alpha=0.1, beta=0.5, buffer=ReservoirBuffer(4),
              lr=0.1, generator=torch.Generator())
