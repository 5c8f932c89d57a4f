"""GFR (Table B.1's baseline) as eTag's switches: feature distillation, generative feature replay, no auxiliary head."""

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import count_parameters, resnet18
from methods.cl.er import Augmentation
from methods.cl.etag import AuxiliaryResNet, ETag, FeatureCVAE, build, feature_distance, table_c6_parameters
from methods.cl.incremental import class_splits, train_incremental
from reproduce.etag import runs, table_c6
from reproduce.harness.artifact import Context, Unit
from reproduce.harness.device import describe_cpu
from tests.methods.cl.test_etag import FAST, templates

GFR = dict(runs.METHODS["gfr"].switches)


def tiny_gfr(n_classes: int = 4, seed: int = 0, generator_epochs: int = 2) -> ETag:
    """GFR with the registry's switches on a width-4 ResNet-18 and a small generator."""
    torch.manual_seed(seed)
    return build(n_classes, 4, 3, generator=torch.Generator().manual_seed(seed), optim=FAST,
                 generator_epochs=generator_epochs, generator_lr=1e-3, synthetic_batch=16, hidden=16, latent=8, **GFR)


def _after_first_task(learner: ETag, x: torch.Tensor, y: torch.Tensor) -> None:
    """Train task 0 (classes 0, 1) for a few steps and its generator, then begin task 1 (classes 2, 3)."""
    first = y < 2
    learner.begin_task(0, (0, 1))
    for _ in range(3):
        learner.train_step(x[first], y[first])
    learner.end_epoch(0)
    learner.end_task(lambda: iter([(x[first], y[first])]), last=False)
    learner.begin_task(1, (2, 3))


def test_registry_switches_are_gfr_with_etags_plain_generator():
    assert GFR == {"distillation": "feature", "generation": "naive", "self_supervision": "none"}
    assert runs.METHODS["gfr"].build is runs.METHODS["etag"].build


def test_no_auxiliary_head_exists_or_is_trained():
    x, y = templates(4, 4, seed=0)
    learner = tiny_gfr()
    assert len(learner.net.aux_heads) == 0
    assert count_parameters(learner.net) == count_parameters(learner.net.backbone)
    learner.begin_task(0, (0, 1))
    terms = learner.train_step(x[y < 2], y[y < 2])
    assert set(terms) == {"current", "total"}  # the main classifier's CE alone, no auxiliary term
    learner.net.train()
    expected = F.cross_entropy(learner.net(x[y < 2])[0], y[y < 2])
    assert torch.allclose(learner.losses(x[y < 2], y[y < 2])["total"], expected, atol=1e-6)
    learner.end_epoch(0)
    learner.end_task(lambda: iter([(x[y < 2], y[y < 2])]), last=False)
    learner.begin_task(1, (2, 3))
    rows = []
    hook = learner.net.backbone.conv1.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    terms = learner.train_step(x[y >= 2], y[y >= 2])
    hook.remove()
    assert set(terms) == {"current", "old", "feature", "total"}  # no auxiliary KD
    assert rows == [8]  # the plain batch: no self-supervised expansion


def test_feature_distillation_is_zero_for_the_old_network_and_pulls_features_back():
    x, y = templates(4, 4, seed=0)
    learner = tiny_gfr()
    _after_first_task(learner, x, y)
    new = x[y >= 2]
    assert learner.factor == 1.0
    assert float(learner.losses(new, y[y >= 2])["feature"].detach()) == 0.0  # the network equals the old one
    with torch.no_grad():
        for p in learner.net.backbone.stages.parameters():
            p.add_(0.05 * torch.randn_like(p))
    terms = learner.losses(new, y[y >= 2])
    features, old_features = learner.net.features(new), learner.old_net.features(new)
    assert terms["feature"] > 0
    torch.testing.assert_close(terms["feature"], learner.factor * torch.dist(features, old_features, 2))
    # A step along the distillation term alone brings the pooled features back towards the old ones.
    learner.net.zero_grad(set_to_none=True)
    terms["feature"].backward()
    assert learner.net.backbone.fc.weight.grad is None  # it acts on the extractor, not the classifier
    with torch.no_grad():
        for p in learner.net.parameters():
            if p.grad is not None:
                p.sub_(1e-3 * p.grad)
        after = feature_distance(learner.net.features(new), old_features)
    assert after < torch.dist(features, old_features, 2).detach()


