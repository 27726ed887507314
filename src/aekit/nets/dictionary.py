"""The dictionary: the linear encoder and decoder of a sparse autoencoder (or transcoder).

With x and the target t scaled by constants s_in, s_out to unit mean squared norm:

    autoencoder  pre = W_enc (s_in x - b_dec) + b_enc
    transcoder   pre = W_enc (s_in x) + b_enc                   (b_dec is the output bias)
    t_hat = W_dec^T z + b_dec [+ W_skip s_in x],   output = t_hat / s_out

for the latents z the bottleneck makes of `pre`. Rows of W_dec (n, d_out) are the latents'
directions; with `unit_norm_decoder` they are kept at unit norm (the gradient loses its
component along each row, and rows are renormalised after every step; Bricken et al. 2023,
Gao et al. 2024). Losses live in the normalised space; `folded_state` moves s_in and s_out
into the weights, so a saved model runs on raw activations with scales 1.

The encoder returns its pre-activations lazily (`aekit.sparse.Preactivations`), so a k-sparse
bottleneck selects from the detached product and the backward touches only the selected rows;
the decoder decodes a sparse code (values, pattern) with an `embedding_bag` and never builds
the (B, n) code. The decoder owns b_dec, the scales and the skip; the encoder reads them from
its decoder (a reference that is not a submodule, so each tensor is saved once).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from aekit.errors import AekitError
from aekit.nets.base import NETS, Body, check_layer
from aekit.sparse import Preactivations, SparseCode, SparseLatents, Workspace, sparse_decode

B_DEC_INITS = ("geometric_median", "mean", "zeros")
KSPARSE_ENCODER_INIT_NORM = 1 / math.sqrt(3)
"""The initial encoder row norm of the k-sparse SAE recipes (`encoder_init_norm`): the row
norm of nn.Linear's default init, which the encoder keeps in Gao et al.'s reference code and
in sparsify (only the decoder copy is normalised). An exact transpose of the unit-norm decoder
makes the initial top-k reconstruction overshoot, since the selected directions all lean
towards the input: on MiniLM activations its least-squares scale is ~0.6, and after 264 steps
of 4,096 the held-out FVU was 0.237 at norm 1 against 0.207 at 0.577 and 0.209 at 0.4
(benchmarks/peers/vs_sparsify.py). Adam's steps do not scale with the weights either."""


@dataclass
class DictionaryOptions:
    expansion: int = 16
    """Latents per input dimension when latent_dim is not given."""
    unit_norm_decoder: bool = True
    """Keep decoder rows at unit norm (gradient projected, rows renormalised each step). The
    ReLU-L1 recipes turn it off: their decoder-norm-weighted L1 fixes the scale instead."""
    decoder_init_norm: float = 0.1
    """Norm of the initial decoder rows when they are not unit norm (Anthropic 2024: 0.1)."""
    b_dec_init: str = "geometric_median"
    """geometric_median (Bricken et al. 2023, Gao et al. 2024), mean or zeros of the target."""
    tied_init: bool = True
    """Initialise the encoder as the decoder's transpose (Gao et al.; Anthropic 2024)."""
    encoder_init_norm: float | None = None
    """Norm of the initial encoder rows (0: the decoder rows' norm, an exact transpose).
    None: set when the model is configured, 1/sqrt(3) (nn.Linear's default row norm) for a
    k-sparse bottleneck with a unit-norm decoder, else 0."""
    normalize: bool = True
    """Scale inputs and targets to unit mean squared norm, with constants fitted at
    initialisation and folded into the saved weights."""
    skip: bool = False
    """Transcoders: add a learned linear skip W_skip x (initialised at zero)."""

    def __post_init__(self) -> None:
        if self.expansion < 1:
            raise AekitError(f"expansion must be at least 1 (got {self.expansion})")
        if self.encoder_init_norm is not None and self.encoder_init_norm < 0:
            raise AekitError(f"encoder_init_norm must be >= 0 (got {self.encoder_init_norm})")
        if self.decoder_init_norm <= 0:
            raise AekitError(f"decoder_init_norm must be positive (got {self.decoder_init_norm})")
        if self.b_dec_init not in B_DEC_INITS:
            raise AekitError(f"unknown b_dec_init {self.b_dec_init!r}; choose from {B_DEC_INITS}")


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


def unit_mean_square_scale(x: torch.Tensor) -> float:
    """s with E|s x|^2 = 1."""
    mean_square = float(x.double().pow(2).sum(1).mean())
    if mean_square <= 0:
        raise AekitError("the activation sample is all zeros: it cannot be normalised")
    return 1.0 / math.sqrt(mean_square)


