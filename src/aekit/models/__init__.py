from aekit.models.autoencoder import Autoencoder, AutoencoderOutput
from aekit.models.config import Component, ModelConfig

__all__ = ["Autoencoder", "AutoencoderOutput", "Component", "ModelConfig"]
