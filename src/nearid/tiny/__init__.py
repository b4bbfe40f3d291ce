"""Every offline stand-in, for tests and the demo: the tiny NearID model, the stand-in backbone,
the tiny VLM judge, tiny diffusers pipelines and tiny detectors, with their locally built tokenizers."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "StandInConfig": "nearid.tiny.standin",
    "build_tiny_model": "nearid.tiny.model",
    "build_tiny_models": "nearid.tiny.detectors",
    "pretrain_standin": "nearid.tiny.standin",
    "save_tiny_judge": "nearid.tiny.judge",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
