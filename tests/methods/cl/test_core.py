"""The continual-learning core: DWT, buffer, metrics, streams, learners, determinism."""

import numpy as np
import pytest
import pywt
import torch

from methods.cl import (
    DERPP,
    ER,
    ERACE,
    STREAMS,
    Augmentation,
    DWT2d,
    Learner,
    PlainNet,
    ReservoirBuffer,
    ResNet,
    backward_transfer,
    capacity_for_bytes,
    count_parameters,
    final_average_accuracy,
    forgetting,
    joint_tasks,
    random_crop_flip,
    resnet18,
    split_tasks,
    to_tensor,
    train_stream,
)
from methods.cl.streams import StreamSpec

TINY = StreamSpec(n_tasks=2, classes_per_task=2, side=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                  crop_padding=1, flip=True)


def quadrant_images(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes of noisy 3x8x8 images; class c lights quadrant c (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_class)
    images = rng.integers(0, 60, (len(labels), 8, 8, 3)).astype(np.uint8)
    for index, label in enumerate(labels):
        top, left = 4 * (label // 2), 4 * (label % 2)
        images[index, top:top + 4, left:left + 4] = 230
    return to_tensor(images, TINY), torch.from_numpy(labels)


@pytest.mark.parametrize(("wavelet", "mode"), [("haar", "symmetric"), ("haar", "periodization"),
                                               ("db2", "periodization")])
def test_dwt_matches_pywavelets(wavelet, mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 12))
    bands = DWT2d(wavelet)(torch.from_numpy(x))
    ll, (lh, hl, hh) = pywt.dwt2(x, wavelet, mode=mode)
    for mine, ref in zip(bands, (ll, lh, hl, hh)):
        np.testing.assert_allclose(mine.numpy(), ref, atol=1e-10)


def test_buffer_byte_budget_and_capacity():
    assert capacity_for_bytes(50 * 3 * 32 * 32 * 4, (3, 16, 16)) == 200  # CLFD: 4x the items for the same bytes
    buffer = ReservoirBuffer.from_bytes(10 * 3 * 32 * 32 * 4, (3, 32, 32))
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        buffer.add(torch.randn(8, 3, 32, 32), torch.zeros(8, dtype=torch.long), generator=generator)
    assert len(buffer) == buffer.capacity == 10 and buffer.seen == 40
    assert buffer.nbytes == 10 * 3 * 32 * 32 * 4


def test_reservoir_keeps_every_item_with_equal_probability():
    generator = torch.Generator().manual_seed(1)
    stream, capacity, trials = 50, 10, 400
    kept = np.zeros(stream)
    for _ in range(trials):
        buffer = ReservoirBuffer(capacity)
        for start in range(0, stream, 7):
            ids = torch.arange(start, min(start + 7, stream))
            buffer.add(ids.float().view(-1, 1), ids, generator=generator)
        kept[buffer.labels.numpy()] += 1
    expected = trials * capacity / stream  # 80 per item
    assert kept.sum() == trials * capacity
    # Early and late halves of the stream are kept alike (chi-square-like loose bound).
    assert abs(kept[:25].mean() - expected) < 8 and abs(kept[25:].mean() - expected) < 8
    examples, labels, logits = buffer.sample(4, generator=generator)
    assert examples.shape == (4, 1) and labels.shape == (4,) and logits is None
    assert len(set(labels.tolist())) == 4


def test_forgetting_and_bwt_on_a_hand_made_matrix():
    nan = np.nan
    matrix = np.array([[90.0, nan, nan], [70.0, 80.0, nan], [60.0, 75.0, 85.0]])
    assert final_average_accuracy(matrix) == pytest.approx((60 + 75 + 85) / 3)
    assert forgetting(matrix) == pytest.approx(((90 - 60) + (80 - 75)) / 2)
    assert backward_transfer(matrix) == pytest.approx(((60 - 90) + (75 - 80)) / 2)
    # max minus final differs from initial minus final when a task's accuracy rises later.
    rising = np.array([[50.0, nan, nan], [70.0, 80.0, nan], [60.0, 80.0, 85.0]])
    assert forgetting(rising) == pytest.approx(((70 - 60) + 0) / 2)


def test_streams_split_and_normalise():
    spec = STREAMS["seq-cifar10"]
    labels = torch.arange(10).repeat(3)
    tasks = split_tasks(labels, labels, spec)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert all(len(t.train_rows) == 6 for t in tasks)
    x = to_tensor(np.zeros((2, 28, 28), np.uint8), STREAMS["seq-mnist"])
    assert x.shape == (2, 1, 32, 32) and torch.allclose(x, torch.tensor(-0.1307 / 0.3081))
    assert STREAMS["seq-tinyimg"].n_tasks == 10 and STREAMS["seq-tinyimg"].classes_per_task == 20


def test_random_crop_flip_fills_the_border():
    batch = torch.ones(64, 2, 6, 6)
    out = random_crop_flip(batch, 2, True, torch.tensor([-5.0, 7.0]), torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    values = set(out[:, 0].unique().tolist()) | set(out[:, 1].unique().tolist())
    assert values <= {1.0, -5.0, 7.0} and -5.0 in values


def test_reduced_resnet18_size():
    assert count_parameters(resnet18(10)) == 11_173_962  # mammoth's ResNet-18, 64 base filters
    assert resnet18(10, width=20).feature_dim == 160


def _tiny_net() -> PlainNet:
    return PlainNet(ResNet(4, width=4, in_channels=3, blocks=(1, 1)), -torch.tensor(TINY.mean) / 0.25)


@pytest.mark.parametrize("kind", ["sgd", "er", "derpp", "er_ace", "joint"])
def test_tiny_run_learns_the_first_task(kind):
    torch.manual_seed(0)
    x, y = quadrant_images(24, seed=0)
    tx, ty = quadrant_images(10, seed=1)
    tasks = split_tasks(y, ty, TINY)
    net = _tiny_net()
    generator = torch.Generator().manual_seed(0)
    common = {"lr": 0.1, "generator": generator, "augment": Augmentation(1, False), "minibatch": 8}
    buffer = ReservoirBuffer(16)
    learner = {"sgd": lambda: Learner(net, **common), "joint": lambda: Learner(net, **common),
               "er": lambda: ER(net, buffer=buffer, **common), "er_ace": lambda: ERACE(net, buffer=buffer, **common),
               "derpp": lambda: DERPP(net, buffer=buffer, alpha=0.1, beta=0.5, **common)}[kind]()
    stream = joint_tasks(tasks) if kind == "joint" else tasks
    result = train_stream(learner, x, y, tx, ty, stream, n_epochs=3, batch_size=8, eval_tasks=tasks)
    assert result.class_il.shape == (len(stream), 2)
    assert result.class_il[0, 0] > 50 and result.task_il[0, 0] >= result.class_il[0, 0]
    assert result.train_seconds > 0
    if kind != "sgd" and kind != "joint":
        assert len(buffer) == 16


def test_seeded_runs_are_identical():
    def run():
        torch.manual_seed(3)
        x, y = quadrant_images(8, seed=0)
        tasks = split_tasks(y, y, TINY)
        net = _tiny_net()
        learner = DERPP(net, buffer=ReservoirBuffer(8), alpha=0.1, beta=0.5, lr=0.05,
                        generator=torch.Generator().manual_seed(3), augment=Augmentation(1, True), minibatch=4)
        result = train_stream(learner, x, y, x, y, tasks, n_epochs=1, batch_size=8)
        return result.class_il, [p.detach().clone() for p in net.parameters()]

    first, second = run(), run()
    np.testing.assert_array_equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
