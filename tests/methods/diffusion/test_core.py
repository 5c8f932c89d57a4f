"""Diffusion core: metrics against closed forms, the tiny UNet, DDPM training, DDIM sampling, extractors."""

import numpy as np
import pytest
import torch

from methods.diffusion import (
    InceptionFeatures,
    ProxyClassifier,
    ddim_sample,
    ddim_scheduler,
    ddim_trajectory,
    ddpm_scheduler,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    lr_multiplier,
    precision_recall,
    run_trajectory,
    sfid_from_features,
    tiny_unet,
    train_ddpm,
    train_proxy,
)

# A UNet small enough for a CPU test: 8x8 grayscale, 8 and 16 channels.
SMALL = dict(sample_size=8, in_channels=1, block_out_channels=(8, 16), layers_per_block=1)


# Metrics


def test_fid_of_a_set_against_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(torch.from_numpy(features), features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_in_one_dimension_is_the_gaussian_w2():
    # W2^2 between N(m1, v1) and N(m2, v2) is (m1 - m2)^2 + (sqrt(v1) - sqrt(v2))^2.
    assert frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9.0 + 1.0)


def test_frechet_distance_of_a_full_covariance_is_rotation_invariant():
    rng = np.random.default_rng(2)
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    s1, s2 = rng.uniform(0.5, 2.0, size=5), rng.uniform(0.5, 2.0, size=5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    rotated = frechet_distance(rotation @ mu1, rotation @ np.diag(s1) @ rotation.T,
                               rotation @ mu2, rotation @ np.diag(s2) @ rotation.T)
    assert rotated == pytest.approx(frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)), rel=1e-7)


def test_frechet_distance_survives_a_singular_covariance():
    features = np.random.default_rng(3).normal(size=(5, 20))  # rank 4 < 20 dimensions
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-3)


def test_fid_grows_with_a_mean_shift():
    features = np.random.default_rng(4).normal(size=(400, 8))
    values = [fid_from_features(features, features + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < 1e-6
    assert values[-1] == pytest.approx(8 * 2.0**2, rel=1e-6)  # a pure shift adds ||delta||^2


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    features = np.random.default_rng(5).normal(size=(50, 3))
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, features.mean(0))
    centred = features - features.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49)


def test_sfid_flattens_spatial_maps():
    maps = torch.from_numpy(np.random.default_rng(6).normal(size=(300, 2, 3, 3)))
    assert sfid_from_features(maps, maps) == pytest.approx(0.0, abs=1e-6)
    assert sfid_from_features(maps, maps + 1.0) == pytest.approx(18.0, rel=1e-6)


def test_inception_score_of_uniform_predictions_is_one():
    assert inception_score(np.zeros((100, 10)))[0] == pytest.approx(1.0)


def test_inception_score_of_confident_distinct_predictions_is_the_class_count():
    logits = np.tile(50.0 * np.eye(7), (10, 1))  # each of the 10 splits holds every class once
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(7.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_precision_and_recall_of_a_set_against_itself_are_one():
    features = torch.randn(200, 5, generator=torch.Generator().manual_seed(7))
    assert precision_recall(features, features, k=3, chunk_size=64) == (1.0, 1.0)


def test_precision_and_recall_of_a_far_set_are_zero():
    features = np.random.default_rng(8).normal(size=(100, 5))
    assert precision_recall(features, features + 100.0) == (0.0, 0.0)


def test_precision_counts_fakes_inside_the_real_manifold():
    real = torch.randn(300, 2, generator=torch.Generator().manual_seed(9))
    fake = torch.cat([real[:150] + 0.01, real[:150] + 100.0])  # half on the real manifold, half far off
    precision, recall = precision_recall(real, fake)
    assert precision == pytest.approx(0.5)
    assert 0.0 < recall < 1.0


# Models, training, sampling


def test_tiny_unet_maps_images_to_noise_of_the_same_shape():
    unet = tiny_unet()  # the suite's default: 32x32 grayscale, (32, 64) channels
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert unet(x, torch.tensor([3, 999])).sample.shape == (2, 1, 32, 32)
    assert [type(block).__name__ for block in unet.down_blocks] == ["DownBlock2D", "AttnDownBlock2D"]
    rgb = tiny_unet(**{**SMALL, "in_channels": 3}, attention=(False, False))
    with torch.no_grad():
        assert rgb(torch.randn(1, 3, 8, 8), 5).sample.shape == (1, 3, 8, 8)


def test_tiny_unet_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    first, second = tiny_unet(**SMALL, seed=3), tiny_unet(**SMALL, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))


