from aekit.train.checkpoint import load
from aekit.train.config import TrainConfig
from aekit.train.trainer import FitResult, Trainer

__all__ = ["FitResult", "TrainConfig", "Trainer", "load"]
