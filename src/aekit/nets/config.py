"""Options of the encoder/decoder bodies."""

from __future__ import annotations

from dataclasses import dataclass

from aekit.errors import AekitError

ACTIVATIONS = ("relu", "silu", "gelu", "elu", "leaky_relu", "tanh")


@dataclass
class NetConfig:
    body: str = "auto"
    """`mlp`, `conv`, `grid` or `auto`: conv for images (C,H,W) of at least 16x16, else MLP;
    for quantizers, `grid` (a code vector per position of the last feature map) on images.
    (`custom` is recorded when the user passes their own modules.)"""
    hidden: tuple[int, ...] | None = None
    """Widths of the fully connected layers: the whole MLP body (default 512,256), or the
    layers between the conv stack and the latent (default 256)."""
    channels: tuple[int, ...] = (32, 64)
    """Conv body: output channels of each stride-2 stage (each halves the image size)."""
    upsample: str = "transpose"
    """Conv decoder: `transpose` (stride-2 transposed convs) or `nearest` (upsample + conv)."""
    activation: str = "relu"
    """Non-linearity: relu, silu, gelu, elu, leaky_relu, tanh."""

    def __post_init__(self) -> None:
        if self.hidden is not None:
            self.hidden = tuple(int(h) for h in self.hidden)
            if any(h < 1 for h in self.hidden):
                raise AekitError(f"hidden widths must be positive (got {self.hidden})")
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c < 1 for c in self.channels):
            raise AekitError(f"channels must be positive and non-empty (got {self.channels})")
        if self.body not in ("auto", "mlp", "conv", "grid", "custom"):
            raise AekitError(f"body must be auto, mlp, conv or grid (got {self.body!r})")
        if self.upsample not in ("transpose", "nearest"):
            raise AekitError(f"upsample must be transpose or nearest (got {self.upsample!r})")
        if self.activation not in ACTIVATIONS:
            raise AekitError(
                f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}"
            )