def _blobs(n: int = 32, size: int = 8) -> torch.Tensor:
    """Synthetic images in [-1, 1]: a bright square at a random place on a dark background."""
    generator = torch.Generator().manual_seed(0)
    images = -torch.ones(n, 1, size, size)
    for image, (row, col) in zip(images, torch.randint(0, size - 3, (n, 2), generator=generator).tolist()):
        image[:, row:row + 3, col:col + 3] = 1.0
    return images


def test_train_ddpm_lowers_the_loss_and_is_deterministic():
    images, scheduler = _blobs(), ddpm_scheduler()
    runs, seen = [], []
    for _ in range(2):
        runs.append(train_ddpm(tiny_unet(**SMALL, seed=0), scheduler, images, steps=30, batch_size=16, lr=3e-3,
                               generator=torch.Generator().manual_seed(1),
                               on_step=lambda step, loss: seen.append(step)))
    assert seen == 2 * list(range(30))
    assert runs[0] == runs[1]
    assert np.mean(runs[0][-5:]) < 0.7 * np.mean(runs[0][:5])


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_schedules_warm_up_then_hold_or_decay_to_zero(schedule):
    factor = lr_multiplier(schedule, steps=110, warmup=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    if schedule == "cosine":
        assert factor(60) == pytest.approx(0.5) and factor(109) < 1e-3
    else:
        assert factor(109) == 1.0
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_multiplier("step", 10)


def test_a_cosine_rate_changes_training_and_ends_at_rest():
    """The same run under the cosine schedule differs from the constant one, and its last steps barely move."""
    images, scheduler = _blobs(), ddpm_scheduler()
    weights = []
    for schedule in ("constant", "cosine"):
        unet = tiny_unet(**SMALL, seed=0)
        snapshots = []
        train_ddpm(unet, scheduler, images, steps=20, batch_size=16, lr=3e-3, lr_schedule=schedule,
                   generator=torch.Generator().manual_seed(1),
                   on_step=lambda step, loss, u=unet, k=snapshots: k.append(torch.cat(
                       [p.detach().flatten().clone() for p in u.parameters()])))
        weights.append(snapshots)
    last_move = [float((run[-1] - run[-2]).norm()) for run in weights]
    assert not torch.equal(weights[0][-1], weights[1][-1])
    assert last_move[1] < 0.1 * last_move[0]


def test_train_ddpm_rejects_images_outside_the_unit_range():
    with pytest.raises(ValueError, match="normalised"):
        train_ddpm(tiny_unet(**SMALL), ddpm_scheduler(), 2.0 * _blobs(4), steps=1, batch_size=2, lr=1e-3,
                   generator=torch.Generator())


@pytest.fixture(scope="module")
def small_unet():
    return tiny_unet(**SMALL, seed=0).eval()


def test_ddim_sample_has_the_shape_and_range_and_is_deterministic(small_unet):
    def sample(eta):
        return ddim_sample(small_unet, ddim_scheduler(), 5, steps=4, eta=eta, batch_size=2,
                           generator=torch.Generator().manual_seed(2))

    first = sample(0.0)
    assert first.shape == (5, 1, 8, 8)
    assert first.min() >= -1.0 and first.max() <= 1.0
    assert torch.equal(first, sample(0.0))
    assert torch.equal(sample(1.0), sample(1.0))
    assert not torch.equal(first, sample(1.0))


def test_model_fn_sees_every_step_index_in_order(small_unet):
    calls, progress = [], []

    def model_fn(x, t, step_index, condition):
        assert condition is None
        calls.append((step_index, t))
        return small_unet(x, t).sample

    ddim_sample(small_unet, ddim_scheduler(), 3, steps=5, batch_size=3, generator=torch.Generator(),
                model_fn=model_fn, on_step=lambda batch, step: progress.append((batch, step)))
    assert [index for index, _ in calls] == list(range(5))
    assert [t for _, t in calls] == [800, 600, 400, 200, 0]  # "leading" spacing, T // S = 200
    assert progress == [(0, step) for step in range(5)]


def test_ddim_trajectory_ends_where_ddim_sample_does(small_unet):
    expected = ddim_sample(small_unet, ddim_scheduler(), 3, steps=6, batch_size=3,
                           generator=torch.Generator().manual_seed(4))
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    trajectory = ddim_trajectory(small_unet, ddim_scheduler(), noise, steps=6)
    states = []
    final = run_trajectory(trajectory, lambda index, t, x: states.append((index, t, torch.is_grad_enabled())))
    assert torch.allclose(final.clamp(-1, 1), expected)
    # The caller's code between states keeps its grad mode (the distillation step needs gradients).
    assert states == [(index, (5 - index) * (1000 // 6), True) for index in range(6)]


def test_ddim_trajectory_first_state_is_the_noise(small_unet):
    noise = torch.randn(2, 1, 8, 8)
    index, t, x = next(ddim_trajectory(small_unet, ddim_scheduler(), noise, steps=10))
    assert (index, t) == (0, 900) and x is noise


# Feature extractors


def test_inception_features_shapes_on_two_small_images():
    torch.manual_seed(0)
    extractor = InceptionFeatures()
    assert not extractor.training
    with torch.no_grad():
        pool, spatial, logits = extractor(torch.rand(2, 1, 32, 32) * 2 - 1)
    assert pool.shape == (2, 2048) and spatial.shape == (2, 7 * 17 * 17) and logits.shape == (2, 1008)
    assert torch.isfinite(pool).all() and torch.isfinite(logits).all()
    names = extractor.state_dict().keys()
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_6d.branch1x1.bn.running_var", "fc.weight"} <= set(names)
    # torchvision's inception_v3(aux_logits=False) has 23,834,568 parameters with 1000 classes.
    assert sum(p.numel() for p in extractor.parameters()) == 23_834_568 + 8 * 2049


def _separable(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes of 16x16 images in [-1, 1]: a bright quadrant (the class) plus noise."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = 0.3 * torch.randn(n, 1, 16, 16, generator=generator) - 0.5
    for image, label in zip(images, labels.tolist()):
        row, col = divmod(label, 2)
        image[:, 8 * row:8 * row + 8, 8 * col:8 * col + 8] += 1.0
    return images.clamp(-1, 1), labels


def test_proxy_classifier_learns_a_separable_set_and_gives_all_three_features():
    images, labels = _separable()
    torch.manual_seed(0)
    classifier = ProxyClassifier(in_channels=1, num_classes=4, width=8)
    losses = train_proxy(classifier, images, labels, epochs=5, batch_size=32, lr=3e-3,
                         generator=torch.Generator().manual_seed(1))
    assert len(losses) == 5 and losses[-1] < losses[0]
    with torch.no_grad():
        accuracy = (classifier.logits(images).argmax(1) == labels).float().mean().item()
        extracted = classifier.extract(images[:3])
        assert torch.allclose(extracted.pool, classifier.features(images[:3]))
        assert torch.allclose(extracted.spatial, classifier.spatial(images[:3]))
    assert accuracy > 0.9
    assert extracted.pool.shape == (3, 32) and extracted.spatial.shape == (3, 4 * 4 * 4)
    assert extracted.logits.shape == (3, 4)
