"""Training precision: `fp32`, `tf32` (CUDA matmuls and convolutions in TensorFloat-32) or
`bf16` (autocast of the network bodies to bfloat16).

bf16 covers only the bodies, the encoder's and decoder's layers where the FLOPs are (and a
sparse bottleneck's selection, which reads the encoder's product): their outputs return to
float32 before the bottleneck's statistics, the objective's KL and log-likelihood sums and the
loss, which bfloat16's 8-bit mantissa (a relative step of 2^-8) would round. Weights,
gradients and optimiser state stay float32, so no loss scaling is needed. CPU autocast
exists too, so bf16 trains, and is tested, on a CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from aekit.errors import AekitError

PRECISIONS = ("fp32", "tf32", "bf16")

_bodies_dtype: torch.dtype | None = None


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise AekitError(f"precision must be one of {', '.join(PRECISIONS)} (got {name!r})")


@contextlib.contextmanager
def training_precision(name: str, device: torch.device) -> Iterator[None]:
    """Within: the bodies autocast to bfloat16 (`bf16`), or CUDA's float32 matmuls and
    convolutions use TF32 (`tf32`; the flags are restored after)."""
    global _bodies_dtype
    check_precision(name)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    outer = _bodies_dtype
    if name == "tf32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if name == "bf16":
        _bodies_dtype = torch.bfloat16
    try:
        yield
    finally:
        _bodies_dtype = outer
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def bodies(device: torch.device) -> Any:
    """The context the network bodies run in: bfloat16 autocast under `bf16` training."""
    if _bodies_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_bodies_dtype)


def autocasting(device: torch.device) -> bool:
    """Whether an autocast context is active for `device`'s type (torch < 2.4 asks per type)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:
        if device.type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def full(t: Any) -> Any:
    """A body's half-precision output back in float32 (anything else, a float64 model's
    output included, as it is)."""
    if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16):
        return t.float()
    return t
