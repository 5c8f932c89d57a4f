"""Class-conditional noise prediction with classifier-free guidance, as latent diffusion's ImageNet models do it.

The LDM-4 ImageNet model (``cin256-v2``) conditions its UNet by cross-attention on a learned class
embedding: class ``y`` in ``0 .. K - 1`` becomes the context ``E[y]`` (1, d) of every
cross-attention layer, and row ``K`` of the embedding (class 1000 on ImageNet) is the "no class"
condition the model was trained with for guidance. Sampling mixes the two predictions
(classifier-free guidance, Ho & Salimans 2022, eq. 6, written as latent-diffusion's DDIM sampler
does)::

    eps = eps(x_t, t, E[K]) + s * (eps(x_t, t, E[y]) - eps(x_t, t, E[K]))

``s = 1`` is the plain conditional model. Both predictions come from one forward of the doubled
batch ``[x_t; x_t]`` with contexts ``[E[K]; E[y]]``, as in latent-diffusion, so a quantized model's
activation ranges see both halves.

The condition travels with the batch (:data:`~methods.diffusion.sampling.Condition`):
``{"class_labels": (N,) long, "guidance_scale": (N,) float}``; :func:`class_condition` builds it.

Text-to-image models (Stable Diffusion) guide the same way with a prompt's text-encoder states as
the context and the empty prompt's as the null condition (:class:`PromptConditionalUNet`, condition
``{"prompt_embeds": (N, L, d), "negative_embeds": (N, L, d), "guidance_scale": (N,)}``).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from methods.diffusion.sampling import Condition


class _GuidedUNet(nn.Module):
    """A cross-attention UNet predicting eps with classifier-free guidance over some context.

    Subclasses map their condition to the context of ``unet`` (``_eps``) and give the null context.
    """

    def __init__(self, unet: UNet2DConditionModel):
        super().__init__()
        self.unet = unet

    @property
    def config(self):
        """The UNet's config (``in_channels``, ``sample_size``: the latent shape)."""
        return self.unet.config

    @property
    def up_blocks(self) -> nn.ModuleList:
        """The UNet's up path (its last block's output is TRD's feature)."""
        return self.unet.up_blocks

    def _guided(self, sample: torch.Tensor, timestep, condition: torch.Tensor, null: torch.Tensor,
                guidance_scale: torch.Tensor | float) -> torch.Tensor:
        """``eps(x, null) + s (eps(x, c) - eps(x, null))`` (eq. 6) for x_t ``sample`` (N, C, H, W): one forward
        of ``[x_t; x_t]`` with ``[null; condition]`` (each N rows, in ``_eps``'s form); ``s`` a float or (N,)."""
        scale = torch.as_tensor(guidance_scale, dtype=sample.dtype, device=sample.device)
        if scale.dim() == 0 and float(scale) == 1.0:
            return self._eps(sample, timestep, condition)
        t = torch.as_tensor(timestep, device=sample.device)
        both = self._eps(torch.cat([sample, sample]), t.repeat(2) if t.dim() else t, torch.cat([null, condition]))
        uncond, cond = both.chunk(2)
        scale = scale.reshape(-1, *([1] * (sample.dim() - 1))) if scale.dim() else scale
        return uncond + scale * (cond - uncond)

    def _eps(self, x: torch.Tensor, t, condition: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ClassConditionalUNet(_GuidedUNet):
    """A cross-attention UNet and its class embedding, predicting eps with classifier-free guidance.

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel
        ``unet(x_t, t, encoder_hidden_states=context).sample`` with context (N, 1, d).
    class_embedding : nn.Embedding
        ``K + 1`` rows of size ``d = unet.config.cross_attention_dim``; the last row is the null class.

    Attributes
    ----------
    num_classes : int
        K, the real classes ``0 .. K - 1``.
    null_class : int
        K, the unconditional label of guidance.
    """

    def __init__(self, unet: UNet2DConditionModel, class_embedding: nn.Embedding):
        super().__init__(unet)
        if class_embedding.embedding_dim != unet.config.cross_attention_dim:
            raise ValueError(f"class embedding size {class_embedding.embedding_dim} differs from the UNet's "
                             f"cross-attention size {unet.config.cross_attention_dim}")
        self.class_embedding = class_embedding
        self.num_classes = class_embedding.num_embeddings - 1
        self.null_class = self.num_classes

    def forward(self, sample: torch.Tensor, timestep, class_labels: torch.Tensor,
                guidance_scale: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Guided eps (N, C, H, W) for x_t ``sample`` (N, C, H, W) at ``timestep`` (scalar or (N,)).

        ``class_labels`` (N,) in ``0 .. K - 1`` (K itself is the unconditional prediction);
        ``guidance_scale`` a float or (N,) per-sample scales ``s``.
        """
        labels = class_labels.to(sample.device).long()
        return self._guided(sample, timestep, labels, torch.full_like(labels, self.null_class), guidance_scale)

    def _eps(self, x: torch.Tensor, t, labels: torch.Tensor) -> torch.Tensor:
        context = self.class_embedding(labels)[:, None, :]
        return self.unet(x, t, encoder_hidden_states=context.to(x.dtype)).sample


class PromptConditionalUNet(_GuidedUNet):
    """A text-to-image UNet (Stable Diffusion's) predicting eps with classifier-free guidance.

    The context is a prompt's text-encoder states (N, L, d), ``d = unet.config.cross_attention_dim``;
    the null context is the empty prompt's (Stable Diffusion's guidance).
    """

    def forward(self, sample: torch.Tensor, timestep, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor,
                guidance_scale: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Guided eps (N, C, H, W) for x_t ``sample`` (N, C, H, W) at ``timestep`` (scalar or (N,)), prompts'
        states ``prompt_embeds`` and the null prompt's ``negative_embeds`` (N, L, d), scales a float or (N,)."""
        context = prompt_embeds.to(device=sample.device, dtype=sample.dtype)
        null = negative_embeds.to(device=sample.device, dtype=sample.dtype)
        return self._guided(sample, timestep, context, null, guidance_scale)

    def _eps(self, x: torch.Tensor, t, context: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=context).sample


def prompt_condition(prompt_embeds: torch.Tensor, null_embeds: torch.Tensor, guidance_scale: float) -> Condition:
    """The :data:`Condition` of samples of prompts with states ``prompt_embeds`` (N, L, d), the empty prompt's
    ``null_embeds`` (1, L, d) repeated for each, at one guidance scale."""
    n = prompt_embeds.shape[0]
    return {"prompt_embeds": prompt_embeds, "negative_embeds": null_embeds.expand(n, *null_embeds.shape[1:]),
            "guidance_scale": torch.full((n,), float(guidance_scale), device=prompt_embeds.device)}


def class_condition(labels: torch.Tensor, guidance_scale: float) -> Condition:
    """The :data:`Condition` of samples of classes ``labels`` (N,) at one guidance scale."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    return {"class_labels": labels,
            "guidance_scale": torch.full(labels.shape, float(guidance_scale), device=labels.device)}


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """``0, 1, ..., K - 1, 0, 1, ...`` (n,): equally many samples per class, as a 50-per-class ImageNet set."""
    return torch.arange(n) % num_classes


def random_class_groups(n: int, num_classes: int, groups: int, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """Labels (n,) of ``groups`` distinct random classes, ``n / groups`` samples each (contiguous).

    The public MPQ-DM training draws 4 random ImageNet classes of 4 samples per trajectory.
    """
    if n % groups or groups > num_classes:
        raise ValueError(f"{n} samples do not split into {groups} groups of distinct classes out of {num_classes}")
    classes = torch.randperm(num_classes, generator=generator)[:groups]
    return classes.repeat_interleave(n // groups)
