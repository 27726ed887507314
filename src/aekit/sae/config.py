"""The sparse autoencoder's configuration: one dataclass, paper defaults, one-line errors.

Widths may be 0 until the data is known; `SAEConfig.resolved(d_in, d_out)` fills them (and
the latent count and AuxK's k) and checks what depends on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from aekit.components import SavedConfig
from aekit.errors import AekitError
from aekit.sae.activations import ACTIVATIONS

B_DEC_INITS = ("geometric_median", "mean", "zeros")
KSPARSE_ENCODER_INIT_NORM = 1 / math.sqrt(3)
"""The default initial encoder row norm of k-sparse SAEs (SAEConfig.encoder_init_norm)."""
SPARSE_DECODES = ("auto", "sparse", "dense")


@dataclass
class SAEConfig(SavedConfig):
    d_in: int = 0
    """Width of the input site (0: set from the data)."""
    d_out: int = 0
    """Width of the target: 0 is d_in (an autoencoder); a transcoder's output site may differ."""
    expansion: int = 16
    """Latents per input dimension when n_latents is 0."""
    n_latents: int = 0
    """Number of latents n (0: expansion * d_in)."""
    activation: str = "topk"
    """relu (L1, Anthropic 2024), topk (Gao et al. 2024), batchtopk (Bussmann et al. 2024),
    jumprelu (Rajamanoharan et al. 2024), abstopk (top-k by magnitude, sign kept)."""
    k: int = 32
    """Active latents per example for topk and abstopk, on average for batchtopk (Gao: 32)."""
    transcoder: bool = False
    """Predict a target from another site (Dunefsky et al. 2024) instead of the input itself."""
    skip: bool = False
    """Transcoder only: add a learned linear skip W_skip x (initialised at zero)."""
    matryoshka: tuple[int, ...] = ()
    """Nested prefix sizes m_1 < ... < n_latents: the loss averages the reconstruction error of
    each prefix of the dictionary (Bussmann et al. 2025); n_latents is the last prefix."""
    unit_norm_decoder: bool | None = None
    """Keep decoder rows at unit norm (gradient projected, rows renormalised each step).
    None: on except for relu, whose decoder-norm-weighted L1 fixes the scale instead."""
    decoder_init_norm: float = 0.1
    """Norm of the initial decoder rows when they are not unit norm (Anthropic 2024: 0.1)."""
    b_dec_init: str = "geometric_median"
    """geometric_median (Bricken et al. 2023, Gao et al. 2024), mean or zeros of the target."""
    tied_init: bool = True
    """Initialise the encoder as the decoder's transpose (Gao et al.; Anthropic 2024)."""
    encoder_init_norm: float | None = None
    """Norm of the initial encoder rows (0: the decoder rows' norm, an exact transpose).
    None: 1/sqrt(3) ~ 0.577 for k-sparse activations (topk, batchtopk, abstopk) with
    unit-norm decoder rows, else 0. 1/sqrt(3) is the row norm of nn.Linear's default
    init, which the encoder keeps in Gao et al.'s reference code and in sparsify (only the
    decoder copy is normalised). An exact transpose makes the initial top-k reconstruction
    overshoot, since the selected directions all lean towards the input: on MiniLM
    activations its least-squares scale is ~0.6, and after 264 steps of 4,096 the held-out
    FVU was 0.237 at norm 1 against 0.207 at 0.577 and 0.209 at 0.4
    (benchmarks/peers/vs_sparsify.py). Adam's steps do not scale with the weights either."""
    normalize: bool = True
    """Scale inputs and targets to unit mean squared norm, with constants fitted at
    initialisation and folded into the saved weights."""
    l1_coefficient: float = 5.0
    """relu: lambda of the L1 penalty sum_i f_i |W_dec,i|, in Anthropic's units (inputs scaled
    to E|x|^2 = d): applied as lambda / sqrt(d_out) to our unit-norm inputs, the same
    objective divided by d_out."""
    l1_warmup_steps: int = 1000
    """relu: steps over which lambda grows linearly from 0 (Anthropic: the first 5% of training)."""
    aux_k: int = 0
    """AuxK: dead latents used to model the residual (0: d_in // 2, as in sparsify)."""
    aux_coefficient: float = 1 / 32
    """AuxK loss weight alpha (Gao et al.: 1/32); 0 turns AuxK off."""
    dead_tokens: int = 10_000_000
    """A latent that has not fired for this many training tokens is dead (Gao et al.: 10M)."""
    threshold_init: float = 0.001
    """jumprelu: initial threshold of every latent (Gemma Scope: 0.001)."""
    bandwidth: float = 0.001
    """jumprelu: width epsilon of the rectangle kernel of the threshold's pseudo-gradient
    (Gemma Scope: 0.001)."""
    l0_coefficient: float = 0.001
    """jumprelu: lambda of the L0 penalty on unit-norm inputs; latents then need to explain
    about lambda of squared error to fire (thresholds near sqrt(lambda))."""
    l0_warmup_steps: int = 10_000
    """jumprelu: steps over which lambda grows linearly from 0 (Gemma Scope: 10,000)."""
    threshold_decay: float = 0.99
    """batchtopk: decay of the moving average of the smallest selected activation, the
    threshold that replaces the batch top-k at inference."""
    sparse_decode: str = "auto"
    """auto | sparse | dense: sparse kernels over the k active latents, or plain autograd over
    the (batch, n_latents) code. auto: sparse for k-sparse activations with 8 k <= n."""
    recipe: str = ""
    """The recipe this configuration came from (informational)."""

    def __post_init__(self) -> None:
        spec = ACTIVATIONS[self.activation]  # unknown names raise here
        self.matryoshka = tuple(int(m) for m in self.matryoshka)
        if self.unit_norm_decoder is None:
            self.unit_norm_decoder = spec.unit_norm_default
        for name in ("d_in", "d_out", "n_latents", "aux_k", "l1_warmup_steps", "l0_warmup_steps"):
            if getattr(self, name) < 0:
                raise AekitError(f"{name} must be non-negative (got {getattr(self, name)})")
        for name in ("expansion", "k", "dead_tokens"):
            if getattr(self, name) < 1:
                raise AekitError(f"{name} must be at least 1 (got {getattr(self, name)})")
        for name in ("l1_coefficient", "aux_coefficient", "l0_coefficient"):
            if getattr(self, name) < 0:
                raise AekitError(f"{name} must be non-negative (got {getattr(self, name)})")
        if self.encoder_init_norm is not None and self.encoder_init_norm < 0:
            raise AekitError(f"encoder_init_norm must be >= 0 (got {self.encoder_init_norm})")
        for name in ("threshold_init", "bandwidth", "decoder_init_norm"):
            if getattr(self, name) <= 0:
                raise AekitError(f"{name} must be positive (got {getattr(self, name)})")
        if not 0.0 <= self.threshold_decay < 1.0:
            raise AekitError(f"threshold_decay must be in [0, 1) (got {self.threshold_decay})")
        if self.b_dec_init not in B_DEC_INITS:
            raise AekitError(f"unknown b_dec_init {self.b_dec_init!r}; choose from {B_DEC_INITS}")
        if self.sparse_decode not in SPARSE_DECODES:
            raise AekitError(
                f"unknown sparse_decode {self.sparse_decode!r}; choose from {SPARSE_DECODES}"
            )
        if self.sparse_decode == "sparse" and not spec.k_sparse:
            raise AekitError(
                f"sparse_decode='sparse' needs a k-sparse activation (topk, batchtopk, abstopk), "
                f"not {self.activation}; use 'auto' or 'dense'"
            )
        if self.skip and not self.transcoder:
            raise AekitError("skip is a transcoder option: set transcoder=True or skip=False")
        if not self.transcoder and self.d_out not in (0, self.d_in):
            raise AekitError(
                f"d_out={self.d_out} differs from d_in={self.d_in}: an autoencoder reconstructs "
                "its input; set transcoder=True to predict another site"
            )
        if any(b <= a for a, b in zip(self.matryoshka, self.matryoshka[1:], strict=False)):
            raise AekitError(f"matryoshka prefixes must increase (got {list(self.matryoshka)})")
        if self.matryoshka and self.matryoshka[0] < 1:
            raise AekitError(f"matryoshka prefixes must be positive (got {list(self.matryoshka)})")
        if self.n_latents or self.d_in:
            self._check_latents(self.n_latents or self.expansion * self.d_in)

    def _check_latents(self, n: int) -> None:
        if ACTIVATIONS[self.activation].k_sparse and self.k > n:
            raise AekitError(f"k={self.k} is larger than the number of latents ({n})")
        if self.matryoshka and self.matryoshka[-1] >= n:
            raise AekitError(
                f"matryoshka prefix {self.matryoshka[-1]} must be smaller than the number of "
                f"latents ({n}), which is always the last prefix"
            )

    def resolved(self, d_in: int = 0, d_out: int = 0) -> SAEConfig:
        """A copy with the widths, latent count and AuxK's k filled in (d_in and d_out from the
        arguments where they are given, else from this config)."""
        d_in = d_in or self.d_in
        if d_in < 1:
            raise AekitError("d_in is 0: set SAEConfig.d_in to the width of the input site")
        d_out = d_out or self.d_out or d_in
        out = replace(
            self,
            d_in=d_in,
            d_out=d_out,
            n_latents=self.n_latents or self.expansion * d_in,
            aux_k=self.aux_k or max(1, d_in // 2),
            encoder_init_norm=self.default_encoder_init_norm()
            if self.encoder_init_norm is None
            else self.encoder_init_norm,
        )
        out._check_latents(out.n_latents)
        return out

    def default_encoder_init_norm(self) -> float:
        """encoder_init_norm when it is None (see the field)."""
        if ACTIVATIONS[self.activation].k_sparse and self.unit_norm_decoder:
            return KSPARSE_ENCODER_INIT_NORM
        return 0.0

    @property
    def prefixes(self) -> tuple[int, ...]:
        """The matryoshka prefix sizes including n_latents (just n_latents without matryoshka)."""
        return (*self.matryoshka, self.n_latents)
