"""Data parallelism on torch.distributed, built so that N ranks train the run one process would.

A run launched by `torchrun` has WORLD_SIZE > 1 in its environment; `start` joins the process
group (gloo on CPU, nccl on CUDA). The Trainer then keeps three rules, and with them a
distributed step equals a single-process step on the same global batch up to the order of
floating-point sums (tests/test_distributed.py checks weights and losses):

1. **One global batch.** Every rank draws the same batch order from (seed, epoch) and trains
   on its contiguous slice of each global batch (`split`), sizes differing by at most one row;
   every rank takes the same steps, so no collective waits on a rank that ran out of batches.
2. **One random stream.** Every rank keeps the same torch random state; a draw with a row
   axis (reparameterisation noise, corruption, masks) is made for the global batch and sliced
   (`per_row`), so the rows of rank r get the noise a single process gives them.
3. **Sums, not means.** A rank's per-example mean loss is weighted by its share of the rows
   and the gradients summed (`reduce_gradients`); running statistics are sums over ranks
   (`sum_`, `max_`, `min_`, `gather_rows`): VQ counts, sums, nearest vectors and k-means
   initialisation, SAE firing, BatchTopK's selection and threshold, an FVU's batch variance.

Collectives act only inside `sharded(...)`, which the Trainer enters around a training step,
and `evaluating()`, around validation (each rank evaluates its slice of every batch and the
evaluators' sums are reduced: `evaluation_batches`, `evaluation_sums`, `evaluation_moments`).
Outside them (the end of a run on rank 0, a single process) every helper here is the
identity, so code shared with inference never waits for another rank.

Objectives whose loss couples the rows of a batch in other ways (MMD and sliced Wasserstein
matching, the minibatch estimates of total correlation, FactorVAE's permutation, free bits)
compute that coupling over each rank's rows, as data-parallel training usually does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from aekit.errors import AekitError


@dataclass(frozen=True)
class Shard:
    """This rank's rows [start, stop) of a global batch of `total` rows."""

    rank: int
    world: int
    start: int
    stop: int
    total: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def fraction(self) -> float:
        """The weight of this rank's mean in the global batch's mean."""
        return self.rows / self.total


_shard: Shard | None = None
_evaluating = False


