"""nearid: identity-aware image embeddings and identity-preservation scoring (NearID, arXiv 2604.01973).

The public names are resolved on first use (PEP 562 ``__getattr__``, as transformers' model packages
do), so ``import nearid`` -- and every command that needs only numpy, such as ``nearid metrics`` --
does not pay for importing torch and transformers. ``from nearid import embed`` still works: it
imports :mod:`nearid.models.embedding` at that moment.

The packages, bottom to top: ``io`` (errors, atomic files, outputs, ownership, fingerprints, the hub),
``images``, ``models``, ``judges``, ``tiny``, ``data``, ``eval``, ``report``, ``bench`` / ``score``,
``training`` / ``distract``, ``demo``, ``cli`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearid.io.lazy import install_aliases, lazy_face

# public name -> the module that defines it
_LAZY = {
    "Encoder": "nearid.models.encoders",
    "IdentityExplanation": "nearid.models.explain",
    "IdentityReward": "nearid.models.reward",
    "NearIDConfig": "nearid.models.nearid_model",
    "NearIDError": "nearid.io.errors",
    "NearIDModel": "nearid.models.nearid_model",
    "apply_mask": "nearid.images.decode",
    "available_encoders": "nearid.models.encoders",
    "build_tiny_model": "nearid.tiny.model",
    "embed": "nearid.models.embedding",
    "explain": "nearid.models.explain",
    "load_encoder": "nearid.models.encoders",
    "load_image": "nearid.images.decode",
    "load_mask": "nearid.images.decode",
    "register_encoder": "nearid.models.encoders",
    "similarity": "nearid.models.embedding",
    "score_pairs": "nearid.score.run",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from nearid.images.decode import apply_mask, load_image, load_mask
    from nearid.io.errors import NearIDError
    from nearid.models.embedding import embed, similarity
    from nearid.models.encoders import Encoder, available_encoders, load_encoder, register_encoder
    from nearid.models.explain import IdentityExplanation, explain
    from nearid.models.nearid_model import NearIDConfig, NearIDModel
    from nearid.models.reward import IdentityReward
    from nearid.score.run import score_pairs
    from nearid.tiny.model import build_tiny_model

# The flat module paths of earlier releases -> the modules that hold their names now.
OLD_PATHS = {
    "nearid.errors": ("nearid.io.errors",),
    "nearid.outputs": ("nearid.io.outputs",),
    "nearid.ownership": ("nearid.io.ownership",),
    "nearid.fingerprint": ("nearid.io.fingerprint",),
    "nearid.hub": ("nearid.io.hub",),
    "nearid.mask_cleaning": ("nearid.images.mask_cleaning",),
    "nearid.processors": ("nearid.images.processors",),
    "nearid.input_pipeline": ("nearid.images.pipeline",),
    "nearid.specs": ("nearid.models.specs",),
    "nearid.model": ("nearid.models.nearid_model", "nearid.tiny.model"),
    "nearid.backbones": ("nearid.models.backbones", "nearid.models.loading"),
    "nearid.encoders": ("nearid.models.encoders",),
    "nearid.embedding": ("nearid.models.embedding",),
    "nearid.pair_scorers": ("nearid.models.pair_scorers", "nearid.judges.loading"),
    "nearid.metrics": ("nearid.eval.metrics",),
    "nearid.evaluate": ("nearid.eval.evaluate",),
    "nearid.simtables": ("nearid.eval.simtables",),
    "nearid.dbpp": ("nearid.eval.dbpp",),
    "nearid.results": ("nearid.eval.results",),
    "nearid.torchmetrics": ("nearid.eval.torchmetrics",),
    "nearid.tables": ("nearid.report.tables",),
    "nearid.store": ("nearid.bench.store",),
    "nearid.judgments": ("nearid.bench.judgments",),
    "nearid.shards": ("nearid.bench.shards", "nearid.bench.merge", "nearid.bench.planning", "nearid.score.shards"),
    "nearid.merge": ("nearid.io.records", "nearid.bench.merge"),
    "nearid.presets": ("nearid.bench.presets",),
    "nearid.losses": ("nearid.training.losses",),
    "nearid.masking": ("nearid.distract.masking", "nearid.tiny.detectors"),
    "nearid.training.standin": ("nearid.tiny.standin",),
    "nearid.judges.tiny": ("nearid.tiny.judge",),
}
install_aliases(OLD_PATHS)

# Short public paths -> the modules that hold their names (no entry of their own directly under nearid/).
PUBLIC_PATHS = {
    "nearid.reward": ("nearid.models.reward",),
}
install_aliases(PUBLIC_PATHS, doc="Public short path of {targets}.")


def _version() -> str:
    """The installed distribution's version (importlib.metadata costs ~50 ms, so only when asked)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nearid")
    except PackageNotFoundError:  # a source tree on sys.path without an install
        return "0.0.0+unknown"


def _reward():
    """``nearid.reward`` as an attribute, without ``import nearid.reward`` first."""
    import importlib

    return importlib.import_module("nearid.reward")


__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY, {"__version__": _version, "reward": _reward})
