"""What every peer comparison shares: interleaved timing, medians, provenance, a JSON result.

Timing protocol (the machines are shared and noisy): the sides take turns, A B C A B C...,
each turn one unit of work (an epoch, a block of steps), so load spikes hit every side alike;
the first turn of each side is warm-up and dropped; the figure is the ratio of medians.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aekit.bench.provenance import environment
from aekit.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent.parent / "results"


def peer_module(name: str, install: str):
    """The peer's module, or None after printing how to install it (the scripts skip it)."""
    if importlib.util.find_spec(name) is None:
        print(f"skipped: {install} is not installed (pip install {install}, or aekit[bench])")
        return None
    return importlib.import_module(name)


def interleave(sides: dict[str, Callable[[], float]], turns: int) -> dict[str, list[float]]:
    """Run each side's unit of work `turns` times, alternating sides; each call returns its
    own seconds (so setup outside the timed region is not counted)."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(turns):
        for name, work in sides.items():
            seconds[name].append(work())
    return seconds


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:] or values)


def ratios(seconds: dict[str, list[float]], reference: str) -> dict[str, float]:
    """Median seconds of each side over the reference side's (above 1: slower)."""
    ref = median_after_warmup(seconds[reference])
    return {name: median_after_warmup(v) / ref for name, v in seconds.items()}


def save_result(name: str, payload: dict[str, Any], argv: list[str] | None = None) -> Path:
    """benchmarks/results/peers-NAME.json with the command and the environment recorded."""
    argv = sys.argv if argv is None else argv
    out = RESULTS / f"peers-{name}.json"
    atomic_write_json(
        out,
        {
            "command": "python " + " ".join(argv),
            "environment": environment("cpu"),
            **payload,
        },
    )
    return out
