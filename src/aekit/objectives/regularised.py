"""Regularised deterministic autoencoders (Ghosh et al. 2020, "From variational to
deterministic autoencoders"): -log p(x|z) + beta * |z|^2 / 2 + lambda * R(decoder).

R is the squared L2 norm of the decoder weights (RAE-L2) or a gradient penalty on the
decoder, |J_D(z)|_F^2 (RAE-GP), estimated without forming the Jacobian as |J^T v|^2 with
v ~ N(0, I) (its expectation is the squared Frobenius norm). Sampling from an RAE uses a
density fitted on the training codes afterwards (`aekit.latent_density`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aekit import distributed
from aekit.errors import AekitError
from aekit.objectives.base import OBJECTIVES, ForwardPass, Objective, ObjectiveOutput, auxiliary

REGULARISERS = ("gp", "l2", "none")


@dataclass
class RAEOptions:
    embedding_weight: float = 1e-4
    """beta, the weight of |z|^2 / 2."""
    regulariser: str = "gp"
    """The decoder regulariser: gp (gradient penalty), l2 (weight decay) or none."""
    regulariser_weight: float = 1e-7
    """lambda, the weight of the decoder regulariser."""

    def __post_init__(self) -> None:
        if self.regulariser not in REGULARISERS:
            raise AekitError(
                f"unknown regulariser {self.regulariser!r}; choose from {', '.join(REGULARISERS)}"
            )
        if self.embedding_weight < 0 or self.regulariser_weight < 0:
            raise AekitError("embedding_weight and regulariser_weight must be non-negative")


def decoder_gradient_penalty(f: ForwardPass) -> torch.Tensor | None:
    """Mean over the batch of |J^T v|^2, an unbiased estimate of |dD(z)/dz|_F^2; None under
    no_grad (evaluation), where the graph it needs is not built."""
    z = f.bottleneck.z
    if z is None:
        raise AekitError(
            "the decoder gradient penalty needs the dense code the decoder saw: use "
            "--sparse-decode dense (or --regulariser l2)"
        )
    if not (torch.is_grad_enabled() and z.requires_grad):
        return None
    v = distributed.randn_rows(f.params.shape, device=f.params.device, dtype=f.params.dtype)
    (jtv,) = torch.autograd.grad((f.params * v).sum(), z, create_graph=True)
    return jtv.pow(2).sum(1).mean()


@OBJECTIVES.register("rae")
class RAE(Objective):
    Options = RAEOptions

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        o = self.options
        z_penalty = 0.5 * f.bottleneck.dense_code().pow(2).sum(1).mean()
        decoder_penalty = None
        if o.regulariser == "l2":
            decoder_penalty = sum(p.pow(2).sum() for p in f.decoder.parameters())
        elif o.regulariser == "gp":
            decoder_penalty = decoder_gradient_penalty(f)
        loss = f.nll.mean() + o.embedding_weight * z_penalty + auxiliary(f.bottleneck)
        extra = {"z_penalty": z_penalty}
        if decoder_penalty is not None:
            loss = loss + o.regulariser_weight * decoder_penalty
            extra["decoder_penalty"] = decoder_penalty
        return ObjectiveOutput(loss, self.report(f, loss, **extra))
