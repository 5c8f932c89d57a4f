"""DER++ (Buzzega et al., NeurIPS 2020; mammoth ``derpp``): dark experience replay with labels.

Loss = CE(current) + alpha * MSE(f(x'), z') + beta * CE(f(x''), y''), where (x', z') and
(x'', y'') are two independent buffer draws and z' the logits stored with x' when it
was first seen (the DER++ objective of Buzzega et al. 2020).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.er import Learner


class DERPP(Learner):
    """DER++ with weights ``alpha`` (logit distillation) and ``beta`` (label replay).

    Parameters
    ----------
    alpha, beta : float
        CLFD's protocol on Seq-CIFAR-10: alpha 0.1 (buffer 50) or 0.2 (125), beta 0.5.
    **kwargs
        As :class:`~methods.cl.er.Learner`.
    """

    name = "derpp"
    uses_buffer = True

    def __init__(self, net, *, alpha: float, beta: float, **kwargs):
        super().__init__(net, **kwargs)
        self.alpha = alpha
        self.beta = beta

    def replay_loss(self) -> torch.Tensor:
        encoded, _, stored_logits = self.replay()
        loss = self.alpha * F.mse_loss(self.net.classify(encoded), stored_logits)
        encoded, labels, _ = self.replay()
        return loss + self.beta * F.cross_entropy(self.net.classify(encoded), labels)
