"""How pre-activations become sparse latents, and the penalty each activation trains with.

    relu       f = ReLU(pre);  + lambda sum_i f_i |W_dec,i|        (Anthropic, April 2024)
    topk       f = ReLU(TopK_k(pre))                               (Gao et al. 2024)
    batchtopk  the B k largest of the batch; inference: pre > theta (Bussmann et al. 2024)
    jumprelu   f = pre H(pre - theta);  + lambda sum_i H(pre_i - theta_i)
                                                                   (Rajamanoharan et al. 2024)
    abstopk    the k largest |pre|, sign kept (bidirectional features)

An activation is stateless: its parameters and buffers (the JumpReLU log-thresholds, the
BatchTopK threshold) live on the model, which passes itself in. k-sparse activations also say
which k entries they select (`select`), so the model can run the sparse kernels on them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.autograd import Function
from torch.nn import functional as F

from aekit.components import Registry
from aekit.sae.kernels import Pattern

if TYPE_CHECKING:
    from aekit.sae.config import SAEConfig
    from aekit.sae.model import SparseAutoencoder


def warmup(step: int | None, steps: int) -> float:
    """Linear warm-up from 0 at step 0 to 1 at `steps`; None is the end of training."""
    if step is None or steps <= 0:
        return 1.0
    return min(1.0, step / steps)


class Activation(ABC):
    k_sparse: ClassVar[bool] = False
    """Selects exactly k latents per example in training (k B per batch for batchtopk)."""
    recon: ClassVar[str] = "mse"
    """The reconstruction term of the loss: mse (sum over dims, mean over the batch, on
    unit-norm data) or fvu (that over the batch's variance, as Gao et al. normalise it)."""
    unit_norm_default: ClassVar[bool] = True

    def __init__(self, config: SAEConfig) -> None:
        self.config = config

    def sparse_in(self, training: bool) -> bool:
        """Whether the latents come from `select` in this mode."""
        return False

    @abstractmethod
    def dense(self, pre: torch.Tensor, sae: SparseAutoencoder) -> torch.Tensor:
        """Inference latents (B, n) from pre-activations, differentiable."""

    def penalty(
        self, pre: torch.Tensor, z: torch.Tensor, sae: SparseAutoencoder, step: int | None
    ) -> dict[str, torch.Tensor]:
        """Sparsity penalty terms added to the loss (k-sparse activations have none)."""
        return {}

    def observe(self, values: torch.Tensor, sae: SparseAutoencoder) -> None:
        """Training-time statistics from the selected values (no grad)."""
        return None

    def schedule_end(self) -> int:
        """The step at which the penalty's warm-up ends (0: no warm-up)."""
        return 0


class KSparse(Activation):
    """Keeps k latents per example (per batch for batchtopk): selection, then a value."""

    k_sparse = True
    recon = "fvu"
    per_example: ClassVar[bool] = True
    """Exactly k per example (batchtopk: k B per batch)."""

    def sparse_in(self, training: bool) -> bool:
        return True

    def score(self, pre: torch.Tensor) -> torch.Tensor:
        """What latents are ranked by (AuxK ranks the dead latents by it too)."""
        return pre

    def select(self, pre: torch.Tensor, k: int) -> Pattern:
        """The k entries per example to keep, from detached pre-activations (B, n)."""
        return Pattern.from_topk(self.score(pre).topk(k, dim=1, sorted=False).indices, pre.shape[1])

    def value(self, pre: torch.Tensor) -> torch.Tensor:
        """The latent value of a selected pre-activation."""
        return F.relu(pre)

    def dense(self, pre: torch.Tensor, sae: SparseAutoencoder) -> torch.Tensor:
        indices = self.score(pre).topk(self.config.k, dim=1, sorted=False).indices
        return torch.zeros_like(pre).scatter(1, indices, self.value(pre.gather(1, indices)))


ACTIVATIONS: Registry[Activation] = Registry("SAE activation")


@ACTIVATIONS.register("relu")
class ReLU(Activation):
    unit_norm_default = False

    def dense(self, pre, sae):
        return F.relu(pre)

    def schedule_end(self):
        return self.config.l1_warmup_steps

    def penalty(self, pre, z, sae, step):
        # Anthropic's lambda is for inputs with E|x|^2 = d. Ours are 1/sqrt(d) of theirs, so
        # their objective is d (mse + lambda / sqrt(d) l1) in our units: same minimiser.
        lam = self.config.l1_coefficient * warmup(step, self.config.l1_warmup_steps)
        l1 = (z * sae.W_dec.norm(dim=1)).sum(1).mean()
        return {"l1": lam / math.sqrt(sae.d_out) * l1}


@ACTIVATIONS.register("topk")
class TopK(KSparse):
    pass


@ACTIVATIONS.register("abstopk")
class AbsTopK(KSparse):
    def score(self, pre):
        return pre.abs()

    def value(self, pre):
        return pre


@ACTIVATIONS.register("batchtopk")
class BatchTopK(KSparse):
    """Training keeps the B k largest pre-activations of the whole batch (ReLU'd), so examples
    share a budget of B k; inference keeps pre > theta, theta a moving average of the smallest
    value kept in training, so the saved model runs on one example at a time."""

    per_example = False

    def sparse_in(self, training):
        return training

    def select(self, pre, k):
        b, n = pre.shape
        return Pattern.from_flat(pre.reshape(-1).topk(b * k, sorted=False).indices, b, n)

    def dense(self, pre, sae):
        return torch.where(pre > sae.threshold, pre, 0.0)  # theta >= 0: a ReLU too

    @torch.no_grad()
    def observe(self, values, sae):
        smallest = torch.where(values > 0, values, math.inf).min()
        decay = self.config.threshold_decay
        ema = torch.where(
            sae.threshold > 0, decay * sae.threshold + (1 - decay) * smallest, smallest
        )
        sae.threshold.copy_(torch.where(torch.isfinite(smallest), ema, sae.threshold))


def rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(Function):
    """z = pre H(pre - theta). d/dpre = H(pre - theta); d/dtheta = -(theta / eps)
    K((pre - theta) / eps), K the rectangle kernel (Rajamanoharan et al. 2024, eq. 11)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        grad_pre = grad * (pre > theta)
        kernel = rectangle((pre - theta) / ctx.eps)
        grad_theta = -(theta / ctx.eps) * (kernel * grad).sum(0)
        return grad_pre, grad_theta, None


class _Step(Function):
    """H(pre - theta). No gradient to pre; d/dtheta = -(1 / eps) K((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        kernel = rectangle((pre - theta) / ctx.eps)
        return None, -(1.0 / ctx.eps) * (kernel * grad).sum(0), None


def jumprelu(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    return _JumpReLU.apply(pre, theta, eps)


def heaviside(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    return _Step.apply(pre, theta, eps)


@ACTIVATIONS.register("jumprelu")
class JumpReLU(Activation):
    def dense(self, pre, sae):
        return jumprelu(pre, sae.log_threshold.exp(), self.config.bandwidth)

    def schedule_end(self):
        return self.config.l0_warmup_steps

    def penalty(self, pre, z, sae, step):
        lam = self.config.l0_coefficient * warmup(step, self.config.l0_warmup_steps)
        l0 = heaviside(pre, sae.log_threshold.exp(), self.config.bandwidth).sum(1).mean()
        return {"l0_penalty": lam * l0}
