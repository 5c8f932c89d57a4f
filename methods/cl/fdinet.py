"""FDINet: frequency decomposition and integration (Liu et al., arXiv 2503.22175) -- a clean-room design.

No code of the paper is public and only its abstract is known (docs/papers/fdinet.md):
the image is split into low- and high-frequency components, two lightweight networks
process them, their outputs are integrated, the backbone has 78% fewer parameters than
the reference, and the method plugs into rehearsal CL. Every other choice below is ours,
taken from the same group's CLFD where it has an analogue:

- decomposition: one level of the Haar DWT (CLFD's ``DWTNet``), giving LL (C channels) for
  the low branch and LH/HL/HH stacked (3C channels) for the high branch, at H/2 x W/2;
- branches: two reduced ResNet-18s (BasicBlock [2, 2, 2, 2], 3x3 stem) of base widths 24
  (low) and 18 (high); the low band carries most of the image's energy, so it gets the
  wider branch. With a 10-way head this is 2.46 M parameters, 78.0% fewer than the
  width-64 ResNet-18 (11.17 M), the paper's reduction, taking mammoth's ResNet-18 as the
  unnamed reference;
- integration: the two pooled features are concatenated (8 * 24 + 8 * 18 = 336 values)
  before one linear classifier; no extra loss;
- nothing is frozen; the buffer stores images (the Haar DWT is parameter-free and the four
  sub-bands hold as many values as the image, so storing coefficients saves nothing);
- plug-in: :class:`FDINet` is a :class:`~methods.cl.model.ContinualNet`, trained by ER or
  DER++ with their losses and hyper-parameters unchanged.
"""

from __future__ import annotations

import torch

from methods.cl.backbones import ResNet
from methods.cl.model import ContinualNet
from methods.cl.wavelets import DWT2d

LOW_WIDTH = 24
HIGH_WIDTH = 18


class FDINet(ContinualNet):
    """Haar DWT -> (low branch on LL, high branch on LH/HL/HH) -> concatenation -> linear head.

    Parameters
    ----------
    n_classes : int
    in_channels : int
        Image channels ``C``.
    black : torch.Tensor
        ``(C,)`` normalised black pixel (replay-crop fill).
    low_width, high_width : int
        Base widths of the two branches (ours: 24 and 18).
    wavelet : str

    Notes
    -----
    ``forward(x)``: ``(N, C, H, W)`` with even sides -> ``(N, n_classes)`` logits; each
    branch runs at ``H/2 x W/2``.
    """

    def __init__(self, n_classes: int, in_channels: int, black: torch.Tensor, low_width: int = LOW_WIDTH,
                 high_width: int = HIGH_WIDTH, wavelet: str = "haar"):
        super().__init__(black)
        self.dwt = DWT2d(wavelet)
        self.low = ResNet(0, low_width, in_channels)
        self.high = ResNet(0, high_width, 3 * in_channels)
        self.fc = torch.nn.Linear(self.low.feature_dim + self.high.feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> integrated ``(N, 8 * (low_width + high_width))`` feature."""
        ll, lh, hl, hh = self.dwt(x)
        return torch.cat([self.low.features(ll), self.high.features(torch.cat([lh, hl, hh], 1))], 1)

    def classify(self, encoded: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.features(encoded))
