"""CLFD (FFE, feature buffer, CFFS) and FDINet: shapes, counts, masks, and tiny runs that learn."""

import math

import pytest
import torch

from methods.cl import (
    DERPP,
    ER,
    ERACE,
    Augmentation,
    ClassAwareSelection,
    CLFDNet,
    FDINet,
    FrequencyEncoder,
    ReservoirBuffer,
    ResNet,
    count_parameters,
    resnet18,
    split_tasks,
    train_stream,
)
from tests.methods.cl.test_core import TINY, quadrant_images


def test_ffe_has_24_weights_and_halves_the_side():
    encoder = FrequencyEncoder(3)
    assert count_parameters(encoder) == 24
    features, ll = encoder(torch.randn(5, 3, 32, 32))
    assert features.shape == (5, 3, 16, 16) and ll.shape == (5, 3, 16, 16)


def test_topk_keeps_307_of_512():
    selection = ClassAwareSelection(512, 10)
    assert selection.k == 307
    features = torch.randn(6, 512)
    mask = selection.topk_mask(features)
    assert mask.shape == (6, 512) and torch.all(mask.sum(1) == 307)
    kept = features.abs()[mask.bool()].view(6, -1).min(1).values
    dropped = features.abs()[~mask.bool()].view(6, -1).max(1).values
    assert torch.all(kept >= dropped)


def test_initial_probabilities_and_bernoulli_mask():
    selection = ClassAwareSelection(512, 4)
    selection.init_classes((0, 1), first_task=True)
    assert torch.all(selection.probs[0, :337] == 1) and torch.all(selection.probs[0, 337:] == 0)
    selection.init_classes((2, 3), first_task=False)
    assert torch.all(selection.probs[2] == 0.6)
    labels = torch.tensor([0, 0, 2])
    mask = selection.mask(torch.randn(3, 512), labels, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 512)
    assert mask[:2, 337:].sum() == 0 and mask[2].sum() < 307  # class 2: top-k thinned by P = 0.6
    assert selection.counts[0].sum() == 2 * 307 and selection.counts[2].sum() == 307


def test_similarity_driven_update_matches_the_formula():
    selection = ClassAwareSelection(4, 3)
    selection.counts[0] = torch.tensor([4.0, 2.0, 0.0, 1.0])
    selection.counts[1] = torch.tensor([0.0, 3.0, 6.0, 3.0])
    selection.ll_sums = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])  # class 2 equals class 0
    selection.similarity_update((2,), [0, 1])
    s_max, s_min = 1.0, 1 / math.sqrt(2)
    n, total = 2.0, s_max + s_min
    max_factor, min_factor = (s_max + 1) * n / (total + n), (total + n) / ((s_min + 1) * n)
    p_max = 1 - torch.exp(-selection.counts[0] * max_factor / 4.0)
    p_min = torch.exp(-selection.counts[1] * min_factor / 6.0)
    torch.testing.assert_close(selection.probs[2], (p_min + p_max) / 2)


def test_late_update():
    selection = ClassAwareSelection(3, 2)
    selection.counts[1] = torch.tensor([0.0, 5.0, 10.0])
    selection.late_update([0, 1])
    torch.testing.assert_close(selection.probs[1], 1 - torch.exp(-2 * torch.tensor([0.0, 0.5, 1.0])))
    assert torch.all(selection.probs[0] == 1)  # no counts yet: unchanged


def _clfd_net(generator) -> CLFDNet:
    black = -torch.tensor(TINY.mean) / 0.25
    return CLFDNet(ResNet(4, width=8, in_channels=3, blocks=(1, 1)), 3, 4, black, generator)


@pytest.mark.parametrize("learner_class", [ER, DERPP, ERACE])
def test_clfd_plugs_into_rehearsal_and_learns(learner_class):
    torch.manual_seed(0)
    x, y = quadrant_images(24, seed=0)
    tx, ty = quadrant_images(10, seed=1)
    tasks = split_tasks(y, ty, TINY)
    generator = torch.Generator().manual_seed(0)
    net = _clfd_net(generator)
    buffer = ReservoirBuffer.from_bytes(4 * 3 * 8 * 8 * 4, (3, 4, 4))  # 4 images' bytes -> 16 features
    assert buffer.capacity == 16
    extra = {"alpha": 0.1, "beta": 0.5} if learner_class is DERPP else {}
    learner = learner_class(net, buffer=buffer, lr=0.1, generator=generator, augment=Augmentation(2, False),
                            minibatch=8, **extra)
    encoder_before = [p.detach().clone() for p in net.encoder.parameters()]
    result = train_stream(learner, x, y, tx, ty, tasks[:1], n_epochs=3, batch_size=8, eval_tasks=tasks)
    assert result.class_il[0, 0] > 50
    assert net.frozen and not any(p.requires_grad for p in net.encoder.parameters())
    frozen = [p.detach().clone() for p in net.encoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, frozen))  # trained before the last epoch
    assert buffer.examples.shape == (16, 3, 4, 4) and buffer.seen == 48  # task-0 samples of the last epoch
    train_stream(learner, x, y, tx, ty, tasks, n_epochs=2, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(frozen, net.encoder.parameters()))
    assert set(buffer.labels.tolist()) == {0, 1, 2, 3}


def test_fdinet_backbone_is_78_percent_smaller_and_learns():
    black = -torch.tensor(TINY.mean) / 0.25
    reference = count_parameters(resnet18(10))
    reduction = 1 - count_parameters(FDINet(10, 3, black)) / reference
    assert reduction == pytest.approx(0.78, abs=0.005)
    torch.manual_seed(0)
    x, y = quadrant_images(24, seed=0)
    tasks = split_tasks(y, y, TINY)
    net = FDINet(4, 3, black, low_width=4, high_width=4)
    generator = torch.Generator().manual_seed(0)
    for learner in (ER(net, buffer=ReservoirBuffer(16), lr=0.1, generator=generator, minibatch=8),
                    DERPP(net, buffer=ReservoirBuffer(16), alpha=0.1, beta=0.5, lr=0.1, generator=generator)):
        result = train_stream(learner, x, y, x, y, tasks[:1], n_epochs=3, batch_size=8, eval_tasks=tasks)
        assert result.class_il[0, 0] > 50
