"""Generalized divisive normalization (Ballé, Laparra & Simoncelli 2016, "Density modeling of
images using a generalized normalization transformation"), the nonlinearity of the learned
image codecs of Ballé et al. 2017/2018 and Minnen et al. 2018:

    GDN:   y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    IGDN:  y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)   (its approximate inverse)

over the channels at each pixel. beta must stay positive and gamma non-negative while they
are trained: both are stored as square roots (Ballé 2018, "Efficient nonlinear transforms for
lossy image compression", section 3) and squared after a lower bound, with a small pedestal
that keeps the gradient of the square root finite near zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aekit.lower_bound import lower_bound

PEDESTAL = 2.0**-36
"""Added under the square root of the stored parameters (Ballé 2018's reparameterisation: it
keeps d sqrt / d value finite at 0); its square, 2^-72, is far below any bound here."""
BETA_MIN = 1e-6
"""beta's lower bound: the denominator never reaches 0 (Ballé 2018; CompressAI's default)."""


class NonNegative(nn.Module):
    """A parameter kept >= `minimum` by storing sqrt(value + pedestal)."""

    def __init__(self, initial: torch.Tensor, minimum: float = 0.0) -> None:
        super().__init__()
        self.root = nn.Parameter(torch.sqrt(initial + PEDESTAL))
        self.bound = (minimum + PEDESTAL) ** 0.5

    def forward(self) -> torch.Tensor:
        return lower_bound(self.root, self.bound).pow(2) - PEDESTAL


class GDN(nn.Module):
    """GDN over the channels of (B, C, H, W) features; `inverse` gives IGDN (the decoder's).
    Initialised as Ballé 2018: beta = 1, gamma = 0.1 I (a mild normalisation)."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = NonNegative(torch.ones(channels), BETA_MIN)
        self.gamma = NonNegative(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        norm = F.conv2d(x.pow(2), self.gamma().view(c, c, 1, 1), self.beta())
        return x * norm.sqrt() if self.inverse else x * norm.rsqrt()

    def extra_repr(self) -> str:
        return f"{self.beta.root.numel()}, inverse={self.inverse}"
