"""Sparse coding: a dictionary's reconstruction error plus the terms that shape a sparse code.

With t the target and t_hat its reconstruction in the dictionary's normalised space (unit mean
squared norm, see `nets/dictionary.py`), over a batch of B rows:

    mse  = sum |t - t_hat|^2 / B                  (the ReLU-L1 and JumpReLU papers)
    fvu  = sum |t - t_hat|^2 / sum |t - mean(t)|^2 (the k-sparse papers, as Gao et al.)

    l1    lambda(step) / sqrt(d) * mean_b sum_i z_i |W_dec,i|   (Anthropic, April 2024: inputs
          there have E|x|^2 = d, ours are 1/sqrt(d) of theirs, so this is their objective
          divided by d: the same minimiser)
    l0    lambda(step) * mean_b sum_i H(pre_i - theta_i)         (Rajamanoharan et al. 2024,
          JumpReLU; the bottleneck gives its pseudo-gradient)
    auxk  the top k_aux dead latents, decoded WITHOUT b_dec, fit the detached residual
          e = t - t_hat; |e - e_hat|^2 / |e - mean(e)|^2 over the batch, scaled by
          min(n_dead / k_aux, 1) (Gao et al. 2024; the scale as in sparsify)
    matryoshka  the reconstruction term averaged over nested prefixes of the dictionary
          m_1 < ... < n: each prefix alone must reconstruct (Bussmann et al. 2025)

lambda rises linearly from 0 over its warm-up. The penalties need a dictionary decoder (its
row norms, its bias-free directions) and a sparse bottleneck (its dead latents, its code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from aekit import distributed
from aekit.components import Dims
from aekit.errors import AekitError
from aekit.objectives.base import (
    OBJECTIVES,
    ForwardPass,
    Objective,
    ObjectiveOutput,
    ramp,
    schedule_terms,
)

RECONSTRUCTIONS = ("fvu", "mse")


def nested_prefixes(n_latents: int, smallest: int = 64, ratio: int = 4) -> tuple[int, ...]:
    """Matryoshka prefix sizes 64, 256, 1024, ... below n_latents (the full dictionary is the
    last level): groups growing geometrically, as in Bussmann et al. 2025."""
    sizes, m = [], smallest
    while m < n_latents:
        sizes.append(m)
        m *= ratio
    return tuple(sizes)


def batch_variance(t: torch.Tensor) -> torch.Tensor:
    """sum_b |t_b - mean(t)|^2 over the batch, the denominator of an FVU (no gradient: t is
    the data, or a detached residual). On ranks it is the global batch's, combined from each
    rank's count, mean and sum of squares (Chan et al. 1979), times the rank's share of the
    rows: the rank's error over it, weighted by that share as every loss is, sums to the
    global batch's FVU."""
    t = t.detach()
    tiny = torch.finfo(t.dtype).tiny
    if distributed.current() is None:
        return (t - t.mean(0)).pow(2).sum().clamp_min(tiny)
    n = torch.tensor([float(t.shape[0])], dtype=t.dtype, device=t.device)
    mean = t.mean(0)
    m2 = (t - mean).pow(2).sum().reshape(1)
    parts = distributed.stacked(torch.cat([n, mean, m2]))  # (ranks, 1 + d + 1)
    _, _, total = distributed.combine_moments(parts[:, 0], parts[:, 1:-1], parts[:, -1])
    return (total * distributed.fraction()).clamp_min(tiny)


