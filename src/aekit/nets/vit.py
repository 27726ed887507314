"""A Vision Transformer body (Dosovitskiy et al. 2021), with an MAE-style decoder (He et al. 2022).

    x (B, C, H, W) -> patches of p x p -> (B, N, width) tokens, N = (H/p)(W/p)
    tokens + fixed 2-D sine-cosine positions -> pre-norm blocks -> LayerNorm
    encoder: mean over the tokens -> Linear -> the bottleneck's features
    decoder: z -> Linear -> N tokens of decoder_width + positions -> blocks -> LayerNorm
             -> Linear to p*p*C values per token -> folded back to (B, C, H, W)

A block is pre-norm: t + Attention(LN(t)), then t + MLP(LN(t)), the MLP being Linear, GELU,
Linear. Positions are fixed, not learned (as in MAE), so they are buffers and never saved.
With `token_decoder` (the masked autoencoder, He et al. 2022) the code is one per patch:

    encoder: a `Masked` image -> its visible patches alone through the blocks -> the head on
             each token -> `Tokens` (B, n, latent_dim); a plain image -> the pooled code
    decoder: Tokens -> Linear to decoder_width, placed on the grid among a learned mask token
             -> + positions -> blocks -> every patch predicted

The head is affine, so the pooled code head(mean of the tokens) equals the mean of the
per-token codes the decoder reads: `model.encode(x)` is the mean over every patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aekit.components import Dims
from aekit.errors import AekitError
from aekit.nets.base import NETS, Body, check_layer
from aekit.patches import Masked, Tokens, unpatchify


@dataclass
class ViTOptions:
    patch: int = 4
    """Side of the square patches, in pixels. Dosovitskiy et al. 2021 use 16x16 patches on
    224x224 images (14x14 tokens); 4 keeps a similar grid (7x7, 8x8) on 28-32 px images."""
    depth: int = 4
    """Transformer blocks of the encoder: ViT-Base has 12 (Dosovitskiy et al. 2021, Table 1);
    4 is a small model for small images."""
    width: int = 128
    """Token width of the encoder: ViT-Base has 768 (Dosovitskiy et al. 2021, Table 1); 128
    scales it down with the depth. Divisible by heads and by 4 (the sine-cosine positions)."""
    heads: int = 4
    """Attention heads, in the encoder and the decoder: ViT-Base has 12 of width 64
    (Dosovitskiy et al. 2021, Table 1); 4 heads of 32 here."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's MLP as a multiple of the token width: 4 in every ViT
    (Dosovitskiy et al. 2021, Table 1: 3072 = 4 x 768) and in MAE (He et al. 2022)."""
    decoder_depth: int = 2
    """Transformer blocks of the decoder. MAE's decoder is light (8 blocks against ViT-L's
    24) and its ablation finds fine-tuning accuracy nearly flat down to one or two blocks
    (He et al. 2022, Table 1a)."""
    decoder_width: int = 64
    """Token width of the decoder: narrower than the encoder, as MAE's (512 against ViT-L's
    1024; He et al. 2022, Table 1b); half of width here. Divisible by heads and by 4."""
    token_decoder: bool = False
    """The decoder reads one code per visible patch and a learned mask token for the others
    (a masked autoencoder, He et al. 2022), instead of one pooled code for the image. Such a
    decoder cannot decode a pooled code alone: it reconstructs, it does not generate."""

    def __post_init__(self) -> None:
        for name in ("patch", "depth", "width", "heads", "decoder_depth", "decoder_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AekitError(f"{name} must be a positive integer (got {value!r})")
        self.mlp_ratio = float(self.mlp_ratio)
        if not self.mlp_ratio > 0:
            raise AekitError(f"mlp_ratio must be positive (got {self.mlp_ratio})")
        for name in ("width", "decoder_width"):
            value = getattr(self, name)
            if value % self.heads:
                raise AekitError(f"{name} ({value}) must be divisible by heads ({self.heads})")
            if value % 4:
                raise AekitError(
                    f"{name} ({value}) must be divisible by 4 for the sine-cosine positions"
                )


MASK_TOKEN_STD = 0.02
"""The mask token's initial scale: a normal draw of std 0.02, as in MAE's reference code."""


def sincos_2d(grid_h: int, grid_w: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings, (grid_h * grid_w, width), row-major (token
    r * grid_w + c is the patch at row r, column c), as in MAE's reference code.

    The first width/2 channels encode the row r, the last width/2 the column c. Each half,
    of d = width/2 channels, is the 1-D embedding of Vaswani et al. 2017 at frequencies
    w_i = 1 / 10000^(2i/d), i = 0 .. d/2 - 1:

        emb(pos) = [sin(pos w_0), ..., sin(pos w_{d/2-1}), cos(pos w_0), ..., cos(pos w_{d/2-1})]
    """
    if width % 4:
        raise AekitError(f"sine-cosine positions need a width divisible by 4 (got {width})")
    d = width // 2
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) * 2 / d)

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    return torch.cat([one_d(rows.flatten()), one_d(cols.flatten())], dim=1).float()


