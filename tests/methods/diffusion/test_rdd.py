"""RDD: cosine schedule, PD targets and halvings, relational losses, the pixel queue, sampling, determinism."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.diffusion import ProxyClassifier, ddpm_scheduler, tiny_unet
from methods.diffusion.rdd import (
    PixelQueue,
    RelationalDistillation,
    X0Model,
    cfd_loss,
    cosine_alpha_bar,
    ddim_step,
    diffuse,
    distill_round,
    is_p2p_loss,
    m_p2p_loss,
    pd_target,
    pixel_relations,
    sample,
    train_base,
    truncated_snr_loss,
)

SMALL = dict(sample_size=8, in_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


def small_model(base_steps: int = 8, seed: int = 0) -> X0Model:
    return X0Model(tiny_unet(**SMALL, seed=seed), base_steps)


def images(n: int = 8, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class LinearDenoiser(nn.Module):
    """An analytic x-predictor ``x_hat = w[i] z`` with one scalar per base-grid index."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.float())

    def forward(self, z, index):
        return self.weight[index].view(-1, 1, 1, 1) * z


def relational(**kwargs) -> RelationalDistillation:
    # conv2 of the proxy on 8x8 images: 2 * width = 8 channels at 2x2.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        classifier = ProxyClassifier(in_channels=1, width=4, spatial_channels=8)
    options = dict(memory_size=32, contrast_size=8, pixels_per_step=4) | kwargs
    return RelationalDistillation(classifier, **options)


# Schedule


def test_cosine_schedule_is_the_clipped_cosine_over_t_plus_one_intervals():
    T, s = 16, 0.008  # noqa: N806
    abar = cosine_alpha_bar(T)
    assert abar.shape == (T + 1,) and abar.dtype == torch.float64
    assert torch.all(abar[1:] < abar[:-1]) and abar[0] < 1 and abar[-1] > 0
    c = torch.cos((torch.arange(T + 2, dtype=torch.float64) / (T + 1) + s) / (1 + s) * math.pi / 2) ** 2
    torch.testing.assert_close(abar[:-1], c[1:-1] / c[0])  # telescoping product, no clip before the end
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    assert betas.max() == pytest.approx(0.999) and betas[-1] == pytest.approx(0.999)  # only the last is clipped
    # diffusers' squaredcos_cap_v2 with T + 1 training steps has the same betas (in float32).
    reference = ddpm_scheduler(T + 1, "squaredcos_cap_v2").alphas_cumprod.double()
    torch.testing.assert_close(abar, reference, rtol=1e-5, atol=1e-7)


def test_a_student_grid_is_every_other_level_of_its_teacher_grid():
    net = small_model(base_steps=16)
    t = torch.arange(0, 5)
    for a, b in zip(net.coefficients(t, 4, torch.zeros(5, 1)), net.coefficients(2 * t, 8, torch.zeros(5, 1))):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="does not divide"):
        net.scale(3)


def test_truncated_snr_loss_takes_the_larger_error_per_sample():
    x, eps = torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    x_hat = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    eps_hat = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    assert truncated_snr_loss(x_hat, x, eps_hat, eps).item() == pytest.approx((1.0 + 4.0) / 2)


# Progressive distillation


