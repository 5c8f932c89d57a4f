"""FeTrIL: translated pseudo-features, the frozen extractor, the SVM over all seen classes, tiny runs."""

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.fetril import FeTrIL, build, fit_linear_svm, translate_features
from methods.cl.incremental import class_splits, train_incremental
from tests.methods.cl.test_etag import FAST, templates


def tiny_fetril(n_classes: int, seed: int = 0, cls=FeTrIL) -> FeTrIL:
    torch.manual_seed(seed)
    learner = build(n_classes, 4, 3, generator=torch.Generator().manual_seed(seed), optim=FAST)
    return learner if cls is FeTrIL else cls(learner.net, generator=learner.generator, optim=FAST)


def test_pseudo_features_have_each_old_class_mean_and_the_nearest_new_class_spread():
    torch.manual_seed(0)
    means = torch.zeros(6, 4)
    means[:3] = torch.tensor([[9.0, 0, 0, 0], [0, 9.0, 0, 0], [1.0, 1, 0, 0]])
    centres = {3: torch.tensor([8.0, 1, 0, 0]), 4: torch.tensor([0, 8.0, 1, 0]), 5: torch.tensor([0, 0, 0, 9.0])}
    counts = {3: 5, 4: 7, 5: 3}
    features = torch.cat([centres[c] + torch.randn(counts[c], 4) for c in (3, 4, 5)])
    labels = torch.cat([torch.full((counts[c],), c) for c in (3, 4, 5)])
    for c in (3, 4, 5):
        means[c] = features[labels == c].mean(0)
    pseudo, pseudo_labels = translate_features(features, labels, means, (0, 1, 2), (3, 4, 5))
    nearest = {0: 3, 1: 4, 2: 3}  # Euclidean nearest new-class mean
    assert sorted(pseudo_labels.unique().tolist()) == [0, 1, 2]
    for old, source in nearest.items():
        rows = pseudo[pseudo_labels == old]
        assert len(rows) == counts[source]
        torch.testing.assert_close(rows.mean(0), means[old], atol=1e-5, rtol=0)  # exactly mu_c
        # The spread is the source class's own: f - mu_n, unchanged.
        torch.testing.assert_close(rows - means[old], features[labels == source] - means[source], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="new class"):
        translate_features(features, torch.zeros_like(labels), means, (0, 1, 2), (3, 4, 5))


def test_two_class_svm_rows_give_sklearns_decisions():
    torch.manual_seed(1)
    features = torch.cat([torch.randn(20, 5) + 2, torch.randn(20, 5) - 2])
    labels = torch.tensor([7] * 20 + [2] * 20)
    classes, weight, bias = fit_linear_svm(features, labels, c=1.0, tol=1e-4, seed=0)
    assert classes.tolist() == [2, 7] and weight.shape == (2, 5) and bias.shape == (2,)
    test = torch.randn(30, 5) * 3
    ours = classes[(F.normalize(test, dim=1) @ weight.T + bias).argmax(1)]
    reference = LinearSVC(dual=False, tol=1e-4).fit(F.normalize(features, dim=1).double().numpy(), labels.numpy())
    assert ours.tolist() == reference.predict(F.normalize(test, dim=1).double().numpy()).tolist()
    with pytest.raises(ValueError, match="two classes"):
        fit_linear_svm(features[:3], torch.zeros(3, dtype=torch.long), c=1.0, tol=1e-4, seed=0)


class _SnapshotAtSecondTask(FeTrIL):
    """Records the extractor's state (parameters and batch-norm statistics) when task 1 begins."""

    def begin_task(self, task, classes):
        if task == 1:
            self.snapshot = {k: v.clone() for k, v in self.net.backbone.state_dict().items()}
        super().begin_task(task, classes)


def test_extractor_is_frozen_after_the_first_task_and_the_svm_covers_all_seen_classes():
    x, y = templates(6, 12, seed=0)
    tx, ty = templates(6, 6, seed=1)
    learner = tiny_fetril(6, cls=_SnapshotAtSecondTask)
    initial = {k: v.clone() for k, v in learner.net.backbone.state_dict().items()}
    splits = class_splits(6, 2, 2)
    result = train_incremental(learner, x, y, tx, ty, splits, epochs=3, batch_size=8)
    after = learner.net.backbone.state_dict()
    assert any(not torch.equal(initial[k], learner.snapshot[k]) for k in initial)  # the first task trained it
    assert all(torch.equal(learner.snapshot[k], after[k]) for k in after)  # bit-identical after tasks 1 and 2
    assert not any(p.requires_grad for p in learner.net.backbone.parameters())
    # The SVM scores every seen class; the last refit's old-class pseudo-features have the stored means.
    assert torch.isfinite(learner.net.svm.bias).all() and (learner.net.svm.weight.abs().sum(1) > 0).all()
    pseudo, pseudo_labels = learner.pseudo_features
    assert sorted(pseudo_labels.unique().tolist()) == [0, 1, 2, 3]
    for c in range(4):
        torch.testing.assert_close(pseudo[pseudo_labels == c].mean(0), learner.net.class_means[c], atol=1e-4, rtol=0)
    # Old classes stay recognised: every task well above chance (1/6) after the last step.
    assert np.all(result.task_accuracy[-1] > 50.0), result.task_accuracy
    assert learner.stored_exemplars == 0


def test_two_tiny_tasks_end_to_end():
    x, y = templates(4, 10, seed=2)
    tx, ty = templates(4, 5, seed=3)
    learner = tiny_fetril(4, seed=1)
    assert torch.isinf(learner.net.svm.bias).all()  # no class scored before any task
    splits = class_splits(4, 2, 1)
    result = train_incremental(learner, x, y, tx, ty, splits, epochs=3, batch_size=8)
    logits = learner.logits(tx)
    assert logits.shape == (len(tx), 4) and torch.isfinite(logits).all()
    assert result.seen_accuracy.shape == (2,) and result.seen_accuracy[-1] > 50.0
    assert [h["task"] for h in learner.history] == [0, 0, 0]  # epochs recorded for the first task only
