"""aekit: the autoencoder family in one library.

import aekit
model = aekit.build("vae", input_shape=(1, 28, 28), latent_dim=16)
aekit.Trainer(model, train, val, aekit.TrainConfig(epochs=10, out="runs/vae")).fit()
model = aekit.load("runs/vae")

sae = aekit.build("sae-topk", input_shape=(384,), k=32)   # the same house: a dictionary body,
                                                          # a TopK bottleneck, sparse coding
detector = aekit.Detector().fit(X)                        # any recipe as an anomaly detector
"""

from aekit.data import DataConfig, TensorData, load_data
from aekit.data.activations import ActivationSource, ActivationStore, open_source
from aekit.detector import Detector, DetectorConfig
from aekit.errors import AekitError, TrainingDiverged, TrainingInterrupted
from aekit.eval import evaluate, gradient_snr, importance_sampled_nll, log_likelihood
from aekit.models import Autoencoder, AutoencoderOutput, GroupMember, ModelConfig, ModelGroup
from aekit.priors import PRIORS, prior_from_sampler
from aekit.registry import RECIPES, build, model_config
from aekit.sparse import SparseCode
from aekit.train import FitResult, TrainConfig, Trainer, load
from aekit.version import __version__

__all__ = [
    "PRIORS",
    "RECIPES",
    "ActivationSource",
    "ActivationStore",
    "AekitError",
    "Autoencoder",
    "AutoencoderOutput",
    "DataConfig",
    "Detector",
    "DetectorConfig",
    "FitResult",
    "GroupMember",
    "ModelConfig",
    "ModelGroup",
    "SparseCode",
    "TensorData",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "__version__",
    "build",
    "evaluate",
    "gradient_snr",
    "importance_sampled_nll",
    "load",
    "load_data",
    "log_likelihood",
    "model_config",
    "open_source",
    "prior_from_sampler",
]
