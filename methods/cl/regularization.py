"""Regularisation baselines of the CLFD table: online EWC and Synaptic Intelligence.

Both keep, per parameter tensor ``theta``, an importance ``Omega`` (same shape) and an anchor
``theta*`` (the parameters at the end of the previous task), and add a quadratic penalty to
the cross-entropy of the current batch:

    loss = CE(f(x), y) + s * sum_i Omega_i (theta_i - theta*_i)^2

with ``s`` the method's strength. As in the published implementation (mammoth's ``ewc_on``
and ``si``, whose best arguments CLFD's table uses), the penalty carries no factor 1/2, so
its gradient is ``2 s Omega (theta - theta*)``: the papers' ``lambda / 2`` form with
``lambda = 2 s``. The penalty is zero during the first task.

- :class:`OnlineEWC` (Schwarz et al. 2018, "Progress & Compress", online EWC): at the end of
  each task the diagonal Fisher ``F_t`` of the task's training data is folded into a running
  Fisher, ``Omega <- gamma * Omega + F_t``.
- :class:`SI` (Zenke et al. 2017, Eq. 4-5): during a task each step adds ``-g * delta theta``
  to a path integral ``omega`` (``g`` the gradient the step applied); at the end of the task
  ``Omega <- Omega + omega / ((theta - theta*)^2 + xi)`` and ``omega`` restarts at zero.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.er import Learner, TaskBatches


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class QuadraticPenalty(Learner):
    """Fine-tuning plus ``strength * sum Omega (theta - theta*)^2`` over the trainable parameters.

    Parameters
    ----------
    net : ContinualNet
    strength : float
        ``s`` above (oEWC's ``lambda``, SI's ``c``).
    **kwargs
        As :class:`~methods.cl.er.Learner`.

    Attributes
    ----------
    params : list of torch.Tensor
        The trainable parameters ``theta``, in ``net.parameters()`` order.
    importance : list of torch.Tensor or None
        ``Omega``, one tensor per parameter; None until the first task ends.
    anchor : list of torch.Tensor
        ``theta*``: the parameters at the last task end (at construction before that).
    """

    def __init__(self, net, *, strength: float, **kwargs):
        super().__init__(net, **kwargs)
        if strength < 0:
            raise ValueError(f"the penalty strength must be >= 0, not {strength}")
        self.strength = strength
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.importance: list[torch.Tensor] | None = None
        self.anchor = [p.detach().clone() for p in self.params]

    def penalty(self) -> torch.Tensor:
        """``sum_i Omega_i (theta_i - theta*_i)^2`` (a 0-d tensor; zero before the first task end)."""
        if self.importance is None:
            return self.params[0].new_zeros(())
        return sum(((p - a) ** 2 * w).sum() for p, a, w in zip(self.params, self.anchor, self.importance,
                                                                  strict=True))

    def current_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels) + self.strength * self.penalty()

    def consolidate(self, new: list[torch.Tensor], decay: float) -> None:
        """``Omega <- decay * Omega + new`` and ``theta* <- theta``."""
        if self.importance is None:
            self.importance = [n.clone() for n in new]
        else:
            self.importance = [decay * w + n for w, n in zip(self.importance, new, strict=True)]
        self.anchor = [p.detach().clone() for p in self.params]

    def storage_bytes(self) -> int:
        """The importance and the anchor, besides the working network."""
        return super().storage_bytes() + _bytes(self.anchor) + (0 if self.importance is None
                                                                 else _bytes(self.importance))


class OnlineEWC(QuadraticPenalty):
    """Online EWC (Schwarz et al. 2018; mammoth ``ewc_on``).

    Parameters
    ----------
    lamb : float
        Penalty weight ``lambda`` (mammoth's ``e_lambda``: 10 on Seq-CIFAR-10, 25 on Seq-Tiny-ImageNet).
    gamma : float
        Decay of the running Fisher (1.0 in mammoth's best arguments).
    **kwargs
        As :class:`~methods.cl.er.Learner`.

    Notes
    -----
    The Fisher of a task (:meth:`fisher`) is the published implementation's: the mean over the
    task's training samples (one augmented pass) of ``p(y|x) * (d log p(y|x) / d theta)^2``,
    with ``y`` the true label, each sample's gradient taken alone. Choice (ours): batch norm is
    in eval mode for it (its running statistics); mammoth stays in train mode, where a
    single-sample batch normalises by that sample's own statistics and overwrites the running
    statistics with the last samples' ones.
    """

    name = "oewc"

    def __init__(self, net, *, lamb: float, gamma: float, **kwargs):
        super().__init__(net, strength=lamb, **kwargs)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], not {gamma}")
        self.gamma = gamma

    def fisher(self, batches: TaskBatches) -> list[torch.Tensor]:
        """The diagonal Fisher of one pass of ``batches()``, one tensor per parameter (see the class notes)."""
        was_training = self.net.training
        self.net.eval()
        total = [torch.zeros_like(p) for p in self.params]
        count = 0
        for inputs, labels, _ in batches():
            for x, y in zip(inputs, labels, strict=True):
                log_p = F.log_softmax(self.net(x.unsqueeze(0)), 1)[0, y]
                grads = torch.autograd.grad(log_p, self.params, allow_unused=True)
                weight = float(log_p.detach().exp())
                for acc, g in zip(total, grads, strict=True):
                    if g is not None:
                        acc.add_(weight * g.detach() ** 2)
                count += 1
        self.net.train(was_training)
        return [acc / max(count, 1) for acc in total]

    def end_task(self, batches: TaskBatches) -> None:
        self.consolidate(self.fisher(batches), self.gamma)


class SI(QuadraticPenalty):
    """Synaptic Intelligence (Zenke et al. 2017; mammoth ``si``).

    Parameters
    ----------
    c : float
        Penalty weight (0.5 in mammoth's best arguments).
    xi : float
        Damping of the normalisation (1.0 in mammoth's best arguments).
    grad_clip : float or None
        Each gradient entry is clipped to ``[-grad_clip, grad_clip]`` before the step (the published
        implementation's 1.0); None: no clipping.
    **kwargs
        As :class:`~methods.cl.er.Learner`.

    Attributes
    ----------
    path : list of torch.Tensor
        ``omega``: the running path integral ``sum_steps -g * delta theta`` of the current task.
    """

    name = "si"

    def __init__(self, net, *, c: float, xi: float, grad_clip: float | None = 1.0, **kwargs):
        super().__init__(net, strength=c, **kwargs)
        if xi <= 0:
            raise ValueError(f"xi must be > 0, not {xi}")
        self.xi = xi
        self.path = [torch.zeros_like(p) for p in self.params]
        if grad_clip is not None:
            for p in self.params:
                p.register_hook(lambda g, bound=grad_clip: g.clamp(-bound, bound))

    def observe(self, inputs: torch.Tensor, labels: torch.Tensor, raw_inputs: torch.Tensor) -> float:
        """One step, then ``omega += -g * (theta_after - theta_before)`` with ``g`` the (clipped) gradient."""
        before = [p.detach().clone() for p in self.params]
        loss = super().observe(inputs, labels, raw_inputs)
        for omega, p, old in zip(self.path, self.params, before, strict=True):
            if p.grad is not None:
                omega.sub_(p.grad * (p.detach() - old))
        return loss

    def end_task(self, batches: TaskBatches) -> None:
        """``Omega += omega / ((theta - theta*)^2 + xi)``, then ``theta* <- theta`` and ``omega <- 0``."""
        new = [omega / ((p.detach() - a) ** 2 + self.xi) for omega, p, a in zip(self.path, self.params, self.anchor,
                                                                               strict=True)]
        self.consolidate(new, 1.0)
        for omega in self.path:
            omega.zero_()

    def storage_bytes(self) -> int:
        return super().storage_bytes() + _bytes(self.path)
