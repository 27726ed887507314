"""Run directories, weights and resumable checkpoints: safetensors + JSON, written atomically.

Nothing here unpickles: tensors come from safetensors files, everything else from JSON.
`config.json` says what the run is (`kind`: an autoencoder of any family, or a group of them);
`load` dispatches on it, and reads runs of older versions through `train.legacy`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aekit.errors import AekitError, one_line
from aekit.io import (
    atomic_write_json,
    read_aekit_safetensors,
    read_json,
    read_safetensors,
    write_safetensors,
)
from aekit.train.legacy import legacy_parameter_names, upgrade_config, upgrade_state
from aekit.version import __version__

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LAST = "checkpoints/last.safetensors"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
REPORT = "report.html"
METRICS_FIELDS = {"epoch": (int,), "train": (dict,), "val": (dict, type(None))}
"""What every line of metrics.jsonl holds (checked on reading: resume and report use them)."""
STEPS_FIELDS = {"step": (int,)}


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
    check_state(model, state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # a dtype or layout the checks did not foresee
        raise AekitError(f"{path} does not fit this model ({one_line(e)})") from None


def check_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse, naming the tensor, weights that do not fit `model` or are damaged."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise AekitError(
            f"{path} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    parameters = {name for name, _ in model.named_parameters()}
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise AekitError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape)}"
            )
        # Training never saves a non-finite parameter, so one here is damage (buffers may
        # hold infinities on purpose: thresholds not yet seen, running minima).
        if key in parameters and value.is_floating_point() and not value.isfinite().all():
            raise AekitError(f"{path}: parameter {key!r} holds NaN or infinite values")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(path), "weights file")[0]


def read_model_weights(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A weights file as a state for `model` (the names of older versions upgraded)."""
    return upgrade_state(read_weights(path), model.config.to_dict())


def load_weights(path: str | Path, model: nn.Module) -> None:
    load_state(model, read_model_weights(path, model), Path(path))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    *,
    random_state: dict[str, torch.Tensor] | None = None,
    auxiliary: dict[str, torch.optim.Optimizer] | None = None,
) -> None:
    """Model, optimizer and trainer state in one file, so one atomic rename commits them;
    with the random generators' states (`random_state`) a run resumes mid-epoch exactly, and
    with the optimisers of the model's `auxiliary` parts (a discriminator) those parts too."""
    tensors = _cpu_tensors(model.state_dict(), "model/")
    tensors.update(_cpu_tensors(random_state or {}, "random/"))
    groups, scalars = _optimizer_tensors(optimizer, "optim/", tensors)
    extra: dict[str, dict[str, Any]] = {}
    for name, aux in (auxiliary or {}).items():
        aux_groups, aux_scalars = _optimizer_tensors(aux, f"auxiliary/{name}/", tensors)
        extra[name] = {"param_groups": aux_groups, "optim_scalars": aux_scalars}
    write_safetensors(
        path,
        tensors,
        "aekit-checkpoint",
        trainer_state=json.dumps(trainer_state),
        param_groups=json.dumps(groups),
        optim_scalars=json.dumps(scalars),
        **({"auxiliary_optimizers": json.dumps(extra)} if extra else {}),
    )


