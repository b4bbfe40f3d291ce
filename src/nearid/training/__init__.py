"""Training NearID's head: the paper's 6-slot samples and the cache of frozen-trunk tokens.

Names are resolved on first use (PEP 562), so importing :mod:`nearid.training.samples` (numpy only)
does not import the token cache and torch with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearid.io.lazy import lazy_face

# public name -> the submodule that defines it
_LAZY = {
    "MTG_SOURCE": ".samples",
    "SampleRecipe": ".samples",
    "Slot": ".samples",
    "TokenCache": ".token_cache",
    "TrainingSample": ".samples",
    "TrainingSet": ".samples",
    "disk_estimate": ".token_cache",
    "fill": ".token_cache",
    "model_signature": ".token_cache",
    "mtg_sample": ".samples",
    "nearid_sample": ".samples",
    "pixel_values": ".prefetch",
    "token_shape": ".token_cache",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from nearid.training.prefetch import pixel_values
    from nearid.training.samples import (
        MTG_SOURCE,
        SampleRecipe,
        Slot,
        TrainingSample,
        TrainingSet,
        mtg_sample,
        nearid_sample,
    )
    from nearid.training.token_cache import TokenCache, disk_estimate, fill, model_signature, token_shape


__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
