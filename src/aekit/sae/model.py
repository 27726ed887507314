"""The sparse autoencoder (and transcoder) on a frozen network's activations.

With x and the target t scaled by constants s_in, s_out to unit mean squared norm:

    autoencoder  pre = W_enc (s_in x - b_dec) + b_enc
    transcoder   pre = W_enc (s_in x) + b_enc                   (b_dec is the output bias)
    z = activation(pre),   t_hat = W_dec^T z + b_dec [+ W_skip s_in x],   output = t_hat / s_out

Rows of W_dec (n, d_out) are the latents' directions, kept at unit norm unless the activation
is relu. Losses live in the normalised space; `folded_state_dict` moves s_in and s_out into
the weights so a saved model runs on raw activations with scales 1.

k-sparse activations run `kernels` (sparse encode backward and decode) when k is small against
n; `sparse_decode="dense"` keeps plain autograd over the (B, n) code.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from aekit.errors import AekitError
from aekit.sae.activations import ACTIVATIONS, KSparse
from aekit.sae.config import SAEConfig
from aekit.sae.kernels import Pattern, sparse_decode, sparse_preacts

SPARSE_RATIO = 8
"""auto uses the sparse kernels when k * SPARSE_RATIO <= n. They replace five of the six
O(B n d) matmuls of a dense step by O(B k d) gathers, which run several times slower per
multiply-add; benchmarks/sae_kernels.py (d=384, n=6144, B=4096, CPU) measured the kernels
1.3x faster at n / k = 8 and 0.8x at n / k = 4. Not measured on GPU."""


class SparseCode(NamedTuple):
    values: torch.Tensor
    """(B, k) latent values; zeros pad rows with fewer than k active latents."""
    indices: torch.Tensor
    """(B, k) int64 latent indices."""


@dataclass
class SAEOutput:
    reconstruction: torch.Tensor
    """The output in raw (unnormalised) space, (B, d_out)."""
    values: torch.Tensor | None
    """(B, k) selected latent values when the activation keeps k per example (topk, abstopk)."""
    indices: torch.Tensor | None
    """(B, k) their latent indices."""
    latents: torch.Tensor | None
    """Dense (B, n) latents when the dense path computed them."""
    loss: torch.Tensor
    """The training objective (scalar, with its graph)."""
    terms: dict[str, torch.Tensor]
    """Detached scalars: loss, fvu, mse, l0, and dead, auxk, l1, l0_penalty, matryoshka_fvu_m
    where they apply."""


def geometric_median(
    x: torch.Tensor, iters: int = 100, eps: float = 1e-8, tol: float = 1e-6
) -> torch.Tensor:
    """argmin_m sum_i |x_i - m| of the rows of x (N, d), by Weiszfeld's iterations
    m <- sum_i w_i x_i / sum_i w_i, w_i = 1 / max(|x_i - m|, eps), from the mean, until a step
    moves m by less than tol (1 + |m|). Robust to outliers, unlike the mean."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)
        new = (w @ x) / w.sum()
        if (new - m).norm() <= tol * (1.0 + m.norm()):
            return new
        m = new
    return m


def random_rows(n: int, d: int, norm: float) -> torch.Tensor:
    """n directions uniform on the sphere, scaled to `norm`."""
    return F.normalize(torch.randn(n, d), dim=1) * norm


