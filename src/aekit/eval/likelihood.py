"""-log p(x) by importance sampling, with the model's own posterior as the proposal:

    log p(x) ~= log (1/k) sum_s p(x|z_s) p(z_s) / q(z_s|x),   z_s ~ q(z|x)

(Burda et al. 2016, the estimator behind every reported VAE test likelihood). It is a
stochastic lower bound that tightens as k grows and equals the Monte-Carlo ELBO at k=1.
The k draws of an example are taken in chunks and folded into a running logsumexp, so memory
is set by `max_draws` (latent draws decoded at once), not by k.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

import torch

from aekit.data.tensor_data import TensorData
from aekit.errors import AekitError
from aekit.models.autoencoder import Autoencoder

DEFAULT_MAX_DRAWS = 20_000
"""Latent draws decoded at once on an accelerator."""
CPU_MAX_DRAWS = 2_500
"""Latent draws decoded at once on the CPU. Smaller passes are faster there: a pass of 20,000
draws of a 784-pixel image allocates (and page-faults in) 63 MB of logits and as much per
temporary each time, where a few MB are reused by the allocator and stay in cache (about 1.5x
faster for an MLP VAE on Fashion-MNIST at k=5000)."""


def default_max_draws(device: torch.device | str) -> int:
    return CPU_MAX_DRAWS if torch.device(device).type == "cpu" else DEFAULT_MAX_DRAWS


def check_has_density(model: Autoencoder) -> None:
    if not model.bottleneck.has_density:
        raise AekitError(
            f"a {model.config.recipe!r} model has no posterior density q(z|x) and prior p(z), "
            "so -log p(x) cannot be estimated by importance sampling"
        )


@torch.no_grad()
def log_likelihood(
    model: Autoencoder,
    x: torch.Tensor,
    k: int,
    *,
    condition: Any = None,
    max_draws: int | None = None,
) -> torch.Tensor:
    """The importance-sampled estimate of log p(x) per example, (B,), in nats."""
    if k < 1:
        raise AekitError(f"the number of importance samples k must be at least 1 (got {k})")
    check_has_density(model)
    x = model.batch_to_model(x) if isinstance(x, torch.Tensor) else x
    model.check_input(x)
    n = x.shape[0]
    c = model.condition_vector(condition, n)
    h = model.features(x, c)
    per_pass = max(1, (max_draws or default_max_draws(x.device)) // n)
    total = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    done = 0
    while done < k:
        draws = min(per_pass, k - done)
        b = model.bottleneck(h, draws)
        log_px = model.log_px(model.decoder_params(b.z, c), x)
        log_w = log_px + b.log_prior - b.log_q
        total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
        done += draws
    return total - math.log(k)


TRIM_EVERY = 8
"""Estimator batches between heap trims: without them the default Fashion-MNIST conv VAE grew
by about 4 MB a batch at k=100; trimming every 8 costs about 6 % of the estimator's time
(`benchmarks/end_of_run.py`)."""


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    Each pass of the estimator frees large conv temporaries; glibc keeps such freed memory
    in its heap rather than unmapping it, so over the hundreds of passes of a test set the
    process grew by gigabytes of memory that held no live tensor. Trimming every TRIM_EVERY
    batches keeps memory flat in the number of images: 601 MiB peak over the 10,000
    Fashion-MNIST test images against 2,267 MiB untrimmed (`benchmarks/end_of_run.py`)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None


@torch.no_grad()
def importance_sampled_nll(
    model: Autoencoder,
    data: TensorData,
    *,
    k: int = 5000,
    batch_size: int | None = None,
    max_draws: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean -log p(x) over `data` in nats and bits/dim, with its standard error and k (keys
    `marginal_nll*`).

    For a Bernoulli likelihood on binary data this is a probability; for continuous
    likelihoods it is a density, and its bits/dim depend on the data's scale."""
    if k < 1:
        raise AekitError(f"the number of importance samples k must be at least 1 (got {k})")
    check_has_density(model)
    was_training = model.training
    model.eval()
    device = model.device
    max_draws = max_draws or default_max_draws(device)
    batch_size = batch_size or max(1, min(1000, max_draws // min(k, max_draws)))
    values = []
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for i, batch in enumerate(data.batches(batch_size)):
                condition = batch.y if model.conditional else None
                lp = log_likelihood(model, batch.x, k, condition=condition, max_draws=max_draws)
                values.append(lp.cpu())
                if device.type == "cpu" and i % TRIM_EVERY == TRIM_EVERY - 1:
                    release_free_heap()
    finally:
        model.train(was_training)
    nll = -torch.cat(values).double()
    n = nll.numel()
    dims = math.prod(model.input_shape)
    discrete = model.config.likelihood.kind == "bernoulli"
    # "marginal": -log p(x), not the reconstruction term -log p(x|z) that objectives call nll.
    return {
        "marginal_nll": float(nll.mean()),
        "marginal_nll_stderr": float(nll.std() / math.sqrt(n)) if n > 1 else 0.0,
        "marginal_nll_bits_per_dim": float(nll.mean()) / (dims * math.log(2)),
        "marginal_nll_k": k,
        "marginal_nll_n": n,
        "marginal_nll_estimator": (
            f"importance sampling, proposal q(z|x), k={k}"
            + ("" if discrete else "; a density of continuous data, not a probability")
        ),
    }
