"""The body protocol: a registered kind that builds an (encoder, decoder) pair.

A body turns x (and a condition, when the model has one) into the features its bottleneck
consumes, and latents back into the likelihood's parameters, shaped like the target. Bodies
are generic: they know the data's shape and the widths they must produce, nothing about the
family they serve. A new body is one file with a class registered here, whose `Options`
dataclass gives its flags (`aekit train MODEL --body KIND --help`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import nn

from aekit.components import Dims, NoOptions, Registry
from aekit.errors import AekitError

ACTIVATIONS = ("relu", "silu", "gelu", "elu", "leaky_relu", "tanh", "gdn")

MAX_LAYER_PARAMETERS = 2**31
"""The most parameters one layer may hold. Past 2**31 elements a tensor's offsets overflow the
32-bit indices that many kernels use, and in float32 such a layer is 8 GiB, twice that with its
gradient and four times with Adam's moments: a layer that size is a shape mistake (a dense
layer over millions of input features), so it is refused by name before anything is
allocated rather than failing in the allocator or the out-of-memory killer."""


def check_layer(n_in: int, n_out: int, what: str, per_weight: int = 1, bias: bool = True) -> None:
    """Refuse a layer from n_in to n_out features (`per_weight` weights each, a conv's kernel
    area) that would hold more than MAX_LAYER_PARAMETERS parameters. `what` names it."""
    count = n_in * n_out * per_weight + (n_out if bias else 0)
    check_parameters(count, f"{what} ({n_in:,} -> {n_out:,})")


def check_parameters(count: int, what: str) -> None:
    """Refuse one tensor of parameters larger than MAX_LAYER_PARAMETERS, naming it."""
    if count > MAX_LAYER_PARAMETERS:
        raise AekitError(
            f"{what} would need {count:,} parameters, more than the "
            f"{MAX_LAYER_PARAMETERS:,} one layer may hold: give the data fewer features "
            "(crop, pool, select) or the layer fewer units"
        )


class Body(ABC):
    """A factory of encoder/decoder pairs (not a module itself)."""

    Options = NoOptions
    kind: str

    @classmethod
    def check(cls, options, input_shape: tuple[int, ...]) -> None:
        """Raise an AekitError when this body cannot take data of this shape (any shape by
        default: the body flattens it)."""
        return None

    @classmethod
    def resolve(cls, options, input_shape: tuple[int, ...]) -> str:
        """The kind that actually builds the networks (`auto` picks one by the shape)."""
        cls.check(options, input_shape)
        return cls.kind

    @classmethod
    def check_size(cls, options, dims: Dims, condition_dim: int) -> None:
        """Refuse (`check_layer`) networks too large for these dims before the model builds
        any part: bodies whose weights scale with the latent count override it, since the
        bottleneck's buffers, built first, scale with it too. (Layered bodies check each
        layer as they build it.)"""
        return None

    @classmethod
    def latent_grid(cls, options, input_shape: tuple[int, ...]) -> tuple[int, int] | None:
        """(h, w) when the latent is a grid of vectors, one per position of a feature map
        (flattened position-major); None: a flat latent."""
        return None

    @classmethod
    def default_latent_dim(cls, options, input_shape: tuple[int, ...]) -> int | None:
        """The latent width when the user gives none (None: the model's default)."""
        return None

    @classmethod
    @abstractmethod
    def build(
        cls, options, dims: Dims, in_features: int, condition_dim: int
    ) -> tuple[nn.Module, nn.Module]:
        """An encoder x[, condition] -> (B, in_features) features and a decoder
        [z, condition] -> (B, *dims.target_shape); the decoder's input is z with the
        condition concatenated."""


NETS: Registry[Body] = Registry("body")


@dataclass
class LayerOptions:
    """The options of the layered bodies (mlp, conv, grid, and auto, which picks one)."""

    hidden: tuple[int, ...] | None = None
    """Widths of the fully connected layers: the whole MLP body (default 512,256), or the
    layers between the conv stack and the latent (default 256)."""
    channels: tuple[int, ...] = (32, 64)
    """Conv and grid bodies: output channels of each stride-2 stage (each halves the image
    size)."""
    upsample: str = "transpose"
    """Conv decoder: `transpose` (stride-2 transposed convs) or `nearest` (upsample + conv)."""
    activation: str = "relu"
    """Non-linearity: relu, silu, gelu, elu, leaky_relu, tanh, or gdn (the grid body's stages:
    GDN in the encoder, IGDN in the decoder, as in learned image codecs)."""

    def __post_init__(self) -> None:
        if self.hidden is not None:
            self.hidden = tuple(int(h) for h in self.hidden)
            if any(h < 1 for h in self.hidden):
                raise AekitError(f"hidden widths must be positive (got {self.hidden})")
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c < 1 for c in self.channels):
            raise AekitError(f"channels must be positive and non-empty (got {self.channels})")
        if self.upsample not in ("transpose", "nearest"):
            raise AekitError(f"upsample must be transpose or nearest (got {self.upsample!r})")
        if self.activation not in ACTIVATIONS:
            raise AekitError(
                f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}"
            )


@NETS.register("custom")
class Custom(Body):
    """Modules the user passed to `aekit.build(..., encoder=, decoder=)`: recorded so that a
    reload asks for them again."""

    Options = LayerOptions

    @classmethod
    def build(cls, options, dims, in_features, condition_dim):
        raise AekitError(
            "this model was built with a custom encoder/decoder: pass them again, "
            "e.g. aekit.load(run, encoder=..., decoder=...)"
        )
