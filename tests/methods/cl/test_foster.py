"""FOSTER: class-balanced logits alignment, the boosted (concatenated) network with its frozen old half,
balanced distillation into a one-backbone student, and the exemplar budget, on hand-worked examples and
tiny runs."""

import math

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import count_parameters, resnet18
from methods.cl.exemplar_free import soft_cross_entropy
from methods.cl.foster import (
    FOSTER,
    BoostedNet,
    adjusted_cross_entropy,
    balanced_distillation,
    build,
    class_balanced_weights,
)
from methods.cl.incremental import class_splits, train_incremental
from tests.methods.cl.test_etag import FAST, templates

N_CLASSES, WIDTH = 6, 4


def _hand_weights(counts, beta):
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [r * len(raw) / sum(raw) for r in raw]


def test_class_weights_follow_the_effective_number_and_alignment_divides_each_logit_by_its_weight():
    counts = [20, 200, 200]  # one old class (its exemplars) beside two new ones
    weights = class_balanced_weights(torch.tensor(counts), 0.96)
    expected = _hand_weights(counts, 0.96)  # 1 - 0.96**20 = 0.5580: 0.0717 against 0.0400 (x2) -> 1.4176, 0.7912
    torch.testing.assert_close(weights, torch.tensor(expected), atol=1e-6, rtol=0)
    assert abs(expected[0] - 1.4176) < 1e-3 and abs(expected[1] - 0.7912) < 1e-3
    assert abs(float(weights.sum()) - 3) < 1e-5
    logits, label = [1.0, 2.0, 0.5], 0
    scaled = [o / w for o, w in zip(logits, expected)]
    hand = -scaled[label] + math.log(sum(math.exp(s) for s in scaled))
    ours = adjusted_cross_entropy(torch.tensor([logits]), torch.tensor([label]), weights)
    assert abs(float(ours) - hand) < 1e-5
    # The old class's logit is shrunk (weight > 1), so the aligned loss on an old-class row exceeds plain CE.
    assert float(ours) > float(F.cross_entropy(torch.tensor([logits]), torch.tensor([label])))
    with pytest.raises(ValueError, match="beta"):
        class_balanced_weights(torch.tensor(counts), 1.0)
    with pytest.raises(ValueError, match="at least one"):
        class_balanced_weights(torch.tensor([0, 5]), 0.9)


def test_balanced_distillation_matches_a_hand_computed_example_and_is_plain_kd_under_equal_weights():
    teacher, student, weights, t = [2.0, 0.0, 1.0], [0.5, 1.0, -1.0], [1.5, 0.5, 1.0], 2.0
    soft = [math.exp(v / t) for v in teacher]
    q = [s * w for s, w in zip(soft, weights)]
    q = [v / sum(q) for v in q]
    log_z = math.log(sum(math.exp(v / t) for v in student))
    hand = -sum(qk * (s / t - log_z) for qk, s in zip(q, student))
    ours = balanced_distillation(torch.tensor([student]), torch.tensor([teacher]), torch.tensor(weights), t)
    assert abs(float(ours) - hand) < 1e-6
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(balanced_distillation(a, b, torch.ones(4), 2.0), soft_cross_entropy(a, b, 2.0))


def _old_net(seed=0):
    torch.manual_seed(seed)
    return resnet18(N_CLASSES, WIDTH, 3)


