"""max(x, bound) with a gradient that can leave the bound (Ballé et al. 2018, "Efficient
nonlinear transforms for lossy image compression", section 3): used where a learned quantity
must stay above a floor (GDN's parameters, a hyperprior's predicted scales)."""

from __future__ import annotations

import torch


class _LowerBound(torch.autograd.Function):
    """max(x, bound), whose gradient also passes below the bound when it would raise x: a
    parameter pinned at its bound by one step can leave it again."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return _LowerBound.apply(x, bound)