class Block(nn.Module):
    """Pre-norm transformer block: t + Attention(LN(t)), then t + MLP(LN(t))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(width * mlp_ratio))
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        q, k, v = self.qkv(self.norm1(t)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        t = t + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return t + self.mlp(self.norm2(t))


def blocks(depth: int, width: int, heads: int, mlp_ratio: float) -> nn.Sequential:
    return nn.Sequential(*(Block(width, heads, mlp_ratio) for _ in range(depth)))


class ViTEncoder(nn.Module):
    """Image -> patch tokens + positions -> blocks -> LayerNorm -> the mean of the tokens
    (no class token: average pooling serves as well, Dosovitskiy et al. 2021's appendix on
    head types) -> Linear to `out_features`; a condition joins the pooled vector."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        options: ViTOptions,
        out_features: int,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        p, width = options.patch, options.width
        check_layer(c, width, "the patch embedding", per_weight=p * p)
        check_layer(width + condition_dim, out_features, "the encoder's head")
        self.embed = nn.Conv2d(c, width, kernel_size=p, stride=p)
        self.register_buffer("position", sincos_2d(h // p, w // p, width), persistent=False)
        self.blocks = blocks(options.depth, width, options.heads, options.mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width + condition_dim, out_features)

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The normed patch tokens (B, N, width), or (B, n, width) of the patches `keep`
        (B, n) indexes (row-major): each kept patch carries its own position, and only
        those n tokens enter the blocks."""
        t = self.embed(x).flatten(2).transpose(1, 2) + self.position
        if keep is not None:
            if keep.dim() != 2 or keep.shape[0] != t.shape[0]:
                raise AekitError(
                    f"keep must be (batch, n) patch indices, (got {tuple(keep.shape)} for a "
                    f"batch of {t.shape[0]})"
                )
            t = t.gather(1, keep[:, :, None].expand(-1, -1, t.shape[2]))
        return self.norm(self.blocks(t))

    def forward(
        self, x: torch.Tensor | Masked, condition: torch.Tensor | None = None
    ) -> torch.Tensor | Tokens:
        """The pooled code (B, out_features) of images, or the per-patch codes `Tokens` of
        the visible patches of a `Masked` batch."""
        if isinstance(x, Masked):
            patches = self.position.shape[0]
            keep = x.keep_indices(patches)
            return Tokens(self.head(self.tokens(x.x, keep)), keep, patches)
        pooled = self.tokens(x).mean(1)
        return self.head(pooled if condition is None else torch.cat([pooled, condition], 1))


class ViTDecoder(nn.Module):
    """z -> a Linear to N tokens of decoder_width -> + positions -> blocks -> LayerNorm ->
    a Linear to p*p*C values per token -> the image (B, C, H, W), the likelihood's params.

    Each token gets its own projection of z (one Linear to N * decoder_width, as the conv
    decoder's dense head makes its first feature map): a single token broadcast to every
    position would leave the positions alone to tell the tokens apart. The fixed positions
    are added all the same, so the blocks see the encoder's geometry.

    With `token_decoder` the input is `Tokens`: each visible patch's code is projected to
    decoder_width and put in its place, the hidden places get the shared mask token, and the
    positions tell them apart (He et al. 2022, section 3)."""

    def __init__(
        self, latent_dim: int, output_shape: tuple[int, int, int], options: ViTOptions
    ) -> None:
        super().__init__()
        c, h, w = output_shape
        p, width = options.patch, options.decoder_width
        self.grid, self.patch = (h // p, w // p), p
        n = self.grid[0] * self.grid[1]
        check_layer(width, c * p * p, "the decoder's patch head")
        self.width = width
        self.reads_tokens = options.token_decoder
        if self.reads_tokens:
            check_layer(latent_dim, width, "the decoder's token projection")
            self.token_in = nn.Linear(latent_dim, width)
            self.mask_token = nn.Parameter(torch.empty(1, 1, width))
            nn.init.normal_(self.mask_token, std=MASK_TOKEN_STD)
        else:
            check_layer(latent_dim, n * width, "the decoder's token projection")
            self.start = nn.Linear(latent_dim, n * width)
        self.register_buffer("position", sincos_2d(*self.grid, width), persistent=False)
        self.blocks = blocks(options.decoder_depth, width, options.heads, options.mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, c * p * p)

    def forward(self, z: torch.Tensor | Tokens) -> torch.Tensor:
        if self.reads_tokens != isinstance(z, Tokens):
            raise AekitError(
                "this vit decoder reads the codes of patches (token_decoder): reconstruct an "
                "image with model.reconstruct(x); a pooled code alone cannot be decoded"
                if self.reads_tokens
                else "this vit decoder reads one pooled code per image, not patch tokens"
            )
        if isinstance(z, Tokens):
            b, n = z.keep.shape[0], self.position.shape[0]
            values = self.token_in(z.values)
            places = z.keep[:, :, None].expand(-1, -1, self.width)
            t = self.mask_token.expand(b, n, self.width).scatter(1, places, values)
        else:
            t = self.start(z).view(z.shape[0], -1, self.width)
        t = t + self.position
        return unpatchify(self.out(self.norm(self.blocks(t))), self.grid, self.patch)


@NETS.register("vit")
class ViT(Body):
    """A Vision Transformer over p x p patches of images (C, H, W); the mean token is the
    feature vector, and a transformer decoder predicts every patch from z."""

    Options = ViTOptions

    @classmethod
    def check(cls, options, input_shape):
        if len(input_shape) != 3:
            raise AekitError(
                f"the vit body needs images of shape (C, H, W); the data has shape {input_shape}"
            )
        _, h, w = input_shape
        p = options.patch
        if h % p or w % p:
            raise AekitError(
                f"patch {p} does not divide the image size {h}x{w}; pass a --patch that does"
            )
        if (h // p) * (w // p) < 2:
            raise AekitError(
                f"patch {p} cuts a {h}x{w} image into {(h // p) * (w // p)} patch; the vit "
                "body needs at least 2: pass a smaller --patch"
            )

    @classmethod
    def default_latent_dim(cls, options, input_shape):
        # Per-patch codes as wide as the encoder's tokens: the head is then square, and the
        # pooled code keeps all the encoder's width for probes.
        return options.width if options.token_decoder else None

    @classmethod
    def check_size(cls, options, dims: Dims, condition_dim):
        cls.check(options, dims.target_shape)
        n = (dims.target_shape[1] // options.patch) * (dims.target_shape[2] // options.patch)
        if options.token_decoder:
            if condition_dim:
                raise AekitError(
                    "a vit token decoder (a masked autoencoder) takes no condition; train it "
                    "unconditionally"
                )
            if dims.paired:
                raise AekitError("a vit token decoder predicts the patches of its own input")
            n = 1
        check_layer(
            dims.latent_dim + condition_dim, n * options.decoder_width,
            "the decoder's token projection",
        )  # fmt: skip

    @classmethod
    def build(cls, options, dims, in_features, condition_dim):
        cls.check(options, dims.input_shape)
        if dims.paired:
            cls.check(options, dims.target_shape)
        encoder = ViTEncoder(dims.input_shape, options, in_features, condition_dim)
        decoder = ViTDecoder(dims.latent_dim + condition_dim, dims.target_shape, options)
        return encoder, decoder
