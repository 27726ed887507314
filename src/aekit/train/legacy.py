"""Run directories written by aekit 0.1 (before sparse autoencoders joined the core), upgraded
on reading: their config.json becomes the current layout, their weights' names the current
ones, and their optimiser state follows the parameters to their new order. Reading writes
nothing back: an old run loads and evaluates as it is; resuming one continues it as a run of
this version (config.json and the checkpoints it writes are in the current layout).

0.1 wrote three kinds of SAE config (image runs differ only in `net`, which ModelConfig reads):

- an SAE run: `model` is the flat SAEConfig (`activation`, `d_in`, `n_latents`, ...), the
  activations are under `activation_source`;
- a group run: `model` is {"members": [{"name", "site", "target_site", "sae"}], "recipe":
  "sae-group"};
- a group member's run directory: an SAE run with the group's path under `group`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

K_SPARSE = ("topk", "batchtopk", "abstopk")
SAE_PARAMETERS = ("W_dec", "W_enc", "b_enc", "b_dec", "W_skip", "log_threshold")
"""A 0.1 SparseAutoencoder's parameters, in the order it registered them (its optimiser's)."""
SAE_RENAMES = {
    "W_enc": "encoder.W_enc",
    "b_enc": "encoder.b_enc",
    "W_dec": "decoder.W_dec",
    "b_dec": "decoder.b_dec",
    "W_skip": "decoder.W_skip",
    "input_scale": "decoder.input_scale",
    "target_scale": "decoder.target_scale",
    "initialised": "decoder.initialised",
    "log_threshold": "bottleneck.log_threshold",
    "threshold": "bottleneck.threshold",
    "tokens_since_fired": "bottleneck.tokens_since_fired",
}
"""0.1 SAE state names -> the Autoencoder's."""


def is_legacy_sae(model: dict[str, Any]) -> bool:
    return "activation" in model and "n_latents" in model


def sae_model_config(sae: dict[str, Any]) -> dict[str, Any]:
    """A 0.1 SAEConfig (resolved: widths and latent count filled in) as a ModelConfig dict."""
    activation = sae["activation"]
    k_sparse = activation in K_SPARSE
    bottleneck: dict[str, Any] = {"kind": activation, "dead_tokens": sae["dead_tokens"]}
    if k_sparse:
        bottleneck.update(k=sae["k"], sparse_decode=sae["sparse_decode"])
    if activation == "batchtopk":
        bottleneck["threshold_decay"] = sae["threshold_decay"]
    if activation == "jumprelu":
        bottleneck.update(threshold_init=sae["threshold_init"], bandwidth=sae["bandwidth"])
    encoder_init_norm = sae.get("encoder_init_norm")
    if encoder_init_norm is None:  # 0.1's default, resolved as 0.1 resolved it
        encoder_init_norm = 1 / math.sqrt(3) if k_sparse and sae["unit_norm_decoder"] else 0.0
    return {
        "recipe": sae.get("recipe") or f"sae-{activation}",
        "input_shape": [sae["d_in"]],
        "latent_dim": sae["n_latents"],
        "condition_classes": 0,
        "condition_dim": 0,
        "output_shape": [sae["d_out"]] if sae["transcoder"] else None,
        "body": {
            "kind": "dictionary",
            "expansion": sae["expansion"],
            "unit_norm_decoder": sae["unit_norm_decoder"],
            "decoder_init_norm": sae["decoder_init_norm"],
            "b_dec_init": sae["b_dec_init"],
            "tied_init": sae["tied_init"],
            "encoder_init_norm": encoder_init_norm,
            "normalize": sae["normalize"],
            "skip": sae["skip"],
        },
        "bottleneck": bottleneck,
        "likelihood": {"kind": "gaussian", "variance": "fixed", "sigma": 1.0, "min_sigma": 1e-3},
        "corruption": {"kind": "none"},
        "objective": {
            "kind": "sparse-coding",
            "reconstruction": "fvu" if k_sparse else "mse",
            "l1_coefficient": sae["l1_coefficient"] if activation == "relu" else 0.0,
            "l1_warmup_steps": sae["l1_warmup_steps"],
            "l0_coefficient": sae["l0_coefficient"] if activation == "jumprelu" else 0.0,
            "l0_warmup_steps": sae["l0_warmup_steps"],
            "aux_k": sae["aux_k"],
            "aux_coefficient": sae["aux_coefficient"] if k_sparse else 0.0,
            "matryoshka": list(sae["matryoshka"]),
        },
    }


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.json of any version as the current layout (`kind`, `model`, `train`, `data` or
    `activations`). Current configs come back unchanged."""
    if "kind" in config:
        return config
    config = dict(config)
    if "activation_source" in config:
        config["activations"] = config.pop("activation_source")
    model = config.get("model", {})
    if isinstance(model, dict) and "members" in model:
        config["kind"] = "group"
        config["model"] = {
            "members": [
                {
                    "name": m["name"],
                    "site": m["site"],
                    "target_site": m.get("target_site"),
                    "model": sae_model_config(m["sae"]),
                }
                for m in model["members"]
            ]
        }
        return config
    config["kind"] = "autoencoder"
    if isinstance(model, dict) and is_legacy_sae(model):
        config["model"] = sae_model_config(model)
    return config


def member_prefixes(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(0.1 prefix, current prefix) of each model in a config: one ("", "") for a single model,
    ("members.NAME.", "models.NAME.") per member of a group."""
    if "members" in model:
        return [(f"members.{m['name']}.", f"models.{m['name']}.") for m in model["members"]]
    return [("", "")]


def is_legacy_state(state: dict[str, Any], model: dict[str, Any]) -> bool:
    """Whether tensors (weights, or a checkpoint's model/...) carry 0.1 SAE names."""
    return any(old + "W_dec" in state for old, _ in member_prefixes(model))


def upgrade_state(state: dict[str, torch.Tensor], model: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Weights saved by 0.1 under the current names (and the fixed likelihood scale they did
    not have, log 1 = 0); current weights come back unchanged. `model`: the (upgraded) model
    config."""
    if not is_legacy_state(state, model):
        return state
    out = dict(state)
    for old, new in member_prefixes(model):
        for name, current in SAE_RENAMES.items():
            if old + name in out:
                out[new + current] = out.pop(old + name)
        out.setdefault(new + "likelihood.log_scale", torch.tensor(0.0))
    return out


def legacy_parameter_names(model: dict[str, Any]) -> list[str]:
    """The current names of a 0.1 model's parameters in 0.1's order (its optimiser's indices).
    `model`: the upgraded model config."""

    def sae(config: dict[str, Any], prefix: str) -> list[str]:
        present = {"W_dec", "W_enc", "b_enc", "b_dec"}
        if config["body"]["skip"]:
            present.add("W_skip")
        if config["bottleneck"]["kind"] == "jumprelu":
            present.add("log_threshold")
        return [prefix + SAE_RENAMES[p] for p in SAE_PARAMETERS if p in present]

    if "members" in model:
        return [n for m in model["members"] for n in sae(m["model"], f"models.{m['name']}.")]
    return sae(model, "")