def test_pd_target_reproduces_two_teacher_ddim_steps_in_one():
    teacher = small_model()
    z_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([2, 4, 6, 8])
    target = pd_target(teacher, z_t, t, 8)
    with torch.no_grad():
        two = z_t
        for k in (0, 1):
            two, _ = ddim_step(teacher, two, t - k, t - k - 1, 8, clip=False)
    alpha, sigma = teacher.coefficients(t - 2, 8, z_t)
    torch.testing.assert_close(alpha * target.x0 + sigma * target.eps, two, atol=1e-5, rtol=1e-5)
    alpha_t, sigma_t = teacher.coefficients(t, 8, z_t)
    torch.testing.assert_close(alpha_t * target.x0 + sigma_t * target.eps, z_t, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 <= t"):
        pd_target(teacher, z_t, torch.tensor([1, 2, 3, 4]), 8)


def test_a_distillation_round_halves_the_steps_on_even_teacher_levels():
    teacher = small_model()
    student = copy.deepcopy(teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen = {"teacher": [], "student": []}
    for name, net in (("teacher", teacher), ("student", student)):
        net.unet.register_forward_pre_hook(lambda module, args, name=name: seen[name].append(args[1].clone()))
    result = distill_round(teacher, student, images(), 8, steps=3, batch_size=4, lr=1e-3,
                           generator=torch.Generator().manual_seed(0))
    assert result.student is student and result.T == 4
    assert len(result.losses) == 3 and len(result.terms["pd"]) == 3
    student_levels = torch.cat(seen["student"])
    assert torch.all(student_levels % 2 == 0) and student_levels.min() >= 2 and student_levels.max() <= 8
    # Two teacher evaluations per step, at t and t - 1 of the teacher grid.
    teacher_levels = seen["teacher"]
    assert len(teacher_levels) == 6
    for step in range(3):
        torch.testing.assert_close(teacher_levels[2 * step], seen["student"][step])
        torch.testing.assert_close(teacher_levels[2 * step + 1], seen["student"][step] - 1)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert sample(student, result.T, 4, 2, torch.Generator().manual_seed(0)).nfe == 4
    with pytest.raises(ValueError, match="even"):
        distill_round(student, copy.deepcopy(student), images(), 1, steps=1, batch_size=2, lr=1e-3,
                      generator=torch.Generator())


def test_a_student_trained_on_pd_targets_matches_the_teachers_two_steps():
    # Linear teacher x_hat = w z (the Bayes denoiser of N(0, v) data): its two DDIM steps are linear in z_t, so
    # a linear student can match them exactly; it starts as the teacher's copy (one step where two are due).
    abar, v = cosine_alpha_bar(8), 1 / 3
    teacher = X0Model(LinearDenoiser(abar.sqrt() * v / (abar * v + 1 - abar)), 8)
    student = copy.deepcopy(teacher)
    z = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([2, 4, 6, 8]).repeat_interleave(16)

    def gap() -> float:
        with torch.no_grad():
            two = z
            for k in (0, 1):
                two, _ = ddim_step(teacher, two, t - k, t - k - 1, 8, clip=False)
            one, _ = ddim_step(student, z, t // 2, t // 2 - 1, 4, clip=False)
        return (one - two).pow(2).mean().item()

    initial = gap()
    result = distill_round(teacher, student, images(16, 4), 8, steps=200, batch_size=16, lr=0.05,
                           generator=torch.Generator().manual_seed(2))
    assert initial > 1e-4
    assert gap() < 1e-6 * initial
    assert result.losses[-1] < 1e-6 * result.losses[0]


# RDD's losses


def test_pixel_relations_are_symmetric_cosines_for_every_pair_of_samples():
    maps = torch.randn(3, 5, 2, 3, generator=torch.Generator().manual_seed(0))
    relations = pixel_relations(maps)
    assert relations.shape == (3, 3, 6, 6)
    torch.testing.assert_close(relations, relations.permute(1, 0, 3, 2))
    for b in range(3):
        torch.testing.assert_close(relations[b, b], relations[b, b].T)
        torch.testing.assert_close(relations[b, b].diagonal(), torch.ones(6))
    pixels = F.normalize(maps.flatten(2), dim=1)
    assert relations[0, 2, 1, 4].item() == pytest.approx((pixels[0, :, 1] @ pixels[2, :, 4]).item(), abs=1e-6)


def test_relation_losses_are_kl_from_teacher_to_student():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 4, 2, 2, generator=g), torch.randn(2, 4, 2, 2, generator=g)
    assert is_p2p_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    p_t = F.softmax(pixel_relations(teacher).reshape(-1, 4), dim=-1)
    p_s = F.softmax(pixel_relations(student).reshape(-1, 4), dim=-1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(dim=-1).mean()
    assert is_p2p_loss(student, teacher).item() == pytest.approx(expected.item(), rel=1e-5)

    contrast = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    assert m_p2p_loss(teacher, teacher, contrast).item() == pytest.approx(0.0, abs=1e-6)
    logits = [F.normalize(m.flatten(2), dim=1).transpose(1, 2) @ contrast.T / 0.1 for m in (student, teacher)]
    q_s, q_t = (F.softmax(x, dim=-1) for x in logits)
    expected = (q_t * (q_t.log() - q_s.log())).sum(dim=-1).mean()
    assert m_p2p_loss(student, teacher, contrast).item() == pytest.approx(expected.item(), rel=1e-5)

    features = torch.randn(3, 5, generator=g)
    # The teacher is sharpened by tau = 0.9 and the student is not: f_S = f_T / 0.9 matches it exactly.
    assert cfd_loss(features / 0.9, features).item() == pytest.approx(0.0, abs=1e-6)
    assert cfd_loss(features, features).item() > 1e-4


def test_the_pixel_queue_keeps_its_size_and_fifo_order():
    queue = PixelQueue(10, 3, seed=0)
    initial = queue.ordered().clone()
    assert queue.memory.shape == (10, 3) and not queue.memory.requires_grad
    torch.testing.assert_close(queue.memory.norm(dim=1), torch.ones(10))
    rows = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    queue.push(rows[:3])
    torch.testing.assert_close(queue.ordered(), torch.cat([initial[3:], F.normalize(rows[:3], dim=1)]))
    for start in (3, 6, 9):  # the last push wraps around the end
        queue.push(rows[start:start + 3])
    assert queue.memory.shape == (10, 3) and int(queue.pointer) == 2
    torch.testing.assert_close(queue.ordered(), F.normalize(rows[2:], dim=1))
    torch.testing.assert_close(queue.contrast(4), queue.memory[[0, 3, 6, 9]])
    with pytest.raises(ValueError):
        queue.push(torch.randn(11, 3))


def test_the_relational_loss_reaches_the_student_and_the_head_only():
    torch.manual_seed(0)
    student = small_model()
    rdd = relational()
    x = images(4)
    target = images(4, seed=1)
    terms = rdd(student(x, torch.full((4,), 4)), target, generator=torch.Generator().manual_seed(0))
    assert all(term.ndim == 0 and torch.isfinite(term) for term in terms)
    expected = terms.cfd + terms.is_p2p + 0.1 * terms.m_p2p
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    terms.total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert sum(p.grad.abs().sum() for p in student.parameters()) > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rdd.head.parameters())
    assert all(p.grad is None for p in rdd.classifier.parameters())
    assert int(rdd.queue.pointer) == 4 and not rdd.queue.memory.requires_grad
    assert not rdd.train().classifier.training


def test_a_classifier_with_spatial_maps_needs_no_channel_count():
    class Maps(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, stride=2, padding=1)

        def spatial(self, x):
            return self.conv(x)

        def features(self, x):
            return self.conv(x).mean(dim=(2, 3))

    rdd = RelationalDistillation(Maps(), 6, memory_size=16, contrast_size=4, pixels_per_step=4)
    pooled, maps = rdd.classify(images(2))
    assert pooled.shape == (2, 6) and maps.shape == (2, 6, 4, 4)
    assert torch.isfinite(rdd(images(2), images(2, seed=1)).total)
    with pytest.raises(ValueError, match="channels"):
        RelationalDistillation(Maps())


# Determinism and sampling


def test_training_and_distillation_are_deterministic_given_the_seed():
    def base(seed):
        net = small_model()
        ema = copy.deepcopy(net)
        losses = train_base(net, images(), 8, steps=2, batch_size=4, lr=1e-3, warmup=2, ema=ema, ema_decay=0.5,
                            generator=torch.Generator().manual_seed(seed))
        return losses, net, ema

    (losses_a, net_a, ema_a), (losses_b, net_b, _), (losses_c, _, _) = base(0), base(0), base(1)
    assert losses_a == losses_b and losses_a != losses_c
    assert all(torch.equal(a, b) for a, b in zip(net_a.parameters(), net_b.parameters()))
    assert not torch.equal(next(ema_a.parameters()), next(net_a.parameters()))

    def distill(seed):
        student, rdd = copy.deepcopy(net_a), relational()
        result = distill_round(net_a, student, images(), 8, steps=2, batch_size=4, lr=1e-3, relational=rdd,
                               generator=torch.Generator().manual_seed(seed))
        return result, rdd

    (first, rdd_a), (second, rdd_b), (other, _) = distill(0), distill(0), distill(1)
    assert first.losses == second.losses and first.losses != other.losses
    assert set(first.terms) == {"pd", "cfd", "is_p2p", "m_p2p"}
    assert all(torch.equal(a, b) for a, b in zip(first.student.parameters(), second.student.parameters()))
    assert torch.equal(rdd_a.queue.memory, rdd_b.queue.memory)


def test_sampling_returns_images_and_counts_network_evaluations():
    net = small_model()
    calls = []
    net.unet.register_forward_pre_hook(lambda module, args: calls.append(args[1].clone()))
    result = sample(net, 8, 4, 5, torch.Generator().manual_seed(0), batch_size=2)
    assert result.images.shape == (5, 1, 8, 8) and result.nfe == 4
    assert result.images.min() >= -1 and result.images.max() <= 1
    assert len(calls) == 4 * 3 and [int(c[0]) for c in calls[:4]] == [8, 6, 4, 2]
    again = sample(net, 8, 4, 5, torch.Generator().manual_seed(0), batch_size=5)
    torch.testing.assert_close(again.images, result.images)
    with pytest.raises(ValueError, match="divide"):
        sample(net, 8, 3, 1, torch.Generator())
    noise = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(diffuse(net, noise, torch.zeros_like(noise), torch.zeros(2, dtype=torch.long), 8),
                               net.alpha_bar[0].sqrt().float() * noise)
