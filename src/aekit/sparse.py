"""Sparse codes and their kernels, in plain PyTorch (CPU and CUDA): what the sparse
bottlenecks (`bottlenecks/sparse.py`), the dictionary body (`nets/dictionary.py`) and the
sparse-coding objective share.

- `Pattern`: which (row, latent) entries of a batch of codes are non-zero;
- `SparseLatents`: a batch of sparse codes, one value per entry of a pattern (training);
  `SparseCode`: the padded (B, k) values and indices a user gets (inference);
- `Preactivations`: an encoder's output x W^T + b, computed lazily, so that a k-sparse
  bottleneck can select from the detached product and take gradients at the selected
  entries only (`sparse_preacts`); a plain tensor is wrapped the same way. In training the
  dictionary encoder writes the detached product into a reused `Workspace`;
- `topk_indices`: the k-sparse bottlenecks' exact selection (two stages on long CPU rows).

The kernels:

A batch of sparse codes is a compressed-row pattern: `crow` (R + 1,) row offsets and `col` (N,)
latent indices, ascending within each row, with one value per entry. With N = B k entries the
two halves of a TopK autoencoder cost O(N d) instead of O(B n d):

- `sparse_preacts` gathers the selected pre-activations pre[r, c] = x_r . W_enc[c] + b_enc[c].
  Its forward reads them from the dense pre-activations (the one B x n x d matmul a TopK
  encoder cannot avoid: every latent must be scored to pick the k largest), but its backward
  touches only the selected rows: grad W_enc[c] += g_rc x_r, grad b_enc[c] += g_rc,
  grad x_r += g_rc W_enc[c]. A dense backward instead scatters g into a (B, n) tensor and pays
  two more B x n x d matmuls.
- `sparse_decode` is x_hat_r = sum_c v_rc W_dec[c]: an `embedding_bag` forward; its backward
  gives grad v_rc = g_r . W_dec[c] (a sampled matmul) and a dense grad W_dec[c] += v_rc g_r.

The products with a sparse factor are `embedding_bag`s (a bag per output row, entries sorted
by that row; the transposed ones sort the entries by latent once per pattern), the sampled one
is `torch.sparse.sampled_addmm` on the pattern.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from aekit.precision import autocasting


class Pattern:
    """Which (row, latent) entries are non-zero: CSR offsets `crow` (R + 1,), latents `col` (N,)
    ascending within each row, over `n_cols` latents. Built once per batch under no_grad."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, n_cols: int) -> None:
        self.crow, self.col, self.n_cols = crow, col, n_cols

    @property
    def n_rows(self) -> int:
        return self.crow.numel() - 1

    @classmethod
    def from_topk(cls, indices: torch.Tensor, n_cols: int) -> Pattern:
        """From (B, k) indices, k per row (each row's indices distinct)."""
        b, k = indices.shape
        crow = torch.arange(0, b * k + 1, k, device=indices.device)
        return cls(crow, indices.sort(dim=1).values.reshape(-1), n_cols)

    @classmethod
    def from_flat(cls, flat: torch.Tensor, n_rows: int, n_cols: int) -> Pattern:
        """From positions r * n_cols + c of a (n_rows, n_cols) matrix, in any order."""
        flat = flat.sort().values
        rows = flat // n_cols
        return cls(_offsets(rows, n_rows), flat % n_cols, n_cols)

    @cached_property
    def row(self) -> torch.Tensor:
        """The row of every entry (N,)."""
        rows = torch.arange(self.n_rows, device=self.col.device)
        return torch.repeat_interleave(rows, self.crow.diff(), output_size=self.col.numel())

    @cached_property
    def by_col(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(perm, offsets): entries sorted by latent, and each latent's CSR offsets (n_cols + 1,),
        for the transposed products sum_r g_r ... into latent rows."""
        return self.col.argsort(), _offsets(self.col, self.n_cols)

    def grouped(self, starts: torch.Tensor) -> Pattern:
        """The same entries in R * G bags (row r, group g), where group g > 0 holds the latents
        from starts[g - 1] up to starts[g] (G = len(starts) + 1, group 0 starting at latent 0):
        one decode then gives every group's partial sum. Rows ascending, latents ascending
        within a row, so each bag's entries are contiguous."""
        groups = starts.numel() + 1
        bag = self.row * groups + torch.bucketize(self.col, starts, right=True)
        return Pattern(_offsets(bag, self.n_rows * groups), self.col, self.n_cols)

    def csr(self, like: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(self.col.shape, dtype=like.dtype, device=like.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(self.crow, self.col, ones, (self.n_rows, self.n_cols))

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """The (R, n_cols) matrix these entries describe (for tests and small batches)."""
        out = values.new_zeros(self.n_rows, self.n_cols)
        return out.index_put_((self.row, self.col), values, accumulate=True)


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """CSR offsets (n + 1,) of entries grouped by their key in [0, n): cumulated counts.
    index_add rather than bincount, which reads its maximum back from a GPU."""
    counts = torch.zeros(n + 1, dtype=torch.long, device=keys.device)
    counts.index_add_(0, keys + 1, torch.ones_like(keys))
    return counts.cumsum(0)


def _bag_sum(
    indices: torch.Tensor, table: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """out[r] = sum_{e in bag r} weights[e] table[indices[e]]."""
    return F.embedding_bag(
        indices, table, offsets, mode="sum", per_sample_weights=weights, include_last_offset=True
    )


def _transposed_bag_sum(pattern: Pattern, dense: torch.Tensor, values: torch.Tensor):
    """out[c] = sum_{entries (r, c)} values[e] dense[r], (n_cols, width)."""
    perm, offsets = pattern.by_col
    return _bag_sum(pattern.row[perm], dense, offsets, values[perm])


def _sampled_rows_dot(pattern: Pattern, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a[r] . b[c] for every entry (r, c), (N,), without the (R, n_cols) product."""
    return torch.sparse.sampled_addmm(pattern.csr(a), a, b.T, beta=0.0).values()


class _SparsePreacts(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pattern, pre):
        ctx.pattern = pattern
        ctx.save_for_backward(x, weight)
        if pre is not None and pre.dtype == x.dtype:  # a bf16 selection's: recomputed
            return pre[pattern.row, pattern.col]
        return _sampled_rows_dot(pattern, x, weight) + bias[pattern.col]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        p: Pattern = ctx.pattern
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _bag_sum(p.col, weight, p.crow, grad)
        if ctx.needs_input_grad[1]:
            grad_w = _transposed_bag_sum(p, x, grad)
        if ctx.needs_input_grad[2]:
            grad_b = grad.new_zeros(weight.shape[0]).index_add_(0, p.col, grad)
        return grad_x, grad_w, grad_b, None, None


class _SparseDecode(Function):
    @staticmethod
    def forward(ctx, values, weight, pattern):
        ctx.pattern = pattern
        ctx.save_for_backward(values, weight)
        return _bag_sum(pattern.col, weight, pattern.crow, values)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        values, weight = ctx.saved_tensors
        p: Pattern = ctx.pattern
        grad = grad.contiguous()
        grad_v = _sampled_rows_dot(p, grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = _transposed_bag_sum(p, grad, values) if ctx.needs_input_grad[1] else None
        return grad_v, grad_w, None


def sparse_preacts(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pattern: Pattern,
    pre: torch.Tensor | None = None,
) -> torch.Tensor:
    """The pre-activations x W^T + b at the pattern's entries, (N,), with a backward that only
    touches the selected latents. `pre`, when given, is that dense product already computed
    (without grad) for the selection; otherwise the entries are computed directly."""
    return _SparsePreacts.apply(x, weight, bias, pattern, None if pre is None else pre.detach())


def sparse_decode(values: torch.Tensor, weight: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """sum over each row's entries of value * weight[latent], (R, width); a dense grad for
    `weight`, no (R, n_cols) tensor in either direction."""
    return _SparseDecode.apply(values, weight, pattern)


# ----------------------------------------------------------------------------- selection

TOPK_BLOCK = 32
"""Block width of `topk_indices`'s two-stage selection."""
BLOCKED_TOPK_RATIO = 256
"""`topk_indices` selects in two stages when n >= BLOCKED_TOPK_RATIO * k, else calls
torch.topk. benchmarks/topk.py (4,096 rows, 2 shared CPU cores), the two stages' time over
torch.topk's with blocks of 32, at 1 / 2 threads: n/k = 128: 1.32 / 1.27 (slower); 256:
0.93-0.95 / 0.91-0.92; 384-512: 0.77-0.83 / 0.69-0.81; 768-1,024: 0.50-0.66 / 0.45-0.64
(k from 32 to 128; blocks of 16 were slower everywhere, of 64 slower below n/k = 512)."""


def topk_indices(score: torch.Tensor, k: int) -> torch.Tensor:
    """The positions (B, k) of each row's k largest entries of score (B, n), in no order: the
    same values as `score.topk(k, dim=1)`, and the same positions unless the k-th value is
    tied.

    On the CPU, for n >= BLOCKED_TOPK_RATIO * k, it selects in two stages, exact by
    construction: split each row into blocks of TOPK_BLOCK, keep the k blocks with the largest
    maxima, then the k largest entries among those k blocks. Why that loses nothing: let v_k be
    the row's k-th largest value and M_k the k-th largest block maximum. The k largest maxima
    are k distinct entries, so M_k <= v_k; an entry v >= v_k lies in a block whose maximum is
    >= v >= M_k, which is kept unless its maximum equals M_k, and then v = v_k (a tie at the
    k-th value). One pass of block maxima and two selections over short rows replace a
    partial sort of every long row."""
    n = score.shape[1]
    measured = score.device.type == "cpu"  # CUDA's topk is a radix select: not measured
    if not measured or n < BLOCKED_TOPK_RATIO * k or n % TOPK_BLOCK or not score.is_contiguous():
        return score.topk(k, dim=1, sorted=False).indices
    return two_stage_topk(score, k, TOPK_BLOCK)


def two_stage_topk(score: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """`topk_indices`'s two stages for a contiguous score whose width is a multiple of
    `block` (at least k blocks)."""
    b, n = score.shape
    blocked = score.view(b, n // block, block)
    blocks = blocked.amax(2).topk(k, dim=1, sorted=False).indices
    kept = blocked.gather(1, blocks[:, :, None].expand(b, k, block)).view(b, k * block)
    best = kept.topk(k, dim=1, sorted=False).indices
    return blocks.gather(1, best // block) * block + best % block


class Workspace:
    """One reusable (rows, cols) output, grown when a larger one is asked for: the dense
    pre-activations of a training step are written into the same pages every step instead of
    a fresh allocation (at 24,576 latents and 4,096 rows, 400 MB that the kernel would map and
    zero again each step)."""

    def __init__(self) -> None:
        self._tensor: torch.Tensor | None = None

    def take(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        t = self._tensor
        if (
            t is None
            or t.dtype != like.dtype
            or t.device != like.device
            or t.shape[1] != cols
            or t.shape[0] < rows
        ):
            t = self._tensor = like.new_empty(rows, cols)
        return t[:rows]

    def release(self) -> None:
        self._tensor = None


# ----------------------------------------------------------------------------- codes


class SparseCode(NamedTuple):
    """A batch of sparse codes as a user holds them: (B, k) each, zeros padding rows with
    fewer than k active latents."""

    values: torch.Tensor
    """(B, k) latent values."""
    indices: torch.Tensor
    """(B, k) int64 latent indices."""

    def dense(self, n_cols: int) -> torch.Tensor:
        """The (B, n_cols) code (padding entries add 0)."""
        out = self.values.new_zeros(self.values.shape[0], n_cols)
        return out.scatter_add(1, self.indices, self.values)


@dataclass
class SparseLatents:
    """A batch of sparse codes in training: one value per entry of `pattern` (values (N,),
    with their gradient path). Decoders that take them never build the (B, n) code."""

    values: torch.Tensor
    pattern: Pattern

    def dense(self) -> torch.Tensor:
        """The (B, n) code these entries describe."""
        return self.pattern.dense(self.values)

    def per_row(self, k: int) -> SparseCode:
        """(values, indices) as (B, k), for patterns with exactly k entries per row."""
        return SparseCode(self.values.view(-1, k), self.pattern.col.view(-1, k))


class Preactivations:
    """An encoder output h = x W^T + b (B, n), computed when asked: `dense()` with its
    gradient, `detached()` for choosing latents, `at(pattern)` the chosen entries with a
    backward that touches their rows only (or, once `dense()` exists, read from it).

    Given a `Workspace`, `detached()` writes into it: the tensor it returns is then valid only
    until the next forward that uses the same workspace (the dictionary encoder passes one in
    training mode only)."""

    def __init__(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        workspace: Workspace | None = None,
    ) -> None:
        self.x, self.weight, self.bias = x, weight, bias
        self.workspace = workspace
        self._dense: torch.Tensor | None = None
        self._detached: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.x.shape[0], self.weight.shape[0])

    def dense(self) -> torch.Tensor:
        if self._dense is None:
            self._dense = F.linear(self.x, self.weight, self.bias)
        return self._dense

    def detached(self) -> torch.Tensor:
        if self._dense is not None:
            return self._dense.detach()
        if self._detached is None:
            with torch.no_grad():
                # Under bf16 training the product that selects the code is bfloat16 (an out=
                # product would not autocast); the kept values are recomputed in float32.
                if self.workspace is None or autocasting(self.x.device):
                    self._detached = F.linear(self.x, self.weight, self.bias)
                else:
                    out = self.workspace.take(*self.shape, like=self.x)
                    self._detached = torch.addmm(self.bias, self.x, self.weight.T, out=out)
        return self._detached

    def at(self, pattern: Pattern) -> torch.Tensor:
        if self._dense is not None:
            return self._dense[pattern.row, pattern.col]
        return sparse_preacts(self.x, self.weight, self.bias, pattern, self.detached())


class TensorPreactivations(Preactivations):
    """Any encoder's output tensor behind the same interface (gathers are dense-backward)."""

    def __init__(self, h: torch.Tensor) -> None:
        self._dense = h
        self._detached = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._dense.shape)  # type: ignore[return-value]


def as_preactivations(h: torch.Tensor | Preactivations) -> Preactivations:
    return h if isinstance(h, Preactivations) else TensorPreactivations(h)
