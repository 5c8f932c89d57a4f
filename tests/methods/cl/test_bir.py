"""BI-R: class gates on the decoder, conditional replay from old classes' prior modes, distillation from the
previous model, the frozen extractor."""

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.bir import BrainInspiredReplay, FeedbackVAE, build, class_gates, distillation
from methods.cl.gaussian_vae import gaussian_log_density
from methods.cl.incremental import class_splits, train_incremental
from tests.methods.cl.test_etag import FAST, templates


def test_each_class_gate_zeroes_exactly_the_stated_fraction_and_differs_from_the_others():
    gates = class_gates(10, 200, 0.7, torch.Generator().manual_seed(0))
    assert gates.shape == (10, 200) and set(gates.unique().tolist()) == {0.0, 1.0}
    assert ((gates == 0).sum(1) == 140).all()
    assert all(not torch.equal(gates[a], gates[b]) for a in range(10) for b in range(a + 1, 10))
    with pytest.raises(ValueError, match="fraction"):
        class_gates(2, 10, 1.0, torch.Generator())


def test_a_gated_off_unit_does_not_reach_that_class_decoding_but_reaches_the_others():
    torch.manual_seed(0)
    model = FeedbackVAE(6, 3, hidden=20, latent=4, gate_fraction=0.5, generator=torch.Generator().manual_seed(1))
    assert model.gates.shape == (2, 3, 20) and ((model.gates == 0).sum(-1) == 10).all()
    z = torch.randn(5, 4)
    one_hot = F.one_hot(torch.tensor(0), 3).float().expand(5, 3)
    other = F.one_hot(torch.tensor(1), 3).float().expand(5, 3)
    before, before_other = model.decode(z, one_hot), model.decode(z, other)
    off = (model.gates[0, 0] == 0) & (model.gates[0, 1] == 1)  # off for class 0, on for class 1
    assert off.any()
    with torch.no_grad():
        model.decoder[0].weight[off] += 5.0  # change only those units' incoming weights
    assert torch.equal(model.decode(z, one_hot), before)  # class 0 never sees them
    assert not torch.allclose(model.decode(z, other), before_other)  # class 1 does
    # A probability vector mixes the masks: weights (0.25, 0.75, 0) scale each unit by 0.25 m_0 + 0.75 m_1.
    mixed = torch.tensor([[0.25, 0.75, 0.0]])
    h = F.relu(model.decoder[0](z[:1])) * (0.25 * model.gates[0, 0] + 0.75 * model.gates[0, 1])
    h = F.relu(model.decoder[1](h)) * (0.25 * model.gates[1, 0] + 0.75 * model.gates[1, 1])
    torch.testing.assert_close(model.decode(z[:1], mixed), model.output(h))


def test_the_prior_is_the_label_mode_or_the_mixture_weighted_by_the_soft_labels():
    torch.manual_seed(0)
    model = FeedbackVAE(6, 3, hidden=8, latent=4, generator=torch.Generator().manual_seed(0))
    z = torch.randn(5, 4)
    modes = torch.stack([gaussian_log_density(z, model.prior_means[c], model.prior_logvars[c]) for c in range(3)], 1)
    labels = torch.tensor([2, 0, 1, 1, 2])
    torch.testing.assert_close(model.log_prior(z, F.one_hot(labels, 3).float()), modes[torch.arange(5), labels])
    weights = torch.softmax(torch.randn(5, 3), 1)
    torch.testing.assert_close(model.log_prior(z, weights), (weights * modes.exp()).sum(1).log())


class _SnapshotAtSecondTask(BrainInspiredReplay):
    """Records the extractor's state (parameters and batch-norm statistics) when task 1 begins."""

    def begin_task(self, task, classes):
        if task == 1:
            self.snapshot = {k: v.clone() for k, v in self.net.backbone.state_dict().items()}
            self.model_snapshot = {k: v.clone() for k, v in self.net.model.state_dict().items()}
        super().begin_task(task, classes)


