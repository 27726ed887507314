"""Run directories, weights and resumable checkpoints: safetensors + JSON, written atomically.

Nothing here unpickles: tensors come from safetensors files, everything else from JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aekit.errors import AekitError
from aekit.io import (
    atomic_write_json,
    read_aekit_safetensors,
    read_json,
    read_safetensors,
    write_safetensors,
)
from aekit.version import __version__

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LAST = "checkpoints/last.safetensors"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
REPORT = "report.html"


def _cpu_tensors(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage; a clone per tensor is cheap insurance.
    return {prefix + k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(path: str | Path, model: nn.Module) -> None:
    """The weights for inference. A sparse autoencoder's input normalisation is folded in,
    so the saved model takes and returns raw activations."""
    fold = getattr(model, "folded_state_dict", None)
    state = fold() if fold is not None else model.state_dict()
    write_safetensors(path, _cpu_tensors(state), "aekit-weights")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise AekitError(
            f"{path} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise AekitError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape)}"
            )
    model.load_state_dict(state)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(path), "weights file")[0]


def load_weights(path: str | Path, model: nn.Module) -> None:
    load_state(model, read_weights(path), Path(path))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
) -> None:
    """Model, optimizer and trainer state in one file, so one atomic rename commits them."""
    opt = optimizer.state_dict()
    tensors = _cpu_tensors(model.state_dict(), "model/")
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in opt["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    write_safetensors(
        path,
        tensors,
        "aekit-checkpoint",
        trainer_state=json.dumps(trainer_state),
        param_groups=json.dumps(opt["param_groups"]),
        optim_scalars=json.dumps(scalars),
    )


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    path = Path(path)
    tensors, metadata = read_aekit_safetensors(path, "checkpoint", "aekit-checkpoint")
    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    load_state(model, model_state, path)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in json.loads(metadata["optim_scalars"]).items():
        state.setdefault(int(index), {}).update(values)
    device = next(model.parameters()).device
    state = {
        i: {
            k: v.to(device) if isinstance(v, torch.Tensor) and k != "step" else v
            for k, v in s.items()
        }
        for i, s in state.items()
    }
    optimizer.load_state_dict(
        {"state": state, "param_groups": json.loads(metadata["param_groups"])}
    )
    return json.loads(metadata["trainer_state"])


def write_config(run_dir: Path, sections: dict[str, Any]) -> None:
    atomic_write_json(run_dir / CONFIG, {"aekit_version": __version__, **sections})


def read_config(run: str | Path) -> dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        raise AekitError(f"run directory not found: {run}")
    config = read_json(run / CONFIG, "run config")
    if not isinstance(config, dict) or "model" not in config:
        raise AekitError(f"{run / CONFIG} has no model section; is {run} an aekit run?")
    return config


def load(
    run: str | Path,
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    device: str | torch.device = "cpu",
    checkpoint: str = "best",
) -> nn.Module:
    """The trained model of a run directory (`checkpoint="last"` for the latest epoch rather
    than the best validation loss), in eval mode."""
    from aekit.compress.index_prior import INDEX_PRIOR, IndexPrior
    from aekit.latent_density import LATENT_DENSITY, LatentGMM
    from aekit.models.config import ModelConfig
    from aekit.registry import build_from_config
    from aekit.sae.train import is_sae_run

    run = Path(run)
    saved = read_config(run)
    if is_sae_run(saved):
        from aekit.sae.train import load_sae

        return load_sae(run, device=device)
    config = ModelConfig.from_dict(saved["model"])
    model = build_from_config(config, encoder, decoder)
    if checkpoint == "best":
        load_weights(run / WEIGHTS, model)
    elif checkpoint == "last":
        tensors, _ = read_safetensors(run / LAST, "checkpoint")
        load_state(
            model, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, run / LAST
        )
    else:
        raise AekitError(f"checkpoint must be best or last (got {checkpoint!r})")
    if (run / LATENT_DENSITY).is_file():
        model.latent_density = LatentGMM.load(run / LATENT_DENSITY)
    if (run / INDEX_PRIOR).is_file():  # quantizer models: a prior over their code indices
        prior = IndexPrior.load(run / INDEX_PRIOR)
        if not prior.fits(model):
            raise AekitError(f"{run / INDEX_PRIOR} does not fit the model's quantizer")
        model.latent_density = prior
    return model.to(device).eval()
