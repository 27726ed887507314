from aekit.models.autoencoder import Autoencoder, AutoencoderOutput
from aekit.models.config import Component, ModelConfig
from aekit.models.group import GroupMember, ModelGroup

__all__ = [
    "Autoencoder",
    "AutoencoderOutput",
    "Component",
    "GroupMember",
    "ModelConfig",
    "ModelGroup",
]
