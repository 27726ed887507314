"""Images as grids of patches, and the input and code of a masked autoencoder (He et al. 2022).

A masked autoencoder hides most patches of each image, encodes the visible ones alone and
predicts the hidden ones. Two types carry that through the one model's parts:

    Masked(x, ratio)  the corruption's output: an image and which patches the encoder sees,
                      drawn by the encoder's first call (only the body knows the grid)
    Tokens(values, keep, patches)
                      the encoder's output: one code per visible patch, (B, n, d), and
                      their places on the grid; the decoder fills the rest with its mask token

Patches are laid out as the patch embedding's kernel reads them: (C, p, p) per patch, the
patches row-major over the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aekit import distributed
from aekit.errors import AekitError

NORM_PIX_EPS = 1e-6
"""Added to a patch's variance before its square root in the normalised targets: the value of
MAE's reference code (He et al. 2022), which keeps flat patches (a black background) finite."""


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C * patch * patch), N = (H / patch)(W / patch)."""
    b, c, h, w = images.shape
    grid = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), -1)


def unpatchify(values: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """(B, N, C * patch * patch) per-patch values -> the image (B, C, H, W): the inverse of
    `patchify` for a grid of (rows, columns) patches."""
    b, (gh, gw) = values.shape[0], grid
    c = values.shape[2] // (patch * patch)
    image = values.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return image.reshape(b, c, gh * patch, gw * patch)


def patch_statistics(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch's mean and standard deviation sqrt(var + eps) over its values, (B, N, 1)
    each: the population variance, as MAE's normalised targets use it."""
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, unbiased=False, keepdim=True)
    return mean, (var + NORM_PIX_EPS).sqrt()


def normalise_patches(patches: torch.Tensor) -> torch.Tensor:
    """Each patch shifted to mean 0 and scaled to variance ~1 (MAE's `norm_pix_loss`)."""
    mean, std = patch_statistics(patches)
    return (patches - mean) / std


def visible_patches(patches: int, mask_ratio: float) -> int:
    """How many of `patches` the encoder sees at `mask_ratio`: MAE's int(N (1 - ratio)),
    and never none."""
    return max(1, int(patches * (1 - mask_ratio)))


@dataclass
class Masked:
    """An image batch and the patches its encoder sees. `keep` (B, n) indexes the visible
    patches (row-major); left None, it is drawn on the first `keep_indices` call by sorting
    per-example uniform noise (MAE's random masking), so every example hides its own
    `mask_ratio` of the patches."""

    x: torch.Tensor
    mask_ratio: float
    keep: torch.Tensor | None = None

    def keep_indices(self, patches: int) -> torch.Tensor:
        if self.keep is None:
            b, n = self.x.shape[0], visible_patches(patches, self.mask_ratio)
            if n == patches:  # nothing hidden: every patch, in order
                self.keep = torch.arange(patches, device=self.x.device).expand(b, -1)
            else:
                noise = distributed.rand_rows((b, patches), device=self.x.device)
                self.keep = noise.argsort(1)[:, :n]
        elif self.keep.dim() != 2 or self.keep.shape[0] != self.x.shape[0]:
            raise AekitError(
                f"a fixed mask must be (batch, visible) patch indices; got shape "
                f"{tuple(self.keep.shape)} for a batch of {self.x.shape[0]}"
            )
        elif self.keep.numel() and not 0 <= int(self.keep.min()) <= int(self.keep.max()) < patches:
            raise AekitError(f"a fixed mask names patches outside 0..{patches - 1}")
        return self.keep

    @classmethod
    def every_patch(cls, x: torch.Tensor) -> Masked:
        return cls(x, 0.0)


@dataclass
class Tokens:
    """Codes of the visible patches, (B, n, d), at the grid places `keep` (B, n) of a grid
    of `patches`. Their mean over the patches is the model's pooled code."""

    values: torch.Tensor
    keep: torch.Tensor
    patches: int

    def pooled(self) -> torch.Tensor:
        return self.values.mean(1)

    def hidden(self) -> torch.Tensor:
        """(B, patches) float: 1 where the patch was hidden from the encoder, else 0."""
        b = self.keep.shape[0]
        shown = torch.zeros(b, self.patches, device=self.keep.device, dtype=self.values.dtype)
        return 1 - shown.scatter_(1, self.keep, 1.0)
