"""DER (Table B.1's baseline): one frozen extractor per task, the classifier on their concatenation, the auxiliary
new+1 head, the herding memory and weight aligning."""

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.der import DER, ExpandableNet, align_new_weights, auxiliary_labels, build
from methods.cl.er import Augmentation
from methods.cl.incremental import class_splits, train_incremental
from reproduce.etag import runs
from tests.methods.cl.test_etag import FAST, templates


def tiny_der(n_classes: int = 6, seed: int = 0, memory_size: int = 12, cls=DER) -> DER:
    """DER of width-2 ResNet-18 extractors with a small memory."""
    torch.manual_seed(seed)
    learner = build(n_classes, 2, 3, generator=torch.Generator().manual_seed(seed), optim=FAST,
                    memory_size=memory_size)
    return learner if cls is DER else cls(learner.net, generator=learner.generator, memory=learner.memory, optim=FAST)


class _Snapshots(DER):
    """Keeps, when each task begins (after the expansion), every extractor's state and the classifier's weights."""

    def begin_task(self, task, classes):
        super().begin_task(task, classes)
        self.snapshots = getattr(self, "snapshots", [])
        self.snapshots.append({"extractors": [{k: v.clone() for k, v in e.state_dict().items()}
                                              for e in self.net.extractors],
                               "fc": self.net.fc.weight.detach().clone(), "feature_dim": self.net.feature_dim,
                               "aux": None if self.net.aux_fc is None else self.net.aux_fc.out_features,
                               "memory": self.memory.y.clone()})


@pytest.fixture(scope="module")
def three_tasks():
    """A DER run over 6 classes in 3 tasks of 2 (class order shuffled), with snapshots at every task."""
    x, y = templates(6, 8, seed=0)
    test_x, test_y = templates(6, 4, seed=1)
    learner = tiny_der(cls=_Snapshots)
    splits = class_splits(6, 2, 2, order=[3, 0, 5, 1, 4, 2])
    result = train_incremental(learner, x, y, test_x, test_y, splits, epochs=2, batch_size=8,
                               augment=Augmentation(1, True))
    return learner, splits, result, (x, y)


def test_auxiliary_labels_send_every_old_class_to_the_one_old_output():
    labels = torch.tensor([5, 2, 7, 0, 7, 9])
    assert auxiliary_labels(labels, (7, 5)).tolist() == [2, 0, 1, 0, 1, 0]
    assert auxiliary_labels(labels, (9,)).tolist() == [0, 0, 0, 0, 0, 1]


