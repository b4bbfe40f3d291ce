"""Training NearID's head: the paper's 6-slot samples and the cache of frozen-trunk tokens."""

from .samples import MTG_SOURCE, SampleRecipe, Slot, TrainingSample, TrainingSet, mtg_sample, nearid_sample
from .token_cache import TokenCache, disk_estimate, fill, model_signature, pixel_values, token_shape

__all__ = [
    "MTG_SOURCE",
    "SampleRecipe",
    "Slot",
    "TokenCache",
    "TrainingSample",
    "TrainingSet",
    "disk_estimate",
    "fill",
    "model_signature",
    "mtg_sample",
    "nearid_sample",
    "pixel_values",
    "token_shape",
]
