"""nearid: identity-aware image embeddings and identity-preservation scoring (NearID, arXiv 2604.01973)."""

from .embedding import embed, similarity
from .encoders import Encoder, available_encoders, load_encoder, register_encoder
from .errors import NearIDError
from .images import apply_mask, load_image, load_mask
from .model import NearIDConfig, NearIDModel, build_tiny_model

__version__ = "0.1.0"

__all__ = [
    "Encoder",
    "NearIDConfig",
    "NearIDError",
    "NearIDModel",
    "apply_mask",
    "available_encoders",
    "build_tiny_model",
    "embed",
    "load_encoder",
    "load_image",
    "load_mask",
    "register_encoder",
    "similarity",
]