class DictionaryDecoder(nn.Module):
    """z (dense (B, n) or `SparseLatents`) -> the target in raw space, (B, *target_shape)."""

    reads_source = True
    """The forward takes the encoder's input too (`source`, for the transcoder's skip)."""
    decodes_sparse = True
    """The forward takes `SparseLatents` and `SparseCode`s without building the dense code."""

    def __init__(
        self,
        options: DictionaryOptions,
        n_latents: int,
        input_shape: tuple[int, ...],
        target_shape: tuple[int, ...],
        paired: bool,
    ) -> None:
        super().__init__()
        self.options = options
        self.paired = paired
        self.target_shape = tuple(target_shape)
        self.d_in, self.d_out = math.prod(input_shape), math.prod(target_shape)
        norm = 1.0 if options.unit_norm_decoder else options.decoder_init_norm
        self.W_dec = nn.Parameter(random_rows(n_latents, self.d_out, norm))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))
        if options.skip:
            self.W_skip = nn.Parameter(torch.zeros(self.d_out, self.d_in))
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("target_scale", torch.tensor(1.0))
        self.register_buffer("initialised", torch.tensor(False))
        self._initialised_seen = False

    # ------------------------------------------------------------ data-dependent initialisation
    def is_initialised(self) -> bool:
        if not self._initialised_seen:
            self._initialised_seen = bool(self.initialised)
        return self._initialised_seen

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._initialised_seen = False  # the loaded buffer decides again

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """From a sample of inputs (N, ...) [and paired targets]: the normalisation scales and
        b_dec (geometric median, mean or zeros of the scaled target)."""
        x = x.flatten(1).to(self.W_dec.dtype)
        t = x if target is None else target.flatten(1).to(x.dtype)
        if self.options.normalize:
            self.input_scale.fill_(unit_mean_square_scale(x))
            self.target_scale.fill_(
                unit_mean_square_scale(t) if target is not None else self.input_scale
            )
        t = t * self.target_scale
        init = self.options.b_dec_init
        if init == "geometric_median":
            self.b_dec.copy_(geometric_median(t))
        elif init == "mean":
            self.b_dec.copy_(t.mean(0))
        else:
            self.b_dec.zero_()
        self.initialised.fill_(True)
        self._initialised_seen = True

    # ------------------------------------------------------------ decoding
    def directions(self, z: torch.Tensor | SparseLatents) -> torch.Tensor:
        """W_dec^T z in the normalised space, without b_dec, the skip or the output scale:
        what AuxK fits the residual with, (B, d_out)."""
        if isinstance(z, SparseLatents):
            return sparse_decode(z.values, self.W_dec, z.pattern)
        if isinstance(z, SparseCode):
            return F.embedding_bag(z.indices, self.W_dec, per_sample_weights=z.values, mode="sum")
        return z @ self.W_dec

    def prefix_directions(
        self, z: torch.Tensor | SparseLatents, starts: torch.Tensor
    ) -> torch.Tensor:
        """W_dec^T z restricted to the latents of each group [0, s_1), [s_1, s_2), ...,
        [s_G-1, n), (B, G, d_out), normalised, without bias (Matryoshka's partial sums)."""
        groups = starts.numel() + 1
        if isinstance(z, SparseLatents):
            bags = z.pattern.grouped(starts)
            return sparse_decode(z.values, self.W_dec, bags).view(-1, groups, self.d_out)
        bounds = [0, *starts.tolist(), self.W_dec.shape[0]]
        return torch.stack([z[:, a:b] @ self.W_dec[a:b] for a, b in itertools.pairwise(bounds)], 1)

    def add_biases(self, t_hat: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        """W_dec^T z (B, [G,] d_out) -> the normalised output: + b_dec, + the skip W_skip s_in x
        (which reads the encoder's input, `source`)."""
        t_hat = t_hat + self.b_dec
        if self.options.skip:
            if source is None:
                raise AekitError("a transcoder with a skip connection needs its input to decode")
            x_n = source.flatten(1).to(self.W_dec.dtype) * self.input_scale
            skip = F.linear(x_n, self.W_skip)
            t_hat = t_hat + (skip if t_hat.dim() == 2 else skip[:, None])
        return t_hat

    def forward(
        self, z: torch.Tensor | SparseLatents | SparseCode, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        t_hat = self.add_biases(self.directions(z), source) / self.target_scale
        return t_hat.view(-1, *self.target_shape)

    def output_directions(self) -> torch.Tensor:
        """Each latent's direction in the raw target space, (n, d_out)."""
        return self.W_dec.detach() / self.target_scale

    def row_norms(self) -> torch.Tensor:
        """|W_dec,i| in the normalised space, (n,) (the weights of the L1 penalty)."""
        return self.W_dec.norm(dim=1)

    # ------------------------------------------------------------ the unit-norm constraint
    @torch.no_grad()
    def after_backward(self) -> None:
        """Remove from each decoder row's gradient its component along the row (the
        constraint's tangent space)."""
        grad = self.W_dec.grad
        if self.options.unit_norm_decoder and grad is not None:
            w = self.W_dec.detach()
            # einsum runs the row dots as a batched matrix product, with no (n, d) temporary:
            # 17 ms against 65 for (grad * w).sum(1) at n = 24,576, d = 384, 1 thread
            # (benchmarks/decoder_projection.py).
            along = torch.einsum("nd,nd->n", grad, w) / torch.einsum("nd,nd->n", w, w)
            grad.addcmul_(w, along[:, None], value=-1)

    @torch.no_grad()
    def after_step(self) -> None:
        """Back onto the constraint after the optimiser step: unit-norm decoder rows."""
        if self.options.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    # ------------------------------------------------------------ saving
    @torch.no_grad()
    def folded_state(self) -> dict[str, torch.Tensor]:
        """The state with s_out (and the skip's s_in) folded into the weights, scales 1: the
        same outputs on raw inputs. Decoder rows then have norm 1 / s_out, so the folded state
        is for inference and export, not for further training."""
        s_in, s_out = self.input_scale, self.target_scale
        state = {name: t.detach().clone() for name, t in self.state_dict().items()}
        state["W_dec"] = state["W_dec"] / s_out
        state["b_dec"] = state["b_dec"] / s_out
        if self.options.skip:
            state["W_skip"] = state["W_skip"] * (s_in / s_out)
        state["input_scale"] = torch.ones_like(s_in)
        state["target_scale"] = torch.ones_like(s_out)
        return state


class DictionaryEncoder(nn.Module):
    """x (B, ...) -> `Preactivations` of W_enc (s_in x [- b_dec]) + b_enc, (B, n)."""

    def __init__(
        self, options: DictionaryOptions, decoder: DictionaryDecoder, init_norm: float
    ) -> None:
        super().__init__()
        n, d_in = decoder.W_dec.shape[0], decoder.d_in
        tied = options.tied_init and decoder.d_in == decoder.d_out
        encoder_norm = options.encoder_init_norm or init_norm  # None or 0: the transpose
        self.W_enc = nn.Parameter(
            decoder.W_dec.detach() * (encoder_norm / init_norm)
            if tied
            else random_rows(n, d_in, encoder_norm)
        )
        self.b_enc = nn.Parameter(torch.zeros(n))
        # Not a submodule: the decoder's tensors belong to the decoder (saved once).
        self._decoder = (decoder,)
        self.workspace = Workspace()

    @property
    def decoder(self) -> DictionaryDecoder:
        return self._decoder[0]

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """s_in x, minus b_dec for an autoencoder (the pre-encoder bias), flattened."""
        d = self.decoder
        x_n = x.flatten(1).to(self.W_enc.dtype) * d.input_scale
        return x_n if d.paired else x_n - d.b_dec

    def forward(self, x: torch.Tensor) -> Preactivations:
        """In training mode the detached pre-activations are written into one buffer reused
        every step (`aekit.sparse.Workspace`); evaluation allocates afresh and keeps nothing."""
        workspace = self.workspace if self.training else None
        return Preactivations(self.encoder_input(x), self.W_enc, self.b_enc, workspace)

    def train(self, mode: bool = True) -> DictionaryEncoder:
        if not mode:
            self.workspace.release()
        return super().train(mode)

    @torch.no_grad()
    def folded_state(self) -> dict[str, torch.Tensor]:
        """W_enc s_in: pre-activations of raw inputs are unchanged, so thresholds carry over."""
        state = {name: t.detach().clone() for name, t in self.state_dict().items()}
        state["W_enc"] = state["W_enc"] * self.decoder.input_scale
        return state


@NETS.register("dictionary")
class Dictionary(Body):
    """A sparse autoencoder's linear encoder and decoder over flattened inputs."""

    Options = DictionaryOptions

    @classmethod
    def check(cls, options, input_shape):
        pass

    @classmethod
    def default_latent_dim(cls, options, input_shape):
        return options.expansion * math.prod(input_shape)

    @classmethod
    def check_size(cls, options, dims, condition_dim):
        d_in, d_out = math.prod(dims.input_shape), math.prod(dims.target_shape)
        check_layer(dims.latent_dim, d_out, "the dictionary's decoder")
        check_layer(d_in, dims.latent_dim, "the dictionary's encoder")
        if options.skip:
            check_layer(d_in, d_out, "the transcoder's skip connection", bias=False)

    @classmethod
    def build(cls, options, dims, in_features, condition_dim):
        cls.check_size(options, dims, condition_dim)
        if condition_dim:
            raise AekitError("the dictionary body takes no condition")
        if options.skip and not dims.paired:
            raise AekitError(
                "skip is a transcoder option: give a target site (--target-site) or drop --skip"
            )
        if in_features != dims.latent_dim:
            raise AekitError(
                f"the dictionary body gives one pre-activation per latent ({dims.latent_dim}); "
                f"this bottleneck consumes {in_features} features"
            )
        decoder = DictionaryDecoder(
            options, dims.latent_dim, dims.input_shape, dims.target_shape, dims.paired
        )
        norm = 1.0 if options.unit_norm_decoder else options.decoder_init_norm
        return DictionaryEncoder(options, decoder, norm), decoder