def test_the_boosted_feature_is_the_concatenation_and_the_classifier_starts_from_the_old_one():
    old = _old_net()
    boosted = BoostedNet(old, (0, 1))
    x = torch.randn(5, 3, 8, 8)
    boosted.eval()
    d = old.feature_dim
    torch.testing.assert_close(boosted.features(x), torch.cat([old.eval().features(x), boosted.new.features(x)], 1))
    assert boosted.features(x).shape == (5, 2 * d)
    torch.testing.assert_close(boosted(x), boosted.fc(boosted.features(x)))
    combined, own, previous = boosted.boosting_outputs(x)
    torch.testing.assert_close(combined, boosted(x))
    torch.testing.assert_close(own, boosted.new(x))
    torch.testing.assert_close(previous, old(x))
    # Old-class rows on the old block are W_old's; the new extractor starts as a copy of the old one.
    assert torch.equal(boosted.fc.weight[:2, :d], old.fc.weight[:2])
    assert torch.equal(boosted.fc.bias[:2], old.fc.bias[:2])
    new_state, old_state = boosted.new.state_dict(), old.state_dict()
    assert all(torch.equal(new_state[k], old_state[k]) for k in old_state if not k.startswith("fc."))
    assert not any(p.requires_grad for p in boosted.old.parameters())
    assert all(p.requires_grad for p in boosted.new.parameters())
    boosted.train()
    assert not boosted.old.training and boosted.new.training


class _Probe(FOSTER):
    """Records, at each task's compression: the old network's state at the start of boosting and at its end,
    the teacher's parameter count, the student at initialisation, and one batch's compression and boosting
    loss terms (with the teacher's three logits on that batch)."""

    def begin_task(self, task, classes):
        super().begin_task(task, classes)
        if task > 0:
            self.at_start = {k: v.clone() for k, v in self.net.old.state_dict().items()}

    def student_from(self, teacher):
        student = super().student_from(teacher)
        self.first_student = {k: v.clone() for k, v in student.state_dict().items()}
        return student

    def compress(self, batches):
        teacher = self.net
        self.at_end = {k: v.clone() for k, v in teacher.old.state_dict().items()}
        self.new_state = {k: v.clone() for k, v in teacher.new.state_dict().items()}
        self.teacher_parameters = count_parameters(teacher)
        inputs, labels = next(iter(batches()))
        terms = {k: float(v.detach()) for k, v in self.losses(inputs, labels).items()}  # train mode
        with torch.no_grad():
            self.boosting_probe = (labels, *teacher.boosting_outputs(inputs), terms)
        teacher.eval()
        student = self.student_from(teacher)
        weights = self.class_weights(self.beta_compression)
        self.probe = (student, teacher, inputs, weights,
                      float(self.compression_loss(student, teacher, inputs, weights).detach()))
        return super().compress(batches)


def tiny_foster(seed=0, cls=FOSTER, **hyper):
    """``build``'s learner (``cls`` FOSTER) or the same network and memory in a subclass; ``hyper`` goes to build."""
    torch.manual_seed(seed)
    learner = build(N_CLASSES, WIDTH, 3, generator=torch.Generator().manual_seed(seed), optim=FAST, **hyper)
    return learner if cls is FOSTER else cls(learner.net, memory=learner.memory, generator=learner.generator,
                                             optim=FAST)


def _run(learner, epochs=2, per_class=10, tasks=1):
    x, y = templates(N_CLASSES, per_class, seed=0)
    tx, ty = templates(N_CLASSES, 4, seed=1)
    splits = class_splits(N_CLASSES, N_CLASSES - 2 * tasks, tasks)
    return train_incremental(learner, x, y, tx, ty, splits, epochs=epochs, batch_size=8), splits


def test_boosting_keeps_the_old_network_bit_identical_and_compression_returns_one_backbone_and_head():
    learner = tiny_foster(cls=_Probe, exemplars_per_class=3)
    _run(learner, epochs=2)
    # The old half (parameters and batch-norm statistics) is bit-identical after the boosting epochs,
    # while the new half trained away from its copy.
    assert all(torch.equal(learner.at_start[k], learner.at_end[k]) for k in learner.at_start)
    assert any(not torch.equal(learner.new_state[k], learner.at_start[k]) for k in learner.at_start)
    one = count_parameters(resnet18(N_CLASSES, WIDTH, 3))
    d = learner.net.feature_dim
    assert learner.teacher_parameters == 2 * one + (2 * d + 1) * N_CLASSES  # two ResNets, their heads, W
    assert type(learner.net).__name__ == "ResNet" and count_parameters(learner.net) == one
    # The student started as the old network: its extractor and its old-class rows.
    first, old = learner.first_student, learner.at_start
    assert all(torch.equal(first[k], old[k]) for k in old if not k.startswith("fc."))
    assert torch.equal(first["fc.weight"][:4], old["fc.weight"][:4])
    assert not torch.equal(first["fc.weight"][4:], old["fc.weight"][4:])