def tiny_run(n_classes: int = 4, first: int = 2, tasks: int = 1, epochs: int = 2):
    x, y = templates(n_classes, 10, seed=0)
    tx, ty = templates(n_classes, 5, seed=1)
    torch.manual_seed(0)
    built = build(n_classes, 4, 3, generator=torch.Generator().manual_seed(0), optim=FAST, hidden=32, latent=8)
    learner = _SnapshotAtSecondTask(built.net, generator=built.generator, optim=FAST)
    initial = {k: v.clone() for k, v in learner.net.backbone.state_dict().items()}
    result = train_incremental(learner, x, y, tx, ty, class_splits(n_classes, first, tasks), epochs=epochs,
                               batch_size=8)
    return learner, initial, result


def test_replay_is_decoded_by_the_previous_model_from_the_old_classes_prior_modes():
    learner, _, _ = tiny_run()
    previous = learner.previous
    assert previous is not None and learner.old_classes == (0, 1)
    assert all(not p.requires_grad for p in previous.parameters())
    with torch.no_grad():
        previous.prior_logvars.fill_(-60.0)  # z = the mode's mean: the sample is the mode's decoding
    features, classes, scores = learner.replay(64)
    assert set(classes.tolist()) == {0, 1}  # old classes only, both drawn
    expected = previous.decode(previous.prior_means[classes], F.one_hot(classes, 4).float())
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)
    # The two classes' samples differ (different modes and gates).
    assert not torch.allclose(features[classes == 0][0], features[classes == 1][0])
    torch.testing.assert_close(scores, previous(features)[:, [0, 1]])


def test_distillation_target_is_the_previous_models_soft_output_on_the_replayed_features():
    learner, _, _ = tiny_run()
    replayed, classes, scores = learner.last_replay  # of the last step of task 1
    assert set(classes.tolist()) <= {0, 1}
    torch.testing.assert_close(scores, learner.previous(replayed)[:, [0, 1]])
    model = learner.net.model
    seen = learner.seen_index.tolist()
    assert seen == [0, 1, 2, 3]  # the old classes first, then the task's
    logits = model.classifier(model.encode(replayed)[2])[:, seen]
    term = distillation(logits, scores, 2.0)
    # The teacher's softmax over the old classes, padded with probability 0 for the new ones.
    targets = torch.cat([F.softmax(scores / 2, 1), torch.zeros(len(scores), 2)], 1)
    torch.testing.assert_close(term, 4.0 * -(targets * F.log_softmax(logits / 2, 1)).sum(1).mean())
    (grad,) = torch.autograd.grad(term, [logits])
    torch.testing.assert_close(grad, 2.0 * (F.softmax(logits / 2, 1) - targets) / len(logits))
    assert (grad[:, 2:] > 0).all()  # a descent step lowers the new classes' logits on every replayed sample
    # The teacher's own logits, with the new classes far below, are a fixed point.
    student = torch.cat([scores, torch.full((len(scores), 2), -1e4)], 1).requires_grad_()
    (grad_at_teacher,) = torch.autograd.grad(distillation(student, scores, 2.0), [student])
    assert grad_at_teacher.abs().max() < 1e-6


def test_frozen_layers_stay_bit_identical_while_the_feedback_model_learns():
    learner, initial, result = tiny_run(n_classes=6, first=2, tasks=2)
    after = learner.net.backbone.state_dict()
    assert any(not torch.equal(initial[k], learner.snapshot[k]) for k in initial)  # pre-trained on task 0
    assert all(torch.equal(learner.snapshot[k], after[k]) for k in after)  # bit-identical through tasks 1 and 2
    assert not any(p.requires_grad for p in learner.net.backbone.parameters())
    model_after = learner.net.model.state_dict()
    assert not all(torch.equal(learner.model_snapshot[k], model_after[k]) for k in model_after if k != "gates")
    assert torch.equal(learner.model_snapshot["gates"], model_after["gates"])  # the masks are fixed
    phases = [(h["task"], h["phase"]) for h in learner.history]
    assert phases == [(0, "network")] * 2 + [(0, "features")] * 2 + [(1, "features")] * 2 + [(2, "features")] * 2
    assert "distillation" in learner.history[-1] and result.seen_accuracy.shape == (3,)