def _optimizer_tensors(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor]
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """An optimiser's tensors into `tensors` under `prefix`; its param groups and scalars."""
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in opt["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}/{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return opt["param_groups"], scalars


def _restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    prefix: str,
    groups: list[Any],
    scalars: dict[str, dict[str, Any]],
    device: torch.device,
    moved: dict[int, int] | None = None,
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix) :].split("/", 1)
            i = int(index) if moved is None else moved[int(index)]
            state.setdefault(i, {})[name] = value
    for index, values in scalars.items():
        i = int(index) if moved is None else moved[int(index)]
        state.setdefault(i, {}).update(values)
    state = {
        i: {
            k: v.to(device) if isinstance(v, torch.Tensor) and k != "step" else v
            for k, v in s.items()
        }
        for i, s in state.items()
    }
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def checkpoint_model_state(
    tensors: dict[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], bool]:
    """The model's state in a checkpoint's tensors under the current names, and whether they
    were written by 0.1 (whose parameters had another order)."""
    state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    upgraded = upgrade_state(state, model.config.to_dict())
    return upgraded, upgraded is not state


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    auxiliary: dict[str, torch.optim.Optimizer] | None = None,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Load model and optimizer state (and that of the `auxiliary` parts' optimisers); return
    the trainer state and the random state saved with it (empty for checkpoints of aekit <
    0.3)."""
    path = Path(path)
    tensors, metadata = read_aekit_safetensors(path, "checkpoint", "aekit-checkpoint")
    model_state, legacy = checkpoint_model_state(tensors, model)
    load_state(model, model_state, path)
    # Optimiser state is indexed by position in model.parameters(); 0.1's order differed.
    moved = None
    if legacy:
        position = {name: i for i, (name, _) in enumerate(model.named_parameters())}
        order = legacy_parameter_names(model.config.to_dict())
        moved = {old: position[name] for old, name in enumerate(order)}
    device = next(model.parameters()).device
    _restore_optimizer(
        optimizer,
        tensors,
        "optim/",
        json.loads(metadata["param_groups"]),
        json.loads(metadata["optim_scalars"]),
        device,
        moved,
    )
    saved_auxiliary = json.loads(metadata.get("auxiliary_optimizers", "{}"))
    for name, aux in (auxiliary or {}).items():
        if name not in saved_auxiliary:
            raise AekitError(f"{path}: holds no optimiser state of the model's {name}")
        entry = saved_auxiliary[name]
        _restore_optimizer(
            aux,
            tensors,
            f"auxiliary/{name}/",
            entry["param_groups"],
            entry["optim_scalars"],
            device,
        )
    random_state = {k[len("random/") :]: v for k, v in tensors.items() if k.startswith("random/")}
    return json.loads(metadata["trainer_state"]), random_state


def write_config(run_dir: Path, sections: dict[str, Any]) -> None:
    atomic_write_json(run_dir / CONFIG, {"aekit_version": __version__, **sections})


def read_config(run: str | Path) -> dict[str, Any]:
    """A run's config.json in the current layout (older runs upgraded on reading)."""
    run = Path(run)
    if not run.is_dir():
        raise AekitError(f"run directory not found: {run}")
    config = read_json(run / CONFIG, "run config")
    if not isinstance(config, dict) or "model" not in config:
        raise AekitError(f"{run / CONFIG} has no model section; is {run} an aekit run?")
    try:
        config = upgrade_config(config)
    except (KeyError, TypeError) as e:
        raise AekitError(f"{run / CONFIG} is incomplete or malformed ({e})") from None
    kind, model = config["kind"], config["model"]
    if not isinstance(kind, str) or kind not in RUN_KINDS:
        raise AekitError(
            f"{run / CONFIG}: unknown run kind {kind!r}; choose from "
            f"{', '.join(RUN_KINDS)} (a newer aekit wrote it?)"
        )
    fits = isinstance(model, dict) and (
        isinstance(model.get("members"), list) and model["members"]
        if kind == "group"
        else isinstance(model.get("recipe"), str)
    )
    if not fits:
        raise AekitError(f"{run / CONFIG}: the model section does not describe a {kind} run")
    check_sections(config, run / CONFIG)
    return config


def check_sections(config: dict[str, Any], path: Path) -> None:
    """Refuse a hand-edited section (a string where an int belongs, a null where a mapping
    does) when the file is read, naming the section, not deep inside a command."""
    from aekit.data import DataConfig
    from aekit.data.activations.source import ActivationSource
    from aekit.train.config import TrainConfig

    sections = {"train": TrainConfig, "data": DataConfig, "activations": ActivationSource}
    for name, cls in sections.items():
        values = config.get(name)
        if name == "train" and values is None and name in config:
            raise AekitError(f"{path}: the train section is null")
        if values is not None:
            try:
                cls.from_dict(values)
            except AekitError as e:
                raise AekitError(f"{path}: the {name} section: {e}") from None


def build_autoencoder(model: dict[str, Any], encoder=None, decoder=None) -> nn.Module:
    from aekit.models.config import ModelConfig
    from aekit.registry import build_from_config

    return build_from_config(ModelConfig.from_dict(model), encoder, decoder)


def build_group(model: dict[str, Any], encoder=None, decoder=None) -> nn.Module:
    from aekit.models.group import GroupMember, ModelGroup

    if encoder is not None or decoder is not None:
        raise AekitError("a group's members use aekit's own networks; pass no encoder/decoder")
    try:
        members = [
            GroupMember(m["name"], m["site"], m.get("target_site")) for m in model["members"]
        ]
        models = {m["name"]: build_autoencoder(m["model"]) for m in model["members"]}
    except (KeyError, TypeError) as e:
        raise AekitError(f"group config is incomplete or malformed ({e})") from None
    return ModelGroup(models, members)


RUN_KINDS = {"autoencoder": build_autoencoder, "group": build_group}
"""config.json's `kind` -> how to rebuild the (untrained) model from its `model` section."""


def model_from_config(config: dict[str, Any], encoder=None, decoder=None) -> nn.Module:
    """The untrained model a run's (upgraded) config describes."""
    return RUN_KINDS[config["kind"]](config["model"], encoder, decoder)


def load(
    run: str | Path,
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    device: str | torch.device = "cpu",
    checkpoint: str = "best",
) -> nn.Module:
    """The trained model of a run directory, in eval mode: an Autoencoder of any family, or a
    ModelGroup for a run over several sites (`load(run)["NAME"]` is a member).
    `checkpoint="best"` gives the weights of the best validation loss (as saved for inference:
    a sparse autoencoder's normalisation folded in), `"last"` those of the latest checkpoint."""
    from aekit.compress.index_prior import INDEX_PRIOR, IndexPrior
    from aekit.latent_density import LATENT_DENSITY, LatentGMM

    if checkpoint not in ("best", "last"):
        raise AekitError(f"checkpoint must be best or last (got {checkpoint!r})")
    run = Path(run)
    saved = read_config(run)
    model = model_from_config(saved, encoder, decoder)
    if checkpoint == "best":
        load_weights(run / WEIGHTS, model)
    else:
        tensors, _ = read_safetensors(run / LAST, "checkpoint")
        load_state(model, checkpoint_model_state(tensors, model)[0], run / LAST)
    if saved["kind"] == "group":
        return model.to(device).eval()
    if (run / LATENT_DENSITY).is_file():
        model.latent_density = LatentGMM.load(run / LATENT_DENSITY)
    if (run / INDEX_PRIOR).is_file():  # quantizer models: a prior over their code indices
        prior = IndexPrior.load(run / INDEX_PRIOR)
        if not prior.fits(model):
            raise AekitError(f"{run / INDEX_PRIOR} does not fit the model's quantizer")
        model.latent_density = prior
    return model.to(device).eval()
