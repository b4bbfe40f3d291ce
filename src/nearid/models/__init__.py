"""Models: spec grammar, safe loading, NearIDModel (ours and the authors' release), backbones, encoders,
embedding and the pair-scorer protocol. Names resolve on first use."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "Encoder": "nearid.models.encoders",
    "NearIDConfig": "nearid.models.nearid_model",
    "NearIDModel": "nearid.models.nearid_model",
    "PairScorer": "nearid.models.pair_scorers",
    "available_encoders": "nearid.models.encoders",
    "embed": "nearid.models.embedding",
    "explain": "nearid.models.explain",
    "is_pair_scorer": "nearid.models.pair_scorers",
    "load_backbone": "nearid.models.backbones",
    "load_encoder": "nearid.models.encoders",
    "load_pretrained": "nearid.models.loading",
    "parse_backbone": "nearid.models.specs",
    "parse_encoder_spec": "nearid.models.specs",
    "register_encoder": "nearid.models.encoders",
    "similarity": "nearid.models.embedding",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