def launched() -> bool:
    """Whether this process is one rank of several (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialised() else 0


def world_size() -> int:
    return dist.get_world_size() if initialised() else 1


def is_writer() -> bool:
    """Only rank 0 writes the run directory, its checkpoints and its report."""
    return rank() == 0


def local_cuda_device() -> torch.device:
    """The GPU of this rank on its node (torchrun's LOCAL_RANK)."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def start(device: torch.device) -> bool:
    """Join the process group torchrun describes, once: nccl for CUDA, gloo otherwise (so a
    distributed run is testable on any machine). False when this is a single process."""
    if not launched():
        return False
    if initialised():
        return True
    if not dist.is_available():
        raise AekitError("this torch build has no torch.distributed: it cannot train on ranks")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def stop(*, together: bool = False) -> None:
    """Leave the process group; `together`: once every rank got here (gloo's threads may abort
    a process that leaves while a peer still talks to it). An error path leaves alone."""
    if initialised():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def split(total: int, rank: int, world: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous rows of `total`: rank order is row order, sizes differ by at
    most one, so a global batch's rows concatenated over ranks are the batch itself."""
    return total * rank // world, total * (rank + 1) // world


@contextlib.contextmanager
def sharded(total: int) -> Iterator[Shard | None]:
    """Within: this rank trains on its rows of a global batch of `total` rows, and the helpers
    below reduce across ranks. A single process gets None and no collectives."""
    global _shard
    if world_size() == 1:
        yield None
        return
    r, w = rank(), world_size()
    outer, _shard = _shard, Shard(r, w, *split(total, r, w), total)
    try:
        yield _shard
    finally:
        _shard = outer


@contextlib.contextmanager
def evaluating() -> Iterator[None]:
    """Within, on every rank: an evaluation split across the ranks (`evaluation_batches`,
    `evaluation_sum`) whose record every rank gets; outside it evaluation is local."""
    global _evaluating
    outer, _evaluating = _evaluating, world_size() > 1
    try:
        yield
    finally:
        _evaluating = outer


def evaluation_batches(batches: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """(batch, counted) for each batch: within `evaluating`, this rank's slice of it (sharded,
    as in training, so noise and batch statistics are the single process's); a batch of fewer
    rows than ranks is evaluated whole on every rank (their random states stay alike) and
    counted on rank 0 only. Outside, every batch, counted."""
    if not _evaluating:
        for batch in batches:
            yield batch, True
        return
    for batch in batches:
        n = batch.x.shape[0]
        if n < world_size():
            yield batch, is_writer()
            continue
        with sharded(n) as shard:
            yield batch.rows(shard.start, shard.stop), True


def evaluation_sum(t: torch.Tensor) -> torch.Tensor:
    """A tensor summed over the ranks of an evaluation (itself outside one)."""
    return all_sum(t) if _evaluating else t


def evaluation_sums(sums: dict[str, Any]) -> dict[str, float]:
    """Named running sums (tensors or numbers) summed over the ranks of an evaluation, in one
    all-reduce; a name only some ranks have counts 0 on the others."""
    if not _evaluating:
        return {name: float(total) for name, total in sums.items()}
    names = sorted(set().union(*all_gather_object(sorted(sums))))
    totals = sum_numbers([float(sums.get(name, 0.0)) for name in names])
    return dict(zip(names, totals, strict=True))


def splitting_evaluation() -> bool:
    """Whether an evaluation is split across ranks now (`evaluating`)."""
    return _evaluating


def evaluation_moments(
    n: int, mean: torch.Tensor | None, m2: torch.Tensor, width: int
) -> tuple[int, torch.Tensor | None, torch.Tensor]:
    """Row count, mean (width,) and summed squared deviation of every rank's rows of an
    evaluation (None mean: no rows here), combined by Chan et al.'s pairwise formula."""
    if not _evaluating:
        return n, mean, m2
    mean = m2.new_zeros(width) if mean is None else mean
    parts = stacked_all(torch.cat([m2.new_tensor([float(n)]), mean, m2.reshape(1)]))
    counts, overall, total = combine_moments(parts[:, 0], parts[:, 1:-1], parts[:, -1])
    rows = int(counts)
    return rows, (overall if rows else None), total


def combine_moments(
    counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Groups' counts (G,), means (G, d) and sums of squared deviations (G,) -> the whole's
    (Chan, Golub & LeVeque 1979)."""
    n = counts.sum()
    overall = (counts[:, None] * means).sum(0) / n.clamp_min(1)
    return n, overall, m2s.sum() + (counts * (means - overall).pow(2).sum(1)).sum()


def _device() -> torch.device:
    """Where this rank's collectives run: its GPU under nccl, else the CPU."""
    if initialised() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> Shard | None:
    return _shard


def fraction() -> float:
    return 1.0 if _shard is None else _shard.fraction


def _reduced(t: torch.Tensor, op: Any) -> torch.Tensor:
    if _shard is None:
        return t
    # gloo reduces no bool tensors; sums of 0/1 decide `any`.
    out = t.detach().to(torch.int32 if t.dtype == torch.bool else t.dtype).clone()
    dist.all_reduce(out, op=op)
    return out.bool() if t.dtype == torch.bool else out


def sum_(t: torch.Tensor) -> torch.Tensor:
    """t summed over ranks (a copy; t itself when not sharded)."""
    return _reduced(t, dist.ReduceOp.SUM)


def max_(t: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum over ranks; for a bool tensor, `any`."""
    return _reduced(t, dist.ReduceOp.MAX)


def min_(t: torch.Tensor) -> torch.Tensor:
    return _reduced(t, dist.ReduceOp.MIN)


def sum_numbers(values: Sequence[float]) -> list[float]:
    """Numbers summed over ranks in one all-reduce, in float64 (on the GPU under nccl, which
    reduces no CPU tensors)."""
    if not initialised():
        return list(values)
    return all_sum(torch.tensor(values, dtype=torch.float64, device=_device())).tolist()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """t summed over ranks outside a step too (the Trainer's running sums of an epoch)."""
    if not initialised():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def stacked(t: torch.Tensor) -> torch.Tensor:
    """Every rank's t (the same shape on each), stacked in rank order: (world, *t.shape)."""
    if _shard is None:
        return t.unsqueeze(0)
    return stacked_all(t)


def stacked_all(t: torch.Tensor) -> torch.Tensor:
    """`stacked` outside a step too."""
    if not initialised():
        return t.unsqueeze(0)
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.stack(parts)


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of t concatenated in rank order (row counts may differ): on the
    slices of a global batch, the global batch's rows."""
    if _shard is None:
        return t
    counts = stacked(torch.tensor([t.shape[0]], device=t.device)).flatten().tolist()
    padded = t.new_zeros(max(counts), *t.shape[1:])
    padded[: t.shape[0]] = t.detach()
    parts = stacked(padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])


def per_row(draw: Callable[[Sequence[int]], torch.Tensor], shape: Sequence[int], dim: int = 0):
    """A random draw of `shape` whose axis `dim` runs over this rank's rows of the batch: drawn
    for the global batch and sliced, so every row gets the noise a single process gives it and
    every rank's random state stays the same. A plain draw when not sharded, or when that axis
    does not hold this rank's row count (it is then not the batch's: samples x rows flattened)."""
    s = _shard
    if s is None or shape[dim] != s.rows:
        return draw(shape)
    full = list(shape)
    full[dim] = s.total
    return draw(full).narrow(dim, s.start, s.rows)


def randn_rows(
    shape: Sequence[int], *, device: torch.device, dtype: torch.dtype | None = None, dim: int = 0
) -> torch.Tensor:
    """Standard normal noise of `shape`, axis `dim` the batch's rows (`per_row`)."""
    return per_row(lambda s: torch.randn(s, device=device, dtype=dtype), shape, dim)


def rand_rows(
    shape: Sequence[int], *, device: torch.device, dtype: torch.dtype | None = None, dim: int = 0
) -> torch.Tensor:
    """Uniform [0, 1) noise of `shape`, axis `dim` the batch's rows (`per_row`)."""
    return per_row(lambda s: torch.rand(s, device=device, dtype=dtype), shape, dim)


def reduce_gradients(
    parameters: Sequence[torch.nn.Parameter], loss: torch.Tensor, weight: float
) -> torch.Tensor:
    """Sum over ranks of each rank's gradients times `weight` (its share of the global batch,
    which makes the sum the gradient of the global batch's mean loss; 1 where ranks train
    disjoint parameters on whole batches), in one all-reduce that also carries the loss;
    returns the global loss. A parameter no rank gave a gradient keeps none, as in one process
    (the optimiser skips it)."""
    if not initialised():
        return loss.detach()
    grads = [p.grad for p in parameters]
    device = loss.device
    flags = torch.tensor([g is not None for g in grads], dtype=torch.float32, device=device)
    flat = torch.cat(
        [
            *((g.detach() * weight).flatten() if g is not None else p.new_zeros(p.numel())
              for p, g in zip(parameters, grads, strict=True)),
            flags,
            (loss.detach().float() * weight).reshape(1),
        ]
    )  # fmt: skip
    dist.all_reduce(flat)
    offset = 0
    # Whether any rank had a gradient needs reading back (a device sync) only when this rank
    # lacks one: otherwise every parameter has one.
    local = [g is not None for g in grads]
    had_any = local if all(local) else flat[-1 - len(grads) : -1].tolist()
    for p, had in zip(parameters, had_any, strict=True):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype) if had else None
        offset += n
    return flat[-1]


def broadcast(value: Any) -> Any:
    """Rank 0's value on every rank (a run directory's name, a validation record)."""
    if not initialised():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_writer(action: Callable[[], Any]) -> Any:
    """`action` run on rank 0 only; its result, or the AekitError it raised, reaches every
    rank, so a refusal (a run directory in use) stops all of them instead of leaving the others
    waiting in a collective."""
    if not initialised():
        return action()
    result, error = None, None
    if is_writer():
        try:
            result = action()
        except AekitError as e:
            error = str(e)
    result, error = broadcast((result, error))
    if error is not None:
        raise AekitError(error)
    return result


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int) -> None:
    """Every tensor overwritten, in place, by rank `src`'s: one broadcast per dtype (gloo
    broadcasts no bool tensors, which travel as bytes)."""
    if not initialised():
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        carrier = torch.cat([t.reshape(-1) for t in group])
        carrier = carrier.to(torch.uint8) if dtype == torch.bool else carrier
        dist.broadcast(carrier, src=src)
        for t, part in zip(group, carrier.split([t.numel() for t in group]), strict=True):
            t.copy_(part.view_as(t))


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's value, in rank order."""
    if not initialised():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out
