"""2-D discrete wavelet transform as a fixed stride-2 convolution, with PyWavelets' filters.

CLFD (its FFE) and FDINet decompose the input into one low-frequency sub-band (LL) and
three high-frequency sub-bands with a single-level 2-D DWT; CLFD uses the Haar wavelet
through WaveCNet's matrix-multiplication layer. Here the separable analysis filters
``dec_lo``/``dec_hi`` of ``pywt.Wavelet(name)`` become four 2-D kernels applied per
channel with stride 2, which reproduces ``pywt.dwt2(x, name, mode="periodization")``
(for Haar, every mode gives the same result on even sides).
"""

from __future__ import annotations

import pywt
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention


class DWT2d(nn.Module):
    """Single-level 2-D DWT of every channel.

    Parameters
    ----------
    wavelet : str
        A PyWavelets orthogonal wavelet name (``"haar"`` in CLFD).

    Notes
    -----
    ``forward(x)`` maps ``(N, C, H, W)`` with even ``H, W`` to four ``(N, C, H/2, W/2)``
    tensors ``(ll, lh, hl, hh)`` equal to pywt's ``(cA, cH, cV, cD)``: ``lh`` is
    high-pass along the rows' axis (H) and low-pass along W, ``hl`` the converse.
    """

    def __init__(self, wavelet: str = "haar"):
        super().__init__()
        filters = pywt.Wavelet(wavelet)
        low = torch.tensor(filters.dec_lo[::-1], dtype=torch.float64)
        high = torch.tensor(filters.dec_hi[::-1], dtype=torch.float64)
        kernels = torch.stack([torch.outer(low, low), torch.outer(high, low), torch.outer(low, high),
                               torch.outer(high, high)])
        self.register_buffer("kernels", kernels.unsqueeze(1))  # float64; cast to the input's dtype per call
        self.pad = len(low) // 2 - 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n, channels, height, width = x.shape
        if height % 2 or width % 2:
            raise ValueError(f"DWT2d needs even sides, got {height}x{width}")
        planes = x.reshape(n * channels, 1, height, width)
        if self.pad:
            planes = F.pad(planes, (self.pad,) * 4, mode="circular")
        bands = F.conv2d(planes, self.kernels.to(x.dtype), stride=2).reshape(n, channels, 4, height // 2, width // 2)
        return bands[:, :, 0], bands[:, :, 1], bands[:, :, 2], bands[:, :, 3]
