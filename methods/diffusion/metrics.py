"""Sample-quality metrics of generative models, as pure functions of feature arrays.

FID, sFID, IS and precision/recall are defined on the features of a fixed extractor
(Inception-v3 with the 2015 TensorFlow weights for numbers comparable with papers; see
:mod:`methods.diffusion.features`). These functions take the features (NumPy or torch arrays,
any device) and know nothing about the extractor: computed on another network's features, the
same formula gives a *proxy* metric that ranks models but is not comparable with published values.

The Fréchet distances and IS are computed in float64 NumPy; precision/recall in torch on the
features' device.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg
from scipy.special import log_softmax, logsumexp

ArrayLike = np.ndarray | torch.Tensor


def _numpy(values: ArrayLike) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array, torch tensor (any device) or number."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                     eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein) distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``
    (Dowson & Landau 1982; Heusel et al. 2017 for FID).

    The matrix square root is :func:`scipy.linalg.sqrtm`. Where it is not finite (a singular
    product, e.g. fewer samples than dimensions), ``eps * I`` is added to both covariances and it is
    taken again. Rounding can leave a small imaginary part; it is dropped when the diagonal's
    imaginary parts are below 1e-3, otherwise a ``ValueError`` is raised. This is the usual fix of
    the reference FID implementations.

    Parameters
    ----------
    mu1, mu2 : array (d,) or scalar
        Means.
    sigma1, sigma2 : array (d, d) or scalar
        Covariances (symmetric positive semi-definite).
    eps : float
        Diagonal offset used only when the square root is not finite.

    Returns
    -------
    float
        d^2 in squared feature units (>= 0 up to rounding).
    """
    mu1, mu2 = np.atleast_1d(_numpy(mu1)), np.atleast_1d(_numpy(mu2))
    sigma1, sigma2 = np.atleast_2d(_numpy(sigma1)), np.atleast_2d(_numpy(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"inconsistent shapes: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    with warnings.catch_warnings():  # a singular product is handled below, by the offset
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(len(mu1))
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imaginary = np.abs(np.diagonal(covmean).imag).max()
        if imaginary > 1e-3:
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary part of {imaginary:.3g} on its diagonal: "
                             "use more samples than feature dimensions")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of features (N, d), in float64.

    ``mu = (1/N) sum_i f_i``, ``sigma = 1/(N-1) sum_i (f_i - mu)(f_i - mu)^T`` (``np.cov``, as pytorch-fid).
    Features of more than two axes (N, ...) are flattened to (N, d) first.
    """
    features = _numpy(features)
    features = features.reshape(len(features), -1)
    if len(features) < 2:
        raise ValueError("feature statistics need at least 2 samples")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """FID: the Fréchet distance between Gaussians fitted to two feature sets (N_a, d) and (N_b, d).

    ``FID = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with the statistics of
    :func:`feature_statistics`. On Inception pool features (N, 2048) of the FID weights this is
    the FID of Heusel et al. 2017; on any other features, a proxy FID (not comparable).
    It is biased upwards for small N: compare values only at equal sample counts.
    """
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def sfid_from_features(spatial_a: ArrayLike, spatial_b: ArrayLike) -> float:
    """sFID (Nash et al. 2021): FID on spatial features (N, ...) flattened to (N, d).

    Nash et al. take the first 7 channels of Inception's ``mixed_6/conv`` (17x17 maps, so
    d = 7 * 17 * 17 = 2023; see :class:`methods.diffusion.features.InceptionFeatures`); here it is
    :func:`fid_from_features` of whatever spatial feature tensor is given. The order of the
    flattened axes does not matter: the Fréchet distance is invariant to a permutation of them.
    """
    return fid_from_features(spatial_a, spatial_b)


def inception_score(logits: ArrayLike, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): ``IS = exp(E_x KL(p(y|x) || p(y)))``.

    ``p(y|x) = softmax(logits)`` and ``p(y)`` is its mean over the split. As in the reference code,
    the samples are cut into ``splits`` consecutive equal parts (a remainder is dropped) and the mean
    and standard deviation of the per-split scores are returned. IS lies in [1, number of classes].

    Parameters
    ----------
    logits : array (N, K)
        Classifier logits (the 1008-way FID Inception head for comparable numbers).
    splits : int
        Number of parts; N must be at least ``splits``.

    Returns
    -------
    (float, float)
        Mean and standard deviation of the score over the splits.
    """
    logits = _numpy(logits)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"logits must be (N, K) with N >= splits={splits}, got shape {logits.shape}")
    part = len(logits) // splits
    scores = []
    for index in range(splits):
        log_p_yx = log_softmax(logits[index * part:(index + 1) * part], axis=1)
        log_p_y = logsumexp(log_p_yx, axis=0) - np.log(part)
        kl = (np.exp(log_p_yx) * (log_p_yx - log_p_y)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _as_tensor(values: ArrayLike) -> torch.Tensor:
    """A float tensor (at least float32) on the values' device, flattened to (N, d)."""
    tensor = torch.as_tensor(values)
    if not tensor.is_floating_point() or tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.reshape(len(tensor), -1)


def _knn_radii(features: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """Distance of each row of (N, d) to its k-th nearest other row: (N,)."""
    radii = [torch.cdist(features[start:start + chunk_size], features).kthvalue(k + 1, dim=1).values
             for start in range(0, len(features), chunk_size)]
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, reference: torch.Tensor, radii: torch.Tensor, chunk_size: int) -> float:
    """Fraction of query rows inside at least one ball B(reference_j, radii_j)."""
    inside = [(torch.cdist(queries[start:start + chunk_size], reference) <= radii).any(dim=1)
              for start in range(0, len(queries), chunk_size)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real_features: ArrayLike, fake_features: ArrayLike, k: int = 3,
                     chunk_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of k-NN feature manifolds.

    Each set's manifold is the union of balls around its points, each ball's radius the distance
    to that point's k-th nearest neighbour in the same set. Then
    ``precision = (1/M) sum_j 1[fake_j in manifold(real)]`` and
    ``recall = (1/N) sum_i 1[real_i in manifold(fake)]``.
    Distances are Euclidean (``torch.cdist``), computed ``chunk_size`` rows at a time on the
    features' device, so memory is O(chunk_size * max(N, M)).

    Parameters
    ----------
    real_features : array (N, d)
        Features of real images.
    fake_features : array (M, d)
        Features of generated images.
    k : int
        Neighbourhood size (3 in the paper and in the ADM evaluation); each set needs more than k rows.
    chunk_size : int
        Query rows per distance block.

    Returns
    -------
    (float, float)
        Precision and recall, each in [0, 1].
    """
    real, fake = _as_tensor(real_features), _as_tensor(fake_features)
    fake = fake.to(real.device, real.dtype)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"each feature set needs more than k={k} rows, got {len(real)} and {len(fake)}")
    precision = _coverage(fake, real, _knn_radii(real, k, chunk_size), chunk_size)
    recall = _coverage(real, fake, _knn_radii(fake, k, chunk_size), chunk_size)
    return precision, recall


def clip_score(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """CLIP score of each image-caption pair: ``100 * max(cos(E_I, E_T), 0)`` (Hessel et al. 2021's CLIPScore
    with weight 100 instead of 2.5, as torchmetrics computes it and text-to-image papers report it).

    Parameters
    ----------
    image_features, text_features : Tensor
        ``(N, d)`` CLIP embeddings of the images and of their captions (row i with row i).

    Returns
    -------
    Tensor
        ``(N,)`` scores in [0, 100].
    """
    if image_features.shape != text_features.shape or image_features.dim() != 2:
        raise ValueError(f"need (N, d) image and text features of one shape, got {tuple(image_features.shape)} "
                         f"and {tuple(text_features.shape)}")
    cosine = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float(), dim=1)
    return 100.0 * cosine.clamp_min(0.0)
