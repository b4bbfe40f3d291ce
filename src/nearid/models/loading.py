"""Safe, strict loading of any transformers model class from a folder or hub id.

Folders and hub ids are resolved by :mod:`nearid.io.hub` (cache first, fail fast offline, no code, no
pickles unless asked), and a checkpoint whose weights do not fit the model class is an error instead of
transformers' silent random re-initialisation. Weights load in float32; callers cast. Below both
:mod:`nearid.models.nearid_model` (``NearIDModel.from_siglip`` loads a tower) and
:mod:`nearid.models.backbones` (the factory).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from nearid.io.errors import ModelNotAvailableError
from nearid.io.hub import resolve_model_dir


def load_pretrained(
    model_class, argument: str, *, allow_pickle: bool = False, pooler_optional: bool = False, **model_kwargs
) -> tuple[Path, torch.nn.Module]:
    """Resolve a folder or hub id safely and load ``model_class`` from it in float32 -> (folder, model).

    transformers fills weights missing from a checkpoint with random values and only warns; for an
    encoder whose scores people publish that is an error, so a checkpoint of the wrong kind fails here.

    ``pooler_optional``: a checkpoint saved without its pooler (``add_pooling_layer=False``, as
    ``facebook/dino-vits16`` is) is loaded again *without* a pooler (``model.pooler is None``) instead of
    with a random one; any other missing weight is still an error. ``model_kwargs`` go to the model's
    constructor (e.g. ``add_pooling_layer=False``).
    """
    folder = resolve_model_dir(argument, allow_pickle=allow_pickle)
    model, info = _from_pretrained(model_class, folder, argument, allow_pickle, model_kwargs)
    if pooler_optional and _only_pooler_missing(model, info["missing_keys"]):
        # the class resolved above (AutoModel -> ViTModel), built without the pooler the checkpoint lacks
        model, info = _from_pretrained(
            type(model), folder, argument, allow_pickle, {**model_kwargs, "add_pooling_layer": False}
        )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise _wrong_checkpoint(argument, model_class, f"{len(missing)} weights missing, e.g. {missing[0]}")
    return folder, model


def _only_pooler_missing(model, missing) -> bool:
    """Every missing weight belongs to the model's pooler, and its class can be built without one."""
    import inspect

    if not missing or getattr(model, "pooler", None) is None:
        return False
    if "add_pooling_layer" not in inspect.signature(type(model).__init__).parameters:
        return False
    return all(key.split(".")[0] == "pooler" for key in missing)


def _from_pretrained(model_class, folder: Path, argument: str, allow_pickle: bool, model_kwargs: dict):
    try:
        with quiet_transformers():
            return model_class.from_pretrained(
                folder,
                dtype=torch.float32,
                use_safetensors=None if allow_pickle else True,
                output_loading_info=True,
                **model_kwargs,
            )
    except RuntimeError:  # transformers refuses weights of the wrong shape
        raise _wrong_checkpoint(argument, model_class, "weights of the wrong shape") from None
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotAvailableError(f"'{argument}': cannot load it as {model_class.__name__} ({first_line})") from None


def _wrong_checkpoint(argument: str, model_class, detail: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"'{argument}': not a {model_class.__name__} checkpoint ({detail}); "
        "check that the spec's family matches the checkpoint"
    )


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' per-load progress bar and load report (e.g. a CLIP checkpoint's unused text
    weights): the problems that matter are raised as errors by :func:`load_pretrained`."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


__all__ = ["load_pretrained", "quiet_transformers"]
