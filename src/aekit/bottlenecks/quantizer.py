"""The quantizer protocol: discrete bottlenecks that code each latent vector by indices.

The flat latent (B, latent_dim) is read as `positions` vectors of `code_dim` each (with the
`grid` body, one vector per position of the last feature map). A quantizer maps each vector to
the nearest point of its codebook (explicit, as in VQ, or implicit, as in FSQ/LFQ/BSQ) and names
that point by `slots` integer indices (1 for VQ and FSQ, one per stage for residual VQ, one per
group for product VQ). The decoder sees the quantized vectors; the gradient reaches the encoder
through a straight-through estimator (or the rotation trick). Auxiliary losses (commitment,
codebook, entropy) are per vector and summed over the positions of an example.

`encode_indices` / `codes_from_indices` are the exact maps between an example's latent and its
(positions, slots) index array, which compression entropy-codes.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

from aekit.bottlenecks.base import Bottleneck, BottleneckOutput
from aekit.components import Dims
from aekit.errors import AekitError


@dataclass
class Quantized:
    """One quantization of N vectors."""

    z_q: torch.Tensor
    """The quantized vectors (N, code_dim), carrying the estimator's gradient to the input."""
    indices: torch.Tensor
    """The code of each vector, (N, slots), int64."""
    losses: dict[str, torch.Tensor]
    """Auxiliary losses per vector, (N,) each, already weighted."""


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The value of q with the gradient of the identity in x (van den Oord et al. 2017)."""
    return x + (q - x).detach()


def rotation_trick(x: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The value of q, reached from x by a rotation and rescaling held constant in backprop
    (Fifty et al. 2024): lambda * R x with R = I - 2 w w^T + 2 q^ u^T, u = x/|x|, q^ = q/|q|,
    w = (u + q^)/|u + q^|, lambda = |q|/|x|. R maps u to q^, so the output equals q, and the
    gradient to x is (lambda R)^T times the incoming gradient: it carries the angle and the
    relative size of x and its code."""
    x_norm = x.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True)
    u = (x / x_norm).detach()
    q_hat = (q / q_norm.clamp_min(eps)).detach()
    w = u + q_hat
    w = (w / w.norm(dim=-1, keepdim=True).clamp_min(eps)).detach()
    scale = (q_norm / x_norm).detach()
    rotated = x - 2 * w * (w * x).sum(-1, keepdim=True) + 2 * q_hat * (u * x).sum(-1, keepdim=True)
    out = scale * rotated
    # Where x and q point in opposite directions the rotation is undefined (w = 0); fall back
    # to the straight-through estimator there. Its value is q either way.
    opposite = (u + q_hat).norm(dim=-1, keepdim=True) < eps
    return torch.where(opposite, straight_through(x, q), out)


def validate_indices(
    indices: torch.Tensor,
    positions: int,
    codebook_sizes: tuple[int, ...],
    *,
    prefix: bool = False,
    owner: str = "",
) -> torch.Tensor:
    """`indices` as int64 (N, positions, slots), every index within its slot's codebook; with
    `prefix`, also the first 1..slots-1 slots alone (residual VQ's coarser codes). (N,
    positions) is read as one slot. Anything else is an AekitError naming the fault."""
    idx = torch.as_tensor(indices)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise AekitError(f"indices must be integers (got {idx.dtype})")
    slots = len(codebook_sizes)
    if idx.ndim == 2 and slots == 1:
        idx = idx.unsqueeze(-1)
    width_ok = idx.ndim == 3 and (idx.shape[2] == slots or (prefix and 1 <= idx.shape[2] < slots))
    if not width_ok or idx.shape[1] != positions:
        expects = f"{owner} expects" if owner else "expected"
        raise AekitError(
            f"indices have shape {tuple(idx.shape)}; {expects} (N, {positions}, {slots})"
        )
    idx = idx.long()
    for s in range(idx.shape[2]):
        column, size = idx[..., s], codebook_sizes[s]
        bad = (column < 0) | (column >= size)
        if bool(bad.any()):
            raise AekitError(
                f"index {int(column[bad][0])} in slot {s} is outside the codebook 0..{size - 1}"
            )
    return idx


class Quantizer(Bottleneck):
    """Subclasses define `codebook_sizes`, `quantize` and `lookup`; their Options give the
    vector width as `vector_width`."""

    truncatable = False
    """Whether a prefix of the slots is itself a valid, coarser code (residual VQ)."""
    codes_positions = True  # VQ-VAE's layout; QLAE's quantizes one flat latent as a whole

    def __init__(self, options, dims: Dims) -> None:
        super().__init__(options, dims)
        self.code_dim = int(self.vector_width(options, dims))
        if self.code_dim < 1:
            raise AekitError(f"the code vectors need at least 1 dimension (got {self.code_dim})")
        if dims.latent_dim % self.code_dim:
            raise AekitError(
                f"latent_dim ({dims.latent_dim}) must be a multiple of the {self.kind} code "
                f"width ({self.code_dim})"
            )
        self.positions = dims.latent_dim // self.code_dim

    @staticmethod
    def vector_width(options, dims: Dims) -> int:
        """The width of each code vector: the options' `vector_width` (a scalar codebook per
        latent, QLAE's, codes the whole latent as one vector)."""
        return options.vector_width

    @property
    @abstractmethod
    def codebook_sizes(self) -> tuple[int, ...]:
        """Number of codes of each slot."""

    @property
    def slots(self) -> int:
        return len(self.codebook_sizes)

    @abstractmethod
    def quantize(self, v: torch.Tensor) -> Quantized:
        """Quantize vectors (N, code_dim). In training mode this may also update the codebook
        (EMA, restarts)."""

    @abstractmethod
    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The vectors (N, code_dim) named by valid indices (N, slots) (or a prefix of the slots
        for truncatable quantizers)."""

    def forward(
        self, h: torch.Tensor, samples: int = 1, step: int | None = None
    ) -> BottleneckOutput:
        b = h.shape[0]
        q = self.quantize(h.reshape(b * self.positions, self.code_dim))
        z = q.z_q.reshape(b, self.latent_dim)
        losses = {name: v.reshape(b, self.positions).sum(1) for name, v in q.losses.items()}
        return BottleneckOutput(
            z=z if samples == 1 else z.repeat(samples, 1),
            code=z,
            samples=samples,
            losses=losses,
            # The encoder output is kept (not copied) so that evaluation can measure the
            # quantisation error |h - z_q|^2 without training paying for it.
            params={"indices": q.indices.reshape(b, self.positions, self.slots), "features": h},
        )

    @torch.no_grad()
    def encode_indices(self, h: torch.Tensor) -> torch.Tensor:
        """The indices (B, positions, slots) of encoder features h (B, latent_dim)."""
        was_training = self.training
        self.eval()
        try:
            q = self.quantize(h.reshape(-1, self.code_dim))
        finally:
            self.train(was_training)
        return q.indices.reshape(h.shape[0], self.positions, self.slots)

    def check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """`indices` as int64 (B, positions, slots'), or a clear error naming what is wrong."""
        return validate_indices(
            indices, self.positions, self.codebook_sizes, prefix=self.truncatable
        )

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """The latents (B, latent_dim) the decoder sees for indices (B, positions, slots)."""
        device = next(self.buffers(), next(self.parameters(), torch.empty(0))).device
        idx = self.check_indices(indices).to(device)
        b = idx.shape[0]
        return self.lookup(idx.reshape(b * self.positions, -1)).reshape(b, self.latent_dim)
