"""An encoder's embedding computed *with* a graph to the pixels, and trunk gradient checkpointing.

``Encoder.embed`` runs under ``torch.inference_mode`` and ``NearIDModel`` computes its trunk without a
graph (its trunk is frozen; training caches its tokens), so neither can give a gradient to the input.
:func:`raw_features` is the same computation as ``embed`` for the patch-token encoders -- the same
modules in the same order -- with autograd on:

* NearID-shaped models (``nearid``, ``siglip2-map``, ``tiny``; ``siglip2-mean``): patch embedding,
  encoder blocks, post-LN, then the MAP head (or the token mean), as ``NearIDModel.forward`` runs them;
* every other transformers encoder (CLIP, DINOv2, DINO, DINOv3, ``hf:``): its own read-out, whose
  models have no ``no_grad`` inside.

:func:`checkpointed` turns on transformers' per-block activation checkpointing for the duration of a
forward pass without putting the model in training mode: only each block's own ``training`` flag is
set (the flag the checkpointing wrapper reads), so dropout and the like, which read their own
modules' flags, stay in evaluation mode.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils.checkpoint import checkpoint

from nearid.io.errors import NearIDError
from nearid.models.encoders import mean_token_readout, nearid_readout
from nearid.models.nearid_model import NearIDModel


class NotDifferentiableError(NearIDError):
    """An encoder whose embedding has no gradient to the pixels (a histogram, a judge, a custom one)."""


def check_differentiable(encoder) -> None:
    """Refuse, in one line, an encoder :func:`raw_features` cannot differentiate."""
    name = getattr(encoder, "name", repr(encoder))
    model, readout = getattr(encoder, "model", None), getattr(encoder, "readout", None)
    if not isinstance(model, torch.nn.Module) or readout is None:
        raise NotDifferentiableError(
            f"{name} has no differentiable model (an identity reward needs a ViT encoder: nearid, siglip2-*, "
            "clip, dino*, hf:, tiny)"
        )
    if isinstance(model, NearIDModel) and readout not in (nearid_readout, mean_token_readout):
        raise NotDifferentiableError(f"{name}: a NearID model with a read-out of its own cannot be differentiated here")


def model_dtype(encoder) -> torch.dtype:
    """The dtype the encoder computes in (its weights')."""
    return next(encoder.model.parameters()).dtype


def raw_features(encoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` un-normalised embeddings of ``pixel_values`` with a graph to them: what
    ``encoder.embed`` computes before its L2 normalisation (in the model's dtype)."""
    model = encoder.model
    pixel_values = pixel_values.to(model_dtype(encoder))
    with torch.enable_grad():
        if isinstance(model, NearIDModel):
            backbone = model.backbone
            hidden = backbone.embeddings(pixel_values)
            hidden = backbone.encoder(inputs_embeds=hidden).last_hidden_state
            tokens = backbone.post_layernorm(hidden)
            if encoder.readout is mean_token_readout:
                return tokens.mean(dim=1)
            return model.pool(tokens)
        return encoder.readout(model, pixel_values)


def _checkpoint_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


@contextlib.contextmanager
def checkpointed(model: torch.nn.Module, enabled: bool = True):
    """Within the block, each transformer block of ``model`` keeps only its input for the backward pass
    and recomputes its activations then (``torch.utils.checkpoint``, non-reentrant). Activation memory
    of the trunk drops from every block's intermediates to one block's; the cost is one more forward
    of the trunk. The model's state is restored on exit."""
    layers = _checkpoint_layers(model) if enabled else []
    keys = ("gradient_checkpointing", "_gradient_checkpointing_func")
    saved = [(layer, {key: layer.__dict__.get(key) for key in keys}, layer.training) for layer in layers]
    function = functools.partial(checkpoint, use_reentrant=False)
    try:
        for layer, _, _ in saved:
            layer.gradient_checkpointing = True
            layer._gradient_checkpointing_func = function
            layer.training = True  # this module's own flag only: its children stay in eval mode
        yield len(layers)
    finally:
        for layer, before, training in saved:
            for key, value in before.items():
                if value is None:
                    layer.__dict__.pop(key, None)
                else:
                    setattr(layer, key, value)
            layer.training = training


__all__ = ["NotDifferentiableError", "check_differentiable", "checkpointed", "model_dtype", "raw_features"]
