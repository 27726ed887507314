"""Data: sources, validation, splitting and scaling, held in memory as tensors."""

from aekit.data.config import DataConfig
from aekit.data.idx import read_idx
from aekit.data.sources import load_all, load_data, read_rows
from aekit.data.tensor_data import Batch, Splits, TensorData
from aekit.data.validate import check_shape

__all__ = [
    "Batch",
    "DataConfig",
    "Splits",
    "TensorData",
    "check_shape",
    "load_all",
    "load_data",
    "read_idx",
    "read_rows",
]