def test_weight_aligning_gives_new_rows_the_old_rows_mean_norm():
    fc = torch.nn.Linear(2, 4)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 2.0]]))
    bias = fc.bias.detach().clone()
    gamma = align_new_weights(fc, old_classes=[0, 1], new_classes=[2, 3])
    assert gamma == pytest.approx(3.0 / 6.0)  # mean old norm (5 + 1) / 2 over mean new norm (10 + 2) / 2
    torch.testing.assert_close(fc.weight[2:], torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    torch.testing.assert_close(fc.weight[:2], torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    assert torch.equal(fc.bias, bias)


def test_old_extractors_are_bit_identical_after_each_later_task(three_tasks):
    learner, _, _, _ = three_tasks
    final = [{k: v for k, v in e.state_dict().items()} for e in learner.net.extractors]
    first_at_task1, first_at_task2 = learner.snapshots[1]["extractors"][0], learner.snapshots[2]["extractors"][0]
    second_at_task2 = learner.snapshots[2]["extractors"][1]
    # Extractor 0 as task 0 left it: unchanged through tasks 1 and 2 (weights and batch-norm statistics).
    assert all(torch.equal(first_at_task1[k], v) for k, v in first_at_task2.items())
    assert all(torch.equal(first_at_task1[k], v) for k, v in final[0].items())
    assert all(torch.equal(second_at_task2[k], v) for k, v in final[1].items())
    # The newest extractor starts as a copy of the previous one and then trains.
    assert all(torch.equal(second_at_task2[k], v) for k, v in learner.snapshots[2]["extractors"][2].items())
    assert any(not torch.equal(second_at_task2[k], v) for k, v in final[2].items())
    assert [p.requires_grad for e in learner.net.extractors for p in e.parameters()].count(True) == \
        sum(1 for _ in learner.net.extractors[-1].parameters())
    learner.net.train()
    assert [e.training for e in learner.net.extractors] == [False, False, True]


def test_feature_dimension_grows_by_one_extractor_per_task_and_the_classifier_reads_all(three_tasks):
    learner, splits, _, (x, _) = three_tasks
    d = learner.net.extractor_dim
    assert d == 16  # 8 x width 2
    assert [s["feature_dim"] for s in learner.snapshots] == [d, 2 * d, 3 * d]
    assert learner.net.fc.in_features == 3 * d and learner.net.fc.out_features == 6
    learner.net.eval()
    with torch.no_grad():
        by_hand = learner.net.fc(torch.cat([e.features(x[:5]) for e in learner.net.extractors], 1))
        torch.testing.assert_close(learner.logits(x[:5]), by_hand)
        # The old extractors' features reach the logits through their columns.
        learner.net.fc.weight[:, :d] += 1.0
        assert not torch.allclose(learner.logits(x[:5]), by_hand)
        learner.net.fc.weight[:, :d] -= 1.0


def test_expansion_keeps_the_old_classes_weights_on_the_old_features(three_tasks):
    learner, splits, _, _ = three_tasks
    # At task 2's start, the old classes' rows on the first 2d columns are the aligned rows task 1 ended with.
    d = learner.net.extractor_dim
    old = list(splits[0] + splits[1])
    at_task2 = learner.snapshots[2]["fc"]
    net = ExpandableNet(6, width=2)
    net.expand(splits[0], 2)
    with torch.no_grad():
        net.fc.weight.normal_()
        before = net.fc.weight.detach().clone()
    net.expand(old, 2)
    assert net.fc.in_features == 3 * d
    torch.testing.assert_close(net.fc.weight[old, :2 * d], before[old])
    assert at_task2.shape == (6, 3 * d)


def test_auxiliary_head_has_new_plus_one_outputs_and_its_loss_by_hand(three_tasks):
    learner, _, _, (x, y) = three_tasks
    assert [s["aux"] for s in learner.snapshots] == [None, 3, 3]
    new = learner.classes
    rows = torch.isin(y, torch.tensor([*new, *learner.old_classes[:2]]))
    terms = learner.losses(x[rows], y[rows])
    assert set(terms) == {"current", "aux", "total"}
    features = learner.net.extractors[-1].features(x[rows])
    targets = auxiliary_labels(y[rows], new)
    assert (targets == 0).sum() == torch.isin(y[rows], torch.tensor(learner.old_classes)).sum() > 0
    torch.testing.assert_close(terms["aux"], F.cross_entropy(learner.net.aux_fc(features), targets))
    # Only the newest extractor and the heads get gradients.
    learner.net.zero_grad(set_to_none=True)
    terms["total"].backward()
    assert all(p.grad is None for e in learner.net.extractors[:-1] for p in e.parameters())
    assert learner.net.aux_fc.weight.grad is not None and learner.net.fc.weight.grad is not None


def test_exemplars_are_stored_within_the_budget_and_replayed(three_tasks):
    learner, splits, _, (x, y) = three_tasks
    assert learner.stored_exemplars > 0 and learner.stored_exemplars <= 12
    counts = {c: int((learner.memory.y == c).sum()) for c in range(6)}
    assert counts == {c: 2 for c in range(6)}  # 12 // 6 seen classes each, after the last task
    assert [len(s["memory"]) for s in learner.snapshots] == [0, 12, 12]  # 6 each of 2, then 3 each of 4
    assert sorted(learner.snapshots[2]["memory"].unique().tolist()) == sorted(splits[0] + splits[1])
    task_x, task_y = learner.training_set(x[y == 0], y[y == 0])
    assert len(task_y) == 8 + 12 and torch.equal(task_y[8:], learner.memory.y)


def test_new_class_weights_are_aligned_after_each_later_task(three_tasks):
    learner, _, _, _ = three_tasks
    weight = learner.net.fc.weight.detach()
    old, new = list(learner.old_classes), list(learner.classes)
    assert float(weight[new].norm(dim=1).mean()) == pytest.approx(float(weight[old].norm(dim=1).mean()), rel=1e-5)


def test_registry_builds_der_with_the_configs_width_and_memory():
    learner = runs.build_learner("der", 10, 4, 1, {"lr_decay_step": 30, "hyper": {"der": {"memory_size": 50}}},
                                 torch.Generator())
    assert isinstance(learner, DER) and learner.net.extractor_dim == 32 and learner.memory.budget == 50
    assert build(10, 2, 3, generator=torch.Generator(), memory_per_class=20).memory.quota(7) == 20
    with pytest.raises(ValueError, match="aux_weight"):
        build(10, 2, 3, generator=torch.Generator(), aux_weight=-1.0)
