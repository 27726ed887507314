"""Learning-rate schedules: a linear warm-up, then constant or cosine decay. One function for
the Trainer and for the fine-tuning probe, which trains outside it."""

from __future__ import annotations

import math


def scheduled_lr(
    step: int,
    total_steps: int,
    lr: float,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning rate at `step` of `total_steps`: lr * (step + 1) / warmup_steps during the
    warm-up, then lr (`constant`) or a cosine from lr down to min_lr_ratio * lr (`cosine`)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
