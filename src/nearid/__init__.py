"""nearid: identity-aware image embeddings and identity-preservation scoring (NearID, arXiv 2604.01973).

The public names are resolved on first use (PEP 562 ``__getattr__``, as transformers' model packages
do), so ``import nearid`` -- and every command that needs only numpy, such as ``nearid metrics`` --
does not pay for importing torch and transformers. ``from nearid import embed`` still works: it
imports :mod:`nearid.embedding` at that moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_face

# public name -> the submodule that defines it
_LAZY = {
    "Encoder": ".encoders",
    "NearIDConfig": ".model",
    "NearIDError": ".errors",
    "NearIDModel": ".model",
    "apply_mask": ".images",
    "available_encoders": ".encoders",
    "build_tiny_model": ".model",
    "embed": ".embedding",
    "load_encoder": ".encoders",
    "load_image": ".images",
    "load_mask": ".images",
    "register_encoder": ".encoders",
    "similarity": ".embedding",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from .embedding import embed, similarity
    from .encoders import Encoder, available_encoders, load_encoder, register_encoder
    from .errors import NearIDError
    from .images import apply_mask, load_image, load_mask
    from .model import NearIDConfig, NearIDModel, build_tiny_model


def _version() -> str:
    """The installed distribution's version (importlib.metadata costs ~50 ms, so only when asked)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nearid")
    except PackageNotFoundError:  # a source tree on sys.path without an install
        return "0.0.0+unknown"


__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY, {"__version__": _version})
