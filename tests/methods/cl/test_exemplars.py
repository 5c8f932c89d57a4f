"""The herding exemplar memory: iCaRL's herding, the budgets, and the loop training on task + memory."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.exemplars import ExemplarLearner, ExemplarMemory, herding_order
from methods.cl.incremental import IncrementalLearner, class_splits, train_incremental
from tests.methods.cl.test_etag import FAST


def test_herding_picks_at_each_step_the_sample_that_keeps_the_running_mean_nearest_the_class_mean():
    torch.manual_seed(0)
    features = torch.randn(9, 4)
    order = herding_order(features, 5).tolist()
    phi = F.normalize(features.double(), dim=1)
    mean = phi.mean(0)
    for k in range(1, 6):  # brute force: the k-th pick minimises ||mu - (sum of picks)/k|| over the rest
        rest = [i for i in range(9) if i not in order[:k - 1]]
        chosen = phi[order[:k - 1]].sum(0)
        best = min(rest, key=lambda i: float((mean - (chosen + phi[i]) / k).norm()))
        assert order[k - 1] == best
    assert len(set(order)) == 5


def test_a_herding_prefix_is_the_choice_for_a_smaller_memory_and_the_whole_order_is_a_permutation():
    torch.manual_seed(1)
    features = torch.randn(12, 6)
    full = herding_order(features, 12)
    assert sorted(full.tolist()) == list(range(12))
    for m in (0, 1, 4, 7):
        assert torch.equal(herding_order(features, m), full[:m])
    with pytest.raises(ValueError, match="cannot choose 13 of 12"):
        herding_order(features, 13)


def test_herding_keeps_the_mean_of_the_chosen_samples_closer_to_the_class_mean_than_a_random_choice():
    torch.manual_seed(2)
    features = torch.randn(200, 8) + torch.tensor([3.0] + [0.0] * 7)
    phi = F.normalize(features, dim=1)
    herded = phi[herding_order(features, 10)].mean(0)
    randoms = [phi[torch.randperm(200)[:10]].mean(0) for _ in range(50)]
    gap = float((herded - phi.mean(0)).norm())
    assert all(gap < float((r - phi.mean(0)).norm()) for r in randoms)


def _images(classes, per_class, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(classes) * per_class, 1, 4, 4, generator=generator)
    y = torch.tensor([c for c in classes for _ in range(per_class)])
    return x + y.view(-1, 1, 1, 1).float(), y


def _flat_features(x):
    return x.flatten(1)


def test_a_total_budget_is_shared_equally_and_shrinking_keeps_each_class_herding_prefix():
    memory = ExemplarMemory(budget=12)
    x0, y0 = _images((0, 1), 10)
    memory.update(x0, y0, _flat_features, (0, 1))
    assert len(memory) == 12 and memory.y.bincount().tolist() == [6, 6]
    first = {c: memory.x[memory.y == c].clone() for c in (0, 1)}
    x1, y1 = _images((2, 3, 4), 10, seed=1)
    memory.update(x1, y1, _flat_features, (0, 1, 2, 3, 4))
    assert memory.quota(5) == 2 and memory.y.bincount().tolist() == [2] * 5
    for c in (0, 1):  # truncation, not a new choice
        assert torch.equal(memory.x[memory.y == c], first[c][:2])
    for c in (2, 3, 4):  # the herding choice among the class's own images
        rows = (y1 == c).nonzero().flatten()
        assert torch.equal(memory.x[memory.y == c], x1[rows[herding_order(x1[rows].flatten(1), 2)]])


def test_a_per_class_memory_keeps_its_count_and_a_small_class_keeps_all_it_has():
    memory = ExemplarMemory(per_class=3)
    x, y = _images((0, 1), 5)
    memory.update(x, y, _flat_features, (0, 1))
    x2, y2 = _images((2,), 2)
    memory.update(x2, y2, _flat_features, (0, 1, 2))
    assert memory.y.bincount().tolist() == [3, 3, 2]
    for wrong in ({}, {"budget": 4, "per_class": 2}, {"per_class": 0}):
        with pytest.raises(ValueError):
            ExemplarMemory(**wrong)


class _Recording(ExemplarLearner):
    """A linear classifier on task + memory that records the labels of every batch it trains on."""

    def __init__(self, **kwargs):
        torch.manual_seed(0)
        super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), generator=torch.Generator().manual_seed(0),
                         optim=FAST, **kwargs)
        self.seen_labels: list[set[int]] = []

    def begin_task(self, task, classes):
        super().begin_task(task, classes)
        self.seen_labels.append(set())

    def losses(self, inputs, labels):
        self.net.train()
        self.seen_labels[-1].update(labels.tolist())
        return {"total": F.cross_entropy(self.net(inputs), labels)}

    def exemplar_features(self, inputs):
        return self.net[0](inputs)


def test_the_loop_trains_each_later_task_on_its_rows_plus_the_memory_and_counts_what_is_kept():
    x, y = _images(range(4), 6)
    learner = _Recording(memory=ExemplarMemory(budget=8))
    splits = class_splits(4, 2, 2)
    train_incremental(learner, x, y, x, y, splits, epochs=1, batch_size=4)
    assert learner.seen_labels == [{0, 1}, {0, 1, 2}, {0, 1, 2, 3}]
    assert learner.stored_exemplars == 8 and learner.memory.y.bincount().tolist() == [2, 2, 2, 2]
    assert learner.memory.x.shape == (8, 1, 4, 4)


def test_a_learner_without_memory_trains_on_the_task_rows_alone():
    class Plain(IncrementalLearner):
        def __init__(self):
            super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), generator=torch.Generator().manual_seed(0),
                             optim=FAST)
            self.labels = []

        def losses(self, inputs, labels):
            self.labels.append(set(labels.tolist()))
            return {"total": F.cross_entropy(self.net(inputs), labels)}

    x, y = _images(range(4), 6)
    learner = Plain()
    train_incremental(learner, x, y, x, y, class_splits(4, 2, 2), epochs=1, batch_size=24)
    assert learner.labels == [{0, 1}, {2}, {3}] and learner.stored_exemplars == 0
