"""aekit: the autoencoder family in one library.

import aekit
model = aekit.build("vae", input_shape=(1, 28, 28), latent_dim=16)
aekit.Trainer(model, train, val, aekit.TrainConfig(epochs=10, out="runs/vae")).fit()
model = aekit.load("runs/vae")

sae = aekit.build("sae-topk", input_shape=(384,), k=32)   # the same house: a dictionary body,
                                                          # a TopK bottleneck, sparse coding
detector = aekit.Detector().fit(X)                        # any recipe as an anomaly detector
"""

import importlib
from typing import Any

from aekit.version import __version__

_EXPORTS = {
    "DataConfig": "aekit.data",
    "TensorData": "aekit.data",
    "load_data": "aekit.data",
    "ActivationSource": "aekit.data.activations",
    "ActivationStore": "aekit.data.activations",
    "open_source": "aekit.data.activations",
    "Detector": "aekit.detector",
    "DetectorConfig": "aekit.detector",
    "AekitError": "aekit.errors",
    "TrainingDiverged": "aekit.errors",
    "TrainingInterrupted": "aekit.errors",
    "evaluate": "aekit.eval",
    "gradient_snr": "aekit.eval",
    "importance_sampled_nll": "aekit.eval",
    "log_likelihood": "aekit.eval",
    "Autoencoder": "aekit.models",
    "AutoencoderOutput": "aekit.models",
    "GroupMember": "aekit.models",
    "ModelConfig": "aekit.models",
    "ModelGroup": "aekit.models",
    "PRIORS": "aekit.priors",
    "prior_from_sampler": "aekit.priors",
    "RECIPES": "aekit.recipes",
    "build": "aekit.registry",
    "model_config": "aekit.registry",
    "SparseCode": "aekit.sparse",
    "FitResult": "aekit.train",
    "TrainConfig": "aekit.train",
    "Trainer": "aekit.train",
    "load": "aekit.train",
}
"""Where each public name lives. They are imported on first use (PEP 562), so that
`import aekit` and `aekit models` do not pay for torch until something needs it."""


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'aekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", *_EXPORTS]