def test_the_compression_loss_is_balanced_kd_from_the_teachers_seen_class_logits():
    learner = tiny_foster(cls=_Probe, exemplars_per_class=3)
    _run(learner, epochs=1)
    student, teacher, inputs, weights, loss = learner.probe
    seen = [0, 1, 2, 3, 4, 5]
    # Training set of task 1: 3 exemplars of each old class, 10 rows of each new one.
    assert learner.class_counts.tolist() == [3, 3, 3, 3, 10, 10]
    torch.testing.assert_close(weights.cpu(), torch.tensor(_hand_weights([3, 3, 3, 3, 10, 10], 0.97)))
    with torch.no_grad():
        t = teacher.eval()(inputs)[:, seen]
        s = student(inputs)[:, seen]
    q = F.softmax(t / 2, 1) * weights
    q = q / q.sum(1, keepdim=True)
    hand = float(-(q * F.log_softmax(s / 2, 1)).sum(1).mean())
    assert abs(loss - hand) < 1e-4


def test_the_boosting_loss_is_aligned_ce_plus_the_new_modules_ce_plus_kd_from_the_old_network():
    learner = tiny_foster(cls=_Probe, exemplars_per_class=3)
    _run(learner, epochs=1)
    labels, combined, own, old, terms = learner.boosting_probe
    w = torch.tensor(_hand_weights([3, 3, 3, 3, 10, 10], 0.96))  # beta_1 on the task's class counts
    aligned = F.cross_entropy(combined / w, labels)  # all six classes are seen; positions equal labels
    enhance = F.cross_entropy(own, labels)
    distill = -(F.softmax(old[:, :4] / 2, 1) * F.log_softmax(combined[:, :4] / 2, 1)).sum(1).mean()
    assert abs(terms["aligned"] - float(aligned)) < 1e-4
    assert abs(terms["new_module"] - float(enhance)) < 1e-4
    assert abs(terms["distill"] - float(distill)) < 1e-4
    assert abs(terms["total"] - float(aligned + enhance + distill)) < 1e-4
    assert abs(float(aligned) - float(F.cross_entropy(combined, labels))) > 1e-3  # the alignment acts


def test_compression_runs_as_many_epochs_as_boosting_by_default_and_its_loss_falls():
    learner = tiny_foster(exemplars_per_class=3)
    _run(learner, epochs=3)
    compression = [h for h in learner.history if h["phase"] == "compression"]
    assert [h["task"] for h in compression] == [1, 1, 1]
    assert compression[-1]["compression"] < compression[0]["compression"]
    boosting = [h for h in learner.history if h["phase"] == "network" and h["task"] == 1]
    assert {"aligned", "new_module", "distill", "total"} <= set(boosting[0])
    short = tiny_foster(exemplars_per_class=3, compression_epochs=1)
    _run(short, epochs=2)
    assert sum(h["phase"] == "compression" for h in short.history) == 1


def test_exemplars_stay_within_the_per_class_and_the_total_budget():
    per_class = tiny_foster(exemplars_per_class=3)
    _, splits = _run(per_class, epochs=1, tasks=2)
    assert per_class.stored_exemplars == len(per_class.memory) == 3 * N_CLASSES
    assert torch.bincount(per_class.memory.y, minlength=N_CLASSES).tolist() == [3] * N_CLASSES
    total = tiny_foster(memory_size=10)
    _run(total, epochs=1, tasks=2)
    assert total.stored_exemplars <= 10
    assert torch.bincount(total.memory.y, minlength=N_CLASSES).max() <= 10 // N_CLASSES
    with pytest.raises(ValueError, match="exactly one"):
        tiny_foster(memory_size=10, exemplars_per_class=2)