class SparseAutoencoder(nn.Module):
    def __init__(self, config: SAEConfig) -> None:
        super().__init__()
        config = config.resolved()
        self.config = config
        self.d_in, self.d_out, self.n_latents = config.d_in, config.d_out, config.n_latents
        self.activation = ACTIVATIONS[config.activation](config)
        n = self.n_latents
        norm = 1.0 if config.unit_norm_decoder else config.decoder_init_norm
        self.W_dec = nn.Parameter(random_rows(n, self.d_out, norm))
        tied = config.tied_init and self.d_in == self.d_out
        encoder_norm = config.encoder_init_norm or norm
        self.W_enc = nn.Parameter(
            self.W_dec.detach() * (encoder_norm / norm)
            if tied
            else random_rows(n, self.d_in, encoder_norm)
        )
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))
        if config.skip:
            self.W_skip = nn.Parameter(torch.zeros(self.d_out, self.d_in))
        if config.activation == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((n,), math.log(config.threshold_init)))
        if config.activation == "batchtopk":
            self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("target_scale", torch.tensor(1.0))
        self.register_buffer("tokens_since_fired", torch.zeros(n, dtype=torch.long))
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer(
            "group_starts", torch.tensor(config.matryoshka, dtype=torch.long), persistent=False
        )
        self._initialised_seen = False

    @property
    def uses_sparse_kernels(self) -> bool:
        """Whether training runs the sparse kernels (k-sparse activation, sparse or auto)."""
        mode = self.config.sparse_decode
        return self.activation.k_sparse and (
            mode == "sparse" or (mode == "auto" and self.config.k * SPARSE_RATIO <= self.n_latents)
        )

    # ---------------------------------------------------------------- input and initialisation
    def check_input(self, x: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Shape, dtype and finiteness of a batch (and of a transcoder's target, if given)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.d_in:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AekitError(f"SAE input has shape {shape}; expected (batch, {self.d_in})")
        if x.shape[0] == 0:
            raise AekitError("SAE input is an empty batch")
        if not x.is_floating_point():
            raise AekitError(f"SAE input has dtype {x.dtype}; expected floating-point activations")
        # One reduction in the common case; the element-wise test only when the sum is not
        # finite (NaN or inf inside, or an overflowing sum of huge values).
        if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise AekitError("SAE input contains NaN or infinite values")
        if target is None:
            return
        if not self.config.transcoder:
            raise AekitError(
                "a target was given but this SAE reconstructs its input (transcoder=False)"
            )
        if target.dim() != 2 or target.shape != (x.shape[0], self.d_out):
            raise AekitError(
                f"transcoder target has shape {tuple(target.shape)}; "
                f"expected ({x.shape[0]}, {self.d_out})"
            )
        if not target.is_floating_point() or not bool(torch.isfinite(target).all()):
            raise AekitError("transcoder target must be finite floating-point activations")

    def check_data(self, data: Any) -> None:
        """Whether a source of activations (store view, model stream, TensorData) has this
        SAE's input width."""
        shape = tuple(getattr(data, "shape", ()))
        if shape != (self.d_in,):
            raise AekitError(
                f"{getattr(data, 'name', 'the data')} holds examples of shape {shape}; this "
                f"SAE takes activations of width {self.d_in}"
            )

    def schedule_end(self) -> int:
        """The step at which the penalty warm-ups end (0: none)."""
        return self.activation.schedule_end()

    def is_initialised(self) -> bool:
        if not self._initialised_seen:
            self._initialised_seen = bool(self.initialised)
        return self._initialised_seen

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._initialised_seen = False  # the loaded buffer decides again

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Data-dependent initialisation from a sample (N, d_in) [and its target (N, d_out)]:
        the normalisation scales and b_dec (geometric median, mean or zeros of the scaled
        target). Training calls it on its first batch if nobody did before."""
        self.check_input(x, target)
        x = x.to(self.W_enc.dtype)
        t = x if target is None else target.to(x.dtype)
        if self.config.normalize:
            self.input_scale.fill_(unit_mean_square_scale(x))
            self.target_scale.fill_(
                unit_mean_square_scale(t) if target is not None else self.input_scale
            )
        t = t * self.target_scale
        init = self.config.b_dec_init
        if init == "geometric_median":
            self.b_dec.copy_(geometric_median(t))
        elif init == "mean":
            self.b_dec.copy_(t.mean(0))
        else:
            self.b_dec.zero_()
        self.initialised.fill_(True)
        self._initialised_seen = True

    # ---------------------------------------------------------------- inference
    def _normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_in x, the encoder's input)."""
        x_n = x.to(self.W_enc.dtype) * self.input_scale
        return x_n, (x_n if self.config.transcoder else x_n - self.b_dec)

    def preacts(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations (B, n) of raw inputs."""
        self.check_input(x)
        return F.linear(self._normalised(x)[1], self.W_enc, self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents (B, n) of raw inputs; batchtopk uses its inference threshold."""
        return self.activation.dense(self.preacts(x), self)

    def encode_sparse(self, x: torch.Tensor) -> SparseCode:
        """(values, indices), (B, k): the k selected latents (topk, abstopk), or the non-zero
        latents padded with zeros to the batch's largest count (other activations)."""
        if self.activation.k_sparse and self.activation.sparse_in(False):
            pre = self.preacts(x)
            indices = self.activation.score(pre).topk(self.config.k, dim=1).indices
            return SparseCode(self.activation.value(pre.gather(1, indices)), indices)
        z = self.encode(x)
        width = max(1, int((z != 0).sum(1).max()))
        indices = z.abs().topk(width, dim=1).indices
        return SparseCode(z.gather(1, indices), indices)

    def _output(self, t_hat: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Raw output from normalised latent part + bias, adding the skip when x is given."""
        if self.config.skip:
            if x is None:
                raise AekitError("a transcoder with a skip connection needs x to decode")
            t_hat = t_hat + F.linear(self._normalised(x)[0], self.W_skip)
        return t_hat / self.target_scale

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Raw output (B, d_out) of dense latents (B, n) (x: the input, for a skip)."""
        return self._output(z @ self.W_dec + self.b_dec, x)

    def decode_sparse(
        self, values: torch.Tensor, indices: torch.Tensor, x: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw output (B, d_out) of a sparse code (B, k) (x: the input, for a skip)."""
        t_hat = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        return self._output(t_hat + self.b_dec, x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The inference output (B, d_out) of raw inputs, in raw space."""
        skip_x = x if self.config.skip else None
        if self.activation.k_sparse and self.activation.sparse_in(False):
            return self.decode_sparse(*self.encode_sparse(x), skip_x)
        return self.decode(self.encode(x), skip_x)

    # ---------------------------------------------------------------- training objective
    def step_forward(self, batch: Any, step: int) -> SAEOutput:
        """Trainer protocol: batch.x the input, batch.y the transcoder's target."""
        return self(batch.x, batch.y if self.config.transcoder else None, step=step)

    def forward(
        self, x: torch.Tensor, target: torch.Tensor | None = None, step: int | None = None
    ) -> SAEOutput:
        """The training objective on a batch; `step` drives the warm-ups (None: their end)."""
        self.check_input(x, target)
        if self.config.transcoder and target is None:
            raise AekitError("a transcoder needs target activations (batch.y) with its input")
        if self.training and not self.is_initialised():
            self.initialise(x, target)
        cfg, act = self.config, self.activation
        x_n, enc_in = self._normalised(x)
        t_n = x_n if target is None else target.to(x_n.dtype) * self.target_scale
        batch = x.shape[0]
        terms: dict[str, torch.Tensor] = {}
        values = pattern = z = pre = None
        if act.sparse_in(self.training):
            assert isinstance(act, KSparse)
            if self.uses_sparse_kernels:
                with torch.no_grad():
                    pre = F.linear(enc_in, self.W_enc, self.b_enc)
                pattern = act.select(pre, cfg.k)
                values = act.value(sparse_preacts(enc_in, self.W_enc, self.b_enc, pattern, pre))
            else:
                pre = F.linear(enc_in, self.W_enc, self.b_enc)
                pattern = act.select(pre.detach(), cfg.k)
                values = act.value(pre[pattern.row, pattern.col])
                z = pattern.dense(values)
            partial = self._partial_decode(values, pattern, z)
            terms["l0"] = (values != 0).sum() / batch
        else:
            pre = F.linear(enc_in, self.W_enc, self.b_enc)
            z = act.dense(pre, self)
            partial = self._partial_decode(None, None, z)
            terms["l0"] = (z != 0).sum() / batch

        t_hats = partial + self.b_dec
        if cfg.skip:
            t_hats = t_hats + F.linear(x_n, self.W_skip)[:, None]
        t_hat = t_hats[:, -1]

        variance = (t_n - t_n.mean(0)).pow(2).sum().clamp_min(torch.finfo(t_n.dtype).tiny)
        errors = (t_n[:, None] - t_hats).pow(2).sum((0, 2))  # per prefix
        fvus, mses = errors / variance, errors / batch
        terms["fvu"], terms["mse"] = fvus[-1], mses[-1]
        if cfg.matryoshka:
            for m, fvu in zip(cfg.prefixes, fvus, strict=True):
                terms[f"matryoshka_fvu_{m}"] = fvu
        loss = (fvus if act.recon == "fvu" else mses).mean()

        if self.training:
            dead = self._update_dead(values, pattern, z, batch)
            terms["dead"] = dead.float().mean()
            if act.sparse_in(True):
                act.observe(values.detach(), self)
                if cfg.aux_coefficient > 0:
                    auxk = self._auxk(enc_in, pre, dead, t_n - t_hat.detach())
                    terms["auxk"] = auxk
                    loss = loss + cfg.aux_coefficient * auxk
        for name, term in act.penalty(pre, z, self, step).items():
            terms[name] = term
            loss = loss + term
        terms["loss"] = loss
        fixed_k = act.sparse_in(self.training) and act.per_example
        return SAEOutput(
            reconstruction=t_hat / self.target_scale,
            values=values.view(batch, cfg.k) if fixed_k else None,
            indices=pattern.col.view(batch, cfg.k) if fixed_k else None,
            latents=z,
            loss=loss,
            terms={name: term.detach() for name, term in terms.items()},
        )

    def _partial_decode(
        self, values: torch.Tensor | None, pattern: Pattern | None, z: torch.Tensor | None
    ) -> torch.Tensor:
        """W_dec^T z restricted to each matryoshka prefix, (B, G, d_out), without bias
        (G = 1 without matryoshka): group partial sums, accumulated."""
        if z is None:
            assert values is not None and pattern is not None
            groups = len(self.config.prefixes)
            bags = pattern.grouped(self.group_starts) if groups > 1 else pattern
            partial = sparse_decode(values, self.W_dec, bags).view(-1, groups, self.d_out)
        else:
            bounds = (0, *self.config.prefixes)
            partial = torch.stack(
                [z[:, a:b] @ self.W_dec[a:b] for a, b in itertools.pairwise(bounds)], 1
            )
        return partial.cumsum(1)

    @torch.no_grad()
    def _update_dead(self, values, pattern, z, batch: int) -> torch.Tensor:
        """Count tokens since each latent last fired; return the dead mask (n,)."""
        if z is None:
            counts = torch.zeros(self.n_latents, device=values.device)
            fired = counts.index_add_(0, pattern.col, (values != 0).to(counts.dtype)) > 0
        else:
            fired = (z != 0).any(0)
        self.tokens_since_fired.add_(batch).masked_fill_(fired, 0)
        return self.tokens_since_fired >= self.config.dead_tokens

    def _auxk(
        self, enc_in: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        """AuxK (Gao et al. 2024): the top k_aux dead latents, decoded WITHOUT b_dec, fit the
        detached residual e = t - t_hat; the loss is |e - e_hat|^2 / |e - mean(e)|^2 over the
        batch (as in the paper's code), scaled by min(n_dead / k_aux, 1) (as in sparsify) so
        a few dead latents do not get the full weight. 0 without dead latents."""
        n_dead = int(dead.sum())
        if n_dead == 0:
            return residual.new_zeros(())
        act, k_aux = self.activation, min(self.config.aux_k, n_dead)
        score = act.score(pre.detach()).masked_fill(~dead, -math.inf)
        pattern = Pattern.from_topk(score.topk(k_aux, dim=1, sorted=False).indices, self.n_latents)
        if self.uses_sparse_kernels:
            aux = act.value(sparse_preacts(enc_in, self.W_enc, self.b_enc, pattern, pre))
            e_hat = sparse_decode(aux, self.W_dec, pattern)
        else:
            e_hat = pattern.dense(act.value(pre[pattern.row, pattern.col])) @ self.W_dec
        variance = (residual - residual.mean(0)).pow(2).sum().clamp_min(torch.finfo(pre.dtype).tiny)
        return (k_aux / self.config.aux_k) * (residual - e_hat).pow(2).sum() / variance

    # ---------------------------------------------------------------- optimisation hooks
    def backward(self, out: SAEOutput) -> None:
        """Gradients of the loss; with a unit-norm decoder, each row's gradient loses its
        component along the row (the constraint's tangent space; Gao et al., Bricken et al.)."""
        out.loss.backward()
        self.project_decoder_gradient()

    @torch.no_grad()
    def project_decoder_gradient(self) -> None:
        """Remove from each decoder row's gradient its component along the row."""
        grad = self.W_dec.grad
        if self.config.unit_norm_decoder and grad is not None:
            w = self.W_dec.detach()
            grad.sub_(((grad * w).sum(1, keepdim=True) / w.pow(2).sum(1, keepdim=True)) * w)

    @torch.no_grad()
    def after_step(self) -> None:
        """Back onto the constraint after the optimiser step: unit-norm decoder rows."""
        if self.config.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    # ---------------------------------------------------------------- saving
    @torch.no_grad()
    def folded_state_dict(self) -> dict[str, torch.Tensor]:
        """The state with the normalisation folded into the weights (scales 1): a model loaded
        from it (`load_state_dict`) gives the same outputs on raw activations. Pre-activations
        are unchanged, so thresholds carry over; decoder rows then have norm 1 / s_out, so the
        folded state is for inference and export, not for further training."""
        s_in, s_out = self.input_scale, self.target_scale
        state = {name: t.detach().clone() for name, t in self.state_dict().items()}
        state["W_enc"] = state["W_enc"] * s_in
        state["W_dec"] = state["W_dec"] / s_out
        state["b_dec"] = state["b_dec"] / s_out
        if self.config.skip:
            state["W_skip"] = state["W_skip"] * (s_in / s_out)
        state["input_scale"] = torch.ones_like(s_in)
        state["target_scale"] = torch.ones_like(s_out)
        return state


def unit_mean_square_scale(x: torch.Tensor) -> float:
    """s with E|s x|^2 = 1."""
    mean_square = float(x.double().pow(2).sum(1).mean())
    if mean_square <= 0:
        raise AekitError("the activation sample is all zeros: it cannot be normalised")
    return 1.0 / math.sqrt(mean_square)