@dataclass
class SparseCodingOptions:
    reconstruction: str = "fvu"
    """fvu (error over the batch's variance; the k-sparse recipes) or mse (summed over
    dimensions, mean over the batch; the L1 and L0 recipes)."""
    l1_coefficient: float = 0.0
    """lambda of the decoder-norm-weighted L1 penalty, in Anthropic's units (sae-relu: 5)."""
    l1_warmup_steps: int = 0
    """Steps over which the L1 lambda grows linearly from 0 (Anthropic: the first 5%)."""
    l0_coefficient: float = 0.0
    """lambda of the L0 penalty (sae-jumprelu: 0.001; latents then need to explain about
    lambda of squared error to fire, thresholds near sqrt(lambda))."""
    l0_warmup_steps: int = 0
    """Steps over which the L0 lambda grows linearly from 0 (Gemma Scope: 10,000)."""
    aux_k: int = 0
    """AuxK: dead latents used to model the residual (0: d_in // 2, as in sparsify)."""
    aux_coefficient: float = 1 / 32
    """AuxK loss weight alpha (Gao et al.: 1/32); 0 turns AuxK off. k-sparse bottlenecks only."""
    matryoshka: tuple[int, ...] = ()
    """Nested prefix sizes m_1 < ... < latents: the loss averages the reconstruction term of
    each prefix of the dictionary; the full dictionary is always the last prefix (the
    sae-matryoshka recipe: 64, 256, 1024, ... below the latent count)."""
    AUTO: ClassVar[tuple[str, ...]] = ("matryoshka",)
    """Fields that may say "auto": resolved from the model's widths (`resolved`)."""

    def __post_init__(self) -> None:
        if self.reconstruction not in RECONSTRUCTIONS:
            raise AekitError(f"reconstruction must be fvu or mse (got {self.reconstruction!r})")
        for name in ("l1_coefficient", "l0_coefficient", "aux_coefficient"):
            if getattr(self, name) < 0:
                raise AekitError(f"{name} must be non-negative (got {getattr(self, name)})")
        for name in ("l1_warmup_steps", "l0_warmup_steps", "aux_k"):
            if getattr(self, name) < 0:
                raise AekitError(f"{name} must be non-negative (got {getattr(self, name)})")
        if self.matryoshka == "auto":
            return
        self.matryoshka = tuple(int(m) for m in self.matryoshka)
        if any(b <= a for a, b in zip(self.matryoshka, self.matryoshka[1:], strict=False)):
            raise AekitError(f"matryoshka prefixes must increase (got {list(self.matryoshka)})")
        if self.matryoshka and self.matryoshka[0] < 1:
            raise AekitError(f"matryoshka prefixes must be positive (got {list(self.matryoshka)})")

    def resolved(self, dims: Dims) -> SparseCodingOptions:
        """AuxK's k and the `auto` prefixes from the model's widths, checked against them."""
        n = dims.latent_dim
        prefixes = nested_prefixes(n) if self.matryoshka == "auto" else self.matryoshka
        if prefixes and prefixes[-1] >= n:
            raise AekitError(
                f"matryoshka prefix {prefixes[-1]} must be smaller than the number of latents "
                f"({n}), which is always the last prefix"
            )
        d_in = math.prod(dims.input_shape)
        return replace(self, matryoshka=prefixes, aux_k=self.aux_k or max(1, d_in // 2))


@OBJECTIVES.register("sparse-coding")
class SparseCoding(Objective):
    Options = SparseCodingOptions
    paired_targets = True

    def __init__(self, options: SparseCodingOptions, dims: Dims) -> None:
        super().__init__(options.resolved(dims), dims)
        self.prefixes = (*self.options.matryoshka, dims.latent_dim)
        self._starts: dict[torch.device, torch.Tensor] = {}

    def attach(self, bottleneck, decoder: nn.Module, likelihood=None) -> None:
        super().attach(bottleneck, decoder, likelihood)
        o = self.options
        if likelihood is not None and not (
            getattr(likelihood, "options", None) is not None
            and getattr(likelihood.options, "variance", None) == "fixed"
        ):
            raise AekitError(
                "objective 'sparse-coding' measures the error of the decoder's output itself, "
                "which a fitted scale or a Bernoulli mean would change: use --likelihood "
                "gaussian --variance fixed"
            )
        if not bottleneck.is_sparse:
            raise AekitError(
                f"objective 'sparse-coding' needs a sparse bottleneck (relu, topk, batchtopk, "
                f"jumprelu, abstopk); {bottleneck.kind!r} is not one"
            )
        if not hasattr(decoder, "directions"):
            raise AekitError(
                "objective 'sparse-coding' needs the dictionary body (--body dictionary): its "
                "terms read the decoder's directions and normalisation"
            )
        if o.aux_coefficient > 0 and not hasattr(bottleneck, "masked_code"):
            raise AekitError(
                f"AuxK (aux_coefficient > 0) needs a k-sparse bottleneck (topk, batchtopk, "
                f"abstopk); {bottleneck.kind!r} is not one: pass --aux-coefficient 0"
            )
        if o.l0_coefficient > 0 and not bottleneck.differentiable_l0:
            raise AekitError(
                f"the L0 penalty (l0_coefficient > 0) needs a bottleneck with a pseudo-gradient "
                f"for its L0 (jumprelu); {bottleneck.kind!r} has none"
            )
        self.bottleneck = bottleneck

    def schedule_end(self) -> int:
        o = self.options
        return max(
            o.l1_warmup_steps if o.l1_coefficient else 0,
            o.l0_warmup_steps if o.l0_coefficient else 0,
        )

    def starts(self, device: torch.device) -> torch.Tensor:
        if device not in self._starts:
            self._starts[device] = torch.tensor(
                self.options.matryoshka, dtype=torch.long, device=device
            )
        return self._starts[device]

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        o, b, decoder = self.options, f.bottleneck, f.decoder
        scale = decoder.target_scale
        t = f.x.flatten(1).to(f.params.dtype) * scale
        batch = t.shape[0]
        if o.matryoshka:
            code = b.sparse if b.z is None else b.z  # dense when the bottleneck built it
            partial = decoder.prefix_directions(code, self.starts(t.device)).cumsum(1)
            t_hats = decoder.add_biases(partial, f.source)
        else:
            t_hats = (f.params.flatten(1) * scale)[:, None]
        terms: dict[str, torch.Tensor] = {"l0": b.l0}
        variance = batch_variance(t)
        errors = (t[:, None] - t_hats).pow(2).sum((0, 2))  # per prefix
        fvus, mses = errors / variance, errors / batch
        terms["fvu"], terms["mse"] = fvus[-1], mses[-1]
        if o.matryoshka:
            for m, fvu in zip(self.prefixes, fvus, strict=True):
                terms[f"matryoshka_fvu_{m}"] = fvu
        loss = (fvus if o.reconstruction == "fvu" else mses).mean()
        if b.dead is not None:
            terms["dead"] = b.dead.float().mean()
            if o.aux_coefficient > 0:
                auxk = self.auxk(b, decoder, t - t_hats[:, -1].detach())
                terms["auxk"] = auxk
                loss = loss + o.aux_coefficient * auxk
        if o.l1_coefficient > 0:
            lam = o.l1_coefficient * ramp(step, o.l1_warmup_steps)
            l1 = (b.dense_z() * decoder.row_norms()).sum(1).mean()
            terms["l1"] = lam / math.sqrt(decoder.d_out) * l1
            loss = loss + terms["l1"]
        if o.l0_coefficient > 0:
            terms["l0_penalty"] = o.l0_coefficient * ramp(step, o.l0_warmup_steps) * b.l0
            loss = loss + terms["l0_penalty"]
        terms["loss"] = loss
        terms.update(schedule_terms(b))
        return ObjectiveOutput(loss, {name: term.detach() for name, term in terms.items()})

    def auxk(self, b, decoder: nn.Module, residual: torch.Tensor) -> torch.Tensor:
        """AuxK (see the module docstring); 0 without dead latents."""
        n_dead = int(b.dead.sum())
        if n_dead == 0:
            return residual.new_zeros(())
        aux_k = self.options.aux_k
        k = min(aux_k, n_dead)
        aux = self.bottleneck.masked_code(b.features, b.dead, k)
        e_hat = decoder.directions(aux if b.z is None else aux.dense())  # dense: plain autograd
        variance = batch_variance(residual)
        return (k / aux_k) * (residual - e_hat).pow(2).sum() / variance
