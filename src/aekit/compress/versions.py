"""Earlier weights of a quantizer run, kept for the files compressed with them.

A compressed file names the SHA-256 of the weights and of the index prior it was coded with,
and decodes only with exactly those. Resuming a run overwrites both, which would orphan every
file compressed before; so resuming first copies them to `RUN/versions/SHA/`, and decompress
finds a file's own version there when the run has moved on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from aekit.compress.index_prior import INDEX_PRIOR, IndexPrior
from aekit.io import CHECKSUM, read_safetensors, tensors_sha256

VERSIONS = "versions"
WEIGHTS = "model.safetensors"
KEY_LENGTH = 16
"""Hex digits of the weights' SHA-256 naming a version folder (64 bits: no collisions among
the versions of one run)."""


def keep_version(run_dir: Path, entropy_coded: bool = False) -> Path | None:
    """Copy the run's weights and index prior to `versions/SHA/` (once per SHA); None when
    the run has neither an index prior nor an `entropy_coded` bottleneck (whose tables are
    rebuilt from the weights alone), so nothing can have been compressed with it."""
    weights, prior = run_dir / WEIGHTS, run_dir / INDEX_PRIOR
    if not weights.is_file() or not (prior.is_file() or entropy_coded):
        return None
    tensors, metadata = read_safetensors(weights, "weights file")
    # read_safetensors has checked the stored checksum against the tensors: reuse it.
    sha = metadata.get(CHECKSUM) or tensors_sha256(tensors)
    target = run_dir / VERSIONS / sha[:KEY_LENGTH]
    if (target / WEIGHTS).is_file() and (target / INDEX_PRIOR).is_file() == prior.is_file():
        return target
    partial = target.with_name(f".{target.name}.tmp")  # a crash leaves only this behind
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copy2(weights, partial / WEIGHTS)
    if prior.is_file():
        shutil.copy2(prior, partial / INDEX_PRIOR)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def find_version(run_dir: Path, model_sha256: str) -> Path | None:
    target = Path(run_dir) / VERSIONS / model_sha256[:KEY_LENGTH]
    return target if (target / WEIGHTS).is_file() else None


def load_version(run_dir: Path, version: Path, device: str | torch.device = "cpu"):
    """The run's model with the weights and index prior of an earlier version."""
    from aekit.train import checkpoint as ckpt

    model = ckpt.model_from_config(ckpt.read_config(run_dir))
    ckpt.load_weights(version / WEIGHTS, model)
    if (version / INDEX_PRIOR).is_file():
        model.latent_density = IndexPrior.load(version / INDEX_PRIOR)
    return model.to(device).eval()
