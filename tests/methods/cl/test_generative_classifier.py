"""GC: one VAE per class untouched by other classes, the importance-sampled likelihood, argmax prediction."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from methods.cl.generative_classifier import (
    ClassVAE,
    GenerativeClassifier,
    GenerativeClassifierModel,
    build,
    importance_log_likelihood,
)
from methods.cl.incremental import class_splits, train_incremental
from tests.methods.cl.test_etag import FAST, templates

SCALES = torch.tensor([2.0, 0.5])  # the decoder's column norms s_i (orthogonal columns)


def linear_gaussian_vae(offset: torch.Tensor, posterior_shift: float = 0.0) -> tuple[ClassVAE, MultivariateNormal]:
    """A VAE ``x = W z + b + noise`` (``D = 3``, ``z`` of 2, ``W`` with orthogonal columns) whose encoder is the exact
    posterior ``N(S W^T (x - b), S)``, ``S = (I + W^T W)^-1`` (diagonal), its log-variance moved by ``posterior_shift``;
    and the closed-form marginal ``p(x) = N(b, W W^T + I)``."""
    vae = ClassVAE(3, hidden=0, latent=2)
    weight = torch.zeros(3, 2)
    weight[0, 0], weight[1, 1] = SCALES
    covariance = 1.0 / (1.0 + SCALES ** 2)
    with torch.no_grad():
        decoder = vae.decoder[-1]
        decoder.weight.copy_(weight)
        decoder.bias.copy_(offset)
        vae.to_mu.weight.copy_(covariance[:, None] * weight.T)
        vae.to_mu.bias.copy_(-(covariance[:, None] * weight.T) @ offset)
        vae.to_logvar.weight.zero_()
        vae.to_logvar.bias.copy_(covariance.log() + posterior_shift)
    return vae, MultivariateNormal(offset, weight @ weight.T + torch.eye(3))


def test_estimate_equals_the_closed_form_marginal_with_the_exact_posterior_and_improves_with_samples():
    offset = torch.tensor([0.5, -1.0, 2.0])
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) * 2
    exact_vae, marginal = linear_gaussian_vae(offset)
    closed = marginal.log_prob(x)
    # Every importance weight equals p(x) when q is the true posterior: exact for any S.
    for samples in (1, 7):
        estimate = importance_log_likelihood(exact_vae, x, samples, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(estimate, closed, atol=1e-4, rtol=0)
    # A too-wide posterior: the estimate is below log p(x) in expectation (Jensen) and rises towards it with S.
    wide, _ = linear_gaussian_vae(offset, posterior_shift=1.5)
    means = [float(importance_log_likelihood(wide, x, s, generator=torch.Generator().manual_seed(2)).mean())
             for s in (1, 30, 3000)]
    assert means[0] < means[1] < means[2] < float(closed.mean()) + 0.01, (means, float(closed.mean()))
    assert abs(means[2] - float(closed.mean())) < 0.05
    with pytest.raises(ValueError, match="at least one"):
        importance_log_likelihood(exact_vae, x, 0)


def test_prediction_is_the_argmax_of_the_trained_classes_likelihoods():
    offsets = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [-3.0, 0, 0]])
    model = GenerativeClassifierModel(3, 4, hidden=0, latent=2, samples=5)
    marginals = []
    for c, offset in enumerate(offsets):
        vae, marginal = linear_gaussian_vae(offset)
        model.vaes[c].load_state_dict(vae.state_dict())
        marginals.append(marginal)
    model.trained[:3] = True  # class 3 not yet learned
    x = torch.cat([offsets[:3] + 0.3 * torch.randn(3, 3, generator=torch.Generator().manual_seed(c))
                   for c in range(5)] + [offsets[3:]])
    scores = model(x)
    closed = torch.stack([m.log_prob(x) for m in marginals[:3]], 1)
    torch.testing.assert_close(scores[:, :3], closed, atol=1e-4, rtol=0)
    assert torch.isneginf(scores[:, 3]).all()
    assert torch.equal(scores.argmax(1), closed.argmax(1))
    # Each row near b_c goes to c; the row at the untrained class's mean goes to a trained class.
    assert scores[:15].argmax(1).tolist() == [0, 1, 2] * 5 and scores[15].argmax() != 3


class _Snapshots(GenerativeClassifier):
    """Records the whole network's state when each task begins."""

    def begin_task(self, task, classes):
        self.snapshots = getattr(self, "snapshots", []) + [{k: v.clone() for k, v in self.net.state_dict().items()}]
        super().begin_task(task, classes)


def tiny_gc(n_classes: int, cls=GenerativeClassifier) -> GenerativeClassifier:
    torch.manual_seed(0)
    learner = build(n_classes, 4, 3, generator=torch.Generator().manual_seed(0), optim=FAST, hidden=8, latent=3,
                    samples=16)
    return cls(learner.net, generator=learner.generator, optim=FAST)


def vae_state(state: dict, c: int) -> dict:
    return {k: v for k, v in state.items() if k.startswith(f"model.vaes.{c}.")}


def test_training_a_class_leaves_every_other_class_vae_and_the_extractor_bit_identical():
    x, y = templates(5, 10, seed=0)
    tx, ty = templates(5, 5, seed=1)
    learner = tiny_gc(5, cls=_Snapshots)
    splits = class_splits(5, 2, 3)  # (0, 1), (2,), (3,), (4,)
    result = train_incremental(learner, x, y, tx, ty, splits, epochs=10, batch_size=8)
    states = [*learner.snapshots, learner.net.state_dict()]
    for task, classes in enumerate(splits):
        before, after = states[task], states[task + 1]
        for c in range(5):
            same = all(torch.equal(before[k], after[k]) for k in vae_state(before, c))
            assert same == (c not in classes), (task, c)  # only the task's own classes' VAEs move
        if task > 0:
            assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert learner.net.model.trained.all()
    # Generative classification over all seen classes beats chance (20%) after the last task.
    assert result.seen_accuracy[-1] > 50.0, result.seen_accuracy


def test_a_row_of_another_class_is_refused():
    learner = tiny_gc(4)
    x, y = templates(4, 4, seed=0)
    train_incremental(learner, x, y, x, y, class_splits(4, 2, 1)[:1], epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="current task"):
        learner.feature_losses(learner.extract(x), y)