def test_replayed_features_are_the_generators_for_old_classes():
    x, y = templates(4, 6, seed=0)
    learner = tiny_gfr()
    _after_first_task(learner, x, y)
    new, labels = x[y >= 2], y[y >= 2]
    assert set(learner.draw_old_classes(500).tolist()) == {0, 1}
    state = learner.generator.get_state()
    terms = learner.losses(new, labels)
    learner.generator.set_state(state)
    drawn = learner.draw_old_classes(learner.synthetic_batch)
    replayed = learner.cvae.generate(drawn, learner.generator)
    factor = learner.factor
    expected = F.cross_entropy(learner.net.classify(replayed), drawn) * factor / (factor + 1)
    torch.testing.assert_close(terms["old"], expected)
    # Another decoder changes the replayed term only: the real images' terms do not depend on the generator.
    learner.generator.set_state(state)
    with torch.no_grad():
        for p in learner.cvae.decoder.parameters():
            p.mul_(1.5)
    other = learner.losses(new, labels)
    assert not torch.allclose(other["old"], terms["old"])
    torch.testing.assert_close(other["current"], terms["current"])
    torch.testing.assert_close(other["feature"], terms["feature"])


def test_the_generator_is_a_plain_conditional_vae_distilled_from_its_predecessor():
    x, y = templates(4, 4, seed=0)
    learner = tiny_gfr()
    _after_first_task(learner, x, y)
    previous = FeatureCVAE(learner.net.feature_dim, 4, 16, 8)
    terms = learner.generator_losses(x[y >= 2], y[y >= 2], previous)
    assert terms["current"] == 0 and terms["old"] == 0  # no classifier term (eTag's task-oriented one)
    assert terms["distill"] > 0 and terms["reconstruction"] > 0


def test_switches_that_would_not_be_gfr_are_refused():
    with pytest.raises(ValueError, match="heads=False"):
        ETag(AuxiliaryResNet(4, width=2, blocks=(1, 1), transforms=1), generator=torch.Generator(),
             generator_epochs=1, distillation="feature", self_supervision="none")
    with pytest.raises(ValueError, match="heads=True"):
        ETag(AuxiliaryResNet(4, width=2, blocks=(1, 1), heads=False), generator=torch.Generator(), generator_epochs=1)
    with pytest.raises(ValueError, match="self_supervision='none'"):
        ETag(AuxiliaryResNet(4, width=2, blocks=(1, 1), heads=False), generator=torch.Generator(),
             generator_epochs=1, distillation="feature")


def test_parameters_are_table_c6s_gfr_row():
    learner = runs.build_learner("gfr", 100, 64, 3, {"lr_decay_step": 30, "generator_epochs": 1},
                                 torch.Generator())
    counted = table_c6_parameters(learner.net, learner.cvae)
    assert counted == count_parameters(resnet18(100)) + count_parameters(FeatureCVAE(512, 100)) == 12_681_268
    ctx = Context("full", {"classes": 100, "width": 64}, 0, describe_cpu("test"))
    outcome = table_c6.run_unit(Unit("c100-gfr", {"dataset": "c100", "method": "gfr"}), ctx)
    assert outcome.metrics["parameters_m"]["value"] * 1e6 == pytest.approx(counted)
    assert round(counted / 1e6, 2) == 12.68  # the paper's GFR row, CIFAR-100


def test_a_tiny_stream_runs_end_to_end_without_storing_images():
    x, y = templates(4, 12, seed=0)
    test_x, test_y = templates(4, 6, seed=1)
    learner = tiny_gfr(seed=0, generator_epochs=2)
    result = train_incremental(learner, x, y, test_x, test_y, class_splits(4, 2, 1), epochs=4, batch_size=8,
                               augment=Augmentation(0, False))
    assert learner.stored_exemplars == 0 and result.task_accuracy[0, 0] > 90
    phases = {(h["task"], h["phase"]) for h in learner.history}
    assert phases == {(0, "network"), (0, "generator"), (1, "network")}  # no generator after the last task
